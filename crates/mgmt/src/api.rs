//! The REST API. Errors are mapped to responses in one place ([`ApiFailure`]); bodies are JSON.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | /api/v1/apply?source=NAME | create or update every resource in a YAML/JSON body, all or nothing |
//! | POST | /api/v1/delete?source=NAME | delete every resource named in a YAML/JSON body |
//! | GET | /api/v1/resources[?kind=K] | list |
//! | GET, DELETE | /api/v1/resources/{kind}/{namespace}/{name} | one resource |
//! | GET | /api/v1/describe/{kind}/{namespace}/{name} | a resource, its status and its delivery to proxies |
//! | GET | /api/v1/clusters | agents: connection, config versions, workloads |
//! | POST | /api/v1/clusters/{name}/register?ttl=1h | record a new cluster (409 if it exists); a one-time token for its agent |
//! | POST | /api/v1/clusters/{name}/rotate?ttl=1h | revoke a registered cluster's certificates, intermediate and tokens; a new token |
//! | POST | /api/v1/clusters/{name}/deregister | revoke the cluster's certificates and close its relay stream |
//! | GET | /api/v1/clusters/{name}/proxies/{id}/config | a proxy's live Envoy config dump, read by its agent |
//! | GET | /api/v1/check | what `trellis check` reports: relay mode, certificate expiry, agents |
//! | GET | /api/v1/insights[?all=true] | coded insights (see [`super::insights`]) |
//! | GET, POST, DELETE | /api/v1/insights/silences | list, add, lift insight silences (admin) |
//! | GET | /api/v1/translation | per-cluster IR and warnings, for debugging |
//! | POST, GET | /api/v1/tokens | issue an API token (shown once); list tokens |
//! | DELETE | /api/v1/tokens/{name} | revoke a token |
//! | GET | /api/v1/audit?user=&action=&result=&target=&limit= | the audit log |
//! | GET | /api/v1/version | the server's version (any authenticated caller) |
//! | GET | /api/v1/whoami | the caller's user, groups and how they authenticated |
//! | GET | /api/v1/graph | the service graph: request rate, errors and p99 per edge, from `--prometheus-url` |
//! | GET | /, /ui/... | the web UI ([`super::ui`]): pages without data, and its login |
//! | GET | /healthz | liveness; the only endpoint without authentication |
//!
//! Every other request is authenticated ([`super::api_auth`]) and authorized by RBAC
//! ([`super::api_access`]); every change and every refusal is audited.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use tracing::Instrument;

use axum::Extension;
use trellis_api::{ApiError, DocumentError, Kind, Resource, ResourceKey};

use super::api_access::{Permission, authorize, record};
use super::api_auth::Identity;

use super::Mgmt;
use super::metrics::ResultLabel;
use super::pki::RelaySecurity;
use super::translator::Published;

/// Request bodies above this are refused (413) before they are read whole.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Resources in one apply or delete: more is a script gone wrong or an attack on admission.
const MAX_DOCUMENTS: usize = 1000;
/// Errors listed in one answer, and bytes of each message.
const MAX_ERRORS: usize = 100;
const MAX_ERROR_BYTES: usize = 1024;

/// Refuses a batch of more than [`MAX_DOCUMENTS`] resources.
fn bounded(source: &str, count: usize) -> Result<(), ApiFailure> {
    if count > MAX_DOCUMENTS {
        return Err(ApiFailure::BadRequest(format!(
            "{source}: {count} resources in one request; at most {MAX_DOCUMENTS}: split it into several"
        )));
    }
    Ok(())
}

