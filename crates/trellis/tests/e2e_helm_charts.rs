//! The Helm charts (charts/trellis-mgmt, charts/trellis-agent) with Gloo's value names: `helm
//! lint`, `helm template` with the samples (overrides merged, FIPS tags, replicas with a
//! PodDisruptionBudget, built-in Redis and Prometheus switched off for the operator's own), and
//! every rendered object (CRDs included) admitted by a real kube-apiserver through `kubectl apply
//! --dry-run=server`; a bad override is refused with its field path.

use serde_json::Value;
use trellis_testkit::etcd::Etcd;
use trellis_testkit::kube::{KubeApiServer, chart, helm, kubectl};

/// `helm template` of `chart` in namespace `trellis` with `values` files, `--set`s and `extra`
/// flags: the YAML stream.
fn template(chart_name: &str, values: &[&str], sets: &[&str], extra: &[&str]) -> String {
    let path = chart(chart_name);
    let mut args = vec!["template", "trellis", path.to_str().unwrap(), "--namespace", "trellis"];
    let files: Vec<String> = values
        .iter()
        .map(|v| path.join("samples").join(v).display().to_string())
        .collect();
    for file in &files {
        args.extend(["-f", file.as_str()]);
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let (ok, text) = helm(&args);
    assert!(ok, "helm template {chart_name} {values:?} {sets:?}: {text}");
    text
}

/// The objects [`template`] renders.
fn render(chart_name: &str, values: &[&str], sets: &[&str]) -> Vec<Value> {
    template(chart_name, values, sets, &[])
        .split("\n---")
        .filter_map(|doc| yaml_serde::from_str::<Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

/// Three management replicas keeping their store on the API server.
const KUBERNETES_STORE: &[&str] = &[
    "replicas=3",
    "store.backend=kubernetes",
    "relay.disableCaCertGeneration=true",
];

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_charts_lint_and_render_the_samples_as_gloo_users_write_them() {
    for (name, values, sets) in [
        ("trellis-mgmt", vec![], vec![]),
        ("trellis-mgmt", vec!["production.yaml"], vec![]),
        ("trellis-mgmt", vec!["insecure.yaml"], vec![]),
        ("trellis-agent", vec![], vec!["cluster=cluster-1"]),
        ("trellis-agent", vec!["production.yaml"], vec![]),
    ] {
        let path = chart(name);
        let mut args = vec!["lint".to_string(), "--strict".into(), path.display().to_string()];
        for value in &values {
            args.extend(["-f".into(), path.join("samples").join(value).display().to_string()]);
        }
        for set in &sets {
            args.extend(["--set".into(), set.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, text) = helm(&args);
        assert!(ok, "helm lint {name} {values:?}: {text}");
    }

    // Production: three replicas on etcd with the operator's CAs, the user's Redis and Prometheus.
    let production = render("trellis-mgmt", &["production.yaml"], &[]);
    let deployment = find(&production, "Deployment", "trellis-mgmt").expect("the management Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "trellis:0.1.0-fips");
    let args = args_of(deployment);
    for expected in [
        "--store=etcd",
        "--etcd-endpoints=https://etcd-0.etcd.trellis.svc:2379,https://etcd-1.etcd.trellis.svc:2379,https://etcd-2.etcd.trellis.svc:2379",
        "--disable-ca-cert-generation",
        "--relay-signing-cert=/etc/trellis/relay-signing/tls.crt",
        "--mesh-root-cert=/etc/trellis/mesh-root/tls.crt",
        "--ui-session-redis=redis://redis.trellis.svc.cluster.local:6379",
        "--prometheus-url=http://prometheus-server.monitoring.svc:9090",
        "--oidc-issuer=https://login.example.com/",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} missing from {args:?}");
    }
    assert!(
        !args
            .iter()
            .any(|a| a == "--builtin-redis" || a == "--builtin-prometheus")
    );
    assert!(
        find(&production, "Deployment", "trellis-redis").is_none(),
        "the user's Redis is used"
    );
    assert!(find(&production, "Deployment", "trellis-prometheus").is_none());
    let pdb = find(&production, "PodDisruptionBudget", "trellis-mgmt").expect("replicas get a PDB");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    // Overrides are merged into what the chart renders, not put in its place.
    let template = &deployment["spec"]["template"];
    assert_eq!(template["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(
        template["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"],
        "false"
    );
    assert_eq!(template["metadata"]["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(template["metadata"]["annotations"]["prometheus.io/port"], "9091");
    let service = find(&production, "Service", "trellis-mgmt").unwrap();
    assert_eq!(
        service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(service["spec"]["ports"].as_array().unwrap().len(), 3);
    // Private keys are mounted read-only for the owner only.
    let volumes = template["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .filter(|v| v.get("secret").is_some())
            .all(|v| v["secret"]["defaultMode"] == 256)
    );

    // The insecure demo: plaintext relay, built-in Redis and Prometheus, one replica, no PDB.
    let demo = render("trellis-mgmt", &["insecure.yaml"], &[]);
    let args = args_of(find(&demo, "Deployment", "trellis-mgmt").unwrap());
    assert!(args.iter().any(|a| a == "--insecure"));
    assert!(args.iter().any(|a| a == "--builtin-redis") && args.iter().any(|a| a == "--builtin-prometheus"));
    assert!(find(&demo, "Deployment", "trellis-redis").is_some());
    assert!(find(&demo, "Deployment", "trellis-prometheus").is_some());
    assert!(find(&demo, "PodDisruptionBudget", "trellis-mgmt").is_none());

    // Values that cannot work are refused with the reason.
    let (ok, text) = helm(&[
        "template",
        "t",
        chart("trellis-mgmt").to_str().unwrap(),
        "--set",
        "replicas=3",
    ]);
    assert!(!ok && text.contains("replicas > 1 needs store.backend"), "{text}");
    let (ok, text) = helm(&[
        "template",
        "t",
        chart("trellis-mgmt").to_str().unwrap(),
        "--set",
        "store.backend=kubernetes",
        "--set",
        "kubernetes.watchResources=false",
    ]);
    assert!(!ok && text.contains("needs kubernetes.watchResources"), "{text}");

    // Three replicas with the store on this cluster's API server: no etcd flags, and the
    // server may write Secrets in its own namespace.
    let on_api_server = render("trellis-mgmt", &[], KUBERNETES_STORE);
    let args = args_of(find(&on_api_server, "Deployment", "trellis-mgmt").unwrap());
    assert!(args.iter().any(|a| a == "--store=kubernetes"), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--etcd")), "{args:?}");
    let role = find(&on_api_server, "Role", "trellis-mgmt-leader-election").unwrap();
    assert!(role.to_string().contains("deletecollection"), "{role}");
    let (ok, text) = helm(&["template", "t", chart("trellis-agent").to_str().unwrap()]);
    assert!(!ok && text.contains("cluster is required"), "{text}");
    let (ok, text) = helm(&[
        "template",
        "t",
        chart("trellis-mgmt").to_str().unwrap(),
        "--set",
        "admissionWebhook.enabled=true",
    ]);
    assert!(!ok && text.contains("needs admissionWebhook.caBundle"), "{text}");
    let (ok, text) = helm(&[
        "template",
        "t",
        chart("trellis-agent").to_str().unwrap(),
        "--set",
        "cluster=c1",
        "--set",
        "sidecarInjector.enabled=true",
        "--set",
        "sidecarInjector.mgmtApiUrl=http://mgmt:8090",
        "--set",
        "sidecarInjector.caBundle=x",
    ]);
    assert!(!ok && text.contains("must be https://"), "{text}");

    // The agent: several replicas to dial, the token from its Secret, add-ons in their namespace.
    let agent = render("trellis-agent", &["production.yaml"], &[]);
    let deployment = find(&agent, "Deployment", "trellis-agent").unwrap();
    let args = args_of(deployment);
    assert!(
        args.iter()
            .any(|a| a == "--mgmt=mgmt-0.example.com:9900,mgmt-1.example.com:9900")
    );
    assert!(args.iter().any(|a| a == "--relay-authority=trellis-mgmt.trellis"));
    assert!(
        args.iter().any(|a| a == "--kubernetes"),
        "discovery from Kubernetes: {args:?}"
    );
    let role = find(&agent, "ClusterRole", "trellis-agent-trellis").expect("the agent's ClusterRole");
    assert!(role.to_string().contains("tokenreviews") && role.to_string().contains("endpointslices"));
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["name"], "TRELLIS_TOKEN");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "relay-identity-token-secret");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["priorityClassName"],
        "system-cluster-critical"
    );
    // The role secret gateways and add-ons register with: one value, in the agent's namespace
    // and the add-ons'; the agent reads it from there and the add-ons present it.
    assert!(
        args.iter()
            .any(|a| a == "--role-secret-file=/etc/trellis/role-secret/secret")
    );
    assert!(args.iter().any(|a| a == "--registry-tls-addr=0.0.0.0:9978"));
    // Its data (relay identity, xDS CA) outlives the pod.
    assert!(find(&agent, "PersistentVolumeClaim", "trellis-agent-data").is_some());
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let data = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap();
    assert_eq!(data["persistentVolumeClaim"]["claimName"], "trellis-agent-data");
    let secrets: Vec<&Value> = agent
        .iter()
        .filter(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "trellis-agent-role-secret")
        .collect();
    let namespaces: Vec<&str> = secrets
        .iter()
        .map(|s| s["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["trellis", "gloo-mesh-addons"]);
    assert_eq!(secrets[0]["data"]["secret"], secrets[1]["data"]["secret"]);
    assert!(secrets[0]["data"]["secret"].as_str().unwrap().len() >= 48);
    for addon in ["ext-auth-service", "rate-limiter"] {
        let addon = find(&agent, "Deployment", addon).unwrap();
        assert_eq!(addon["metadata"]["namespace"], "gloo-mesh-addons");
        let addon_args = args_of(addon);
        for expected in [
            "--agent=trellis-agent.trellis.svc.cluster.local:9978",
            "--agent-ca=/var/run/trellis/agent-ca/ca.crt",
            "--role-secret-file=/etc/trellis/role-secret/secret",
        ] {
            assert!(
                addon_args.iter().any(|a| a == expected),
                "{expected} missing: {addon_args:?}"
            );
        }
        assert_eq!(
            addon["spec"]["template"]["spec"]["containers"][0]["image"],
            "trellis:0.1.0-fips"
        );
        assert_eq!(
            addon["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"],
            r#"{"holdApplicationUntilProxyStarts": true}"#
        );
    }
}

/// The chart installs the CRDs `trellis crds` prints (regenerate with
/// `trellis crds > charts/trellis-mgmt/crds/gloo-resources.yaml`).
#[test]
fn the_charts_crds_are_the_ones_trellis_generates() {
    let shipped = std::fs::read_to_string(chart("trellis-mgmt").join("crds/gloo-resources.yaml")).unwrap();
    assert!(
        shipped == trellis_kube::crds::custom_resource_definitions_yaml(),
        "charts/trellis-mgmt/crds/gloo-resources.yaml is stale: run `trellis crds > charts/trellis-mgmt/crds/gloo-resources.yaml`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_api_server_admits_every_rendered_object_and_refuses_a_bad_override() {
    let dir = std::env::temp_dir().join(format!("trellis-helm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let etcd = Etcd::start(&dir.join("etcd")).await;
    let kube = KubeApiServer::start(&dir.join("kube"), &etcd).await;
    for namespace in ["trellis", "gloo-mesh-addons"] {
        let object = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        let response = kube.create(&object, false).await;
        assert_eq!(response.status, 201, "{}", response.body);
    }
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    // kubectl apply --dry-run=server of each rendering, CRDs included.
    let mut admitted = 0;
    // The webhooks too, when enabled (with a real PEM as their CA bundle).
    let ca_bundle = format!("admissionWebhook.caBundle={}", etcd.ca_file.display());
    let injector_ca = format!("sidecarInjector.caBundle={}", etcd.ca_file.display());
    let webhook: &[&str] = &["--set", "admissionWebhook.enabled=true", "--set-file", &ca_bundle];
    let injector: &[&str] = &[
        "--set",
        "sidecarInjector.enabled=true",
        "--set",
        "sidecarInjector.mgmtApiUrl=https://mgmt.example.com:8090",
        "--set-file",
        &injector_ca,
    ];
    for (chart_name, sample, extra) in [
        ("trellis-mgmt", "production.yaml", webhook),
        ("trellis-mgmt", "insecure.yaml", &[][..]),
        ("trellis-agent", "production.yaml", injector),
    ] {
        let yaml = template(chart_name, &[sample], &[], &[&["--include-crds"][..], extra].concat());
        assert_eq!(
            yaml.contains("WebhookConfiguration"),
            !extra.is_empty(),
            "{chart_name}: webhooks rendered only when enabled"
        );
        let (ok, out) = kubectl(&kubeconfig, &["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
        assert!(ok, "kubectl apply --dry-run=server of {chart_name} {sample}: {out}");
        admitted += out.lines().filter(|line| line.contains("(server dry run)")).count();
    }
    assert!(admitted >= 60, "only {admitted} objects admitted");
    // Nothing was stored by the dry run.
    let listed = kube
        .client()
        .get_json("/apis/apps/v1/namespaces/trellis/deployments")
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);

    // An override the API server's schema refuses, with the field's path.
    let bad = template("trellis-mgmt", &[], &["deploymentOverrides.spec.replicas=three"], &[]);
    let (ok, out) = kubectl(&kubeconfig, &["apply", "--dry-run=server", "-f", "-"], Some(&bad));
    assert!(!ok, "replicas: three was admitted: {out}");
    assert!(out.contains("spec.replicas"), "the refusal names the field: {out}");

    // Installed for real with the store on the API server, the server's account may keep its
    // log in its own namespace, and only there.
    let yaml = template("trellis-mgmt", &[], KUBERNETES_STORE, &[]);
    let (ok, out) = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&yaml));
    assert!(ok, "kubectl apply of the Kubernetes-store rendering: {out}");
    let account = "--as=system:serviceaccount:trellis:trellis-mgmt";
    for verb in ["create", "get", "list", "watch", "update", "delete", "deletecollection"] {
        let (ok, out) = kubectl(
            &kubeconfig,
            &["auth", "can-i", verb, "secrets", "-n", "trellis", account],
            None,
        );
        assert!(ok && out.trim() == "yes", "{verb} secrets in trellis: {out}");
    }
    for namespace in ["default", "gloo-mesh-addons"] {
        let (_, out) = kubectl(
            &kubeconfig,
            &["auth", "can-i", "create", "secrets", "-n", namespace, account],
            None,
        );
        assert_eq!(out.trim(), "no", "create secrets in {namespace}: {out}");
    }
}
