//! Insights: what an operator should know about a mesh, as coded findings.
//!
//! ```text
//!  MeshSnapshot (built by the management server from its store, statuses, agents, settings)
//!        │
//!        ▼  evaluate()  — pure: no I/O, no clock (the snapshot carries `now`)
//!  Vec<Insight { code TRLnnnn, severity, target, summary, fix }>
//!        │
//!        ▼  apply_silences()  — marks those an admin silenced by code (and target)
//! ```
//!
//! Codes are stable: a code, once released, keeps its meaning; [`CODES`] documents each one.
//! Checks judge only what the snapshot says; an input the mesh cannot know yet is `None` and
//! the check that needs it stays quiet rather than guess.

mod checks;
mod codes;
mod insight;
mod silence;
mod snapshot;

pub use checks::certificates::{EXPIRY_WARNING_SECS, Expiry, expiry, human_duration};
pub use checks::names::personal_data;
pub use checks::workloads::{MIN_ENVOY_REASON, MIN_ENVOY_VERSION, parse_envoy_version};
pub use codes::{CODES, Code, code_info};
pub use insight::{Insight, Severity};
pub use silence::{InsightsError, Silence, apply_silences};
pub use snapshot::*;

/// Every insight the snapshot gives rise to, in a stable order (code, then target).
pub fn evaluate(snapshot: &MeshSnapshot) -> Vec<Insight> {
    let mut insights = Vec::new();
    checks::platform::check(snapshot, &mut insights);
    checks::certificates::check(snapshot, &mut insights);
    checks::addons::check(snapshot, &mut insights);
    checks::workloads::check(snapshot, &mut insights);
    checks::traffic::check(snapshot, &mut insights);
    checks::config::check(snapshot, &mut insights);
    checks::names::check(snapshot, &mut insights);
    insights.sort_by(|a, b| (a.code, &a.target, &a.summary).cmp(&(b.code, &b.target, &b.summary)));
    insights.dedup_by(|a, b| a.code == b.code && a.target == b.target && a.summary == b.summary);
    insights
}
