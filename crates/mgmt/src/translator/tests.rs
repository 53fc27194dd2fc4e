//! The translator against a real store: what it publishes after a burst of changes equals what
//! a translator started afresh on the same store publishes.

use std::collections::BTreeMap;

use trellis_model::discovery::{GatewayAddress, Workload, WorkloadPort};
use trellis_store::RedbStore;

use super::*;

const CONFIG: &str = "
apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: a, namespace: demo}
spec: {hosts: [a.mesh.internal], services: [{labels: {app: a}}], ports: [{number: 80}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: b, namespace: demo}
spec: {hosts: [b.mesh.internal], services: [{labels: {app: b}}], ports: [{number: 80}]}
";

fn workload(name: &str, app: &str, address: &str) -> Workload {
    Workload {
        name: name.to_string(),
        namespace: "demo".to_string(),
        service: app.to_string(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        service_account: "default".to_string(),
        address: address.to_string(),
        ports: vec![WorkloadPort {
            name: "http".to_string(),
            port: 80,
            protocol: Default::default(),
            inbound_port: 15006,
            app_port: 8080,
        }],
    }
}

fn discovery(cluster: &str, workloads: Vec<Workload>) -> ClusterDiscovery {
    let mut discovery = ClusterDiscovery {
        cluster: cluster.to_string(),
        east_west_gateway: Some(GatewayAddress {
            host: "127.0.0.1".to_string(),
            port: 15443,
        }),
        workloads,
        addons: Vec::new(),
        gateways: Vec::new(),
        locality: None,
    };
    discovery.normalize();
    discovery
}

fn metrics() -> MgmtMetrics {
    MgmtMetrics::register(&mut prometheus_client::registry::Registry::default())
}

/// Each cluster's config as its sections decode, and its version.
fn configs(published: &Published) -> BTreeMap<String, (String, trellis_model::ClusterConfig)> {
    published
        .clusters
        .iter()
        .map(|(name, encoded)| {
            (
                name.clone(),
                (encoded.version.clone(), encoded.sections.decode().unwrap()),
            )
        })
        .collect()
}

/// A store with CONFIG, `more` resources, and one workload of `a` in c1 and of `b` in c2.
fn demo_store(name: &str, more: Vec<Resource>) -> (std::path::PathBuf, Arc<dyn Store>) {
    let path = std::env::temp_dir().join(format!("trellis-translator-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&path).unwrap());
    store
        .apply(trellis_api::parse_documents("config.yaml", CONFIG).unwrap())
        .unwrap();
    if !more.is_empty() {
        store.apply(more).unwrap();
    }
    store
        .put_discovery(&discovery("c1", vec![workload("a-1", "a", "10.0.0.1")]))
        .unwrap();
    store
        .put_discovery(&discovery("c2", vec![workload("b-1", "b", "10.0.1.1")]))
        .unwrap();
    (path, store)
}

/// A translation of the demo store, for tests elsewhere in the crate.
pub(crate) fn demo_published(name: &str) -> Published {
    let (path, store) = demo_store(name, Vec::new());
    let (_, published) = Translator::new(store, "trellis.local", metrics()).unwrap();
    let _ = std::fs::remove_file(path);
    published
}

#[test]
fn a_burst_mixing_an_endpoint_move_and_a_new_workload_publishes_what_a_fresh_start_would() {
    let (path, store) = demo_store("burst", Vec::new());
    let (mut translator, first) = Translator::new(store.clone(), "trellis.local", metrics()).unwrap();

    // One burst: in c1 a workload moves (an endpoint change); in c2 one is added (not one).
    store
        .put_discovery(&discovery("c1", vec![workload("a-1", "a", "10.0.0.9")]))
        .unwrap();
    store
        .put_discovery(&discovery(
            "c2",
            vec![workload("b-1", "b", "10.0.1.1"), workload("b-2", "b", "10.0.1.2")],
        ))
        .unwrap();
    let mut touched = Touched::default();
    translator.follow(Duration::ZERO, &mut touched).unwrap();
    let next = translator.translate(&first, touched, &Default::default());

    let (_, fresh) = Translator::new(store.clone(), "trellis.local", metrics()).unwrap();
    assert_eq!(configs(&next), configs(&fresh));
    let moved = configs(&next)["c1"]
        .1
        .upstream("outbound|80||a.mesh.internal")
        .unwrap()
        .endpoints[0]
        .address
        .clone();
    assert_eq!(moved, "10.0.0.9");

    // And an endpoint move alone takes the endpoint path, with the same result.
    store
        .put_discovery(&discovery("c1", vec![workload("a-1", "a", "10.0.0.7")]))
        .unwrap();
    let mut touched = Touched::default();
    translator.follow(Duration::ZERO, &mut touched).unwrap();
    let after = translator.translate(&next, touched, &Default::default());
    assert!(
        after.statuses.is_same(&next.statuses),
        "the endpoint path carries statuses over"
    );
    let (_, fresh) = Translator::new(store, "trellis.local", metrics()).unwrap();
    assert_eq!(configs(&after), configs(&fresh));
    let _ = std::fs::remove_file(&path);
}

const TABLE: &str = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: split, namespace: demo}
spec:
  hosts: [a.mesh.internal]
  http:
  - name: split
    forwardTo:
      destinations:
      - {ref: {name: a}, kind: VIRTUAL_DESTINATION, weight: WEIGHT_A}
      - {ref: {name: b}, kind: VIRTUAL_DESTINATION, weight: WEIGHT_B}
";

fn table(a: u32, b: u32) -> Vec<Resource> {
    let yaml = TABLE
        .replace("WEIGHT_A", &a.to_string())
        .replace("WEIGHT_B", &b.to_string());
    trellis_api::parse_documents("table.yaml", &yaml).unwrap()
}

#[test]
fn a_route_table_weight_flip_rewrites_one_virtual_host_and_publishes_what_a_fresh_start_would() {
    let (path, store) = demo_store("flip", table(90, 10));
    let (mut translator, first) = Translator::new(store.clone(), "trellis.local", metrics()).unwrap();

    store.apply(table(10, 90)).unwrap();
    let mut touched = Touched::default();
    translator.follow(Duration::ZERO, &mut touched).unwrap();
    let next = translator.translate(&first, touched, &Default::default());

    let (_, fresh) = Translator::new(store.clone(), "trellis.local", metrics()).unwrap();
    assert_eq!(configs(&next), configs(&fresh));
    assert_eq!(
        next.statuses.to_map(),
        fresh.statuses.to_map(),
        "the table's new generation is in its status"
    );
    for (cluster, encoded) in &next.clusters {
        let (changed, removed) = encoded.sections.delta_from(Some(&first.clusters[cluster].sections));
        let names: Vec<&str> = changed.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            (names, removed.len()),
            (vec![Sections::virtual_host_key("a.mesh.internal:80").as_str()], 0),
            "{cluster}: only the table's virtual host is sent"
        );
    }

    // An edit that reaches another host publishes what a fresh start would, too.
    let mut wider = table(50, 50);
    let trellis_api::Spec::RouteTable(spec) = &mut wider[0].spec else {
        unreachable!()
    };
    spec.hosts.push("b.mesh.internal".to_string());
    store.apply(wider).unwrap();
    let mut touched = Touched::default();
    translator.follow(Duration::ZERO, &mut touched).unwrap();
    let after = translator.translate(&next, touched, &Default::default());
    let (_, fresh) = Translator::new(store, "trellis.local", metrics()).unwrap();
    assert_eq!(configs(&after), configs(&fresh));
    assert_eq!(after.statuses.to_map(), fresh.statuses.to_map());
    let _ = std::fs::remove_file(&path);
}
