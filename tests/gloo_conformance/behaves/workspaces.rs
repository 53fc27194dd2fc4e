//! Gloo's workspace examples (which clusters and namespaces a team's workspace holds, what it
//! shares with which other workspace), applied unchanged to the bookinfo mesh and checked
//! through what Trellis shows and enforces: the namespace ─▶ workspace map each cluster's config
//! carries (`/api/v1/translation`), the workspaces a resource's status says see it
//! (`/api/v1/describe`), and which VirtualDestinations a workspace's workloads reach.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use trellis_gloo_conformance::bookinfo::{Bookinfo, Request, poll};

/// How long config takes, at most, to be translated and reach every proxy here.
const SETTLE: Duration = Duration::from_secs(30);

/// Namespace ─▶ owning workspace for the namespaces with workloads in `cluster`, as the
/// management server translated them for that cluster.
async fn namespace_owners(bookinfo: &Bookinfo, cluster: &str) -> BTreeMap<String, String> {
    let response = bookinfo
        .mesh
        .api()
        .expect("admin client config")
        .request("GET", "/api/v1/translation", None)
        .await
        .expect("the API answers");
    assert_eq!(response.status, 200, "{}", response.body);
    let translation: Value = serde_json::from_str(&response.body).expect("translation is JSON");
    serde_json::from_value(translation["clusters"][cluster]["namespaceWorkspaces"].clone()).unwrap_or_default()
}

/// Waits until `cluster`'s namespace map, over `namespaces`, is `expected` (absent: no workspace).
async fn until_owners(bookinfo: &Bookinfo, cluster: &str, expected: &[(&str, Option<&str>)]) {
    poll(
        &format!("{cluster}'s namespaces owned as {expected:?}"),
        SETTLE,
        || async {
            let owners = namespace_owners(bookinfo, cluster).await;
            let matches = expected
                .iter()
                .all(|(namespace, owner)| owners.get(*namespace).map(String::as_str) == *owner);
            if matches { Ok(()) } else { Err(format!("{owners:?}")) }
        },
    )
    .await
}

/// A resource's translated status (`state`, `message`, `workspaces`), once its last write is.
async fn settled_status(bookinfo: &Bookinfo, kind: &str, namespace: &str, name: &str) -> Value {
    poll(&format!("{kind}/{namespace}/{name} translated"), SETTLE, || async {
        let status = bookinfo.status(kind, namespace, name).await["resource"]["status"].clone();
        match status["state"].as_str() {
            Some(state) if state != "PENDING" => Ok(status),
            _ => Err(status.to_string()),
        }
    })
    .await
}

/// A VirtualDestination kept in `namespace`: config that belongs to whichever workspace owns
/// that namespace. Its status names the workspaces that see it.
fn probe(namespace: &str) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata:
  name: probe
  namespace: {namespace}
spec:
  hosts:
  - probe.{namespace}.internal
  ports:
  - number: 9080
    protocol: HTTP
  services:
  - labels:
      app: ratings
"
    )
}

/// The workspaces whose workloads see config kept in `namespace` (its status; none: no
/// workspace owns it).
async fn workspaces_seeing_config_in(bookinfo: &Bookinfo, namespace: &str) -> Vec<String> {
    bookinfo
        .apply(&format!("probe-{namespace}.yaml"), &probe(namespace))
        .await;
    let status = settled_status(bookinfo, "VirtualDestination", namespace, "probe").await;
    bookinfo
        .delete(&format!("probe-{namespace}.yaml"), &probe(namespace))
        .await;
    serde_json::from_value(status["workspaces"].clone()).unwrap_or_default()
}

/// The namespaces with workloads in both clusters for the ownership checks.
const APPS: [(&str, &str, &str, &str); 6] = [
    ("orders-1", "ns1-orders", "orders", "cluster-1"),
    ("orders-2", "ns1-orders", "orders", "cluster-2"),
    ("billing-1", "ns2-billing", "billing", "cluster-1"),
    ("billing-2", "ns2-billing", "billing", "cluster-2"),
    ("web-1", "web", "web", "cluster-1"),
    ("web-2", "web", "web", "cluster-2"),
];

/// The document of `kind` in an example (the examples that register a KubernetesCluster keep
/// it: a registered cluster is deregistered, not deleted).
fn document_of_kind(file: &str, kind: &str) -> String {
    trellis_gloo_conformance::example(file)
        .split("\n---\n")
        .find(|document| document.lines().any(|line| line == format!("kind: {kind}")))
        .unwrap_or_else(|| panic!("{file} has a {kind}"))
        .to_string()
}

/// A label on cluster-2 too, as an operator would add it: the workspace follows the label.
const CLUSTER_2_US_EAST: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: KubernetesCluster
metadata:
  name: cluster-2
  namespace: gloo-mesh
  labels:
    region: us-east
spec:
  clusterDomain: cluster.local
";

