//! One finding and its severity.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Insight {
    /// `TRLnnnn`, one of [`crate::CODES`].
    pub code: &'static str,
    pub severity: Severity,
    /// What it is about: `Kind/namespace/name`, `cluster/NAME`, `service/CLUSTER/NS/NAME`,
    /// `mgmt/...` for the management server itself.
    pub target: String,
    /// What is wrong, in one sentence.
    pub summary: String,
    /// What to do about it.
    pub fix: String,
    /// An admin silenced it; only listed when asked for all.
    #[serde(default)]
    pub silenced: bool,
}

impl Insight {
    pub(crate) fn new(
        code: &'static str,
        severity: Severity,
        target: impl Into<String>,
        summary: impl Into<String>,
        fix: impl Into<String>,
    ) -> Insight {
        debug_assert!(crate::code_info(code).is_some(), "{code} is not in CODES");
        Insight {
            code,
            severity,
            target: target.into(),
            summary: summary.into(),
            fix: fix.into(),
            silenced: false,
        }
    }
}
