//! Table-driven tests of the stream state machine: each case is a script of
//! inputs, each input paired with what the proxy should observe.

use std::collections::BTreeMap;

use super::*;
use crate::snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;

/// One input to the state machine.
enum In {
    /// type_url, resource names, version_info, response_nonce
    Req(&'static str, &'static [&'static str], Ver, &'static str),
    /// Like `Req` but with error_detail set.
    Nack(&'static str, Ver, &'static str, &'static str),
    Snap(Option<Snapshot>),
}

/// A version as the test knows it: by snapshot content label.
#[derive(Clone, Copy)]
enum Ver {
    None,
    /// version_info equal to the last version we sent for the type
    LastSent,
}

/// What the proxy observes, summarised.
#[derive(Debug, PartialEq)]
enum Out {
    /// A response: type_url and resource names, in order.
    Send(&'static str, Vec<&'static str>),
    Ack,
    Nack,
    Stale,
    Held,
    Invalid,
    /// Pushes after a snapshot change: type URLs in order.
    Pushes(Vec<&'static str>),
}

fn mk_any(type_url: &str, content: &str) -> Any {
    Any {
        type_url: type_url.into(),
        value: content.as_bytes().to_vec(),
    }
}

/// Snapshot from (type_url, name, content) triples.
fn mk_snapshot(items: &[(&str, &str, &str)]) -> Snapshot {
    let mut by_type: BTreeMap<&str, Vec<(String, Any)>> = BTreeMap::new();
    for (t, name, content) in items {
        by_type
            .entry(t)
            .or_default()
            .push((name.to_string(), mk_any(t, content)));
    }
    let mut s = Snapshot::default();
    for (t, list) in by_type {
        s.insert(t, list);
    }
    s
}

fn base() -> Snapshot {
    mk_snapshot(&[
        (CLUSTER_TYPE, "c1", "c1"),
        (CLUSTER_TYPE, "c2", "c2"),
        (ENDPOINT_TYPE, "c1", "e1"),
        (ENDPOINT_TYPE, "c2", "e2"),
        (LISTENER_TYPE, "l1", "l1"),
        (ROUTE_TYPE, "r1", "r1"),
        (SECRET_TYPE, "s1", "s1"),
    ])
}

/// `base` with the resources of the given types changed.
fn changed(types: &[&str]) -> Snapshot {
    let mut s = base();
    for t in types {
        let list = s.resources.get_mut(*t).unwrap();
        *list = list
            .iter()
            .map(|resource| {
                let mut any = resource.any.clone();
                any.value.extend_from_slice(b"-v2");
                Resource::new(resource.name.clone(), any)
            })
            .collect();
    }
    s
}

fn name_of(any: &Any, snapshot: &Snapshot, type_url: &str) -> &'static str {
    let name = snapshot
        .of_type(type_url)
        .iter()
        .find(|r| r.any == *any)
        .map(|r| r.name.clone());
    Box::leak(name.expect("response resource not in snapshot").into_boxed_str())
}

fn run(script: Vec<(In, Out)>) {
    let mut st = StreamState::new("node-1");
    let mut current: Option<Snapshot> = None;
    for (step, (input, want)) in script.into_iter().enumerate() {
        let got = match input {
            In::Snap(s) => {
                current = s.clone();
                let pushes = st.set_snapshot(s.map(Arc::new));
                Out::Pushes(pushes.iter().map(|r| leak(&r.type_url)).collect())
            }
            In::Req(t, names, ver, nonce) => {
                let req = DiscoveryRequest {
                    type_url: t.into(),
                    resource_names: names.iter().map(|n| n.to_string()).collect(),
                    version_info: version(&st, t, ver),
                    response_nonce: nonce.into(),
                    ..Default::default()
                };
                summarise(st.handle_request(&req), current.as_ref())
            }
            In::Nack(t, ver, nonce, msg) => {
                let req = DiscoveryRequest {
                    type_url: t.into(),
                    version_info: version(&st, t, ver),
                    response_nonce: nonce.into(),
                    error_detail: Some(RpcStatus {
                        code: 3,
                        message: msg.into(),
                        details: vec![],
                    }),
                    ..Default::default()
                };
                summarise(st.handle_request(&req), current.as_ref())
            }
        };
        assert_eq!(got, want, "step {step}");
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn version(st: &StreamState, t: &str, ver: Ver) -> String {
    match ver {
        Ver::None => String::new(),
        Ver::LastSent => st.type_statuses()[t].last_sent_version.clone().unwrap(),
    }
}

fn summarise(o: Outcome, snapshot: Option<&Snapshot>) -> Out {
    match o {
        Outcome::Send(r) => {
            let s = snapshot.expect("sent without a snapshot");
            let t = leak(&r.type_url);
            Out::Send(t, r.resources.iter().map(|a| name_of(a, s, t)).collect())
        }
        Outcome::Acked { .. } => Out::Ack,
        Outcome::Nacked { .. } => Out::Nack,
        Outcome::StaleNonce { .. } => Out::Stale,
        Outcome::Held { .. } => Out::Held,
        Outcome::Invalid(_) => Out::Invalid,
    }
}

use In::*;
use Ver::{LastSent, None as NoVer};

#[test]
fn first_request_gets_all_resources_of_a_wildcard_type() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(CLUSTER_TYPE, &[], NoVer, ""),
            Out::Send(CLUSTER_TYPE, vec!["c1", "c2"]),
        ),
        // Names on a wildcard type do not filter it.
        (
            Req(LISTENER_TYPE, &["nope"], NoVer, ""),
            Out::Send(LISTENER_TYPE, vec!["l1"]),
        ),
    ]);
}

