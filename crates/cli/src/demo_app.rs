//! `trellis demo-app`: a tiny HTTP service for the demo and the tests. It answers with who it
//! is and who called it (the SPIFFE identity its sidecar verified); with `--call` it first calls
//! an upstream through its sidecar and includes that answer (a frontend).
//!
//! Chaos for resilience tests, set at run time on the app's own port (not through the mesh):
//! `PUT /__demo/fail-every/N` answers 503 to every Nth request from then on (0 turns it off);
//! `PUT /__demo/delay-ms/N` answers every request N milliseconds late (0 turns it off).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::json;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoAppArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "v1")]
    pub version: String,
    #[arg(long, default_value = "")]
    pub cluster: String,
    #[arg(long)]
    pub listen: SocketAddr,
    /// Upstream URL to call for every request, e.g. `http://backend.mesh.internal/`.
    #[arg(long)]
    pub call: Option<String>,
    /// The sidecar's outbound proxy for `--call`, e.g. `127.0.0.1:15001`.
    #[arg(long)]
    pub via: Option<String>,
}

pub async fn run(args: DemoAppArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(name = %args.name, version = %args.version, listen = %args.listen, "demo app started");
    let chaos = Arc::new(Chaos::default());
    let control = chaos.clone();
    let delay_control = chaos.clone();
    let app = Router::new()
        .route(
            "/__demo/fail-every/{n}",
            axum::routing::put(move |axum::extract::Path(n): axum::extract::Path<u64>| async move {
                control.fail_every.store(n, Ordering::Relaxed);
                control.requests.store(0, Ordering::Relaxed);
                format!("failing every {n}th request\n")
            }),
        )
        .route(
            "/__demo/delay-ms/{n}",
            axum::routing::put(move |axum::extract::Path(n): axum::extract::Path<u64>| async move {
                delay_control.delay_ms.store(n, Ordering::Relaxed);
                format!("answering {n} ms late\n")
            }),
        )
        .fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            answer(args.clone(), chaos.clone(), method, uri, headers)
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(trellis_support::process::shutdown_signal())
        .await?;
    Ok(())
}

#[derive(Default)]
struct Chaos {
    fail_every: AtomicU64,
    requests: AtomicU64,
    delay_ms: AtomicU64,
}

async fn answer(
    args: DemoAppArgs,
    chaos: Arc<Chaos>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let delay = chaos.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let every = chaos.fail_every.load(Ordering::Relaxed);
    let count = chaos.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if every > 0 && count.is_multiple_of(every) {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{} {}: injected failure\n", args.name, args.version),
        )
            .into_response();
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = json!({
        "service": args.name,
        "version": args.version,
        "cluster": args.cluster,
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "host": header("host"),
        // The caller's SPIFFE identity, as the sidecar verified it (mTLS): `...;URI=spiffe://...`.
        "clientIdentity": header("x-forwarded-client-cert").and_then(|xfcc| client_uri(&xfcc)),
        // Every request header as it arrived (policies add, remove and rewrite them on the way).
        "headers": request_headers(&headers),
    });
    if let Some(call) = &args.call {
        match trellis_support::httpc::request("GET", call, args.via.as_deref(), &[], None, Duration::from_secs(5)).await
        {
            Ok(response) => {
                body["upstreamStatus"] = json!(response.status);
                body["upstream"] = serde_json::from_str(&response.body).unwrap_or(json!(response.body));
            }
            Err(error) => {
                body["upstreamError"] = json!(error.to_string());
                return (axum::http::StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
            }
        }
    }
    axum::Json(body).into_response()
}

/// The request's headers by lower-case name; a repeated header's values joined with `, `.
fn request_headers(headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            Some(serde_json::Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_string(), json!(value));
            }
        }
    }
    map
}

/// The `URI=` element of an `x-forwarded-client-cert` header.
fn client_uri(xfcc: &str) -> Option<String> {
    xfcc.split([';', ','])
        .find_map(|part| part.trim().strip_prefix("URI="))
        .map(|uri| uri.trim_matches('"').to_string())
}
