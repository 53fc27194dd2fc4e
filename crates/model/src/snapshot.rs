//! One immutable view of all accepted config and the latest discovery of every cluster, with the
//! indexes translation needs. Built once per change; translation only reads it.

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::{Resource, ResourceKey, RouteTableSpec, Spec, VirtualDestinationSpec};

use crate::discovery::{ClusterDiscovery, GatewayAddress, Locality, Protocol, Workload};

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Sorted by creation revision, then key: "the oldest wins" where the API says so.
    pub resources: Vec<Resource>,
    /// Latest discovery per cluster name.
    pub discovery: BTreeMap<String, ClusterDiscovery>,
    /// Trust domain of workload identities.
    pub trust_domain: String,
}

/// A service in one cluster, derived from the workloads that back it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service<'a> {
    pub cluster: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The labels all its workloads share.
    pub labels: BTreeMap<String, String>,
    /// By service port number.
    pub ports: BTreeMap<u16, ServicePort>,
    pub workloads: Vec<&'a Workload>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

impl Snapshot {
    pub fn with_trust_domain(mut self, trust_domain: &str) -> Self {
        self.trust_domain = trust_domain.to_string();
        self
    }

    pub fn new(mut resources: Vec<Resource>, discovery: BTreeMap<String, ClusterDiscovery>) -> Self {
        Snapshot::sort_resources(&mut resources);
        Snapshot {
            resources,
            discovery,
            trust_domain: crate::DEFAULT_TRUST_DOMAIN.to_string(),
        }
    }

    /// The order `resources` keeps: by creation revision, then key. Revisions are unique within
    /// one store, so keys (formatted strings) are built only to break a tie.
    pub fn sort_resources(resources: &mut [Resource]) {
        resources.sort_by(|a, b| {
            (a.metadata.creation_revision.cmp(&b.metadata.creation_revision)).then_with(|| a.key().cmp(&b.key()))
        });
    }

    /// Applies resource changes (a new version, or `None` for a deletion), keeping the order;
    /// returns each changed key with its version before. A few changes are found one by one, many
    /// in one pass and one sort, so a bulk apply costs one rebuild rather than one scan each.
    pub fn change_resources(
        &mut self,
        changes: Vec<(ResourceKey, Option<Resource>)>,
    ) -> Vec<(ResourceKey, Option<Resource>)> {
        const ONE_BY_ONE: usize = 16;
        let mut before: Vec<(ResourceKey, Option<Resource>)> = Vec::with_capacity(changes.len());
        if changes.len() <= ONE_BY_ONE {
            for (key, resource) in changes {
                let old = match resource {
                    Some(resource) => self.put_resource(resource),
                    None => self.take_resource(&key),
                };
                // A key changed twice keeps its version from before the first change.
                if !before.iter().any(|(k, _)| *k == key) {
                    before.push((key, old));
                }
            }
            return before;
        }
        // The last change of a key wins.
        let mut wanted: std::collections::HashMap<ResourceKey, Option<Resource>> = changes.into_iter().collect();
        let mut kept = Vec::with_capacity(self.resources.len() + wanted.len());
        for resource in self.resources.drain(..) {
            let key = resource.key();
            match wanted.remove(&key) {
                Some(new) => {
                    kept.extend(new);
                    before.push((key, Some(resource)));
                }
                None => kept.push(resource),
            }
        }
        for (key, new) in wanted {
            kept.extend(new);
            before.push((key, None));
        }
        Snapshot::sort_resources(&mut kept);
        self.resources = kept;
        before
    }

    /// Puts `resource` in, in place of the one with its key, keeping the order; returns the one
    /// it replaced. A change to one resource then costs a scan, not a rebuild and re-sort of all.
    pub fn put_resource(&mut self, resource: Resource) -> Option<Resource> {
        let key = resource.key();
        let found = self.position(&key);
        // An update keeps its creation revision, so its place: swap it in without moving others.
        if let Some(at) = found
            && self.resources[at].metadata.creation_revision == resource.metadata.creation_revision
        {
            return Some(std::mem::replace(&mut self.resources[at], resource));
        }
        let old = found.map(|at| self.resources.remove(at));
        let at = self.resources.partition_point(|r| {
            (r.metadata.creation_revision, r.key()) < (resource.metadata.creation_revision, key.clone())
        });
        self.resources.insert(at, resource);
        old
    }