/// workspace-all-clusters.yaml: "The web workspace selects every workload cluster and every
/// namespace in them." Every namespace with workloads, in both clusters, is web's; config in any
/// namespace is seen by web.
/// workspace-namespace-globs.yaml: "The backend workspace selects namespaces starting with ns1 in
/// cluster-1 and ns2 in cluster-2". ns1-orders is backend's in cluster-1 and no one's in
/// cluster-2; ns2-billing the other way round; bookinfo is no one's, and its config seen by no
/// workspace.
/// workspace-cluster-label.yaml: "The web workspace selects the web namespace of every workload
/// cluster labelled region: us-east". Only cluster-1 is labelled: its web namespace is web's,
/// cluster-2's is not until cluster-2 carries the label too.
/// kubernetes-cluster-skip-warming.yaml: "Registers cluster-1 with the region: us-east label and
/// excludes it from safe mode (skipWarming)." The label still selects cluster-1; skipWarming is a
/// WARNING naming the field (Trellis has no safe mode).
/// workspace-without-clusters.yaml: "The policy workspace has no workload clusters": it owns no
/// namespace in either cluster, and config kept in its name's namespace is not its.
#[tokio::test(flavor = "multi_thread")]
async fn workspaces_own_the_namespaces_of_the_clusters_they_select() {
    let mut bookinfo = Bookinfo::start_allowing("gloo-ws-owners", &["ns1-orders", "ns2-billing", "web"]).await;
    for (name, namespace, service, cluster) in APPS {
        bookinfo.start_workload(name, namespace, service, "v1", cluster, 9080);
    }

    bookinfo.apply_example("workspace-all-clusters.yaml").await;
    for cluster in ["cluster-1", "cluster-2"] {
        let everything = [
            ("bookinfo", Some("web")),
            ("ns1-orders", Some("web")),
            ("ns2-billing", Some("web")),
            ("web", Some("web")),
        ];
        until_owners(&bookinfo, cluster, &everything).await;
    }
    assert_eq!(workspaces_seeing_config_in(&bookinfo, "anywhere").await, ["web"]);
    bookinfo.delete_example("workspace-all-clusters.yaml").await;

    bookinfo.apply_example("workspace-namespace-globs.yaml").await;
    let cluster_1 = [
        ("ns1-orders", Some("backend")),
        ("ns2-billing", None),
        ("bookinfo", None),
        ("web", None),
    ];
    until_owners(&bookinfo, "cluster-1", &cluster_1).await;
    let cluster_2 = [
        ("ns1-orders", None),
        ("ns2-billing", Some("backend")),
        ("bookinfo", None),
    ];
    until_owners(&bookinfo, "cluster-2", &cluster_2).await;
    assert_eq!(workspaces_seeing_config_in(&bookinfo, "ns1-orders").await, ["backend"]);
    assert!(workspaces_seeing_config_in(&bookinfo, "bookinfo").await.is_empty());
    bookinfo.delete_example("workspace-namespace-globs.yaml").await;

    bookinfo.apply_example("workspace-cluster-label.yaml").await;
    until_owners(&bookinfo, "cluster-1", &[("web", Some("web")), ("bookinfo", None)]).await;
    until_owners(&bookinfo, "cluster-2", &[("web", None)]).await;
    bookinfo.apply_example("kubernetes-cluster-skip-warming.yaml").await;
    let warming = settled_status(&bookinfo, "KubernetesCluster", "gloo-mesh", "cluster-1").await;
    assert_eq!(warming["state"], "WARNING", "{warming}");
    let message = warming["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("skipWarming"),
        "the WARNING names the field: {message}"
    );
    until_owners(&bookinfo, "cluster-1", &[("web", Some("web"))]).await;
    until_owners(&bookinfo, "cluster-2", &[("web", None)]).await;
    bookinfo.apply("cluster-2.yaml", CLUSTER_2_US_EAST).await;
    until_owners(&bookinfo, "cluster-2", &[("web", Some("web"))]).await;
    // The label taken off again (a registered cluster is not deleted through the API, only
    // deregistered): the workspace lets cluster-2's namespace go.
    bookinfo
        .apply(
            "cluster-2.yaml",
            &CLUSTER_2_US_EAST.replace("  labels:\n    region: us-east\n", ""),
        )
        .await;
    until_owners(&bookinfo, "cluster-2", &[("web", None)]).await;
    let workspace = document_of_kind("workspace-cluster-label.yaml", "Workspace");
    bookinfo.delete("web-workspace.yaml", &workspace).await;

    bookinfo.apply_example("workspace-without-clusters.yaml").await;
    let policy = settled_status(&bookinfo, "Workspace", "gloo-mesh", "policy").await;
    assert_eq!(policy["state"], "ACCEPTED", "{policy}");
    for cluster in ["cluster-1", "cluster-2"] {
        let owners = namespace_owners(&bookinfo, cluster).await;
        assert!(
            !owners.values().any(|owner| owner == "policy"),
            "the policy workspace holds no namespace of {cluster}: {owners:?}"
        );
    }
    assert!(workspaces_seeing_config_in(&bookinfo, "policy").await.is_empty());
    bookinfo.finish().await;
}

/// The web workspace of the import examples, as workspace-settings-import-by-name.yaml declares
/// it (its WorkspaceSettings are what the checks apply and delete).
const WEB_WORKSPACE: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata:
  name: web
  namespace: gloo-mesh
  labels:
    team: web