#[test]
fn named_types_get_only_requested_names_that_exist() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(ENDPOINT_TYPE, &["c2", "missing"], NoVer, ""),
            Out::Send(ENDPOINT_TYPE, vec!["c2"]),
        ),
        (Req(ROUTE_TYPE, &[], NoVer, ""), Out::Send(ROUTE_TYPE, vec!["r1"])),
    ]);
}

#[test]
fn ack_of_current_version_sends_nothing() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(CLUSTER_TYPE, &[], NoVer, ""),
            Out::Send(CLUSTER_TYPE, vec!["c1", "c2"]),
        ),
        (Req(CLUSTER_TYPE, &[], LastSent, "1"), Out::Ack),
    ]);
}

#[test]
fn nack_sends_nothing_until_the_snapshot_changes() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(CLUSTER_TYPE, &[], NoVer, ""),
            Out::Send(CLUSTER_TYPE, vec!["c1", "c2"]),
        ),
        (Nack(CLUSTER_TYPE, NoVer, "1", "bad cluster"), Out::Nack),
        // The same (rejected) content again: no push.
        (Snap(Some(base())), Out::Pushes(vec![])),
        (Snap(Some(changed(&[CLUSTER_TYPE]))), Out::Pushes(vec![CLUSTER_TYPE])),
    ]);
}

#[test]
fn stale_nonce_is_ignored() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(CLUSTER_TYPE, &[], NoVer, ""),
            Out::Send(CLUSTER_TYPE, vec!["c1", "c2"]),
        ),
        (Snap(Some(changed(&[CLUSTER_TYPE]))), Out::Pushes(vec![CLUSTER_TYPE])),
        // An ACK (or NACK) of response 1 arrives after we sent response 2.
        (Req(CLUSTER_TYPE, &[], NoVer, "1"), Out::Stale),
        (Nack(CLUSTER_TYPE, NoVer, "1", "late"), Out::Stale),
        (Req(CLUSTER_TYPE, &[], LastSent, "2"), Out::Ack),
    ]);
}

#[test]
fn changed_names_are_answered() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(ENDPOINT_TYPE, &["c1"], NoVer, ""),
            Out::Send(ENDPOINT_TYPE, vec!["c1"]),
        ),
        (
            Req(ENDPOINT_TYPE, &["c1", "c2"], LastSent, "1"),
            Out::Send(ENDPOINT_TYPE, vec!["c1", "c2"]),
        ),
        // Same names in another order is not a change.
        (Req(ENDPOINT_TYPE, &["c2", "c1"], LastSent, "2"), Out::Ack),
    ]);
}

#[test]
fn name_change_after_nack_is_answered() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(ENDPOINT_TYPE, &["c1"], NoVer, ""),
            Out::Send(ENDPOINT_TYPE, vec!["c1"]),
        ),
        (Nack(ENDPOINT_TYPE, NoVer, "1", "bad endpoints"), Out::Nack),
        // Envoy reuses the rejected nonce, without error_detail, for later name changes.
        (
            Req(ENDPOINT_TYPE, &["c1", "c2"], NoVer, "1"),
            Out::Send(ENDPOINT_TYPE, vec!["c1", "c2"]),
        ),
    ]);
}

