//! The management server's shared state and the translator task.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};
use trellis_model::{ClusterDiscovery, Snapshot};
use trellis_store::Store;
use trellis_translate::Translation;

use super::metrics::MgmtMetrics;
use super::pki::{MeshCa, RelaySecurity};

/// What the server knows about one cluster's agent.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub connected: bool,
    /// Version of the config last sent and last acknowledged.
    pub sent_version: String,
    pub acked_version: String,
    /// The agent's reason for rejecting the last config, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nack: Option<String>,
    pub workloads: usize,
    pub east_west_gateway: Option<String>,
    /// Seconds since the Unix epoch of the last connect or disconnect.
    pub since: u64,
    /// Validity (not before, not after; Unix seconds) of the client certificate the agent last
    /// connected with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_validity: Option<(u64, u64)>,
    /// Validity of the cluster's mesh intermediate CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediate_validity: Option<(u64, u64)>,
    /// Delivery state of the cluster's proxies, as its agent last reported it.
    pub proxies: Vec<trellis_model::ProxyState>,
    /// Where the agent's registration API listens, as it said when it connected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub registry_address: String,
}

pub struct Mgmt {
    pub store: Arc<dyn Store>,
    discovery: Mutex<BTreeMap<String, ClusterDiscovery>>,
    translation: watch::Sender<Arc<Translation>>,
    agents: Mutex<BTreeMap<String, AgentStatus>>,
    changed: Notify,
    pub metrics: MgmtMetrics,
    pub relay: RelaySecurity,
    pub mesh: MeshCa,
    /// Names of deregistered clusters, so their open relay streams end at once.
    pub kicks: tokio::sync::broadcast::Sender<String>,
    /// Lifetime of registration tokens when a request names none.
    pub token_ttl: Duration,
    /// Who may use the API: credentials, audit retention, the write lock.
    pub api: super::api_access::ApiAccess,
}

impl Mgmt {
    /// Loads the persisted discovery too: after a restart the first translation already covers
    /// every cluster, so no agent is sent a mesh with the other clusters missing.
    pub fn load(
        store: Arc<dyn Store>,
        metrics: MgmtMetrics,
        relay: RelaySecurity,
        mesh: MeshCa,
        token_ttl: Duration,
        api: super::api_access::ApiAccess,
    ) -> anyhow::Result<Arc<Self>> {
        let discovery = store
            .discoveries()?
            .into_iter()
            .map(|d| (d.cluster.clone(), d))
            .collect();
        let mgmt = Arc::new(Mgmt {
            store,
            discovery: Mutex::new(discovery),
            translation: watch::Sender::new(Arc::new(Translation::default())),
            agents: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            metrics,
            relay,
            mesh,
            kicks: tokio::sync::broadcast::Sender::new(16),
            token_ttl,
            api,
        });
        mgmt.retranslate()?;
        Ok(mgmt)
    }

    /// Wakes the translator; many calls in a burst cost one translation.
    pub fn config_changed(&self) {
        self.changed.notify_one();
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Translation>> {
        self.translation.subscribe()
    }

    pub fn translation(&self) -> Arc<Translation> {
        self.translation.borrow().clone()
    }

    /// Records an agent's discovery; persists it and retranslates only when it changed.
    pub fn report_discovery(&self, mut discovery: ClusterDiscovery) -> anyhow::Result<()> {
        discovery.normalize();
        {
            let mut all = self.discovery.lock().expect("discovery lock");
            if all.get(&discovery.cluster) == Some(&discovery) {
                return Ok(());
            }
            self.store.put_discovery(&discovery)?;
            self.update_agent(&discovery.cluster, |a| {
                a.workloads = discovery.workloads.len();
                a.east_west_gateway = discovery
                    .east_west_gateway
                    .as_ref()
                    .map(|g| format!("{}:{}", g.host, g.port));
            });
            all.insert(discovery.cluster.clone(), discovery);
        }
        self.config_changed();
        Ok(())
    }

    /// Forgets a cluster's discovery (its workloads leave every other cluster's config).
    pub fn forget_cluster(&self, cluster: &str) -> anyhow::Result<()> {
        self.discovery.lock().expect("discovery lock").remove(cluster);
        self.store.delete_discovery(cluster)?;
        self.agents.lock().expect("agents lock").remove(cluster);
        self.config_changed();
        Ok(())
    }

    /// True when a KubernetesCluster of that name exists, in any namespace.
    pub fn is_registered(&self, cluster: &str) -> anyhow::Result<bool> {
        Ok(self
            .store
            .list()?
            .iter()
            .any(|r| r.kind() == trellis_api::Kind::KubernetesCluster && r.metadata.name == cluster))
    }

    pub fn update_agent(&self, cluster: &str, change: impl FnOnce(&mut AgentStatus)) {
        let mut agents = self.agents.lock().expect("agents lock");
        change(agents.entry(cluster.to_string()).or_default());
    }

    pub fn agents(&self) -> BTreeMap<String, AgentStatus> {
        let mut agents = self.agents.lock().expect("agents lock").clone();
        for (cluster, discovery) in self.discovery.lock().expect("discovery lock").iter() {
            let agent = agents.entry(cluster.clone()).or_default();
            agent.workloads = discovery.workloads.len();
            agent.east_west_gateway = discovery
                .east_west_gateway
                .as_ref()
                .map(|g| format!("{}:{}", g.host, g.port));
        }
        agents
    }

    fn retranslate(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let resources = self.store.list()?;
        let discovery = self.discovery.lock().expect("discovery lock").clone();
        let snapshot = Snapshot::new(resources, discovery).with_trust_domain(&self.mesh.trust_domain);
        let translation = trellis_translate::translate(&snapshot);
        self.metrics
            .translation_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.translations_total.inc();
        self.translation.send_if_modified(|current| {
            if **current == translation {
                return false;
            }
            *current = Arc::new(translation);
            true
        });
        Ok(())
    }
}

/// Retranslates after every change, coalescing bursts.
pub async fn translate_loop(mgmt: Arc<Mgmt>) {
    loop {
        mgmt.changed.notified().await;
        // Let a burst of discovery reports and applies land before translating once.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let span = tracing::info_span!("translate");
        let _enter = span.enter();
        if let Err(error) = mgmt.retranslate() {
            tracing::error!(%error, "translation failed; agents keep their last config");
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
