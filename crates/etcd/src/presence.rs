//! [`PresenceShare`] on etcd: `presence/<replica>` holds the replica's connected agents (JSON),
//! under a lease of a few seconds that each put replaces.

use std::collections::BTreeMap;
use std::sync::Mutex;

use trellis_store::{PresenceShare, StoreError};

use crate::store::EtcdStore;
use crate::wire::*;

type Result<T> = std::result::Result<T, StoreError>;

/// A record not put again within this long is gone (its replica died or lost etcd).
const TTL_SECS: i64 = 6;

/// The lease of this replica's last put, revoked once the next put holds the key.
#[derive(Default)]
pub(crate) struct PresenceState {
    lease: Mutex<Option<i64>>,
}

impl PresenceShare for EtcdStore {
    fn put_presence(&self, replica: &str, agents: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        let value: BTreeMap<&String, serde_json::Value> = agents
            .iter()
            .map(|(cluster, status)| (cluster, serde_json::from_slice(status).unwrap_or_default()))
            .collect();
        let value = serde_json::to_vec(&value).expect("statuses serialize");
        let rest = format!("presence/{replica}");
        let previous = *self.presence.lease.lock().expect("presence lock");
        let lease = self.block(move |inner| async move {
            let lease = inner.client.lease_grant(TTL_SECS).await?;
            inner
                .client
                .txn(TxnRequest {
                    compare: Vec::new(),
                    success: vec![RequestOp {
                        request: Some(request_op::Request::Put(PutRequest {
                            key: inner.key(&rest),
                            value,
                            lease,
                        })),
                    }],
                    failure: Vec::new(),
                })
                .await?;
            // The key now lives by the new lease: revoking the old one leaves it be.
            if let Some(previous) = previous {
                let _ = inner.client.lease_revoke(previous).await;
            }
            Ok(lease)
        })?;
        *self.presence.lease.lock().expect("presence lock") = Some(lease);
        Ok(())
    }

    fn presences(&self) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>> {
        self.block(|inner| async move {
            let prefix = inner.key("presence/");
            let (_, kvs) = inner.client.range_prefix(&prefix, 0).await?;
            let mut all = BTreeMap::new();
            for kv in kvs {
                let replica = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
                let agents: BTreeMap<String, serde_json::Value> =
                    serde_json::from_slice(&kv.value).map_err(|e| crate::EtcdError::Corrupt {
                        what: format!("presence of replica {replica}"),
                        message: e.to_string(),
                    })?;
                let agents = agents
                    .into_iter()
                    .map(|(cluster, status)| (cluster, serde_json::to_vec(&status).expect("JSON serializes")))
                    .collect();
                all.insert(replica, agents);
            }
            Ok(all)
        })
    }
}
