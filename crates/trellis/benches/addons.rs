//! Add-on overhead through real Envoy: requests per second and p50/p99 latency at fixed offered
//! rates (1k, 2k, 4k rps) for Envoy alone (baseline), Envoy + `trellis ext-auth` checking an API
//! key, a JWT (ES256, local JWKS) and an OPA (Rego) policy, and Envoy + `trellis rate-limiter`
//! (one Redis-backed decision per request, under a limit never reached).
//!
//! One Envoy (`--concurrency 1`, as our sidecars run) with one listener per scenario in front of
//! the demo app; the add-ons and Redis run beside it on loopback. The load is open loop: request
//! `i` is due at `start + i / rate` whatever happened before; a request sent late because the
//! connections were all busy counts its latency from when it was due, so a stall shows up in the
//! percentiles instead of silently lowering the rate (coordinated omission). Everything shares
//! this machine's two cores with the load generator.
//!
//! Run: `scripts/bench-addons` (or `cargo bench -p trellis --bench addons`). Optional env:
//! `BENCH_SECONDS` (per run, default 10), `BENCH_RATES` (default `1000,2000,4000`).

use trellis_testkit as common;
use trellis_testkit::jwt_issuer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use trellis_support::process::free_port;

/// Connections the load generator keeps open; enough that 4k rps at a few ms never waits on one.
const CONNECTIONS: usize = 64;
const API_KEY: &str = "bench-api-key-0123456789";

struct Scenario {
    name: &'static str,
    port: u16,
    headers: Vec<(String, String)>,
}

/// An ES256 key set and a token valid for an hour.
fn jwt_fixture() -> (String, String) {
    let issuer = jwt_issuer::Issuer::new("bench");
    let now = jwt_issuer::unix_now();
    let claims =
        json!({"iss": "https://issuer.bench", "aud": "api", "sub": "bench-user", "iat": now, "exp": now + 3600});
    (issuer.jwks().to_string(), issuer.sign(&claims))
}

fn auth_configs(jwks: &str) -> serde_json::Value {
    let digest = ring::digest::digest(&ring::digest::SHA256, API_KEY.as_bytes());
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    json!({"configs": [
        {"id": "bench.apikey", "spec": {"configs": [{"name": "key", "apiKeyAuth": {
            "headerName": "api-key", "keys": [{"sha256": sha256, "secret": "bench/key", "metadata": {"user-id": "bench"}}],
            "headersFromMetadataEntry": {"x-user-id": {"name": "user-id"}}}}]}},
        {"id": "bench.jwt", "spec": {"configs": [{"name": "jwt", "oauth2": {"accessTokenValidation": {"jwt": {
            "localJwks": {"inlineString": jwks}, "issuer": "https://issuer.bench", "audiences": ["api"]},
            "claimsToHeaders": [{"claim": "sub", "header": "x-user"}]}}}]}},
        {"id": "bench.opa", "spec": {"configs": [{"name": "opa", "opaAuth": {
            "query": "data.bench.allow == true",
            "regoModules": {"bench/policy/policy.rego": "package bench\n\ndefault allow := false\n\nallow if {\n  input.attributes.request.http.method == \"GET\"\n  startswith(input.attributes.request.http.path, \"/\")\n}\n"}}}]}}
    ]})
}

fn ext_authz_filter() -> serde_json::Value {
    json!({"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "grpc_service": {"envoy_grpc": {"cluster_name": "ext_auth", "authority": "ext-auth"}, "timeout": "1s"},
        "transport_api_version": "V3"
    }})
}

fn config_id(id: &str) -> serde_json::Value {
    json!({"typed_per_filter_config": {"envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "check_settings": {"context_extensions": {"config_id": id}}
    }}})
}

