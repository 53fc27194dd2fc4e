//! The management server on a Kubernetes management cluster: Gloo resources applied there are
//! mirrored into the store, and their statuses written back; so are the Secrets beside them
//! (trellis-kube does the work).

use std::sync::Arc;

use trellis_api::ResourceKey;
use trellis_kube::sync::StatusSource;

use crate::Mgmt;
use crate::config::KubernetesSource;

struct Statuses(Arc<Mgmt>);

impl StatusSource for Statuses {
    fn revision(&self) -> u64 {
        self.0.published().revision
    }

    fn status(&self, key: &ResourceKey) -> Option<serde_json::Value> {
        let published = self.0.published();
        let status = published.statuses.get(&key.to_string())?;
        Some(serde_json::to_value(status).expect("statuses serialize"))
    }
}

/// Starts the sync; only while `leading` does this replica write statuses.
pub async fn start(
    source: &KubernetesSource,
    mgmt: Arc<Mgmt>,
    leading: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = trellis_kube::sync::client(source.kubeconfig()).await?;
    tracing::info!("watching the Gloo resources of the Kubernetes cluster");
    tokio::spawn(trellis_kube::secrets::run(
        client.clone(),
        mgmt.store.clone(),
        leading.clone(),
    ));
    tokio::spawn(trellis_kube::sync::run(
        client,
        mgmt.store.clone(),
        Arc::new(Statuses(mgmt)),
        leading,
    ));
    Ok(())
}
