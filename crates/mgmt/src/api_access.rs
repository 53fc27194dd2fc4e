//! Authorization and audit for the API. Resource endpoints are authorized per resource in their
//! handlers (the kind and namespace are in the body); the other endpoints by route here. Every
//! change and every refusal lands in the audit log, in the store.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trellis_api::{Kind, Resource};
use trellis_rbac::{Decision, Policy};
use trellis_store::{AuditRecord, AuditRetention};

use super::Mgmt;
use super::api_auth::{Identity, OidcVerifier};

/// The API group of Trellis's own endpoints in RBAC rules.
pub const TRELLIS_GROUP: &str = "trellis.io";

pub struct ApiAccess {
    pub admin_token_hash: String,
    pub oidc: Option<OidcVerifier>,
    /// The web UI's browser login, with `--oidc-client-secret-file`.
    pub ui_login: Option<super::ui::UiLogin>,
    /// `--prometheus-url`: where the service graph's live rates come from.
    pub prometheus_url: Option<String>,
    pub retention: AuditRetention,
    /// Held from admission to write (applies, deletes, registrations): two writers cannot both
    /// pass admission against the same state and then store a combination admission never saw.
    /// Applies and deletes also hold the store's lock ([`ApiAccess::lock_writes`]), one for
    /// every replica.
    pub write_lock: tokio::sync::Mutex<()>,
    /// Refusals audited this minute, per user: (minute, user -> count).
    pub refusal_budget: std::sync::Mutex<(u64, std::collections::HashMap<String, u32>)>,
    /// What `trellis check` reports about the server's listeners.
    pub doors: Doors,
    /// The image the sidecar injector adds to pods (`--injection-image`).
    pub injection_image: String,
}

/// The write lock of an apply or a delete: this replica's, then the store's (across replicas).
pub struct WriteGuard<'a> {
    _store: trellis_store::WriteLock,
    _local: tokio::sync::MutexGuard<'a, ()>,
}

impl ApiAccess {
    /// Takes the write lock for admission and write: this replica's first (so that its own
    /// writers queue here), then the store's, which on a replicated store waits for other
    /// replicas' writers and for this replica's view to hold their writes.
    pub async fn lock_writes(
        &self,
        store: &std::sync::Arc<dyn trellis_store::Store>,
    ) -> Result<WriteGuard<'_>, trellis_store::StoreError> {
        let local = self.write_lock.lock().await;
        let store = store.clone();
        let shared = tokio::task::spawn_blocking(move || store.lock_writes())
            .await
            .map_err(|e| trellis_store::StoreError::Transaction(format!("the write lock: {e}")))??;
        Ok(WriteGuard {
            _store: shared,
            _local: local,
        })
    }
}

/// The management server's listeners and trust anchors, as `trellis check` judges them.
#[derive(Debug, Clone)]
pub struct Doors {
    pub api_addr: std::net::SocketAddr,
    pub api_tls: bool,
    pub api_client_certificates: bool,
    pub api_oidc: bool,
    pub admin_addr: std::net::SocketAddr,
    pub relay_addr: std::net::SocketAddr,
    pub production: bool,
    /// Self-signed CAs the server generated itself (not the operator's).
    pub generated_cas: Vec<&'static str>,
    /// What the operator declared about the deployment, for insights.
    pub declared: super::config::Declared,
}

/// Kinds whose effect is not confined to the namespace they are stored in, authorized as
/// cluster-wide: a KubernetesCluster is a cluster, and a Workspace decides which namespaces
/// every workspace-scoped binding reaches (one in a team's namespace claiming another team's
/// namespaces would widen that team's own rights).
pub fn cluster_wide(kind: Kind) -> bool {
    kind.cluster_scoped() || matches!(kind, Kind::KubernetesCluster | Kind::Workspace)
}

/// One permission a request needs.
#[derive(Debug, Clone)]
pub struct Permission {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Permission {
    /// On a kind: the API group and plural RBAC rules name; cluster-scoped kinds have no namespace.
    pub fn on_kind(verb: &'static str, kind: Kind, namespace: &str, name: Option<&str>) -> Permission {
        Permission {
            verb,
            group: kind.group().to_string(),
            resource: kind.plural().to_string(),
            namespace: (!cluster_wide(kind)).then(|| namespace.to_string()),
            name: name.map(str::to_string),
        }
    }

