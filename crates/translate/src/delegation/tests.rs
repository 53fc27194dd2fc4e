//! Delegation as Gloo documents it, table by table: what routes a parent ends up serving.

use std::collections::BTreeMap;

use trellis_api::{RequestMatcher, Resource, Spec};
use trellis_model::Snapshot;

use super::*;

/// Resources from YAML; documents are created in the order given (oldest first).
fn snapshot(yaml: &str) -> Snapshot {
    let mut resources = trellis_api::parse_documents("test.yaml", yaml).unwrap();
    for (i, resource) in resources.iter_mut().enumerate() {
        resource.metadata.creation_revision = i as u64 + 1;
    }
    Snapshot::new(resources, BTreeMap::new())
}

fn table<'s>(snapshot: &'s Snapshot, key: &str) -> (&'s Resource, &'s trellis_api::RouteTableSpec) {
    snapshot
        .route_tables()
        .find(|(r, _)| r.key().to_string() == key)
        .unwrap_or_else(|| panic!("no {key}"))
}

/// One line per served route: `path method headers => defining table / route [labels]`.
struct Flat {
    lines: Vec<String>,
    /// Each route's labels, in the order of `lines`.
    labels: Vec<BTreeMap<String, String>>,
    warnings: BTreeMap<String, Vec<String>>,
}

fn flatten(snapshot: &Snapshot, parent: &str) -> Flat {
    let workspaces = Workspaces::from(snapshot);
    let tables = Tables::new(snapshot, &workspaces);
    let (resource, spec) = table(snapshot, parent);
    let mut warnings = Warnings::default();
    let routes = tables.flatten(resource, spec, &mut warnings);
    let lines = routes
        .iter()
        .map(|route| {
            let matchers = if route.matchers.is_empty() {
                "*".to_string()
            } else {
                route.matchers.iter().map(describe).collect::<Vec<_>>().join(" | ")
            };
            let mut line = format!("{matchers} => {}/{}", route.table.metadata.name, route.index);
            if let Some(problem) = &route.replaced {
                line.push_str(&format!(" REPLACED({problem})"));
            }
            line
        })
        .collect();
    let labels = routes.iter().map(|route| route.labels.clone()).collect();
    Flat {
        lines,
        labels,
        warnings: warnings.0,
    }
}

fn describe(m: &RequestMatcher) -> String {
    let mut parts = Vec::new();
    if let Some(uri) = &m.uri {
        if let Some(p) = &uri.prefix {
            parts.push(format!("prefix {p}"));
        }
        if let Some(p) = &uri.exact {
            parts.push(format!("exact {p}"));
        }
        if let Some(p) = &uri.regex {
            parts.push(format!("regex {p}"));
        }
    }
    if !m.method.is_empty() {
        parts.push(m.method.clone());
    }
    for h in &m.headers {
        parts.push(format!("{}={}", h.name, h.value.clone().unwrap_or_default()));
    }
    parts.join(" ")
}

const PARENT_TWO_PRODUCTS: &str = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: source-apps, labels: {env: prod, tier: bronze, table: parent}}
spec:
  hosts: [www.example.com]
  http:
  - name: product-1
    labels: {team: shop, tier: gold}
    matchers: [{uri: {prefix: /product-1}}]
    delegate: {routeTables: [{labels: {table: child-a}}]}
  - name: product-2
    matchers: [{uri: {prefix: /product-2}}]
    delegate: {routeTables: [{labels: {table: child-a}}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child-a, namespace: target-apps, labels: {table: child-a}}
spec:
  http:
  - name: foo
    labels: {tier: silver}
    matchers: [{uri: {prefix: /foo}}]
    forwardTo: {destinations: [{ref: {name: app-1}, port: {number: 80}}]}
  - name: bar
    matchers: [{uri: {exact: /bar}}, {uri: {regex: '/v[0-9]+/.*'}}]
    forwardTo: {destinations: [{ref: {name: app-2}, port: {number: 80}}]}
";

#[test]
fn child_routes_inherit_the_parent_prefix_and_labels() {
    let flat = flatten(&snapshot(PARENT_TWO_PRODUCTS), "RouteTable/source-apps/parent");
    assert_eq!(
        flat.lines,
        [
            "prefix /product-1/foo => child-a/0",
            "exact /product-1/bar | regex /product-1/v[0-9]+/.* => child-a/1",
            "prefix /product-2/foo => child-a/0",
            "exact /product-2/bar | regex /product-2/v[0-9]+/.* => child-a/1",
        ]
    );
    // Weakest first: the parent's table, the parent's route, the child's table, the child's route.
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    assert_eq!(
        flat.labels,
        [
            labels(&[
                ("env", "prod"),
                ("table", "child-a"),
                ("team", "shop"),
                ("tier", "silver")
            ]),
            labels(&[
                ("env", "prod"),
                ("table", "child-a"),
                ("team", "shop"),
                ("tier", "gold")
            ]),
            labels(&[("env", "prod"), ("table", "child-a"), ("tier", "silver")]),
            labels(&[("env", "prod"), ("table", "child-a"), ("tier", "bronze")]),
        ]
    );
    assert!(flat.warnings.is_empty(), "{:?}", flat.warnings);
}

#[test]
fn a_child_path_of_slash_and_a_child_without_matchers_serve_the_parent_prefix() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: ns}
spec:
  hosts: [api.example.com]
  http:
  - matchers: [{uri: {prefix: /ratings}, headers: [{name: x-team, value: a}]}]
    delegate: {routeTables: [{name: child}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child, namespace: ns}
spec:
  http:
  - matchers: [{uri: {prefix: /}, method: GET}]
    directResponse: {status: 200}
  - directResponse: {status: 201}
";
    let flat = flatten(&snapshot(yaml), "RouteTable/ns/parent");
    assert_eq!(
        flat.lines,
        [
            "prefix /ratings GET x-team=a => child/0",
            "prefix /ratings x-team=a => child/1",
        ]
    );
}

