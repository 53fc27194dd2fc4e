//! The per-stream SotW state machine, free of gRPC and tasks.
//!
//! The server feeds it every [`DiscoveryRequest`] and every snapshot change
//! and forwards whatever it returns; all xDS semantics (ACK, NACK, stale
//! nonces, resource selection, push order) are decided here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::snapshot::{PUSH_ORDER, Resource, Snapshot, content_version, is_wildcard};
use crate::status::TypeStatus;

/// Identifies us in Envoy's config dump (`control_plane.identifier`).
pub(crate) const CONTROL_PLANE_ID: &str = "trellis";

/// What a request led to (`R`: the response type of the stream's protocol).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<R = DiscoveryResponse> {
    /// Send this response to the proxy.
    Send(R),
    /// The proxy accepted our latest response (or re-confirmed its names); nothing to send.
    Acked { type_url: String, version: String },
    /// The proxy rejected our latest response; nothing is resent until the snapshot changes.
    Nacked {
        type_url: String,
        /// The version the proxy refused.
        rejected_version: String,
        /// The version the proxy keeps running (its request's `version_info`).
        running_version: String,
        message: String,
    },
    /// The request answers a response that is no longer the latest; ignored.
    StaleNonce { type_url: String, nonce: String },
    /// The snapshot is not ready; the subscription is remembered and answered once it is.
    Held { type_url: String },
    /// The request breaks the protocol (e.g. no type URL); the stream should end.
    Invalid(String),
}

/// Protocol state of one ADS stream.
#[derive(Debug)]
pub struct StreamState {
    node_id: String,
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<String, TypeState>,
    last_nonce: u64,
}

#[derive(Debug, Default)]
struct TypeState {
    /// Names from the latest request (ignored for wildcard types).
    names: BTreeSet<String>,
    sent: Option<Sent>,
    acked_version: Option<String>,
    /// Set while our latest response stands rejected.
    nack: Option<String>,
}

#[derive(Debug)]
struct Sent {
    version: String,
    nonce: String,
    names: BTreeSet<String>,
}

// === impl StreamState ===

impl StreamState {
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
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
    pub fn handle_request(&mut self, req: &DiscoveryRequest) -> Outcome {
        let type_url = req.type_url.as_str();
        if type_url.is_empty() {
            return Outcome::Invalid("type_url is required on every ADS request".into());
        }
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let ts = self.types.entry(type_url.to_owned()).or_default();

        // An empty nonce, or one for a type we never answered on this stream,
        // is a fresh subscription: always answer it so the proxy can finish
        // initialising, even if it already runs this version from an earlier stream.
        let sent = match &ts.sent {
            Some(sent) if !req.response_nonce.is_empty() => sent,
            _ => {
                ts.names = names;
                return match self.respond(type_url, true) {
                    Some(resp) => Outcome::Send(resp),
                    None => Outcome::Held {
                        type_url: type_url.to_owned(),
                    },
                };
            }
        };

        if sent.nonce != req.response_nonce {
            // The proxy has not seen our newest response yet; it will answer that one.
            return Outcome::StaleNonce {
                type_url: type_url.to_owned(),
                nonce: req.response_nonce.clone(),
            };
        }

        if let Some(err) = &req.error_detail {
            let rejected_version = sent.version.clone();
            ts.names = names;
            ts.nack = Some(err.message.clone());
            if !req.version_info.is_empty() {
                ts.acked_version = Some(req.version_info.clone());
            }
            // Resending the same content would only be rejected again.
            return Outcome::Nacked {
                type_url: type_url.to_owned(),
                rejected_version,
                running_version: req.version_info.clone(),
                message: err.message.clone(),
            };
        }

        // ACK. After a NACK Envoy reuses the rejected nonce with its older
        // version for later name changes, so only a matching version clears the NACK.
        if req.version_info == sent.version {
            ts.nack = None;
        }
        if !req.version_info.is_empty() {
            ts.acked_version = Some(req.version_info.clone());
        }
        ts.names = names;
        match self.respond(type_url, false) {
            Some(resp) => Outcome::Send(resp),
            None => Outcome::Acked {
                type_url: type_url.to_owned(),
                version: req.version_info.clone(),
            },
        }
    }

    /// Replaces the snapshot; returns the pushes for subscribed types whose
    /// content changed, clusters first so Envoy warms them before listeners.
    pub fn set_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> Vec<DiscoveryResponse> {
        // Not ready (again): keep whatever the proxy runs; never push emptiness.
        self.snapshot = snapshot;
        if self.snapshot.is_none() {
            return Vec::new();
        }
        let mut order: Vec<String> = self.types.keys().cloned().collect();
        order.sort_by_key(|t| (push_rank(t), t.clone()));
        order.into_iter().filter_map(|t| self.respond(&t, false)).collect()
    }

    /// Per-type view for the status board.
    pub fn type_statuses(&self) -> BTreeMap<String, TypeStatus> {
        self.types
            .iter()
            .map(|(t, ts)| {
                let status = TypeStatus {
                    last_sent_version: ts.sent.as_ref().map(|s| s.version.clone()),
                    last_acked_version: ts.acked_version.clone(),
                    last_nack: ts.nack.clone(),
                };
                (t.clone(), status)
            })
            .collect()
    }

    /// Builds a response for `type_url` if the snapshot is ready and either
    /// `force` is set or the selected content / requested names differ from
    /// what was last sent.
    fn respond(&mut self, type_url: &str, force: bool) -> Option<DiscoveryResponse> {
        let snapshot = self.snapshot.as_ref()?;
        let ts = self.types.get_mut(type_url)?;
        let selected = select(snapshot, type_url, &ts.names);
        let version = content_version(selected.iter().copied());
        if !force
            && let Some(sent) = &ts.sent
            && sent.version == version
            && (is_wildcard(type_url) || sent.names == ts.names)
        {
            return None;
        }
        self.last_nonce += 1;
        let nonce = self.last_nonce.to_string();
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources: selected.iter().map(|r| r.any.clone()).collect(),
            type_url: type_url.to_owned(),
            nonce: nonce.clone(),
            control_plane: Some(ControlPlane {
                identifier: CONTROL_PLANE_ID.into(),
            }),
            ..Default::default()
        };
        ts.sent = Some(Sent {
            version,
            nonce,
            names: ts.names.clone(),
        });
        // A NACK describes the previous response, not this one.
        ts.nack = None;
        Some(resp)
    }
}

/// Resources of `type_url` the proxy should get for `names`.
fn select<'a>(snapshot: &'a Snapshot, type_url: &str, names: &BTreeSet<String>) -> Vec<&'a Arc<Resource>> {
    let all = snapshot.of_type(type_url);
    // Legacy SotW: no names (or "*") on a named type means "everything".
    if is_wildcard(type_url) || names.is_empty() || names.contains("*") {
        return all.iter().collect();
    }
    all.iter().filter(|r| names.contains(&r.name)).collect()
}

fn push_rank(type_url: &str) -> usize {
    PUSH_ORDER
        .iter()
        .position(|t| *t == type_url)
        .unwrap_or(PUSH_ORDER.len())
}

#[cfg(test)]
mod tests;
