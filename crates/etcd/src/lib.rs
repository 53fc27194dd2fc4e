//! The replicated backend of Trellis's store, and leader election, on etcd v3.
//!
//! Several `trellis mgmt` replicas share one etcd: [`EtcdStore`] implements the same
//! [`trellis_store::Store`] contract as the embedded redb file (one transaction per write, a
//! revision per change, a feed of changes for the translator), and [`Leadership`] elects one
//! replica by an etcd lease for the work only one may do at a time.
//!
//! The leader shares each translation through etcd too (`TranslationShare`): the other
//! replicas serve it without translating.
//!
//! Every write is one etcd transaction guarded by a compare on a guard key, so two replicas
//! writing at once serialize as the single-writer redb file does. An apply of many resources is
//! one transaction: etcd's `--max-txn-ops` and `--max-request-bytes` must admit the largest apply
//! and discovery report (their defaults, 128 operations and 1.5 MiB, are small for a mesh).

mod client;
mod election;
mod presence;
mod store;
mod translation_share;
pub mod wire;
mod write_lock;

pub use client::{EtcdClient, EtcdConfig, prefix_end};
pub use election::{Leadership, LeadershipConfig};
pub use store::EtcdStore;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd configuration: {0}")]
    Config(String),
    #[error("etcd at {endpoints}: {call} failed: {}{}", status.message(), hint(status))]
    Call {
        endpoints: String,
        call: &'static str,
        status: tonic::Status,
    },
    #[error("etcd refused a lease: {0}")]
    Lease(String),
    #[error("etcd changed under this write {0} times in a row (other replicas writing); try again")]
    Contended(usize),
    #[error("etcd did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("stored {what} is corrupt: {message}")]
    Corrupt { what: String, message: String },
}

/// What the operator can do about an etcd refusal.
fn hint(status: &tonic::Status) -> &'static str {
    let message = status.message();
    if message.contains("too many operations in txn request") {
        " (Trellis writes an apply or a discovery report in one transaction: raise etcd's --max-txn-ops)"
    } else if message.contains("request is too large") {
        " (raise etcd's --max-request-bytes to admit the largest apply or discovery report)"
    } else if message.contains("required revision has been compacted") {
        " (etcd compacted history this replica had not read yet; it reads everything again)"
    } else if status.code() == tonic::Code::Unavailable {
        " (is etcd running, and do --etcd-endpoints, --etcd-ca and the client certificate match it?)"
    } else {
        ""
    }
}

impl From<EtcdError> for trellis_store::StoreError {
    fn from(error: EtcdError) -> Self {
        match error {
            EtcdError::Corrupt { what, message } => trellis_store::StoreError::Corrupt { what, message },
            other => trellis_store::StoreError::Transaction(other.to_string()),
        }
    }
}