    fn on_trellis(verb: &'static str, resource: &str) -> Permission {
        Permission {
            verb,
            group: TRELLIS_GROUP.into(),
            resource: resource.into(),
            namespace: None,
            name: None,
        }
    }

    /// As the RBAC engine reads it.
    pub fn request(&self) -> trellis_rbac::Request<'_> {
        trellis_rbac::Request {
            verb: self.verb,
            group: &self.group,
            resource: &self.resource,
            namespace: self.namespace.as_deref(),
            name: self.name.as_deref(),
        }
    }

    pub fn target(&self) -> String {
        let mut target = self.resource.clone();
        if let Some(namespace) = &self.namespace {
            target = format!("{target}/{namespace}");
        }
        if let Some(name) = &self.name {
            target = format!("{target}/{name}");
        }
        target
    }
}

/// How a route is authorized. Every route of the API is listed here: one this table does not
/// know is refused, so a route added later cannot be open by omission.
#[derive(Debug)]
enum RouteAccess {
    /// Needs this permission; changes carry their audit action.
    Permission(Permission, Option<&'static str>),
    /// Authorized per resource by its handler (the kind and namespace come from the request).
    InHandler,
    /// Any authenticated caller: what it answers is about the server, not any resource.
    AnyIdentity,
    /// `/healthz`.
    Public,
}

fn route_access(method: &Method, path: &str) -> Option<RouteAccess> {
    // HEAD runs the GET handler: it needs what GET needs.
    let method = if method == Method::HEAD { &Method::GET } else { method };
    // Names are checked as written; an encoded one would be checked as one name and acted on as
    // another. No valid name holds a '%'.
    if path.contains('%') {
        return None;
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let cluster = |verb, name: &str, action| {
        let mut permission = Permission::on_kind(verb, Kind::KubernetesCluster, "", Some(name));
        permission.name = Some(name.to_string());
        Some(RouteAccess::Permission(permission, Some(action)))
    };
    let trellis = |verb, resource| Some(RouteAccess::Permission(Permission::on_trellis(verb, resource), None));
    match (method, parts.as_slice()) {
        (&Method::GET, ["healthz"]) => Some(RouteAccess::Public),
        (&Method::GET, ["api", "v1", "version" | "whoami"]) => Some(RouteAccess::AnyIdentity),
        (&Method::GET, ["api", "v1", "graph"]) => trellis("get", "metrics"),
        (&Method::GET, ["api", "v1", "clusters", _, "proxies", _, "config"]) => trellis("get", "proxyconfigs"),
        (&Method::GET, ["api", "v1", "clusters"]) => trellis("list", "clusters"),
        (&Method::POST, ["api", "v1", "clusters", name, "register"]) => cluster("create", name, "register"),
        (&Method::POST, ["api", "v1", "clusters", name, "rotate"]) => cluster("update", name, "rotate"),
        (&Method::POST, ["api", "v1", "clusters", name, "deregister"]) => cluster("delete", name, "deregister"),
        (&Method::GET, ["api", "v1", "check"]) => trellis("get", "checks"),
        (&Method::GET, ["api", "v1", "insights"]) => trellis("get", "insights"),
        (&Method::GET, ["api", "v1", "insights", "silences"]) => trellis("list", "insightsilences"),
        (&Method::POST, ["api", "v1", "insights", "silences"]) => Some(RouteAccess::Permission(
            Permission::on_trellis("create", "insightsilences"),
            Some("insight-silence"),
        )),
        (&Method::DELETE, ["api", "v1", "insights", "silences"]) => Some(RouteAccess::Permission(
            Permission::on_trellis("delete", "insightsilences"),
            Some("insight-unsilence"),
        )),
        (&Method::GET, ["api", "v1", "translation"]) => trellis("get", "translations"),
        (&Method::POST, ["api", "v1", "admission", "validate"] | ["api", "v1", "admission", "inject", _]) => {
            trellis("create", "admissionreviews")
        }
        (&Method::POST, ["api", "v1", "apply" | "delete"])
        | (&Method::GET, ["api", "v1", "resources"])
        | (&Method::GET | &Method::DELETE, ["api", "v1", "resources", _, _, _])
        | (&Method::GET, ["api", "v1", "describe", _, _, _])
        | (&Method::GET | &Method::POST, ["api", "v1", "tokens"])
        | (&Method::DELETE, ["api", "v1", "tokens", _])
        | (&Method::GET, ["api", "v1", "audit"]) => Some(RouteAccess::InHandler),
        _ => None,
    }
}

/// The workspace that owns config kept in `namespace`, from the stored Workspaces.
fn workspace_owner(stored: &[Resource]) -> impl Fn(&str) -> Option<String> + '_ {
    let snapshot = trellis_model::Snapshot::new(
        stored
            .iter()
            .filter(|r| matches!(r.kind(), Kind::Workspace | Kind::KubernetesCluster))
            .cloned()
            .collect(),
        Default::default(),
    );
    move |namespace| trellis_translate::workspace_of_config_namespace(&snapshot, namespace)
}

/// Decides `permissions` (all must be allowed) for `identity` against the stored RBAC objects.
/// `Err` is the first refusal's message.
pub fn authorize(stored: &[Resource], identity: &Identity, permissions: &[Permission]) -> Result<(), String> {
    let policy = Policy::from_resources(stored);
    let owner = workspace_owner(stored);
    let user = identity.rbac_user();
    for permission in permissions {
        if let Decision::Deny { reason } = policy.authorize(&user, &permission.request(), &owner) {
            return Err(reason);
        }
    }
    Ok(())
}

/// Trellis's own endpoints as RBAC resources of [`TRELLIS_GROUP`].
const TRELLIS_RESOURCES: [&str; 10] = [
    "admissionreviews",
    "apitokens",
    "auditevents",
    "checks",
    "clusters",
    "insights",
    "insightsilences",
    "metrics",
    "proxyconfigs",
    "translations",
];

/// Every (API group, resource) the API serves: what RBAC wildcards expand to.
fn universe() -> Vec<(&'static str, &'static str)> {
    Kind::ALL
        .iter()
        .map(|kind| (kind.group(), kind.plural()))
        .chain(TRELLIS_RESOURCES.iter().map(|resource| (TRELLIS_GROUP, *resource)))
        .collect()
}

/// Refuses RBAC objects that would grant more than `identity` holds (Kubernetes' escalation
/// check): a Role or RoleBinding in its namespace, a ClusterRole or ClusterRoleBinding
/// everywhere (a workspace-scoped binding too, since the workspace's namespaces can change).
pub fn check_escalation(stored: &[Resource], identity: &Identity, resources: &[Resource]) -> Result<(), String> {
    let (policy, owner) = policy_for(stored);
    let universe = universe();
    let user = identity.rbac_user();
    for resource in resources {
        let namespace = resource.metadata.namespace.as_str();
        let (rules, scope) = match &resource.spec {
            trellis_api::Spec::Role(spec) => (spec.rules.clone(), Some(namespace)),
            trellis_api::Spec::ClusterRole(spec) => (spec.rules.clone(), None),
            trellis_api::Spec::RoleBinding(spec) => (policy.rules_of(&spec.role_ref, Some(namespace)), Some(namespace)),
            trellis_api::Spec::ClusterRoleBinding(spec) => (policy.rules_of(&spec.role_ref, None), None),
            _ => continue,
        };
        policy
            .covers(&user, &rules, scope, &universe, &owner)
            .map_err(|reason| format!("{}: {reason}", resource.key()))?;
    }
    Ok(())
}

/// Whether `identity` may do `permission`; for filtering lists.
pub fn allowed(
    policy: &Policy,
    owner: &dyn Fn(&str) -> Option<String>,
    identity: &Identity,
    permission: &Permission,
) -> bool {
    matches!(
        policy.authorize(&identity.rbac_user(), &permission.request(), owner),
        Decision::Allow { .. }
    )
}

/// A policy and workspace owner map for many checks against one state.
pub fn policy_for(stored: &[Resource]) -> (Policy, impl Fn(&str) -> Option<String> + '_) {
    (Policy::from_resources(stored), workspace_owner(stored))
}

/// Appends one record to the audit log. A failure to record is logged, never hidden: the change
/// itself already happened (or was refused) and the caller's answer must say so.
pub fn record(
    mgmt: &Mgmt,
    identity: &Identity,
    action: &str,
    target: String,
    result: &str,
    message: String,
    diff: Vec<Value>,
) {
    let entry = AuditRecord {
        seq: 0,
        time: trellis_support::unix_now(),
        user: identity.user.clone(),
        groups: identity.groups.clone(),
        authenticated_by: identity.method.into(),
        action: action.into(),
        target: target.clone(),
        result: result.into(),
        message,
        diff,
    };
    tracing::info!(user = %identity.user, action, target = %target, result, "audit");
    if let Err(error) = mgmt
        .store
        .append_audit(entry, mgmt.api.retention, trellis_support::unix_now())
    {
        tracing::error!(%error, action, target = %target, "cannot write the audit record");
    }
}

/// How many refusals of one user per minute the audit log records; the rest are counted. Any
/// signed-in caller can provoke refusals, and they must not push real changes out of the log.
const REFUSALS_PER_MINUTE: u32 = 30;

/// Audits a refusal (`denied` by RBAC, or `rejected` as invalid), within the per-user budget.
pub fn record_refusal(mgmt: &Mgmt, identity: &Identity, action: &str, target: String, result: &str, message: String) {
    let minute = trellis_support::unix_now() / 60;
    let within_budget = {
        let mut budget = mgmt.api.refusal_budget.lock().expect("refusal budget lock");
        if budget.0 != minute {
            *budget = (minute, Default::default());
        }
        let count = budget.1.entry(identity.user.clone()).or_insert(0);
        *count += 1;
        *count <= REFUSALS_PER_MINUTE
    };
    if within_budget {
        record(mgmt, identity, action, target, result, message, Vec::new());
    } else {
        mgmt.metrics.api_refusals_unaudited_total.inc();
        tracing::debug!(user = %identity.user, action, "refusal not audited: over the per-user budget");
    }
}

/// Refuses with 403 (and audits the refusal).
pub fn forbidden(mgmt: &Mgmt, identity: &Identity, action: &str, target: String, reason: String) -> Response {
    mgmt.metrics.api_forbidden_total.inc();
    record_refusal(mgmt, identity, action, target, "denied", reason.clone());
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": format!("forbidden: {reason}")})),
    )
        .into_response()
}