#[test]
fn table_weight_orders_child_tables_higher_first_ties_in_selection_order() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: ns}
spec:
  hosts: [api.example.com]
  http:
  - delegate: {routeTables: [{labels: {shard: x}}], sortMethod: TABLE_WEIGHT}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: low, namespace: ns, labels: {shard: x}}
spec:
  weight: 1
  http: [{matchers: [{uri: {exact: /very/specific/path}}], directResponse: {status: 200}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: high-old, namespace: ns, labels: {shard: x}}
spec:
  weight: 5
  http:
  - {matchers: [{uri: {prefix: /}}], directResponse: {status: 200}}
  - {matchers: [{uri: {exact: /a}}], directResponse: {status: 200}}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: high-new, namespace: ns, labels: {shard: x}}
spec:
  weight: 5
  http: [{matchers: [{uri: {prefix: /b}}], directResponse: {status: 200}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: unweighted, namespace: ns, labels: {shard: x}}
spec:
  http: [{matchers: [{uri: {prefix: /c}}], directResponse: {status: 200}}]
";
    let flat = flatten(&snapshot(yaml), "RouteTable/ns/parent");
    assert_eq!(
        flat.lines,
        [
            "prefix / => high-old/0",
            "exact /a => high-old/1",
            "prefix /b => high-new/0",
            "exact /very/specific/path => low/0",
            "prefix /c => unweighted/0",
        ]
    );
}

/// The example of `DelegateAction.SortMethod.ROUTE_SPECIFICITY` in Gloo's route_table.proto.
#[test]
fn route_specificity_sorts_exact_then_regex_then_longest_prefix_ties_by_table_weight() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: ns}
spec:
  hosts: [api.example.com]
  http:
  - delegate: {routeTables: [{name: a}, {name: b}], sortMethod: ROUTE_SPECIFICITY}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: a, namespace: ns}