pub fn router(mgmt: Arc<Mgmt>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/api/v1/tokens",
            post(super::api_tokens::create).get(super::api_tokens::list),
        )
        .route(
            "/api/v1/tokens/{name}",
            axum::routing::delete(super::api_tokens::revoke),
        )
        .route("/api/v1/audit", get(super::api_tokens::audit))
        .route("/api/v1/apply", post(apply))
        .route("/api/v1/delete", post(delete_documents))
        .route("/api/v1/resources", get(list))
        .route(
            "/api/v1/resources/{kind}/{namespace}/{name}",
            get(get_one).delete(delete_one),
        )
        .route("/api/v1/describe/{kind}/{namespace}/{name}", get(describe))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/{name}/register", post(register_cluster))
        .route("/api/v1/clusters/{name}/deregister", post(deregister_cluster))
        .route("/api/v1/clusters/{name}/rotate", post(rotate_cluster))
        .route(
            "/api/v1/clusters/{name}/proxies/{id}/config",
            get(super::proxy_config::proxy_config),
        )
        .route("/api/v1/check", get(super::check::report))
        .route("/api/v1/insights", get(super::insights::list))
        .route(
            "/api/v1/insights/silences",
            get(super::insights::silences)
                .post(super::insights::silence)
                .delete(super::insights::unsilence),
        )
        .route("/api/v1/translation", get(translation))
        .route("/api/v1/version", get(version))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/graph", get(super::graph::graph))
        .route("/api/v1/admission/validate", post(admission_review))
        .route("/api/v1/admission/inject/{agent}", post(injection_review))
        // Layers run outside in: the body limit, authentication, then route authorization.
        .layer(axum::middleware::from_fn_with_state(
            mgmt.clone(),
            super::api_access::authorize_route,
        ))
        .layer(axum::middleware::from_fn_with_state(
            mgmt.clone(),
            super::api_auth::require_identity,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(mgmt.clone())
        .merge(super::ui::router(mgmt))
}

/// The validating webhook a Kubernetes management cluster calls before it stores a Gloo
/// resource (an AdmissionReview in, its answer out).
async fn admission_review(Json(review): Json<serde_json::Value>) -> Json<serde_json::Value> {
    Json(trellis_kube::admission::review(&review))
}

/// The sidecar injector a workload cluster's API server calls for each Pod created in a
/// namespace labelled for injection; the path names the agent's registration address as that
/// cluster's pods reach it (webhook URLs may not carry a query).
async fn injection_review(
    State(mgmt): State<Arc<Mgmt>>,
    Path(agent): Path<String>,
    Json(review): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if agent.is_empty() || agent.len() > 253 || !agent.chars().all(plain) {
        return Err((StatusCode::BAD_REQUEST, "the agent address: expected HOST:PORT".into()));
    }
    let settings = trellis_kube::injection::InjectionSettings {
        image: mgmt.api.injection_image.clone(),
        agent,
    };
    Ok(Json(trellis_kube::injection::review(&review, &settings)))
}

async fn whoami(Extension(identity): Extension<Identity>) -> Json<serde_json::Value> {
    Json(json!({"user": identity.user, "groups": identity.groups, "authenticatedBy": identity.method}))
}

enum ApiFailure {
    Invalid(Vec<DocumentError>),
    NotFound(String),
    BadRequest(String),
    /// RBAC refused it (already audited).
    Forbidden(String),
    /// A `metadata.resourceVersion` precondition failed.
    Conflict(String),
    Internal(anyhow::Error),
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiFailure::Invalid(errors) => {
                // A hostile document can make many long errors: the answer stays small.
                let total = errors.len();
                let details: Vec<DocumentError> = errors
                    .into_iter()
                    .take(MAX_ERRORS)
                    .map(|mut error| {
                        if error.message.len() > MAX_ERROR_BYTES {
                            let mut end = MAX_ERROR_BYTES;
                            while !error.message.is_char_boundary(end) {
                                end -= 1;
                            }
                            error.message.truncate(end);
                            error.message.push_str("...");
                        }
                        error
                    })
                    .collect();
                let more = if total > MAX_ERRORS {
                    format!(" (the first {MAX_ERRORS} are listed)")
                } else {
                    String::new()
                };
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"error": format!("{total} error(s); nothing was applied{more}"), "details": details}),
                )
            }
            ApiFailure::NotFound(what) => (StatusCode::NOT_FOUND, json!({"error": format!("{what} not found")})),
            ApiFailure::BadRequest(message) => (StatusCode::BAD_REQUEST, json!({"error": message})),
            ApiFailure::Forbidden(reason) => (StatusCode::FORBIDDEN, json!({"error": format!("forbidden: {reason}")})),
            ApiFailure::Conflict(message) => (StatusCode::CONFLICT, json!({"error": message})),
            ApiFailure::Internal(error) => {
                // The cause goes to the log; the client learns only that it was not its fault.
                tracing::error!(error = %format!("{error:#}"), "API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal error; see the management server log"}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<ApiError> for ApiFailure {
    fn from(error: ApiError) -> Self {
        ApiFailure::Invalid(error.errors())
    }
}

impl From<trellis_store::StoreError> for ApiFailure {
    fn from(error: trellis_store::StoreError) -> Self {
        ApiFailure::Internal(error.into())
    }
}

#[derive(Deserialize)]
struct SourceQuery {
    source: Option<String>,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiFailure> + Send + 'static,
) -> Result<T, ApiFailure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiFailure::Internal(e.into()))?
}

/// Counts and logs a refused apply; the error names every problem for the client.
fn rejected(mgmt: &Mgmt, identity: &Identity, source: &str, error: ApiError) -> ApiFailure {
    mgmt.metrics
        .applies_total
        .get_or_create(&ResultLabel {
            result: "rejected".into(),
        })
        .inc();
    tracing::info!(error = %error, "apply rejected");
    let errors = error.errors();
    let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
    let message = format!("{} error(s); first: {first}", errors.len());
    super::api_access::record_refusal(mgmt, identity, "apply", source.to_string(), "rejected", message);
    error.into()
}

