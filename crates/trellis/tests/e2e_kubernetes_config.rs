//! Gloo YAML applied to a real kube-apiserver (the management cluster) as custom resources: the
//! management server watches it, the mesh serves it through real Envoy, and each object's status
//! subresource says ACCEPTED with its observedGeneration; a typo is INVALID with its field path
//! while the last good version stays in force; a deleted object leaves the mesh. With the
//! management server's validating webhook registered, the API server itself refuses a typo with
//! the field path, and the webhook refuses callers without a credential.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use trellis_cli::up::MeshOptions;
use trellis_testkit::etcd::Etcd;
use trellis_testkit::kube::{KubeApiServer, chart, helm, kubectl};

const OBJECT: &str = "/apis/networking.gloo.solo.io/v2/namespaces/demo/virtualdestinations/backend-k8s";

/// A VirtualDestination as a Gloo user writes it; `hosts_field` is `hosts`, or a typo of it.
fn virtual_destination(name: &str, hosts_field: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n  {hosts_field}:\n  - {host}\n  services:\n  - labels:\n      app: backend\n    cluster: cluster-1\n  ports:\n  - number: 80\n    protocol: HTTP\n    targetPort:\n      name: http\n"
    )
}

/// `kubectl apply -f -` of `yaml`: whether it succeeded, and what kubectl said.
fn kubectl_apply(kubeconfig: &std::path::Path, yaml: &str) -> (bool, String) {
    kubectl(kubeconfig, &["apply", "-f", "-"], Some(yaml))
}

async fn status_of(kube: &KubeApiServer) -> Value {
    kube.client().get_json(OBJECT).await.unwrap()
}

