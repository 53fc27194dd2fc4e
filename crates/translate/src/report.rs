//! What translation learned about each policy: what it selected and where it lost a conflict.
//! Status is computed from this and the warnings.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub(crate) struct PolicyUse {
    /// Routes, destinations or workloads the policy applies to.
    pub applied: usize,
    /// Places where an older policy of the same kind already applied.
    pub lost: Vec<String>,
    pub clusters: BTreeSet<String>,
    /// Where it is enforced (add-on policies), in words for the status.
    pub enforced: BTreeSet<&'static str>,
}

#[derive(Debug, Default)]
pub(crate) struct Report(pub BTreeMap<String, PolicyUse>);

impl Report {
    pub(crate) fn entry(&mut self, key: &str) -> &mut PolicyUse {
        self.0.entry(key.to_string()).or_default()
    }
}
