//! The simulated mesh: services `svc-<i>` in namespace `bench`, spread round-robin over clusters
//! `cluster-<c>` (so svc-0 is in cluster-0 and svc-1 in cluster-1), one workload each, and one
//! VirtualDestination `svc-<i>.mesh.internal` per service.

use std::collections::BTreeMap;

use trellis_model::{ClusterDiscovery, GatewayAddress, Protocol, Workload, WorkloadPort};

pub const NAMESPACE: &str = "bench";

/// The apply endpoint takes at most 1000 resources per request.
pub const APPLY_BATCH: usize = 1000;

pub fn cluster_name(c: usize) -> String {
    format!("cluster-{c}")
}

pub fn host(service: usize) -> String {
    format!("svc-{service}.mesh.internal")
}

/// The workload of service `i`, with an address unique in the mesh (10.x.y.z from `i`).
pub fn workload(i: usize) -> Workload {
    Workload {
        name: format!("svc-{i}-0"),
        namespace: NAMESPACE.into(),
        service: format!("svc-{i}"),
        labels: BTreeMap::from([("app".to_string(), format!("svc-{i}"))]),
        service_account: format!("svc-{i}"),
        address: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        ports: vec![WorkloadPort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Http,
            inbound_port: 15006,
            app_port: 8080,
        }],
    }
}

/// What cluster `c`'s agent reports: its services' workloads and an east-west gateway (without
/// one, no other cluster could reach its services and translation warns about every one).
pub fn discovery(c: usize, clusters: usize, services: usize) -> ClusterDiscovery {
    let mut discovery = ClusterDiscovery {
        cluster: cluster_name(c),
        east_west_gateway: Some(GatewayAddress {
            host: format!("192.168.{}.{}", c / 250, c % 250 + 1),
            port: 15443,
        }),
        workloads: (c..services).step_by(clusters).map(workload).collect(),
        addons: Vec::new(),
        gateways: Vec::new(),
        locality: None,
    };
    discovery.normalize();
    discovery
}

/// VirtualDestinations for services `range`, as one YAML stream.
pub fn virtual_destinations(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            format!(
                "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: svc-{i}, namespace: {NAMESPACE}}}\nspec:\n  hosts: [{host}]\n  services:\n  - labels: {{app: svc-{i}}}\n  ports:\n  - number: 80\n    protocol: HTTP\n    targetPort: {{name: http}}\n",
                host = host(i)
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

pub const SPLIT_HOST: &str = "bench-split.mesh.internal";

/// One RouteTable sending `SPLIT_HOST` to the VirtualDestinations of svc-0 and svc-1 with weights
/// `a` and `b`.
pub fn route_table(a: u32, b: u32) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {{name: bench-split, namespace: {NAMESPACE}}}\nspec:\n  hosts: [{SPLIT_HOST}]\n  http:\n  - name: split\n    forwardTo:\n      destinations:\n      - ref: {{name: svc-0, namespace: {NAMESPACE}}}\n        kind: VIRTUAL_DESTINATION\n        port: {{number: 80}}\n        weight: {a}\n      - ref: {{name: svc-1, namespace: {NAMESPACE}}}\n        kind: VIRTUAL_DESTINATION\n        port: {{number: 80}}\n        weight: {b}\n"
    )
}

/// How a route's weight appears in the IR JSON: `weight` is the last field of a
/// `WeightedUpstream` (`{"upstream":..,"weight":N}`), while an endpoint's is followed by a comma,
/// so this matches the route only.
pub fn route_weight_marker(weight: u32) -> String {
    format!("\"weight\":{weight}}}")
}

/// The weights of flip `k`: the heavier side alternates, and every flip's heavier weight is a
/// number no earlier config carried, so a config that has it is the new one.
pub fn flip_weights(k: u32) -> (u32, u32) {
    let a = if k.is_multiple_of(2) { 900 + k } else { 100 + k };
    (a, 1000 - a)
}

/// The address of svc-0's workload after endpoint change `k`.
pub fn changed_address(k: usize) -> String {
    format!("172.16.{}.{}", k / 250, k % 250 + 1)
}
