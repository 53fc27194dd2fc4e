//! A translation kept current change by change.
//!
//! Most changes of a running mesh are endpoints: a workload's address or port moves while the
//! services, their labels, ports and accounts stay. Such a change can only alter, in the
//! workload's own cluster, the upstreams of the targets backed by the workload's service (their
//! local endpoints) and the east-west gateway's upstreams for them; remote clusters see that
//! cluster through its gateway, weighted by a count that did not change. So an endpoint change
//! is applied to those upstreams alone, in time proportional to it. Any other change (a
//! resource, a workload added or relabelled, a gateway, an add-on) is translated in full.
//!
//! The property test in `incremental/tests.rs` checks, over random change sequences, that this
//! always equals translating from scratch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use trellis_model::Snapshot;
use trellis_model::discovery::{ClusterDiscovery, Workload};
use trellis_model::ir::{Endpoint, Upstream, VirtualHost};

use crate::Translation;
use crate::target::Target;

/// What the endpoint path needs from the last full translation.
#[derive(Debug, Default)]
pub(crate) struct EndpointPlan {
    pub targets: Vec<Target>,
    /// (cluster, namespace, service) ─▶ targets with that backend.
    pub by_backend: HashMap<(String, String, String), Vec<usize>>,
    /// Hash of a VirtualDestination port (namespace, name, host, port) ─▶ its targets.
    pub by_virtual_destination: HashMap<u64, Vec<usize>>,
}

impl EndpointPlan {
    pub(crate) fn new(targets: Vec<Target>) -> Self {
        let mut by_backend: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
        for (i, target) in targets.iter().enumerate() {
            for backend in &target.backends {
                let key = (
                    backend.cluster.clone(),
                    backend.namespace.clone(),
                    backend.service.clone(),
                );
                let list = by_backend.entry(key).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        let mut by_virtual_destination: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, target) in targets.iter().enumerate() {
            if let Some(vd) = &target.virtual_destination {
                let key = vd_port_key(&vd.namespace, &vd.name, &target.host, target.port);
                by_virtual_destination.entry(key).or_default().push(i);
            }
        }
        EndpointPlan {
            targets,
            by_backend,
            by_virtual_destination,
        }
    }

    /// True when this translation has `target`.
    pub(crate) fn contains(&self, target: &Target) -> bool {
        let candidates = match (&target.virtual_destination, target.backends.first()) {
            (Some(vd), _) => {
                self.by_virtual_destination
                    .get(&vd_port_key(&vd.namespace, &vd.name, &target.host, target.port))
            }
            (None, Some(b)) => self
                .by_backend
                .get(&(b.cluster.clone(), b.namespace.clone(), b.service.clone())),
            (None, None) => None,
        };
        candidates.into_iter().flatten().any(|&i| self.targets[i] == *target)
    }

    /// The backends this translation resolved for a VirtualDestination port; they do not depend
    /// on the subset, so any of its targets tells.
    pub(crate) fn vd_backends(
        &self,
        namespace: &str,
        name: &str,
        host: &str,
        port: u16,
    ) -> Option<Vec<crate::target::Backend>> {
        let candidates = self
            .by_virtual_destination
            .get(&vd_port_key(namespace, name, host, port))?;
        candidates.iter().map(|&i| &self.targets[i]).find_map(|target| {
            let vd = target.virtual_destination.as_ref()?;
            (vd.namespace == namespace && vd.name == name && target.host == host && target.port == port)
                .then(|| target.backends.clone())
        })
    }
}

fn vd_port_key(namespace: &str, name: &str, host: &str, port: u16) -> u64 {
    let text = format!("{namespace}\n{name}\n{host}\n{port}");
    trellis_base::stable_hash(text.as_bytes())
}

/// The names of what an endpoint change rewrote, per cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EndpointChanges {
    /// Cluster ─▶ names of changed `upstreams`.
    pub upstreams: BTreeMap<String, Vec<String>>,
    /// Cluster ─▶ names of changed `gateway_upstreams`.
    pub gateway_upstreams: BTreeMap<String, Vec<String>>,
}

/// A translation and what it takes to move it along.
pub struct Incremental {
    translation: Translation,
    plan: EndpointPlan,
}

impl Incremental {
    pub fn new(snapshot: &Snapshot) -> Self {
        let (translation, plan) = crate::translate_with_plan(snapshot);
        Incremental { translation, plan }
    }

    pub fn translation(&self) -> &Translation {
        &self.translation
    }

