//! Workspaces: which workspace a namespace (of a cluster) belongs to, what each workspace may
//! see, and who may call an isolated one.
//!
//! - A Workspace selects clusters (`name` glob or KubernetesCluster labels) and, in them,
//!   namespaces (`name` glob; none listed: all). The first Workspace (oldest) that selects a
//!   namespace owns it.
//! - Config (a VirtualDestination, a RouteTable, an ExternalService) belongs to the workspace
//!   owning its namespace, and is visible to that workspace and to every workspace it exports
//!   to that also imports from it (`WorkspaceSettings.exportTo` / `importFrom`, workspaces by
//!   name glob and/or Workspace labels). An entry's `resources` narrow what crosses to the
//!   resources they select (kind, name, namespace, cluster, labels); the export and the import
//!   must both let a resource through. Config in no workspace is visible to nobody once
//!   Workspaces exist; with no Workspace at all, everything is visible to everyone.
//! - `options.federation.enabled`: every service of the workspace (or those `serviceSelector`
//!   picks) in every cluster gets a mesh host name `<service>.<namespace>.<cluster>.<hostSuffix>`
//!   (default suffix `global`) on its `ports` (none listed: every port), visible like the service.
//! - `options.serviceIsolation.enabled`: a workload of the workspace accepts only callers from
//!   its own workspace and from the workspaces its service is shared with, over strict mTLS.
//! - The WorkspaceSettings named `global` in the admin namespace (`trellis`, or Gloo's
//!   `gloo-mesh`) applies to every workspace: its `importFrom` / `exportTo` entries are added to
//!   each workspace's, and the options it sets replace the workspace's own. Gloo: "global
//!   workspace settings override settings defined in individual workspaces"
//!   (https://github.com/solo-io/solo-apis/blob/main/api/gloo.solo.io/admin/v2/workspace_settings.proto).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use trellis_api::{
    ClusterSelector, Federation, ObjectSelector, PortSelector, Resource, SharedKind, Spec, TypedObjectSelector,
    WorkspaceObjectSelector, WorkspaceSelector, WorkspaceSettingsSpec,
};
use trellis_model::Snapshot;
use trellis_model::ir::Visibility;

/// Host suffix of federated names when `hostSuffix` is not set.
pub(crate) const FEDERATION_SUFFIX: &str = "global";

/// The name of the WorkspaceSettings that applies to every workspace.
pub(crate) const GLOBAL_SETTINGS: &str = "global";
/// Gloo's admin namespace, where its docs put the `global` WorkspaceSettings.
const GLOO_ADMIN_NAMESPACE: &str = "gloo-mesh";

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
    /// The Workspace resource's labels, for `workspaces[].selector`.
    labels: BTreeMap<String, String>,
    clusters: Vec<ClusterSelector>,
    imports: Vec<WorkspaceObjectSelector>,
    exports: Vec<WorkspaceObjectSelector>,
    isolation: bool,
    /// `options.federation`, when enabled.
    federation: Option<Federation>,
    /// `options.virtualDestClientMode` is `tlsTermination`: the default of its VirtualDestinations.
    terminates_tls: bool,
}

/// One resource as `importFrom` / `exportTo` `resources[]` selectors see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared<'a> {
    pub kind: SharedKind,
    pub name: &'a str,
    pub namespace: &'a str,
    /// The cluster of a service; `None` for config, which is mesh-wide in Trellis (a selector's
    /// `cluster` is not checked against it).
    pub cluster: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> Shared<'a> {
    /// The kinds that can be shared; `None` for the rest (policies, settings, ...).
    pub(crate) fn resource(resource: &'a Resource) -> Option<Self> {
        let kind = match resource.spec {
            Spec::VirtualDestination(_) => SharedKind::VirtualDestination,
            Spec::RouteTable(_) => SharedKind::RouteTable,
            Spec::ExternalService(_) => SharedKind::ExternalService,
            _ => return None,
        };
        Some(Shared {
            kind,
            name: &resource.metadata.name,
            namespace: &resource.metadata.namespace,
            cluster: None,
            labels: &resource.metadata.labels,
        })
    }

    pub(crate) fn service(service: &'a trellis_model::snapshot::Service<'_>) -> Self {
        Shared {
            kind: SharedKind::Service,
            name: service.name,
            namespace: service.namespace,
            cluster: Some(service.cluster),
            labels: &service.labels,
        }
    }
}

