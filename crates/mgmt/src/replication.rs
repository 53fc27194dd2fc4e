//! The store the configuration chose, and, on etcd, this replica's part in the leader election.
//!
//! The leader translates and shares each translation through the store; every replica serves
//! the relay and the API with it (`translation_share`), and signs through transactional claims
//! in the store. The leader also does the upkeep no two replicas should do at once: it compacts
//! etcd's history, and writes the status of Kubernetes resources. It is elected by an etcd
//! lease, or by a Kubernetes Lease where the server watches a Kubernetes cluster; its store is
//! etcd, or the Kubernetes API server itself (`on_kubernetes`).

use std::sync::Arc;
use std::time::Duration;

use trellis_store::{PresenceShare, RedbStore, Store, TranslationShare};

use crate::config::{KubernetesSource, LeaderElection, MgmtConfig, StoreChoice};
use crate::metrics::MgmtMetrics;

/// How long a killed leader holds the lease before another replica takes over.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// How often the leader compacts etcd, and how many revisions of history it keeps: far more than
/// a replica's journal watch lags behind.
const COMPACT_EVERY: Duration = Duration::from_secs(300);
const HISTORY_KEPT: i64 = 100_000;
/// How often the leader looks whether the Kubernetes store's log is due for a snapshot.
const COMPACT_LOG_EVERY: Duration = Duration::from_secs(30);

pub struct Replication {
    pub store: Arc<dyn Store>,
    /// Whether this replica leads, as it changes (always true on the single-server store).
    pub leading: tokio::sync::watch::Receiver<bool>,
    /// Where the leader's translations are shared with the other replicas (replicated stores).
    pub share: Option<Arc<dyn TranslationShare>>,
    /// Where each replica records the agents connected to it (replicated stores).
    pub presence: Option<Arc<dyn PresenceShare>>,
    /// This replica's name (`--replica-name`), where there are several.
    pub name: Option<String>,
    election: Election,
}

enum Election {
    Single(tokio::sync::watch::Sender<bool>),
    Etcd(trellis_etcd::Leadership),
    Kubernetes(trellis_kube::lease::LeaseLeadership),
}

pub async fn open(config: &MgmtConfig, metrics: &MgmtMetrics) -> anyhow::Result<Replication> {
    match &config.store {
        StoreChoice::Redb => {
            metrics.leader.set(1);
            let store = RedbStore::open(&config.data_dir.join("store.redb"))?;
            let (single, leading) = tokio::sync::watch::channel(true);
            Ok(Replication {
                store: Arc::new(store),
                leading,
                share: None,
                presence: None,
                name: None,
                election: Election::Single(single),
            })
        }
        StoreChoice::Kubernetes { replica_name } => on_kubernetes(config, metrics, replica_name).await,
        StoreChoice::Etcd(settings) => {
            let client_config = settings.client_config()?;
            let store = tokio::task::spawn_blocking(move || trellis_etcd::EtcdStore::open(&client_config)).await??;
            let client = store.client();
            let election = match (&config.leader_election, &config.kubernetes) {
                (LeaderElection::Kubernetes { namespace }, Some(source)) => {
                    Election::Kubernetes(lease_leadership(source, namespace, &settings.replica_name).await?)
                }
                _ => Election::Etcd(trellis_etcd::Leadership::start(
                    client.clone(),
                    trellis_etcd::LeadershipConfig {
                        key: format!("{}leader", settings.prefix),
                        identity: settings.replica_name.clone(),
                        ttl: LEASE_TTL,
                    },
                )),
            };
            let leading = match &election {
                Election::Etcd(leadership) => leadership.subscribe(),
                Election::Kubernetes(leadership) => leadership.subscribe(),
                Election::Single(single) => single.subscribe(),
            };
            tokio::spawn(report_leadership(leading.clone(), metrics.clone()));
            tokio::spawn(compact_while_leading(leading.clone(), client));
            let store = Arc::new(store);
            Ok(Replication {
                store: store.clone(),
                leading,
                share: Some(store.clone()),
                presence: Some(store),
                name: Some(settings.replica_name.clone()),
                election,
            })
        }
    }
}

