//! The relay's TLS listener. Our own accept loop instead of tonic's so that every refused
//! handshake is logged with its reason and counted: the only trace of a break-in attempt that
//! never reaches a gRPC handler.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use super::metrics::MgmtMetrics;

/// What a relay handler knows about its peer.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The verified client certificate (DER), if the agent presented one.
    pub cert_der: Option<Vec<u8>>,
}

pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A short, bounded reason for a refused handshake (a metric label).
fn refusal_reason(error: &std::io::Error) -> (&'static str, String) {
    use rustls::{CertificateError, Error};
    let detail = error.to_string();
    let reason = match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            "expired_certificate"
        }
        // A certificate with our CA's names but another key fails on its signature: same story.
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
            "unknown_issuer"
        }
        Some(Error::InvalidCertificate(_)) => "invalid_certificate",
        Some(Error::AlertReceived(_)) => "server_not_trusted",
        _ => "handshake",
    };
    (reason, detail)
}

/// Accepts TCP connections, completes TLS handshakes off the accept loop, and yields the
/// connections that made it.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    metrics: MgmtMetrics,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Small relay messages must not wait for Nagle's algorithm (40 ms with delayed ACKs).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let cert_der = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.to_vec());
                        let _ = tx
                            .send(Ok(TlsConn {
                                stream,
                                info: PeerInfo {
                                    remote: Some(remote),
                                    cert_der,
                                },
                            }))
                            .await;
                    }
                    Ok(Err(error)) => {
                        let (reason, detail) = refusal_reason(&error);
                        metrics.refused(reason);
                        tracing::warn!(peer = %remote, reason, error = %detail, "relay refused a TLS handshake");
                    }
                    Err(_) => {
                        metrics.refused("handshake_timeout");
                        tracing::warn!(peer = %remote, "relay refused a TLS handshake: no handshake within 10s");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