/// A workspace's federation: (workspace, host suffix, service selectors, ports).
pub(crate) struct Federated<'w> {
    pub workspace: &'w str,
    pub suffix: &'w str,
    /// None: every service of the workspace.
    pub selectors: &'w [ObjectSelector],
    /// None: every port.
    pub ports: &'w [PortSelector],
}

impl Federated<'_> {
    /// True when a `serviceSelector` entry picks the service of workspace `owner` (its
    /// `workspace` field, which `ObjectSelector::matches` leaves out, included).
    fn selects(&self, service: &trellis_model::snapshot::Service<'_>, owner: &str) -> bool {
        self.selectors.iter().any(|s| {
            s.matches(&service.labels, service.name, service.namespace, service.cluster)
                && (s.workspace.is_empty() || s.workspace == owner)
        })
    }

    /// True when the port (number and name) of a federated service gets a federated name.
    pub(crate) fn federates_port(&self, number: u16, name: &str) -> bool {
        self.ports.is_empty()
            || self.ports.iter().any(|p| {
                p.number.is_some_and(|n| n == u32::from(number)) || p.name.as_deref().is_some_and(|n| n == name)
            })
    }
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

/// True when the WorkspaceSettings is the `global` one (Gloo: named `global` in the admin
/// namespace).
pub(crate) fn is_global_settings(resource: &Resource) -> bool {
    resource.metadata.name == GLOBAL_SETTINGS
        && (resource.metadata.namespace == trellis_api::ADMIN_NAMESPACE
            || resource.metadata.namespace == GLOO_ADMIN_NAMESPACE)
}

/// A `workspaces[]` entry: name glob and/or Workspace labels, both when both are given. One
/// with neither selects nothing (validation refuses it).
fn selects_workspace(selector: &WorkspaceSelector, ws: &Workspace) -> bool {
    (!selector.name.is_empty() || !selector.selector.is_empty())
        && (selector.name.is_empty() || glob(&selector.name, &ws.name))
        && selector.selector.iter().all(|(k, v)| ws.labels.get(k) == Some(v))
}

/// A `resources[]` entry: kind (`ALL`: any), exact name and namespace, cluster, labels.
fn selects_resource(selector: &TypedObjectSelector, object: &Shared<'_>) -> bool {
    (selector.kind == SharedKind::All || selector.kind == object.kind)
        && (selector.name.is_empty() || selector.name == object.name)
        && (selector.namespace.is_empty() || selector.namespace == object.namespace)
        && (selector.cluster.is_empty() || object.cluster.is_none_or(|c| c == selector.cluster))
        && selector.labels.iter().all(|(k, v)| object.labels.get(k) == Some(v))
}

/// True when one `importFrom` / `exportTo` entry names workspace `other` and lets `object`
/// through (no `resources`: everything). Without an object, whether the entry names `other`.
fn entry_admits(entry: &WorkspaceObjectSelector, other: &Workspace, object: Option<&Shared<'_>>) -> bool {
    entry.workspaces.iter().any(|s| selects_workspace(s, other))
        && object.is_none_or(|o| entry.resources.is_empty() || entry.resources.iter().any(|r| selects_resource(r, o)))
}

