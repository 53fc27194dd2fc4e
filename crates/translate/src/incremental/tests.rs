//! Incremental translation equals full translation, over random change sequences on every
//! golden case.

use std::collections::BTreeMap;
use std::path::Path;

use trellis_model::discovery::{Workload, WorkloadPort};
use trellis_model::{ClusterDiscovery, Snapshot};

use super::*;
use crate::translate;

/// A small xorshift generator: repeatable random sequences without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn load(case: &str) -> Snapshot {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let config = std::fs::read_to_string(testdata.join(case).join("config.yaml")).unwrap();
    crate::demo_fixture::demo_snapshot(case, &config)
}

fn cases() -> Vec<String> {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut cases: Vec<String> = std::fs::read_dir(testdata)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.yaml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

/// Moves one workload (address or inbound port): an endpoint change.
fn move_endpoint(rng: &mut Rng, discovery: &mut ClusterDiscovery) {
    if discovery.workloads.is_empty() {
        return;
    }
    let i = rng.below(discovery.workloads.len());
    let workload = &mut discovery.workloads[i];
    match rng.below(3) {
        0 => workload.address = format!("10.{}.{}.{}", rng.below(3), rng.below(3), rng.below(3)),
        _ => {
            if let Some(port) = workload.ports.first_mut() {
                port.inbound_port = 30000 + rng.below(5) as u16;
            }
        }
    }
}

/// Anything else a discovery report can change.
fn change_catalog(rng: &mut Rng, discovery: &mut ClusterDiscovery) {
    match rng.below(4) {
        0 if !discovery.workloads.is_empty() => {
            let i = rng.below(discovery.workloads.len());
            discovery.workloads.remove(i);
        }
        1 if !discovery.workloads.is_empty() => {
            let i = rng.below(discovery.workloads.len());
            discovery.workloads[i]
                .labels
                .insert("version".to_string(), format!("v{}", rng.below(3)));
        }
        2 => discovery.east_west_gateway = None,
        _ => {
            let service = ["backend", "frontend", "extra"][rng.below(3)];
            discovery.workloads.push(Workload {
                name: format!("{service}-{}", rng.below(1000)),
                namespace: "demo".to_string(),
                service: service.to_string(),
                labels: BTreeMap::from([
                    ("app".to_string(), service.to_string()),
                    ("version".to_string(), format!("v{}", 1 + rng.below(2))),
                ]),
                service_account: "default".to_string(),
                address: "127.0.0.1".to_string(),
                ports: vec![WorkloadPort {
                    name: "http".to_string(),
                    port: 80,
                    protocol: Default::default(),
                    inbound_port: 31000 + rng.below(100) as u16,
                    app_port: 31500,
                }],
            });
        }
    }
    discovery.normalize();
}

/// The names of upstreams whose content differs between two translations, per cluster.
fn differing(before: &Translation, after: &Translation, gateway: bool) -> BTreeMap<String, Vec<String>> {
    let mut found = BTreeMap::new();
    for (cluster, config) in &after.clusters {
        let list = |c: &trellis_model::ClusterConfig| {
            if gateway {
                c.gateway_upstreams.clone()
            } else {
                c.upstreams.iter().map(|u| (**u).clone()).collect()
            }
        };
        let old: BTreeMap<String, Upstream> = before
            .clusters
            .get(cluster)
            .map(|c| list(c).into_iter().map(|u| (u.name.clone(), u)).collect())
            .unwrap_or_default();
        let names: Vec<String> = list(config)
            .into_iter()
            .filter(|u| old.get(&u.name) != Some(u))
            .map(|u| u.name)
            .collect();
        if !names.is_empty() {
            found.insert(cluster.clone(), names);
        }
    }
    found
}

#[test]
fn incremental_translation_equals_full_translation_on_random_change_sequences() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut fast_paths = 0;
    for case in cases() {
        let mut snapshot = load(&case);
        let mut incremental = Incremental::new(&snapshot);
        assert_eq!(*incremental.translation(), translate(&snapshot), "{case}: the start");
        for step in 0..150 {
            let clusters: Vec<String> = snapshot.discovery.keys().cloned().collect();
            let cluster = clusters[rng.below(clusters.len())].clone();
            let before = incremental.translation().clone();
            let old = snapshot.discovery[&cluster].clone();
            let mut new = old.clone();
            let endpoint_only = rng.below(4) != 0;
            if endpoint_only {
                move_endpoint(&mut rng, &mut new);
            } else {
                change_catalog(&mut rng, &mut new);
            }
            // Agents report a change as a patch when they can: both ways must agree.
            let patch = trellis_model::DiscoveryPatch::between(&old, &new).filter(|_| rng.below(2) == 0);
            snapshot.discovery.insert(cluster.clone(), new);
            let full = translate(&snapshot);
            let outcome = match &patch {
                Some(patch) => {
                    let mut patched = old.clone();
                    let changed = patch.apply_to(&mut patched);
                    assert_eq!(patched, snapshot.discovery[&cluster], "{case} step {step}: the patch");
                    let pairs: Vec<_> = changed.iter().map(|(a, b)| (a.as_ref(), b.as_ref())).collect();
                    incremental.workloads_moved(&snapshot, &cluster, &pairs)
                }
                None => incremental.endpoints_moved(&snapshot, &cluster, &old),
            };
            match outcome {
                Some(changes) => {
                    fast_paths += 1;
                    assert_eq!(*incremental.translation(), full, "{case} step {step}: endpoint path");
                    // It names exactly what changed, so the relay sends exactly that.
                    assert_eq!(
                        changes.upstreams,
                        differing(&before, &full, false),
                        "{case} step {step}"
                    );
                    assert_eq!(
                        changes.gateway_upstreams,
                        differing(&before, &full, true),
                        "{case} step {step}"
                    );
                }
                None => {
                    assert!(
                        !endpoint_only,
                        "{case} step {step}: an endpoint move took the full path"
                    );
                    incremental.retranslate(&snapshot);
                    assert_eq!(*incremental.translation(), full, "{case} step {step}: full path");
                }
            }
        }
    }
    assert!(fast_paths > 500, "the endpoint path ran {fast_paths} times");
}

