//! `trellis ext-auth` in process, called over loopback gRPC by a real tonic client as Envoy's
//! ext_authz filter calls it: basic, API key, JWT with a remote key set, OPA, passthrough to a
//! second instance, boolean expressions, and malformed credentials.

use trellis_testkit::jwt_issuer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use jwt_issuer::Issuer;
use serde_json::{Value, json};
use tonic::transport::Channel;
use trellis_agent::addon_client::AgentLinkArgs;
use trellis_ext_auth_server::{ExtAuthArgs, serve, wire};
use trellis_extauth::Outcome;

const UNAUTHENTICATED: i32 = 16;
const PERMISSION_DENIED: i32 = 7;

/// `user:password`, from `htpasswd -nbm user password`.
fn basic_config(name: &str) -> Value {
    json!({"name": name, "basicAuth": {"realm": "trellis", "apr": {"users": {"user": {"salt": "TYiryv0/", "hashedPassword": "8BvzLUO9IfGPGGsPnAgSu1"}}}}})
}

fn key_config(name: &str) -> Value {
    let digest = ring::digest::digest(&ring::digest::SHA256, b"k-alice");
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    json!({"name": name, "apiKeyAuth": {
        "headersFromMetadataEntry": {"x-user-id": {"name": "user"}},
        "keys": [{"sha256": sha256, "secret": "demo/alice", "metadata": {"user": "alice"}}]
    }})
}

const POLICY: &str = r#"
package test

default allow = false

allow {
    startswith(input.http_request.path, "/api/pets")
    input.http_request.method == "GET"
}
"#;

fn opa_config(name: &str) -> Value {
    json!({"name": name, "opaAuth": {"query": "data.test.allow == true", "regoModules": {"demo/policy/policy.rego": POLICY}}})
}

fn jwt_config(name: &str, jwks_url: &str) -> Value {
    json!({"name": name, "oauth2": {"accessTokenValidation": {
        "jwt": {"remoteJwks": {"url": jwks_url, "refreshInterval": "60s"}, "issuer": "https://issuer.example", "audiences": ["api"]},
        "claimsToHeaders": [{"claim": "sub", "header": "x-user"}]
    }}})
}

// === harness ===

/// Starts an instance serving `configs` (id -> spec); it stops when the test's runtime ends.
async fn start(configs: Vec<(&str, Value)>) -> SocketAddr {
    start_with_admin(configs, None).await
}

