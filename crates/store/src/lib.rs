//! Where accepted config lives. [`Store`] is what the management server needs; [`RedbStore`] is
//! the embedded default (one file under `--data-dir`, crash-safe commits). Replicated backends
//! (etcd) implement the same trait.
//!
//! Every write is one transaction: an apply of many resources lands whole or not at all.

mod access;
mod feed;
mod issuance;
mod presence;
mod redb_access;
mod redb_discovery;
mod redb_issuance;
mod redb_silences;
mod redb_store;
mod shared_translation;
mod silences;
mod write_lock;

pub use access::{AccessStore, ApiTokenRecord, AuditRecord, AuditRetention};
pub use feed::{Change, Feed, Watch};
pub use issuance::{IntermediateClaim, IntermediateRecord, IssuanceStore, blocking_intermediate};
pub use presence::{PresenceShare, decode_presence, encode_presence};
pub use redb_store::RedbStore;
pub use shared_translation::{SectionPayload, SharedCluster, SharedTranslation, StampedTranslation, TranslationShare};
pub use silences::{SilenceRecord, SilenceStore, silence_key};
pub use write_lock::WriteLock;

use trellis_api::{Resource, ResourceKey};
use trellis_model::{ClusterDiscovery, DiscoveryPatch};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store at {path}: {source} (hint: is another `trellis mgmt` using this --data-dir?)")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("store transaction failed: {0}")]
    Transaction(String),
    #[error("stored {what} is corrupt: {message}")]
    Corrupt { what: String, message: String },
    #[error("no discovery of cluster {0} is stored to patch; its agent must report it whole")]
    NoDiscovery(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What one apply did to one resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyOutcome {
    pub key: ResourceKey,
    pub action: ApplyAction,
    pub generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

/// Stamps `resource` as the version that follows `existing` (none: a new resource), at store
/// revision `revision`, which it advances when the resource changed. Every backend applies by
/// this rule, so generations and revisions mean the same whatever the store.
pub fn stamp(existing: Option<&Resource>, resource: &mut Resource, revision: &mut u64) -> ApplyOutcome {
    let action = match existing {
        Some(old) if old.same_content(resource) => {
            return ApplyOutcome {
                key: resource.key(),
                action: ApplyAction::Unchanged,
                generation: old.metadata.generation,
            };
        }
        Some(old) => {
            resource.metadata.generation = old.metadata.generation + 1;
            resource.metadata.creation_revision = old.metadata.creation_revision;
            ApplyAction::Configured
        }
        None => {
            resource.metadata.generation = 1;
            resource.metadata.creation_revision = *revision + 1;
            ApplyAction::Created
        }
    };
    *revision += 1;
    resource.metadata.resource_version = *revision;
    ApplyOutcome {
        key: resource.key(),
        action,
        generation: resource.metadata.generation,
    }
}

/// A registration token, stored by the SHA-256 of its value: the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub cluster: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    pub used: bool,
}

impl TokenRecord {
    /// What presenting this token at `now` finds; `Accepted` means the caller must store it as
    /// used in the same transaction.
    pub fn check(&self, now: u64) -> TokenCheck {
        let cluster = self.cluster.clone();
        if self.used {
            TokenCheck::AlreadyUsed { cluster }
        } else if self.expires_at <= now {
            TokenCheck::Expired { cluster }
        } else {
            TokenCheck::Accepted { cluster }
        }
    }
}

/// What presenting a token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// Valid: it is now used up.
    Accepted {
        cluster: String,
    },
    Unknown,
    AlreadyUsed {
        cluster: String,
    },
    Expired {
        cluster: String,
    },
}

pub trait Store: AccessStore + IssuanceStore + SilenceStore + Send + Sync + 'static {
    /// The revision of the last committed write (resources and discovery share one sequence).
    fn revision(&self) -> u64;
    /// The changes committed after revision `since`, waiting up to `timeout` for one if there
    /// are none yet. Drives the translator: one change costs what it changed, not a full read.
    fn watch(&self, since: u64, timeout: std::time::Duration) -> Watch;
    /// The lock held from admission to write, across replicas where there are several (see
    /// [`WriteLock`]); the default holds nothing.
    fn lock_writes(&self) -> Result<WriteLock> {
        Ok(WriteLock::default())
    }
    /// All resources, with server-set metadata (generation, revisions).
    fn list(&self) -> Result<Vec<Resource>>;
    fn get(&self, key: &ResourceKey) -> Result<Option<Resource>>;
    /// Creates or updates all, in one transaction.
    fn apply(&self, resources: Vec<Resource>) -> Result<Vec<ApplyOutcome>>;
    /// Deletes those that exist, in one transaction; returns which existed.
    fn delete(&self, keys: &[ResourceKey]) -> Result<Vec<(ResourceKey, bool)>>;
    /// Last discovery reported per cluster, kept so that a restarted server translates with every
    /// cluster's view at once instead of pushing half a mesh to the first agent that reconnects.
    fn put_discovery(&self, discovery: &ClusterDiscovery) -> Result<()>;
    /// Changes the workloads a patch names in a discovery stored before; refused when the
    /// cluster has none.
    fn patch_discovery(&self, patch: &DiscoveryPatch) -> Result<()>;
    fn discoveries(&self) -> Result<Vec<ClusterDiscovery>>;
    fn delete_discovery(&self, cluster: &str) -> Result<()>;
    fn put_token(&self, token_hash: &str, record: &TokenRecord) -> Result<()>;
    /// Checks a token and, if valid, marks it used, in one transaction: a token works once even
    /// when two agents present it at the same moment.
    fn consume_token(&self, token_hash: &str, now: u64) -> Result<TokenCheck>;
    /// Remembers which cluster a client certificate (by serial) was issued to.
    fn record_certificate(&self, serial: &str, cluster: &str) -> Result<()>;
    /// Revokes every certificate issued to `cluster`; returns how many.
    fn revoke_cluster_certificates(&self, cluster: &str) -> Result<usize>;
    fn is_revoked(&self, serial: &str) -> Result<bool>;
}
