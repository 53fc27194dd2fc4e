//! Resource status: what translation made of every resource.
//!
//! - ACCEPTED: used as written.
//! - WARNING: used, with problems worth knowing (a reference that selects nothing yet, a field
//!   not supported yet, or a conflict lost on some of its routes or destinations).
//! - FAILED: a policy that lost every conflict it was in: an older policy of the same kind holds
//!   all of its routes or destinations.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trellis_api::{Kind, Resource};

use crate::report::Report;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// ACCEPTED, WARNING or FAILED.
    pub state: String,
    pub message: String,
    pub observed_generation: u64,
    /// Clusters whose config it is part of. Most resources are part of every cluster's: they
    /// share one list (ten thousand copies of a thousand names would be half a gigabyte).
    pub clusters: Arc<[String]>,
    /// Workspaces that see it (its own and those it is shared with); absent without Workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<Vec<String>>,
}

fn is_policy(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::AccessPolicy
            | Kind::RetryTimeoutPolicy
            | Kind::FaultInjectionPolicy
            | Kind::FailoverPolicy
            | Kind::OutlierDetectionPolicy
            | Kind::HeaderManipulationPolicy
            | Kind::ExtAuthPolicy
            | Kind::RateLimitPolicy
            | Kind::CorsPolicy
            | Kind::CsrfPolicy
            | Kind::HttpBufferPolicy
            | Kind::MirrorPolicy
            | Kind::JwtPolicy
            | Kind::LoadBalancerPolicy
            | Kind::ConnectionPolicy
            | Kind::ActiveHealthCheckPolicy
            | Kind::AccessLogPolicy
    )
}

/// Policies that select workloads (sidecars and gateways) rather than routes or destinations.
fn selects_workloads(kind: Kind) -> bool {
    matches!(kind, Kind::AccessPolicy | Kind::AccessLogPolicy)
}

pub(crate) fn compute(
    resources: &[Resource],
    warnings: &BTreeMap<String, Vec<String>>,
    report: &Report,
    all_clusters: &[String],
    visibility: impl Fn(&Resource) -> Option<Vec<String>>,
) -> BTreeMap<String, ResourceStatus> {
    let mut statuses = BTreeMap::new();
    let all_clusters: Arc<[String]> = all_clusters.into();
    for resource in resources {
        let key = resource.key().to_string();
        let kind = resource.kind();
        let used = report.0.get(&key);
        let mut problems: Vec<String> = warnings.get(&key).cloned().unwrap_or_default();
        let mut state = "ACCEPTED";
        let mut summary = String::new();
        let mut clusters = all_clusters.clone();
        if is_policy(kind) {
            let applied = used.map_or(0, |u| u.applied);
            let lost = used.map(|u| u.lost.clone()).unwrap_or_default();
            if selects_workloads(kind) {
                clusters = used.map(|u| u.clusters.iter().cloned().collect()).unwrap_or_default();
            }
            if applied == 0 && !lost.is_empty() {
                state = "FAILED";
                problems.push(format!(
                    "an older {kind} already applies to every place this one selects: {}",
                    lost.join(", ")
                ));
            } else if !lost.is_empty() {
                problems.push(format!("an older {kind} wins on: {}", lost.join(", ")));
            } else if applied == 0 {
                problems.push("selects nothing yet".to_string());
            }
            summary = format!(
                "applies to {applied} {}",
                if selects_workloads(kind) {
                    "workload(s)"
                } else {
                    "route(s) or destination(s)"
                }
            );
            // Add-on policies say where they hold: a check only on the caller's side is one a
            // caller that skips its sidecar never meets.
            if let Some(used) = used.filter(|u| !u.enforced.is_empty()) {
                let places: Vec<&str> = used.enforced.iter().copied().collect();
                summary = format!("{summary}, {}", places.join("; "));
            }
        }
        if state == "ACCEPTED" && !problems.is_empty() {
            state = "WARNING";
        }
        let mut message = problems.join("; ");
        if !summary.is_empty() {
            message = if message.is_empty() {
                summary
            } else {
                format!("{summary}; {message}")
            };
        }
        statuses.insert(
            key,
            ResourceStatus {
                state: state.to_string(),
                message,
                observed_generation: resource.metadata.generation,
                clusters,
                workspaces: visibility(resource),
            },
        );
    }
    statuses
}