/// The same, with metrics served on `admin`.
async fn start_with_admin(configs: Vec<(&str, Value)>, admin: Option<SocketAddr>) -> SocketAddr {
    let document =
        json!({"configs": configs.into_iter().map(|(id, spec)| json!({"id": id, "spec": spec})).collect::<Vec<_>>()});
    let dir = std::env::temp_dir().join(format!("trellis-extauth-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("configs.yaml");
    std::fs::write(&path, document.to_string()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let args = ExtAuthArgs {
        listen: address,
        configs: vec![path],
        redis: None,
        ca_files: Vec::new(),
        link: AgentLinkArgs {
            agent: None,
            agent_ca: None,
            name: None,
            namespace: "gloo-mesh".into(),
            advertise: None,
            role_secret_file: None,
        },
        admin_addr: admin,
    };
    tokio::spawn(async move { serve(args, listener, std::future::pending()).await.unwrap() });
    // Once it answers a check it has read its file.
    let mut client = client(address).await;
    check(&mut client, request("", "GET", "/", &[])).await;
    std::fs::remove_dir_all(&dir).unwrap();
    address
}

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

async fn client(address: SocketAddr) -> AuthorizationClient<Channel> {
    AuthorizationClient::connect(format!("http://{address}")).await.unwrap()
}

/// A CheckRequest as Envoy sends it for `method path` with `headers` on a route whose auth
/// config is `config_id` (none when empty).
fn request(config_id: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut context_extensions = HashMap::new();
    if !config_id.is_empty() {
        context_extensions.insert("config_id".to_string(), config_id.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "api.example".into(),
                    scheme: "http".into(),
                    headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

async fn check(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> (i32, Outcome) {
    let response: CheckResponse = client.check(request).await.expect("the service answers").into_inner();
    (
        response.status.as_ref().map_or(0, |s| s.code),
        wire::from_response(&response),
    )
}

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

fn allow(headers: &[(&str, &str)]) -> (i32, Outcome) {
    (
        0,
        Outcome::Allow {
            upstream_headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        },
    )
}

fn deny(code: i32, status: u16, headers: &[(&str, &str)]) -> (i32, Outcome) {
    (
        code,
        Outcome::Deny {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: String::new(),
        },
    )
}

fn basic_challenge() -> (i32, Outcome) {
    deny(UNAUTHENTICATED, 401, &[("www-authenticate", "Basic realm=\"trellis\"")])
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// === tests ===

#[tokio::test]
async fn basic_auth_allows_the_right_password_and_challenges_the_rest() {
    let address = start(vec![("demo.basic", json!({"configs": [basic_config("basic1")]}))]).await;
    let mut client = client(address).await;
    let cases = [
        (Some(basic("user:password")), allow(&[("x-user-id", "user")])),
        (Some(basic("user:wrong")), basic_challenge()),
        (Some(basic("nobody:password")), basic_challenge()),
        (None, basic_challenge()),
    ];
    for (authorization, expected) in cases {
        let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", a.as_str())).collect();
        let got = check(&mut client, request("demo.basic", "GET", "/", &headers)).await;
        assert_eq!(got, expected, "{authorization:?}");
    }
}

#[tokio::test]
async fn api_keys_allow_known_keys_and_say_nothing_about_the_others() {
    let address = start(vec![("demo.keys", json!({"configs": [key_config("key1")]}))]).await;
    let mut client = client(address).await;
    // Gloo's challenge, the same for a missing and an unknown key.
    let challenge = [("www-authenticate", "API key is missing or invalid")];
    let cases = [
        (Some("k-alice"), allow(&[("x-user-id", "alice")])),
        (Some("k-mallory"), deny(UNAUTHENTICATED, 401, &challenge)),
        (None, deny(UNAUTHENTICATED, 401, &challenge)),
    ];
    for (key, expected) in cases {
        let headers: Vec<(&str, &str)> = key.iter().map(|k| ("api-key", *k)).collect();
        assert_eq!(
            check(&mut client, request("demo.keys", "GET", "/", &headers)).await,
            expected,
            "{key:?}"
        );
    }
}

#[tokio::test]
async fn jwt_is_verified_with_the_remote_key_set() {
    let issuer = Issuer::new("k1");
    let jwks_url = issuer.serve().await;
    let unreachable = format!("http://{}/jwks.json", closed_port().await);
    let address = start(vec![
        ("demo.jwt", json!({"configs": [jwt_config("jwt1", &jwks_url)]})),
        ("demo.jwt-down", json!({"configs": [jwt_config("jwt1", &unreachable)]})),
    ])
    .await;
    let mut client = client(address).await;
    let invalid = deny(
        UNAUTHENTICATED,
        401,
        &[("www-authenticate", "Bearer error=\"invalid_token\"")],
    );
    let cases = [
        (
            "demo.jwt",
            Some(issuer.token("https://issuer.example", 300)),
            allow(&[("x-user", "alice")]),
        ),
        (
            "demo.jwt",
            Some(issuer.token("https://issuer.example", -120)),
            invalid.clone(),
        ),
        (
            "demo.jwt",
            Some(Issuer::new("k1").token("https://issuer.example", 300)),
            invalid.clone(),
        ),
        (
            "demo.jwt",
            None,
            deny(UNAUTHENTICATED, 401, &[("www-authenticate", "Bearer")]),
        ),
        // No key set can be fetched: fail closed, as undecided (503).
        (
            "demo.jwt-down",
            Some(issuer.token("https://issuer.example", 300)),
            deny(PERMISSION_DENIED, 503, &[]),
        ),
    ];
    for (config_id, token, expected) in cases {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", a.as_str())).collect();
        assert_eq!(
            check(&mut client, request(config_id, "GET", "/", &headers)).await,
            expected,
            "{config_id} {authorization:?}"
        );
    }
}

#[tokio::test]
async fn opa_decides_by_method_and_path() {
    let address = start(vec![("demo.opa", json!({"configs": [opa_config("opa1")]}))]).await;
    let mut client = client(address).await;
    let cases = [
        ("GET", "/api/pets/1", allow(&[])),
        ("POST", "/api/pets/1", deny(PERMISSION_DENIED, 403, &[])),
        ("GET", "/admin", deny(PERMISSION_DENIED, 403, &[])),
    ];
    for (method, path, expected) in cases {
        assert_eq!(
            check(&mut client, request("demo.opa", method, path, &[])).await,
            expected,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn passthrough_returns_the_other_servers_answer_and_fails_closed_without_it() {
    let target = start(vec![("demo.pass", json!({"configs": [basic_config("basic1")]}))]).await;
    let pass = |address: SocketAddr| json!({"configs": [{"name": "pass1", "passThroughAuth": {"grpc": {"address": address.to_string(), "connectionTimeout": "1s"}}}]});
    let address = start(vec![
        ("demo.pass", pass(target)),
        ("demo.pass-down", pass(closed_port().await)),
    ])
    .await;
    let mut client = client(address).await;
    let good = basic("user:password");
    let bad = basic("user:wrong");
    let cases = [
        ("demo.pass", good.as_str(), allow(&[("x-user-id", "user")])),
        ("demo.pass", bad.as_str(), basic_challenge()),
        ("demo.pass-down", good.as_str(), deny(PERMISSION_DENIED, 503, &[])),
    ];
    for (config_id, authorization, expected) in cases {
        let got = check(
            &mut client,
            request(config_id, "GET", "/", &[("authorization", authorization)]),
        )
        .await;
        assert_eq!(got, expected, "{config_id} {authorization}");
    }
}

#[tokio::test]
async fn boolean_expressions_combine_configs() {
    let address = start(vec![
        (
            "demo.either",
            json!({"booleanExpr": "key1 || basic1", "configs": [basic_config("basic1"), key_config("key1")]}),
        ),
        (
            "demo.both",
            json!({"booleanExpr": "basic1 && opa1", "configs": [basic_config("basic1"), opa_config("opa1")]}),
        ),
        ("demo.all", json!({"configs": [key_config("key1"), opa_config("opa1")]})),
    ])
    .await;
    let mut client = client(address).await;
    let good = basic("user:password");
    let cases = [
        (
            "demo.either",
            "GET",
            vec![("api-key", "k-alice")],
            allow(&[("x-user-id", "alice")]),
        ),
        (
            "demo.either",
            "GET",
            vec![("authorization", good.as_str())],
            allow(&[("x-user-id", "user")]),
        ),
        // Neither: basic ran last, so its challenge reaches the browser.
        ("demo.either", "GET", vec![], basic_challenge()),
        (
            "demo.both",
            "GET",
            vec![("authorization", good.as_str())],
            allow(&[("x-user-id", "user")]),
        ),
        (
            "demo.both",
            "POST",
            vec![("authorization", good.as_str())],
            deny(PERMISSION_DENIED, 403, &[]),
        ),
        ("demo.both", "GET", vec![], basic_challenge()),
        (
            "demo.all",
            "GET",
            vec![("api-key", "k-alice")],
            allow(&[("x-user-id", "alice")]),
        ),
        (
            "demo.all",
            "POST",
            vec![("api-key", "k-alice")],
            deny(PERMISSION_DENIED, 403, &[]),
        ),
    ];
    for (config_id, method, headers, expected) in cases {
        let got = check(&mut client, request(config_id, method, "/api/pets", &headers)).await;
        assert_eq!(got, expected, "{config_id} {method} {headers:?}");
    }
}

#[tokio::test]
async fn unknown_or_missing_config_ids_are_denied() {
    let address = start(vec![("demo.basic", json!({"configs": [basic_config("basic1")]}))]).await;
    let mut client = client(address).await;
    for config_id in ["demo.other", ""] {
        let got = check(
            &mut client,
            request(config_id, "GET", "/", &[("authorization", &basic("user:password"))]),
        )
        .await;
        assert_eq!(got, deny(PERMISSION_DENIED, 403, &[]), "{config_id:?}");
    }
}

#[tokio::test]
async fn malformed_credentials_get_a_plain_401_and_the_service_keeps_answering() {
    let issuer = Issuer::new("k1");
    let jwks_url = issuer.serve().await;
    let address = start(vec![
        ("demo.basic", json!({"configs": [basic_config("basic1")]})),
        ("demo.jwt", json!({"configs": [jwt_config("jwt1", &jwks_url)]})),
    ])
    .await;
    let mut client = client(address).await;
    let huge = format!("Basic {}", "A".repeat(64 * 1024));
    let huge_bearer = format!("Bearer {}", "a.".repeat(32 * 1024));
    let invalid = deny(
        UNAUTHENTICATED,
        401,
        &[("www-authenticate", "Bearer error=\"invalid_token\"")],
    );
    let cases = [
        ("demo.basic", "Basic %%%not-base64%%%", basic_challenge()),
        ("demo.basic", "Basic dXNlcg==", basic_challenge()), // "user", no colon
        ("demo.basic", "Basic //79/w==", basic_challenge()), // not UTF-8
        ("demo.basic", huge.as_str(), basic_challenge()),
        ("demo.jwt", "Bearer abc.def", invalid.clone()),
        ("demo.jwt", "Bearer ....", invalid.clone()),
        ("demo.jwt", "Bearer eyJhbGciOiJub25lIn0.e30.", invalid.clone()),
        ("demo.jwt", huge_bearer.as_str(), invalid.clone()),
    ];
    for (config_id, authorization, expected) in cases {
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            check(
                &mut client,
                request(config_id, "GET", "/", &[("authorization", authorization)]),
            ),
        )
        .await
        .expect("answers promptly");
        assert_eq!(
            got,
            expected,
            "{config_id} {}",
            &authorization[..authorization.len().min(40)]
        );
    }
    let still = check(
        &mut client,
        request("demo.basic", "GET", "/", &[("authorization", &basic("user:password"))]),
    )
    .await;
    assert_eq!(still, allow(&[("x-user-id", "user")]));
}

#[tokio::test]
async fn metrics_count_checks_by_config_outcome_and_status() {
    let admin: SocketAddr = format!("127.0.0.1:{}", trellis_support::process::free_port())
        .parse()
        .unwrap();
    let address = start_with_admin(
        vec![("demo.basic", json!({"configs": [basic_config("basic1")]}))],
        Some(admin),
    )
    .await;
    let mut client = client(address).await;
    check(
        &mut client,
        request("demo.basic", "GET", "/", &[("authorization", &basic("user:wrong"))]),
    )
    .await;
    check(
        &mut client,
        request("demo.basic", "GET", "/", &[("authorization", &basic("user:wrong"))]),
    )
    .await;
    let metrics = trellis_support::httpc::get(&format!("http://{admin}/metrics"), std::time::Duration::from_secs(2))
        .await
        .unwrap()
        .body;
    assert!(
        metrics.contains("trellis_ext_auth_checks_total{config_id=\"demo.basic\",outcome=\"deny\",status=\"401\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trellis_ext_auth_check_duration_seconds_count"),
        "{metrics}"
    );
}

/// A client cannot pass its own `x-user-id` off as auth's: when OPA allows in `opa1 || basic1`,
/// the header basic auth would have set is removed from the request; when basic allows, it is
/// set (overwriting the client's).
#[tokio::test]
async fn identity_headers_auth_did_not_set_are_removed() {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let address = start(vec![(
        "demo.either",
        json!({"booleanExpr": "opa1 || basic1", "configs": [basic_config("basic1"), opa_config("opa1")]}),
    )])
    .await;
    let mut client = client(address).await;
    let ok = |response: CheckResponse| match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not allowed: {other:?}"),
    };
    let by_opa = client
        .check(request("demo.either", "GET", "/api/pets/1", &[("x-user-id", "admin")]))
        .await
        .unwrap()
        .into_inner();
    let by_opa = ok(by_opa);
    assert_eq!(by_opa.headers_to_remove, ["x-user-id"]);
    let by_basic = client
        .check(request(
            "demo.either",
            "GET",
            "/private",
            &[("x-user-id", "admin"), ("authorization", &basic("user:password"))],
        ))
        .await
        .unwrap()
        .into_inner();
    let by_basic = ok(by_basic);
    assert!(by_basic.headers_to_remove.is_empty(), "{by_basic:?}");
    let set: Vec<_> = by_basic
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(set, [("x-user-id", "user")]);
}
