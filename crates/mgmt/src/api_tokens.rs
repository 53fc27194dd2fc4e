//! `/api/v1/tokens` (issue, list, revoke API tokens) and `/api/v1/audit` (read the audit log).
//! Both are authorized as resources of the `trellis.io` group: `apitokens` and `auditevents`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use trellis_store::ApiTokenRecord;

use super::Mgmt;
use super::api_access::{Permission, TRELLIS_GROUP, authorize, forbidden, record};
use super::api_auth::Identity;

/// Tokens are bearer secrets for people and CI: none lives longer than this, and one that names
/// no lifetime gets the default.
const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(366 * 86400);
const DEFAULT_TOKEN_TTL: &str = "2160h";

/// Names a token may not carry: the admin token's, and the prefixes other credentials own
/// (`oidc:` for ID tokens, `system:` as Kubernetes reserves it).
fn check_subject(user: &str, groups: &[String]) -> Result<(), String> {
    let reserved = |name: &str| name.starts_with("oidc:") || name.starts_with("system:");
    if user.is_empty() || user == "admin" || reserved(user) {
        return Err(format!(
            "user {user:?}: name a user other than admin, without the oidc: or system: prefix"
        ));
    }
    if let Some(group) = groups
        .iter()
        .find(|g| g.is_empty() || reserved(g) || *g == trellis_rbac::ADMINS_GROUP)
    {
        return Err(format!(
            "group {group:?}: {} and the oidc: and system: prefixes are reserved; bind trellis-admin to a group of your own instead",
            trellis_rbac::ADMINS_GROUP
        ));
    }
    Ok(())
}

fn permission(verb: &'static str, resource: &str, name: Option<&str>) -> Permission {
    Permission {
        verb,
        group: TRELLIS_GROUP.into(),
        resource: resource.into(),
        namespace: None,
        name: name.map(str::to_string),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Runs `work` on a blocking thread after authorizing `needed`; a refusal is audited as `action`.
async fn authorized<T: Send + 'static>(
    mgmt: &Arc<Mgmt>,
    identity: &Identity,
    action: &str,
    needed: Permission,
    work: impl FnOnce(&Mgmt) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let worker = mgmt.clone();
    let who = identity.clone();
    let target = needed.target();
    let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<Result<T, String>> {
        let stored = worker.stored()?;
        if let Err(reason) = authorize(&stored, &who, std::slice::from_ref(&needed)) {
            return Ok(Err(reason));
        }
        Ok(Ok(work(&worker)?))
    })
    .await;
    match outcome {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(reason))) => Err(forbidden(mgmt, identity, action, target, reason)),
        Ok(Err(failure)) => {
            tracing::error!(error = %format!("{failure:#}"), "API request failed");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the management server log".into(),
            ))
        }
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateToken {
    name: String,
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    ttl: Option<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub async fn create(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Json(request): Json<CreateToken>,
) -> Response {
    if !valid_name(&request.name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "token name {:?}: use 1 to 63 lower-case letters, digits and '-'",
                request.name
            ),
        );
    }
    if let Err(message) = check_subject(&request.user, &request.groups) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    // A token acts as its user and groups: nobody but an admin mints one for someone else, or
    // with groups the issuer is not in (it would be a way around RBAC's escalation check).
    let issuer_is_admin = identity.groups.iter().any(|g| g == trellis_rbac::ADMINS_GROUP);
    let own = request.user == identity.user && request.groups.iter().all(|g| identity.groups.contains(g));
    if !issuer_is_admin && !own {
        let reason = format!(
            "user {:?} may issue tokens only for itself and its own groups ({:?}); ask an admin for a token for {:?}",
            identity.user, identity.groups, request.user
        );
        return forbidden(
            &mgmt,
            &identity,
            "token-create",
            format!("token/{}", request.name),
            reason,
        );
    }
    let ttl_text = request.ttl.clone().unwrap_or_else(|| DEFAULT_TOKEN_TTL.to_string());
    let expires_at = match trellis_base::parse_duration(&ttl_text) {
        Ok(ttl) if ttl <= MAX_TOKEN_TTL && !ttl.is_zero() => trellis_support::unix_now() + ttl.as_secs(),
        Ok(_) => return error(StatusCode::BAD_REQUEST, format!("ttl {ttl_text}: between 1s and 8784h")),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("ttl: {e}")),
    };
    let token = trellis_pki::random_token();
    let token_record = ApiTokenRecord {
        name: request.name.clone(),
        user: request.user.clone(),
        groups: request.groups.clone(),
        created_at: trellis_support::unix_now(),
        expires_at: Some(expires_at),
        created_by: identity.user.clone(),
    };
    let hash = trellis_base::sha256_hex(token.as_bytes());
    let who = identity.clone();
    let target = format!("token/{}", request.name);
    let result = authorized(
        &mgmt,
        &identity,
        "token-create",
        permission("create", "apitokens", Some(&request.name)),
        move |mgmt| {
            let created = mgmt.store.create_api_token(&hash, &token_record)?;
            let (result, message) = if created {
                (
                    "ok",
                    format!("user {} groups {:?}", token_record.user, token_record.groups),
                )
            } else {
                ("rejected", "a token of that name exists".to_string())
            };
            record(mgmt, &who, "token-create", target, result, message, Vec::new());
            Ok(created)
        },
    )
    .await;
    match result {
        Ok(true) => Json(json!({"name": request.name, "token": token, "expiresAt": expires_at})).into_response(),
        Ok(false) => error(
            StatusCode::CONFLICT,
            format!(
                "a token named {:?} exists; revoke it first or pick another name",
                request.name
            ),
        ),
        Err(response) => response,
    }
}

