//! The Gloo kinds as CustomResourceDefinitions, so that `kubectl apply` of a Gloo user's YAML
//! works against the management cluster. Each `spec` schema is derived from the types Trellis's
//! parser reads ([`crate::crd_schema`]): the API server checks the type of every field Trellis
//! knows, `kubectl explain` describes them, and unknown fields are kept for the management
//! server's validating webhook, which checks everything with the same messages as `trellis
//! apply`.

use serde_json::{Value, json};
use trellis_api::Kind;

/// Kinds Trellis reads from Gloo's API groups (not core Kubernetes kinds such as Secret).
pub fn gloo_kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL
        .into_iter()
        .filter(|kind| kind.group().ends_with("gloo.solo.io"))
}

/// One kind's CustomResourceDefinition (apiextensions.k8s.io/v1).
pub fn custom_resource_definition(kind: Kind) -> Value {
    let (group, version) = kind.api_version().rsplit_once('/').expect("Gloo kinds have a group");
    let mut names = json!({
        "kind": kind.as_str(),
        "listKind": format!("{}List", kind.as_str()),
        "plural": kind.plural(),
        "singular": kind.as_str().to_ascii_lowercase(),
        "categories": ["gloo-mesh", "trellis"],
    });
    if !kind.short_name().is_empty() {
        names["shortNames"] = json!([kind.short_name()]);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{group}", kind.plural()),
            "labels": {"app.kubernetes.io/part-of": "trellis"},
        },
        "spec": {
            "group": group,
            "names": names,
            "scope": "Namespaced",
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "State", "type": "string", "jsonPath": ".status.state"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": crate::crd_schema::structural(&trellis_api::spec_schema(kind)),
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    })
}

pub fn custom_resource_definitions() -> Vec<Value> {
    gloo_kinds().map(custom_resource_definition).collect()
}

/// Every CRD as one multi-document YAML stream, for `kubectl apply -f -`.
pub fn custom_resource_definitions_yaml() -> String {
    custom_resource_definitions()
        .iter()
        .map(|crd| yaml_serde::to_string(crd).expect("CRDs serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gloo_kind_has_a_namespaced_crd_with_a_status_subresource() {
        let crds = custom_resource_definitions();
        assert!(crds.len() >= 40, "{} CRDs", crds.len());
        let route_tables = crds
            .iter()
            .find(|c| c["metadata"]["name"] == "routetables.networking.gloo.solo.io")
            .expect("RouteTable");
        assert_eq!(route_tables["spec"]["names"]["shortNames"], json!(["rt"]));
        assert_eq!(route_tables["spec"]["versions"][0]["name"], "v2");
        assert!(
            crds.iter()
                .all(|c| c["spec"]["versions"][0]["subresources"]["status"].is_object())
        );
        assert!(crds.iter().all(|c| c["spec"]["scope"] == "Namespaced"));
        assert!(!crds.iter().any(|c| c["spec"]["names"]["kind"] == "Secret"));
        let access = crds
            .iter()
            .find(|c| c["spec"]["names"]["kind"] == "AccessPolicy")
            .unwrap();
        assert_eq!(
            access["metadata"]["name"],
            "accesspolicies.security.policy.gloo.solo.io"
        );
        assert!(custom_resource_definitions_yaml().contains("kind: CustomResourceDefinition"));
    }
}
