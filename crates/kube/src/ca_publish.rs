//! The agent's CA, published as ConfigMap `trellis-agent-ca` (key `ca.crt`) in every namespace,
//! as Istio publishes `istio-ca-root-cert`: injected sidecars mount it to check the agent's TLS
//! registration port. A namespace created later gets it; a copy edited or deleted is put back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::discovery::reflect;

/// The ConfigMap's name and key, which the injector mounts.
pub const CONFIG_MAP: &str = "trellis-agent-ca";
pub const KEY: &str = "ca.crt";
const FIELD_MANAGER: &str = "trellis-agent";
/// How often copies that could not be written (RBAC, a busy API server) are tried again.
const RETRY: Duration = Duration::from_secs(30);

/// The ConfigMap as the agent applies it.
pub fn config_map(namespace: &str, ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CONFIG_MAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                FIELD_MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_string(), ca_pem.to_string())])),
        ..Default::default()
    }
}

/// The namespaces whose copy is missing or differs from `ca_pem` (terminating ones aside).
/// Pure, so it is tested without a cluster.
pub fn stale(namespaces: &[Arc<Namespace>], copies: &[Arc<ConfigMap>], ca_pem: &str) -> Vec<String> {
    namespaces
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| n.metadata.name.clone())
        .filter(|namespace| {
            !copies.iter().any(|c| {
                c.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && c.data.as_ref().and_then(|d| d.get(KEY)).map(String::as_str) == Some(ca_pem)
            })
        })
        .collect()
}

/// Keeps every namespace's copy current until the process ends.
pub async fn run(client: Client, ca_pem: String) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let (namespaces, _ns_task) =
        reflect::<Namespace>(Api::all(client.clone()), watcher::Config::default(), changed.clone());
    let (copies, _copy_task) = reflect::<ConfigMap>(
        Api::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
        changed.clone(),
    );
    let _ = (namespaces.wait_until_ready().await, copies.wait_until_ready().await);
    loop {
        for namespace in stale(&namespaces.state(), &copies.state(), &ca_pem) {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api
                .patch(CONFIG_MAP, &params, &Patch::Apply(config_map(&namespace, &ca_pem)))
                .await
            {
                Ok(_) => tracing::info!(%namespace, "published the agent's CA (ConfigMap {CONFIG_MAP})"),
                Err(error) => {
                    tracing::warn!(%namespace, %error, "cannot publish the agent's CA (ConfigMap {CONFIG_MAP}); retrying")
                }
            }
        }
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn namespace(name: &str, terminating: bool) -> Arc<Namespace> {
        let mut value = json!({"metadata": {"name": name}});
        if terminating {
            value["metadata"]["deletionTimestamp"] = json!("2026-12-05T00:00:00Z");
        }
        Arc::new(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn missing_and_edited_copies_are_stale_terminating_namespaces_are_left() {
        let namespaces = [
            namespace("current", false),
            namespace("edited", false),
            namespace("new", false),
            namespace("going", true),
        ];
        let copies = [
            Arc::new(config_map("current", "CA")),
            Arc::new(config_map("edited", "ANOTHER CA")),
        ];
        assert_eq!(
            stale(&namespaces, &copies, "CA"),
            vec!["edited".to_string(), "new".to_string()]
        );
    }
}
