//! Translation: a pure, deterministic function from one [`Snapshot`] to each cluster's mesh IR.
//!
//! ```text
//!  Snapshot ──▶ outbound::virtual_hosts   VirtualDestinations + RouteTables ─▶ virtual hosts, routes,
//!                                         and the set of Targets they send to (cluster-independent)
//!           ──▶ endpoints::materialize    per cluster: each Target ─▶ Upstream with local endpoints
//!                                         directly and remote ones through that cluster's east-west
//!                                         gateway; plus what this cluster's gateway must serve
//! ```
//!
//! No I/O, no clock: equal snapshots give byte-identical output, which is what the golden tests
//! and the relay's content versions rely on.

mod endpoints;
mod outbound;
mod target;

use std::collections::BTreeMap;

use serde::Serialize;
use trellis_model::{ClusterConfig, Snapshot};

pub use target::Target;

/// The result of translating one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Translation {
    /// One config per known cluster.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Problems found, by `Kind/namespace/name` of the resource they concern.
    pub warnings: BTreeMap<String, Vec<String>>,
}

/// Collects warnings by resource while translating.
#[derive(Debug, Default)]
pub(crate) struct Warnings(BTreeMap<String, Vec<String>>);

impl Warnings {
    pub(crate) fn add(&mut self, resource: impl Into<String>, message: impl Into<String>) {
        let list = self.0.entry(resource.into()).or_default();
        let message = message.into();
        if !list.contains(&message) {
            list.push(message);
        }
    }
}

pub fn translate(snapshot: &Snapshot) -> Translation {
    let mut warnings = Warnings::default();
    let services = snapshot.services();
    let outbound = outbound::build(snapshot, &services, &mut warnings);
    let clusters = snapshot
        .clusters()
        .into_iter()
        .map(|cluster| {
            let config = endpoints::materialize(&cluster, snapshot, &services, &outbound, &mut warnings);
            (cluster, config)
        })
        .collect();
    Translation {
        clusters,
        warnings: warnings.0,
    }
}

#[cfg(test)]
mod tests;