spec:
  workloadClusters:
    - namespaces:
      - name: web*
";

/// The WorkspaceSettings of workspace-settings-import-by-name.yaml alone (to delete it and leave
/// its Workspace).
const WEB_IMPORTS_BACKEND_BY_NAME: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: WorkspaceSettings
metadata:
  name: default
  namespace: web-namespace
spec:
  importFrom:
    - workspaces:
      - name: backend
";

/// A third team, ops (namespaces ops*), that exports nothing.
const OPS_WORKSPACE: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata:
  name: ops
  namespace: gloo-mesh
spec:
  workloadClusters:
    - name: '*'
      namespaces:
      - name: ops*
";

/// A VirtualDestination for `service` (port 9080), kept in `namespace`.
fn virtual_destination(namespace: &str, service: &str) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata:
  name: {service}
  namespace: {namespace}
spec:
  hosts:
  - {service}.internal.com
  ports:
  - number: 9080
    protocol: HTTP
  services:
  - labels:
      app: {service}
"
    )
}

/// The status `web-client` gets for a VirtualDestination's host (0: no answer).
async fn status_from_web(bookinfo: &Bookinfo, service: &str) -> u16 {
    let url = format!("http://{service}.internal.com:9080/");
    bookinfo.call("web-client", Request::get(&url)).await.status
}

async fn until_web_gets(bookinfo: &Bookinfo, service: &str, status: u16) {
    poll(
        &format!("web-client getting {status} from {service}"),
        SETTLE,
        || async {
            match status_from_web(bookinfo, service).await {
                got if got == status => Ok(()),
                got => Err(format!("HTTP {got}")),
            }
        },
    )
    .await
}

/// workspace-settings-export-by-label.yaml: "The backend workspace exports its resources to every
/// workspace labelled team: web." workspace-settings-import-by-name.yaml: "The web workspace
/// imports what the backend workspace exports to it." workspace-settings-import-by-label.yaml:
/// "The web workspace imports from every workspace labelled team: backend that exports to it."
/// A VirtualDestination of backend's (kept in backend-namespace, for backend-api in backend-svc)
/// is not reachable from web's workload while only exported; imported by name, web reaches it
/// and its status names both workspaces; the import removed, it is gone again; imported by
/// label, back. The ops team's VirtualDestination, never exported, stays unreachable from web.
#[tokio::test(flavor = "multi_thread")]
async fn an_exported_and_imported_virtual_destination_is_reachable_from_the_importer_only() {
    let mut bookinfo = Bookinfo::start_allowing("gloo-ws-sharing", &["backend-svc", "web-app", "ops-svc"]).await;
    bookinfo.start_workload("backend-api", "backend-svc", "backend-api", "v1", "cluster-1", 9080);
    bookinfo.start_workload("web-client", "web-app", "web-client", "v1", "cluster-1", 9080);
    bookinfo.start_workload("ops-api", "ops-svc", "ops-api", "v1", "cluster-1", 9080);
    let backend_vd = virtual_destination("backend-namespace", "backend-api");
    let ops_vd = virtual_destination("ops-namespace", "ops-api");
    bookinfo.apply("backend-vd.yaml", &backend_vd).await;
    bookinfo.apply("ops-vd.yaml", &ops_vd).await;
    // Before any workspace, everything is visible to everyone.
    until_web_gets(&bookinfo, "backend-api", 200).await;

    bookinfo.apply_example("workspace-settings-export-by-label.yaml").await;
    bookinfo.apply("web-workspace.yaml", WEB_WORKSPACE).await;
    bookinfo.apply("ops-workspace.yaml", OPS_WORKSPACE).await;
    until_web_gets(&bookinfo, "backend-api", 404).await;
    let exported_only = settled_status(&bookinfo, "VirtualDestination", "backend-namespace", "backend-api").await;
    assert_eq!(
        exported_only["workspaces"],
        serde_json::json!(["backend"]),
        "{exported_only}"
    );

    bookinfo.apply_example("workspace-settings-import-by-name.yaml").await;
    until_web_gets(&bookinfo, "backend-api", 200).await;
    let answer = bookinfo
        .call("web-client", Request::get("http://backend-api.internal.com:9080/"))
        .await;
    assert_eq!(answer.field("service"), "backend-api", "{}", answer.body);
    let shared = settled_status(&bookinfo, "VirtualDestination", "backend-namespace", "backend-api").await;
    assert_eq!(shared["workspaces"], serde_json::json!(["backend", "web"]), "{shared}");
    assert_eq!(
        status_from_web(&bookinfo, "ops-api").await,
        404,
        "ops exports nothing to web"
    );

    bookinfo.delete("web-imports.yaml", WEB_IMPORTS_BACKEND_BY_NAME).await;
    until_web_gets(&bookinfo, "backend-api", 404).await;
    bookinfo.apply_example("workspace-settings-import-by-label.yaml").await;
    until_web_gets(&bookinfo, "backend-api", 200).await;
    assert_eq!(
        status_from_web(&bookinfo, "ops-api").await,
        404,
        "ops exports nothing to web"
    );
    bookinfo.finish().await;
}