    /// Translates from scratch. Whatever comes out equal to what the previous translation had
    /// is replaced by the previous value itself (the same `Arc`), so the next steps (comparing,
    /// encoding, sending) find what did not change by pointer instead of by content.
    /// Returns the translation it replaced.
    pub fn retranslate(&mut self, snapshot: &Snapshot) -> Translation {
        let (mut translation, plan) = crate::translate_with_plan(snapshot);
        reuse_equal(&mut translation, &self.translation);
        std::mem::replace(self, Incremental { translation, plan }).translation
    }

    /// `snapshot` is the previous one with the discovery of `cluster` replaced; `old` is that
    /// cluster's discovery before. Applies the change if only endpoints moved and says what it
    /// rewrote; `None` when the change reaches further (then call `retranslate`).
    pub fn endpoints_moved(
        &mut self,
        snapshot: &Snapshot,
        cluster: &str,
        old: &ClusterDiscovery,
    ) -> Option<EndpointChanges> {
        let new = snapshot.discovery.get(cluster)?;
        let moved = moved_services(old, new)?;
        Some(self.apply_moves(cluster, new, &moved))
    }

    /// As `endpoints_moved`, for a discovery patched in place: `changed` holds each workload
    /// the patch touched, before and after. Costs what the patch changed, not the cluster's size.
    pub fn workloads_moved(
        &mut self,
        snapshot: &Snapshot,
        cluster: &str,
        changed: &[(Option<&Workload>, Option<&Workload>)],
    ) -> Option<EndpointChanges> {
        let new = snapshot.discovery.get(cluster)?;
        let mut moved = BTreeSet::new();
        for pair in changed {
            let (Some(a), Some(b)) = *pair else { return None };
            if !same_catalog(a, b) {
                return None;
            }
            if a != b {
                moved.insert((b.namespace.as_str(), b.service.as_str()));
            }
        }
        Some(self.apply_moves(cluster, new, &moved))
    }

    /// Rewrites the upstreams of the targets backed by the `moved` (namespace, service)s of
    /// `cluster`, whose discovery is now `new`.
    fn apply_moves(
        &mut self,
        cluster: &str,
        new: &ClusterDiscovery,
        moved: &BTreeSet<(&str, &str)>,
    ) -> EndpointChanges {
        let mut changes = EndpointChanges::default();
        let Some(config) = self.translation.clusters.get_mut(cluster) else {
            return changes;
        };
        let mut affected: BTreeSet<usize> = BTreeSet::new();
        for (namespace, service) in moved {
            let key = (cluster.to_string(), namespace.to_string(), service.to_string());
            affected.extend(self.plan.by_backend.get(&key).into_iter().flatten());
        }
        if affected.is_empty() {
            return changes;
        }
        let by_service = workloads_by_service(new, moved);
        for index in affected {
            let target = &self.plan.targets[index];
            let local = local_endpoints(cluster, target, &by_service);
            if let Some(upstream) = find_shared(&mut config.upstreams, &target.upstream_name()) {
                // Local endpoints come first, then remote gateways, whose weights did not change.
                let remote: Vec<Endpoint> = upstream.endpoints.iter().filter(|e| e.via_gateway).cloned().collect();
                let endpoints: Vec<Endpoint> = local.iter().cloned().chain(remote).collect();
                if upstream.endpoints != endpoints {
                    upstream.endpoints = endpoints;
                    changes
                        .upstreams
                        .entry(cluster.to_string())
                        .or_default()
                        .push(upstream.name.clone());
                }
            }
            if let Some(upstream) = find(&mut config.gateway_upstreams, &target.gateway_upstream_name())
                && upstream.endpoints != local
            {
                upstream.endpoints = local;
                changes
                    .gateway_upstreams
                    .entry(cluster.to_string())
                    .or_default()
                    .push(upstream.name.clone());
            }
        }
        for names in changes
            .upstreams
            .values_mut()
            .chain(changes.gateway_upstreams.values_mut())
        {
            names.sort();
        }
        changes
    }
}

/// Replaces each upstream and virtual host of `new` equal to its counterpart in `old` (same
/// cluster, same name) by that one. Both lists are sorted by name, so each cluster is one walk;
/// a value shared by many clusters is compared once.
fn reuse_equal(new: &mut Translation, old: &Translation) {
    // Keyed by the new value's address: every new value stays alive (held by `new`) while this
    // runs, so no address is reused.
    let mut upstreams: AddressMap<Arc<Upstream>> = AddressMap::default();
    let mut hosts: AddressMap<Arc<VirtualHost>> = AddressMap::default();
    for (cluster, config) in new.clusters.iter_mut() {
        let Some(before) = old.clusters.get(cluster) else {
            continue;
        };
        reuse_list(&mut config.upstreams, &before.upstreams, &mut upstreams, |u| &u.name);
        reuse_list(&mut config.virtual_hosts, &before.virtual_hosts, &mut hosts, |h| {
            &h.name
        });
    }
}