/// `POST /api/v1/apply`, in a span `apply` that continues the caller's trace, if it sends a
/// `traceparent` (a deploy pipeline that traces gets the apply and what follows it in its trace).
async fn apply(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Query(query): Query<SourceQuery>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let span = tracing::info_span!(
        "apply",
        source = tracing::field::Empty,
        resources = tracing::field::Empty
    );
    // Before the span starts: a started span keeps the parent it started with.
    if let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        trellis_support::trace_context::continue_trace(&span, traceparent);
    }
    apply_in_span(mgmt, identity, query, body).instrument(span).await
}

async fn apply_in_span(
    mgmt: Arc<Mgmt>,
    identity: Identity,
    query: SourceQuery,
    body: String,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let source = query.source.unwrap_or_else(|| "request".into());
    let span = tracing::Span::current();
    span.record("source", source.as_str());
    let resources = match trellis_api::parse_documents(&source, &body) {
        Ok(resources) => resources,
        Err(error) => return Err(rejected(&mgmt, &identity, &source, error)),
    };
    span.record("resources", resources.len());
    bounded(&source, resources.len())?;
    // The translation that takes this write in continues this trace (see `trace_origins`).
    let traceparent = trellis_support::trace_context::traceparent(&span);
    // Admission and write under one lock: what admission saw is what the write changes.
    let _write = mgmt.api.lock_writes(&mgmt.store).await?;
    let store_mgmt = mgmt.clone();
    let (who, from) = (identity.clone(), source.clone());
    let applied = blocking(move || {
        let stored = store_mgmt.stored()?;
        let existing: BTreeMap<ResourceKey, &Resource> = resources
            .iter()
            .filter_map(|r| Some((r.key(), super::state::find_stored(&stored, &r.key())?)))
            .collect();
        let permissions: Vec<Permission> = resources
            .iter()
            .map(|r| {
                let verb = if existing.contains_key(&r.key()) {
                    "update"
                } else {
                    "create"
                };
                Permission::on_kind(verb, r.kind(), &r.metadata.namespace, Some(&r.metadata.name))
            })
            .collect();
        if let Err(reason) = authorize(&stored, &identity, &permissions) {
            let target = targets(resources.iter().map(|r| r.key()));
            return Err(refuse(&store_mgmt, &identity, "apply", target, reason));
        }
        if let Err(reason) = super::api_access::check_escalation(&stored, &identity, &resources) {
            let target = targets(resources.iter().map(|r| r.key()));
            return Err(refuse(&store_mgmt, &identity, "apply", target, reason));
        }
        check_preconditions(&existing, &resources)?;
        if let Some(builtin) = resources
            .iter()
            .find(|r| r.kind() == Kind::ClusterRole && trellis_rbac::is_builtin(&r.metadata.name))
        {
            return Err(ApiFailure::BadRequest(format!(
                "{}: the built-in ClusterRoles cannot be changed; copy it under another name",
                builtin.key()
            )));
        }
        let diffs: Vec<(ResourceKey, Vec<serde_json::Value>)> = resources
            .iter()
            .map(|r| {
                let before = existing.get(&r.key()).map(|old| audit_view(old)).unwrap_or_default();
                (r.key(), super::api_access::diff(&before, &audit_view(r)))
            })
            .collect();
        if let Err(error) = super::admission::check(&source, &stored, &resources) {
            return Ok(Err(error));
        }
        let outcomes = store_mgmt.store.apply(resources)?;
        // Under the write lock: no other apply moved the revision since (a discovery report
        // may have; its translation then carries this trace).
        store_mgmt
            .trace_origins
            .record(store_mgmt.store.revision(), traceparent);
        for ((key, diff), outcome) in diffs.into_iter().zip(&outcomes) {
            if outcome.action != trellis_store::ApplyAction::Unchanged {
                let message = format!("{:?}, generation {}", outcome.action, outcome.generation).to_lowercase();
                record(&store_mgmt, &identity, "apply", key.to_string(), "ok", message, diff);
            }
        }
        Ok(Ok(outcomes))
    })
    .await?;
    let outcomes = match applied {
        Ok(outcomes) => outcomes,
        Err(error) => return Err(rejected(&mgmt, &who, &from, error)),
    };
    mgmt.metrics
        .applies_total
        .get_or_create(&ResultLabel {
            result: "accepted".into(),
        })
        .inc();
    for outcome in &outcomes {
        tracing::info!(resource = %outcome.key, action = ?outcome.action, generation = outcome.generation, "applied");
    }
    Ok(Json(json!({ "results": outcomes })))
}