/// Middleware for the routes [`route_permission`] knows: authorizes, then audits changes.
pub async fn authorize_route(State(mgmt): State<Arc<Mgmt>>, request: Request, next: Next) -> Response {
    let (permission, action) = match route_access(request.method(), request.uri().path()) {
        Some(RouteAccess::Permission(permission, action)) => (permission, action),
        Some(RouteAccess::InHandler | RouteAccess::AnyIdentity | RouteAccess::Public) => {
            return next.run(request).await;
        }
        None => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "no such endpoint (see the API table in `trellis --help` and the README)"})),
            )
                .into_response();
        }
    };
    let Some(identity) = request.extensions().get::<Identity>().cloned() else {
        return (StatusCode::UNAUTHORIZED, "unauthenticated").into_response();
    };
    let reading = mgmt.clone();
    let checking = identity.clone();
    let needed = permission.clone();
    let decision = tokio::task::spawn_blocking(move || -> anyhow::Result<Result<(), String>> {
        Ok(authorize(&reading.stored()?, &checking, std::slice::from_ref(&needed)))
    })
    .await;
    match decision {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(reason))) => {
            return forbidden(
                &mgmt,
                &identity,
                action.unwrap_or(permission.verb),
                permission.target(),
                reason,
            );
        }
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "authorization failed; see the server log",
            )
                .into_response();
        }
    }
    let Some(action) = action else {
        return next.run(request).await;
    };
    // Changes hold the write lock, so that the audit order is the order of the changes.
    let _write = mgmt.api.write_lock.lock().await;
    let response = next.run(request).await;
    let result = match response.status() {
        status if status.is_success() => "ok",
        status if status.is_client_error() => "rejected",
        _ => "failed",
    };
    let recording = mgmt.clone();
    let message = format!("HTTP {}", response.status().as_u16());
    let _ = tokio::task::spawn_blocking(move || {
        record(
            &recording,
            &identity,
            action,
            permission.target(),
            result,
            message,
            Vec::new(),
        )
    })
    .await;
    response
}

