//! Gloo's `oauth2.oidcAuthorizationCode`: the OpenID Connect authorization code flow (with PKCE)
//! for browsers, ending in a session cookie; requests with a session go upstream with the ID
//! token in a header.
//!
//! ```text
//! GET /page, no session ──► 302 authorization_endpoint?response_type=code&state&nonce&code_challenge
//!                           + state cookie; {nonce, PKCE verifier, /page} kept server-side 5 min
//! GET {callbackPath}?code&state ──► state = cookie, taken once; code exchanged at token_endpoint;
//!                           ID token checked (signature with the provider's JWKS, iss, aud, exp,
//!                           nonce) ──► session {id_token, access_token} under a random 256-bit id
//!                           ──► 302 /page + session cookie
//! GET /page + cookie ──► allow, ID token in headers.idTokenHeader
//! GET {logoutPath} ──► session deleted, cookie cleared, 302 afterLogoutUrl (default appUrl)
//! ```
//!
//! Sessions and pending logins live in memory (`session.cookie`: one server's memory, gone on
//! restart) or in Redis (`session.redis`, with a TTL, shared between replicas). Unlike Gloo's
//! cookie mode the browser never holds the tokens, only the session id, so `cipherConfig` is not
//! needed; the stores key entries by the SHA-256 of the id, so a Redis dump does not hold usable
//! cookies. Sessions end when the ID token expires (no refresh: `allowRefreshing` is accepted, and
//! the user logs in again) or after `cookieOptions.maxAge`.
//!
//! The state is also bound to the browser with a short-lived cookie: a callback URL replayed
//! into another browser (login CSRF) finds no matching cookie and is refused.
//!
//! The provider is reached over `http://` or `https://` with the service's [`HttpClient`]
//! (the system's trust roots plus `trellis ext-auth --ca-file`; https is never downgraded).
//! The ID token's signature is always verified, although OIDC Core §3.1.3.7 allows relying on
//! TLS for a token received directly from the token endpoint.
//!
//! Failures to reach the provider or the session store deny with 503 (fail closed); a refused
//! code or ID token, a bad state or a provider error deny with 401; clients never get details,
//! the log does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trellis_extauth::{CheckInput, Jwks, JwtError, JwtExpectations, Outcome, cookie, token_kid, verify_jwt};
use trellis_support::unix_now;

use trellis_support::httpc::HttpClient;

