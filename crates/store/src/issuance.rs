//! What the mesh root signed for each cluster: one live intermediate CA per cluster.
//!
//! A cluster's intermediate key lives on its agent's host and can sign any workload identity of
//! the trust domain, so the management server signs a second one for the same cluster only when
//! the first is due for renewal, or after an operator revoked it (`trellis cluster rotate`, or
//! `deregister`). Anyone who obtains relay credentials for a cluster therefore cannot quietly
//! obtain a second, parallel CA.

use serde::{Deserialize, Serialize};

use crate::Result;

/// A cluster intermediate CA the mesh root signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntermediateRecord {
    pub cluster: String,
    /// Lowercase hex, as `trellis_pki::CertInfo::serial_hex`.
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
    pub not_after: u64,
    /// From this time on the agent may ask for its successor (two thirds of the life, as the
    /// agent renews). Before it, a second request for the same cluster is refused.
    pub renewable_at: u64,
    pub revoked: bool,
    /// Hex SHA-256 of the intermediate's public key (empty in records from before it was kept).
    #[serde(default)]
    pub public_key_sha256: String,
    /// Hex SHA-256 of the mesh root certificate that signed it (empty in older records: the
    /// management server's own root). An intermediate of an earlier root does not block one
    /// under the current root.
    #[serde(default)]
    pub root_sha256: String,
}

/// How long after an intermediate was signed the same key may have it signed again: a retry of a
/// request whose answer was lost. Short, because every re-signing extends the key's life.
pub const SAME_KEY_RETRY_SECS: u64 = 300;

impl IntermediateRecord {
    /// Unexpired and unrevoked.
    pub fn is_live(&self, now: u64) -> bool {
        !self.revoked && now < self.not_after
    }

    /// Live and not yet due for renewal: it blocks another intermediate for its cluster.
    pub fn blocks_another(&self, now: u64) -> bool {
        self.is_live(now) && now < self.renewable_at
    }
}

/// What [`IssuanceStore::claim_intermediate`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntermediateClaim {
    /// Recorded: the certificate may be handed out.
    Recorded,
    /// The cluster already has this live intermediate, not yet due for renewal.
    Refused { existing: IntermediateRecord },
}

/// The intermediate among a cluster's `existing` records (oldest first) that keeps `record` from
/// being recorded at `now`, if any: the rule of [`IssuanceStore::claim_intermediate`], shared by
/// every backend.
pub fn blocking_intermediate(
    existing: Vec<IntermediateRecord>,
    record: &IntermediateRecord,
    now: u64,
) -> Option<IntermediateRecord> {
    let same_key = |r: &IntermediateRecord| {
        !record.public_key_sha256.is_empty() && r.public_key_sha256 == record.public_key_sha256
    };
    let first_signed = existing.iter().filter(|r| same_key(r)).map(|r| r.issued_at).min();
    let retry = first_signed.is_some_and(|first| now < first.saturating_add(SAME_KEY_RETRY_SECS));
    existing
        .into_iter()
        .rev()
        .find(|r| r.blocks_another(now) && !(retry && same_key(r)))
}

/// The records of cluster intermediates.
pub trait IssuanceStore {
    /// Records `record` unless its cluster has an intermediate that
    /// [blocks another](IntermediateRecord::blocks_another) at `now`. A blocking intermediate for
    /// the same key does not count within [`SAME_KEY_RETRY_SECS`] of that key's *first* signing
    /// (retries cannot extend a key's life step by step). Check and write are one transaction, so
    /// two simultaneous requests cannot both get one.
    fn claim_intermediate(&self, record: &IntermediateRecord, now: u64) -> Result<IntermediateClaim>;
    /// Every intermediate signed for `cluster`, oldest first.
    fn cluster_intermediates(&self, cluster: &str) -> Result<Vec<IntermediateRecord>>;
    /// Marks every intermediate of `cluster` revoked; returns how many were live at `now`.
    fn revoke_cluster_intermediates(&self, cluster: &str, now: u64) -> Result<usize>;
    /// Uses up every unused registration token of `cluster` (rotation and deregistration: a
    /// token handed out earlier must not register an agent afterwards); returns how many.
    fn void_cluster_tokens(&self, cluster: &str) -> Result<usize>;
}
