//! The ext-auth OIDC authorization code module against a real OpenID provider (the
//! `oidc-provider` npm package), called in-process: the login redirect, the provider's login,
//! the callback and code exchange, the session cookie, logout; sessions in memory and in a real
//! Redis; refusals of replayed, cross-browser and malformed callbacks; fail closed when the
//! provider or Redis is down.
//!
//! Needs Node.js and the npm package (scripts/setup) and redis-server (scripts/setup).

use trellis_testkit as common;
use trellis_testkit::oidc_provider;

use std::time::{Duration, Instant};

use base64::Engine;
use oidc_provider::OidcProvider;
use trellis_ext_auth_server::oidc::Oidc;
use trellis_extauth::{CheckInput, Outcome};

const APP: &str = "http://app.example";
const CALLBACK: &str = "http://app.example/oidc-gloo-callback";
const CLIENT_ID: &str = "trellis-app";
const CLIENT_SECRET: &str = "app-secret-0123456789";

fn test_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("trellis-extauth-oidc-{name}-{}", std::process::id()))
}

fn mk_config(provider: &OidcProvider, session: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "issuerUrl": provider.issuer,
        "appUrl": APP,
        "logoutPath": "/logout",
        "scopes": ["email"],
        "session": session,
        "headers": {"idTokenHeader": "x-id-token"},
    })
}

fn mk_input(path: &str, cookies: &[(&str, &str)]) -> CheckInput {
    let mut input = CheckInput {
        method: "GET".into(),
        scheme: "http".into(),
        host: "app.example".into(),
        path: path.into(),
        ..CheckInput::default()
    };
    if !cookies.is_empty() {
        let header = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        input.headers.insert("cookie".into(), header);
    }
    input
}

/// The status and headers of a deny; panics on allow.
fn denied(outcome: &Outcome) -> (u16, &[(String, String)], &str) {
    match outcome {
        Outcome::Deny { status, headers, body } => (*status, headers, body),
        Outcome::Allow { .. } => panic!("expected a deny, got {outcome:?}"),
    }
}

fn header<'a>(outcome: &'a Outcome, name: &str) -> Option<&'a str> {
    let (_, headers, _) = denied(outcome);
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The `Set-Cookie` header of `outcome` for cookie `name`.
fn set_cookie<'a>(outcome: &'a Outcome, name: &str) -> &'a str {
    let (_, headers, _) = denied(outcome);
    headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.as_str())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name} in {outcome:?}"))
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1
}

fn assert_refused(outcome: &Outcome, what: &str) {
    assert_eq!(*outcome, Outcome::deny(401), "{what}");
}

/// A login as far as the provider's redirect back: (callback path with query, state cookie).
async fn login_at_provider(oidc: &Oidc, provider: &OidcProvider, path: &str, user: &str) -> (String, String) {
    let start = oidc.check(&mk_input(path, &[])).await;
    let (status, _, _) = denied(&start);
    assert_eq!(status, 302, "{start:?}");
    let location = header(&start, "location").unwrap();
    assert!(
        location.starts_with(&format!("{}/auth?", provider.issuer)),
        "{location}"
    );
    let state_cookie = cookie_value(set_cookie(&start, "__session-state")).to_string();
    let callback = provider.login(location, user).await;
    (callback.strip_prefix(APP).unwrap().to_string(), state_cookie)
}

/// A full login: the session cookie's value.
async fn log_in(oidc: &Oidc, provider: &OidcProvider, path: &str, user: &str) -> String {
    let (callback, state) = login_at_provider(oidc, provider, path, user).await;
    let done = oidc.check(&mk_input(&callback, &[("__session-state", &state)])).await;
    assert_eq!(denied(&done).0, 302, "{done:?}");
    cookie_value(set_cookie(&done, "__session")).to_string()
}

