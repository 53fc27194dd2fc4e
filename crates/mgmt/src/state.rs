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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentStatus {
    pub connected: bool,
    /// The agent's release, as it said when it connected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// Version of the config last sent and last acknowledged.
    pub sent_version: String,
    pub acked_version: String,
    /// The agent's reason for rejecting the last config, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nack: Option<String>,
    pub workloads: usize,
    pub east_west_gateway: Option<String>,
    /// Where the agent says the cluster runs (FailoverPolicy localities).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<trellis_model::Locality>,
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

/// This replica's part among several: whether it leads, and the leader's translation it
/// starts with when it does not.
pub struct ReplicaRole {
    pub leading: watch::Receiver<bool>,
    pub leaders_translation: Option<Published>,
    /// This replica's name, where there are several.
    pub name: Option<String>,
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
    /// Operators' requests for a proxy's live config, on their way to its agent.
    pub proxy_queries: super::proxy_config::ProxyQueries,
    /// The traces of applies not yet translated.
    pub trace_origins: Arc<super::trace_origins::TraceOrigins>,
    /// Whether this replica leads: only the leader translates and signs.
    pub leading: watch::Receiver<bool>,
    /// This replica's name, where there are several.
    pub replica: Option<String>,
    /// Agents connected to other replicas, as they last recorded them: cluster -> (replica,
    /// status).
    pub elsewhere: Mutex<BTreeMap<String, (String, AgentStatus)>>,
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
        role: ReplicaRole,
    ) -> anyhow::Result<(Arc<Self>, Translator)> {
        let ReplicaRole {
            leading,
            leaders_translation,
            name: replica,
        } = role;
        // A replica that does not lead serves the leader's translation from the start.
        let (translator, first) = match leaders_translation {
            Some(published) => (
                Translator::following(store.clone(), &mesh.trust_domain, metrics.clone())?,
                published,
            ),
            None => Translator::new(store.clone(), &mesh.trust_domain, metrics.clone())?,
        };
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
            proxy_queries: Default::default(),
            trace_origins: Default::default(),
            leading,
            replica,
            elsewhere: Mutex::new(BTreeMap::new()),
        });
        Ok((mgmt, translator))
    }

    /// Runs the translator on its own thread until `stop_translator`.
    /// Runs the translator on its own thread; it translates while `leading`.
    pub fn start_translator(
        self: &Arc<Self>,
        translator: Translator,
        leading: tokio::sync::watch::Receiver<bool>,
    ) -> std::thread::JoinHandle<()> {
        let mgmt = self.clone();
        std::thread::Builder::new()
            .name("translator".to_string())
            .spawn(move || translator.run(&mgmt.published, &mgmt.stopping, &mgmt.trace_origins, &leading))
            .expect("spawn the translator thread")
    }

    /// Whether the server is stopping (threads of its own end then).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Serves a translation made by the leading replica.
    pub fn publish_followed(&self, published: Published) {
        self.published.send_replace(Arc::new(published));
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

    /// Takes a change of some workloads of a cluster whose discovery was reported whole before.
    pub fn report_discovery_patch(&self, patch: &trellis_model::DiscoveryPatch) -> anyhow::Result<()> {
        if patch.is_empty() {
            return Ok(());
        }
        let mut hashes = self.discovery_hashes.lock().expect("discovery lock");
        self.store.patch_discovery(patch)?;
        // What is stored is no longer what the last whole report hashed to.
        hashes.remove(&patch.cluster);
        self.update_agent(&patch.cluster, |a| a.workloads = patch.workloads);
        Ok(())
    }

    /// Forgets a cluster's discovery (its workloads leave every other cluster's config).
    pub fn forget_cluster(&self, cluster: &str) -> anyhow::Result<()> {
        self.discovery_hashes.lock().expect("discovery lock").remove(cluster);
        self.store.delete_discovery(cluster)?;
        self.agents.lock().expect("agents lock").remove(cluster);
        Ok(())
    }

    /// Every stored resource in key order, read whole from the store once and then kept current
    /// from its change feed: a change costs what it changes, not a read of every resource.
    pub fn stored(&self) -> trellis_store::Result<Arc<Vec<trellis_api::Resource>>> {
        // The revision before the read: a write landing meanwhile makes the next call read again.
        let revision = self.store.revision();
        let mut cache = self.stored.lock().expect("stored lock");
        if let Some((cached, resources)) = &mut *cache {
            if *cached == revision {
                return Ok(resources.clone());
            }
            if let trellis_store::Watch::Changes { revision, changes } = self.store.watch(*cached, Duration::ZERO) {
                // Copies the list only while a request still reads the one before.
                let list = Arc::make_mut(resources);
                for change in changes {
                    if let trellis_store::Change::Resource { key, resource } = change {
                        put_in_key_order(list, &key, resource.map(|r| *r));
                    }
                }
                *cached = revision;
                return Ok(resources.clone());
            }
        }
        let resources = Arc::new(self.store.list()?);
        *cache = Some((revision, resources.clone()));
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
        self.locality = discovery.locality.clone();
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

/// Replaces, inserts or (with `None`) removes the resource with `key` in a list sorted as the
/// store lists it: by the key's text.
fn put_in_key_order(
    list: &mut Vec<trellis_api::Resource>,
    key: &trellis_api::ResourceKey,
    resource: Option<trellis_api::Resource>,
) {
    match (position_in_key_order(list, key), resource) {
        (Ok(at), Some(resource)) => list[at] = resource,
        (Ok(at), None) => {
            list.remove(at);
        }
        (Err(at), Some(resource)) => list.insert(at, resource),
        (Err(_), None) => {}
    }
}

/// Where the resource with `key` is, or would go, in a list sorted as the store lists it.
fn position_in_key_order(list: &[trellis_api::Resource], key: &trellis_api::ResourceKey) -> Result<usize, usize> {
    let name = key.to_string();
    list.binary_search_by(|r| r.key().to_string().cmp(&name))
}

/// The resource with `key` in a list from `Mgmt::stored`, found without a scan.
pub fn find_stored<'a>(
    list: &'a [trellis_api::Resource],
    key: &trellis_api::ResourceKey,
) -> Option<&'a trellis_api::Resource> {
    position_in_key_order(list, key).ok().map(|at| &list[at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_list_kept_from_changes_is_the_list_the_store_would_give() {
        let resource = |kind: &str, name: &str| {
            let ports = if kind == "VirtualDestination" {
                ", ports: [{number: 80}]"
            } else {
                ""
            };
            let yaml = format!(
                "apiVersion: networking.gloo.solo.io/v2\nkind: {kind}\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{hosts: [{name}.example]{ports}}}\n"
            );
            trellis_api::parse_documents("r.yaml", &yaml).unwrap().remove(0)
        };
        let path = std::env::temp_dir().join(format!("trellis-stored-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = trellis_store::RedbStore::open(&path).unwrap();
        let mut kept: Vec<trellis_api::Resource> = Vec::new();
        let names = ["b", "a", "c", "a-b", "ab", "b"];
        for (i, name) in names.iter().enumerate() {
            let kind = if i % 2 == 0 { "RouteTable" } else { "VirtualDestination" };
            let r = resource(kind, name);
            put_in_key_order(&mut kept, &r.key(), Some(r.clone()));
            store.apply(vec![r]).unwrap();
        }
        let gone = resource("VirtualDestination", "a");
        put_in_key_order(&mut kept, &gone.key(), None);
        store.delete(&[gone.key()]).unwrap();
        let listed = store.list().unwrap();
        let names = |list: &[trellis_api::Resource]| list.iter().map(|r| r.key().to_string()).collect::<Vec<_>>();
        assert_eq!(names(&kept), names(&listed));
        assert!(find_stored(&kept, &resource("RouteTable", "c").key()).is_some());
        assert!(find_stored(&kept, &gone.key()).is_none());
        let _ = std::fs::remove_file(&path);
    }
}
