//! AccessPolicy ─▶ inbound policies of the workloads it selects.
//!
//! - `applyToWorkloads[].selector` picks workloads by labels, namespace and cluster;
//!   `applyToDestinations[].selector` picks the workloads of the services it names; neither
//!   means every workload.
//! - `allowedClients[].serviceAccountSelector`: `name` + `namespace` is one identity; `namespace`
//!   alone all of that namespace; `labels` the service accounts of the workloads carrying them (in
//!   any cluster); an empty selector any mesh identity.
//! - `allowedPaths`: `/exact`, `/prefix*`, `*suffix`. `allowedIpBlocks` and
//!   `allowedRemoteIpBlocks` both match the connection's peer address.
//! - `authzList` entries with `dryRun: true` are evaluated and counted, never enforced.

use std::collections::BTreeSet;

use trellis_api::{AccessPolicySpec, Authz, ObjectSelector, Spec, regex_escape};
use trellis_model::Snapshot;
use trellis_model::ir::{PathMatch, ValueMatch};
use trellis_model::policy::{AuthzRule, InboundPolicy, TlsMode};
use trellis_model::snapshot::Service;

use crate::Warnings;
use crate::report::Report;

/// A principal that no certificate carries: an `allowedClients` that selects nobody must not
/// turn into "anybody".
const NOBODY: &str = "spiffe://trellis.invalid/nobody";

fn path(pattern: &str) -> PathMatch {
    if let Some(prefix) = pattern.strip_suffix('*') {
        PathMatch::Prefix(prefix.to_string())
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        PathMatch::Regex(format!(".*{}", regex_escape(suffix)))
    } else {
        PathMatch::Exact(pattern.to_string())
    }
}

