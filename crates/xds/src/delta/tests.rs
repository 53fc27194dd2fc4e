//! The delta state machine, request by request.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::*;
use crate::snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE};

fn snapshot(clusters: &[(&str, &str)], endpoints: &[(&str, &str)]) -> Option<Arc<Snapshot>> {
    let any = |type_url: &str, value: &str| Any {
        type_url: type_url.to_string(),
        value: value.as_bytes().to_vec(),
    };
    let mut s = Snapshot::default();
    s.insert(
        CLUSTER_TYPE,
        clusters
            .iter()
            .map(|(n, v)| (n.to_string(), any(CLUSTER_TYPE, v)))
            .collect(),
    );
    s.insert(
        ENDPOINT_TYPE,
        endpoints
            .iter()
            .map(|(n, v)| (n.to_string(), any(ENDPOINT_TYPE, v)))
            .collect(),
    );
    Some(Arc::new(s))
}

/// A request of node-1 for `type_url`, subscribing to `subscribe`, answering `nonce`.
pub(super) fn request(type_url: &str, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: "node-1".to_string(),
            ..Default::default()
        }),
        type_url: type_url.to_string(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

pub(super) fn sent(outcome: Outcome<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    match outcome {
        Outcome::Send(response) => response,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn a_wildcard_type_gets_everything_then_only_what_changed() {
    let mut state = DeltaState::new("node-1");
    state.set_snapshot(snapshot(&[("a", "1"), ("b", "1"), ("c", "1")], &[]));
    let first = sent(state.handle_request(&request(CLUSTER_TYPE, &[], "")));
    assert_eq!(names(&first), ["a", "b", "c"]);
    assert!(matches!(
        state.handle_request(&request(CLUSTER_TYPE, &[], &first.nonce)),
        Outcome::Acked { .. }
    ));
    assert_eq!(
        state.type_statuses()[CLUSTER_TYPE].last_acked_version.as_deref(),
        Some(first.system_version_info.as_str())
    );

    // One cluster changes, one goes: one resource and one removal, not the whole list.
    let pushes = state.set_snapshot(snapshot(&[("a", "1"), ("b", "2")], &[]));
    assert_eq!(pushes.len(), 1);
    assert_eq!(names(&pushes[0]), ["b"]);
    assert_eq!(pushes[0].removed_resources, ["c"]);
    // Nothing changed: nothing sent.
    assert!(state.set_snapshot(snapshot(&[("a", "1"), ("b", "2")], &[])).is_empty());
}

#[test]
fn a_named_type_gets_only_its_subscriptions() {
    let mut state = DeltaState::new("node-1");
    state.set_snapshot(snapshot(&[], &[("a", "1"), ("b", "1")]));
    let first = sent(state.handle_request(&request(ENDPOINT_TYPE, &["a"], "")));
    assert_eq!(names(&first), ["a"]);
    state.handle_request(&request(ENDPOINT_TYPE, &[], &first.nonce));
    // A change to what it did not subscribe to is not its business.
    assert!(state.set_snapshot(snapshot(&[], &[("a", "1"), ("b", "2")])).is_empty());
    // Subscribing more sends just that.
    let more = sent(state.handle_request(&request(ENDPOINT_TYPE, &["b"], &first.nonce)));
    assert_eq!(names(&more), ["b"]);
    state.handle_request(&request(ENDPOINT_TYPE, &[], &more.nonce));
    // Unsubscribed: its changes are no longer sent.
    let mut leave = request(ENDPOINT_TYPE, &[], &more.nonce);
    leave.resource_names_unsubscribe = vec!["a".to_string()];
    state.handle_request(&leave);
    assert!(state.set_snapshot(snapshot(&[], &[("a", "9"), ("b", "2")])).is_empty());
}

#[test]
fn a_reconnecting_proxy_is_sent_only_what_it_lacks() {
    let mut state = DeltaState::new("node-1");
    let current = snapshot(&[("a", "1"), ("b", "2")], &[]);
    let held_a = current.as_ref().unwrap().of_type(CLUSTER_TYPE)[0].version();
    state.set_snapshot(current);
    let mut hello = request(CLUSTER_TYPE, &[], "");
    hello.initial_resource_versions = BTreeMap::from([
        ("a".to_string(), held_a),
        ("b".to_string(), "stale".to_string()),
        ("gone".to_string(), "1".to_string()),
    ])
    .into_iter()
    .collect();
    let first = sent(state.handle_request(&hello));
    assert_eq!(names(&first), ["b"]);
    assert_eq!(first.removed_resources, ["gone"]);
}

#[test]
fn a_nack_is_recorded_and_not_answered_with_the_same_content() {
    let mut state = DeltaState::new("node-1");
    state.set_snapshot(snapshot(&[("a", "1")], &[]));
    let first = sent(state.handle_request(&request(CLUSTER_TYPE, &[], "")));
    state.handle_request(&request(CLUSTER_TYPE, &[], &first.nonce));
    let push = state.set_snapshot(snapshot(&[("a", "bad")], &[])).remove(0);
    let mut nack = request(CLUSTER_TYPE, &[], &push.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "cluster a: bad".to_string(),
        ..Default::default()
    });
    let outcome = state.handle_request(&nack);
    assert!(
        matches!(outcome, Outcome::Nacked { ref message, .. } if message == "cluster a: bad"),
        "{outcome:?}"
    );
    let status = &state.type_statuses()[CLUSTER_TYPE];
    assert_eq!(status.last_nack.as_deref(), Some("cluster a: bad"));
    assert_eq!(
        status.last_acked_version.as_deref(),
        Some(first.system_version_info.as_str())
    );
    // A stale nonce changes nothing; a fix is sent.
    assert!(matches!(
        state.handle_request(&request(CLUSTER_TYPE, &[], &first.nonce)),
        Outcome::StaleNonce { .. }
    ));
    let fixed = state.set_snapshot(snapshot(&[("a", "good")], &[]));
    assert_eq!(names(&fixed[0]), ["a"]);
}

#[test]
fn nothing_is_sent_before_the_snapshot_is_ready() {
    let mut state = DeltaState::new("node-1");
    assert!(matches!(
        state.handle_request(&request(CLUSTER_TYPE, &[], "")),
        Outcome::Held { .. }
    ));
    let pushes = state.set_snapshot(snapshot(&[("a", "1")], &[]));
    assert_eq!(names(&pushes[0]), ["a"]);
}

fn mk_resources(items: &[(&str, &str)]) -> Vec<Arc<Resource>> {
    let mut s = Snapshot::default();
    s.insert(
        CLUSTER_TYPE,
        items
            .iter()
            .map(|(n, v)| {
                let any = Any {
                    type_url: CLUSTER_TYPE.to_string(),
                    value: v.as_bytes().to_vec(),
                };
                (n.to_string(), any)
            })
            .collect(),
    );
    s.of_type(CLUSTER_TYPE).to_vec()
}

#[test]
fn diff_sends_new_and_changed_and_removes_what_is_gone() {
    let held = mk_resources(&[("a", "1"), ("b", "1"), ("d", "1"), ("f", "1")]);
    let now = mk_resources(&[("b", "1"), ("c", "1"), ("d", "2"), ("e", "1")]);
    let wanted: Vec<_> = now.iter().collect();
    let changes = diff(&wanted, &held, &BTreeMap::new());
    let sent: Vec<_> = changes.sent.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sent, ["c", "d", "e"]);
    assert_eq!(changes.removed, ["a", "f"]);
}

#[test]
fn diff_trusts_announced_versions_and_removes_announced_names_not_wanted() {
    let now = mk_resources(&[("a", "1"), ("b", "1")]);
    let wanted: Vec<_> = now.iter().collect();
    let announced = BTreeMap::from([
        ("a".to_string(), now[0].version()),
        ("b".to_string(), "stale".to_string()),
        ("z".to_string(), "any".to_string()),
    ]);
    let changes = diff(&wanted, &[], &announced);
    let sent: Vec<_> = changes.sent.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sent, ["b"]);
    assert_eq!(changes.removed, ["z"]);
}

#[test]
fn an_unsubscribed_name_is_sent_again_when_subscribed_again() {
    let mut state = DeltaState::new("node-1");
    state.set_snapshot(snapshot(&[], &[("e1", "1"), ("e2", "1")]));
    let first = sent(state.handle_request(&request(ENDPOINT_TYPE, &["e1", "e2"], "")));
    assert_eq!(names(&first), ["e1", "e2"]);
    state.handle_request(&request(ENDPOINT_TYPE, &[], &first.nonce));
    let mut unsubscribe = request(ENDPOINT_TYPE, &[], "");
    unsubscribe.resource_names_unsubscribe = vec!["e1".to_string()];
    state.handle_request(&unsubscribe);
    let again = sent(state.handle_request(&request(ENDPOINT_TYPE, &["e1"], "")));
    assert_eq!(names(&again), ["e1"]);
}
