//! Who is calling the API. Every request but `/healthz` carries one of:
//! - the admin token (generated at first start into `--data-dir/api/admin-token`, mode 0600;
//!   the user `admin` in the group `trellis:admins`);
//! - a token an admin issued (`trellis token create`), stored only as its SHA-256;
//! - a client certificate from `--api-client-ca` (user: subject CN; groups: O entries);
//! - an OIDC ID token from `--oidc-issuer` for `--oidc-audience`, verified against the
//!   provider's published keys (user and groups from the configured claims);
//! - the web UI's session cookie, from a login at that provider ([`super::ui`]): the session's
//!   ID token is verified as above on every request. Requests that change state must also carry
//!   the [`super::ui::CSRF_HEADER`], which another site's page cannot send.
//!
//! Anything else is 401, and nothing about why beyond "missing" or "not valid" reaches the
//! caller: the reason goes to the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use trellis_ext_auth_server::jwks::RemoteJwks;
use trellis_support::httpc::HttpClient;

use super::Mgmt;
use super::api_tls::PeerCertificate;
use super::config::OidcConfig;

/// The caller, as the handlers and the audit log see it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    /// admin-token, token, client-certificate, oidc.
    pub method: &'static str,
}

impl Identity {
    pub fn rbac_user(&self) -> trellis_rbac::User {
        trellis_rbac::User {
            name: self.user.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// Bearer tokens longer than this are not looked at (an ID token is a few KB).
const MAX_BEARER_BYTES: usize = 16 * 1024;

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api").join("admin-token")
}

/// Reads the admin token, generating it at first start. Returns its SHA-256 and whether it is new.
pub fn load_or_create_admin_token(data_dir: &Path) -> anyhow::Result<(String, bool)> {
    let path = admin_token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(token) => return existing_admin_token(&path, &token),
        // Only a missing file means "first start": any other error must not replace the token.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read the admin token {}", path.display())),
    }
    let dir = path.parent().expect("a parent directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let token = trellis_pki::random_token();
    super::pki::write_private(&path, &format!("{token}\n"))?;
    Ok((trellis_base::sha256_hex(token.as_bytes()), true))
}

/// An existing admin token, refused when others could have read it.
fn existing_admin_token(path: &Path, token: &str) -> anyhow::Result<(String, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} is readable by others (mode {mode:o}): treat the admin token as leaked, delete the file and restart to have a new one generated",
        path.display()
    );
    {
        let token = token.trim();
        anyhow::ensure!(
            token.len() >= 32,
            "{} holds no usable admin token: delete it to have a new one generated",
            path.display()
        );
        Ok((trellis_base::sha256_hex(token.as_bytes()), false))
    }
}

/// The operator's OpenID provider: its keys, fetched and refreshed as the ext-auth service does.
pub struct OidcVerifier {
    config: OidcConfig,
    keys: tokio::sync::OnceCell<RemoteJwks>,
    http: HttpClient,
    /// When discovery last failed: requests meanwhile fail at once instead of each waiting for
    /// an unreachable provider.
    failed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long after a failed discovery the provider is not asked again.
const DISCOVERY_BACKOFF: Duration = Duration::from_secs(10);

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> anyhow::Result<OidcVerifier> {
        let http = match &config.ca_file {
            Some(path) => HttpClient::with_ca_files(std::slice::from_ref(path))?,
            None => HttpClient::default(),
        };
        Ok(OidcVerifier {
            config,
            keys: tokio::sync::OnceCell::new(),
            http,
            failed_at: std::sync::Mutex::new(None),
        })
    }

    /// The key set named by the issuer's discovery document, fetched once (and retried on the
    /// next request while it fails).
    async fn keys(&self) -> anyhow::Result<&RemoteJwks> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys);
        }
        let failed_at = *self.failed_at.lock().expect("lock");
        if failed_at.is_some_and(|at| at.elapsed() < DISCOVERY_BACKOFF) {
            anyhow::bail!("the OIDC provider's discovery failed less than {DISCOVERY_BACKOFF:?} ago");
        }
        let result = self.discover().await;
        if result.is_err() {
            *self.failed_at.lock().expect("lock") = Some(std::time::Instant::now());
        }
        result
    }

    async fn discover(&self) -> anyhow::Result<&RemoteJwks> {
        self.keys
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let response = self.http.get(&url, Duration::from_secs(5)).await?;
                anyhow::ensure!(response.status == 200, "{url} answered {}", response.status);
                let document: serde_json::Value = serde_json::from_str(&response.body).context(url.clone())?;
                // OpenID Connect Discovery 1.0, section 4.3: the document's issuer must be exactly
                // the one configured, or keys of another issuer could be taken for this one's.
                anyhow::ensure!(
                    document["issuer"].as_str() == Some(self.config.issuer.as_str()),
                    "{url} names issuer {}, not {}",
                    document["issuer"],
                    self.config.issuer
                );
                let jwks_uri = document["jwks_uri"]
                    .as_str()
                    .with_context(|| format!("{url} names no jwks_uri"))?;
                anyhow::ensure!(
                    same_security(&self.config.issuer, jwks_uri),
                    "{url} names jwks_uri {jwks_uri}: plain http for an https issuer"
                );
                Ok(RemoteJwks::new(jwks_uri, Duration::from_secs(300), self.http.clone()))
            })
            .await
    }

    async fn verify(&self, token: &str) -> anyhow::Result<Identity> {
        let keys = self.keys().await?;
        let kid = trellis_extauth::token_kid(token);
        let jwks = keys
            .keys(kid.as_deref())
            .await
            .context("the OIDC provider's keys are not available")?;
        let expect = trellis_extauth::JwtExpectations {
            issuer: Some(self.config.issuer.clone()),
            audiences: vec![self.config.audience.clone()],
        };
        let claims = trellis_extauth::verify_jwt(token, &jwks, &expect, trellis_support::unix_now())?;
        anyhow::ensure!(claims.contains_key("exp"), "the ID token has no expiry");
        let user = claims
            .get(&self.config.username_claim)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .with_context(|| format!("the ID token has no {:?} claim", self.config.username_claim))?;
        let groups = match claims.get(&self.config.groups_claim) {
            Some(serde_json::Value::Array(list)) => {
                list.iter().filter_map(|g| g.as_str().map(str::to_string)).collect()
            }
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            // Prefixed like Kubernetes' --oidc-username-prefix default, so that a provider's
            // user can never be mistaken for the local admin or a token's user.
            user: format!("oidc:{user}"),
            groups: groups.into_iter().map(|g| format!("oidc:{g}")).collect(),
            method: "oidc",
        })
    }
}