/// A resource as the audit log compares it: Secret values redacted, server-set fields left out.
fn audit_view(resource: &Resource) -> serde_json::Value {
    let mut value = match resource.kind() {
        // Values become fingerprints: a changed value shows as changed, and reveals nothing.
        Kind::Secret => {
            let mut value = resource.to_value();
            if let Some(copy) = value.pointer_mut(&format!("/metadata/annotations/{}", LAST_APPLIED.replace('/', "~1")))
            {
                *copy = json!(fingerprint(copy.as_str().unwrap_or_default()));
            }
            for field in ["data", "stringData"] {
                if let Some(entries) = value.get_mut(field).and_then(|d| d.as_object_mut()) {
                    for entry in entries.values_mut() {
                        *entry = json!(fingerprint(entry.as_str().unwrap_or_default()));
                    }
                }
            }
            value
        }
        _ => redacted(resource),
    };
    if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for field in ["generation", "resourceVersion", "creationRevision"] {
            metadata.remove(field);
        }
    }
    value
}

/// A value's HMAC under a key of this process only: equal values give equal fingerprints
/// within a run, and no fingerprint can be checked against a guess of the value.
fn fingerprint(value: &str) -> String {
    static KEY: std::sync::LazyLock<ring::hmac::Key> = std::sync::LazyLock::new(|| {
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the system's random source works")
    });
    let tag = ring::hmac::sign(&KEY, value.as_bytes());
    let hex: String = tag.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("<redacted {hex}>")
}

/// `metadata.resourceVersion` in an applied document is a precondition, as in Kubernetes: the
/// stored resource must be at exactly that version, so that two writers cannot silently
/// overwrite each other.
fn check_preconditions(existing: &BTreeMap<ResourceKey, &Resource>, resources: &[Resource]) -> Result<(), ApiFailure> {
    for resource in resources.iter().filter(|r| r.metadata.resource_version != 0) {
        let expected = resource.metadata.resource_version;
        match existing.get(&resource.key()) {
            Some(stored) if stored.metadata.resource_version == expected => {}
            Some(stored) => {
                return Err(ApiFailure::Conflict(format!(
                    "{}: metadata.resourceVersion {expected} is not the stored version {}: someone else changed it; get it again, reapply your change, or drop resourceVersion to overwrite",
                    resource.key(),
                    stored.metadata.resource_version
                )));
            }
            None => {
                return Err(ApiFailure::Conflict(format!(
                    "{}: metadata.resourceVersion {expected} names a version, but the resource does not exist (deleted meanwhile?)",
                    resource.key()
                )));
            }
        }
    }
    Ok(())
}

/// What an audit record names as the target of a batch: the first keys and how many more, so a
/// refused batch of a thousand resources is one short record.
fn targets<K: ToString>(keys: impl Iterator<Item = K>) -> String {
    const SHOWN: usize = 5;
    let keys: Vec<String> = keys.map(|k| k.to_string()).collect();
    match keys.len() {
        n if n > SHOWN => format!("{} and {} more", keys[..SHOWN].join(", "), n - SHOWN),
        _ => keys.join(", "),
    }
}

/// Audits an RBAC refusal and turns it into the 403 answer.
fn refuse(mgmt: &Mgmt, identity: &Identity, action: &str, target: String, reason: String) -> ApiFailure {
    mgmt.metrics.api_forbidden_total.inc();
    super::api_access::record_refusal(mgmt, identity, action, target, "denied", reason.clone());
    ApiFailure::Forbidden(reason)
}

/// Deletes `keys` after authorization and admission, under the write lock; audits each.
async fn delete_keys(
    mgmt: &Arc<Mgmt>,
    identity: Identity,
    source: String,
    keys: Vec<ResourceKey>,
) -> Result<Vec<(ResourceKey, bool)>, ApiFailure> {
    let _write = mgmt.api.lock_writes(&mgmt.store).await?;
    let store_mgmt = mgmt.clone();
    let results = blocking(move || {
        let stored = store_mgmt.stored()?;
        let permissions: Vec<Permission> = keys
            .iter()
            .map(|k| Permission::on_kind("delete", k.kind, &k.namespace, Some(&k.name)))
            .collect();
        if let Err(reason) = authorize(&stored, &identity, &permissions) {
            return Err(refuse(&store_mgmt, &identity, "delete", targets(keys.iter()), reason));
        }
        if let Some(cluster) = keys.iter().find(|k| k.kind == Kind::KubernetesCluster) {
            // Deleting the resource alone would leave its agent's certificates, intermediate and
            // tokens valid, and let a second agent register beside them.
            return Err(ApiFailure::BadRequest(format!(
                "{cluster}: run `trellis cluster deregister {}`: it also revokes the cluster's certificates and tokens",
                cluster.name
            )));
        }
        super::admission::check_delete(&source, &stored, &keys)?;
        let results = store_mgmt.store.delete(&keys)?;
        for (key, deleted) in &results {
            if *deleted {
                record(
                    &store_mgmt,
                    &identity,
                    "delete",
                    key.to_string(),
                    "ok",
                    String::new(),
                    Vec::new(),
                );
            }
        }
        Ok(results)
    })
    .await?;
    Ok(results)
}