/// Folds one WorkspaceSettings into a workspace's: entries add up; options set replace.
fn merge_settings(ws: &mut Workspace, settings: &WorkspaceSettingsSpec, replace_options: bool) {
    ws.imports.extend(settings.import_from.iter().cloned());
    ws.exports.extend(settings.export_to.iter().cloned());
    let Some(options) = &settings.options else {
        return;
    };
    if let Some(isolation) = &options.service_isolation {
        ws.isolation = if replace_options {
            isolation.enabled
        } else {
            ws.isolation || isolation.enabled
        };
    }
    if let Some(mode) = &options.virtual_dest_client_mode {
        ws.terminates_tls = mode.get("tlsTermination").is_some();
    }
    if let Some(federation) = &options.federation {
        if federation.enabled {
            ws.federation = Some(federation.clone());
        } else if replace_options {
            ws.federation = None;
        }
    }
}

impl Workspaces {
    pub(crate) fn from(snapshot: &Snapshot) -> Self {
        let list: Vec<Workspace> = snapshot
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Workspace(spec) => Some(Workspace {
                    name: r.metadata.name.clone(),
                    labels: r.metadata.labels.clone(),
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
        // A KubernetesCluster's labels are those of its cluster, discovered (agent connected)
        // or not yet.
        for r in &snapshot.resources {
            if matches!(r.spec, Spec::KubernetesCluster(_)) {
                clusters.insert(r.metadata.name.clone(), r.metadata.labels.clone());
            }
        }
        let mut workspaces = Workspaces {
            list,
            clusters,
            ..Default::default()
        };
        let mut global = None;
        for resource in &snapshot.resources {
            let Spec::WorkspaceSettings(settings) = &resource.spec else {
                continue;
            };
            if is_global_settings(resource) {
                global = Some(settings);
                continue;
            }
            let Some(owner) = workspaces
                .of_config_namespace(snapshot, &resource.metadata.namespace)
                .map(str::to_string)
            else {
                continue;
            };
            let Some(ws) = workspaces.list.iter_mut().find(|w| w.name == owner) else {
                continue;
            };
            merge_settings(ws, settings, false);
        }
        // Applied last, so that its options win over each workspace's own.
        if let Some(global) = global {
            for ws in &mut workspaces.list {
                merge_settings(ws, global, true);
            }
        }
        workspaces
    }

    /// Whether the VirtualDestinations of `config_namespace`'s workspace that set no `clientMode`
    /// of their own end TLS at east-west gateways (`options.virtualDestClientMode`).
    pub(crate) fn vd_tls_termination_by_default(&self, snapshot: &Snapshot, config_namespace: &str) -> bool {
        self.of_config_namespace(snapshot, config_namespace)
            .and_then(|owner| self.list.iter().find(|w| w.name == owner))
            .is_some_and(|ws| ws.terminates_tls)
    }

    /// Federation of each workspace that enables it.
    pub(crate) fn federations(&self) -> Vec<Federated<'_>> {
        self.list
            .iter()
            .filter_map(|w| {
                w.federation.as_ref().map(|f| Federated {
                    workspace: &w.name,
                    suffix: if f.host_suffix.is_empty() {
                        FEDERATION_SUFFIX
                    } else {
                        &f.host_suffix
                    },
                    selectors: &f.service_selector,
                    ports: &f.ports,
                })
            })
            .collect()
    }

    /// Whether `federated` names `service`, and if so who sees the name: a service of the
    /// federating workspace (every one when no `serviceSelector` is given) is seen as the service
    /// is; a service imported into it that a selector picks, by the federating workspace (Gloo:
    /// "Federated hostnames will be generated for selected imported services").
    pub(crate) fn federated_visibility(
        &self,
        snapshot: &Snapshot,
        federated: &Federated<'_>,
        service: &trellis_model::snapshot::Service<'_>,
    ) -> Option<Visibility> {
        let owner = self.of(snapshot, service.cluster, service.namespace)?;
        if owner == federated.workspace {
            return (federated.selectors.is_empty() || federated.selects(service, owner))
                .then(|| self.visibility_of_service(snapshot, service));
        }
        let imported = !federated.selectors.is_empty()
            && federated.selects(service, owner)
            && self.shares_object(owner, federated.workspace, Some(&Shared::service(service)));
        imported.then(|| Some(vec![federated.workspace.to_string()]))
    }

    /// Who may see config owned by workspace `owner`: every workspace it shares anything with.
    pub(crate) fn visibility_of_workspace(&self, owner: &str) -> Visibility {
        self.visibility_of_object(owner, None)
    }

    /// Who may see `object` (`None`: anything) owned by workspace `owner`.
    fn visibility_of_object(&self, owner: &str, object: Option<&Shared<'_>>) -> Visibility {
        Some(
            self.list
                .iter()
                .filter(|w| w.name == owner || self.shares_object(owner, &w.name, object))
                .map(|w| w.name.clone())
                .collect(),
        )
    }

    /// Who may see a resource: by its own name, labels and kind when it is of a kind that can
    /// be shared, else as the rest of its workspace's config.
    pub(crate) fn visibility_of_resource(&self, snapshot: &Snapshot, resource: &Resource) -> Visibility {
        let Some(object) = Shared::resource(resource) else {
            return self.visibility(snapshot, &resource.metadata.namespace);
        };
        if !self.defined() {
            return None;
        }
        match self.of_config_namespace(snapshot, &resource.metadata.namespace) {
            Some(owner) => self.visibility_of_object(owner, Some(&object)),
            None => Some(Vec::new()),
        }
    }

    /// Who may see a service: its workspace and those it is shared with, as a SERVICE.
    pub(crate) fn visibility_of_service(
        &self,
        snapshot: &Snapshot,
        service: &trellis_model::snapshot::Service<'_>,
    ) -> Visibility {
        if !self.defined() {
            return None;
        }
        match self.of(snapshot, service.cluster, service.namespace) {
            Some(owner) => self.visibility_of_object(owner, Some(&Shared::service(service))),
            None => Some(Vec::new()),
        }
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

    /// True when `object`, kept in `config_namespace` (a RouteTable, say), is available in
    /// `scope`: owned by that workspace or shared with it.
    pub(crate) fn available(
        &self,
        snapshot: &Snapshot,
        scope: PolicyScope<'_>,
        config_namespace: &str,
        object: Option<&Shared<'_>>,
    ) -> bool {
        match scope {
            PolicyScope::Mesh => true,
            PolicyScope::Nothing => false,
            PolicyScope::Workspace(ws) => self
                .of_config_namespace(snapshot, config_namespace)
                .is_some_and(|owner| owner == ws || self.shares_object(owner, ws, object)),
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

    /// True when `owner` shares `object` (`None`: anything) with `consumer`: an export entry
    /// names the consumer and lets the object through, and an import entry of the consumer
    /// names the owner and lets it through too.
    fn shares_object(&self, owner: &str, consumer: &str, object: Option<&Shared<'_>>) -> bool {
        let (Some(o), Some(c)) = (self.get(owner), self.get(consumer)) else {
            return false;
        };
        o.exports.iter().any(|e| entry_admits(e, c, object)) && c.imports.iter().any(|e| entry_admits(e, o, object))
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

    /// True when the workspace has service isolation.
    fn isolated(&self, workspace: &str) -> bool {
        self.get(workspace).is_some_and(|w| w.isolation)
    }

    /// The workspaces whose workloads may call `service` of isolated workspace `owner`: its own
    /// and those it is shared with.
    fn callers(&self, owner: &str, service: &Shared<'_>) -> Vec<String> {
        self.visibility_of_object(owner, Some(service)).unwrap_or_default()
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

/// Both visibilities: everyone when either is; else the workspaces of both, sorted.
pub(crate) fn union(a: Visibility, b: &Visibility) -> Visibility {
    let (mut list, more) = (a?, b.as_ref()?);
    list.extend(more.iter().cloned());
    list.sort();
    list.dedup();
    Some(list)
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
/// AccessPolicy already governs, accept only callers from the namespaces of the workspaces its
/// service is shared with (and its own).
pub(crate) fn isolation_policies(
    workspaces: &Workspaces,
    snapshot: &Snapshot,
    cluster: &str,
    access: &[trellis_model::policy::InboundPolicy],
) -> Vec<trellis_model::policy::InboundPolicy> {
    use trellis_model::policy::{AuthzRule, InboundPolicy, TlsMode};
    let mut out = Vec::new();
    let Some(discovery) = snapshot.discovery.get(cluster) else {
        return out;
    };
    let isolated_here = discovery.workloads.iter().any(|w| {
        workspaces
            .of(snapshot, cluster, &w.namespace)
            .is_some_and(|ws| workspaces.isolated(ws))
    });
    if !isolated_here {
        return out;
    }
    let all_namespaces: Vec<(String, String)> = snapshot
        .clusters()
        .iter()
        .flat_map(|c| workspaces.namespaces_of_cluster(snapshot, c))
        .collect();
    // The labels a service's workloads share, for `resources[].labels`.
    let services = snapshot.services();
    let service_labels: HashMap<(&str, &str), &BTreeMap<String, String>> = services
        .iter()
        .filter(|s| s.cluster == cluster)
        .map(|s| ((s.namespace, s.name), &s.labels))
        .collect();
    let no_labels = BTreeMap::new();
    // Principals by caller set: most services of a workspace share the same callers.
    let mut principals_of: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for workload in &discovery.workloads {
        let Some(workspace) = workspaces.of(snapshot, cluster, &workload.namespace) else {
            continue;
        };
        if !workspaces.isolated(workspace) {
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
        let service = Shared {
            kind: SharedKind::Service,
            name: &workload.service,
            namespace: &workload.namespace,
            cluster: Some(cluster),
            labels: service_labels
                .get(&(workload.namespace.as_str(), workload.service.as_str()))
                .copied()
                .unwrap_or(&no_labels),
        };
        let callers = workspaces.callers(workspace, &service);
        let principals = principals_of.entry(callers.clone()).or_insert_with(|| {
            // The callers' namespaces with workloads, and those their Workspaces name: a
            // gateway runs in one of these (it is a workload of its workspace, as in Gloo)
            // without being discovered as a service's workload.
            let mut list: Vec<String> =
                all_namespaces
                    .iter()
                    .filter(|(_, ws)| callers.contains(ws))
                    .map(|(ns, _)| format!("spiffe://{}/ns/{ns}/sa/", snapshot.trust_domain))
                    .chain(callers.iter().flat_map(|caller| {
                        workspaces.named_namespace_principals(snapshot, caller, &snapshot.trust_domain)
                    }))
                    .collect();
            list.sort();
            list.dedup();
            list
        });
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

    /// A Workspace selecting clusters by label, over a cluster whose agent is connected (it is
    /// in discovery) and one that is not.
    fn owners_by_region(labelled: &str) -> (Option<String>, Option<String>) {
        let yaml = format!(
            "apiVersion: admin.gloo.solo.io/v2
kind: KubernetesCluster
metadata: {{name: {labelled}, namespace: gloo-mesh, labels: {{region: us-east}}}}
spec: {{clusterDomain: cluster.local}}
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {{name: web, namespace: gloo-mesh}}
spec:
  workloadClusters: [{{selector: {{region: us-east}}, namespaces: [{{name: web}}]}}]
"
        );
        let resources = trellis_api::parse_documents("ws.yaml", &yaml).unwrap();
        let discovery = BTreeMap::from([(
            "cluster-1".to_string(),
            trellis_model::ClusterDiscovery {
                cluster: "cluster-1".to_string(),
                ..Default::default()
            },
        )]);
        let snapshot = Snapshot::new(resources, discovery);
        let workspaces = Workspaces::from(&snapshot);
        let owner = |cluster: &str| workspaces.of(&snapshot, cluster, "web").map(str::to_string);
        (owner("cluster-1"), owner("cluster-2"))
    }

    #[test]
    fn cluster_labels_select_discovered_and_undiscovered_clusters() {
        assert_eq!(owners_by_region("cluster-1"), (Some("web".to_string()), None));
        assert_eq!(owners_by_region("cluster-2"), (None, Some("web".to_string())));
    }
}
