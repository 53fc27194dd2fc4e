//! The registration API over TLS (`--registry-tls-addr`), for proxies that reach their agent
//! across a network (a pod's sidecar and the agent's pod in Kubernetes), and the rule that keeps
//! credentials off the plain port unless they come from this host.
//!
//! The certificate is issued by the agent's xDS CA for [`REGISTRY_SERVER_NAME`]; clients check
//! it against that CA (`--agent-ca`, in Kubernetes the `trellis-agent-ca` ConfigMap the agent
//! publishes in every namespace), so registration tokens, role secrets and service-account
//! tokens are never readable on the wire, and a proxy learns its xDS trust anchor from a server
//! it has authenticated.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;

pub use crate::xds_tls::REGISTRY_SERVER_NAME;

/// The registration port's TLS connections, for `axum::serve`: handshakes run off the accept
/// loop, bounded in number and time, as on the xDS port.
pub struct TlsListener {
    connections: tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            connections: crate::xds_tls::incoming(listener, config, crate::xds_tls::TlsPort::Registration),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.next().await {
                Some(Ok(stream)) => match stream.get_ref().0.peer_addr() {
                    Ok(peer) => return (stream, peer),
                    Err(_) => continue,
                },
                Some(Err(_)) => continue,
                // The accept loop never ends while the listener lives.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// What the plain port answers to another host: the read endpoints (metrics, status, the
/// workload list) and nothing that carries or returns a credential. A remote registration over
/// plain HTTP has already shown its credential to the network; refusing it makes the
/// misconfiguration fail loudly instead of working insecurely.
pub async fn plain_port_guard(ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request, next: Next) -> Response {
    if peer.ip().is_loopback() || is_public_read(&request) {
        return next.run(request).await;
    }
    tracing::warn!(%peer, path = %request.uri().path(), "plain registration port: refused a call from another host");
    (
        axum::http::StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "code": "tls-required",
            "error": "calls from another host that carry credentials go to the agent's TLS registration port (--registry-tls-addr, checked with --agent-ca), never over plain HTTP",
        })),
    )
        .into_response()
}

fn is_public_read(request: &Request) -> bool {
    request.method() == axum::http::Method::GET
        && matches!(
            request.uri().path(),
            "/metrics" | "/metrics/proxies" | "/v1/status" | "/v1/proxies"
        )
        && !request.headers().contains_key(axum::http::header::AUTHORIZATION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, put};
    use tower::ServiceExt;

    fn app() -> axum::Router {
        axum::Router::new()
            .route("/metrics", get(|| async { "ok" }))
            .route("/v1/proxies/{id}", put(|| async { "registered" }))
            .route("/v1/addons/{kind}", get(|| async { "config" }))
            .layer(axum::middleware::from_fn(plain_port_guard))
    }

    async fn status(method: &str, path: &str, peer: &str, authorization: bool) -> u16 {
        let mut request = Request::builder().method(method).uri(path);
        if authorization {
            request = request.header("authorization", "Bearer t");
        }
        let mut request = request.body(axum::body::Body::empty()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        app().oneshot(request).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn another_host_gets_the_read_endpoints_and_nothing_with_a_credential() {
        assert_eq!(status("GET", "/metrics", "10.0.0.7:4000", false).await, 200);
        assert_eq!(
            status("PUT", "/v1/proxies/sidecar~a.demo", "10.0.0.7:4000", false).await,
            403
        );
        assert_eq!(status("GET", "/v1/addons/ext-auth", "10.0.0.7:4000", true).await, 403);
        assert_eq!(status("GET", "/metrics", "10.0.0.7:4000", true).await, 403);
    }

    #[tokio::test]
    async fn this_host_registers_on_the_plain_port_as_before() {
        assert_eq!(
            status("PUT", "/v1/proxies/sidecar~a.demo", "127.0.0.1:4000", false).await,
            200
        );
        assert_eq!(status("GET", "/v1/addons/ext-auth", "[::1]:4000", true).await, 200);
    }
}
