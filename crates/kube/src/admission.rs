//! The management server's validating admission webhook: the API server asks before it stores a
//! Gloo resource, and Trellis's own parser answers, so `kubectl apply` of a typo is refused with
//! the same message and field path as `trellis apply`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use trellis_api::Kind;

use crate::sync::to_resource_document;

/// The AdmissionReview response to `review` (admission.k8s.io/v1).
pub fn review(review: &Value) -> Value {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let verdict = match request["operation"].as_str() {
        Some("CREATE" | "UPDATE") => check(request),
        // Deletes and connects carry nothing to parse.
        _ => Ok(()),
    };
    let response = match verdict {
        Ok(()) => json!({"uid": uid, "allowed": true}),
        Err(message) => json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 422, "reason": "Invalid", "message": message},
        }),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The ValidatingWebhookConfiguration that sends every create and update of a Gloo resource to
/// the management server at `url` (its API's `/api/v1/admission/validate`), whose certificate
/// chains to `ca_pem`. The API server authenticates with a token its admission configuration
/// names (a Trellis API token with `create` on `trellis.io/admissionreviews`).
pub fn validating_webhook_configuration(url: &str, ca_pem: &str) -> Value {
    let mut groups: Vec<&str> = crate::crds::gloo_kinds().map(|k| k.group()).collect();
    groups.sort();
    groups.dedup();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "trellis-gloo-resources"},
        "webhooks": [{
            "name": "validate.gloo-resources.trellis.io",
            "clientConfig": {"url": url, "caBundle": BASE64.encode(ca_pem)},
            "rules": [{
                "apiGroups": groups,
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["*"],
                "scope": "Namespaced",
            }],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    })
}

fn check(request: &Value) -> Result<(), String> {
    let kind_name = request["kind"]["kind"].as_str().unwrap_or_default();
    let kind = Kind::parse_loose(kind_name)
        .filter(|k| k.group().ends_with("gloo.solo.io"))
        .ok_or_else(|| format!("Trellis does not serve the kind {kind_name}"))?;
    let object = &request["object"];
    let (source, document) = to_resource_document(
        kind,
        object["metadata"]["name"].as_str().unwrap_or_default(),
        request["namespace"].as_str().unwrap_or_default(),
        &object["metadata"]["labels"],
        object["spec"].clone(),
    );
    trellis_api::parse_one(&source, &document.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(spec: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1",
            "kind": {"group": "networking.gloo.solo.io", "version": "v2", "kind": "VirtualDestination"},
            "operation": "CREATE",
            "namespace": "demo",
            "object": {"apiVersion": "networking.gloo.solo.io/v2", "kind": "VirtualDestination",
                       "metadata": {"name": "vd", "namespace": "demo"}, "spec": spec},
        }})
    }

    #[test]
    fn a_valid_resource_is_allowed_and_a_typo_refused_with_its_field() {
        let good = review(&request(json!({"hosts": ["a.mesh"], "ports": [{"number": 80}]})));
        assert_eq!(good["response"], json!({"uid": "u-1", "allowed": true}));
        let bad = review(&request(json!({"hostz": ["a.mesh"]})));
        assert_eq!(bad["response"]["allowed"], false);
        assert_eq!(bad["response"]["uid"], "u-1");
        let message = bad["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("hostz") && message.contains("VirtualDestination/demo/vd"),
            "{message}"
        );
    }
}
