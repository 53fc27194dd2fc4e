//! The order in which a change reaches a proxy, so that no request meets a route naming a
//! cluster the proxy does not have.
//!
//! Envoy applies each response as it comes, and a route naming a cluster it lacks answers 503
//! (`no_cluster`). A new EDS cluster is not usable when its `Cluster` arrives: Envoy subscribes
//! to its endpoints, and activates it once they come. A removed cluster is gone at once. So
//! (as Envoy's xDS protocol asks of a management server):
//! - listeners and routes wait until the proxy has taken the clusters sent before them and been
//!   sent the endpoints of every new EDS cluster;
//! - a cluster (and its endpoints) is removed only once the listeners and routes the proxy took
//!   no longer hold the old config that could name it; Envoy then drops its endpoint
//!   subscription itself.

use crate::snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

use super::{DeltaDiscoveryResponse, DeltaState, TypeState, holds_exactly, wanted};

/// Types whose resources name clusters.
const NAMING_CLUSTERS: [&str; 2] = [LISTENER_TYPE, ROUTE_TYPE];

pub(super) fn waits_for_clusters(type_url: &str) -> bool {
    NAMING_CLUSTERS.contains(&type_url)
}

/// Whether a response of this type stands: accepted, or refused (then nothing we could send
/// would make the proxy take it, and holding other types back would only stall them).
fn settled(ts: &TypeState) -> bool {
    ts.nack.is_some() || ts.sent.as_ref().map(|(_, version)| version) == ts.acked_version.as_ref()
}

impl DeltaState {
    /// Whether every cluster sent so far is active in the proxy, or will be before anything
    /// sent next is applied: it accepted the clusters, and each new EDS cluster's endpoints
    /// have been sent (Envoy applies responses in order).
    pub(super) fn clusters_active(&self) -> bool {
        let Some(clusters) = self.types.get(CLUSTER_TYPE) else {
            return true;
        };
        if clusters.nack.is_some() {
            // It runs older clusters; what it refused it will not ask endpoints for.
            return true;
        }
        if !settled(clusters) {
            return false;
        }
        let Some(snapshot) = &self.snapshot else { return true };
        let endpoints = self.types.get(ENDPOINT_TYPE);
        clusters.held.iter().filter(|c| c.eds_cluster).all(|cluster| {
            let name = cluster.name.as_str();
            let has_endpoints = snapshot
                .of_type(ENDPOINT_TYPE)
                .binary_search_by(|r| r.name.as_str().cmp(name))
                .is_ok();
            // Endpoints we do not have would never come: Envoy gives up on them after its
            // initial fetch timeout, and waiting here would stall every route change.
            !has_endpoints
                || endpoints.is_some_and(|eds| {
                    eds.nack.is_some() || eds.held.binary_search_by(|r| r.name.as_str().cmp(name)).is_ok()
                })
        })
    }

    /// Whether the proxy runs the snapshot's listeners and routes (or refused them): no route
    /// it holds can name a cluster the snapshot dropped.
    pub(super) fn routes_current(&self) -> bool {
        let Some(snapshot) = &self.snapshot else { return true };
        NAMING_CLUSTERS.iter().all(|type_url| match self.types.get(*type_url) {
            None => true,
            Some(ts) => {
                ts.nack.is_some()
                    || settled(ts) && holds_exactly(snapshot, type_url, ts, &wanted(snapshot, type_url, ts))
            }
        })
    }

    /// What the ordering rules held back and now let go, after the proxy answered: listeners
    /// and routes once the clusters are active, then the removal of clusters once the routes
    /// have moved on.
    pub fn released(&mut self) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        for type_url in NAMING_CLUSTERS.into_iter().chain([CLUSTER_TYPE]) {
            if self.types.contains_key(type_url)
                && let Some(response) = self.respond(type_url, false)
            {
                out.push(response);
            }
        }
        // A changed cluster sent here wants its endpoints again, after it (see `respond`).
        if self.types.get(ENDPOINT_TYPE).is_some_and(|eds| eds.owed)
            && let Some(response) = self.respond(ENDPOINT_TYPE, false)
        {
            out.push(response);
        }
        out
    }
}

#[cfg(test)]
mod tests;
