//! The Gloo CRDs' schemas on a real kube-apiserver, with no webhook: every Gloo document of the
//! conformance examples and of `examples/` that Trellis's parser accepts is admitted by the API
//! server as its author wrote it (the schemas are never stricter than Trellis); a value of the
//! wrong type is refused by the API server itself, with the field's path; `kubectl explain`
//! describes Gloo's fields; a misspelt field is kept for the webhook, not silently pruned.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use trellis_api::Kind;
use trellis_testkit::etcd::Etcd;
use trellis_testkit::kube::{KubeApiServer, kubectl};

fn yaml_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            into.push(path);
        }
    }
}

/// Where the API server keeps objects of `document`'s kind, if it is a Gloo kind.
fn collection(document: &Value) -> Option<String> {
    let kind_name = document["kind"].as_str()?;
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == kind_name)?;
    if !kind.group().ends_with("gloo.solo.io") {
        return None;
    }
    let namespace = document["metadata"]["namespace"].as_str().unwrap_or("default");
    Some(format!(
        "/apis/{}/namespaces/{namespace}/{}",
        kind.api_version(),
        kind.plural()
    ))
}

async fn post(kube: &KubeApiServer, path: &str, object: &Value, query: &str) -> trellis_support::httpc::Response {
    kube.client()
        .request(
            "POST",
            &format!("{path}?{query}"),
            Some(("application/json", serde_json::to_vec(object).unwrap())),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_checks_gloo_fields_as_trellis_does() {
    let dir = std::env::temp_dir().join(format!("trellis-kube-schemas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let etcd = Etcd::start(&dir.join("etcd")).await;
    let kube = KubeApiServer::start(&dir.join("kube"), &etcd).await;
    kube.install_crds().await;

    // Every Gloo document Trellis accepts, as written, admitted by the API server.
    let mut files = Vec::new();
    yaml_files(&trellis_gloo_conformance::examples_dir(), &mut files);
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"),
        &mut files,
    );
    let mut namespaces = BTreeSet::new();
    let (mut admitted, mut refused) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (index, piece) in text.split("\n---").enumerate() {
            let Ok(document) = yaml_serde::from_str::<Value>(piece) else {
                continue;
            };
            let Some(path) = collection(&document) else {
                continue;
            };
            if trellis_api::parse_one(&file.display().to_string(), piece).is_err() {
                continue;
            }
            let namespace = document["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            if namespaces.insert(namespace.clone()) && namespace != "default" {
                let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
                let _ = kube.create(&object, false).await;
            }
            let answer = post(&kube, &path, &document, "dryRun=All&fieldValidation=Strict").await;
            if answer.status == 201 || answer.status == 200 {
                admitted += 1;
            } else {
                refused.push(format!(
                    "{} #{index}: {} {}",
                    file.display(),
                    answer.status,
                    answer.body
                ));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "Trellis accepts what the API server refuses:\n{}",
        refused.join("\n")
    );
    assert!(admitted >= 60, "only {admitted} Gloo documents were tried");
    println!("{admitted} Gloo documents admitted as written");

    // A wrong type, and a missing required field, are refused by the API server itself,
    // naming the field.
    let virtual_destination = |name: &str, spec: Value| {
        json!({
            "apiVersion": "networking.gloo.solo.io/v2",
            "kind": "VirtualDestination",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        })
    };
    let path = collection(&virtual_destination("any", json!({}))).unwrap();
    for (name, port) in [
        ("wrong", json!({"number": "eighty", "protocol": "HTTP"})),
        ("missing", json!({"protocol": "HTTP"})),
    ] {
        let object = virtual_destination(name, json!({"hosts": ["a.mesh"], "ports": [port]}));
        let answer = post(&kube, &path, &object, "fieldValidation=Strict").await;
        assert_eq!(answer.status, 422, "{name}: {}", answer.body);
        assert!(answer.body.contains("spec.ports[0].number"), "{name}: {}", answer.body);
    }

    // A misspelt field is kept (the webhook refuses it with Trellis's message), not pruned.
    let typo = virtual_destination("typo", json!({"hostz": ["a.mesh"], "ports": [{"number": 80}]}));
    let answer = post(&kube, &path, &typo, "").await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let stored = kube.client().get_json(&format!("{path}/typo")).await.unwrap();
    assert_eq!(stored["spec"]["hostz"], json!(["a.mesh"]), "{stored}");

    // kubectl explain describes Gloo's fields.
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let (ok, out) = kubectl(&kubeconfig, &["explain", "virtualdestinations.spec.ports"], None);
    assert!(ok, "{out}");
    for field in ["number", "protocol", "targetPort"] {
        assert!(out.contains(field), "explain shows {field}: {out}");
    }
    let (ok, out) = kubectl(&kubeconfig, &["explain", "routetables.spec.http.forwardTo"], None);
    assert!(ok && out.contains("destinations"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
