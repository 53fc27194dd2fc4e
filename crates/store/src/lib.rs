//! Where accepted config lives. [`Store`] is what the management server needs; [`RedbStore`] is
//! the embedded default (one file under `--data-dir`, crash-safe commits). Replicated backends
//! (etcd) implement the same trait.
//!
//! Every write is one transaction: an apply of many resources lands whole or not at all.

mod redb_store;

pub use redb_store::RedbStore;

use trellis_api::{Resource, ResourceKey};
use trellis_model::ClusterDiscovery;

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

pub trait Store: Send + Sync + 'static {
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
    fn discoveries(&self) -> Result<Vec<ClusterDiscovery>>;
}