type AddressMap<T> = HashMap<usize, T, std::hash::BuildHasherDefault<AddressHasher>>;

/// Hashes an address as itself: addresses are distinct and well spread already.
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_usize(&mut self, value: usize) {
        // Allocations are aligned: the low bits carry nothing.
        self.0 = (value as u64) >> 4;
    }
}

fn reuse_list<T: PartialEq>(
    new: &mut [Arc<T>],
    old: &[Arc<T>],
    decided: &mut AddressMap<Arc<T>>,
    name: fn(&T) -> &String,
) {
    let mut old = old.iter().peekable();
    for item in new.iter_mut() {
        let address = Arc::as_ptr(item) as usize;
        if let Some(replacement) = decided.get(&address) {
            *item = replacement.clone();
            continue;
        }
        while old.peek().is_some_and(|o| name(o) < name(item)) {
            old.next();
        }
        let replacement = match old.peek() {
            Some(o) if name(o) == name(item) && **o == *item => Arc::clone(o),
            _ => item.clone(),
        };
        decided.insert(address, replacement.clone());
        *item = replacement;
    }
}

fn find<'a>(list: &'a mut [Upstream], name: &str) -> Option<&'a mut Upstream> {
    let i = list.binary_search_by(|u| u.name.as_str().cmp(name)).ok()?;
    Some(&mut list[i])
}

/// A shared upstream to change: copied first if another cluster's config holds it too.
fn find_shared<'a>(list: &'a mut [Arc<Upstream>], name: &str) -> Option<&'a mut Upstream> {
    let i = list.binary_search_by(|u| u.name.as_str().cmp(name)).ok()?;
    Some(Arc::make_mut(&mut list[i]))
}

/// The (namespace, service) of every workload whose address or ports moved, if that is all that
/// changed; `None` when anything else did.
fn moved_services<'a>(old: &ClusterDiscovery, new: &'a ClusterDiscovery) -> Option<BTreeSet<(&'a str, &'a str)>> {
    if old.east_west_gateway != new.east_west_gateway
        || old.addons != new.addons
        || old.gateways != new.gateways
        || old.workloads.len() != new.workloads.len()
    {
        return None;
    }
    let mut moved = BTreeSet::new();
    for (a, b) in old.workloads.iter().zip(&new.workloads) {
        if !same_catalog(a, b) {
            return None;
        }
        if a != b {
            moved.insert((b.namespace.as_str(), b.service.as_str()));
        }
    }
    Some(moved)
}

/// Equal in everything but where the workload is reached.
fn same_catalog(a: &Workload, b: &Workload) -> bool {
    a.name == b.name
        && a.namespace == b.namespace
        && a.service == b.service
        && a.labels == b.labels
        && a.service_account == b.service_account
        && a.ports.len() == b.ports.len()
        && a.ports
            .iter()
            .zip(&b.ports)
            .all(|(p, q)| p.name == q.name && p.port == q.port && p.protocol == q.protocol)
}

/// The workloads of the `wanted` (namespace, service)s, by service.
fn workloads_by_service<'d>(
    discovery: &'d ClusterDiscovery,
    wanted: &BTreeSet<(&str, &str)>,
) -> HashMap<(&'d str, &'d str), Vec<&'d Workload>> {
    let mut grouped: HashMap<(&str, &str), Vec<&Workload>> = HashMap::new();
    for workload in &discovery.workloads {
        if !wanted.contains(&(workload.namespace.as_str(), workload.service.as_str())) {
            continue;
        }
        grouped
            .entry((workload.namespace.as_str(), workload.service.as_str()))
            .or_default()
            .push(workload);
    }
    grouped
}

/// As `endpoints::local_endpoints`, from the cluster's workloads grouped by service.
fn local_endpoints(
    cluster: &str,
    target: &Target,
    by_service: &HashMap<(&str, &str), Vec<&Workload>>,
) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    for backend in target.backends.iter().filter(|b| b.cluster == cluster) {
        let key = (backend.namespace.as_str(), backend.service.as_str());
        for workload in by_service.get(&key).into_iter().flatten() {
            let in_subset = target.subset.iter().all(|(k, v)| workload.labels.get(k) == Some(v));
            let port = workload.ports.iter().find(|p| p.port == backend.port);
            if let (true, Some(port)) = (in_subset, port) {
                endpoints.push(crate::endpoints::local_endpoint(cluster, workload, port.inbound_port));
            }
        }
    }
    endpoints.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    endpoints.dedup();
    endpoints
}

mod routes;
pub use routes::RouteChanges;

#[cfg(test)]
mod tests;