/// Edits one route table the ways users do: weights, matchers, names and labels, destinations
/// reordered or added, hosts, a fixed response.
fn edit_route_table(rng: &mut Rng, snapshot: &Snapshot, resource: &mut trellis_api::Resource) {
    let trellis_api::Spec::RouteTable(spec) = &mut resource.spec else {
        return;
    };
    let vd_hosts: Vec<String> = snapshot
        .virtual_destinations()
        .flat_map(|(_, vd)| vd.hosts.clone())
        .collect();
    resource.metadata.generation += 1;
    if spec.http.is_empty() {
        return;
    }
    let i = rng.below(spec.http.len());
    let route = &mut spec.http[i];
    match rng.below(9) {
        0..=2 => {
            for destination in route.forward_to.iter_mut().flat_map(|f| &mut f.destinations) {
                destination.weight = [None, Some(0), Some(1), Some(50), Some(99)][rng.below(5)];
            }
        }
        3 => route.matchers.push(trellis_api::RequestMatcher {
            uri: Some(trellis_api::UriMatcher {
                prefix: Some(format!("/p{}", rng.below(3))),
                ..Default::default()
            }),
            ..Default::default()
        }),
        4 => {
            route.name = format!("r{}", rng.below(3));
            route.labels.insert("team".to_string(), format!("t{}", rng.below(2)));
        }
        5 => {
            if let Some(forward) = &mut route.forward_to {
                forward.destinations.reverse();
            }
        }
        6 => {
            if let Some(forward) = &mut route.forward_to
                && let Some(first) = forward.destinations.first().cloned()
            {
                forward.destinations.push(first);
            }
        }
        7 if !vd_hosts.is_empty() => spec.hosts = vec![vd_hosts[rng.below(vd_hosts.len())].clone()],
        _ => {
            route.forward_to = None;
            route.direct_response = Some(trellis_api::DirectResponseAction {
                status: 200 + rng.below(3) as u32,
                body: String::new(),
            });
        }
    }
}

