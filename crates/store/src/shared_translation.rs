//! A translation as the leading management replica shares it with the others: one replica
//! translates, every replica serves the result. Only a replicated store shares translations; a
//! single server has no one to share with.
//!
//! What travels: the store revision translated, the warnings and statuses (the translator's
//! encoding, opaque here), and each cluster's config as its sections' names and versions. The
//! sections' payloads travel apart, by version, so that a follower fetches only the sections it
//! does not hold and a change moves only what it changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTranslation {
    /// The store revision translated.
    pub revision: u64,
    /// The translation's trace (W3C `traceparent`), if spans are exported.
    pub traceparent: Option<String>,
    /// Warnings and statuses, encoded by the translator.
    pub report: Arc<[u8]>,
    pub clusters: BTreeMap<String, SharedCluster>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCluster {
    /// The config's version (as the relay compares it).
    pub version: String,
    /// (section name, section version), in name order.
    pub sections: Vec<(String, u64)>,
}

/// A shared translation with the store's stamp of it: waiting for a stamp other than the one
/// held returns the next one.
#[derive(Debug, Clone)]
pub struct StampedTranslation {
    pub stamp: u64,
    pub translation: SharedTranslation,
}

/// A section's payload by (cluster, section name), as the leader holds it.
pub type SectionPayload<'a> = &'a dyn Fn(&str, &str) -> Option<Arc<[u8]>>;

pub trait TranslationShare: Send + Sync + 'static {
    /// Shares `translation` as the current one. `payload(cluster, section)` gives a section's
    /// payload; only those the share does not hold yet are read.
    fn publish_translation(&self, translation: &SharedTranslation, payload: SectionPayload<'_>) -> Result<()>;

    /// The current shared translation once its stamp differs from `held` (0: none held),
    /// waiting up to `timeout`; `None` when nothing new came, and at once when nothing is held
    /// and nothing was ever shared.
    fn wait_translation(&self, held: u64, timeout: Duration) -> Result<Option<StampedTranslation>>;

    /// Payloads of the sections of these versions.
    fn section_payloads(&self, versions: &[u64]) -> Result<HashMap<u64, Arc<[u8]>>>;
}
