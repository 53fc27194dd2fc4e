//! Kubernetes Secrets beside the Gloo resources that use them. A RootTrustPolicy's `secretRef`,
//! an ExtAuthPolicy's API keys and OIDC client secret, a gateway's TLS certificate: a Gloo user
//! creates these with kubectl in the management cluster. The Secrets of the namespaces that hold
//! Gloo resources are mirrored into the store, and leave it when deleted. The kinds of Secret no
//! Gloo resource reads (service-account tokens, registry credentials, Helm releases, bootstrap
//! tokens) stay where they are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use trellis_api::{Kind, Resource, ResourceKey};
use trellis_store::Store;

use crate::sync::{SOURCE_ANNOTATION, from_kubernetes};

/// Secret types that hold nothing a Gloo resource reads, and credentials of other systems;
/// and the management plane's own store (`trellis.io/store`: its log would be written into
/// itself, a commit for each commit).
const NOT_MIRRORED: [&str; 6] = [
    "kubernetes.io/service-account-token",
    "kubernetes.io/dockercfg",
    "kubernetes.io/dockerconfigjson",
    "bootstrap.kubernetes.io/token",
    "helm.sh/release.v1",
    crate::store::SECRET_TYPE,
];

/// How often the mirror is checked against the store when nothing in Kubernetes changed (a
/// Gloo resource applied to a new namespace brings that namespace's Secrets in).
const EVERY: Duration = Duration::from_secs(2);

/// The store resource for a Kubernetes Secret, marked as mirrored.
pub fn to_resource(secret: &Secret) -> Result<Resource, String> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let source = format!("kubernetes Secret/{namespace}/{name}");
    let mut document = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": secret.metadata.labels.clone().unwrap_or_default(),
            "annotations": {SOURCE_ANNOTATION: "kubernetes"},
        },
        // ByteString serializes as base64, as `data` is written.
        "data": secret.data.clone().unwrap_or_default(),
    });
    if let Some(secret_type) = &secret.type_ {
        document["type"] = json!(secret_type);
    }
    trellis_api::parse_one(&source, &document.to_string()).map_err(|e| e.to_string())
}

/// The Secrets to mirror: those of `namespaces`, of a type a Gloo resource may read.
pub fn mirrored<'a>(secrets: &'a [Arc<Secret>], namespaces: &BTreeSet<String>) -> Vec<&'a Secret> {
    secrets
        .iter()
        .map(Arc::as_ref)
        .filter(|s| s.metadata.namespace.as_ref().is_some_and(|n| namespaces.contains(n)))
        .filter(|s| !s.type_.as_deref().is_some_and(|t| NOT_MIRRORED.contains(&t)))
        .collect()
}

/// The namespaces that hold Gloo resources.
fn gloo_namespaces(stored: &[Resource]) -> BTreeSet<String> {
    stored
        .iter()
        .filter(|r| r.kind().group().ends_with("gloo.solo.io"))
        .map(|r| r.metadata.namespace.clone())
        .collect()
}

/// What to write and delete so that the store mirrors `secrets` (pure).
pub fn reconcile(stored: &[Resource], secrets: &[Arc<Secret>]) -> (Vec<Resource>, Vec<ResourceKey>) {
    let namespaces = gloo_namespaces(stored);
    let current: BTreeMap<ResourceKey, &Resource> = stored
        .iter()
        .filter(|r| r.kind() == Kind::Secret)
        .map(|r| (r.key(), r))
        .collect();
    let mut wanted = BTreeSet::new();
    let mut writes = Vec::new();
    for secret in mirrored(secrets, &namespaces) {
        match to_resource(secret) {
            Ok(resource) => {
                let key = resource.key();
                let same = current
                    .get(&key)
                    .is_some_and(|held| held.spec == resource.spec && held.metadata.labels == resource.metadata.labels);
                // A Secret applied with `trellis apply` under the same name is the user's: kept.
                let theirs = current.get(&key).is_some_and(|held| !from_kubernetes(held));
                if !same && !theirs {
                    writes.push(resource);
                }
                wanted.insert(key);
            }
            Err(error) => tracing::warn!(%error, "a Kubernetes Secret cannot be mirrored"),
        }
    }
    let deletes = current
        .iter()
        .filter(|(key, held)| from_kubernetes(held) && !wanted.contains(*key))
        .map(|(key, _)| (*key).clone())
        .collect();
    (writes, deletes)
}

/// Mirrors the Secrets while `leading` (one replica writes them), until the process ends.
pub async fn run(client: Client, store: Arc<dyn Store>, leading: tokio::sync::watch::Receiver<bool>) {
    let changed = Arc::new(tokio::sync::Notify::new());
    // The store's own Secrets (a commit per write, presence every 2 s) are not even read.
    let others = watcher::Config::default().labels(&format!("!{}", crate::store::ROLE_LABEL));
    let (secrets, _task) = crate::discovery::reflect::<Secret>(Api::all(client), others, changed.clone());
    let _ = secrets.wait_until_ready().await;
    loop {
        if *leading.borrow() {
            let (reader, all) = (store.clone(), secrets.state());
            let result = tokio::task::spawn_blocking(move || -> trellis_store::Result<(usize, usize)> {
                let stored = reader.list()?;
                let (writes, deletes) = reconcile(&stored, &all);
                let counts = (writes.len(), deletes.len());
                if !writes.is_empty() {
                    reader.apply(writes)?;
                }
                if !deletes.is_empty() {
                    reader.delete(&deletes)?;
                }
                Ok(counts)
            })
            .await;
            match result {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((written, deleted))) => tracing::info!(written, deleted, "mirrored Kubernetes Secrets"),
                Ok(Err(error)) => tracing::warn!(%error, "cannot mirror Kubernetes Secrets"),
                Err(error) => tracing::warn!(%error, "cannot mirror Kubernetes Secrets"),
            }
        }
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(namespace: &str, name: &str, secret_type: &str) -> Arc<Secret> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": namespace},
                "type": secret_type,
                "data": {"api-key": "czNjcjN0"},
            }))
            .unwrap(),
        )
    }

    fn gloo_resource(namespace: &str) -> Resource {
        trellis_api::parse_one(
            "t.yaml",
            &format!(
                "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: vd, namespace: {namespace}}}\nspec: {{hosts: [a.mesh.internal], ports: [{{number: 80}}]}}\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn secrets_beside_gloo_resources_are_mirrored_and_others_are_not() {
        let stored = vec![gloo_resource("demo")];
        let secrets = [
            secret("demo", "api-keys", "extauth.solo.io/apikey"),
            secret("demo", "token", "kubernetes.io/service-account-token"),
            secret("demo", "trellis-store-000000000001", crate::store::SECRET_TYPE),
            secret("elsewhere", "private", "Opaque"),
        ];
        let (writes, deletes) = reconcile(&stored, &secrets);
        let keys: Vec<String> = writes.iter().map(|r| r.key().to_string()).collect();
        assert_eq!(keys, ["Secret/demo/api-keys"]);
        assert!(deletes.is_empty());
        assert!(from_kubernetes(&writes[0]));

        // Mirrored and unchanged: nothing to write; deleted in Kubernetes: deleted here.
        let mut stored = stored;
        stored.extend(writes);
        assert_eq!(reconcile(&stored, &secrets), (Vec::new(), Vec::new()));
        let (writes, deletes) = reconcile(&stored, &secrets[1..]);
        assert!(writes.is_empty());
        assert_eq!(deletes, [stored[1].key()]);
    }
}