#[test]
fn snapshot_change_pushes_only_changed_types_in_cds_eds_lds_rds_order() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        // Subscribe in "wrong" order to prove ordering is ours, not the request order.
        (Req(SECRET_TYPE, &["s1"], NoVer, ""), Out::Send(SECRET_TYPE, vec!["s1"])),
        (Req(ROUTE_TYPE, &["r1"], NoVer, ""), Out::Send(ROUTE_TYPE, vec!["r1"])),
        (Req(LISTENER_TYPE, &[], NoVer, ""), Out::Send(LISTENER_TYPE, vec!["l1"])),
        (
            Req(ENDPOINT_TYPE, &["c1", "c2"], NoVer, ""),
            Out::Send(ENDPOINT_TYPE, vec!["c1", "c2"]),
        ),
        (
            Req(CLUSTER_TYPE, &[], NoVer, ""),
            Out::Send(CLUSTER_TYPE, vec!["c1", "c2"]),
        ),
        (
            Snap(Some(changed(&[ROUTE_TYPE, LISTENER_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE]))),
            Out::Pushes(vec![CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]),
        ),
        (
            Snap(Some(changed(&[ROUTE_TYPE, LISTENER_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE]))),
            Out::Pushes(vec![]),
        ),
        // Clusters, listeners and routes go back to `base`; endpoints stay as they are.
        (
            Snap(Some(changed(&[ENDPOINT_TYPE]))),
            Out::Pushes(vec![CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE]),
        ),
    ]);
}

#[test]
fn change_to_unrequested_named_resource_is_not_pushed() {
    let mut other = base();
    let list = other.resources.get_mut(ENDPOINT_TYPE).unwrap();
    let mut changed = list.to_vec();
    changed[1] = Resource::new(changed[1].name.clone(), mk_any(ENDPOINT_TYPE, "e2-v2"));
    *list = changed.into();
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(ENDPOINT_TYPE, &["c1"], NoVer, ""),
            Out::Send(ENDPOINT_TYPE, vec!["c1"]),
        ),
        (Snap(Some(other)), Out::Pushes(vec![])),
    ]);
}

#[test]
fn not_ready_snapshot_holds_requests_until_ready() {
    run(vec![
        (Req(LISTENER_TYPE, &[], NoVer, ""), Out::Held),
        (Req(CLUSTER_TYPE, &[], NoVer, ""), Out::Held),
        (Snap(None), Out::Pushes(vec![])),
        (Snap(Some(base())), Out::Pushes(vec![CLUSTER_TYPE, LISTENER_TYPE])),
    ]);
}

#[test]
fn snapshot_becoming_unready_pushes_nothing() {
    run(vec![
        (Snap(Some(base())), Out::Pushes(vec![])),
        (
            Req(CLUSTER_TYPE, &[], NoVer, ""),
            Out::Send(CLUSTER_TYPE, vec!["c1", "c2"]),
        ),
        (Snap(None), Out::Pushes(vec![])),
        (Snap(Some(base())), Out::Pushes(vec![])),
    ]);
}

#[test]
fn request_without_type_url_is_invalid() {
    run(vec![(Req("", &[], NoVer, ""), Out::Invalid)]);
}

#[test]
fn status_records_sent_acked_and_nack_message() {
    let mut st = StreamState::new("n");
    st.set_snapshot(Some(Arc::new(base())));
    let Outcome::Send(r) = st.handle_request(&DiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    }) else {
        panic!("expected a response");
    };
    let nack = DiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        response_nonce: r.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "no such filter".into(),
            details: vec![],
        }),
        ..Default::default()
    };
    assert!(matches!(st.handle_request(&nack), Outcome::Nacked { ref message, .. } if message == "no such filter"));
    let s = &st.type_statuses()[CLUSTER_TYPE];
    assert_eq!(s.last_sent_version.as_deref(), Some(r.version_info.as_str()));
    assert_eq!(s.last_acked_version, None);
    assert_eq!(s.last_nack.as_deref(), Some("no such filter"));

    // The next push supersedes the NACK; its ACK records the version.
    let pushes = st.set_snapshot(Some(Arc::new(changed(&[CLUSTER_TYPE]))));
    assert_eq!(pushes.len(), 1);
    assert_eq!(st.type_statuses()[CLUSTER_TYPE].last_nack, None);
    let ack = DiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        response_nonce: pushes[0].nonce.clone(),
        version_info: pushes[0].version_info.clone(),
        ..Default::default()
    };
    assert!(matches!(st.handle_request(&ack), Outcome::Acked { .. }));
    assert_eq!(
        st.type_statuses()[CLUSTER_TYPE].last_acked_version.as_deref(),
        Some(pushes[0].version_info.as_str())
    );
}

#[test]
fn nonces_are_unique_per_stream() {
    let mut st = StreamState::new("n");
    st.set_snapshot(Some(Arc::new(base())));
    let mut nonces = BTreeSet::new();
    for t in [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE] {
        let Outcome::Send(r) = st.handle_request(&DiscoveryRequest {
            type_url: t.into(),
            ..Default::default()
        }) else {
            panic!("expected a response");
        };
        assert!(nonces.insert(r.nonce));
    }
    for r in st.set_snapshot(Some(Arc::new(changed(&[CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE])))) {
        assert!(nonces.insert(r.nonce));
    }
    assert_eq!(nonces.len(), 6);
}
