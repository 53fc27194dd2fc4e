//! Trellis on Kubernetes end to end: a management cluster and two workload clusters, each a real
//! kube-apiserver. Gloo YAML goes to the management cluster with `kubectl apply` and gets its
//! status there. Agents in Kubernetes mode: each workload cluster's API server's
//! Services, EndpointSlices and Pods (API objects; the apps and their Envoys run as local
//! processes at the endpoints' addresses, this host's own, there being no kubelet) are the cluster's workloads.
//! Each sidecar proves its pod's service account with a token the API server issued for the
//! agent's audience (TokenRequest; the agent checks it with TokenReview). The demo's traffic
//! crosses clusters; a sidecar claiming an account its token is not for is refused, and gets no
//! traffic; scaling a Service (its EndpointSlice emptied, then refilled) reaches Envoy.
//! Cluster-1's pods run on a Node with topology labels: they are the cluster's locality.
//! Sidecars register on the agent's TLS registration port, checked with the agent's CA, which
//! the agent publishes as ConfigMap `trellis-agent-ca` in every namespace. As pods reach their
//! agent's Service, sidecars name their agent's host (`localhost`), and the agent listens on
//! every address (its xDS server too, which Envoy then resolves by that name).

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use trellis_cli::up::{AppSpec, LocalMesh, MeshOptions};
use trellis_testkit::etcd::Etcd;
use trellis_testkit::kube::{KubeApiServer, host_address, kubectl};

async fn create(kube: &KubeApiServer, object: Value) {
    let response = kube.create(&object, false).await;
    assert_eq!(response.status, 201, "{}: {}", object["kind"], response.body);
}

/// The Node cluster-1's pods run on, in zone us-east-1a of region us-east.
const CLUSTER_1_NODE: &str = "node-us-east-1a";

/// The Pod, Service and EndpointSlice behind one of the mesh's demo apps, in its cluster; the
/// pod runs on `node` when one is given.
async fn publish_app(
    kube: &KubeApiServer,
    mesh: &LocalMesh,
    app: &str,
    service: &str,
    version: &str,
    node: Option<&str>,
) {
    let inbound = mesh.app(app).inbound_port;
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": app, "namespace": "demo",
           "labels": {"app": service, "version": version}},
           "spec": {"serviceAccountName": service, "containers": [{"name": "app", "image": "trellis"}]}});
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    create(kube, pod).await;
    create(kube, endpoint_slice(app, service, inbound)).await;
}

fn endpoint_slice(app: &str, service: &str, inbound: u16) -> Value {
    let address = host_address();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{app}-slice"), "namespace": "demo",
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": inbound, "protocol": "TCP"}],
           "endpoints": [{"addresses": [address], "conditions": {"ready": true},
                          "targetRef": {"kind": "Pod", "name": app, "namespace": "demo"}}]})
}

/// A token of `service_account` in namespace demo for the agent's audience, as the projected
/// volume the injector mounts would hold.
async fn token_for(kube: &KubeApiServer, service_account: &str) -> String {
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"audiences": ["trellis-agent"], "expirationSeconds": 3600}});
    let path = format!("/api/v1/namespaces/demo/serviceaccounts/{service_account}/token");
    let answer = kube
        .client()
        .request(
            "POST",
            &path,
            Some(("application/json", serde_json::to_vec(&request).unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    body["status"]["token"].as_str().unwrap().to_string()
}

async fn start_cluster_api(
    etcd: &Etcd,
    dir: &std::path::Path,
    services: &[&str],
) -> (KubeApiServer, std::path::PathBuf) {
    let kube = KubeApiServer::start(dir, etcd).await;
    create(
        &kube,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}),
    )
    .await;
    for service in services {
        create(
            &kube,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service, "namespace": "demo"}}),
        )
        .await;
        // Selector-less: its EndpointSlices are the test's, as no controller manager runs.
        create(
            &kube,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": "demo"},
                   "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        )
        .await;
    }
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    (kube, kubeconfig)
}