async fn until_status(kube: &KubeApiServer, what: &str, holds: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let object = status_of(kube).await;
        if holds(&object) {
            return object;
        }
        assert!(Instant::now() < deadline, "{what}: {}", object["status"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn until_answer(mesh: &trellis_cli::up::LocalMesh, host: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = mesh.call_from_frontend(&format!("http://{host}/")).await;
        if answer.as_ref().is_ok_and(|r| r.status == status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} never answered {status}: {:?}",
            answer.map(|r| r.status)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gloo_yaml_applied_to_kubernetes_reaches_envoy_and_gets_its_status() {
    // The management cluster: beside the mesh's directory, which the mesh empties at start.
    let base = test_dir("kubernetes-cluster");
    let _ = std::fs::remove_dir_all(&base);
    let etcd = Etcd::start(&base.join("etcd")).await;
    // The API server authenticates to the webhook with a Trellis API token it reads from a file
    // (written once the management server has made its token).
    std::fs::create_dir_all(&base).unwrap();
    let webhook_token = base.join("webhook-token");
    std::fs::write(&webhook_token, "").unwrap();
    let webhook_kubeconfig = base.join("webhook-kubeconfig");
    std::fs::write(
        &webhook_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    tokenFile: {}\n",
            webhook_token.display()
        ),
    )
    .unwrap();
    let admission = base.join("admission.yaml");
    std::fs::write(
        &admission,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: ValidatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {0}\n- name: MutatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {0}\n",
            webhook_kubeconfig.display()
        ),
    )
    .unwrap();
    let kube = KubeApiServer::start_with(
        &base.join("kube"),
        &etcd,
        &[format!("--admission-control-config-file={}", admission.display())],
    )
    .await;
    kube.install_crds().await;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}});
    assert_eq!(kube.create(&namespace, false).await.status, 201);
    let kubeconfig = base.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);

    let mut options = MeshOptions::free();
    options.mgmt_flags = vec!["--kubeconfig".into(), kubeconfig.display().to_string()];
    let mesh = demo_mesh_with("kubernetes", options).await;
    until_answer(&mesh, "backend-k8s.mesh.internal", 404).await;

    // kubectl apply: the object is created in Kubernetes, and only there.
    let (ok, out) = kubectl_apply(
        &kubeconfig,
        &virtual_destination("backend-k8s", "hosts", "backend-k8s.mesh.internal"),
    );
    assert!(ok && out.contains("created"), "{out}");
    until_answer(&mesh, "backend-k8s.mesh.internal", 200).await;
    let object = until_status(&kube, "ACCEPTED for generation 1", |o| {
        o["status"]["state"] == "ACCEPTED" && o["status"]["observedGeneration"] == 1
    })
    .await;
    assert!(
        object["status"]["clusters"].to_string().contains("cluster-1"),
        "where it applies: {}",
        object["status"]
    );
    let stored = mesh
        .api()
        .unwrap()
        .get_json("/api/v1/resources")
        .await
        .unwrap()
        .to_string();
    assert!(stored.contains("backend-k8s.mesh.internal"), "the store mirrors it");

    // An edit: the new host is served, the old one no longer, and the status follows.
    let (ok, out) = kubectl_apply(
        &kubeconfig,
        &virtual_destination("backend-k8s", "hosts", "backend-k8s-2.mesh.internal"),
    );
    assert!(ok && out.contains("configured"), "{out}");
    until_answer(&mesh, "backend-k8s-2.mesh.internal", 200).await;
    until_answer(&mesh, "backend-k8s.mesh.internal", 404).await;
    until_status(&kube, "ACCEPTED for generation 2", |o| {
        o["status"]["state"] == "ACCEPTED" && o["status"]["observedGeneration"] == 2
    })
    .await;

    // A typo: INVALID with the field, and the last good version keeps serving.
    let (ok, out) = kubectl_apply(
        &kubeconfig,
        &virtual_destination("backend-k8s", "hostz", "typo.mesh.internal"),
    );
    assert!(ok, "without the webhook the API server stores the typo: {out}");
    let object = until_status(&kube, "INVALID for generation 3", |o| {
        o["status"]["state"] == "INVALID" && o["status"]["observedGeneration"] == 3
    })
    .await;
    let message = object["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("hostz") && message.contains("VirtualDestination/demo/backend-k8s"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    until_answer(&mesh, "backend-k8s-2.mesh.internal", 200).await;

    // The validating webhook: the API server asks the management server before it stores.
    let mgmt_dir = mesh.dir.join("mgmt");
    std::fs::copy(mgmt_dir.join("api").join("admin-token"), &webhook_token).unwrap();
    let ca_pem = std::fs::read_to_string(mgmt_dir.join("pki").join("api-ca.pem")).unwrap();
    let url = format!("{}/api/v1/admission/validate", mesh.api_url);
    let webhook = trellis_kube::admission::validating_webhook_configuration(&url, &ca_pem);
    let registered = kube.create(&webhook, false).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let typo = virtual_destination("typo", "hostz", "typo.mesh.internal");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (stored, refusal) = loop {
        // The API server takes a moment to see a new webhook configuration.
        let (ok, out) = kubectl_apply(&kubeconfig, &typo);
        if !ok || Instant::now() > deadline {
            break (ok, out);
        }
        kubectl(
            &kubeconfig,
            &["delete", "-n", "demo", "virtualdestination", "typo"],
            None,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!stored, "the typo was stored: {refusal}");
    assert!(
        refusal.contains("denied the request")
            && refusal.contains("hostz")
            && refusal.contains("VirtualDestination/demo/typo"),
        "kubectl shows the webhook's refusal with the field: {refusal}"
    );
    // A valid object still goes through the webhook.
    let (ok, out) = kubectl_apply(
        &kubeconfig,
        &virtual_destination("valid", "hosts", "valid.mesh.internal"),
    );
    assert!(ok && out.contains("created"), "{out}");
    until_answer(&mesh, "valid.mesh.internal", 200).await;
    // The webhook, like every route, refuses a caller without a credential.
    let anonymous =
        trellis_cli::api_client::ApiClient::new(&mesh.api_url, Some(&mgmt_dir.join("pki").join("api-ca.pem")), None)
            .unwrap()
            .request(
                "POST",
                "/api/v1/admission/validate",
                Some(("application/json", b"{}".to_vec())),
            )
            .await
            .unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    // Sidecar injection: pods created in a labelled namespace get the proxy, registering as
    // their pod with a projected token for the agent; others are left as they are.
    // Registered as the agent chart renders it.
    let ca_file = mgmt_dir.join("pki").join("api-ca.pem");
    let (ok, injector) = helm(&[
        "template",
        "agent",
        chart("trellis-agent").to_str().unwrap(),
        "-n",
        "trellis",
        "--show-only",
        "templates/injector.yaml",
        "--set",
        "cluster=cluster-1",
        "--set",
        "sidecarInjector.enabled=true",
        "--set",
        &format!("sidecarInjector.mgmtApiUrl={}", mesh.api_url),
        "--set-file",
        &format!("sidecarInjector.caBundle={}", ca_file.display()),
    ]);
    assert!(ok, "{injector}");
    assert!(
        injector.contains("/api/v1/admission/inject/trellis-agent.trellis.svc:9978"),
        "{injector}"
    );
    let (ok, out) = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&injector));
    assert!(ok, "{out}");
    let shop = json!({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}});
    assert_eq!(kube.create(&shop, false).await.status, 201);
    for namespace in ["shop", "demo"] {
        let account =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cart", "namespace": namespace}});
        assert_eq!(kube.create(&account, false).await.status, 201);
    }
    let pod = |namespace: &str, name: &str, annotations: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": {"app": "cart", "version": "v1"}, "annotations": annotations},
               "spec": {"serviceAccountName": "cart",
                        "containers": [{"name": "cart", "image": "cart", "ports": [{"name": "http", "containerPort": 8080}]}]}})
    };
    let containers = |created: &trellis_support::httpc::Response| -> Vec<String> {
        let body: Value = serde_json::from_str(&created.body).unwrap();
        body["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    let injected = loop {
        // The API server takes a moment to see a new webhook configuration.
        attempt += 1;
        let name = format!("cart-{attempt}");
        let created = kube.create(&pod("shop", &name, json!({})), false).await;
        assert_eq!(created.status, 201, "{}", created.body);
        if containers(&created).len() == 2 || Instant::now() > deadline {
            break serde_json::from_str::<Value>(&created.body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let sidecar = &injected["spec"]["containers"][1];
    assert_eq!(sidecar["name"], "trellis-proxy", "{injected}");
    let args = sidecar["args"].to_string();
    for expected in [
        "\"--service-account\",\"cart\"",
        "\"--port\",\"http:8080:8080:15006\"",
        "\"--agent\",\"trellis-agent.trellis.svc:9978\"",
        "\"--agent-ca\",\"/var/run/trellis/agent-ca/ca.crt\"",
    ] {
        assert!(args.contains(expected), "{expected} missing from {args}");
    }
    let volumes = injected["spec"]["volumes"].to_string();
    assert!(volumes.contains("\"audience\":\"trellis-agent\""), "{volumes}");
    let agent_ca = injected["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "trellis-agent-ca");
    assert_eq!(
        agent_ca.map(|v| v["configMap"]["name"].clone()),
        Some(json!("trellis-agent-ca")),
        "{volumes}"
    );
    let plain = kube.create(&pod("demo", "cart", json!({})), false).await;
    assert_eq!(containers(&plain), ["cart"], "an unlabelled namespace gets no sidecar");
    let opted_out = kube
        .create(
            &pod("shop", "cart-plain", json!({"sidecar.istio.io/inject": "false"})),
            false,
        )
        .await;
    assert_eq!(containers(&opted_out), ["cart"], "an opted-out pod gets no sidecar");

    // kubectl delete: gone from the mesh and from the store.
    let (ok, out) = kubectl(
        &kubeconfig,
        &["delete", "-n", "demo", "virtualdestination", "backend-k8s"],
        None,
    );
    assert!(ok, "{out}");
    until_answer(&mesh, "backend-k8s-2.mesh.internal", 404).await;
    let stored = mesh
        .api()
        .unwrap()
        .get_json("/api/v1/resources")
        .await
        .unwrap()
        .to_string();
    assert!(!stored.contains("backend-k8s"), "the store forgot it: {stored}");

    // Secrets beside Gloo resources (the demo's, in `demo`) are mirrored into the store and
    // leave it with their object; a Secret of a namespace without Gloo resources stays out.
    let elsewhere = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}});
    assert_eq!(kube.create(&elsewhere, false).await.status, 201);
    for (namespace, name) in [("demo", "api-keys"), ("elsewhere", "private-keys")] {
        let (ok, out) = kubectl(
            &kubeconfig,
            &[
                "create",
                "secret",
                "generic",
                name,
                "-n",
                namespace,
                "--from-literal=api-key=s3cr3t",
            ],
            None,
        );
        assert!(ok, "{out}");
    }
    let stored_secrets = || async {
        mesh.api()
            .unwrap()
            .get_json("/api/v1/resources")
            .await
            .unwrap()
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stored_secrets().await.contains("\"api-keys\"") {
        assert!(
            Instant::now() < deadline,
            "the Secret beside the demo's resources was not mirrored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = stored_secrets().await;
    assert!(
        !stored.contains("private-keys"),
        "a Secret away from Gloo resources was mirrored: {stored}"
    );
    let (ok, out) = kubectl(&kubeconfig, &["delete", "secret", "api-keys", "-n", "demo"], None);
    assert!(ok, "{out}");
    while stored_secrets().await.contains("\"api-keys\"") {
        assert!(Instant::now() < deadline, "the deleted Secret stayed in the store");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