pub async fn list(State(mgmt): State<Arc<Mgmt>>, Extension(identity): Extension<Identity>) -> Response {
    match authorized(
        &mgmt,
        &identity,
        "list",
        permission("list", "apitokens", None),
        |mgmt| Ok(mgmt.store.api_tokens()?),
    )
    .await
    {
        Ok(tokens) => Json(json!({"tokens": tokens})).into_response(),
        Err(response) => response,
    }
}

pub async fn revoke(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    let who = identity.clone();
    let target = format!("token/{name}");
    let revoking = name.clone();
    let result = authorized(
        &mgmt,
        &identity,
        "token-revoke",
        permission("delete", "apitokens", Some(&name)),
        move |mgmt| {
            let removed = mgmt.store.revoke_api_token(&revoking)?;
            let result = if removed { "ok" } else { "rejected" };
            record(mgmt, &who, "token-revoke", target, result, String::new(), Vec::new());
            Ok(removed)
        },
    )
    .await;
    match result {
        Ok(true) => Json(json!({"revoked": name})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("token {name:?} not found")),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    user: Option<String>,
    action: Option<String>,
    result: Option<String>,
    target: Option<String>,
    limit: Option<usize>,
}

pub async fn audit(
    State(mgmt): State<Arc<Mgmt>>,
    Extension(identity): Extension<Identity>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let records = authorized(
        &mgmt,
        &identity,
        "list",
        permission("list", "auditevents", None),
        |mgmt| Ok(mgmt.store.audit_records()?),
    )
    .await;
    let mut records = match records {
        Ok(records) => records,
        Err(response) => return response,
    };
    records.retain(|r| {
        query.user.as_ref().is_none_or(|u| &r.user == u)
            && query.action.as_ref().is_none_or(|a| &r.action == a)
            && query.result.as_ref().is_none_or(|x| &r.result == x)
            && query.target.as_ref().is_none_or(|t| r.target.contains(t.as_str()))
    });
    let limit = query.limit.unwrap_or(100).min(10_000);
    let skip = records.len().saturating_sub(limit);
    Json(json!({"records": &records[skip..]})).into_response()
}
