//! Sidecar injection: the mutating admission webhook's answer for a Pod created in a namespace
//! labelled `trellis.io/injection=enabled` (or Istio's `istio-injection=enabled`, which Gloo
//! users already set). The Pod gains a `trellis-proxy` container that registers with its
//! cluster's agent as the pod (name, namespace, service account, labels, address from the
//! downward API) and proves it with a projected service-account token for the agent's audience,
//! sent to the agent's TLS registration port, which it checks against the agent's CA (the
//! `trellis-agent-ca` ConfigMap the agent publishes in every namespace).
//!
//! There is no traffic capture (no iptables init container): each app port gets a sidecar port
//! named `mesh-<name>` at 15006 and up, which the pod's Service targets, and the app calls the
//! mesh through the sidecar's outbound proxy on 127.0.0.1:15001.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// The audience of the token a sidecar presents to its agent.
pub const TOKEN_AUDIENCE: &str = "trellis-agent";
pub const TOKEN_DIR: &str = "/var/run/secrets/trellis";
/// Where the sidecar finds the agent's CA ([`crate::ca_publish`]'s ConfigMap).
pub const AGENT_CA_DIR: &str = "/var/run/trellis/agent-ca";
const CONTAINER: &str = "trellis-proxy";
const FIRST_INBOUND_PORT: i64 = 15006;

/// Where injected sidecars find their agent, and what they run.
#[derive(Debug, Clone)]
pub struct InjectionSettings {
    /// The `trellis` image (its `proxy` command runs Envoy beside the app).
    pub image: String,
    /// The agent's TLS registration address (its `--registry-tls-addr`) as pods reach it
    /// (`trellis-agent.trellis.svc:9978`).
    pub agent: String,
}

