//! [`PresenceShare`] on etcd: `presence/<replica>` holds the replica's connected agents (JSON),
//! under a lease of a few seconds that each put replaces.

use std::collections::BTreeMap;
use std::sync::Mutex;

use trellis_store::{PresenceShare, StoreError, decode_presence, encode_presence};

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
        let value = encode_presence(agents);
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
        let records = self.block(|inner| async move {
            let prefix = inner.key("presence/");
            let (_, kvs) = inner.client.range_prefix(&prefix, 0).await?;
            Ok(kvs
                .into_iter()
                .map(|kv| (String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned(), kv.value))
                .collect::<Vec<_>>())
        })?;
        records
            .into_iter()
            .map(|(replica, value)| {
                let agents = decode_presence(&format!("presence of replica {replica}"), &value)?;
                Ok((replica, agents))
            })
            .collect()
    }
}
