//! AccessLogPolicy ─▶ the access logs of one cluster's proxies.
//!
//! - `applyToWorkloads[].selector` picks sidecars and ingress gateways by labels, namespace,
//!   cluster and workspace, within the policy's own workspace exactly as AccessPolicy's workload
//!   selectors do (`access_policies::scoped_selections`); none means every proxy of the
//!   workspace.
//! - `config.filters` are alternatives, as Gloo's proto says ("the list is disjunctive"): a
//!   request is logged when any filter matches; a filter with no matcher matches every request,
//!   and so does an empty list.
//! - `included*` lists become extra fields of each entry.
//!
//! Each policy is its own log: a proxy several policies select writes an entry for each policy
//! whose filters match, and every entry names its policy.

use std::collections::BTreeSet;

use trellis_api::{AccessLogPolicySpec, Comparator, ObjectSelector, Spec};
use trellis_model::Snapshot;
use trellis_model::access_log::{AccessLog, Comparison, LogFilter};
use trellis_model::ir::{HeaderMatch, ValueMatch};

use crate::Warnings;
use crate::access_policies::scoped_selections;
use crate::outbound::value_match;
use crate::report::Report;
use crate::workspaces::{PolicyScope, Workspaces};

/// The access logs of `cluster`'s proxies, oldest policy first.
pub(crate) fn for_cluster(
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    cluster: &str,
    report: &mut Report,
    warnings: &mut Warnings,
) -> Vec<AccessLog> {
    let mut out = Vec::new();
    for resource in &snapshot.resources {
        let Spec::AccessLogPolicy(spec) = &resource.spec else {
            continue;
        };
        let key = resource.key().to_string();
        let scope = workspaces.scope_of_policy(snapshot, &resource.metadata.namespace);
        if matches!(scope, PolicyScope::Nothing) {
            warnings.add(
                &key,
                "the policy's namespace is in no workspace, so it selects nothing (Gloo scopes policies to their workspace)",
            );
        }
        let raw: Vec<(ObjectSelector, bool)> = if spec.apply_to_workloads.is_empty() {
            vec![(ObjectSelector::default(), false)]
        } else {
            spec.apply_to_workloads
                .iter()
                .map(|w| (w.selector.clone().unwrap_or_default(), false))
                .collect()
        };
        let template = AccessLog {
            name: format!("{}/{}", resource.metadata.namespace, resource.metadata.name),
            ..log_of(spec)
        };
        let mut selected = BTreeSet::new();
        for (namespace, _, labels) in scoped_selections(raw, snapshot, workspaces, &scope, cluster) {
            let log = AccessLog {
                namespace,
                labels,
                ..template.clone()
            };
            selected.extend(selected_proxies(snapshot, cluster, &log));
            out.push(log);
        }
        if !selected.is_empty() {
            let entry = report.entry(&key);
            entry.applied += selected.len();
            entry.clusters.insert(cluster.to_string());
        }
    }
    out
}

/// The proxies of `cluster` a log selects, as `(kind, namespace, name)`: sidecars by their
/// workload, ingress gateways by their address.
fn selected_proxies<'a>(
    snapshot: &'a Snapshot,
    cluster: &str,
    log: &AccessLog,
) -> Vec<(&'static str, &'a str, &'a str)> {
    let Some(discovery) = snapshot.discovery.get(cluster) else {
        return Vec::new();
    };
    let sidecars = discovery
        .workloads
        .iter()
        .filter(|w| log.selects(&w.namespace, &w.labels))
        .map(|w| ("sidecar", w.namespace.as_str(), w.name.as_str()));
    let gateways = discovery
        .gateways
        .iter()
        .filter(|g| log.selects(&g.namespace, &g.labels))
        .map(|g| ("gateway", g.namespace.as_str(), g.address.as_str()));
    sidecars.chain(gateways).collect()
}

/// What a policy logs, whatever it selects.
fn log_of(spec: &AccessLogPolicySpec) -> AccessLog {
    let config = &spec.config;
    let mut filters = Vec::new();
    for filter in &config.filters {
        let one = match (&filter.status_code_matcher, &filter.header_matcher) {
            (Some(status), _) => LogFilter::Status {
                comparison: match status.comparator {
                    Comparator::Eq => Comparison::Eq,
                    Comparator::Ge => Comparison::Ge,
                    Comparator::Le => Comparison::Le,
                },
                value: status.value,
            },
            (None, Some(header)) => LogFilter::Header(HeaderMatch {
                name: header.name.to_ascii_lowercase(),
                // proto3: an empty value is no value, and the header's presence matches.
                value: match header.value.as_deref() {
                    None | Some("") => ValueMatch::Present,
                    Some(_) => value_match(&header.value, header.regex),
                },
                invert: header.invert_match,
            }),
            // A filter without a matcher matches every request, and so makes the list do.
            (None, None) => {
                filters.clear();
                break;
            }
        };
        filters.push(one);
    }
    let lower = |names: &[String]| names.iter().map(|n| n.to_ascii_lowercase()).collect::<Vec<_>>();
    AccessLog {
        filters,
        request_headers: lower(&config.included_request_headers),
        response_headers: lower(&config.included_response_headers),
        response_trailers: lower(&config.included_response_trailers),
        filter_state_objects: config.included_filter_state_objects.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