fn principals(snapshot: &Snapshot, services: &[Service<'_>], selector: &ObjectSelector) -> Vec<String> {
    let td = &snapshot.trust_domain;
    if selector.labels.is_empty() {
        return match (selector.namespace.as_str(), selector.name.as_str()) {
            ("", "") => vec![format!("spiffe://{td}/")],
            (namespace, "") => vec![format!("spiffe://{td}/ns/{namespace}/sa/")],
            ("", name) => services
                .iter()
                .flat_map(|s| &s.workloads)
                .filter(|w| w.service_account == name)
                .map(|w| trellis_model::spiffe_id(td, &w.namespace, name))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            (namespace, name) => vec![trellis_model::spiffe_id(td, namespace, name)],
        };
    }
    let ids: BTreeSet<String> = services
        .iter()
        .filter(|s| selector.cluster.is_empty() || selector.cluster == s.cluster)
        .flat_map(|s| &s.workloads)
        .filter(|w| selector.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
        .filter(|w| selector.namespace.is_empty() || selector.namespace == w.namespace)
        .filter(|w| selector.name.is_empty() || selector.name == w.service_account)
        .map(|w| trellis_model::spiffe_id(td, &w.namespace, &w.service_account))
        .collect();
    ids.into_iter().collect()
}

fn rule(
    snapshot: &Snapshot,
    services: &[Service<'_>],
    authz: &Authz,
    key: &str,
    index: usize,
    warnings: &mut Warnings,
) -> AuthzRule {
    let mut principal_ids = Vec::new();
    for (c, client) in authz.allowed_clients.iter().enumerate() {
        match &client.service_account_selector {
            Some(selector) => {
                let ids = principals(snapshot, services, selector);
                if ids.is_empty() {
                    warnings.add(key, format!("spec.config.authzList[{index}].allowedClients[{c}] selects no service account yet"));
                }
                principal_ids.extend(ids);
            }
            None => warnings.add(key, format!("spec.config.authzList[{index}].allowedClients[{c}]: only serviceAccountSelector is supported; it allows nobody")),
        }
    }
    if !authz.allowed_clients.is_empty() && principal_ids.is_empty() {
        principal_ids.push(NOBODY.to_string());
    }
    let headers = authz
        .matcher
        .as_ref()
        .and_then(|m| m.request.as_ref())
        .map(|r| {
            r.headers
                .iter()
                .filter(|(_, values)| !values.values.is_empty())
                .map(|(name, values)| {
                    let alternatives: Vec<String> = values.values.iter().map(|v| regex_escape(v)).collect();
                    (
                        name.clone(),
                        ValueMatch::Regex(format!("^({})$", alternatives.join("|"))),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if authz
        .matcher
        .as_ref()
        .and_then(|m| m.request.as_ref())
        .is_some_and(|r| r.headers.values().any(|v| !v.not_values.is_empty()))
    {
        warnings.add(
            key,
            format!(
                "spec.config.authzList[{index}].match.request.headers: notValues is not supported yet and is ignored"
            ),
        );
    }
    AuthzRule {
        principals: principal_ids,
        paths: authz.allowed_paths.iter().map(|p| path(p)).collect(),
        methods: authz.allowed_methods.clone(),
        headers,
        ip_blocks: authz
            .allowed_ip_blocks
            .iter()
            .chain(&authz.allowed_remote_ip_blocks)
            .cloned()
            .collect(),
    }
}

/// Selections of one policy in one cluster: (namespace, service, labels) triples.
fn selections(
    spec: &AccessPolicySpec,
    cluster: &str,
) -> Vec<(String, String, std::collections::BTreeMap<String, String>)> {
    if !spec.apply_to_workloads.is_empty() {
        return spec
            .apply_to_workloads
            .iter()
            .filter_map(|w| {
                let s = w.selector.clone().unwrap_or_default();
                (s.cluster.is_empty() || s.cluster == cluster).then(|| (s.namespace, String::new(), s.labels))
            })
            .collect();
    }
    if !spec.apply_to_destinations.is_empty() {
        return spec
            .apply_to_destinations
            .iter()
            .filter(|d| d.kind.as_deref().is_none_or(|k| k == "SERVICE"))
            .filter_map(|d| {
                let s = d.selector.clone().unwrap_or_default();
                (s.cluster.is_empty() || s.cluster == cluster).then_some((s.namespace, s.name, s.labels))
            })
            .collect();
    }
    vec![(String::new(), String::new(), Default::default())]
}

/// The inbound policies of one cluster, oldest AccessPolicy first.
pub(crate) fn for_cluster(
    snapshot: &Snapshot,
    services: &[Service<'_>],
    cluster: &str,
    report: &mut Report,
    warnings: &mut Warnings,
) -> Vec<InboundPolicy> {
    let mut out = Vec::new();
    for resource in &snapshot.resources {
        let Spec::AccessPolicy(spec) = &resource.spec else {
            continue;
        };
        let key = resource.key().to_string();
        let name = format!("{}/{}", resource.metadata.namespace, resource.metadata.name);
        let tls_mode = spec
            .config
            .authn
            .as_ref()
            .and_then(|a| a.tls_mode.as_deref())
            .map(|m| match m {
                "DISABLE" => TlsMode::Disable,
                "PERMISSIVE" => TlsMode::Permissive,
                _ => TlsMode::Strict,
            });
        let list: Vec<&Authz> = match (&spec.config.authz_list, &spec.config.authz) {
            (Some(list), _) => list.iter().collect(),
            (None, Some(authz)) => vec![authz],
            (None, None) => Vec::new(),
        };
        let has_authz = spec.config.authz_list.is_some() || spec.config.authz.is_some();
        let (mut enforced, mut dry) = (Vec::new(), Vec::new());
        for (index, authz) in list.iter().enumerate() {
            let rule = rule(snapshot, services, authz, &key, index, warnings);
            if authz.dry_run {
                dry.push(rule)
            } else {
                enforced.push(rule)
            }
        }
        for (namespace, service, labels) in selections(spec, cluster) {
            let selected = services
                .iter()
                .filter(|s| s.cluster == cluster)
                .flat_map(|s| &s.workloads)
                .filter(|w| {
                    (namespace.is_empty() || namespace == w.namespace) && (service.is_empty() || service == w.service)
                })
                .filter(|w| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
                .count();
            if selected > 0 {
                let entry = report.entry(&key);
                entry.applied += selected;
                entry.clusters.insert(cluster.to_string());
            }
            let base = InboundPolicy {
                name: name.clone(),
                namespace,
                service,
                labels,
                tls_mode,
                rules: None,
                dry_run: false,
            };
            // Dry-run-only policies enforce nothing: no enforced rule set at all.
            let enforced_rules = (has_authz && (!enforced.is_empty() || dry.is_empty())).then(|| enforced.clone());
            out.push(InboundPolicy {
                rules: enforced_rules,
                ..base.clone()
            });
            if !dry.is_empty() {
                out.push(InboundPolicy {
                    rules: Some(dry.clone()),
                    dry_run: true,
                    tls_mode: None,
                    ..base
                });
            }
        }
    }
    out
}
