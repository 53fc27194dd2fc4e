//! The management server's shared state: the store, the latest translation, what each agent
//! reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use trellis_model::ClusterDiscovery;
use trellis_store::Store;

use super::metrics::MgmtMetrics;
use super::pki::{MeshCa, RelaySecurity};
use super::translator::{Published, Translator};

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
    /// Why the relay stream last failed (a delivery refused, a broken stream), until the
    /// agent connects again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Where the agent's registration API listens, as it said when it connected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub registry_address: String,
}

pub struct Mgmt {
    pub store: Arc<dyn Store>,
    /// The latest translation; the translator thread publishes, relay streams and the API read.
    published: watch::Sender<Arc<Published>>,
    /// Hash of each cluster's last stored discovery: a report that changes nothing (an agent
    /// reconnecting) is neither stored nor translated.
    discovery_hashes: Mutex<BTreeMap<String, u64>>,
    agents: Mutex<BTreeMap<String, AgentStatus>>,
    /// Tells the translator thread to stop.
    stopping: AtomicBool,
    /// The stored resources as of a store revision: API calls authorize against them, and most
    /// calls come between writes.
    stored: Mutex<Option<(u64, Arc<Vec<trellis_api::Resource>>)>>,
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
    /// Translates what the store holds (discovery included) before anything is served: after a
    /// restart the first config an agent gets already covers every cluster, so no agent is sent
    /// a mesh with the other clusters missing. Then `start_translator` follows the store.
    pub fn load(
        store: Arc<dyn Store>,
        metrics: MgmtMetrics,
        relay: RelaySecurity,
        mesh: MeshCa,
        token_ttl: Duration,
        api: super::api_access::ApiAccess,
    ) -> anyhow::Result<(Arc<Self>, Translator)> {
        let (translator, first) = Translator::new(store.clone(), &mesh.trust_domain, metrics.clone())?;
        let mut agents = BTreeMap::new();
        let mut discovery_hashes = BTreeMap::new();
        for discovery in store.discoveries()? {
            discovery_hashes.insert(discovery.cluster.clone(), discovery_hash(&discovery));
            agents.insert(
                discovery.cluster.clone(),
                AgentStatus::default().with_discovery(&discovery),
            );
        }
        let mgmt = Arc::new(Mgmt {
            store,
            published: watch::Sender::new(Arc::new(first)),
            discovery_hashes: Mutex::new(discovery_hashes),
            agents: Mutex::new(agents),
            stopping: AtomicBool::new(false),
            stored: Mutex::new(None),
            metrics,
            relay,
            mesh,
            kicks: tokio::sync::broadcast::Sender::new(16),
            token_ttl,
            api,
        });
        Ok((mgmt, translator))
    }

    /// Runs the translator on its own thread until `stop_translator`.
    pub fn start_translator(self: &Arc<Self>, translator: Translator) -> std::thread::JoinHandle<()> {
        let mgmt = self.clone();
        std::thread::Builder::new()
            .name("translator".to_string())
            .spawn(move || translator.run(&mgmt.published, &mgmt.stopping))
            .expect("spawn the translator thread")
    }

    pub fn stop_translator(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.published.subscribe()
    }

    pub fn published(&self) -> Arc<Published> {
        self.published.borrow().clone()
    }

    /// Records an agent's discovery in the store (whose feed drives translation), unless it is
    /// the same as the last one.
    pub fn report_discovery(&self, mut discovery: ClusterDiscovery) -> anyhow::Result<()> {
        discovery.normalize();
        let hash = discovery_hash(&discovery);
        let mut hashes = self.discovery_hashes.lock().expect("discovery lock");
        if hashes.get(&discovery.cluster) == Some(&hash) {
            return Ok(());
        }
        self.store.put_discovery(&discovery)?;
        hashes.insert(discovery.cluster.clone(), hash);
        self.update_agent(&discovery.cluster, |a| {
            *a = std::mem::take(a).with_discovery(&discovery)
        });
        Ok(())
    }

    /// Forgets a cluster's discovery (its workloads leave every other cluster's config).
    pub fn forget_cluster(&self, cluster: &str) -> anyhow::Result<()> {
        self.discovery_hashes.lock().expect("discovery lock").remove(cluster);
        self.store.delete_discovery(cluster)?;
        self.agents.lock().expect("agents lock").remove(cluster);
        Ok(())
    }

    /// Every stored resource, read from the store only when it changed since the last read.
    pub fn stored(&self) -> trellis_store::Result<Arc<Vec<trellis_api::Resource>>> {
        // The revision before the read: a write landing meanwhile makes the next call read again.
        let revision = self.store.revision();
        if let Some((cached, resources)) = &*self.stored.lock().expect("stored lock")
            && *cached == revision
        {
            return Ok(resources.clone());
        }
        let resources = Arc::new(self.store.list()?);
        *self.stored.lock().expect("stored lock") = Some((revision, resources.clone()));
        Ok(resources)
    }

    /// True when a KubernetesCluster of that name exists, in any namespace.
    pub fn is_registered(&self, cluster: &str) -> anyhow::Result<bool> {
        Ok(self
            .stored()?
            .iter()
            .any(|r| r.kind() == trellis_api::Kind::KubernetesCluster && r.metadata.name == cluster))
    }

    pub fn update_agent(&self, cluster: &str, change: impl FnOnce(&mut AgentStatus)) {
        let mut agents = self.agents.lock().expect("agents lock");
        change(agents.entry(cluster.to_string()).or_default());
    }

    pub fn agents(&self) -> BTreeMap<String, AgentStatus> {
        self.agents.lock().expect("agents lock").clone()
    }
}

impl AgentStatus {
    fn with_discovery(mut self, discovery: &ClusterDiscovery) -> Self {
        self.workloads = discovery.workloads.len();
        self.east_west_gateway = discovery
            .east_west_gateway
            .as_ref()
            .map(|g| format!("{}:{}", g.host, g.port));
        self
    }
}

fn discovery_hash(discovery: &ClusterDiscovery) -> u64 {
    trellis_base::stable_hash(&serde_json::to_vec(discovery).expect("discovery serializes"))
}