/// The Kubernetes Lease election of this replica.
async fn lease_leadership(
    source: &KubernetesSource,
    namespace: &str,
    replica_name: &str,
) -> anyhow::Result<trellis_kube::lease::LeaseLeadership> {
    let kube = trellis_kube::sync::client(source.kubeconfig()).await?;
    Ok(trellis_kube::lease::LeaseLeadership::start(
        kube,
        trellis_kube::lease::LeaseConfig {
            namespace: namespace.to_string(),
            name: "trellis-mgmt-leader".into(),
            identity: replica_name.to_string(),
            duration: LEASE_TTL,
        },
    ))
}

/// The store on the management cluster's API server, elected by a Lease in the same namespace.
/// The leader translates and shares each translation beside the log, signs, writes statuses and
/// compacts the log; every replica records its agents there.
async fn on_kubernetes(config: &MgmtConfig, metrics: &MgmtMetrics, replica_name: &str) -> anyhow::Result<Replication> {
    let (Some(source), LeaderElection::Kubernetes { namespace }) = (&config.kubernetes, &config.leader_election) else {
        anyhow::bail!("--store kubernetes needs --kubeconfig or --kubernetes, and a Kubernetes Lease election");
    };
    let store_config = trellis_kube::store::KubeStoreConfig::new(
        source.kubeconfig().map(std::path::Path::to_path_buf),
        namespace,
        replica_name,
        config.data_dir.join("kubernetes-store-copy.redb"),
    );
    let store =
        Arc::new(tokio::task::spawn_blocking(move || trellis_kube::store::KubeStore::open(store_config)).await??);
    let leadership = lease_leadership(source, namespace, replica_name).await?;
    let leading = leadership.subscribe();
    tokio::spawn(report_leadership(leading.clone(), metrics.clone()));
    tokio::spawn(compact_log_while_leading(leading.clone(), store.clone()));
    tokio::spawn(exit_when_behind(store.clone()));
    Ok(Replication {
        store: store.clone(),
        leading,
        share: Some(store.clone()),
        presence: Some(store),
        name: Some(replica_name.to_string()),
        election: Election::Kubernetes(leadership),
    })
}

/// Ends the process when the Kubernetes store's log was compacted past this replica: its
/// local copy cannot catch up, and a restart loads the snapshot (Kubernetes restarts the pod;
/// nothing accepted is lost, it is all in the log).
async fn exit_when_behind(store: Arc<trellis_kube::store::KubeStore>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if store.fell_behind() {
            tracing::error!("this replica fell behind the store's compacted log; exiting to restart from its snapshot");
            std::process::exit(75);
        }
    }
}

/// Snapshots the Kubernetes store's log and deletes what the snapshot covers, while leading.
async fn compact_log_while_leading(
    leading: tokio::sync::watch::Receiver<bool>,
    store: Arc<trellis_kube::store::KubeStore>,
) {
    loop {
        tokio::time::sleep(COMPACT_LOG_EVERY).await;
        if !*leading.borrow() {
            continue;
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.compact_if_due()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot compact the store's log"),
            Err(error) => tracing::warn!(%error, "the store's compaction stopped"),
        }
    }
}

impl Replication {
    /// Hands leadership over at once on shutdown instead of letting the lease run out.
    pub async fn stop(self) {
        match self.election {
            Election::Etcd(leadership) => leadership.resign().await,
            Election::Kubernetes(leadership) => leadership.resign().await,
            Election::Single(_) => {}
        }
    }
}

async fn report_leadership(mut leading: tokio::sync::watch::Receiver<bool>, metrics: MgmtMetrics) {
    loop {
        metrics.leader.set(i64::from(*leading.borrow_and_update()));
        if leading.changed().await.is_err() {
            return;
        }
    }
}

async fn compact_while_leading(leading: tokio::sync::watch::Receiver<bool>, client: trellis_etcd::EtcdClient) {
    loop {
        tokio::time::sleep(COMPACT_EVERY).await;
        if !*leading.borrow() {
            continue;
        }
        match client.current_revision().await {
            Ok(revision) if revision > HISTORY_KEPT => match client.compact(revision - HISTORY_KEPT).await {
                Ok(()) => tracing::info!(before = revision - HISTORY_KEPT, "compacted etcd history"),
                Err(error) => tracing::warn!(%error, "cannot compact etcd history"),
            },
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read etcd's revision"),
        }
    }
}
