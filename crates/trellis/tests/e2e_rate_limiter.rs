//! The rate limiter through real Envoy and real Redis: the 21st request of a 20-per-minute budget
//! is refused with 429 and the x-ratelimit headers, separate keys have separate budgets, and with
//! Redis gone the filter fails open or closed as configured.

use trellis_testkit as common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use trellis_support::process::free_port;

/// The envoyproxy/ratelimit file both tests load: 20 a minute per API key.
const LIMITS: &str =
    "domain: mesh\ndescriptors:\n  - key: api_key\n    rate_limit: {unit: minute, requests_per_unit: 20}\n";

/// A listener in front of the app whose route asks the rate limiter per `x-api-key`.
fn listener(name: &str, port: u16, fail_closed: bool) -> serde_json::Value {
    let filter = serde_json::json!({"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "mesh",
        "failure_mode_deny": fail_closed,
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        "timeout": "1s",
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "rls"}}, "transport_api_version": "V3"}
    }});
    let route = serde_json::json!({"route": {"cluster": "app", "rate_limits": [{"actions": [{"request_headers": {"header_name": "x-api-key", "descriptor_key": "api_key"}}]}]}});
    envoy_static_listener(name, port, Some(filter), route)
}

async fn get(port: u16, key: &str) -> trellis_support::httpc::Response {
    trellis_support::httpc::request(
        "GET",
        &format!("http://127.0.0.1:{port}/"),
        None,
        &[("x-api-key", key)],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_21st_request_of_20_per_minute_is_refused_and_redis_failure_follows_the_filter() {
    let dir = test_dir("rate-limiter");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (rls_port, app_port, open_port, closed_port, admin) =
        (free_port(), free_port(), free_port(), free_port(), free_port());
    // Redis first: the rate limiter connects at start.
    let (mut redis, redis_port) = start_redis(&dir, &[], None).await;
    let _app = spawn_logged(
        &[
            "demo-app",
            "--name",
            "api",
            "--listen",
            &format!("127.0.0.1:{app_port}"),
        ]
        .map(String::from),
        &dir.join("app.log"),
        &[],
    );
    std::fs::write(dir.join("limits.yaml"), LIMITS).unwrap();
    let _limiter = spawn_logged(
        &[
            "rate-limiter".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{rls_port}"),
            "--redis".into(),
            format!("redis://127.0.0.1:{redis_port}"),
            "--config".into(),
            dir.join("limits.yaml").display().to_string(),
        ],
        &dir.join("rate-limiter.log"),
        &[],
    );
    let bootstrap = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [listener("open", open_port, false), listener("closed", closed_port, true)],
            "clusters": [envoy_static_cluster("rls", rls_port, true), envoy_static_cluster("app", app_port, false)]
        }
    });
    std::fs::write(dir.join("envoy.json"), bootstrap.to_string()).unwrap();
    let envoy = trellis_support::envoy_bin::find().unwrap();
    let _envoy = spawn_program(
        envoy.to_str().unwrap(),
        &[
            "-c",
            &dir.join("envoy.json").display().to_string(),
            "--disable-hot-restart",
            "--concurrency",
            "1",
        ]
        .map(String::from),
        &dir.join("envoy.log"),
    );
    eventually("Envoy serving through the rate limiter", || async {
        trellis_support::httpc::request(
            "GET",
            &format!("http://127.0.0.1:{open_port}/"),
            None,
            &[("x-api-key", "warmup")],
            None,
            Duration::from_secs(2),
        )
        .await
        .is_ok_and(|r| r.status == 200)
    })
    .await;

    // A minute window must not roll over in the middle of the count.
    with_minute_left(10).await;
    for i in 1..=20 {
        let response = get(open_port, "alice").await;
        assert_eq!(response.status, 200, "request {i} of 20: {}", response.body);
    }
    let refused = get(open_port, "alice").await;
    assert_eq!(refused.status, 429, "the 21st request: {}", refused.body);
    assert!(
        refused.header("x-ratelimit-limit").is_some_and(|v| v.starts_with("20")),
        "{:?}",
        refused.headers
    );
    assert_eq!(
        refused.header("x-ratelimit-remaining"),
        Some("0"),
        "{:?}",
        refused.headers
    );
    assert!(refused.header("x-ratelimit-reset").is_some(), "{:?}", refused.headers);
    // Another key, another budget.
    assert_eq!(get(open_port, "bob").await.status, 200);

    // Redis goes away: the open listener lets requests through, the closed one refuses them.
    redis.kill().await.unwrap();
    assert_eq!(get(open_port, "carol").await.status, 200, "fail open");
    assert_ne!(get(closed_port, "carol").await.status, 200, "fail closed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counters in a TLS Redis (`rediss://`, the server's certificate checked against `--redis-ca`):
/// 20 decisions OK, the 21st OVER_LIMIT, straight over the rate limiter's gRPC API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_in_a_tls_redis() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
        RateLimitDescriptor, rate_limit_descriptor::Entry,
    };
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;

    let dir = test_dir("rate-limiter-tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now();
    let ca = trellis_pki::Authority::generate_root("redis test CA", Duration::from_secs(3600), now).unwrap();
    let server = ca
        .issue_server_cert(&["127.0.0.1".to_string()], Duration::from_secs(3600), now)
        .unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca_file = write("ca.pem", &ca.root_pem());
    let cert_file = write("redis.pem", &server.cert_pem);
    let key_file = write("redis-key.pem", &server.key.0);
    let (redis_port, rls_port) = (free_port(), free_port());
    let tls = [
        "--port",
        "0",
        "--tls-port",
        &redis_port.to_string(),
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ]
    .map(String::from);
    let (_redis, _) = start_redis(&dir, &tls, Some(redis_port)).await;
    std::fs::write(dir.join("limits.yaml"), LIMITS).unwrap();
    let _limiter = spawn_logged(
        &[
            "rate-limiter".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{rls_port}"),
            "--redis".into(),
            format!("rediss://127.0.0.1:{redis_port}"),
            "--redis-ca".into(),
            ca_file.clone(),
            "--config".into(),
            dir.join("limits.yaml").display().to_string(),
        ],
        &dir.join("rate-limiter.log"),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        if let Ok(client) = RateLimitServiceClient::connect(format!("http://127.0.0.1:{rls_port}")).await {
            break client;
        }
        assert!(
            Instant::now() < deadline,
            "the rate limiter did not start: see {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A minute window must not roll over in the middle of the count.
    with_minute_left(5).await;
    let request = RateLimitRequest {
        domain: "mesh".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "api_key".into(),
                value: "tls-user".into(),
            }],
            ..Default::default()
        }],
        hits_addend: 1,
    };
    let mut codes = Vec::new();
    for _ in 0..21 {
        let response = client
            .should_rate_limit(request.clone())
            .await
            .expect("decision over TLS Redis");
        codes.push(response.into_inner().overall_code);
    }
    assert!(codes[..20].iter().all(|c| *c == Code::Ok as i32), "{codes:?}");
    assert_eq!(codes[20], Code::OverLimit as i32);
    println!("TLS Redis: 20 OK then OVER_LIMIT");
    let _ = std::fs::remove_dir_all(&dir);
}