/// A JSON merge patch of `path`, as `kubectl patch --type merge` sends it.
async fn merge_patch(kube: &KubeApiServer, path: &str, patch: Value) {
    let answer = kube
        .client()
        .request(
            "PATCH",
            path,
            Some(("application/merge-patch+json", serde_json::to_vec(&patch).unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// A name for every backend endpoint of both clusters, without the demo's per-cluster weights.
const ANY_BACKEND: &str = "apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: backend-any, namespace: demo}
spec:
  hosts: [backend-any.mesh.internal]
  services: [{labels: {app: backend}}]
  ports: [{number: 80, protocol: HTTP, targetPort: {name: http}}]
";

/// Answers of 20 requests to backend-any by version; any other answer (the ghost's v9, an
/// error) fails the test.
async fn any_backend_versions(mesh: &LocalMesh) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..20 {
        let answer = mesh
            .call_from_frontend("http://backend-any.mesh.internal/")
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        if answer.body.contains("\"version\":\"v1\"") {
            v1 += 1;
        } else if answer.body.contains("\"version\":\"v2\"") {
            v2 += 1;
        } else {
            panic!("an answer from neither v1 nor v2: {}", answer.body);
        }
    }
    (v1, v2)
}

/// Sends requests until a batch of 20 satisfies `holds` on its (v1, v2) counts; fails after 30 s.
async fn until_split(mesh: &LocalMesh, what: &str, holds: impl Fn(usize, usize) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (v1, v2) = any_backend_versions(mesh).await;
        if holds(v1, v2) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last split {v1}/{v2}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn until_workloads(mesh: &LocalMesh, cluster_1: u64, cluster_2: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let clusters = mesh.api().unwrap().get_json("/api/v1/clusters").await.unwrap();
        let count = |name: &str| clusters["clusters"][name]["workloads"].as_u64();
        if count("cluster-1") == Some(cluster_1) && count("cluster-2") == Some(cluster_2) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workloads: want {cluster_1} and {cluster_2}, have {clusters}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_come_from_each_clusters_kubernetes_api_and_follow_its_endpoint_slices() {
    let peers = test_dir("kubernetes-discovery-peers");
    let _ = std::fs::remove_dir_all(&peers);
    let etcd = Etcd::start(&peers.join("etcd")).await;
    let (kube1, kubeconfig1) = start_cluster_api(&etcd, &peers.join("kube-cluster-1"), &["frontend", "backend"]).await;
    let (kube2, kubeconfig2) = start_cluster_api(&etcd, &peers.join("kube-cluster-2"), &["backend"]).await;
    // Cluster-1's pods run on a labelled node, and an idle node elsewhere does not count;
    // cluster-2 has no node with topology labels.
    for (name, region, zone) in [
        (CLUSTER_1_NODE, "us-east", "us-east-1a"),
        ("node-idle", "eu-west", "eu-west-1b"),
    ] {
        create(
            &kube1,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
                "topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}}}),
        )
        .await;
    }
    // The management cluster holds the Gloo resources as custom resources.
    let (management, management_kubeconfig) = start_cluster_api(&etcd, &peers.join("kube-management"), &[]).await;
    management.install_crds().await;

    let tokens = peers.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    for (kube, app, account) in [
        (&kube1, "frontend", "frontend"),
        (&kube1, "backend-v1", "backend"),
        (&kube2, "backend-v2", "backend"),
        // The ghost claims the backend's account with the frontend's token.
        (&kube1, "ghost", "frontend"),
    ] {
        std::fs::write(tokens.join(format!("{app}.token")), token_for(kube, account).await).unwrap();
    }
    let mut options = MeshOptions::free();
    options.mgmt_flags = vec!["--kubeconfig".into(), management_kubeconfig.display().to_string()];
    options.app_address = Some(host_address());
    options.sidecar_token_dir = Some(tokens.clone());
    options.registry_tls = true;
    options.agents_by_name = true;
    options.cluster_agent_flags = vec![
        (
            "cluster-1".into(),
            vec!["--kubeconfig".into(), kubeconfig1.display().to_string()],
        ),
        (
            "cluster-2".into(),
            vec!["--kubeconfig".into(), kubeconfig2.display().to_string()],
        ),
    ];
    let mut mesh = LocalMesh::start(&bin(), &test_dir("kubernetes-discovery"), options)
        .await
        .expect("mesh starts");
    publish_app(&kube1, &mesh, "frontend", "frontend", "v1", Some(CLUSTER_1_NODE)).await;
    publish_app(&kube1, &mesh, "backend-v1", "backend", "v1", Some(CLUSTER_1_NODE)).await;
    publish_app(&kube2, &mesh, "backend-v2", "backend", "v2", None).await;
    mesh.apply_demo_config().await.unwrap();
    mesh.wait_for_traffic(Duration::from_secs(60)).await.unwrap();
    let (ok, out) = kubectl(&management_kubeconfig, &["apply", "-f", "-"], Some(ANY_BACKEND));
    assert!(ok, "kubectl apply on the management cluster: {out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mesh
        .call_from_frontend("http://backend-any.mesh.internal/")
        .await
        .is_ok_and(|r| r.status == 200)
    {
        assert!(Instant::now() < deadline, "backend-any never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let path = "/apis/networking.gloo.solo.io/v2/namespaces/demo/virtualdestinations/backend-any";
    loop {
        let object = management.client().get_json(path).await.unwrap();
        if object["status"]["state"] == "ACCEPTED" && object["status"]["observedGeneration"] == 1 {
            let clusters = object["status"]["clusters"].to_string();
            assert!(
                clusters.contains("cluster-1") && clusters.contains("cluster-2"),
                "{object}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no ACCEPTED status on backend-any: {object}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A sidecar of the backend service that no Kubernetes object stands behind, with a token of
    // another account than the one it claims.
    mesh.start_app(&bin(), AppSpec::new("ghost", "demo", "backend", "v9", "cluster-1"))
        .unwrap();

    // The clusters report the workloads of their API servers: the demo's two and one, each
    // beside the API server's own `default/kubernetes` Service, as in any Kubernetes cluster;
    // not the ghost.
    until_workloads(&mesh, 3, 2).await;
    let clusters = mesh.api().unwrap().get_json("/api/v1/clusters").await.unwrap();
    assert_eq!(
        clusters["clusters"]["cluster-1"]["locality"],
        json!({"region": "us-east", "zone": "us-east-1a"}),
        "cluster-1's locality is its pods' node's: {clusters}"
    );
    assert_eq!(
        clusters["clusters"]["cluster-2"]["locality"],
        json!({"region": "cluster-2"}),
        "without node labels the region is the cluster's name: {clusters}"
    );
    let refusal = "the token is demo/frontend's, the registration claims demo/backend";
    let deadline = Instant::now() + Duration::from_secs(20);
    // The ghost's proxy reports the agent's answer and gives up.
    loop {
        let ghost_log = std::fs::read_to_string(mesh.app("ghost").sidecar.log_path()).unwrap_or_default();
        if ghost_log.contains("(403)") && ghost_log.contains(refusal) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never refused the ghost; its log: {ghost_log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The agent's CA is in every namespace, one created later too, as the sidecars use it.
    let agent_ca = std::fs::read_to_string(mesh.dir.join("agent-cluster-1").join("xds-ca.pem")).unwrap();
    create(
        &kube1,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "later"}}),
    )
    .await;
    for namespace in ["demo", "default", "later"] {
        let path = format!("/api/v1/namespaces/{namespace}/configmaps/trellis-agent-ca");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = kube1.client().get_json(&path).await.unwrap_or_default();
            if found["data"]["ca.crt"] == agent_ca.as_str() {
                break;
            }
            assert!(Instant::now() < deadline, "no agent CA in {namespace}: {found}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The TLS registration port: nothing in clear, and no handshake for a client that trusts
    // another CA (cluster-2's agent's) or checks another name.
    let tls_port = mesh.cluster("cluster-1").registry_tls_port.unwrap();
    let plain = trellis_support::httpc::get(
        &format!("http://127.0.0.1:{tls_port}/v1/status"),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status >= 400),
        "plain HTTP answered on the TLS port: {plain:?}"
    );
    let other_ca = mesh.dir.join("agent-cluster-2").join("xds-ca.pem");
    let stranger = trellis_agent::agent_endpoint::AgentEndpoint::new(&format!("127.0.0.1:{tls_port}"), Some(&other_ca))
        .unwrap()
        .request("GET", "/v1/status", &[], None, Duration::from_secs(5))
        .await;
    assert!(
        stranger
            .as_ref()
            .is_err_and(|e| e.to_string().contains("invalid peer certificate")),
        "a client trusting another CA: {stranger:?}"
    );
    // A registration without any token is refused, on either port.
    let registry = mesh.cluster("cluster-1").registry_port;
    let intruder = serde_json::to_vec(
        &json!({"kind": "sidecar", "workload": {"name": "intruder", "namespace": "demo",
        "service": "backend", "serviceAccount": "backend", "address": "127.0.0.1", "ports": []},
        "outboundPort": 1}),
    )
    .unwrap();
    let own_ca = mesh.dir.join("agent-cluster-1").join("xds-ca.pem");
    let over_tls = trellis_agent::agent_endpoint::AgentEndpoint::new(&format!("127.0.0.1:{tls_port}"), Some(&own_ca))
        .unwrap()
        .request(
            "PUT",
            "/v1/proxies/sidecar~intruder.demo",
            &[],
            Some(("application/json", intruder.clone())),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(over_tls.status, 401, "{}", over_tls.body);
    let anonymous = trellis_support::httpc::request(
        "PUT",
        &format!("http://127.0.0.1:{registry}/v1/proxies/sidecar~intruder.demo"),
        None,
        &[],
        Some(("application/json", intruder)),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    // Both clusters' backends answer, and the ghost (v9) never does.
    until_split(&mesh, "traffic to both clusters", |v1, v2| v1 > 0 && v2 > 0).await;

    // Scale cluster-1's backend to nothing: its EndpointSlice loses the endpoint.
    let slice = "/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices/backend-v1-slice";
    merge_patch(&kube1, slice, json!({"endpoints": []})).await;
    until_split(
        &mesh,
        "all traffic to cluster-2 once cluster-1 has no backend",
        |v1, _| v1 == 0,
    )
    .await;
    until_workloads(&mesh, 2, 2).await;

    // And back: the endpoint returns, unready first (not a workload), then ready.
    let mut endpoint = endpoint_slice("backend-v1", "backend", mesh.app("backend-v1").inbound_port);
    endpoint["endpoints"][0]["conditions"]["ready"] = json!(false);
    merge_patch(&kube1, slice, json!({"endpoints": endpoint["endpoints"]})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (v1, _) = any_backend_versions(&mesh).await;
    assert_eq!(v1, 0, "an unready endpoint got traffic");
    endpoint["endpoints"][0]["conditions"]["ready"] = json!(true);
    merge_patch(&kube1, slice, json!({"endpoints": endpoint["endpoints"]})).await;
    until_split(&mesh, "cluster-1's backend back", |v1, _| v1 > 0).await;

    // Cluster-2's agent comes back without its xDS CA, as a pod whose data was lost: it makes a
    // new one and publishes it (here the file the sidecars read, as a ConfigMap volume would be
    // updated). Its sidecar and gateway, which reach it over the checked TLS port, take the new
    // CA and a new certificate, and their Envoys connect again without a restart.
    let sidecar_admin = mesh.app("backend-v2").admin_port;
    let connected = "control_plane.connected_state";
    assert_eq!(envoy_stat(sidecar_admin, connected).await, 1);
    let agent_dir = mesh.dir.join("agent-cluster-2");
    let old_ca = std::fs::read_to_string(agent_dir.join("xds-ca.pem")).unwrap();
    mesh.cluster_mut("cluster-2").agent.stop().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while envoy_stat(sidecar_admin, connected).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the sidecar's Envoy never noticed its agent stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_file(agent_dir.join("xds-ca.pem")).unwrap();
    std::fs::remove_file(agent_dir.join("xds-ca.key")).unwrap();
    mesh.cluster_mut("cluster-2").agent.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    while envoy_stat(sidecar_admin, connected).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the sidecar's Envoy never connected to the agent with its new CA; sidecar log: {}",
            std::fs::read_to_string(mesh.app("backend-v2").sidecar.log_path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gateway_admin = mesh.cluster("cluster-2").gateway_admin_port;
    while envoy_stat(gateway_admin, connected).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the east-west gateway's Envoy never connected to the agent with its new CA"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new_ca = std::fs::read_to_string(agent_dir.join("xds-ca.pem")).unwrap();
    assert_ne!(new_ca, old_ca);
    let sidecar_log = std::fs::read_to_string(mesh.app("backend-v2").sidecar.log_path()).unwrap();
    assert!(sidecar_log.contains("the agent's xDS CA changed"), "{sidecar_log}");
    until_split(&mesh, "both clusters after cluster-2's agent restarted", |v1, v2| {
        v1 > 0 && v2 > 0
    })
    .await;
    mesh.shutdown().await;
}
