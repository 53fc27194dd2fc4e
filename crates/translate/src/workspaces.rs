//! Workspaces: which workspace a namespace (of a cluster) belongs to, what each workspace may
//! see, and who may call an isolated one.
//!
//! - A Workspace selects clusters (`name` glob or KubernetesCluster labels) and, in them,
//!   namespaces (`name` glob; none listed: all). The first Workspace (oldest) that selects a
//!   namespace owns it.
//! - Config (a VirtualDestination, a RouteTable, an ExternalService) belongs to the workspace
//!   owning its namespace, and is visible to that workspace and to every workspace it exports
//!   to that also imports from it (`WorkspaceSettings.exportTo` / `importFrom`, by workspace
//!   name or `*`). Config in no workspace is visible to nobody once Workspaces exist; with no
//!   Workspace at all, everything is visible to everyone.
//! - `options.federation.enabled`: every service of the workspace (or those `serviceSelector`
//!   picks) in every cluster gets a mesh host name `<service>.<namespace>.<cluster>.<hostSuffix>`
//!   (default suffix `global`), visible like the workspace's config.
//! - `options.serviceIsolation.enabled`: the workspace's workloads accept only callers from
//!   their own workspace and from workspaces it shares with (both sides), over strict mTLS.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use trellis_api::{ClusterSelector, Spec};
use trellis_model::Snapshot;
use trellis_model::ir::Visibility;

/// Host suffix of federated names when `hostSuffix` is not set.
pub(crate) const FEDERATION_SUFFIX: &str = "global";

#[derive(Debug, Default)]
pub(crate) struct Workspaces {
    list: Vec<Workspace>,
    /// Every cluster's KubernetesCluster labels (empty for clusters known only by discovery).
    clusters: BTreeMap<String, BTreeMap<String, String>>,
    /// Answers already computed: asked once per resource and per service, they would otherwise
    /// cost workspaces × clusters each.
    owners: RefCell<HashMap<(String, String), Option<usize>>>,
    config_owners: RefCell<HashMap<String, Option<usize>>>,
}

#[derive(Debug, Default)]
struct Workspace {
    name: String,
    clusters: Vec<ClusterSelector>,
    imports: Vec<String>,
    exports: Vec<String>,
    isolation: bool,
    /// `options.federation`: host suffix and service selectors (none: every service).
    federation: Option<(String, Vec<trellis_api::ObjectSelector>)>,
}

/// What a policy may select, by the workspace owning its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyScope<'w> {
    /// No Workspaces are defined: the whole mesh.
    Mesh,
    /// Its own workspace (and, for routes, what that workspace imports).
    Workspace(&'w str),
    /// Workspaces exist but none owns the policy's namespace.
    Nothing,
}

/// `*`, `prefix*` or an exact name.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn workspace_names(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .flat_map(|entry| entry["workspaces"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w["name"].as_str().map(str::to_string))
        .collect()
}

