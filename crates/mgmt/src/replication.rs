//! The store the configuration chose, and, on etcd, this replica's part in the leader election.
//!
//! Every replica translates the shared store for the agents connected to it (translation is a
//! pure function of the store, so replicas agree), serves the relay and the API, and signs
//! through transactional claims in the store. The leader alone does the upkeep no two replicas
//! may do at once: it compacts etcd's history.

use std::sync::Arc;
use std::time::Duration;

use trellis_store::{RedbStore, Store};

use crate::config::{MgmtConfig, StoreChoice};
use crate::metrics::MgmtMetrics;

/// How long a killed leader holds the lease before another replica takes over.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// How often the leader compacts etcd, and how many revisions of history it keeps: far more than
/// a replica's journal watch lags behind.
const COMPACT_EVERY: Duration = Duration::from_secs(300);
const HISTORY_KEPT: i64 = 100_000;

pub struct Replication {
    pub store: Arc<dyn Store>,
    leadership: Option<trellis_etcd::Leadership>,
}

pub async fn open(config: &MgmtConfig, metrics: &MgmtMetrics) -> anyhow::Result<Replication> {
    match &config.store {
        StoreChoice::Redb => {
            metrics.leader.set(1);
            let store = RedbStore::open(&config.data_dir.join("store.redb"))?;
            Ok(Replication {
                store: Arc::new(store),
                leadership: None,
            })
        }
        StoreChoice::Etcd(settings) => {
            let client_config = settings.client_config()?;
            let store = tokio::task::spawn_blocking(move || trellis_etcd::EtcdStore::open(&client_config)).await??;
            let client = store.client();
            let leadership = trellis_etcd::Leadership::start(
                client.clone(),
                trellis_etcd::LeadershipConfig {
                    key: format!("{}leader", settings.prefix),
                    identity: settings.replica_name.clone(),
                    ttl: LEASE_TTL,
                },
            );
            tokio::spawn(report_leadership(leadership.subscribe(), metrics.clone()));
            tokio::spawn(compact_while_leading(leadership.subscribe(), client));
            Ok(Replication {
                store: Arc::new(store),
                leadership: Some(leadership),
            })
        }
    }
}

impl Replication {
    /// Hands leadership over at once on shutdown instead of letting the lease run out.
    pub async fn stop(self) {
        if let Some(leadership) = self.leadership {
            leadership.resign().await;
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
