//! The per-stream incremental (delta) xDS state machine, free of gRPC and tasks.
//!
//! Where state of the world resends every resource of a type when one changes, a delta stream
//! sends the resources whose version differs from what the proxy holds and the names it should
//! drop: an endpoint change moves one `ClusterLoadAssignment`, not all of them.
//!
//! What the proxy holds is tracked per type: the versions it announced when it (re)connected
//! (`initial_resource_versions`) and every resource sent since. CDS and LDS are wildcard types
//! (the proxy gets everything the snapshot has); EDS, RDS and SDS are subscribed by name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};

use crate::snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE, PUSH_ORDER, Resource, Snapshot, content_version, is_wildcard};
use crate::status::TypeStatus;
use crate::stream::{CONTROL_PLANE_ID, Outcome};

/// Protocol state of one delta ADS stream.
#[derive(Debug)]
pub struct DeltaState {
    node_id: String,
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<String, TypeState>,
    last_nonce: u64,
}

#[derive(Debug, Default)]
struct TypeState {
    /// Subscribed to everything of the type (CDS and LDS, or a `*` subscription).
    wildcard: bool,
    /// Names subscribed to, for a type that is not wildcard.
    names: BTreeSet<String>,
    /// What the proxy holds from this stream, sorted by name: the very resources of the snapshots
    /// sent (shared, a pointer each), not copies of their names and versions, so a thousand
    /// streams of the same config cost a pointer per resource each.
    held: Arc<[Arc<Resource>]>,
    /// Name ─▶ version of what the proxy announced it holds when it (re)connected
    /// (`initial_resource_versions`), until the first response reconciles it with the snapshot.
    announced: BTreeMap<String, String>,
    /// Nonce and type version of the latest response.
    sent: Option<(String, String)>,
    acked_version: Option<String>,
    nack: Option<String>,
    /// A response the proxy is waiting for (a new subscription) was held back by the ordering
    /// rules: it is sent, even empty, once they let it go.
    owed: bool,
}