struct RunResult {
    offered: u64,
    achieved: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Offers `rate` requests per second for `seconds` over [`CONNECTIONS`] keep-alive connections.
async fn run(port: u16, headers: &[(String, String)], rate: u64, seconds: u64) -> RunResult {
    let total = rate * seconds;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (next, errors, headers) = (next.clone(), errors.clone(), headers.to_vec());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sender = connect(port).await;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let due = start + Duration::from_nanos(index * 1_000_000_000 / rate);
                // Ahead of schedule: wait, and count from the actual send (the timer's 1 ms
                // granularity is the generator's, not Envoy's). Behind schedule: count from when
                // the request was due, so queueing behind slow answers is measured.
                let counted_from = if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                let mut request = hyper::Request::get("/").header("host", "bench");
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                let ok = match sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        status == 200
                    }
                    Err(_) => {
                        sender = connect(port).await;
                        false
                    }
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(counted_from.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    RunResult {
        offered: rate,
        achieved: latencies.len() as f64 / elapsed,
        p50_ms: percentile(0.50).as_secs_f64() * 1000.0,
        p99_ms: percentile(0.99).as_secs_f64() * 1000.0,
        errors: errors.load(Ordering::Relaxed),
    }
}

async fn connect(port: u16) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("envoy listens");
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and runs benches too; only `cargo bench` (which passes
        // `--bench`) should spend minutes on figures.
        println!("benchmark skipped: run it with `cargo bench`");
        return;
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "1000,2000,4000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let dir = common::test_dir("bench-addons");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = common::bin().display().to_string();
    let port = |_| free_port();
    let (app, rls, ext_auth, admin) = (port(0), port(1), port(2), port(3));
    let (jwks, token) = jwt_fixture();
    std::fs::write(dir.join("auth.json"), auth_configs(&jwks).to_string()).unwrap();
    std::fs::write(
        dir.join("limits.yaml"),
        "domain: bench\ndescriptors:\n  - key: generic_key\n    value: all\n    rate_limit: {unit: second, requests_per_unit: 1000000}\n",
    )
    .unwrap();
    let s = |text: &str| text.to_string();
    let _app = common::spawn_program(
        &bin,
        &[
            s("demo-app"),
            s("--name"),
            s("bench"),
            s("--listen"),
            format!("127.0.0.1:{app}"),
        ],
        &dir.join("app.log"),
    );
    let (_redis, redis_port) = common::start_redis(&dir, &[], None).await;
    let _limiter = common::spawn_program(
        &bin,
        &[
            s("rate-limiter"),
            s("--listen"),
            format!("127.0.0.1:{rls}"),
            s("--redis"),
            format!("redis://127.0.0.1:{redis_port}"),
            s("--config"),
            dir.join("limits.yaml").display().to_string(),
        ],
        &dir.join("rate-limiter.log"),
    );
    let _ext_auth = common::spawn_program(
        &bin,
        &[
            s("ext-auth"),
            s("--listen"),
            format!("127.0.0.1:{ext_auth}"),
            s("--config"),
            dir.join("auth.json").display().to_string(),
        ],
        &dir.join("ext-auth.log"),
    );
    let scenarios = vec![
        Scenario {
            name: "baseline (Envoy only)",
            port: free_port(),
            headers: vec![],
        },
        Scenario {
            name: "ext-auth: API key",
            port: free_port(),
            headers: vec![(s("api-key"), s(API_KEY))],
        },
        Scenario {
            name: "ext-auth: JWT (ES256)",
            port: free_port(),
            headers: vec![(s("authorization"), format!("Bearer {token}"))],
        },
        Scenario {
            name: "ext-auth: OPA (Rego)",
            port: free_port(),
            headers: vec![],
        },
        Scenario {
            name: "rate limiter (Redis)",
            port: free_port(),
            headers: vec![],
        },
    ];
    let ratelimit_filter = json!({"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "bench", "timeout": "1s", "failure_mode_deny": true,
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "rls", "authority": "rate-limiter"}}, "transport_api_version": "V3"}
    }});
    let listeners = vec![
        common::envoy_static_listener("baseline", scenarios[0].port, None, json!({})),
        common::envoy_static_listener(
            "apikey",
            scenarios[1].port,
            Some(ext_authz_filter()),
            config_id("bench.apikey"),
        ),
        common::envoy_static_listener(
            "jwt",
            scenarios[2].port,
            Some(ext_authz_filter()),
            config_id("bench.jwt"),
        ),
        common::envoy_static_listener(
            "opa",
            scenarios[3].port,
            Some(ext_authz_filter()),
            config_id("bench.opa"),
        ),
        common::envoy_static_listener(
            "ratelimit",
            scenarios[4].port,
            Some(ratelimit_filter),
            json!({"route": {"cluster": "app", "rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "all"}}]}]}}),
        ),
    ];
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [common::envoy_static_cluster("app", app, false), common::envoy_static_cluster("ext_auth", ext_auth, true), common::envoy_static_cluster("rls", rls, true)]
        }
    });
    std::fs::write(dir.join("envoy.json"), bootstrap.to_string()).unwrap();
    let envoy = trellis_support::envoy_bin::find().unwrap();
    let _envoy = common::spawn_program(
        envoy.to_str().unwrap(),
        &[
            s("-c"),
            dir.join("envoy.json").display().to_string(),
            s("--disable-hot-restart"),
            s("--concurrency"),
            s("1"),
        ],
        &dir.join("envoy.log"),
    );
    // Every scenario must answer 200 before it is measured: a misconfigured one would be fast.
    for scenario in &scenarios {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let headers: Vec<(&str, &str)> = scenario.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let url = format!("http://127.0.0.1:{}/", scenario.port);
            match trellis_support::httpc::request("GET", &url, None, &headers, None, Duration::from_secs(2)).await {
                Ok(response) if response.status == 200 => break,
                other => assert!(
                    Instant::now() < deadline,
                    "{} never answered 200 (last: {:?}); logs in {}",
                    scenario.name,
                    other.map(|r| r.status),
                    dir.display()
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Without the key, the API-key route refuses: proof that the check runs.
    let refused = trellis_support::httpc::get(
        &format!("http://127.0.0.1:{}/", scenarios[1].port),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(
        refused.status, 401,
        "the API-key scenario must refuse a request without a key"
    );

    println!("{seconds} s per run, {CONNECTIONS} connections, open loop; Envoy --concurrency 1\n");
    println!("| scenario | offered rps | achieved rps | p50 ms | p99 ms | non-200 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for scenario in &scenarios {
        for &rate in &rates {
            // A short warm-up at the same rate, not counted.
            let _ = run(scenario.port, &scenario.headers, rate, 1).await;
            let result = run(scenario.port, &scenario.headers, rate, seconds).await;
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} |",
                scenario.name, result.offered, result.achieved, result.p50_ms, result.p99_ms, result.errors
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