    /// Takes out the resource with `key`, if there is one.
    pub fn take_resource(&mut self, key: &ResourceKey) -> Option<Resource> {
        let at = self.position(key)?;
        Some(self.resources.remove(at))
    }

    fn position(&self, key: &ResourceKey) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.metadata.name == key.name && r.metadata.namespace == key.namespace && r.kind() == key.kind)
    }

    /// Every cluster the mesh knows: registered as a KubernetesCluster or heard from by discovery.
    pub fn clusters(&self) -> BTreeSet<String> {
        let registered = self.resources.iter().filter_map(|r| match r.spec {
            Spec::KubernetesCluster(_) => Some(r.metadata.name.clone()),
            _ => None,
        });
        registered.chain(self.discovery.keys().cloned()).collect()
    }

    pub fn virtual_destinations(&self) -> impl Iterator<Item = (&Resource, &VirtualDestinationSpec)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::VirtualDestination(spec) => Some((r, spec)),
            _ => None,
        })
    }

    pub fn route_tables(&self) -> impl Iterator<Item = (&Resource, &RouteTableSpec)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::RouteTable(spec) => Some((r, spec)),
            _ => None,
        })
    }

    /// Where a cluster's workloads run, as its agent reports it; a cluster that reports none (or
    /// is not heard from) is a region of its own name, so mappings written with cluster names
    /// keep working.
    pub fn locality(&self, cluster: &str) -> Locality {
        self.discovery
            .get(cluster)
            .and_then(|d| d.locality.clone())
            .unwrap_or_else(|| Locality {
                region: cluster.to_string(),
                ..Default::default()
            })
    }

    pub fn east_west_gateway(&self, cluster: &str) -> Option<&GatewayAddress> {
        self.discovery.get(cluster)?.east_west_gateway.as_ref()
    }

    /// All services of all clusters, ordered by (cluster, namespace, name).
    pub fn services(&self) -> Vec<Service<'_>> {
        self.services_where(|_, _| true)
    }

    /// As `services`, only those of the given (namespace, name)s: a scan of the workloads that
    /// builds nothing for the others.
    pub fn services_named(&self, wanted: &BTreeSet<(String, String)>) -> Vec<Service<'_>> {
        if wanted.is_empty() {
            return Vec::new();
        }
        // Few names are wanted: a look through them costs less than building a key per workload.
        self.services_where(|namespace, name| wanted.iter().any(|(ns, n)| ns == namespace && n == name))
    }

    fn services_where(&self, wanted: impl Fn(&str, &str) -> bool) -> Vec<Service<'_>> {
        let mut grouped: BTreeMap<(&str, &str, &str), Vec<&Workload>> = BTreeMap::new();
        for (cluster, discovery) in &self.discovery {
            for workload in &discovery.workloads {
                if !wanted(&workload.namespace, &workload.service) {
                    continue;
                }
                grouped
                    .entry((cluster.as_str(), workload.namespace.as_str(), workload.service.as_str()))
                    .or_default()
                    .push(workload);
            }
        }
        grouped
            .into_iter()
            .map(|((cluster, namespace, name), workloads)| {
                let mut labels = workloads[0].labels.clone();
                labels.retain(|k, v| workloads.iter().all(|w| w.labels.get(k) == Some(v)));
                let mut ports = BTreeMap::new();
                for port in workloads.iter().flat_map(|w| &w.ports) {
                    ports.entry(port.port).or_insert_with(|| ServicePort {
                        name: port.name.clone(),
                        port: port.port,
                        protocol: port.protocol,
                    });
                }
                Service {
                    cluster,
                    namespace,
                    name,
                    labels,
                    ports,
                    workloads,
                }
            })
            .collect()
    }
}

impl Service<'_> {
    /// The service port a selector names: by number, or by port name.
    pub fn port_by_number_or_name(&self, number: Option<u32>, name: Option<&str>) -> Option<&ServicePort> {
        match (number, name) {
            (Some(number), _) => self.ports.values().find(|p| u32::from(p.port) == number),
            (None, Some(name)) => self.ports.values().find(|p| p.name == name),
            (None, None) => (self.ports.len() == 1).then(|| self.ports.values().next()).flatten(),
        }
    }
}

#[cfg(test)]
mod tests;
