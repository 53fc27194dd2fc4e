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
//! | POST | /api/v1/clusters/{name}/register?ttl=1h | record the cluster; a one-time token for its agent |
//! | POST | /api/v1/clusters/{name}/deregister | revoke the cluster's certificates and close its relay stream |
//! | GET | /api/v1/check | what `trellis check` reports: relay mode, certificate expiry, agents |
//! | GET | /api/v1/translation | per-cluster IR and warnings, for debugging |

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use trellis_api::{ApiError, DocumentError, Kind, ResourceKey};

use super::Mgmt;
use super::metrics::ResultLabel;
use super::pki::RelaySecurity;

pub fn router(mgmt: Arc<Mgmt>) -> Router {
    Router::new()
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
        .route("/api/v1/check", get(super::check::report))
        .route("/api/v1/translation", get(translation))
        .with_state(mgmt)
}

enum ApiFailure {
    Invalid(Vec<DocumentError>),
    NotFound(String),
    BadRequest(String),
    Internal(anyhow::Error),
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiFailure::Invalid(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": format!("{} error(s); nothing was applied", errors.len()), "details": errors}),
            ),
            ApiFailure::NotFound(what) => (StatusCode::NOT_FOUND, json!({"error": format!("{what} not found")})),
            ApiFailure::BadRequest(message) => (StatusCode::BAD_REQUEST, json!({"error": message})),
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
fn rejected(mgmt: &Mgmt, error: ApiError) -> ApiFailure {
    mgmt.metrics
        .applies_total
        .get_or_create(&ResultLabel {
            result: "rejected".into(),
        })
        .inc();
    tracing::info!(error = %error, "apply rejected");
    error.into()
}

async fn apply(
    State(mgmt): State<Arc<Mgmt>>,
    Query(query): Query<SourceQuery>,
    body: String,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let source = query.source.unwrap_or_else(|| "request".into());
    let resources = match trellis_api::parse_documents(&source, &body) {
        Ok(resources) => resources,
        Err(error) => return Err(rejected(&mgmt, error)),
    };
    let store_mgmt = mgmt.clone();
    let admitted = blocking(move || {
        let stored = store_mgmt.store.list()?;
        Ok(super::admission::check(&source, stored, &resources).map(|()| resources))
    })
    .await?;
    let resources = match admitted {
        Ok(resources) => resources,
        Err(error) => return Err(rejected(&mgmt, error)),
    };
    let store_mgmt = mgmt.clone();
    let outcomes = blocking(move || Ok(store_mgmt.store.apply(resources)?)).await?;
    mgmt.metrics
        .applies_total
        .get_or_create(&ResultLabel {
            result: "accepted".into(),
        })
        .inc();
    for outcome in &outcomes {
        tracing::info!(resource = %outcome.key, action = ?outcome.action, generation = outcome.generation, "applied");
    }
    mgmt.config_changed();
    Ok(Json(json!({ "results": outcomes })))
}

async fn delete_documents(
    State(mgmt): State<Arc<Mgmt>>,
    Query(query): Query<SourceQuery>,
    body: String,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let source = query.source.unwrap_or_else(|| "request".into());
    let keys: Vec<ResourceKey> = trellis_api::parse_documents(&source, &body)?
        .iter()
        .map(|r| r.key())
        .collect();
    let store_mgmt = mgmt.clone();
    let results = blocking(move || Ok(store_mgmt.store.delete(&keys)?)).await?;
    mgmt.config_changed();
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

async fn list(
    State(mgmt): State<Arc<Mgmt>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let kind = query.kind.as_deref().map(parse_kind).transpose()?;
    let mut items = mgmt.store.list()?;
    items.retain(|r| kind.is_none_or(|k| r.kind() == k));
    let translation = mgmt.translation();
    let items: Vec<_> = items.iter().map(|r| with_status(r, &translation)).collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_one(
    State(mgmt): State<Arc<Mgmt>>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let key = ResourceKey::new(parse_kind(&kind)?, namespace, name);
    match mgmt.store.get(&key)? {
        Some(resource) => Ok(Json(with_status(&resource, &mgmt.translation()))),
        None => Err(ApiFailure::NotFound(key.to_string())),
    }
}

/// The resource as stored, with the status translation gave it.
/// Secrets' values are never shown: their keys are.
fn with_status(resource: &trellis_api::Resource, translation: &trellis_translate::Translation) -> serde_json::Value {
    let mut value = match &resource.spec {
        trellis_api::Spec::Secret(secret) => trellis_api::Resource {
            metadata: resource.metadata.clone(),
            spec: trellis_api::Spec::Secret(secret.redacted()),
        }
        .to_value(),
        _ => resource.to_value(),
    };
    if let Some(status) = translation.statuses.get(&resource.key().to_string()) {
        value["status"] = serde_json::to_value(status).expect("status serializes");
    }
    value
}

/// A resource, its status and its delivery: of the proxies in the clusters it applies to, how
/// many run the current config (Envoy acknowledged it), and which rejected it.
async fn describe(
    State(mgmt): State<Arc<Mgmt>>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let key = ResourceKey::new(parse_kind(&kind)?, namespace, name);
    let Some(resource) = mgmt.store.get(&key)? else {
        return Err(ApiFailure::NotFound(key.to_string()));
    };
    let translation = mgmt.translation();
    let value = with_status(&resource, &translation);
    let clusters: Vec<String> = value["status"]["clusters"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let agents = mgmt.agents();
    let (mut total, mut applied, mut delivery, mut rejected) = (0, 0, serde_json::Map::new(), Vec::new());
    for cluster in &clusters {
        let current = translation
            .clusters
            .get(cluster)
            .map(|c| format!("{:016x}", c.content_hash()))
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
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let key = ResourceKey::new(parse_kind(&kind)?, namespace, name);
    let deleted = mgmt.store.delete(std::slice::from_ref(&key))?;
    if !deleted[0].1 {
        return Err(ApiFailure::NotFound(key.to_string()));
    }
    mgmt.config_changed();
    Ok(Json(json!({ "results": [{"key": key, "deleted": true}] })))
}

pub(super) fn cluster_statuses(mgmt: &Mgmt) -> serde_json::Map<String, serde_json::Value> {
    let translation = mgmt.translation();
    let registered: Vec<String> = mgmt
        .store
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.kind() == Kind::KubernetesCluster)
        .map(|r| r.metadata.name)
        .collect();
    let mut agents = mgmt.agents();
    for name in &registered {
        agents.entry(name.clone()).or_default();
    }
    let mut clusters = serde_json::Map::new();
    for (name, status) in agents {
        let mut value = serde_json::to_value(&status).expect("status serializes");
        let current = translation
            .clusters
            .get(&name)
            .map(|c| format!("{:016x}", c.content_hash()));
        value["currentVersion"] = json!(current);
        value["registered"] = json!(registered.contains(&name));
        clusters.insert(name, value);
    }
    clusters
}

async fn clusters(State(mgmt): State<Arc<Mgmt>>) -> Json<serde_json::Value> {
    Json(json!({ "clusters": cluster_statuses(&mgmt) }))
}

/// Where `trellis cluster register` keeps the KubernetesCluster it creates.
pub const ADMIN_NAMESPACE: &str = "trellis";

#[derive(Deserialize)]
struct RegisterQuery {
    ttl: Option<String>,
}

async fn register_cluster(
    State(mgmt): State<Arc<Mgmt>>,
    Path(name): Path<String>,
    Query(query): Query<RegisterQuery>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let document = format!(
        "apiVersion: admin.gloo.solo.io/v2\nkind: KubernetesCluster\nmetadata: {{name: {name:?}, namespace: {ADMIN_NAMESPACE}}}\nspec: {{}}\n"
    );
    let cluster = trellis_api::parse_one("register", &document)?;
    let ttl = match &query.ttl {
        Some(text) => crate::duration::parse_duration(text).map_err(|e| ApiFailure::BadRequest(format!("ttl: {e}")))?,
        None => mgmt.token_ttl,
    };
    let registering = mgmt.clone();
    let token = blocking(move || -> Result<Option<(String, u64)>, ApiFailure> {
        if !registering.is_registered(&name).map_err(ApiFailure::Internal)? {
            registering.store.apply(vec![cluster])?;
        }
        let uses_tokens = matches!(&registering.relay, RelaySecurity::Tls(tls) if tls.signer.is_some());
        if !uses_tokens {
            return Ok(None);
        }
        let token = trellis_pki::random_token();
        let expires_at = super::state::unix_now() + ttl.as_secs().max(1);
        let record = trellis_store::TokenRecord {
            cluster: name.clone(),
            expires_at,
            used: false,
        };
        registering
            .store
            .put_token(&trellis_pki::sha256_hex(token.as_bytes()), &record)?;
        tracing::info!(cluster = %name, expires_at, "registration token issued");
        Ok(Some((token, expires_at)))
    })
    .await?;
    mgmt.config_changed();
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
        "token": token.as_ref().map(|(t, _)| t),
        "expiresAt": token.as_ref().map(|(_, e)| e),
        "relayAuthority": authority,
        "rootCaPem": root_ca,
    })))
}

async fn deregister_cluster(
    State(mgmt): State<Arc<Mgmt>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let deregistering = mgmt.clone();
    let revoked = blocking(move || -> Result<usize, ApiFailure> {
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
        deregistering.forget_cluster(&name).map_err(ApiFailure::Internal)?;
        let _ = deregistering.kicks.send(name.clone());
        tracing::warn!(cluster = %name, revoked, "cluster deregistered; its certificates are revoked");
        Ok(revoked)
    })
    .await?;
    Ok(Json(json!({ "revokedCertificates": revoked })))
}

async fn translation(State(mgmt): State<Arc<Mgmt>>) -> Json<serde_json::Value> {
    let mut value = serde_json::to_value(&*mgmt.translation()).expect("translation serializes");
    redact_secrets(&mut value);
    Json(value)
}

/// Replaces the secrets translation resolved into auth configs (OIDC client secrets) in output
/// meant for people; API keys are already only digests.
fn redact_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "clientSecret" && inner.is_string() {
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