async fn delete_documents(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Query(query): Query<SourceQuery>,
    body: String,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let source = query.source.unwrap_or_else(|| "request".into());
    let keys: Vec<ResourceKey> = trellis_api::parse_documents(&source, &body)?
        .iter()
        .map(|r| r.key())
        .collect();
    bounded(&source, keys.len())?;
    let results = delete_keys(&mgmt, identity, source, keys).await?;
    let results: Vec<_> = results
        .into_iter()
        .map(|(key, deleted)| json!({"key": key, "deleted": deleted}))
        .collect();
    Ok(Json(json!({ "results": results })))
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
}

fn parse_kind(kind: &str) -> Result<Kind, ApiFailure> {
    kind.parse::<Kind>().map_err(ApiFailure::BadRequest)
}

/// Lists what the caller may list: items in namespaces (and of kinds) RBAC does not grant
/// `list` on are left out, as if they were not there.
async fn list(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let kind = query.kind.as_deref().map(parse_kind).transpose()?;
    let stored = mgmt.stored()?;
    let (policy, owner) = super::api_access::policy_for(&stored);
    let items: Vec<Resource> = stored
        .iter()
        .filter(|r| kind.is_none_or(|k| r.kind() == k))
        .filter(|r| {
            let permission = Permission::on_kind("list", r.kind(), &r.metadata.namespace, None);
            super::api_access::allowed(&policy, &owner, &identity, &permission)
        })
        .cloned()
        .collect();
    let published = mgmt.published();
    let items: Vec<_> = items.iter().map(|r| with_status(r, &published)).collect();
    Ok(Json(json!({ "items": items })))
}

/// Refuses (and audits) a read RBAC does not grant.
fn authorize_read(mgmt: &Mgmt, identity: &Identity, key: &ResourceKey) -> Result<(), ApiFailure> {
    let stored = mgmt.stored()?;
    let permission = Permission::on_kind("get", key.kind, &key.namespace, Some(&key.name));
    authorize(&stored, identity, &[permission]).map_err(|reason| refuse(mgmt, identity, "get", key.to_string(), reason))
}

async fn get_one(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let key = ResourceKey::new(parse_kind(&kind)?, namespace, name);
    authorize_read(&mgmt, &identity, &key)?;
    match mgmt.store.get(&key)? {
        Some(resource) => Ok(Json(with_status(&resource, &mgmt.published()))),
        None => Err(ApiFailure::NotFound(key.to_string())),
    }
}

/// The resource as stored, with the status translation gave it.
/// Secrets' values are never shown: their keys are.
fn with_status(resource: &trellis_api::Resource, published: &Published) -> serde_json::Value {
    let mut value = redacted(resource);
    if let Some(status) = published.statuses.get(&resource.key().to_string()) {
        value["status"] = serde_json::to_value(status).expect("status serializes");
    }
    value
}

