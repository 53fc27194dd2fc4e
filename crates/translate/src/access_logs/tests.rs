//! AccessLogPolicy ─▶ per-cluster access logs: selection, filters, fields, status.

use std::collections::BTreeMap;

use trellis_model::access_log::{AccessLog, Comparison, LogFilter};
use trellis_model::ir::{HeaderMatch, ValueMatch};

use crate::Translation;

fn translated(config: &str) -> Translation {
    crate::demo_fixture::translated_in_demo(config)
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: observability.policy.gloo.solo.io/v2
kind: AccessLogPolicy
metadata: {{name: {name}, namespace: demo}}
spec:
{spec}
---
"
    )
}

fn logs<'t>(t: &'t Translation, cluster: &str) -> &'t [AccessLog] {
    &t.clusters[cluster].access_logs
}

#[test]
fn selects_workloads_by_cluster_namespace_and_labels() {
    let t = translated(&policy(
        "errors",
        "  applyToWorkloads: [{selector: {cluster: cluster-1, namespace: demo, labels: {app: backend}}}]
  config: {}",
    ));
    let c1 = logs(&t, "cluster-1");
    assert_eq!(c1.len(), 1);
    assert_eq!(
        (c1[0].name.as_str(), c1[0].namespace.as_str(), &c1[0].labels),
        (
            "demo/errors",
            "demo",
            &BTreeMap::from([("app".to_string(), "backend".to_string())])
        )
    );
    assert!(c1[0].filters.is_empty(), "no filters: every request is logged");
    // cluster-2 is not selected: its backends log nothing.
    assert!(logs(&t, "cluster-2").is_empty());
    let status = &t.statuses["AccessLogPolicy/demo/errors"];
    assert_eq!(status.state, "ACCEPTED", "{}", status.message);
    assert_eq!(status.message, "applies to 1 workload(s)");
    assert_eq!(&*status.clusters, ["cluster-1".to_string()]);
}

#[test]
fn no_selector_is_every_workload_and_nothing_selected_warns() {
    let t = translated(&format!(
        "{}{}",
        policy("all", "  config: {}"),
        policy(
            "nobody",
            "  applyToWorkloads: [{selector: {labels: {app: nobody}}}]\n  config: {}"
        )
    ));
    // Every workload of both clusters: two in cluster-1, two in cluster-2.
    assert_eq!(
        t.statuses["AccessLogPolicy/demo/all"].message,
        "applies to 4 workload(s)"
    );
    let nobody = &t.statuses["AccessLogPolicy/demo/nobody"];
    assert_eq!(nobody.state, "WARNING");
    assert!(nobody.message.contains("selects nothing yet"), "{}", nobody.message);
    // Both policies are in each cluster's config, the oldest first.
    let names: Vec<&str> = logs(&t, "cluster-2").iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["demo/all", "demo/nobody"]);
}

#[test]
fn filters_and_included_fields_become_the_log() {
    let t = translated(&policy(
        "fields",
        "  applyToWorkloads: [{selector: {labels: {app: frontend}}}]
  config:
    filters:
    - statusCodeMatcher: {value: 400, comparator: GE}
    - statusCodeMatcher: {value: 200}
    - headerMatcher: {name: X-Debug}
    - headerMatcher: {name: x-tenant, value: \"^a.*\", regex: true, invertMatch: true}
    includedRequestHeaders: [X-Tenant]
    includedResponseHeaders: [x-server]
    includedResponseTrailers: [grpc-status]
    includedFilterStateObjects: [envoy.network.upstream_server_name]",
    ));
    let log = &logs(&t, "cluster-1")[0];
    assert_eq!(
        log.filters,
        [
            LogFilter::Status {
                comparison: Comparison::Ge,
                value: 400
            },
            // The comparator defaults to EQ, as in Gloo's proto.
            LogFilter::Status {
                comparison: Comparison::Eq,
                value: 200
            },
            LogFilter::Header(HeaderMatch {
                name: "x-debug".into(),
                value: ValueMatch::Present,
                invert: false
            }),
            LogFilter::Header(HeaderMatch {
                name: "x-tenant".into(),
                value: ValueMatch::Regex("^a.*".into()),
                invert: true
            }),
        ]
    );
    assert_eq!(log.request_headers, ["x-tenant"]);
    assert_eq!(log.response_headers, ["x-server"]);
    assert_eq!(log.response_trailers, ["grpc-status"]);
    assert_eq!(log.filter_state_objects, ["envoy.network.upstream_server_name"]);
}

#[test]
fn a_filter_without_a_matcher_logs_every_request() {
    let t = translated(&policy(
        "any",
        "  config:\n    filters: [{statusCodeMatcher: {value: 500}}, {}]",
    ));
    assert!(logs(&t, "cluster-1")[0].filters.is_empty());
}

#[test]
fn no_longer_warns_that_access_logs_are_not_applied() {
    let t = translated(&policy("errors", "  config: {}"));
    assert!(
        !t.warnings
            .get("AccessLogPolicy/demo/errors")
            .is_some_and(|w| w.iter().any(|m| m.contains("not applied"))),
        "{:?}",
        t.warnings
    );
}

#[test]
fn a_workspace_scopes_the_selection() {
    let workspace = "apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: apps, namespace: gloo-mesh}
spec:
  workloadClusters: [{name: cluster-1, namespaces: [{name: demo}]}]
---
";
    let t = translated(&format!("{workspace}{}", policy("scoped", "  config: {}")));
    // Only cluster-1's demo namespace is in the workspace: cluster-2's backends are not selected.
    assert_eq!(logs(&t, "cluster-1").len(), 1);
    assert!(logs(&t, "cluster-2").is_empty());
    assert_eq!(
        t.statuses["AccessLogPolicy/demo/scoped"].message,
        "applies to 2 workload(s)"
    );
}