fn id_token_claims(outcome: &Outcome) -> serde_json::Value {
    let Outcome::Allow { upstream_headers } = outcome else {
        panic!("expected allow, got {outcome:?}");
    };
    let token = upstream_headers
        .iter()
        .find(|(k, _)| k == "x-id-token")
        .map(|(_, v)| v)
        .expect("no x-id-token");
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_a_real_provider_ends_in_a_session_that_forwards_the_id_token() {
    let provider = OidcProvider::start(&test_dir("login"), CLIENT_ID, CLIENT_SECRET, CALLBACK).await;
    let oidc = Oidc::from_config(&mk_config(&provider, serde_json::json!({"cookie": {}})), None).unwrap();

    // 1. No session: redirect to the provider with the code flow's parameters and PKCE.
    let start = oidc.check(&mk_input("/private?x=1", &[])).await;
    let location = header(&start, "location").unwrap().to_string();
    for part in [
        "response_type=code",
        "client_id=trellis-app",
        "redirect_uri=http%3A%2F%2Fapp.example%2Foidc-gloo-callback",
        "scope=openid%20email",
        "code_challenge_method=S256",
        "nonce=",
        "state=",
    ] {
        assert!(location.contains(part), "{part} missing from {location}");
    }
    let state_cookie = set_cookie(&start, "__session-state");
    assert!(
        state_cookie.contains("HttpOnly") && state_cookie.contains("SameSite=Lax"),
        "{state_cookie}"
    );
    assert!(
        !state_cookie.contains("Secure"),
        "an http appUrl gets no Secure cookie: {state_cookie}"
    );

    // 2. The provider's login, then its redirect back to the callback.
    let callback = provider.login(&location, "alice").await;
    let callback_path = callback.strip_prefix(APP).unwrap();
    let state = cookie_value(state_cookie);
    let done = oidc
        .check(&mk_input(callback_path, &[("__session-state", state)]))
        .await;
    assert_eq!(denied(&done).0, 302, "{done:?}\n{}", provider.log_text());
    assert_eq!(header(&done, "location"), Some("http://app.example/private?x=1"));
    let session_cookie = set_cookie(&done, "__session");
    assert!(
        session_cookie.contains("HttpOnly") && session_cookie.contains("Path=/"),
        "{session_cookie}"
    );
    assert!(
        set_cookie(&done, "__session-state").contains("Max-Age=0"),
        "state cookie cleared"
    );
    let session = cookie_value(session_cookie);
    assert_eq!(session.len(), 43, "256 random bits, base64url");

    // 3. With the session: allowed, with the provider's ID token for alice.
    let allowed = oidc.check(&mk_input("/private", &[("__session", session)])).await;
    let claims = id_token_claims(&allowed);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["iss"], provider.issuer.as_str());

    // 4. The callback works once: replayed, even with its cookie, it is refused.
    let replay = oidc
        .check(&mk_input(callback_path, &[("__session-state", state)]))
        .await;
    assert_refused(&replay, "replayed callback");

    // 5. A tampered session cookie starts a new login instead of passing.
    let mut tampered = session.to_string().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for cookie in [tampered.as_str(), "", "../../etc/passwd", "é", &session[..42]] {
        let outcome = oidc.check(&mk_input("/private", &[("__session", cookie)])).await;
        assert_eq!(denied(&outcome).0, 302, "cookie {cookie:?}");
        assert!(header(&outcome, "location").unwrap().starts_with(&provider.issuer));
    }

    // 6. Logout: session deleted, cookie cleared, back to the app; the old cookie no longer works.
    let logout = oidc.check(&mk_input("/logout", &[("__session", session)])).await;
    assert_eq!(denied(&logout).0, 302);
    assert_eq!(header(&logout, "location"), Some(APP));
    assert!(
        set_cookie(&logout, "__session").starts_with("__session=; Max-Age=0"),
        "{logout:?}"
    );
    let after = oidc.check(&mk_input("/private", &[("__session", session)])).await;
    assert_eq!(denied(&after).0, 302, "session gone after logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_from_another_browser_or_login_attempt_are_refused() {
    let provider = OidcProvider::start(&test_dir("csrf"), CLIENT_ID, CLIENT_SECRET, CALLBACK).await;
    let oidc = Oidc::from_config(&mk_config(&provider, serde_json::json!({})), None).unwrap();

    // Login CSRF: a callback URL sent to a browser that did not start this login (no state
    // cookie, or the cookie of its own login) is refused.
    let (callback, state) = login_at_provider(&oidc, &provider, "/", "mallory").await;
    let (_, other_state) = login_at_provider(&oidc, &provider, "/", "alice").await;
    assert_refused(&oidc.check(&mk_input(&callback, &[])).await, "no state cookie");
    assert_refused(
        &oidc
            .check(&mk_input(&callback, &[("__session-state", &other_state)]))
            .await,
        "another login's state cookie",
    );

    // Code injection: a code issued to one login attempt, presented with another attempt's
    // state, fails PKCE at the provider and, were PKCE absent, the ID token's nonce here.
    let (callback_b, _) = login_at_provider(&oidc, &provider, "/", "bob").await;
    let code_b = callback_b.split(['?', '&']).find(|p| p.starts_with("code=")).unwrap();
    let (callback_c, state_c) = login_at_provider(&oidc, &provider, "/", "carol").await;
    let state_param_c = callback_c.split(['?', '&']).find(|p| p.starts_with("state=")).unwrap();
    let injected = format!("/oidc-gloo-callback?{code_b}&{state_param_c}");
    assert_refused(
        &oidc.check(&mk_input(&injected, &[("__session-state", &state_c)])).await,
        "injected code",
    );

    // The refusals above did not consume the first login: with its own cookie it completes.
    let done = oidc.check(&mk_input(&callback, &[("__session-state", &state)])).await;
    assert_eq!(denied(&done).0, 302, "{done:?}");
    let session = cookie_value(set_cookie(&done, "__session"));
    assert_eq!(
        id_token_claims(&oidc.check(&mk_input("/", &[("__session", session)])).await)["sub"],
        "mallory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_callbacks_are_refused_without_detail() {
    let provider = OidcProvider::start(&test_dir("malformed"), CLIENT_ID, CLIENT_SECRET, CALLBACK).await;
    let oidc = Oidc::from_config(&mk_config(&provider, serde_json::json!({})), None).unwrap();
    let (callback, state) = login_at_provider(&oidc, &provider, "/", "alice").await;
    let query = callback.split_once('?').unwrap().1;
    let unknown_state = "A".repeat(43);
    let cases = [
        ("/oidc-gloo-callback".to_string(), state.clone()),
        ("/oidc-gloo-callback?state=%zz".to_string(), state.clone()),
        (format!("/oidc-gloo-callback?{query}&state={state}"), state.clone()),
        (
            format!("/oidc-gloo-callback?code=x&state={unknown_state}"),
            unknown_state.clone(),
        ),
        (
            format!("/oidc-gloo-callback?code=x&state={state}\0"),
            format!("{state}\0"),
        ),
        ("/oidc-gloo-callback?code=%FF%FE&state=x".to_string(), "x".to_string()),
    ];
    for (path, cookie) in cases {
        let outcome = oidc.check(&mk_input(&path, &[("__session-state", &cookie)])).await;
        assert_refused(&outcome, &path);
    }
    // The provider reporting an error (the user cancelled) consumes the state and is refused.
    let (_, state) = login_at_provider(&oidc, &provider, "/", "alice").await;
    let error = format!("/oidc-gloo-callback?error=access_denied&state={state}");
    assert_refused(
        &oidc.check(&mk_input(&error, &[("__session-state", &state)])).await,
        "provider error",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_denies_with_503() {
    let mut provider = OidcProvider::start(&test_dir("down"), CLIENT_ID, CLIENT_SECRET, CALLBACK).await;
    let config = mk_config(&provider, serde_json::json!({}));
    let oidc = Oidc::from_config(&config, None).unwrap();
    // A login that reached the provider, whose code exchange then finds it gone.
    let (callback, state) = login_at_provider(&oidc, &provider, "/", "alice").await;
    provider.stop();
    let outcome = oidc.check(&mk_input(&callback, &[("__session-state", &state)])).await;
    assert_eq!(outcome, Outcome::deny(503), "token endpoint down");
    // Discovery cannot be fetched: no redirect to a provider that is not there.
    let fresh = Oidc::from_config(&config, None).unwrap();
    assert_eq!(
        fresh.check(&mk_input("/", &[])).await,
        Outcome::deny(503),
        "discovery down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_are_shared_between_instances_expire_and_fail_closed() {
    let dir = test_dir("redis");
    let provider = OidcProvider::start(&dir.join("provider"), CLIENT_ID, CLIENT_SECRET, CALLBACK).await;
    let (mut redis, redis_port) = start_redis(&dir).await;
    let session_config = serde_json::json!({
        "redis": {"options": {"host": format!("127.0.0.1:{redis_port}")}, "cookieName": "sid", "keyPrefix": "test"},
        "failOnFetchFailure": true,
    });
    let config = mk_config(&provider, session_config);
    let replica_a = Oidc::from_config(&config, None).unwrap();
    let replica_b = Oidc::from_config(&config, None).unwrap();

    let start = replica_a.check(&mk_input("/", &[])).await;
    let state = cookie_value(set_cookie(&start, "sid-state")).to_string();
    let callback = provider.login(header(&start, "location").unwrap(), "alice").await;
    // The callback lands on the other replica: the pending login is in Redis.
    let done = replica_b
        .check(&mk_input(callback.strip_prefix(APP).unwrap(), &[("sid-state", &state)]))
        .await;
    let session = cookie_value(set_cookie(&done, "sid")).to_string();
    let allowed = replica_a.check(&mk_input("/", &[("sid", &session)])).await;
    assert_eq!(id_token_claims(&allowed)["sub"], "alice");
    // Another OIDC config (another client) on the same Redis, prefix and cookie name does not
    // accept the session: sessions are bound to the config that made them.
    let mut other_client = config.clone();
    other_client["clientId"] = serde_json::json!("another-app");
    let other = Oidc::from_config(&other_client, None).unwrap();
    assert_eq!(denied(&other.check(&mk_input("/", &[("sid", &session)])).await).0, 302);

    // Stored under the SHA-256 of the id, with a TTL no longer than the ID token's life.
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("test:session:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains(&session), "the raw session id is not a key");
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    let exp = id_token_claims(&allowed)["exp"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        ttl > 0 && ttl <= exp - now + 1,
        "ttl {ttl}, token expires in {}",
        exp - now
    );

    // Expiry is Redis's: with the key gone the session is gone on every replica.
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&keys[0])
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        denied(&replica_b.check(&mk_input("/", &[("sid", &session)])).await).0,
        302
    );

    // Logout on one replica ends a session for all.
    let session = log_in_named(&replica_a, &provider, "sid").await;
    assert!(replica_b.check(&mk_input("/", &[("sid", &session)])).await.is_allow());
    let logout = replica_b.check(&mk_input("/logout", &[("sid", &session)])).await;
    assert_eq!(denied(&logout).0, 302);
    assert_eq!(
        denied(&replica_a.check(&mk_input("/", &[("sid", &session)])).await).0,
        302
    );

    // Redis down: with failOnFetchFailure, a session cannot be checked, so nothing passes.
    let session = log_in_named(&replica_a, &provider, "sid").await;
    redis.kill().await.unwrap();
    let started = Instant::now();
    assert_eq!(
        replica_a.check(&mk_input("/", &[("sid", &session)])).await,
        Outcome::deny(503)
    );
    assert_eq!(
        replica_a.check(&mk_input("/", &[])).await,
        Outcome::deny(503),
        "no state can be stored"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by timeouts: {:?}",
        started.elapsed()
    );
    drop(provider);
    let _ = std::fs::remove_dir_all(&dir);
}

/// [`log_in`] with another cookie name.
async fn log_in_named(oidc: &Oidc, provider: &OidcProvider, name: &str) -> String {
    let start = oidc.check(&mk_input("/", &[])).await;
    let state = cookie_value(set_cookie(&start, &format!("{name}-state"))).to_string();
    let callback = provider.login(header(&start, "location").unwrap(), "alice").await;
    let done = oidc
        .check(&mk_input(
            callback.strip_prefix(APP).unwrap(),
            &[(&format!("{name}-state"), &state)],
        ))
        .await;
    cookie_value(set_cookie(&done, name)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sessions_are_per_instance() {
    let provider = OidcProvider::start(&test_dir("memory"), CLIENT_ID, CLIENT_SECRET, CALLBACK).await;
    let config = mk_config(&provider, serde_json::json!({"cookie": {}}));
    let oidc = Oidc::from_config(&config, None).unwrap();
    let session = log_in(&oidc, &provider, "/", "alice").await;
    assert!(oidc.check(&mk_input("/", &[("__session", &session)])).await.is_allow());
    // A restarted server (a new instance) has no such session: the user logs in again.
    let restarted = Oidc::from_config(&config, None).unwrap();
    assert_eq!(
        denied(&restarted.check(&mk_input("/", &[("__session", &session)])).await).0,
        302
    );
}

async fn start_redis(dir: &std::path::Path) -> (tokio::process::Child, u16) {
    common::start_redis(dir, &[], None).await
}