/// An https issuer's keys come over https too.
fn same_security(issuer: &str, jwks_uri: &str) -> bool {
    !issuer.starts_with("https://") || jwks_uri.starts_with("https://")
}

/// What a request presented, checked.
async fn authenticate(
    mgmt: &Mgmt,
    certificate: Option<Vec<u8>>,
    authorization: Option<HeaderValue>,
    session_token: Option<String>,
) -> Result<Identity, &'static str> {
    if let Some(der) = certificate {
        // The TLS layer already verified the chain against --api-client-ca.
        let info = trellis_pki::inspect_der(&der).map_err(|_| "client certificate unreadable")?;
        let user = info
            .subject_cn
            .filter(|cn| !cn.is_empty())
            .ok_or("client certificate has no CN")?;
        // `oidc:` names belong to ID tokens: a certificate cannot pass for a provider's user.
        if user.starts_with("oidc:") || info.subject_orgs.iter().any(|o| o.starts_with("oidc:")) {
            return Err("client certificate names a reserved oidc: user or group");
        }
        return Ok(Identity {
            user,
            groups: info.subject_orgs,
            method: "client-certificate",
        });
    }
    let Some(value) = authorization else {
        return match session_token {
            Some(token) => match &mgmt.api.oidc {
                Some(oidc) => oidc
                    .verify(&token)
                    .await
                    .map(|mut identity| {
                        identity.method = "oidc-session";
                        identity
                    })
                    .map_err(|error| {
                        tracing::info!(error = %format!("{error:#}"), "UI session refused: its ID token is not valid");
                        "session not valid"
                    }),
                None => Err("missing credentials"),
            },
            None => Err("missing credentials"),
        };
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_BEARER_BYTES)
        .ok_or("malformed Authorization header")?;
    let hash = trellis_base::sha256_hex(token.as_bytes());
    // Comparing digests: equal-length values, and the stored one is not secret.
    if hash == mgmt.api.admin_token_hash {
        return Ok(Identity {
            user: "admin".into(),
            groups: vec![trellis_rbac::ADMINS_GROUP.into()],
            method: "admin-token",
        });
    }
    let store = mgmt.store.clone();
    let lookup = hash.clone();
    let record = tokio::task::spawn_blocking(move || store.api_token(&lookup))
        .await
        .map_err(|_| "token lookup failed")?
        .map_err(|_| "token lookup failed")?;
    if let Some(record) = record {
        if record.expires_at.is_some_and(|at| at <= trellis_support::unix_now()) {
            return Err("token expired");
        }
        return Ok(Identity {
            user: record.user,
            groups: record.groups,
            method: "token",
        });
    }
    if let Some(oidc) = &mgmt.api.oidc
        && token.matches('.').count() == 2
    {
        return oidc.verify(token).await.map_err(|error| {
            tracing::info!(error = %format!("{error:#}"), "OIDC ID token refused");
            "ID token not valid"
        });
    }
    Err("unknown token")
}

/// Middleware: authenticates every request but `/healthz`, or answers 401.
pub async fn require_identity(State(mgmt): State<Arc<Mgmt>>, mut request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    // Only owned values cross the await: the request body is not Sync.
    let certificate = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|peer| peer.0.clone());
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let session_token = match (&mgmt.api.ui_login, &authorization, &certificate) {
        (Some(login), None, None) if request.headers().contains_key(header::COOKIE) => {
            if !is_safe(request.method()) && !request.headers().contains_key(super::ui::CSRF_HEADER) {
                return refuse(
                    &mgmt,
                    request.uri().path(),
                    "a session cookie without the UI's CSRF header",
                );
            }
            login
                .session_token(request.method(), request.uri(), request.headers())
                .await
        }
        _ => None,
    };
    match authenticate(&mgmt, certificate, authorization, session_token).await {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(reason) => refuse(&mgmt, request.uri().path(), reason),
    }
}

fn is_safe(method: &axum::http::Method) -> bool {
    method == axum::http::Method::GET || method == axum::http::Method::HEAD
}

/// 401, counted and logged with the reason; the caller learns only the kind of failure.
fn refuse(mgmt: &Mgmt, path: &str, reason: &'static str) -> Response {
    mgmt.metrics.api_unauthenticated_total.inc();
    tracing::info!(reason, path, "API request refused: not authenticated");
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": format!("unauthenticated: {reason}; send Authorization: Bearer <token> (see `trellis config`)")})),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"trellis\""),
    );
    response
}
