//! The web UI: static pages embedded in the binary, served beside the API on the same port and
//! reading the same API as the CLI, so every request meets the same authentication and RBAC.
//! The assets hold no data; what a page shows comes from authenticated API calls.
//!
//! How a browser logs in:
//! - with `--oidc-client-secret-file`: the OIDC authorization code flow with PKCE against
//!   `--oidc-issuer` (the ext-auth service's flow, reused). `/ui/` without a session redirects
//!   to the provider; `/ui/callback` ends the login with a session cookie (HttpOnly, Secure on
//!   https, SameSite=Lax) naming a session kept in memory or in Redis (`--ui-session-redis`);
//!   API calls then authenticate with that cookie ([`UiLogin::session_token`]).
//! - without it: the page asks for an API token and keeps it in the tab's sessionStorage, sent
//!   as a bearer token (`trellis dashboard` opens the page with it).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;
use trellis_ext_auth_server::oidc::Oidc;
use trellis_extauth::{CheckInput, Outcome};
use trellis_support::httpc::HttpClient;

use super::Mgmt;
use super::config::{OidcConfig, UiConfig};

/// Where the login flow hands the session's ID token to us (never to a client).
const ID_TOKEN_HEADER: &str = "x-trellis-id-token";
/// Sessions end after 8 hours, or when the ID token expires if that is sooner.
const SESSION_MAX_AGE_SECS: u64 = 8 * 3600;
/// A state-changing API call authenticated by the session cookie must carry this header, which
/// a page of another origin cannot add without a CORS preflight we never grant (CSRF).
pub const CSRF_HEADER: &str = "x-trellis-ui";

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const SIGNED_OUT_HTML: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Trellis</title>\
<link rel=\"stylesheet\" href=\"/ui/app.css\"></head><body><main><div class=\"login\"><h1>Signed out</h1>\
<p><a href=\"/ui/\">Sign in again</a></p></div></main></body></html>";

/// The browser login at the operator's OpenID provider.
pub struct UiLogin {
    oidc: Oidc,
    /// `http` or `https`, as browsers reach the UI.
    scheme: &'static str,
}

impl UiLogin {
    /// The login `--oidc-client-secret-file` turns on, or `None`.
    pub fn new(provider: Option<&OidcConfig>, ui: &UiConfig) -> anyhow::Result<Option<UiLogin>> {
        let (Some(provider), Some(secret_file)) = (provider, &ui.client_secret_file) else {
            return Ok(None);
        };
        let secret = trellis_support::files::read_private(secret_file, "--oidc-client-secret-file")?;
        let cookie_options = json!({"maxAge": SESSION_MAX_AGE_SECS, "sameSite": "LaxMode"});
        let session = match &ui.session_redis {
            Some(url) => json!({
                "cookieOptions": cookie_options,
                "redis": {"cookieName": "trellis_session", "keyPrefix": "trellis-ui", "options": {"host": url}},
            }),
            None => json!({"cookieOptions": cookie_options, "cookie": {"keyPrefix": "trellis"}}),
        };
        let config = json!({
            "clientId": provider.audience,
            "clientSecret": secret,
            "issuerUrl": provider.issuer,
            "appUrl": format!("{}/ui", ui.url),
            "callbackPath": "/callback",
            "logoutPath": "/logout",
            // Not /ui/: that would start the next login at once, and a provider that still
            // remembers the user would sign them straight back in.
            "afterLogoutUrl": format!("{}/ui/signed-out", ui.url),
            "scopes": ["email"],
            "session": session,
            "headers": {"idTokenHeader": ID_TOKEN_HEADER},
        });
        let http = match &provider.ca_file {
            Some(path) => HttpClient::with_ca_files(std::slice::from_ref(path))?,
            None => HttpClient::default(),
        };
        let oidc = Oidc::from_config(&config, None)
            .map_err(|e| anyhow::anyhow!("the UI's OIDC login (--oidc-*, --ui-url, --ui-session-redis): {e:#}"))?
            .with_http_client(http);
        Ok(Some(UiLogin {
            oidc,
            scheme: if ui.url.starts_with("https://") {
                "https"
            } else {
                "http"
            },
        }))
    }

    fn input(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> CheckInput {
        CheckInput {
            method: method.to_string(),
            scheme: self.scheme.into(),
            host: headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .into(),
            path: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").into(),
            headers: headers
                .iter()
                .filter(|(name, _)| *name == header::COOKIE)
                .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
                .collect(),
            ..Default::default()
        }
    }

    /// The ID token of the request's session, if its cookie names a live one.
    pub async fn session_token(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<String> {
        self.oidc.session_id_token(&self.input(method, uri, headers)).await
    }

    /// Runs the flow for a page request: `Ok` to serve the page, `Err` the redirect (to the
    /// provider, or back from the callback or logout) or refusal to answer instead.
    async fn gate(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Response> {
        match self.oidc.check(&self.input(method, uri, headers)).await {
            Outcome::Allow { .. } => Ok(()),
            Outcome::Deny { status, headers, body } => {
                let mut response =
                    (StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED), body).into_response();
                for (name, value) in headers {
                    if let (Ok(name), Ok(value)) = (
                        header::HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        response.headers_mut().append(name, value);
                    }
                }
                Err(response)
            }
        }
    }
}

/// `/`, `/ui/...`: served without the API's authentication layer (a page must be able to send
/// a browser to its login); the pages' data comes from the authenticated API.
pub fn router(mgmt: Arc<Mgmt>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/callback", get(login_step))
        .route("/ui/logout", get(login_step))
        .route("/ui/login.json", get(login_mode))
        .route(
            "/ui/signed-out",
            get(|| async { asset("text/html; charset=utf-8", SIGNED_OUT_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .with_state(mgmt)
}

async fn index(State(mgmt): State<Arc<Mgmt>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(login) = &mgmt.api.ui_login
        && let Err(redirect) = login.gate(&method, &uri, &headers).await
    {
        return redirect;
    }
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The callback and logout paths of the login flow.
async fn login_step(State(mgmt): State<Arc<Mgmt>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let Some(login) = &mgmt.api.ui_login else {
        return (
            StatusCode::NOT_FOUND,
            "the UI's OIDC login is not configured (--oidc-client-secret-file)",
        )
            .into_response();
    };
    match login.gate(&method, &uri, &headers).await {
        Ok(()) => Redirect::to("/ui/").into_response(),
        Err(response) => response,
    }
}

/// How the page should log in: `oidc` (a 401 means the session ended: reload to log in again)
/// or `token` (ask for an API token).
async fn login_mode(State(mgmt): State<Arc<Mgmt>>) -> Response {
    let mode = if mgmt.api.ui_login.is_some() { "oidc" } else { "token" };
    axum::Json(json!({"login": mode})).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Only our own scripts and styles; the page cannot be framed (clickjacking) nor leak its
    // URL (which may carry a token fragment) as a referrer.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
