//! Leader election on etcd: the replica whose lease holds the election key leads. A leader that
//! stops renewing (killed, or cut off from etcd) loses the key when its lease runs out, and the
//! replicas watching the key campaign at once; a leader that cannot renew steps down before its
//! lease could run out, so two replicas never both believe they lead.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::client::EtcdClient;
use crate::wire::*;

#[derive(Debug, Clone)]
pub struct LeadershipConfig {
    /// The whole election key, prefix included.
    pub key: String,
    /// What the key holds while this replica leads: its name, for operators.
    pub identity: String,
    /// Lease time to live; a killed leader is replaced within about this long.
    pub ttl: Duration,
}

/// This replica's part in the election.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    leader: watch::Receiver<String>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Starts campaigning on the current tokio runtime.
    pub fn start(client: EtcdClient, config: LeadershipConfig) -> Self {
        let (leading_tx, leading) = watch::channel(false);
        let (leader_tx, leader) = watch::channel(String::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(campaign(client, config, leading_tx, leader_tx, stop_rx));
        Leadership {
            leading,
            leader,
            stop,
            task,
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Whether this replica leads, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// The identity of the replica leading, as last seen (empty while unknown).
    pub fn leader(&self) -> String {
        self.leader.borrow().clone()
    }

    /// Gives up leadership at once (the lease is revoked, so another replica takes over without
    /// waiting for it to run out) and stops campaigning.
    pub async fn resign(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

async fn campaign(
    client: EtcdClient,
    config: LeadershipConfig,
    leading: watch::Sender<bool>,
    leader: watch::Sender<String>,
    mut stop: watch::Receiver<bool>,
) {
    let key = config.key.clone().into_bytes();
    let ttl_secs = config.ttl.as_secs().max(1) as i64;
    while !*stop.borrow() {
        let attempt = async {
            let lease = client.lease_grant(ttl_secs).await?;
            let response = client
                .put_if_absent(key.clone(), config.identity.clone().into_bytes(), lease)
                .await?;
            Ok::<_, crate::EtcdError>((lease, response))
        };
        let (lease, response) = tokio::select! {
            result = attempt => match result {
                Ok(taken) => taken,
                Err(error) => {
                    tracing::warn!(%error, "leader election: cannot reach etcd");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        if response.succeeded {
            let _ = leader.send(config.identity.clone());
            tracing::info!(identity = %config.identity, "leading the management plane");
            let _ = leading.send(true);
            lead(&client, lease, config.ttl, &mut stop).await;
            let _ = leading.send(false);
            tracing::warn!(identity = %config.identity, "no longer leading");
            continue;
        }
        // Someone else leads: remember who, and wait for the key to go.
        let _ = client.lease_revoke(lease).await;
        let holder = response
            .responses
            .into_iter()
            .find_map(|op| match op.response {
                Some(response_op::Response::Range(range)) => range.kvs.into_iter().next(),
                _ => None,
            })
            .unwrap_or_default();
        let _ = leader.send(String::from_utf8_lossy(&holder.value).into_owned());
        let revision = response.header.map(|h| h.revision).unwrap_or(0);
        tokio::select! {
            _ = until_deleted(&client, key.clone(), revision + 1) => {}
            _ = tokio::time::sleep(config.ttl * 2) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Renews the lease while this replica leads; returns when it must stop leading.
async fn lead(client: &EtcdClient, lease: i64, ttl: Duration, stop: &mut watch::Receiver<bool>) {
    let every = ttl / 4;
    // Step down before the lease can have run out at etcd: renewal answers older than this
    // could mean another replica already leads.
    let give_up_after = ttl * 2 / 3;
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {
                let _ = client.lease_revoke(lease).await;
                return;
            }
        }
        match tokio::time::timeout(every, client.lease_keep_alive_once(lease)).await {
            Ok(Ok(left)) if left > 0 => renewed = Instant::now(),
            Ok(Ok(_)) => {
                tracing::warn!("leader election: the lease is gone");
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, "leader election: cannot renew the lease"),
            Err(_) => tracing::warn!("leader election: renewing the lease timed out"),
        }
        if renewed.elapsed() >= give_up_after {
            return;
        }
    }
}

/// Returns once `key` is deleted (its leader's lease ran out or was revoked).
pub(crate) async fn until_deleted(client: &EtcdClient, key: Vec<u8>, from: i64) {
    let Ok(mut stream) = client.watch(key, Vec::new(), from).await else {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    };
    while let Some(Ok(response)) = stream.next().await {
        if response.canceled || response.events.iter().any(|e| e.r#type == EVENT_DELETE) {
            return;
        }
    }
}