/// The fields that differ between two versions of a resource: `[{path, before, after}]`, at
/// most [`MAX_DIFF_ENTRIES`]. Secret values must be redacted by the caller.
pub fn diff(before: &Value, after: &Value) -> Vec<Value> {
    let mut entries = Vec::new();
    walk("", before, after, &mut entries);
    entries
}

const MAX_DIFF_ENTRIES: usize = 64;

fn walk(path: &str, before: &Value, after: &Value, entries: &mut Vec<Value>) {
    if before == after || entries.len() >= MAX_DIFF_ENTRIES {
        return;
    }
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let null = Value::Null;
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(
                    &child,
                    a.get(key).unwrap_or(&null),
                    b.get(key).unwrap_or(&null),
                    entries,
                );
            }
        }
        _ => entries.push(json!({"path": path, "before": before, "after": after})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_leaves_only() {
        let before = json!({"spec": {"http": [{"weight": 80}], "hosts": ["a"]}, "metadata": {"name": "x"}});
        let after = json!({"spec": {"http": [{"weight": 20}], "hosts": ["a"], "new": true}, "metadata": {"name": "x"}});
        let entries = diff(&before, &after);
        assert_eq!(
            entries,
            vec![
                json!({"path": "spec.http", "before": [{"weight": 80}], "after": [{"weight": 20}]}),
                json!({"path": "spec.new", "before": null, "after": true}),
            ]
        );
    }

    #[test]
    fn every_route_is_authorized_and_unknown_ones_are_refused() {
        let Some(RouteAccess::Permission(permission, action)) =
            route_access(&Method::POST, "/api/v1/clusters/c1/register")
        else {
            panic!("register needs a permission")
        };
        assert_eq!(
            (permission.verb, permission.resource.as_str(), action),
            ("create", "kubernetesclusters", Some("register"))
        );
        // HEAD is authorized as GET.
        let Some(RouteAccess::Permission(permission, _)) = route_access(&Method::HEAD, "/api/v1/translation") else {
            panic!("HEAD of the translation needs a permission")
        };
        assert_eq!(permission.verb, "get");
        assert!(matches!(
            route_access(&Method::GET, "/api/v1/resources"),
            Some(RouteAccess::InHandler)
        ));
        assert!(matches!(
            route_access(&Method::GET, "/healthz"),
            Some(RouteAccess::Public)
        ));
        assert!(matches!(
            route_access(&Method::GET, "/api/v1/version"),
            Some(RouteAccess::AnyIdentity)
        ));
        // Anyone may be allowed to read insights; silencing them is a change of its own.
        let Some(RouteAccess::Permission(read, None)) = route_access(&Method::GET, "/api/v1/insights") else {
            panic!("reading insights needs a permission")
        };
        assert_eq!((read.verb, read.resource.as_str()), ("get", "insights"));
        for (method, verb, action) in [
            (Method::POST, "create", "insight-silence"),
            (Method::DELETE, "delete", "insight-unsilence"),
        ] {
            let Some(RouteAccess::Permission(permission, Some(audited))) =
                route_access(&method, "/api/v1/insights/silences")
            else {
                panic!("{method} of a silence needs a permission and is audited")
            };
            assert_eq!(
                (permission.verb, permission.resource.as_str(), audited),
                (verb, "insightsilences", action)
            );
        }
        for (method, path) in [
            (Method::PUT, "/api/v1/insights/silences"),
            (Method::GET, "/api/v1/secret-backdoor"),
            (Method::PUT, "/api/v1/apply"),
            (Method::GET, "/api/v2/resources"),
            (Method::POST, "/api/v1/clusters/c1/unknown"),
            (Method::POST, "/api/v1/clusters/c%2D1/register"),
        ] {
            assert!(route_access(&method, path).is_none(), "{method} {path}");
        }
    }
}