/// The resource as JSON, with a Secret's values replaced.
fn redacted(resource: &Resource) -> serde_json::Value {
    match &resource.spec {
        trellis_api::Spec::Secret(secret) => {
            let mut metadata = resource.metadata.clone();
            // `kubectl apply` keeps the whole object, data included, in this annotation.
            if let Some(copy) = metadata.annotations.get_mut(LAST_APPLIED) {
                *copy = "<redacted>".into();
            }
            trellis_api::Resource {
                metadata,
                spec: trellis_api::Spec::Secret(secret.redacted()),
            }
            .to_value()
        }
        _ => resource.to_value(),
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A resource, its status and its delivery: of the proxies in the clusters it applies to, how
/// many run the current config (Envoy acknowledged it), and which rejected it.
async fn describe(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let key = ResourceKey::new(parse_kind(&kind)?, namespace, name);
    authorize_read(&mgmt, &identity, &key)?;
    let Some(resource) = mgmt.store.get(&key)? else {
        return Err(ApiFailure::NotFound(key.to_string()));
    };
    let published = mgmt.published();
    // Until the translator has caught up with this resource's last write, the status and the
    // delivery figures would describe the previous generation: say so instead.
    if resource.metadata.resource_version > published.revision {
        let mut value = redacted(&resource);
        value["status"] = json!({
            "state": "PENDING",
            "message": format!(
                "generation {} is being translated (store revision {}; translated up to {})",
                resource.metadata.generation, resource.metadata.resource_version, published.revision
            ),
        });
        let summary = format!("generation {} not translated yet", resource.metadata.generation);
        return Ok(Json(
            json!({ "resource": value, "delivery": { "summary": summary, "clusters": {}, "rejected": [] } }),
        ));
    }
    let value = with_status(&resource, &published);
    let clusters: Vec<String> = value["status"]["clusters"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let agents = mgmt.agents();
    let (mut total, mut applied, mut delivery, mut rejected) = (0, 0, serde_json::Map::new(), Vec::new());
    for cluster in &clusters {
        let current = published
            .clusters
            .get(cluster)
            .map(|c| c.version.clone())
            .unwrap_or_default();
        let proxies = agents.get(cluster).map(|a| a.proxies.clone()).unwrap_or_default();
        let current_ok = |p: &trellis_model::ProxyState| p.in_sync && p.config_version == current;
        let ok = proxies.iter().filter(|p| current_ok(p)).count();
        for proxy in proxies.iter().filter(|p| p.nack.is_some()) {
            rejected.push(json!({"cluster": cluster, "proxy": proxy.id, "reason": proxy.nack}));
        }
        total += proxies.len();
        applied += ok;
        delivery.insert(
            cluster.clone(),
            json!({
                "proxies": proxies.len(),
                "current": ok,
                "pending": proxies.iter().filter(|p| !current_ok(p)).map(|p| p.id.clone()).collect::<Vec<_>>(),
            }),
        );
    }
    let summary = format!("applied to {applied}/{total} proxies in {} cluster(s)", clusters.len());
    Ok(Json(
        json!({ "resource": value, "delivery": { "summary": summary, "clusters": delivery, "rejected": rejected } }),
    ))
}

async fn delete_one(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let key = ResourceKey::new(parse_kind(&kind)?, namespace, name);
    let deleted = delete_keys(&mgmt, identity, "request".into(), vec![key.clone()]).await?;
    if !deleted[0].1 {
        return Err(ApiFailure::NotFound(key.to_string()));
    }
    Ok(Json(json!({ "results": [{"key": key, "deleted": true}] })))
}

pub(super) fn cluster_statuses(mgmt: &Mgmt) -> serde_json::Map<String, serde_json::Value> {
    let published = mgmt.published();
    let registered: Vec<String> = mgmt
        .store
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.kind() == Kind::KubernetesCluster)
        .map(|r| r.metadata.name)
        .collect();
    let mut agents = mgmt.agents();
    // An agent connected to another replica is connected: its status is that replica's.
    let mut replicas: BTreeMap<String, String> = BTreeMap::new();
    for (name, (replica, status)) in mgmt.elsewhere.lock().expect("presence lock").iter() {
        if !agents.get(name).is_some_and(|local| local.connected) {
            agents.insert(name.clone(), status.clone());
            replicas.insert(name.clone(), replica.clone());
        }
    }
    for name in &registered {
        agents.entry(name.clone()).or_default();
    }
    let mut clusters = serde_json::Map::new();
    for (name, status) in agents {
        let mut value = serde_json::to_value(&status).expect("status serializes");
        // Which replica holds the agent's relay stream, where there are several.
        let replica = match (replicas.remove(&name), &mgmt.replica) {
            (Some(other), _) => Some(other),
            (None, Some(own)) if status.connected => Some(own.clone()),
            _ => None,
        };
        if let Some(replica) = replica {
            value["replica"] = json!(replica);
        }
        let current = published.clusters.get(&name).map(|c| c.version.clone());
        value["currentVersion"] = json!(current);
        // What the translator has taken in: `check` compares it with the store's revision.
        value["translatedRevision"] = json!(published.revision);
        value["registered"] = json!(registered.contains(&name));
        clusters.insert(name, value);
    }
    clusters
}

/// The server's build, for `trellis version`: clients and servers of different releases can
/// disagree on what a resource means.
async fn version() -> Json<serde_json::Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

async fn clusters(State(mgmt): State<Arc<Mgmt>>) -> Json<serde_json::Value> {
    Json(json!({ "clusters": cluster_statuses(&mgmt) }))
}

/// Where `trellis cluster register` keeps the KubernetesCluster it creates.
pub const ADMIN_NAMESPACE: &str = "trellis";

/// Rotation has its own route (`POST .../rotate`), authorized as `update`; a `rotate` flag here
/// would let whoever may only register new clusters replace existing ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterQuery {
    ttl: Option<String>,
}

async fn register_cluster(
    State(mgmt): State<Arc<Mgmt>>,
    Path(name): Path<String>,
    Query(query): Query<RegisterQuery>,
) -> Result<Response, ApiFailure> {
    registration(mgmt, name, query.ttl, false).await
}

async fn deregister_cluster(
    State(mgmt): State<Arc<Mgmt>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let deregistering = mgmt.clone();
    let (revoked, intermediates) = blocking(move || -> Result<(usize, usize), ApiFailure> {
        let keys: Vec<ResourceKey> = deregistering
            .store
            .list()?
            .into_iter()
            .filter(|r| r.kind() == Kind::KubernetesCluster && r.metadata.name == name)
            .map(|r| r.key())
            .collect();
        if keys.is_empty() {
            return Err(ApiFailure::NotFound(format!("cluster {name}")));
        }
        deregistering.store.delete(&keys)?;
        let revoked = deregistering.store.revoke_cluster_certificates(&name)?;
        // A cluster registered again under this name gets a new intermediate; an old token cannot bring it back.
        let intermediates = deregistering
            .store
            .revoke_cluster_intermediates(&name, trellis_support::unix_now())?;
        deregistering.store.void_cluster_tokens(&name)?;
        deregistering.forget_cluster(&name).map_err(ApiFailure::Internal)?;
        let _ = deregistering.kicks.send(name.clone());
        tracing::warn!(cluster = %name, revoked, intermediates, "cluster deregistered; its certificates are revoked");
        Ok((revoked, intermediates))
    })
    .await?;
    Ok(Json(
        json!({ "revokedCertificates": revoked, "revokedIntermediates": intermediates }),
    ))
}

// === cluster registration and rotation ===

/// Registration tokens are bearer secrets: none lives longer than this.
const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86400);

