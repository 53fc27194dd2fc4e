//! A workload that shows what reached it: an in-test HTTP server answering every request with
//! its path, request headers and body as JSON, behind its own real sidecar (`trellis proxy`), so it is
//! a mesh service like the demo apps. End-to-end tests route to it to see the headers a proxy
//! filter added upstream (the demo app does not echo request headers).

use std::path::Path;

use axum::http::{HeaderMap, Uri};
use serde_json::{Map, Value, json};

/// The echo server and its sidecar; both stop when this is dropped.
pub struct EchoWorkload {
    pub app_port: u16,
    pub inbound_port: u16,
    pub admin_port: u16,
    sidecar: tokio::process::Child,
    server: tokio::task::JoinHandle<()>,
}

impl EchoWorkload {
    /// Starts the server and a sidecar registering `service` (namespace `namespace`, labels
    /// `app=<service>,version=v1`, port `http:80`) with the agent at `agent` (`host:port`).
    pub async fn start(bin: &Path, agent: &str, namespace: &str, service: &str, dir: &Path) -> EchoWorkload {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().fallback(echo);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let inbound_port = trellis_support::process::free_port();
        let admin_port = trellis_support::process::free_port();
        let outbound_port = trellis_support::process::free_port();
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join(format!("sidecar-{service}.log"))).unwrap();
        let sidecar = tokio::process::Command::new(bin)
            .args([
                "proxy",
                "--agent",
                agent,
                "--name",
                service,
                "--namespace",
                namespace,
                "--service",
                service,
                "--labels",
                &format!("app={service},version=v1"),
                "--service-account",
                service,
                "--port",
                &format!("http:80:{app_port}:{inbound_port}"),
                "--outbound-port",
                &outbound_port.to_string(),
                "--admin-port",
                &admin_port.to_string(),
                "--data-dir",
                &dir.join(format!("sidecar-{service}")).display().to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        EchoWorkload {
            app_port,
            inbound_port,
            admin_port,
            sidecar,
            server,
        }
    }

    pub fn sidecar_running(&mut self) -> bool {
        matches!(self.sidecar.try_wait(), Ok(None))
    }
}

impl Drop for EchoWorkload {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `{"echo": true, "path": "/p?q", "headers": {"name": "value", ...}, "body": "..."}`; repeated
/// headers are joined with `, `; the body is read as UTF-8 (lossy).
async fn echo(uri: Uri, headers: HeaderMap, body: axum::body::Bytes) -> axum::Json<Value> {
    let mut seen = Map::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match seen.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                seen.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let body = String::from_utf8_lossy(&body).into_owned();
    axum::Json(json!({"echo": true, "path": path, "headers": seen, "body": body}))
}