spec:
  weight: 1
  http:
  - {matchers: [{uri: {prefix: /foo}}], directResponse: {status: 200}}
  - {matchers: [{uri: {prefix: /foo/more/specific}}], directResponse: {status: 200}}
  - {matchers: [{uri: {prefix: /foo/even/more/specific}}], directResponse: {status: 200}}
  - {matchers: [{uri: {exact: /foo/exact}}], directResponse: {status: 200}}
  - {matchers: [{uri: {exact: /foo/another/exact}}], directResponse: {status: 200}}
  - {matchers: [{uri: {regex: /foo/*}}], directResponse: {status: 200}}
  - {matchers: [{uri: {regex: /fooo/*}}], directResponse: {status: 200}}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: b, namespace: ns}
spec:
  weight: 2
  http:
  - {matchers: [{uri: {prefix: /bar}}], directResponse: {status: 200}}
  - {matchers: [{uri: {prefix: /bar/more/specific}}], directResponse: {status: 200}}
  - {matchers: [{uri: {prefix: /bar/even/more/specific}}], directResponse: {status: 200}}
  - {matchers: [{uri: {exact: /bar/exact}}], directResponse: {status: 200}}
  - {matchers: [{uri: {regex: /bar/*}}], directResponse: {status: 200}}
";
    let flat = flatten(&snapshot(yaml), "RouteTable/ns/parent");
    let paths: Vec<&str> = flat.lines.iter().map(|l| l.split(" => ").next().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "exact /foo/another/exact",
            "exact /bar/exact",
            "exact /foo/exact",
            "regex /bar/*",
            "regex /foo/*",
            "regex /fooo/*",
            "prefix /bar/even/more/specific",
            "prefix /foo/even/more/specific",
            "prefix /bar/more/specific",
            "prefix /foo/more/specific",
            "prefix /bar",
            "prefix /foo",
        ]
    );
}

#[test]
fn selectors_pick_children_by_name_namespace_and_labels_and_never_a_table_with_hosts() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: gw}
spec:
  hosts: [api.example.com]
  http:
  - matchers: [{uri: {prefix: /by-name}}]
    delegate: {routeTables: [{name: child, namespace: team-a}]}
  - matchers: [{uri: {prefix: /by-namespace}}]
    delegate: {routeTables: [{namespace: team-b}]}
  - matchers: [{uri: {prefix: /by-labels}}]
    delegate: {routeTables: [{labels: {owner: c}}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child, namespace: team-a, labels: {owner: a}}
spec:
  http: [{directResponse: {status: 200, body: a}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child, namespace: team-b, labels: {owner: c}}
spec:
  http: [{directResponse: {status: 200, body: b}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: other, namespace: team-c, labels: {owner: c}}
spec:
  hosts: [other.example.com]
  http: [{directResponse: {status: 200, body: c}}]
";
    let snapshot = snapshot(yaml);
    let flat = flatten(&snapshot, "RouteTable/gw/parent");
    let served: Vec<String> = {
        let workspaces = Workspaces::from(&snapshot);
        let tables = Tables::new(&snapshot, &workspaces);
        let (r, s) = table(&snapshot, "RouteTable/gw/parent");
        tables
            .flatten(r, s, &mut Warnings::default())
            .iter()
            .map(|route| format!("{}:{}", describe(&route.matchers[0]), route.table.metadata.namespace))
            .collect()
    };
    assert_eq!(
        served,
        [
            "prefix /by-name:team-a",
            "prefix /by-namespace:team-b",
            "prefix /by-labels:team-b"
        ]
    );
    let warnings = flat.warnings["RouteTable/gw/parent"].join("\n");
    assert!(
        warnings.contains(
            "spec.http[2].delegate.routeTables[0]: selects RouteTable RouteTable/team-c/other, which has hosts"
        ),
        "{warnings}"
    );
}

#[test]
fn delegation_nests_and_a_cycle_is_refused_with_a_warning_naming_the_tables() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: root, namespace: ns}
spec:
  hosts: [api.example.com]
  http:
  - matchers: [{uri: {prefix: /api}}]
    delegate: {routeTables: [{name: mid}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: mid, namespace: ns}
spec:
  http:
  - matchers: [{uri: {prefix: /v1}}]
    delegate: {routeTables: [{name: leaf}]}
  - matchers: [{uri: {prefix: /health}}]
    directResponse: {status: 200}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: leaf, namespace: ns}
spec:
  http:
  - matchers: [{uri: {exact: /users}}]
    directResponse: {status: 200}
  - matchers: [{uri: {prefix: /loop}}]
    delegate: {routeTables: [{name: mid}]}
";
    let flat = flatten(&snapshot(yaml), "RouteTable/ns/root");
    assert_eq!(
        flat.lines,
        ["exact /api/v1/users => leaf/0", "prefix /api/health => mid/1"]
    );
    let warnings = flat.warnings["RouteTable/ns/leaf"].join("\n");
    assert!(
        warnings.contains(
            "spec.http[1].delegate: delegating to RouteTable RouteTable/ns/mid again makes a cycle (RouteTable/ns/root -> RouteTable/ns/mid -> RouteTable/ns/leaf -> RouteTable/ns/mid)"
        ),
        "{warnings}"
    );
}

#[test]
fn a_child_that_selects_itself_is_a_cycle_and_a_parent_matching_its_own_selector_is_not_warned() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: root, namespace: ns, labels: {team: x}}
spec:
  hosts: [api.example.com]
  http:
  - delegate: {routeTables: [{labels: {team: x}}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child, namespace: ns, labels: {team: x}}
spec:
  http:
  - matchers: [{uri: {prefix: /a}}]
    directResponse: {status: 200}
  - matchers: [{uri: {prefix: /again}}]
    delegate: {routeTables: [{labels: {team: x}}]}
";
    let flat = flatten(&snapshot(yaml), "RouteTable/ns/root");
    assert_eq!(flat.lines, ["prefix /a => child/0"]);
    assert!(!flat.warnings.contains_key("RouteTable/ns/root"), "{:?}", flat.warnings);
    let child = flat.warnings["RouteTable/ns/child"].join("\n");
    assert!(
        child.contains("makes a cycle (RouteTable/ns/root -> RouteTable/ns/child -> RouteTable/ns/child)"),
        "{child}"
    );
}

#[test]
fn conflicting_matchers_replace_the_delegating_route_with_a_warning_on_both_tables() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: ns}
spec:
  hosts: [api.example.com]
  http:
  - matchers: [{uri: {prefix: /read}, method: GET}]
    delegate: {routeTables: [{name: child}]}
  - matchers: [{uri: {exact: /exact}}]
    delegate: {routeTables: [{name: other}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child, namespace: ns}
spec:
  http:
  - matchers: [{uri: {prefix: /x}}]
    directResponse: {status: 200}
  - matchers: [{uri: {prefix: /y}, method: POST}]
    directResponse: {status: 200}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: other, namespace: ns}
spec:
  http:
  - matchers: [{uri: {prefix: /more}}]
    directResponse: {status: 200}
";
    let flat = flatten(&snapshot(yaml), "RouteTable/ns/parent");
    assert_eq!(flat.lines.len(), 2, "{:?}", flat.lines);
    assert!(flat.lines[0].starts_with("prefix /read GET => parent/0 REPLACED(RouteTable RouteTable/ns/child: spec.http[1].matchers: method POST where the delegating route matches only GET"), "{:?}", flat.lines);
    assert!(
        flat.lines[1].starts_with("exact /exact => parent/1 REPLACED("),
        "{:?}",
        flat.lines
    );
    assert!(flat.warnings["RouteTable/ns/child"][0].contains("spec.http[1].matchers: method POST"));
    assert!(
        flat.warnings["RouteTable/ns/parent"][0].starts_with("spec.http[0].delegate: RouteTable RouteTable/ns/child")
    );
}

#[test]
fn a_child_outside_the_parents_workspace_and_not_exported_to_it_is_not_delegated_to() {
    let yaml = "
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: gateways, namespace: trellis}
spec: {workloadClusters: [{name: '*', namespaces: [{name: gw}]}]}
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: shared, namespace: trellis}
spec: {workloadClusters: [{name: '*', namespaces: [{name: shared}]}]}
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: private, namespace: trellis}
spec: {workloadClusters: [{name: '*', namespaces: [{name: private}]}]}
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: gateways, namespace: gw}
spec: {importFrom: [{workspaces: [{name: shared}, {name: private}]}]}
---
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata: {name: shared, namespace: shared}
spec: {exportTo: [{workspaces: [{name: gateways}]}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: gw}
spec:
  hosts: [api.example.com]
  http:
  - delegate: {routeTables: [{labels: {delegated: 'yes'}}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: exported, namespace: shared, labels: {delegated: 'yes'}}
spec:
  http: [{matchers: [{uri: {prefix: /shared}}], directResponse: {status: 200}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: kept, namespace: private, labels: {delegated: 'yes'}}
spec:
  http: [{matchers: [{uri: {prefix: /private}}], directResponse: {status: 200}}]
";
    let flat = flatten(&snapshot(yaml), "RouteTable/gw/parent");
    assert_eq!(flat.lines, ["prefix /shared => exported/0"]);
    assert!(
        flat.warnings["RouteTable/gw/parent"][0]
            .contains("RouteTable RouteTable/private/kept is not in this table's workspace nor exported to it"),
        "{:?}",
        flat.warnings
    );
}

#[test]
fn allowed_routes_of_cloud_providers_admit_every_route_trellis_serves() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: ns}
spec:
  hosts: [api.example.com]
  http:
  - matchers: [{uri: {prefix: /lambda}}]
    delegate:
      allowedRoutes: [{cloudProvider: {aws: {lambda_functions: ['backend-function-.*'], iam_roles: ['dev-team-B-.*'], regions: [us-east-2]}}}]
      routeTables: [{labels: {table: lambda}}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child, namespace: ns, labels: {table: lambda}}
spec:
  http: [{directResponse: {status: 200}}]
";
    let flat = flatten(&snapshot(yaml), "RouteTable/ns/parent");
    assert_eq!(flat.lines, ["prefix /lambda => child/0"]);
    assert!(flat.warnings.is_empty(), "{:?}", flat.warnings);
}

#[test]
fn a_delegate_that_selects_nothing_serves_nothing_with_a_warning() {
    let yaml = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: ns}
spec:
  hosts: [api.example.com]
  http:
  - delegate: {routeTables: [{labels: {table: missing}}]}
";
    let flat = flatten(&snapshot(yaml), "RouteTable/ns/parent");
    assert!(flat.lines.is_empty());
    assert!(
        flat.warnings["RouteTable/ns/parent"][0]
            .contains("spec.http[0].delegate.routeTables: selects no route table yet")
    );
}

// === through the whole translation ===

const SIDECAR_DELEGATION: &str = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: parent, namespace: demo}
spec:
  hosts: [api.mesh.internal]
  http:
  - name: ratings
    labels: {area: ratings}
    matchers: [{uri: {prefix: /ratings}}]
    delegate: {routeTables: [{name: ratings, namespace: ratings-team}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: ratings, namespace: ratings-team}
spec:
  defaultDestination: {ref: {name: backend, namespace: demo, cluster: cluster-2}, port: {number: 80}}
  http:
  - name: v1
    labels: {slow: 'yes'}
    matchers: [{uri: {prefix: /v1}}]
    forwardTo: {destinations: []}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: unused, namespace: ratings-team}
spec:
  http: [{directResponse: {status: 200}}]
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: RetryTimeoutPolicy
metadata: {name: slow, namespace: ratings-team}
spec:
  applyToRoutes: [{route: {labels: {slow: 'yes', area: ratings}}}]
  config: {requestTimeout: 7s}
";

/// `yaml` in the demo's two clusters (`testdata/discovery-demo.yaml`).
fn demo_snapshot(yaml: &str) -> Snapshot {
    Snapshot::new(snapshot(yaml).resources, crate::demo_fixture::demo_discovery())
}

#[test]
fn delegated_routes_are_served_with_the_childs_default_destination_and_policies_select_them_by_inherited_labels() {
    let snapshot = demo_snapshot(SIDECAR_DELEGATION);
    let t = crate::translate(&snapshot);
    let Some(host) = t
        .clusters
        .values()
        .flat_map(|c| &c.virtual_hosts)
        .find(|h| h.name == "api.mesh.internal")
    else {
        panic!("no virtual host: {:?}", t.warnings);
    };
    assert_eq!(host.routes.len(), 1, "{:?}", host.routes);
    let route = &host.routes[0];
    assert_eq!(route.name, "demo/parent/ratings/ratings-team/ratings/v1");
    assert_eq!(
        route.matcher.path,
        trellis_model::ir::PathMatch::Prefix("/ratings/v1".into())
    );
    match &route.action {
        trellis_model::ir::RouteAction::Forward(forward) => {
            assert_eq!(forward.destinations.len(), 1);
            assert!(forward.destinations[0].upstream.contains("backend"), "{forward:?}");
        }
        other => panic!("not forwarded: {other:?}"),
    }
    assert_eq!(route.policies.timeout_ms, Some(7000), "{:?}", t.warnings);
    assert_eq!(
        t.statuses["RouteTable/demo/parent"].state, "ACCEPTED",
        "{:?}",
        t.warnings
    );
    assert_eq!(
        t.statuses["RouteTable/ratings-team/ratings"].state, "ACCEPTED",
        "{:?}",
        t.warnings
    );
    assert_eq!(t.statuses["RouteTable/ratings-team/unused"].state, "ACCEPTED");
}

#[test]
fn a_delegating_route_no_longer_answers_500() {
    let snapshot = demo_snapshot(SIDECAR_DELEGATION);
    let t = crate::translate(&snapshot);
    let text = serde_json::to_string(&t).unwrap();
    assert!(!text.contains("route replaced"), "{text}");
    let spec = match &table(&snapshot, "RouteTable/demo/parent").0.spec {
        Spec::RouteTable(spec) => spec.clone(),
        _ => unreachable!(),
    };
    assert!(spec.http[0].delegate.is_some());
}

/// `testdata/delegation`: refresh `expected.json` with `UPDATE_GOLDEN=1` and review the diff.
#[test]
fn golden_delegation() {
    let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/delegation");
    let config = std::fs::read_to_string(testdata.join("config.yaml")).unwrap();
    let t = crate::translate(&demo_snapshot(&config));
    let actual = serde_json::to_string_pretty(&t).unwrap() + "\n";
    let path = testdata.join("expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    assert_eq!(
        actual,
        std::fs::read_to_string(&path).unwrap(),
        "differs from {}",
        path.display()
    );

    // The gateway serves the children's routes under the parent's prefixes.
    let gateway = t.clusters["cluster-1"]
        .ingress_gateways
        .iter()
        .find(|g| g.name == "demo/ingress")
        .unwrap();
    let host = &gateway.listeners[0].virtual_hosts[0];
    let paths: Vec<_> = host.routes.iter().map(|r| (&r.matcher.path, r.name.as_str())).collect();
    use trellis_model::ir::PathMatch::Prefix;
    assert_eq!(
        paths,
        [
            (
                &Prefix("/ratings/v1".into()),
                "demo/api/ratings/ratings-team/ratings/v1"
            ),
            (&Prefix("/reviews".into()), "demo/api/reviews/reviews-team/reviews/all"),
        ]
    );
    // By specificity, the exact /v2 of the lighter table comes before the heavier catch-all.
    let mesh = t.clusters["cluster-1"]
        .virtual_hosts
        .iter()
        .find(|h| h.name == "backend.mesh.internal:80")
        .unwrap();
    let names: Vec<&str> = mesh.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "demo/mesh-api/shards/demo/specific/v2-only",
            "demo/mesh-api/shards/demo/general/rest"
        ]
    );
    for table in [
        "demo/api",
        "ratings-team/ratings",
        "reviews-team/reviews",
        "demo/mesh-api",
        "demo/general",
    ] {
        assert_eq!(
            t.statuses[&format!("RouteTable/{table}")].state,
            "ACCEPTED",
            "{:?}",
            t.warnings
        );
    }
}

/// A child has no hosts of its own: its edit changes its parents' hosts, which the route-table
/// fast path (rebuilding the edited table's hosts) would miss.
#[test]
fn an_edit_of_a_delegated_child_is_translated_in_full() {
    let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/delegation");
    let mut snapshot = demo_snapshot(&std::fs::read_to_string(testdata.join("config.yaml")).unwrap());
    let mut incremental = crate::incremental::Incremental::new(&snapshot);
    let key = trellis_api::ResourceKey::new(trellis_api::Kind::RouteTable, "demo", "specific");
    let old = snapshot.take_resource(&key).unwrap();
    let mut new = old.clone();
    let Spec::RouteTable(spec) = &mut new.spec else {
        unreachable!()
    };
    spec.http[0].matchers[0].uri.as_mut().unwrap().exact = Some("/v3".into());
    new.metadata.generation += 1;
    snapshot.put_resource(new);
    let edited = BTreeMap::from([(key, Some(old))]);
    assert!(incremental.route_tables_edited(&snapshot, &edited).is_none());
    let full = crate::translate(&snapshot);
    assert!(serde_json::to_string(&full).unwrap().contains("/v3"));
}

/// Ten layers of two tables that each select both tables of the next layer: 2^10 paths to the
/// last layer. The walk stops at its limit instead of multiplying.
#[test]
fn layered_delegation_stops_at_the_work_limit_with_a_warning() {
    let mut yaml = String::from(
        "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {name: root, namespace: ns}\n\
         spec:\n  hosts: [api.example.com]\n  http: [{delegate: {routeTables: [{labels: {layer: '0'}}]}}]\n",
    );
    let layers = 18;
    for layer in 0..layers {
        for side in ["a", "b"] {
            let http = if layer + 1 == layers {
                "[{directResponse: {status: 200}}]".to_string()
            } else {
                format!(
                    "[{{delegate: {{routeTables: [{{labels: {{layer: '{}'}}}}]}}}}]",
                    layer + 1
                )
            };
            yaml.push_str(&format!(
                "---\napiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\n\
                 metadata: {{name: t{layer}{side}, namespace: ns, labels: {{layer: '{layer}'}}}}\nspec:\n  http: {http}\n"
            ));
        }
    }
    let started = std::time::Instant::now();
    let flat = flatten(&snapshot(&yaml), "RouteTable/ns/root");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(flat.lines.len() < 1 << (layers - 1), "{}", flat.lines.len());
    assert!(
        flat.warnings["RouteTable/ns/root"]
            .iter()
            .any(|w| w.contains("reaches more than 100000 child tables and routes")),
        "{:?}",
        flat.warnings.get("RouteTable/ns/root")
    );
}