/// The names of virtual hosts whose content differs between two translations (any cluster).
fn differing_hosts(before: &Translation, after: &Translation) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for (cluster, config) in &after.clusters {
        for host in &config.virtual_hosts {
            let old = before
                .clusters
                .get(cluster)
                .and_then(|c| c.virtual_hosts.iter().find(|h| h.name == host.name));
            if old.map(|h| **h != **host).unwrap_or(true) {
                names.insert(host.name.clone());
            }
        }
    }
    names.into_iter().collect()
}

/// A route table for each VirtualDestination host, so that every case (workspaces, clusters,
/// external services) has tables to edit.
fn with_route_tables(mut snapshot: Snapshot) -> Snapshot {
    let mut yaml = String::new();
    for (resource, vd) in snapshot.virtual_destinations() {
        let Some(host) = vd.hosts.first() else { continue };
        yaml.push_str(&format!(
            "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\n\
             metadata: {{name: t-{name}, namespace: {namespace}}}\n\
             spec:\n  hosts: [{host}]\n  http:\n  - name: split\n    forwardTo:\n      destinations:\n\
             \x20     - {{ref: {{name: {name}}}, kind: VIRTUAL_DESTINATION, weight: 60}}\n\
             \x20     - {{ref: {{name: backend, cluster: cluster-1}}, port: {{number: 80}}, weight: 40}}\n---\n",
            name = resource.metadata.name,
            namespace = resource.metadata.namespace,
        ));
    }
    if yaml.is_empty() {
        return snapshot;
    }
    let tables = trellis_api::parse_documents("tables", &yaml).unwrap();
    snapshot.resources.extend(tables);
    Snapshot::sort_resources(&mut snapshot.resources);
    snapshot
}

#[test]
fn route_table_edits_equal_full_translation_on_random_sequences() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut fast_paths, mut edits) = (0, 0);
    for case in cases() {
        let mut snapshot = with_route_tables(load(&case));
        let mut tables: Vec<trellis_api::ResourceKey> = snapshot.route_tables().map(|(r, _)| r.key()).collect();
        if tables.is_empty() {
            continue;
        }
        let mut incremental = Incremental::new(&snapshot);
        for step in 0..120 {
            edits += 1;
            let before = incremental.translation().clone();
            let key = tables[rng.below(tables.len())].clone();
            let edited = if rng.below(6) == 0 {
                // A new table, after every other one: a copy of one, edited.
                let mut new = snapshot.resources.iter().find(|r| r.key() == key).unwrap().clone();
                new.metadata.name = format!("new-{step}");
                new.metadata.creation_revision = snapshot
                    .resources
                    .iter()
                    .map(|r| r.metadata.creation_revision)
                    .max()
                    .unwrap_or(0)
                    + 1;
                edit_route_table(&mut rng, &snapshot, &mut new);
                let created = new.key();
                tables.push(created.clone());
                snapshot.put_resource(new);
                BTreeMap::from([(created, None)])
            } else {
                let old = snapshot.take_resource(&key).unwrap();
                let mut new = old.clone();
                edit_route_table(&mut rng, &snapshot, &mut new);
                snapshot.put_resource(new);
                BTreeMap::from([(key.clone(), Some(old))])
            };
            let full = translate(&snapshot);
            match incremental.route_tables_edited(&snapshot, &edited) {
                Some(changes) => {
                    fast_paths += 1;
                    assert_eq!(*incremental.translation(), full, "{case} step {step}: route path");
                    assert_eq!(
                        changes.virtual_hosts,
                        differing_hosts(&before, &full),
                        "{case} step {step}"
                    );
                }
                None => {
                    incremental.retranslate(&snapshot);
                    assert_eq!(*incremental.translation(), full, "{case} step {step}: full path");
                }
            }
        }
    }
    // Most edits keep their targets; some reach further (reordered or new destinations,
    // policies on the routes) and must take the full path.
    assert!(
        fast_paths > edits / 4 && fast_paths < edits,
        "the route path ran {fast_paths} of {edits} times"
    );
}
