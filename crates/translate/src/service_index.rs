//! Services indexed the ways translation looks them up, so that no step scans every service per
//! VirtualDestination, route or target (that made each change cost services × destinations).

use std::collections::HashMap;

use trellis_api::ObjectSelector;
use trellis_model::snapshot::Service;

pub(crate) struct ServiceIndex<'a, 's> {
    /// Sorted by (cluster, namespace, name), as `Snapshot::services` returns them.
    services: &'a [Service<'s>],
    by_name: HashMap<&'s str, Vec<usize>>,
    by_namespace: HashMap<&'s str, Vec<usize>>,
    by_cluster: HashMap<&'s str, Vec<usize>>,
    by_label: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a, 's> ServiceIndex<'a, 's> {
    pub(crate) fn new(services: &'a [Service<'s>]) -> Self {
        let mut index = ServiceIndex {
            services,
            by_name: HashMap::new(),
            by_namespace: HashMap::new(),
            by_cluster: HashMap::new(),
            by_label: HashMap::new(),
        };
        for (i, service) in services.iter().enumerate() {
            index.by_name.entry(service.name).or_default().push(i);
            index.by_namespace.entry(service.namespace).or_default().push(i);
            index.by_cluster.entry(service.cluster).or_default().push(i);
            for (key, value) in &service.labels {
                index.by_label.entry((key, value)).or_default().push(i);
            }
        }
        index
    }

    pub(crate) fn all(&self) -> &'a [Service<'s>] {
        self.services
    }

    /// One service by its full name.
    pub(crate) fn get(&self, cluster: &str, namespace: &str, name: &str) -> Option<&'a Service<'s>> {
        self.services
            .binary_search_by(|s| (s.cluster, s.namespace, s.name).cmp(&(cluster, namespace, name)))
            .ok()
            .map(|i| &self.services[i])
    }

    /// The services of one name and namespace, in every cluster (or in `cluster` when given).
    pub(crate) fn named(&self, namespace: &str, name: &str, cluster: &str) -> impl Iterator<Item = &'a Service<'s>> {
        let services = self.services;
        let candidates: &[usize] = self.by_name.get(name).map(Vec::as_slice).unwrap_or_default();
        candidates
            .iter()
            .map(move |&i| &services[i])
            .filter(move |s| s.namespace == namespace && (cluster.is_empty() || s.cluster == cluster))
    }

    /// The ports that back a reference to service `namespace/name` (in `cluster`, or every
    /// cluster when empty) on port `number` or `port_name`: one backend per service that has it.
    pub(crate) fn backends(
        &self,
        namespace: &str,
        name: &str,
        cluster: &str,
        number: Option<u32>,
        port_name: Option<&str>,
    ) -> Vec<crate::target::Backend> {
        self.named(namespace, name, cluster)
            .filter_map(|service| {
                let port = service.port_by_number_or_name(number, port_name)?;
                Some(crate::target::Backend {
                    cluster: service.cluster.to_string(),
                    namespace: service.namespace.to_string(),
                    service: service.name.to_string(),
                    port: port.port,
                })
            })
            .collect()
    }

    /// The services a selector picks, in (cluster, namespace, name) order. Starts from the
    /// shortest list among the selector's fields, then checks the rest on each candidate.
    pub(crate) fn selected(&self, selector: &ObjectSelector) -> Vec<&'a Service<'s>> {
        let mut lists: Vec<Option<&Vec<usize>>> = Vec::new();
        if !selector.name.is_empty() {
            lists.push(self.by_name.get(selector.name.as_str()));
        }
        if !selector.namespace.is_empty() {
            lists.push(self.by_namespace.get(selector.namespace.as_str()));
        }
        if !selector.cluster.is_empty() {
            lists.push(self.by_cluster.get(selector.cluster.as_str()));
        }
        for (key, value) in &selector.labels {
            lists.push(self.by_label.get(&(key.as_str(), value.as_str())));
        }
        let matches = |s: &&Service<'s>| selector.matches(&s.labels, s.name, s.namespace, s.cluster);
        if lists.is_empty() {
            return self.services.iter().filter(matches).collect();
        }
        // A field nobody has: nothing matches.
        let Some(shortest) = lists
            .into_iter()
            .map(|list| list.map(Vec::as_slice).unwrap_or_default())
            .min_by_key(|list| list.len())
        else {
            return Vec::new();
        };
        shortest.iter().map(|&i| &self.services[i]).filter(matches).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn service<'s>(cluster: &'s str, namespace: &'s str, name: &'s str, app: &str) -> Service<'s> {
        Service {
            cluster,
            namespace,
            name,
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            ports: BTreeMap::new(),
            workloads: Vec::new(),
        }
    }

    fn names(found: Vec<&Service<'_>>) -> Vec<String> {
        found
            .iter()
            .map(|s| format!("{}/{}/{}", s.cluster, s.namespace, s.name))
            .collect()
    }

    #[test]
    fn selection_through_the_index_equals_a_scan() {
        let services = vec![
            service("c1", "a", "x", "x"),
            service("c1", "b", "x", "x"),
            service("c1", "b", "y", "y"),
            service("c2", "a", "x", "x"),
            service("c2", "a", "z", "x"),
        ];
        let index = ServiceIndex::new(&services);
        let selectors = [
            ObjectSelector::default(),
            ObjectSelector {
                labels: BTreeMap::from([("app".into(), "x".into())]),
                ..Default::default()
            },
            ObjectSelector {
                labels: BTreeMap::from([("app".into(), "x".into())]),
                namespace: "a".into(),
                cluster: "c2".into(),
                ..Default::default()
            },
            ObjectSelector {
                name: "x".into(),
                ..Default::default()
            },
            ObjectSelector {
                labels: BTreeMap::from([("app".into(), "missing".into())]),
                ..Default::default()
            },
            ObjectSelector {
                namespace: "nowhere".into(),
                ..Default::default()
            },
        ];
        for selector in &selectors {
            let scanned: Vec<&Service> = services
                .iter()
                .filter(|s| selector.matches(&s.labels, s.name, s.namespace, s.cluster))
                .collect();
            assert_eq!(names(index.selected(selector)), names(scanned), "{selector:?}");
        }
        assert_eq!(index.get("c2", "a", "z").map(|s| s.name), Some("z"));
        assert!(index.get("c2", "b", "z").is_none());
        assert_eq!(names(index.named("a", "x", "").collect()), ["c1/a/x", "c2/a/x"]);
        assert_eq!(names(index.named("a", "x", "c2").collect()), ["c2/a/x"]);
    }
}