/// Each request to the provider; below Envoy's default ext_authz timeout (2s).
const HTTP_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a login may take between the redirect to the provider and the callback.
const STATE_TTL: Duration = Duration::from_secs(300);
/// Pending logins kept in memory; unauthenticated requests create them, so they are capped
/// (the oldest give way).
const MAX_PENDING_LOGINS: usize = 10_000;
const MAX_MEMORY_SESSIONS: usize = 100_000;
/// An unknown `kid` refetches the provider's keys at most this often.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
/// Gloo's default cookie max age: 30 days.
const DEFAULT_MAX_AGE_SECS: u64 = 2_592_000;
/// Longer original URLs are not returned to after login (the user lands on the app URL).
const MAX_RETURN_PATH: usize = 4096;
const ID_LEN: usize = 43; // 32 random bytes, base64url without padding

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A compiled `oidcAuthorizationCode` config.
pub struct Oidc {
    client_id: String,
    /// `None` with `disableClientSecret` (public client: PKCE only).
    client_secret: Option<String>,
    issuer_url: String,
    /// `scheme://host[:port]` of appUrl: where users are sent back to.
    app_origin: String,
    redirect_uri: String,
    /// Request paths (appUrl's path + the configured path).
    callback_path: String,
    logout_path: Option<String>,
    after_logout_url: String,
    scope: String,
    auth_params: Vec<(String, String)>,
    token_params: Vec<(String, String)>,
    overrides: DiscoveryOverride,
    discovery_ttl: Duration,
    id_token_header: Option<String>,
    access_token_header: Option<String>,
    bearer_access_token: bool,
    cookies: CookieSettings,
    fail_on_fetch_failure: bool,
    store: Store,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    /// Reaches the provider; the system's trust roots unless [`Oidc::with_http_client`].
    http: HttpClient,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OidcConfig {
    client_id: String,
    /// Resolved from `clientSecretRef` by the management server.
    #[serde(default)]
    client_secret: Option<String>,
    /// Gloo's reference, already resolved into `clientSecret`.
    #[serde(default)]
    #[allow(dead_code)]
    client_secret_ref: Option<Value>,
    #[serde(default)]
    disable_client_secret: Option<bool>,
    #[serde(default)]
    client_authentication: Option<ClientAuthentication>,
    issuer_url: String,
    #[serde(default)]
    auth_endpoint_query_params: BTreeMap<String, String>,
    #[serde(default)]
    token_endpoint_query_params: BTreeMap<String, String>,
    app_url: String,
    #[serde(default)]
    callback_path: Option<String>,
    #[serde(default)]
    logout_path: Option<String>,
    #[serde(default)]
    after_logout_url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    session: Option<SessionConfig>,
    #[serde(default)]
    headers: Option<HeadersConfig>,
    #[serde(default)]
    discovery_override: Option<DiscoveryOverride>,
    #[serde(default)]
    discovery_poll_interval: Option<String>,
    /// Accepted: an unknown `kid` refetches the keys, at most every 30s.
    #[serde(default)]
    #[allow(dead_code)]
    jwks_cache_refresh_policy: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientAuthentication {
    #[serde(default)]
    client_secret: Option<ClientSecretAuthentication>,
    #[serde(default)]
    private_key_jwt: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientSecretAuthentication {
    #[serde(default)]
    #[allow(dead_code)]
    client_secret_ref: Option<Value>,
    #[serde(default)]
    disable_client_secret: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionConfig {
    #[serde(default)]
    fail_on_fetch_failure: bool,
    #[serde(default)]
    cookie_options: Option<CookieOptions>,
    #[serde(default)]
    cookie: Option<CookieSession>,
    #[serde(default)]
    redis: Option<RedisSession>,
    /// Accepted: the cookie only holds a random session id (see the module docs).
    #[serde(default)]
    #[allow(dead_code)]
    cipher_config: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CookieOptions {
    #[serde(default)]
    max_age: Option<u64>,
    #[serde(default)]
    not_secure: bool,
    #[serde(default)]
    http_only: Option<bool>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    same_site: Option<String>,
    #[serde(default)]
    domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CookieSession {
    #[serde(default)]
    #[allow(dead_code)]
    allow_refreshing: Option<bool>,
    #[serde(default)]
    key_prefix: Option<String>,
    #[serde(default)]
    target_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RedisSession {
    #[serde(default)]
    options: RedisOptions,
    #[serde(default)]
    key_prefix: Option<String>,
    #[serde(default)]
    cookie_name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    allow_refreshing: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    pre_expiry_buffer: Option<Value>,
    #[serde(default)]
    target_domain: Option<String>,
    #[serde(default)]
    header_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RedisOptions {
    #[serde(default)]
    host: String,
    #[serde(default)]
    db: i64,
    #[serde(default)]
    #[allow(dead_code)]
    pool_size: Option<i64>,
    #[serde(default)]
    tls_cert_mount_path: Option<String>,
    #[serde(default)]
    socket_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HeadersConfig {
    #[serde(default)]
    id_token_header: Option<String>,
    #[serde(default)]
    access_token_header: Option<String>,
    #[serde(default)]
    use_bearer_schema_for_authorization: Option<bool>,
}

/// Provider metadata that replaces what discovery says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DiscoveryOverride {
    #[serde(default)]
    auth_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    auth_methods: Option<Vec<String>>,
}

/// What discovery and the key set say, fetched together.
struct Provider {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    token_auth_methods: Vec<String>,
    jwks: Jwks,
    fetched: Instant,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PendingLogin {
    nonce: String,
    verifier: String,
    return_path: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Session {
    id_token: String,
    #[serde(default)]
    access_token: Option<String>,
    /// Unix seconds.
    expires_at: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: String,
    #[serde(default)]
    access_token: Option<String>,
}

struct CookieSettings {
    name: String,
    state_name: String,
    max_age: Option<u64>,
    secure: bool,
    http_only: bool,
    path: Option<String>,
    same_site: Option<&'static str>,
    domain: Option<String>,
}

/// Why a request could not be decided as it should; logged, never sent.
#[derive(Debug, thiserror::Error)]
enum FlowError {
    /// The provider or the session store cannot be used: 503.
    #[error("{0}")]
    Unavailable(String),
    /// The login attempt is not acceptable: 401.
    #[error("{0}")]
    Refused(String),
}

#[derive(Clone, Copy)]
enum Kind {
    State,
    Session,
}

enum Store {
    Memory {
        states: Mutex<MemoryMap>,
        sessions: Mutex<MemoryMap>,
    },
    Redis {
        client: redis::Client,
        prefix: String,
        conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    },
}

struct MemoryMap {
    entries: HashMap<String, (String, Instant)>,
    cap: usize,
}

// === impl Oidc ===

impl Oidc {
    /// Compiles Gloo's `oidcAuthorizationCode` object. `redis_url` is the server's own Redis,
    /// used by `session.redis` when `options.host` is empty. No I/O happens here. The provider
    /// is reached with the system's trust roots; see [`Oidc::with_http_client`].
    pub fn from_config(config: &Value, redis_url: Option<&str>) -> anyhow::Result<Oidc> {
        let config = OidcConfig::deserialize(config).context("oidcAuthorizationCode")?;
        let field = |name: &str| format!("oidcAuthorizationCode.{name}");
        if config.client_id.trim().is_empty() {
            bail!("{}: empty", field("clientId"));
        }
        let mut disable_secret = config.disable_client_secret.unwrap_or(false);
        if let Some(auth) = &config.client_authentication {
            if auth.private_key_jwt.is_some() {
                bail!(
                    "{}: private key JWT client authentication is not supported; use clientSecret",
                    field("clientAuthentication.privateKeyJwt")
                );
            }
            disable_secret |= auth
                .client_secret
                .as_ref()
                .and_then(|s| s.disable_client_secret)
                .unwrap_or(false);
        }
        let client_secret = match (disable_secret, config.client_secret.filter(|s| !s.is_empty())) {
            (true, _) => None,
            (false, Some(secret)) => Some(secret),
            (false, None) => bail!(
                "{}: missing (the management server resolves clientSecretRef into it); set disableClientSecret for a public client",
                field("clientSecret")
            ),
        };
        let issuer_url = config.issuer_url.trim().trim_end_matches('/').to_string();
        require_http_url(&issuer_url, &field("issuerUrl"))?;
        let app_url = config.app_url.trim().to_string();
        let (app_origin, app_base) = split_url(&app_url)
            .with_context(|| format!("{}: {app_url:?} is not an absolute http(s) URL", field("appUrl")))?;
        let relative = |name: &str, path: &str| -> anyhow::Result<String> {
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                bail!("{}: {path:?} must be a path starting with '/'", field(name));
            }
            Ok(format!("{app_base}{path}"))
        };
        let callback_path = relative(
            "callbackPath",
            config.callback_path.as_deref().unwrap_or("/oidc-gloo-callback"),
        )?;
        let logout_path = match config.logout_path.as_deref() {
            None | Some("") => None,
            Some(path) => Some(relative("logoutPath", path)?),
        };
        if logout_path.as_deref() == Some(callback_path.as_str()) {
            bail!("{}: the same as callbackPath", field("logoutPath"));
        }
        let after_logout_url = match config.after_logout_url.filter(|u| !u.is_empty()) {
            Some(url) => {
                split_url(&url)
                    .with_context(|| format!("{}: {url:?} is not an absolute http(s) URL", field("afterLogoutUrl")))?;
                url
            }
            None => app_url.clone(),
        };
        let mut scopes = vec!["openid".to_string()];
        for scope in config.scopes.iter().flat_map(|s| s.split_whitespace()) {
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_string());
            }
        }
        // The flow's own parameters cannot be overridden by the extra ones.
        const OWN: &[&str] = &[
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "grant_type",
            "code",
            "code_verifier",
            "client_secret",
        ];
        for (name, params) in [
            ("authEndpointQueryParams", &config.auth_endpoint_query_params),
            ("tokenEndpointQueryParams", &config.token_endpoint_query_params),
        ] {
            if let Some(key) = params.keys().find(|k| OWN.contains(&k.as_str())) {
                bail!("{}: {key:?} is set by the flow itself", field(name));
            }
        }
        let overrides = config.discovery_override.unwrap_or_default();
        for (name, url) in [
            ("authEndpoint", &overrides.auth_endpoint),
            ("tokenEndpoint", &overrides.token_endpoint),
            ("jwksUri", &overrides.jwks_uri),
        ] {
            if let Some(url) = url {
                require_http_url(url, &field(&format!("discoveryOverride.{name}")))?;
            }
        }
        let discovery_ttl = match config.discovery_poll_interval.as_deref() {
            None | Some("") => Duration::from_secs(1800),
            Some(text) => trellis_base::parse_duration(text).with_context(|| field("discoveryPollInterval"))?,
        };
        let headers = config.headers.unwrap_or_default();
        for name in [&headers.id_token_header, &headers.access_token_header]
            .into_iter()
            .flatten()
        {
            if !is_token(name) {
                bail!("{}: {name:?} is not a header name", field("headers"));
            }
        }

        let session = config.session.unwrap_or_default();
        let options = session.cookie_options.unwrap_or_default();
        let secure = app_url.starts_with("https://") && !options.not_secure;
        let same_site = match options.same_site.as_deref() {
            None | Some("LaxMode") => Some("Lax"),
            Some("StrictMode") => Some("Strict"),
            Some("NoneMode") if secure => Some("None"),
            Some("NoneMode") => bail!(
                "{}: NoneMode needs a secure cookie (an https appUrl, notSecure unset)",
                field("session.cookieOptions.sameSite")
            ),
            Some("DefaultMode") => None,
            Some(other) => bail!(
                "{}: {other:?}: use LaxMode, StrictMode, NoneMode or DefaultMode",
                field("session.cookieOptions.sameSite")
            ),
        };
        let (cookie_name, store) = match (session.cookie, session.redis) {
            (Some(_), Some(_)) => bail!("{}: set one of cookie or redis", field("session")),
            (Some(cookie), None) => {
                if cookie.target_domain.is_some() {
                    bail!("{}: not supported", field("session.cookie.targetDomain"));
                }
                let name = match cookie.key_prefix.filter(|p| !p.is_empty()) {
                    Some(prefix) => format!("{prefix}_{DEFAULT_COOKIE}"),
                    None => DEFAULT_COOKIE.to_string(),
                };
                (name, Store::memory())
            }
            (None, None) => (DEFAULT_COOKIE.to_string(), Store::memory()),
            (None, Some(redis)) => {
                if redis.target_domain.is_some() || redis.header_name.is_some() {
                    bail!(
                        "{}: targetDomain and headerName are not supported",
                        field("session.redis")
                    );
                }
                if redis.options.tls_cert_mount_path.is_some()
                    || redis.options.socket_type.as_deref().is_some_and(|t| t != "TCP")
                {
                    bail!("{}: TLS to Redis is not supported", field("session.redis.options"));
                }
                let url = match redis.options.host.trim() {
                    "" => redis_url.map(str::to_string).with_context(|| {
                        format!(
                            "{}: empty, and the server has no Redis of its own",
                            field("session.redis.options.host")
                        )
                    })?,
                    host if host.contains("://") => host.to_string(),
                    host => format!("redis://{host}/{}", redis.options.db),
                };
                let client = redis::Client::open(url.as_str())
                    .with_context(|| format!("{}: {url:?}", field("session.redis.options.host")))?;
                let name = redis
                    .cookie_name
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| DEFAULT_COOKIE.to_string());
                let prefix = redis
                    .key_prefix
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "trellis-oidc".to_string());
                (
                    name,
                    Store::Redis {
                        client,
                        prefix,
                        conn: tokio::sync::OnceCell::new(),
                    },
                )
            }
        };
        if !is_token(&cookie_name) {
            bail!("{}: {cookie_name:?} is not a cookie name", field("session"));
        }
        let cookies = CookieSettings {
            state_name: format!("{cookie_name}-state"),
            name: cookie_name,
            max_age: match options.max_age {
                Some(0) => None,
                Some(secs) => Some(secs),
                None => Some(DEFAULT_MAX_AGE_SECS),
            },
            secure,
            http_only: options.http_only.unwrap_or(true),
            path: match options.path {
                None => Some("/".to_string()),
                Some(path) if path.is_empty() => None,
                Some(path) if path.starts_with('/') && !path.contains([';', ' ']) => Some(path),
                Some(path) => bail!("{}: {path:?} is not a cookie path", field("session.cookieOptions.path")),
            },
            same_site,
            domain: match options.domain.filter(|d| !d.is_empty()) {
                Some(domain) if is_token(&domain) => Some(domain),
                Some(domain) => bail!("{}: {domain:?} is not a domain", field("session.cookieOptions.domain")),
                None => None,
            },
        };

        Ok(Oidc {
            redirect_uri: format!("{app_origin}{callback_path}"),
            client_id: config.client_id,
            client_secret,
            issuer_url,
            app_origin,
            callback_path,
            logout_path,
            after_logout_url,
            scope: scopes.join(" "),
            auth_params: config.auth_endpoint_query_params.into_iter().collect(),
            token_params: config.token_endpoint_query_params.into_iter().collect(),
            overrides,
            discovery_ttl,
            id_token_header: headers.id_token_header.filter(|h| !h.is_empty()),
            access_token_header: headers.access_token_header.filter(|h| !h.is_empty()),
            bearer_access_token: headers.use_bearer_schema_for_authorization.unwrap_or(false),
            cookies,
            fail_on_fetch_failure: session.fail_on_fetch_failure,
            store,
            provider: tokio::sync::Mutex::new(None),
            http: HttpClient::default(),
        })
    }

    /// Reaches the provider with `http` (e.g. one that also trusts private CAs).
    pub fn with_http_client(mut self, http: HttpClient) -> Oidc {
        self.http = http;
        self
    }

    /// Decides one request: the callback, the logout path, a request with a session, or the
    /// start of a login. Never panics on client input; denials carry no detail.
    pub async fn check(&self, input: &CheckInput) -> Outcome {
        let path = input.path.split(['?', '#']).next().unwrap_or_default();
        let result = if path == self.callback_path {
            self.callback(input).await
        } else if self.logout_path.as_deref() == Some(path) {
            self.logout(input).await
        } else {
            match self.session(input).await {
                Ok(Some(session)) => return self.allow(session),
                Ok(None) => self.start_login(input).await,
                Err(error) if !self.fail_on_fetch_failure => {
                    tracing::warn!(%error, "oidc: cannot read the session; starting a new login");
                    self.start_login(input).await
                }
                Err(error) => Err(error),
            }
        };
        match result {
            Ok(outcome) => outcome,
            Err(FlowError::Unavailable(error)) => {
                tracing::warn!(%error, issuer = %self.issuer_url, "oidc: denying, provider or session store unavailable");
                Outcome::deny(503)
            }
            Err(FlowError::Refused(error)) => {
                tracing::info!(%error, issuer = %self.issuer_url, "oidc: login refused");
                Outcome::deny(401)
            }
        }
    }

    fn allow(&self, session: Session) -> Outcome {
        let mut upstream_headers = Vec::new();
        if let Some(name) = &self.id_token_header {
            upstream_headers.push((name.clone(), session.id_token));
        }
        if let (Some(name), Some(token)) = (&self.access_token_header, session.access_token) {
            let value = if self.bearer_access_token {
                format!("Bearer {token}")
            } else {
                token
            };
            upstream_headers.push((name.clone(), value));
        }
        Outcome::Allow { upstream_headers }
    }

    /// Where a session or login state of this config is stored: the SHA-256 of the random id
    /// with the config's issuer, client and app. Sessions of one config are then worthless to
    /// another (a customer's session cookie on the admin app's route), even when both keep them
    /// in one Redis under the same prefix and cookie name.
    fn stored_key(&self, id: &str) -> String {
        hash_id(&format!(
            "{}\n{}\n{}\n{id}",
            self.issuer_url, self.client_id, self.redirect_uri
        ))
    }

    /// The session of the request's cookie, if it names a current one.
    /// The ID token of the request's live session, if it has one; never starts a login. For a
    /// caller that answers "no session" itself (the management API's 401) rather than with a
    /// redirect: unauthenticated API calls then leave no pending login behind.
    pub async fn session_id_token(&self, input: &CheckInput) -> Option<String> {
        match self.session(input).await {
            Ok(session) => session.map(|s| s.id_token),
            Err(error) => {
                tracing::warn!(%error, "oidc: cannot read the session");
                None
            }
        }
    }

    async fn session(&self, input: &CheckInput) -> Result<Option<Session>, FlowError> {
        let Some(id) = cookie(input, &self.cookies.name).filter(|id| is_random_id(id)) else {
            return Ok(None);
        };
        let Some(stored) = self.store.get(Kind::Session, &self.stored_key(id)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_str::<Session>(&stored)
            .ok()
            .filter(|s| s.expires_at > unix_now()))
    }

    async fn start_login(&self, input: &CheckInput) -> Result<Outcome, FlowError> {
        let provider = self.provider(false).await?;
        let (state, nonce, verifier) = (random_id()?, random_id()?, random_id()?);
        let challenge = B64URL.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
        // Only the path is kept: users go back to appUrl's origin, whatever Host the request had.
        let return_path = Some(input.path.as_str())
            .filter(|p| {
                p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") && p.len() <= MAX_RETURN_PATH
            })
            .filter(|p| !p.chars().any(char::is_control))
            .unwrap_or("/")
            .to_string();
        let pending = PendingLogin {
            nonce: nonce.clone(),
            verifier,
            return_path,
        };
        let pending = serde_json::to_string(&pending).map_err(|e| FlowError::Unavailable(e.to_string()))?;
        self.store
            .put(Kind::State, &self.stored_key(&state), pending, STATE_TTL)
            .await?;

        let mut query = vec![
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", self.scope.as_str()),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        query.extend(self.auth_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let separator = if provider.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{separator}{}", provider.authorization_endpoint, form_encode(&query));
        Ok(redirect(
            location,
            vec![
                self.cookies
                    .set(&self.cookies.state_name, &state, Some(STATE_TTL.as_secs()), true),
            ],
        ))
    }

    async fn callback(&self, input: &CheckInput) -> Result<Outcome, FlowError> {
        let query = input.path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let query = parse_query(query).ok_or_else(|| FlowError::Refused("malformed callback query".into()))?;
        let single = |name: &str| -> Option<&str> {
            let mut values = query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let value = values.next()?;
            values.next().is_none().then_some(value)
        };
        let state = single("state")
            .filter(|s| is_random_id(s))
            .ok_or_else(|| FlowError::Refused("callback without a valid state".into()))?;
        if cookie(input, &self.cookies.state_name) != Some(state) {
            return Err(FlowError::Refused(
                "state does not match this browser's state cookie".into(),
            ));
        }
        // Taken, not read: a state works once.
        let pending = self.store.take(Kind::State, &self.stored_key(state)).await?;
        let pending: PendingLogin = pending
            .and_then(|p| serde_json::from_str(&p).ok())
            .ok_or_else(|| FlowError::Refused("unknown or expired state".into()))?;
        if let Some(error) = single("error") {
            return Err(FlowError::Refused(format!("provider answered {error:?}")));
        }
        let code = single("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| FlowError::Refused("callback without a code".into()))?;
        let provider = self.provider(false).await?;
        // RFC 9207: a provider that names itself must be the one the login went to.
        if let Some(iss) = single("iss")
            && iss.trim_end_matches('/') != provider.issuer.trim_end_matches('/')
        {
            return Err(FlowError::Refused(format!("callback from issuer {iss:?}")));
        }

        let tokens = self.exchange(&provider, code, &pending.verifier).await?;
        let claims = match self.verify_id_token(&provider, &tokens.id_token, &pending.nonce) {
            Err(FlowError::Refused(_))
                if token_kid(&tokens.id_token).is_some_and(|kid| !provider.jwks.has_kid(&kid)) =>
            {
                // The provider may have rotated its keys since they were fetched.
                let provider = self.provider(true).await?;
                self.verify_id_token(&provider, &tokens.id_token, &pending.nonce)?
            }
            other => other?,
        };

        let now = unix_now();
        let token_exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        let expires_at = match self.cookies.max_age {
            Some(max_age) => token_exp.min(now.saturating_add(max_age)),
            None => token_exp,
        };
        if expires_at <= now {
            return Err(FlowError::Refused("ID token already expired".into()));
        }
        let id = random_id()?;
        let session = Session {
            id_token: tokens.id_token,
            access_token: tokens.access_token,
            expires_at,
        };
        let session = serde_json::to_string(&session).map_err(|e| FlowError::Unavailable(e.to_string()))?;
        self.store
            .put(
                Kind::Session,
                &self.stored_key(&id),
                session,
                Duration::from_secs(expires_at - now),
            )
            .await?;
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
        tracing::info!(sub, "oidc: session created");
        Ok(redirect(
            format!("{}{}", self.app_origin, pending.return_path),
            // The session cookie last: if only one Set-Cookie survived, it should be this one.
            vec![
                self.cookies.clear(&self.cookies.state_name, true),
                self.cookies.set(&self.cookies.name, &id, self.cookies.max_age, false),
            ],
        ))
    }

    async fn logout(&self, input: &CheckInput) -> Result<Outcome, FlowError> {
        if let Some(id) = cookie(input, &self.cookies.name).filter(|id| is_random_id(id)) {
            self.store.delete(Kind::Session, &self.stored_key(id)).await?;
        }
        Ok(redirect(
            self.after_logout_url.clone(),
            vec![self.cookies.clear(&self.cookies.name, false)],
        ))
    }

    /// The code for tokens at the token endpoint (RFC 6749 §4.1.3, PKCE verifier included).
    async fn exchange(&self, provider: &Provider, code: &str, verifier: &str) -> Result<TokenResponse, FlowError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        form.extend(self.token_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut headers = vec![("accept", "application/json".to_string())];
        let methods = &provider.token_auth_methods;
        match &self.client_secret {
            None => form.push(("client_id", self.client_id.as_str())),
            // client_secret_basic is the default when the provider lists nothing (RFC 8414 §2).
            Some(secret) if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") => {
                // RFC 6749 §2.3.1: both parts form-encoded before base64.
                let pair = format!("{}:{}", form_encode_value(&self.client_id), form_encode_value(secret));
                headers.push((
                    "authorization",
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)),
                ));
            }
            Some(secret) if methods.iter().any(|m| m == "client_secret_post") => {
                form.push(("client_id", self.client_id.as_str()));
                form.push(("client_secret", secret.as_str()));
            }
            Some(_) => {
                return Err(FlowError::Unavailable(format!(
                    "the token endpoint supports none of client_secret_basic, client_secret_post: {methods:?}"
                )));
            }
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = form_encode(&form).into_bytes();
        let response = http(
            &self.http,
            "POST",
            &provider.token_endpoint,
            &headers,
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await?;
        match response.status {
            200 => serde_json::from_str(&response.body).map_err(|e| FlowError::Refused(format!("token response: {e}"))),
            // invalid_grant and friends: the code was not good (replayed, expired, wrong verifier).
            400 | 401 => Err(FlowError::Refused(format!(
                "token endpoint answered {}: {}",
                response.status,
                truncate(&response.body)
            ))),
            status => Err(FlowError::Unavailable(format!("token endpoint answered {status}"))),
        }
    }

    /// OIDC Core §3.1.3.7: signature with the provider's keys, iss, aud (and azp), exp, iat, nonce.
    fn verify_id_token(
        &self,
        provider: &Provider,
        token: &str,
        nonce: &str,
    ) -> Result<trellis_extauth::Claims, FlowError> {
        let expect = JwtExpectations {
            issuer: Some(provider.issuer.clone()),
            audiences: vec![self.client_id.clone()],
        };
        let claims = verify_jwt(token, &provider.jwks, &expect, unix_now())
            .map_err(|e: JwtError| FlowError::Refused(format!("ID token: {e}")))?;
        let refuse = |what: &str| Err(FlowError::Refused(format!("ID token: {what}")));
        if claims.get("exp").and_then(Value::as_u64).is_none() || claims.get("iat").and_then(Value::as_u64).is_none() {
            return refuse("exp or iat missing");
        }
        if claims.get("sub").and_then(Value::as_str).is_none_or(str::is_empty) {
            return refuse("sub missing");
        }
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return refuse("nonce does not match");
        }
        let several_audiences = claims.get("aud").and_then(Value::as_array).is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.client_id => return refuse("azp is another client"),
            None if several_audiences => return refuse("several audiences and no azp"),
            _ => {}
        }
        Ok(claims)
    }

    /// Discovery and keys, cached for `discoveryPollInterval`; `refresh_keys` refetches when the
    /// last fetch is older than [`JWKS_MIN_REFRESH`] (for a token signed with a new key).
    async fn provider(&self, refresh_keys: bool) -> Result<Arc<Provider>, FlowError> {
        let mut slot = self.provider.lock().await;
        if let Some(provider) = slot.as_ref() {
            let age = provider.fetched.elapsed();
            if age < self.discovery_ttl && !(refresh_keys && age >= JWKS_MIN_REFRESH) {
                return Ok(provider.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer_url);
        let response = http(&self.http, "GET", &url, &[("accept", "application/json")], None).await?;
        if response.status != 200 {
            return Err(FlowError::Unavailable(format!("{url} answered {}", response.status)));
        }
        let document: DiscoveryDocument =
            serde_json::from_str(&response.body).map_err(|e| FlowError::Unavailable(format!("{url}: {e}")))?;
        // OIDC Discovery §4.3: the document must be the issuer's own.
        if document.issuer.trim_end_matches('/') != self.issuer_url {
            return Err(FlowError::Unavailable(format!(
                "{url} names issuer {:?}",
                document.issuer
            )));
        }
        let jwks_uri = self.overrides.jwks_uri.clone().unwrap_or(document.jwks_uri);
        let response = http(&self.http, "GET", &jwks_uri, &[("accept", "application/json")], None).await?;
        if response.status != 200 {
            return Err(FlowError::Unavailable(format!(
                "{jwks_uri} answered {}",
                response.status
            )));
        }
        let jwks = Jwks::parse(&response.body).map_err(|e| FlowError::Unavailable(format!("{jwks_uri}: {e}")))?;
        let provider = Arc::new(Provider {
            issuer: document.issuer,
            authorization_endpoint: self
                .overrides
                .auth_endpoint
                .clone()
                .unwrap_or(document.authorization_endpoint),
            token_endpoint: self.overrides.token_endpoint.clone().unwrap_or(document.token_endpoint),
            token_auth_methods: self
                .overrides
                .auth_methods
                .clone()
                .unwrap_or(document.token_endpoint_auth_methods_supported),
            jwks,
            fetched: Instant::now(),
        });
        for endpoint in [&provider.authorization_endpoint, &provider.token_endpoint] {
            require_http_url(endpoint, "provider endpoint").map_err(|e| FlowError::Unavailable(format!("{e:#}")))?;
        }
        *slot = Some(provider.clone());
        Ok(provider)
    }
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("client_id", &self.client_id)
            .field("issuer_url", &self.issuer_url)
            .field("redirect_uri", &self.redirect_uri)
            .field("cookie", &self.cookies.name)
            .finish_non_exhaustive()
    }
}

const DEFAULT_COOKIE: &str = "__session";

// === impl CookieSettings ===

impl CookieSettings {
    /// `state`: the login state cookie, SameSite=Lax whatever the session's setting, since it
    /// must come back on the provider's cross-site redirect.
    fn set(&self, name: &str, value: &str, max_age: Option<u64>, state: bool) -> String {
        let mut cookie = format!("{name}={value}");
        if let Some(max_age) = max_age {
            cookie.push_str(&format!("; Max-Age={max_age}"));
        }
        if let Some(path) = &self.path {
            cookie.push_str(&format!("; Path={path}"));
        }
        if let Some(domain) = &self.domain {
            cookie.push_str(&format!("; Domain={domain}"));
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        if self.http_only || state {
            cookie.push_str("; HttpOnly");
        }
        match (state, self.same_site) {
            (true, _) => cookie.push_str("; SameSite=Lax"),
            (false, Some(same_site)) => cookie.push_str(&format!("; SameSite={same_site}")),
            (false, None) => {}
        }
        cookie
    }

    fn clear(&self, name: &str, state: bool) -> String {
        self.set(name, "", Some(0), state)
    }
}

// === impl Store ===

impl Store {
    fn memory() -> Store {
        Store::Memory {
            states: Mutex::new(MemoryMap {
                entries: HashMap::new(),
                cap: MAX_PENDING_LOGINS,
            }),
            sessions: Mutex::new(MemoryMap {
                entries: HashMap::new(),
                cap: MAX_MEMORY_SESSIONS,
            }),
        }
    }

    async fn put(&self, kind: Kind, key: &str, value: String, ttl: Duration) -> Result<(), FlowError> {
        match self {
            Store::Memory { .. } => {
                self.map(kind).insert(key, value, ttl);
                Ok(())
            }
            Store::Redis { .. } => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(self.redis_key(kind, key))
                    .arg(value)
                    .arg("EX")
                    .arg(ttl.as_secs().max(1));
                self.redis(cmd).await
            }
        }
    }

    async fn get(&self, kind: Kind, key: &str) -> Result<Option<String>, FlowError> {
        match self {
            Store::Memory { .. } => Ok(self.map(kind).get(key)),
            Store::Redis { .. } => {
                self.redis(redis::cmd("GET").arg(self.redis_key(kind, key)).clone())
                    .await
            }
        }
    }

    async fn take(&self, kind: Kind, key: &str) -> Result<Option<String>, FlowError> {
        match self {
            Store::Memory { .. } => Ok(self.map(kind).remove(key)),
            Store::Redis { .. } => {
                self.redis(redis::cmd("GETDEL").arg(self.redis_key(kind, key)).clone())
                    .await
            }
        }
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<(), FlowError> {
        match self {
            Store::Memory { .. } => {
                self.map(kind).remove(key);
                Ok(())
            }
            Store::Redis { .. } => {
                let _: i64 = self
                    .redis(redis::cmd("DEL").arg(self.redis_key(kind, key)).clone())
                    .await?;
                Ok(())
            }
        }
    }

    fn map(&self, kind: Kind) -> std::sync::MutexGuard<'_, MemoryMap> {
        let Store::Memory { states, sessions } = self else {
            unreachable!("memory map of a Redis store")
        };
        let map = match kind {
            Kind::State => states,
            Kind::Session => sessions,
        };
        map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn redis_key(&self, kind: Kind, key: &str) -> String {
        let prefix = match self {
            Store::Redis { prefix, .. } => prefix.as_str(),
            Store::Memory { .. } => "",
        };
        match kind {
            Kind::State => format!("{prefix}:state:{key}"),
            Kind::Session => format!("{prefix}:session:{key}"),
        }
    }

    async fn redis<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, FlowError> {
        let Store::Redis { client, conn, .. } = self else {
            unreachable!("Redis command on a memory store")
        };
        let unavailable = |e: redis::RedisError| FlowError::Unavailable(format!("Redis: {e}"));
        let manager = conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(1);
                redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)
            })
            .await
            .map_err(unavailable)?;
        cmd.query_async(&mut manager.clone()).await.map_err(unavailable)
    }
}

impl MemoryMap {
    fn insert(&mut self, key: &str, value: String, ttl: Duration) {
        if self.entries.len() >= self.cap {
            let now = Instant::now();
            self.entries.retain(|_, (_, expires)| *expires > now);
        }
        if self.entries.len() >= self.cap
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(key.to_string(), (value, Instant::now() + ttl));
    }

    fn get(&self, key: &str) -> Option<String> {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn remove(&mut self, key: &str) -> Option<String> {
        self.entries
            .remove(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(v, _)| v)
    }
}

// === helpers ===

async fn http(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Result<trellis_support::httpc::Response, FlowError> {
    require_http_url(url, "provider URL").map_err(|e| FlowError::Unavailable(format!("{e:#}")))?;
    client
        .request(method, url, None, headers, body, HTTP_TIMEOUT)
        .await
        .map_err(|e| FlowError::Unavailable(format!("{e:#}")))
}

/// Provider URLs are `http://` or `https://` (TLS, never downgraded); other schemes are refused.
fn require_http_url(url: &str, field: &str) -> anyhow::Result<()> {
    if split_url(url).is_none() {
        bail!("{field}: {url:?} is not an absolute http(s) URL");
    }
    Ok(())
}

/// `http(s)://host[:port][/path]` into (`scheme://host[:port]`, `/path` without a trailing '/').
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let scheme_len = url.len() - rest.len();
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    if host.is_empty() || host.contains(['@', ' ']) || rest[host_end..].contains(['?', '#']) {
        return None;
    }
    let path = rest[host_end..].trim_end_matches('/');
    Some((url[..scheme_len + host_end].to_string(), path.to_string()))
}

fn redirect(location: String, set_cookies: Vec<String>) -> Outcome {
    let mut headers = vec![
        ("location".to_string(), location),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(set_cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
    Outcome::Deny {
        status: 302,
        headers,
        body: String::new(),
    }
}

fn random_id() -> Result<String, FlowError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| FlowError::Unavailable("no randomness from the system".into()))?;
    Ok(B64URL.encode(bytes))
}

fn is_random_id(text: &str) -> bool {
    text.len() == ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Stores key entries by this, so what they hold cannot be turned back into cookies.
fn hash_id(id: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, id.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 7230 token characters (header and cookie names, cookie domains).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn truncate(text: &str) -> &str {
    let end = text.char_indices().nth(200).map(|(i, _)| i).unwrap_or(text.len());
    &text[..end]
}

/// `application/x-www-form-urlencoded` (also a valid query string).
fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode_value(k), form_encode_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_encode_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string into decoded pairs; `None` if any part is not valid percent-encoded UTF-8.
fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_round_trip_and_malformed_ones_are_refused() {
        let pairs = [("state", "a b&c=d/é"), ("code", "x+y%z")];
        let encoded = form_encode(&pairs);
        assert_eq!(encoded, "state=a%20b%26c%3Dd%2F%C3%A9&code=x%2By%25z");
        let decoded = parse_query(&encoded).unwrap();
        assert_eq!(decoded, pairs.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(parse_query("a=%zz"), None);
        assert_eq!(parse_query("a=%f"), None);
        assert_eq!(parse_query("a=%ff"), None);
        assert_eq!(
            parse_query("a=1&b"),
            Some(vec![("a".into(), "1".into()), ("b".into(), String::new())])
        );
    }

    #[test]
    fn urls_split_into_origin_and_base_path() {
        let cases = [
            ("http://app.example", Some(("http://app.example", ""))),
            (
                "https://app.example:8443/base/",
                Some(("https://app.example:8443", "/base")),
            ),
            ("http://user@evil.example/", None),
            ("http:///x", None),
            ("ftp://x", None),
            ("http://x/?q", None),
        ];
        for (url, expected) in cases {
            let got = split_url(url);
            assert_eq!(got.as_ref().map(|(o, p)| (o.as_str(), p.as_str())), expected, "{url}");
        }
    }

    fn mk_config(extra: Value) -> Value {
        let mut config = serde_json::json!({
            "clientId": "app", "clientSecret": "s", "issuerUrl": "http://idp.example/", "appUrl": "https://app.example",
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        config
    }

    #[test]
    fn from_config_defaults_like_gloo_and_refuses_what_would_not_work() {
        let oidc = Oidc::from_config(&mk_config(serde_json::json!({"scopes": ["email", "openid"]})), None).unwrap();
        assert_eq!(oidc.redirect_uri, "https://app.example/oidc-gloo-callback");
        assert_eq!(oidc.scope, "openid email");
        assert_eq!(
            oidc.cookies.set("__session", "v", Some(5), false),
            "__session=v; Max-Age=5; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        // https providers are reached over TLS.
        let https = mk_config(serde_json::json!({
            "issuerUrl": "https://idp.example/", "discoveryOverride": {"jwksUri": "https://idp.example/keys"},
        }));
        assert_eq!(
            Oidc::from_config(&https, None).unwrap().issuer_url,
            "https://idp.example"
        );
        let cases = [
            (serde_json::json!({"clientSecret": null}), "clientSecret: missing"),
            (
                serde_json::json!({"issuerUrl": "ftp://idp.example"}),
                "issuerUrl: \"ftp://idp.example\" is not an absolute http(s) URL",
            ),
            (
                serde_json::json!({"discoveryOverride": {"tokenEndpoint": "idp.example/token"}}),
                "discoveryOverride.tokenEndpoint",
            ),
            (serde_json::json!({"appUrl": "app.example"}), "appUrl"),
            (serde_json::json!({"callbackPath": "cb"}), "callbackPath"),
            (serde_json::json!({"logoutPath": "/oidc-gloo-callback"}), "logoutPath"),
            (
                serde_json::json!({"authEndpointQueryParams": {"state": "x"}}),
                "set by the flow",
            ),
            (
                serde_json::json!({"session": {"redis": {"options": {}}}}),
                "no Redis of its own",
            ),
            (
                serde_json::json!({"session": {"cookie": {}, "redis": {}}}),
                "one of cookie or redis",
            ),
            (
                serde_json::json!({"appUrl": "http://a", "session": {"cookieOptions": {"sameSite": "NoneMode"}}}),
                "NoneMode",
            ),
            (
                serde_json::json!({"headers": {"idTokenHeader": "x id"}}),
                "not a header name",
            ),
            (serde_json::json!({"dynamicMetadataFromClaims": {}}), "unknown field"),
        ];
        for (extra, message) in cases {
            let error = format!("{:#}", Oidc::from_config(&mk_config(extra.clone()), None).unwrap_err());
            assert!(error.contains(message), "{extra}: {error}");
        }
    }
}