#[derive(Deserialize)]
struct RotateQuery {
    ttl: Option<String>,
}

/// `POST /api/v1/clusters/{name}/rotate`: revokes the cluster's relay certificates, its intermediate CA and its
/// unused tokens, closes its relay stream, and issues a new token for the agent that replaces it.
async fn rotate_cluster(
    State(mgmt): State<Arc<Mgmt>>,
    Path(name): Path<String>,
    Query(query): Query<RotateQuery>,
) -> Result<Response, ApiFailure> {
    registration(mgmt, name, query.ttl, true).await
}

fn refusal(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn token_ttl(mgmt: &Mgmt, text: Option<&str>) -> Result<std::time::Duration, String> {
    let Some(text) = text else {
        return Ok(mgmt.token_ttl.min(MAX_TOKEN_TTL));
    };
    let ttl = trellis_base::parse_duration(text).map_err(|e| format!("ttl: {e}"))?;
    if ttl.is_zero() {
        return Err(format!("ttl {text:?} must be longer than zero (e.g. 1h)"));
    }
    if ttl > MAX_TOKEN_TTL {
        return Err(format!(
            "ttl {text:?} is longer than the maximum of 7 days (168h): a registration token is a bearer secret; \
             register with a shorter --ttl and start the agent before it expires"
        ));
    }
    Ok(ttl)
}

/// What a registration or rotation did, for its answer.
struct Registered {
    token: Option<(String, u64)>,
    revoked_certificates: usize,
    revoked_intermediates: usize,
}

/// Registers a new cluster, or with `rotate` replaces a registered cluster's credentials. Registering a
/// cluster that exists is refused: handing a fresh token for it to whoever asks would let a second agent join
/// as that cluster beside the real one.
async fn registration(
    mgmt: Arc<Mgmt>,
    name: String,
    ttl: Option<String>,
    rotate: bool,
) -> Result<Response, ApiFailure> {
    let document = format!(
        "apiVersion: admin.gloo.solo.io/v2\nkind: KubernetesCluster\nmetadata: {{name: {name:?}, namespace: {ADMIN_NAMESPACE}}}\nspec: {{}}\n"
    );
    let cluster = trellis_api::parse_one("register", &document)?;
    let ttl = match token_ttl(&mgmt, ttl.as_deref()) {
        Ok(ttl) => ttl,
        Err(message) => return Ok(refusal(StatusCode::BAD_REQUEST, message)),
    };
    let registering = mgmt.clone();
    let cluster_name = name.clone();
    let outcome = blocking(move || -> Result<Result<Registered, Response>, ApiFailure> {
        let name = cluster_name;
        let exists = registering.is_registered(&name).map_err(ApiFailure::Internal)?;
        let mut done = Registered {
            token: None,
            revoked_certificates: 0,
            revoked_intermediates: 0,
        };
        match (exists, rotate) {
            (true, false) => {
                tracing::warn!(cluster = %name, "refused to register a cluster that is already registered");
                return Ok(Err(refusal(
                    StatusCode::CONFLICT,
                    format!(
                        "cluster {name} is already registered; to replace its agent's credentials run \
                         `trellis cluster rotate {name}` (or `trellis cluster register {name} --rotate`): that \
                         revokes the current agent's certificates and intermediate CA and prints a new token"
                    ),
                )));
            }
            (false, true) => {
                return Ok(Err(refusal(
                    StatusCode::NOT_FOUND,
                    format!("cluster {name} is not registered, so there is nothing to rotate: run `trellis cluster register {name}`"),
                )));
            }
            (false, false) => {
                registering.store.apply(vec![cluster])?;
            }
            (true, true) => {
                // Tokens first: no earlier token may register an agent after the rotation.
                registering.store.void_cluster_tokens(&name)?;
                done.revoked_certificates = registering.store.revoke_cluster_certificates(&name)?;
                done.revoked_intermediates = registering
                    .store
                    .revoke_cluster_intermediates(&name, trellis_support::unix_now())?;
                // Ends the current agent's relay stream; its certificate is refused from now on.
                let _ = registering.kicks.send(name.clone());
                tracing::warn!(
                    cluster = %name,
                    revoked_certificates = done.revoked_certificates,
                    revoked_intermediates = done.revoked_intermediates,
                    "cluster credentials rotated; the current agent's certificates and intermediate CA are revoked"
                );
            }
        }
        let uses_tokens = matches!(&registering.relay, RelaySecurity::Tls(tls) if tls.signer.is_some());
        if !uses_tokens {
            return Ok(Ok(done));
        }
        let token = trellis_pki::random_token();
        let expires_at = trellis_support::unix_now() + ttl.as_secs().max(1);
        let record = trellis_store::TokenRecord {
            cluster: name.clone(),
            expires_at,
            used: false,
        };
        registering
            .store
            .put_token(&trellis_base::sha256_hex(token.as_bytes()), &record)?;
        tracing::info!(cluster = %name, expires_at, rotate, "registration token issued");
        done.token = Some((token, expires_at));
        Ok(Ok(done))
    })
    .await?;
    let done = match outcome {
        Ok(done) => done,
        Err(response) => return Ok(response),
    };
    let (mode, root_ca, authority) = match &mgmt.relay {
        RelaySecurity::Insecure => ("insecure", None, None),
        RelaySecurity::Tls(tls) if tls.signer.is_none() => (
            "client-certificate",
            Some(tls.root_pem.clone()),
            Some(tls.authority.clone()),
        ),
        RelaySecurity::Tls(tls) => ("token", Some(tls.root_pem.clone()), Some(tls.authority.clone())),
    };
    Ok(Json(json!({
        "mode": mode,
        "token": done.token.as_ref().map(|(t, _)| t),
        "expiresAt": done.token.as_ref().map(|(_, e)| e),
        "relayAuthority": authority,
        "rootCaPem": root_ca,
        "rotated": rotate,
        "revokedCertificates": done.revoked_certificates,
        "revokedIntermediates": done.revoked_intermediates,
    }))
    .into_response())
}

async fn translation(State(mgmt): State<Arc<Mgmt>>) -> Json<serde_json::Value> {
    let mut value = serde_json::to_value(mgmt.published().to_translation()).expect("translation serializes");
    redact_secrets(&mut value);
    Json(value)
}

/// Replaces the secrets translation resolved into auth configs in output meant for people: OIDC
/// client secrets, API keys' digests and metadata entries, and the private keys of gateway
/// listeners' TLS Secrets (`secretName`).
fn redact_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            // An API key entry: its digest (unsalted, so guessable for weak keys) and the
            // Secret's other entries are Secret data too.
            let api_key = map.contains_key("sha256") && map.contains_key("secret");
            for (key, inner) in map.iter_mut() {
                let client_secret = (key == "clientSecret" || key == "privateKeyPem") && inner.is_string();
                if client_secret || (api_key && (key == "sha256" || key == "metadata")) {
                    *inner = json!("<redacted>");
                } else {
                    redact_secrets(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_output_hides_what_secrets_hold() {
        let mut value = json!({"configs": [
            {"oidc": {"clientId": "app", "clientSecret": "s3cret"}},
            {"apiKeyAuth": {"headerName": "x-api-key", "keys": [
                {"sha256": "abc", "secret": "demo/key", "metadata": {"x-user-id": "frontend"}}
            ]}},
            {"credential": {"secret": "demo/shop-tls", "certChainPem": "CERT", "privateKeyPem": "KEY-PEM"}}
        ]});
        redact_secrets(&mut value);
        let text = value.to_string();
        for hidden in ["s3cret", "abc", "frontend", "KEY-PEM"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        assert!(text.contains("demo/key") && text.contains("x-api-key"), "{text}");
    }

    #[test]
    fn a_secrets_values_never_leave_even_through_kubectls_annotation() {
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: k\n  namespace: demo\n  annotations: {{{LAST_APPLIED}: '{{\"stringData\":{{\"api-key\":\"hunter2\"}}}}'}}\nstringData: {{api-key: hunter2}}\n"
        );
        let secret = trellis_api::parse_one("test.yaml", &yaml).unwrap();
        for view in [redacted(&secret), audit_view(&secret)] {
            assert!(!view.to_string().contains("hunter2"), "{view}");
        }
    }
}