impl DeltaState {
    pub fn new(node_id: impl Into<String>) -> Self {
        DeltaState {
            node_id: node_id.into(),
            snapshot: None,
            types: BTreeMap::new(),
            last_nonce: 0,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Applies one request from the proxy.
    pub fn handle_request(&mut self, req: &DeltaDiscoveryRequest) -> Outcome<DeltaDiscoveryResponse> {
        let type_url = req.type_url.as_str();
        if type_url.is_empty() {
            return Outcome::Invalid("type_url is required on every delta ADS request".into());
        }
        let first = !self.types.contains_key(type_url);
        let ts = self.types.entry(type_url.to_owned()).or_default();
        if first {
            // A wildcard type subscribed with no names means everything (the legacy form).
            ts.wildcard = is_wildcard(type_url) && req.resource_names_subscribe.is_empty();
            ts.announced = req.initial_resource_versions.clone().into_iter().collect();
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                ts.wildcard = true;
            } else {
                ts.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                ts.wildcard = false;
            }
            ts.names.remove(name);
            // The proxy dropped it: if it subscribes again, it must be sent again.
            if let Ok(at) = ts.held.binary_search_by(|r| r.name.as_str().cmp(name)) {
                let mut held = ts.held.to_vec();
                held.remove(at);
                ts.held = held.into();
            }
            ts.announced.remove(name);
        }

        if !req.response_nonce.is_empty() {
            let latest = ts.sent.as_ref().is_some_and(|(nonce, _)| *nonce == req.response_nonce);
            if !latest {
                // Not an answer to our latest response, but Envoy folds subscription changes into
                // the request that acknowledges: those still want their resources (a new EDS
                // cluster waits for its endpoints, and the routes naming it wait for them).
                let changed = !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty();
                if changed && let Some(response) = self.respond(type_url, false) {
                    return Outcome::Send(response);
                }
                return Outcome::StaleNonce {
                    type_url: type_url.to_owned(),
                    nonce: req.response_nonce.clone(),
                };
            }
            let version = ts.sent.as_ref().map(|(_, v)| v.clone()).unwrap_or_default();
            if let Some(error) = &req.error_detail {
                ts.nack = Some(error.message.clone());
                return Outcome::Nacked {
                    type_url: type_url.to_owned(),
                    rejected_version: version,
                    running_version: ts.acked_version.clone().unwrap_or_default(),
                    message: error.message.clone(),
                };
            }
            ts.nack = None;
            ts.acked_version = Some(version.clone());
            return match self.respond(type_url, false) {
                Some(response) => Outcome::Send(response),
                None => Outcome::Acked {
                    type_url: type_url.to_owned(),
                    version,
                },
            };
        }
        // A new subscription (or more names): always answered, even with nothing new, so the
        // proxy can finish initialising.
        match self.respond(type_url, first) {
            Some(response) => Outcome::Send(response),
            None if self.snapshot.is_none() => Outcome::Held {
                type_url: type_url.to_owned(),
            },
            None => Outcome::Acked {
                type_url: type_url.to_owned(),
                version: String::new(),
            },
        }
    }

    /// Replaces the snapshot; returns a response per subscribed type that has changes, in push
    /// order (clusters before the listeners and routes that use them).
    pub fn set_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> Vec<DeltaDiscoveryResponse> {
        // Not ready (again): the proxy keeps what it runs.
        self.snapshot = snapshot;
        if self.snapshot.is_none() {
            return Vec::new();
        }
        let mut order: Vec<String> = self.types.keys().cloned().collect();
        order.sort_by_key(|t| {
            (
                PUSH_ORDER.iter().position(|p| p == t).unwrap_or(PUSH_ORDER.len()),
                t.clone(),
            )
        });
        order.into_iter().filter_map(|t| self.respond(&t, false)).collect()
    }

    pub fn type_statuses(&self) -> BTreeMap<String, TypeStatus> {
        self.types
            .iter()
            .map(|(t, ts)| {
                let status = TypeStatus {
                    last_sent_version: ts.sent.as_ref().map(|(_, v)| v.clone()),
                    last_acked_version: ts.acked_version.clone(),
                    last_nack: ts.nack.clone(),
                };
                (t.clone(), status)
            })
            .collect()
    }

    /// The changes of `type_url` the proxy lacks; with `force`, a response even without any.
    fn respond(&mut self, type_url: &str, force: bool) -> Option<DeltaDiscoveryResponse> {
        self.snapshot.as_ref()?;
        if ordering::waits_for_clusters(type_url) && !self.clusters_active() {
            if let Some(ts) = self.types.get_mut(type_url) {
                ts.owed |= force;
            }
            return None;
        }
        // Clusters the routes may still name (and their endpoints) are removed only once the
        // routes have moved on.
        let keep_removed = (type_url == CLUSTER_TYPE || type_url == ENDPOINT_TYPE) && !self.routes_current();
        let snapshot = self.snapshot.as_ref()?;
        let ts = self.types.get_mut(type_url)?;
        let force = force || ts.owed;
        let wanted = wanted(snapshot, type_url, ts);
        if holds_exactly(snapshot, type_url, ts, &wanted) && !force {
            return None;
        }
        let mut changes = diff(&wanted, &ts.held, &ts.announced);
        let kept: Vec<Arc<Resource>> = if keep_removed {
            let held = &ts.held;
            let kept: Vec<Arc<Resource>> = changes
                .removed
                .iter()
                .filter_map(|name| held.binary_search_by(|r| r.name.as_str().cmp(name)).ok())
                .map(|at| held[at].clone())
                .collect();
            changes.removed.retain(|name| !kept.iter().any(|k| k.name == *name));
            kept
        } else {
            Vec::new()
        };
        if changes.sent.is_empty() && changes.removed.is_empty() && !force {
            return None;
        }
        // An EDS cluster the proxy already had, sent changed: Envoy warms the new one until its
        // endpoints arrive again, which they would not (unchanged, the proxy holds them), so it
        // would wait out its initial fetch timeout (15 s) before the change takes effect.
        let rewarming: Vec<String> = if type_url == CLUSTER_TYPE {
            changes
                .sent
                .iter()
                .filter(|c| c.eds_cluster)
                .filter(|c| {
                    ts.held.binary_search_by(|r| r.name.as_str().cmp(&c.name)).is_ok()
                        || ts.announced.contains_key(&c.name)
                })
                .map(|c| c.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let version = content_version(wanted.iter().copied());
        let resources = changes
            .sent
            .iter()
            .map(|resource| DeltaResource {
                name: resource.name.clone(),
                version: resource.version(),
                resource: Some(resource.any.clone()),
                ..Default::default()
            })
            .collect();
        // A wildcard subscription holds the snapshot's own list: no copy per stream.
        ts.held = match snapshot.shared_of_type(type_url) {
            Some(all) if wanted.len() == all.len() && kept.is_empty() => all.clone(),
            _ => {
                let mut held: Vec<Arc<Resource>> = wanted.into_iter().cloned().chain(kept).collect();
                held.sort_by(|a, b| a.name.cmp(&b.name));
                held.into()
            }
        };
        ts.owed = false;
        ts.announced.clear();
        let removed = changes.removed;
        self.last_nonce += 1;
        let nonce = self.last_nonce.to_string();
        ts.sent = Some((nonce.clone(), version.clone()));
        ts.nack = None;
        if !rewarming.is_empty() {
            self.resend_endpoints(&rewarming);
        }
        Some(DeltaDiscoveryResponse {
            system_version_info: version,
            resources,
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce,
            control_plane: Some(ControlPlane {
                identifier: CONTROL_PLANE_ID.into(),
            }),
            ..Default::default()
        })
    }
}

impl DeltaState {
    /// Forgets that the proxy holds the endpoints of `clusters`, so the next EDS response (owed
    /// now, sent after the clusters) carries them again.
    fn resend_endpoints(&mut self, clusters: &[String]) {
        let Some(endpoints) = self.types.get_mut(ENDPOINT_TYPE) else {
            return;
        };
        endpoints.owed = true;
        let held: Vec<Arc<Resource>> = endpoints
            .held
            .iter()
            .filter(|r| clusters.binary_search(&r.name).is_err())
            .cloned()
            .collect();
        if held.len() != endpoints.held.len() {
            endpoints.held = held.into();
        }
        for name in clusters {
            endpoints.announced.remove(name);
        }
    }
}

/// The snapshot's resources of `type_url` that the stream subscribes to, sorted by name.
fn wanted<'a>(snapshot: &'a Snapshot, type_url: &str, ts: &TypeState) -> Vec<&'a Arc<Resource>> {
    snapshot
        .of_type(type_url)
        .iter()
        .filter(|r| ts.wildcard || ts.names.contains(&r.name))
        .collect()
}

/// Whether the proxy holds exactly `wanted` already: nothing to send.
fn holds_exactly(snapshot: &Snapshot, type_url: &str, ts: &TypeState, wanted: &[&Arc<Resource>]) -> bool {
    // The common case after a change elsewhere: the proxy holds the snapshot's very list.
    let same_list = ts.wildcard
        && snapshot
            .shared_of_type(type_url)
            .is_some_and(|all| Arc::ptr_eq(all, &ts.held));
    ts.announced.is_empty()
        && (same_list
            || wanted.len() == ts.held.len()
                && wanted
                    .iter()
                    .zip(ts.held.iter())
                    .all(|(w, h)| Arc::ptr_eq(w, h) || ***w == **h))
}

/// What one response of a type carries: the wanted resources the proxy lacks (or holds in
/// another version), and the names it holds that are no longer wanted.
struct Changes<'a> {
    sent: Vec<&'a Arc<Resource>>,
    removed: Vec<String>,
}

