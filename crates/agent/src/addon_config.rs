//! `GET /v1/addons/{ext-auth|rate-limiter}?version=V`: what this cluster's add-ons load, from the
//! cluster config the management server sent. Long poll: while the content's version equals `V`
//! the answer waits for a change, up to [`LONG_POLL`], then says 304 so the add-on asks again.
//!
//! The ext-auth part carries secrets (OIDC client secrets; API keys only as SHA-256 digests), so
//! each kind is served only to the credential of a live add-on registration of that kind
//! (`Authorization: Bearer <its registration token>`), checked again whenever the long poll wakes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::ClusterConfig;

use super::Agent;
use super::registry::{AddonKind, RegistryError, bearer};

pub const LONG_POLL: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    #[serde(default)]
    version: Option<String>,
}

/// The document for one kind of add-on, without its version.
fn content(kind: AddonKind, config: Option<&ClusterConfig>) -> Value {
    let addons = config.map(|c| c.addons.clone()).unwrap_or_default();
    match kind {
        AddonKind::ExtAuth => json!({"configs": addons.auth_configs}),
        AddonKind::RateLimiter => json!({"domains": addons.rate_limit_domains}),
    }
}

fn versioned(kind: AddonKind, config: Option<&ClusterConfig>) -> (String, Value) {
    let mut document = content(kind, config);
    let version = format!(
        "{:016x}",
        trellis_base::stable_hash(&serde_json::to_vec(&document).expect("JSON serializes"))
    );
    document["version"] = Value::String(version.clone());
    (version, document)
}

pub async fn serve(
    State((agent, _)): State<(Arc<Agent>, trellis_xds::ProxyStatusBoard)>,
    Path(kind): Path<String>,
    Query(query): Query<VersionQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(kind) = AddonKind::parse(&kind) else {
        return AddonKind::unknown(&kind);
    };
    let mut changes = agent.config.subscribe();
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    loop {
        // Checked at every wake-up: a credential deleted or taken over mid-poll gets nothing more.
        let authorized = bearer(&headers).and_then(|token| agent.registry.addon_for_token(kind, token));
        if authorized.is_none() {
            tracing::warn!(
                kind = kind.as_str(),
                "add-on config refused: no credential of a registered add-on of this kind"
            );
            return RegistryError::AddonCredentialRequired(kind.as_str()).into_response();
        }
        let current = changes.borrow_and_update().clone();
        let (version, document) = versioned(kind, current.as_deref().map(|c| &c.config));
        // Before the first config arrives there is nothing to serve yet: wait like for a change.
        if current.is_some() && query.version.as_deref() != Some(version.as_str()) {
            return Json(document).into_response();
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return StatusCode::NOT_MODIFIED.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_the_content_of_each_kind() {
        let mut config = ClusterConfig::default();
        let (empty, _) = versioned(AddonKind::ExtAuth, Some(&config));
        config.addons.rate_limit_domains.push(Default::default());
        let (unchanged, _) = versioned(AddonKind::ExtAuth, Some(&config));
        assert_eq!(empty, unchanged, "a rate-limit change does not wake ext-auth");
        let (limiter, document) = versioned(AddonKind::RateLimiter, Some(&config));
        assert_eq!(document["version"], limiter.as_str());
        assert_eq!(document["domains"].as_array().unwrap().len(), 1);
        assert_eq!(AddonKind::parse("firewall"), None);
        assert_eq!(AddonKind::parse("rate-limiter"), Some(AddonKind::RateLimiter));
    }
}