impl Workspaces {
    pub(crate) fn from(snapshot: &Snapshot) -> Self {
        let list: Vec<Workspace> = snapshot
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Workspace(spec) => Some(Workspace {
                    name: r.metadata.name.clone(),
                    clusters: spec.workload_clusters.clone(),
                    ..Default::default()
                }),
                _ => None,
            })
            .collect();
        let mut clusters: BTreeMap<String, BTreeMap<String, String>> = snapshot
            .discovery
            .keys()
            .map(|c| (c.clone(), BTreeMap::new()))
            .collect();
        for r in &snapshot.resources {
            if matches!(r.spec, Spec::KubernetesCluster(_)) {
                clusters
                    .entry(r.metadata.name.clone())
                    .or_insert_with(|| r.metadata.labels.clone());
            }
        }
        let mut workspaces = Workspaces {
            list,
            clusters,
            ..Default::default()
        };
        for resource in &snapshot.resources {
            let Spec::WorkspaceSettings(settings) = &resource.spec else {
                continue;
            };
            let Some(owner) = workspaces
                .of_config_namespace(snapshot, &resource.metadata.namespace)
                .map(str::to_string)
            else {
                continue;
            };
            let Some(ws) = workspaces.list.iter_mut().find(|w| w.name == owner) else {
                continue;
            };
            ws.imports.extend(workspace_names(&settings.import_from));
            ws.exports.extend(workspace_names(&settings.export_to));
            let options = settings.options.clone().unwrap_or(Value::Null);
            ws.isolation |= options["serviceIsolation"]["enabled"].as_bool().unwrap_or(false);
            let federation = &options["federation"];
            if federation["enabled"].as_bool().unwrap_or(false) {
                let suffix = federation["hostSuffix"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(FEDERATION_SUFFIX);
                let selectors = serde_json::from_value(federation["serviceSelector"].clone()).unwrap_or_default();
                ws.federation = Some((suffix.to_string(), selectors));
            }
        }
        workspaces
    }

    /// Federation of each workspace that enables it: (workspace, host suffix, service selectors).
    pub(crate) fn federations(&self) -> Vec<(&str, &str, &[trellis_api::ObjectSelector])> {
        self.list
            .iter()
            .filter_map(|w| {
                w.federation
                    .as_ref()
                    .map(|(suffix, selectors)| (w.name.as_str(), suffix.as_str(), selectors.as_slice()))
            })
            .collect()
    }

    /// Who may see config owned by workspace `owner`.
    pub(crate) fn visibility_of_workspace(&self, owner: &str) -> Visibility {
        Some(
            self.list
                .iter()
                .filter(|w| w.name == owner || self.shares(owner, &w.name))
                .map(|w| w.name.clone())
                .collect(),
        )
    }

    /// The scope of a policy kept in `namespace`.
    pub(crate) fn scope_of_policy(&self, snapshot: &Snapshot, namespace: &str) -> PolicyScope<'_> {
        if !self.defined() {
            return PolicyScope::Mesh;
        }
        match self.of_config_namespace(snapshot, namespace) {
            Some(owner) => PolicyScope::Workspace(owner),
            None => PolicyScope::Nothing,
        }
    }

    /// True when config kept in `config_namespace` (a RouteTable, say) is available in `scope`:
    /// owned by that workspace or shared with it.
    pub(crate) fn available(&self, snapshot: &Snapshot, scope: PolicyScope<'_>, config_namespace: &str) -> bool {
        match scope {
            PolicyScope::Mesh => true,
            PolicyScope::Nothing => false,
            PolicyScope::Workspace(ws) => self
                .of_config_namespace(snapshot, config_namespace)
                .is_some_and(|owner| owner == ws || self.shares(owner, ws)),
        }
    }

    pub(crate) fn defined(&self) -> bool {
        !self.list.is_empty()
    }

    fn selects(&self, selector: &ClusterSelector, cluster: &str, namespace: &str) -> bool {
        let cluster_ok = match &selector.selector {
            Some(labels) => self
                .clusters
                .get(cluster)
                .is_some_and(|have| labels.iter().all(|(k, v)| have.get(k) == Some(v))),
            None => selector.name.is_empty() || glob(&selector.name, cluster),
        };
        let namespace_ok = selector.namespaces.is_empty()
            || selector
                .namespaces
                .iter()
                .any(|ns| ns.name.is_empty() || glob(&ns.name, namespace));
        cluster_ok && namespace_ok
    }

    /// The workspace owning `namespace` in `cluster`.
    pub(crate) fn of(&self, _snapshot: &Snapshot, cluster: &str, namespace: &str) -> Option<&str> {
        let key = (cluster.to_string(), namespace.to_string());
        let found = *self.owners.borrow_mut().entry(key).or_insert_with(|| {
            self.list
                .iter()
                .position(|ws| ws.clusters.iter().any(|c| self.selects(c, cluster, namespace)))
        });
        found.map(|i| self.list[i].name.as_str())
    }

    /// The workspace owning config kept in `namespace` (in any cluster it selects, or by name).
    pub(crate) fn of_config_namespace(&self, _snapshot: &Snapshot, namespace: &str) -> Option<&str> {
        if let Some(found) = self.config_owners.borrow().get(namespace) {
            return found.map(|i| self.list[i].name.as_str());
        }
        let found = self.list.iter().position(|ws| {
            ws.clusters.iter().any(|c| {
                self.clusters.keys().any(|cluster| self.selects(c, cluster, namespace))
                    || c.namespaces.iter().any(|ns| ns.name == namespace)
            })
        });
        // Owners depend only on the Workspaces' cluster selectors, fixed before WorkspaceSettings
        // are read: an answer cached while `from` reads settings stays right.
        self.config_owners.borrow_mut().insert(namespace.to_string(), found);
        found.map(|i| self.list[i].name.as_str())
    }

    fn get(&self, name: &str) -> Option<&Workspace> {
        self.list.iter().find(|w| w.name == name)
    }

    /// True when `owner` shares with `consumer`: it exports to it and the consumer imports it.
    fn shares(&self, owner: &str, consumer: &str) -> bool {
        let (Some(o), Some(c)) = (self.get(owner), self.get(consumer)) else {
            return false;
        };
        o.exports.iter().any(|p| glob(p, consumer)) && c.imports.iter().any(|p| glob(p, owner))
    }

    /// Who may see config owned by the workspace of `namespace`.
    pub(crate) fn visibility(&self, snapshot: &Snapshot, config_namespace: &str) -> Visibility {
        if !self.defined() {
            return None;
        }
        match self.of_config_namespace(snapshot, config_namespace) {
            Some(owner) => self.visibility_of_workspace(owner),
            None => Some(Vec::new()),
        }
    }

    /// Workspaces with service isolation, and for each the workspaces whose workloads may call it.
    pub(crate) fn isolated(&self) -> Vec<(String, Vec<String>)> {
        self.list
            .iter()
            .filter(|w| w.isolation)
            .map(|w| {
                let callers = self
                    .list
                    .iter()
                    .filter(|c| c.name == w.name || self.shares(&w.name, &c.name))
                    .map(|c| c.name.clone())
                    .collect();
                (w.name.clone(), callers)
            })
            .collect()
    }

    /// The identities of the namespaces `workspace` names explicitly in its cluster selectors
    /// and owns (`spiffe://<td>/ns/<name>/sa/`): they cover what discovery does not report, such
    /// as the namespace its gateways run in. Globs are left out: a glob may match namespaces an
    /// older Workspace owns, and isolation must not let those in.
    pub(crate) fn named_namespace_principals(
        &self,
        snapshot: &Snapshot,
        workspace: &str,
        trust_domain: &str,
    ) -> Vec<String> {
        let Some(ws) = self.get(workspace) else {
            return Vec::new();
        };
        ws.clusters
            .iter()
            .flat_map(|c| &c.namespaces)
            .filter(|ns| ns.labels.is_none() && !ns.name.is_empty() && !ns.name.contains('*'))
            .filter(|ns| self.of_config_namespace(snapshot, &ns.name) == Some(workspace))
            .map(|ns| format!("spiffe://{trust_domain}/ns/{}/sa/", ns.name))
            .collect()
    }

    /// Namespace ─▶ workspace for every namespace with workloads in `cluster`.
    pub(crate) fn namespaces_of_cluster(&self, snapshot: &Snapshot, cluster: &str) -> BTreeMap<String, String> {
        let namespaces: BTreeSet<&str> = snapshot
            .discovery
            .get(cluster)
            .map(|d| d.workloads.iter().map(|w| w.namespace.as_str()).collect())
            .unwrap_or_default();
        namespaces
            .into_iter()
            .filter_map(|ns| {
                self.of(snapshot, cluster, ns)
                    .map(|ws| (ns.to_string(), ws.to_string()))
            })
            .collect()
    }
}