/// Compares `wanted` with what the proxy holds: `held` (what this stream sent) and `announced`
/// (what it said it had on connecting). `wanted` and `held` are sorted by name, so one walk of
/// both does it, without a map per stream.
fn diff<'a>(wanted: &[&'a Arc<Resource>], held: &[Arc<Resource>], announced: &BTreeMap<String, String>) -> Changes<'a> {
    let mut changes = Changes {
        sent: Vec::new(),
        removed: Vec::new(),
    };
    let mut held = held.iter().peekable();
    for resource in wanted {
        // Most of what a proxy holds is the very resource still wanted: no name to compare.
        if held.next_if(|h| Arc::ptr_eq(h, resource)).is_some() {
            continue;
        }
        while let Some(gone) = held.next_if(|h| h.name < resource.name) {
            changes.removed.push(gone.name.clone());
        }
        let holds = match held.next_if(|h| h.name == resource.name) {
            Some(same_name) => **same_name == ***resource,
            None => announced.get(&resource.name) == Some(&resource.version()),
        };
        if !holds {
            changes.sent.push(resource);
        }
    }
    changes.removed.extend(held.map(|gone| gone.name.clone()));
    let present = |name: &str| wanted.binary_search_by(|r| r.name.as_str().cmp(name)).is_ok();
    for name in announced.keys() {
        if !present(name) && !changes.removed.contains(name) {
            changes.removed.push(name.clone());
        }
    }
    changes
}

mod ordering;
#[cfg(test)]
mod tests;