/// The AdmissionReview response for `review`: the pod unchanged, or a JSON patch adding the
/// sidecar.
pub fn review(review: &Value, settings: &InjectionSettings) -> Value {
    let request = &review["request"];
    let mut response = json!({"uid": request["uid"].clone(), "allowed": true});
    if request["kind"]["kind"] == "Pod"
        && request["operation"] == "CREATE"
        && let Some(patch) = patch(&request["object"], settings)
    {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(BASE64.encode(serde_json::to_vec(&patch).expect("patches serialize")));
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn opted_out(pod: &Value) -> bool {
    let annotations = &pod["metadata"]["annotations"];
    ["sidecar.trellis.io/inject", "sidecar.istio.io/inject"]
        .iter()
        .any(|key| annotations[*key] == "false")
}

/// The JSON patch that adds the sidecar to `pod`, or `None` when it opted out or has one.
pub fn patch(pod: &Value, settings: &InjectionSettings) -> Option<Vec<Value>> {
    let containers = pod["spec"]["containers"].as_array()?;
    if opted_out(pod) || containers.iter().any(|c| c["name"] == CONTAINER) {
        return None;
    }
    let labels = pod["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    let label_list: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect();
    let service = ["app", "app.kubernetes.io/name"]
        .iter()
        .find_map(|key| labels.get(*key).and_then(Value::as_str))
        .map(str::to_string)
        .or_else(|| {
            pod["metadata"]["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let service_account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
    let mut args: Vec<String> = [
        "proxy",
        "--agent",
        &settings.agent,
        "--name",
        "$(POD_NAME)",
        "--namespace",
        "$(POD_NAMESPACE)",
        "--service",
        &service,
        "--service-account",
        service_account,
        "--address",
        "$(POD_IP)",
        "--service-account-token-file",
        &format!("{TOKEN_DIR}/token"),
        "--agent-ca",
        &format!("{AGENT_CA_DIR}/{}", crate::ca_publish::KEY),
    ]
    .map(String::from)
    .to_vec();
    if !label_list.is_empty() {
        args.extend(["--labels".to_string(), label_list.join(",")]);
    }
    let mut sidecar_ports = Vec::new();
    let app_ports = containers
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default());
    for (index, port) in app_ports.enumerate() {
        let Some(number) = port["containerPort"].as_i64() else {
            continue;
        };
        let name = port["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("port-{number}"));
        let inbound = FIRST_INBOUND_PORT + index as i64;
        args.extend(["--port".to_string(), format!("{name}:{number}:{number}:{inbound}")]);
        // Port names are at most 15 characters in a pod.
        let mesh_name: String = format!("mesh-{name}").chars().take(15).collect();
        sidecar_ports.push(json!({"name": mesh_name, "containerPort": inbound, "protocol": "TCP"}));
    }
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let sidecar = json!({
        "name": CONTAINER,
        "image": settings.image,
        "args": args,
        "env": [
            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "POD_IP", "valueFrom": field("status.podIP")},
        ],
        "ports": sidecar_ports,
        "volumeMounts": [
            {"name": "trellis-token", "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": "trellis-agent-ca", "mountPath": AGENT_CA_DIR, "readOnly": true},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 1337,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    let volumes = [
        json!({"name": "trellis-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE, "expirationSeconds": 3600, "path": "token"}}]}}),
        json!({"name": "trellis-agent-ca", "configMap": {"name": crate::ca_publish::CONFIG_MAP}}),
    ];
    let mut operations = vec![json!({"op": "add", "path": "/spec/containers/-", "value": sidecar})];
    if pod["spec"]["volumes"].is_array() {
        operations.extend(
            volumes
                .into_iter()
                .map(|volume| json!({"op": "add", "path": "/spec/volumes/-", "value": volume})),
        );
    } else {
        operations.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes}));
    }
    operations.push(if pod["metadata"]["annotations"].is_object() {
        json!({"op": "add", "path": "/metadata/annotations/sidecar.trellis.io~1status", "value": "injected"})
    } else {
        json!({"op": "add", "path": "/metadata/annotations", "value": {"sidecar.trellis.io/status": "injected"}})
    });
    Some(operations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> InjectionSettings {
        InjectionSettings {
            image: "trellis:0.1.0".into(),
            agent: "trellis-agent.trellis.svc:9978".into(),
        }
    }

    fn pod(annotations: Value) -> Value {
        json!({"metadata": {"generateName": "reviews-v1-", "labels": {"app": "reviews", "version": "v1"}, "annotations": annotations},
               "spec": {"serviceAccountName": "bookinfo-reviews",
                        "containers": [{"name": "reviews", "image": "reviews", "ports": [{"name": "http", "containerPort": 9080}]}]}})
    }

    #[test]
    fn the_sidecar_registers_as_its_pod_with_a_projected_token() {
        let operations = patch(&pod(json!({})), &settings()).unwrap();
        let sidecar = &operations[0]["value"];
        let args: Vec<&str> = sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let joined = args.join(" ");
        for expected in [
            "--name $(POD_NAME)",
            "--service reviews",
            "--service-account bookinfo-reviews",
            "--address $(POD_IP)",
            "--port http:9080:9080:15006",
            "--labels app=reviews,version=v1",
            "--agent trellis-agent.trellis.svc:9978",
            "--agent-ca /var/run/trellis/agent-ca/ca.crt",
        ] {
            assert!(joined.contains(expected), "{expected} missing: {joined}");
        }
        assert_eq!(
            sidecar["ports"][0],
            json!({"name": "mesh-http", "containerPort": 15006, "protocol": "TCP"})
        );
        assert_eq!(operations[1]["path"], "/spec/volumes");
        assert_eq!(
            operations[1]["value"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            TOKEN_AUDIENCE
        );
        assert_eq!(operations[1]["value"][1]["configMap"]["name"], "trellis-agent-ca");
        assert_eq!(
            operations[2]["path"],
            "/metadata/annotations/sidecar.trellis.io~1status"
        );
    }

    #[test]
    fn opted_out_and_already_injected_pods_are_left_alone() {
        assert!(patch(&pod(json!({"sidecar.istio.io/inject": "false"})), &settings()).is_none());
        let mut injected = pod(json!({}));
        injected["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": CONTAINER}));
        assert!(patch(&injected, &settings()).is_none());
        let answer = review(
            &json!({"request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": pod(json!({"sidecar.trellis.io/inject": "false"}))}}),
            &settings(),
        );
        assert_eq!(answer["response"], json!({"uid": "u", "allowed": true}));
    }
}