/// Who may see each upstream: the workspaces of the virtual hosts that route to it (everyone if
/// any of those is visible to everyone). The same for every cluster (their virtual hosts are), so
/// computed once. External upstreams keep their own visibility.
pub(crate) fn upstream_scopes(
    virtual_hosts: &[std::sync::Arc<trellis_model::ir::VirtualHost>],
) -> BTreeMap<String, Visibility> {
    use trellis_model::ir::RouteAction;
    let mut scopes: BTreeMap<&str, Visibility> = BTreeMap::new();
    for host in virtual_hosts {
        for route in &host.routes {
            let RouteAction::Forward(forward) = &route.action else {
                continue;
            };
            for destination in &forward.destinations {
                let scope = scopes
                    .entry(destination.upstream.as_str())
                    .or_insert_with(|| Some(Vec::new()));
                match (scope.as_mut(), &host.workspaces) {
                    (Some(list), Some(more)) => list.extend(more.iter().cloned()),
                    _ => *scope = None,
                }
            }
        }
    }
    scopes
        .into_iter()
        .map(|(name, scope)| {
            let scope = scope.map(|list| list.into_iter().collect::<BTreeSet<_>>().into_iter().collect());
            (name.to_string(), scope)
        })
        .collect()
}

/// Service isolation as inbound policies: for each workload of an isolated workspace that no
/// AccessPolicy already governs, accept only callers from the allowed workspaces' namespaces.
pub(crate) fn isolation_policies(
    workspaces: &Workspaces,
    snapshot: &Snapshot,
    cluster: &str,
    access: &[trellis_model::policy::InboundPolicy],
) -> Vec<trellis_model::policy::InboundPolicy> {
    use trellis_model::policy::{AuthzRule, InboundPolicy, TlsMode};
    let mut out = Vec::new();
    let all_namespaces: Vec<(String, String)> = snapshot
        .clusters()
        .iter()
        .flat_map(|c| workspaces.namespaces_of_cluster(snapshot, c))
        .collect();
    for (workspace, callers) in workspaces.isolated() {
        // The callers' namespaces with workloads, and those their Workspaces name: a gateway
        // runs in one of these (it is a workload of its workspace, as in Gloo) without being
        // discovered as a service's workload.
        let mut principals: Vec<String> = all_namespaces
            .iter()
            .filter(|(_, ws)| callers.contains(ws))
            .map(|(ns, _)| format!("spiffe://{}/ns/{ns}/sa/", snapshot.trust_domain))
            .chain(
                callers
                    .iter()
                    .flat_map(|caller| workspaces.named_namespace_principals(snapshot, caller, &snapshot.trust_domain)),
            )
            .collect();
        principals.sort();
        principals.dedup();
        let Some(discovery) = snapshot.discovery.get(cluster) else {
            continue;
        };
        for workload in &discovery.workloads {
            if workspaces.of(snapshot, cluster, &workload.namespace) != Some(workspace.as_str()) {
                continue;
            }
            let governed = access.iter().any(|p| {
                p.rules.is_some()
                    && !p.dry_run
                    && (p.namespace.is_empty() || p.namespace == workload.namespace)
                    && (p.service.is_empty() || p.service == workload.service)
                    && p.labels.iter().all(|(k, v)| workload.labels.get(k) == Some(v))
            });
            if governed {
                continue;
            }
            out.push(InboundPolicy {
                name: format!("workspace/{workspace}/service-isolation"),
                namespace: workload.namespace.clone(),
                service: workload.service.clone(),
                labels: workload.labels.clone(),
                tls_mode: Some(TlsMode::Strict),
                rules: Some(vec![AuthzRule {
                    principals: principals.clone(),
                    ..Default::default()
                }]),
                dry_run: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (pattern, name, matches) in [
            ("*", "x", true),
            ("team-*", "team-a", true),
            ("team-*", "ops", false),
            ("a", "a", true),
            ("a", "ab", false),
        ] {
            assert_eq!(glob(pattern, name), matches, "{pattern} {name}");
        }
    }
}
