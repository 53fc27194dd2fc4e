//! A change that adds or drops a cluster reaches the proxy in an order that never leaves a
//! route naming a cluster it lacks.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;

use crate::delta::DeltaState;
use crate::delta::tests::{request, sent};
use crate::snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, Snapshot};
use crate::stream::Outcome;

/// EDS clusters, their endpoints, and one route configuration whose content is `route`.
fn snapshot(clusters: &[&str], route: &str) -> Option<Arc<Snapshot>> {
    let mut s = Snapshot::default();
    let eds = |name: &str| {
        let cluster = Cluster {
            name: name.to_string(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
            ..Default::default()
        };
        let any = Any {
            type_url: CLUSTER_TYPE.to_string(),
            value: cluster.encode_to_vec(),
        };
        (name.to_string(), any)
    };
    let opaque = |type_url: &str, name: &str, value: &str| {
        let any = Any {
            type_url: type_url.to_string(),
            value: value.as_bytes().to_vec(),
        };
        (name.to_string(), any)
    };
    s.insert(CLUSTER_TYPE, clusters.iter().map(|c| eds(c)).collect());
    s.insert(
        ENDPOINT_TYPE,
        clusters.iter().map(|c| opaque(ENDPOINT_TYPE, c, "endpoints")).collect(),
    );
    s.insert(ROUTE_TYPE, vec![opaque(ROUTE_TYPE, "outbound", route)]);
    Some(Arc::new(s))
}

fn types(responses: &[DeltaDiscoveryResponse]) -> Vec<&str> {
    responses.iter().map(|r| r.type_url.as_str()).collect()
}

fn ack(state: &mut DeltaState, response: &DeltaDiscoveryResponse) -> Vec<DeltaDiscoveryResponse> {
    let outcome = state.handle_request(&request(&response.type_url, &[], &response.nonce));
    assert!(matches!(outcome, Outcome::Acked { .. }), "{outcome:?}");
    state.released()
}

/// A proxy that took clusters `a`, their endpoints and route version 1.
fn running() -> DeltaState {
    let mut state = DeltaState::new("node-1");
    state.set_snapshot(snapshot(&["a"], "1"));
    let clusters = sent(state.handle_request(&request(CLUSTER_TYPE, &[], "")));
    assert!(ack(&mut state, &clusters).is_empty());
    let endpoints = sent(state.handle_request(&request(ENDPOINT_TYPE, &["a"], "")));
    assert!(ack(&mut state, &endpoints).is_empty());
    let routes = sent(state.handle_request(&request(ROUTE_TYPE, &["outbound"], "")));
    assert!(ack(&mut state, &routes).is_empty());
    state
}

#[test]
fn routes_naming_a_new_cluster_wait_until_its_endpoints_are_sent() {
    let mut state = running();
    let pushes = state.set_snapshot(snapshot(&["a", "b"], "2"));
    assert_eq!(
        types(&pushes),
        [CLUSTER_TYPE],
        "routes went before the cluster was taken"
    );

    // The proxy took the cluster, but has not asked for its endpoints yet: routes still wait.
    assert!(ack(&mut state, &pushes[0]).is_empty());
    // It subscribes to them: the endpoints go, and the routes right after them.
    let endpoints = sent(state.handle_request(&request(ENDPOINT_TYPE, &["b"], "")));
    assert_eq!(endpoints.resources[0].name, "b");
    let released = state.released();
    assert_eq!(types(&released), [ROUTE_TYPE]);
    assert_eq!(released[0].resources[0].resource.as_ref().unwrap().value, b"2");
}

#[test]
fn a_cluster_is_removed_only_after_the_routes_moved_on() {
    let mut state = running();
    // Bring the proxy to clusters a and b with routes 2.
    let clusters = state.set_snapshot(snapshot(&["a", "b"], "2"));
    ack(&mut state, &clusters[0]);
    sent(state.handle_request(&request(ENDPOINT_TYPE, &["b"], "")));
    let routes = state.released();
    assert_eq!(types(&routes), [ROUTE_TYPE]);
    assert!(ack(&mut state, &routes[0]).is_empty());

    // b goes, and the routes stop naming it: the routes first, the removal once they are taken.
    let pushes = state.set_snapshot(snapshot(&["a"], "3"));
    assert_eq!(
        types(&pushes),
        [ROUTE_TYPE],
        "the cluster was removed before the routes moved on"
    );
    let released = ack(&mut state, &pushes[0]);
    assert_eq!(types(&released), [CLUSTER_TYPE]);
    assert_eq!(released[0].removed_resources, ["b"]);
    assert!(released[0].resources.is_empty());
    // Taken: nothing more to send.
    assert!(ack(&mut state, &released[0]).is_empty());
}

#[test]
fn a_refused_cluster_update_does_not_hold_routes_back_forever() {
    let mut state = running();
    let pushes = state.set_snapshot(snapshot(&["a", "b"], "2"));
    let mut nack = request(CLUSTER_TYPE, &[], &pushes[0].nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "cluster b: bad".to_string(),
        ..Default::default()
    });
    assert!(matches!(state.handle_request(&nack), Outcome::Nacked { .. }));
    assert_eq!(types(&state.released()), [ROUTE_TYPE]);
}

#[test]
fn a_subscription_riding_on_a_stale_acknowledgement_is_still_answered() {
    let mut state = running();
    let pushes = state.set_snapshot(snapshot(&["a", "b"], "2"));
    ack(&mut state, &pushes[0]);
    // An endpoint push crosses Envoy's next request, which acknowledges the one before it and
    // subscribes to the new cluster's endpoints.
    let endpoints = sent(state.handle_request(&request(ENDPOINT_TYPE, &["b"], "a-nonce-not-the-latest")));
    assert_eq!(endpoints.resources[0].name, "b");
    assert_eq!(types(&state.released()), [ROUTE_TYPE]);
}

/// [`snapshot`] with cluster `a` balanced at random: the same cluster, changed.
fn with_random_a() -> Option<Arc<Snapshot>> {
    let mut s = (*snapshot(&["a"], "1").unwrap()).clone();
    let cluster = Cluster {
        name: "a".to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        lb_policy: cluster::LbPolicy::Random as i32,
        ..Default::default()
    };
    let any = Any {
        type_url: CLUSTER_TYPE.to_string(),
        value: cluster.encode_to_vec(),
    };
    s.insert(CLUSTER_TYPE, vec![("a".to_string(), any)]);
    Some(Arc::new(s))
}

#[test]
fn a_changed_cluster_gets_its_unchanged_endpoints_again() {
    let mut state = running();
    // Envoy warms the changed cluster until endpoints arrive for it: without them again it would
    // wait out its initial fetch timeout.
    let pushes = state.set_snapshot(with_random_a());
    assert_eq!(types(&pushes), [CLUSTER_TYPE, ENDPOINT_TYPE]);
    assert_eq!(pushes[1].resources[0].name, "a");
    assert!(ack(&mut state, &pushes[0]).is_empty());
    assert!(ack(&mut state, &pushes[1]).is_empty());
    // Nothing changed since: nothing is sent again.
    assert!(state.set_snapshot(with_random_a()).is_empty());
}
