//! The relay's TLS listener. Our own accept loop instead of tonic's so that every refused
//! handshake is logged with its reason and counted: the only trace of a break-in attempt that
//! never reaches a gRPC handler.
//!
//! It also bounds what anyone who can open TCP connections can make the server hold
//! ([`RelayLimits`]): handshakes in progress (each with a deadline, so half-open ones are closed),
//! connections without a client certificate (registration: one request, then closed), and all
//! connections. Over a limit, a new connection is closed at once and counted
//! (`trellis_mgmt_relay_refused_total{reason="handshake_limit"|"registration_limit"|"connection_limit"}`):
//! a flood costs the attacker a socket per attempt and the server nothing that lasts.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// Bounds on the relay's connections.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// TLS handshakes in progress at once from one IP address, so that one host cannot take every
    /// handshake slot and lock the other agents out.
    pub max_handshakes_per_ip: usize,
    /// A handshake not finished by then is closed (a half-open connection holds a slot no longer).
    pub handshake_timeout: Duration,
    /// Open connections that presented no client certificate: agents registering with a token.
    pub max_unauthenticated: usize,
    /// The same from one IP address, so that one host cannot hold every registration slot.
    pub max_unauthenticated_per_ip: usize,
    /// How long a connection without a client certificate may stay open: registering is one
    /// unary call, so anything longer is someone holding the connection.
    pub unauthenticated_lifetime: Duration,
    /// Open connections of any kind (one per agent in normal operation).
    pub max_connections: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_handshakes: 64,
            max_handshakes_per_ip: 8,
            handshake_timeout: Duration::from_secs(10),
            max_unauthenticated: 32,
            max_unauthenticated_per_ip: 4,
            unauthenticated_lifetime: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// Where the listener counts the connections it refuses, by a short reason such as
/// `connection_limit` (the management server's `trellis_mgmt_relay_refused_total`).
pub trait Refusals: Clone + Send + Sync + 'static {
    fn refused(&self, reason: &str);
}

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
    /// For a connection without a client certificate: when it is closed.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Slots in the connection limits, released when the connection is dropped.
    _permits: (OwnedSemaphorePermit, Option<(OwnedSemaphorePermit, IpSlot)>),
}

impl TlsConn {
    /// An error once the deadline has passed; registers the waker so an idle connection is closed on time.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if let Some(deadline) = &mut self.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "a relay connection without a client certificate outlived its limit",
            ));
        }
        Ok(())
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.check_deadline(cx)?;
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

/// Logs at most one line per interval for a kind of refusal that a flood repeats; the metric
/// counts every one.
struct Throttle {
    last: AtomicU64,
}

impl Throttle {
    const INTERVAL_SECS: u64 = 10;

    fn new() -> Self {
        Throttle {
            last: AtomicU64::new(0),
        }
    }

    fn should_log(&self) -> bool {
        let now = trellis_support::unix_now();
        let last = self.last.load(Ordering::Relaxed);
        now >= last + Self::INTERVAL_SECS
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Slots in use per source (handshakes in progress, or connections without a client certificate).
/// An IPv6 source counts by its /64: one host usually holds a whole /64.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One handshake slot of an address, given back on drop.
struct IpSlot {
    counts: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn try_acquire(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<IpSlot> {
        let ip = source_key(ip);
        let mut counts = self.0.lock().expect("per-IP handshake counts");
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// The address a per-source limit counts: IPv4 as is (also when IPv4-mapped), IPv6 by its /64.
fn source_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)).into(),
        },
        v4 => v4,
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().expect("per-IP handshake counts");
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Refuses a connection over a limit: counted always, logged at most every 10 s.
fn over_limit(metrics: &impl Refusals, throttle: &Throttle, reason: &'static str, remote: SocketAddr, limit: usize) {
    metrics.refused(reason);
    if throttle.should_log() {
        tracing::warn!(
            peer = %remote,
            reason,
            limit,
            "relay closed a connection over its limit (further ones are counted in trellis_mgmt_relay_refused_total, logged every 10s)"
        );
    }
}

/// Accepts TCP connections, completes TLS handshakes off the accept loop within `limits`, and
/// yields the connections that made it.
pub fn incoming<M: Refusals>(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    metrics: M,
    limits: RelayLimits,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let unauthenticated = Arc::new(Semaphore::new(limits.max_unauthenticated));
    let per_ip = Arc::new(PerIp::default());
    let unauthenticated_per_ip = Arc::new(PerIp::default());
    let throttle = Arc::new(Throttle::new());
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
            // Over a limit the socket is dropped here, before any TLS work.
            let Ok(connection) = connections.clone().try_acquire_owned() else {
                over_limit(&metrics, &throttle, "connection_limit", remote, limits.max_connections);
                continue;
            };
            let Some(ip_slot) = per_ip.try_acquire(remote.ip(), limits.max_handshakes_per_ip) else {
                over_limit(
                    &metrics,
                    &throttle,
                    "handshake_limit",
                    remote,
                    limits.max_handshakes_per_ip,
                );
                continue;
            };
            let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                over_limit(&metrics, &throttle, "handshake_limit", remote, limits.max_handshakes);
                continue;
            };
            // Small relay messages must not wait for Nagle's algorithm (40 ms with delayed ACKs).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let metrics = metrics.clone();
            let unauthenticated = unauthenticated.clone();
            let unauthenticated_per_ip = unauthenticated_per_ip.clone();
            let throttle = throttle.clone();
            tokio::spawn(async move {
                let accepted = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await;
                drop((handshake, ip_slot));
                match accepted {
                    Ok(Ok(stream)) => {
                        let cert_der = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.to_vec());
                        let (registration, deadline) = if cert_der.is_some() {
                            (None, None)
                        } else {
                            let slots = unauthenticated_per_ip
                                .try_acquire(remote.ip(), limits.max_unauthenticated_per_ip)
                                .and_then(|ip_slot| Some((unauthenticated.try_acquire_owned().ok()?, ip_slot)));
                            let Some(permit) = slots else {
                                over_limit(
                                    &metrics,
                                    &throttle,
                                    "registration_limit",
                                    remote,
                                    limits.max_unauthenticated,
                                );
                                return;
                            };
                            (
                                Some(permit),
                                Some(Box::pin(tokio::time::sleep(limits.unauthenticated_lifetime))),
                            )
                        };
                        let _ = tx
                            .send(Ok(TlsConn {
                                stream,
                                info: PeerInfo {
                                    remote: Some(remote),
                                    cert_der,
                                },
                                deadline,
                                _permits: (connection, registration),
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
                        if throttle.should_log() {
                            tracing::warn!(
                                peer = %remote,
                                timeout = ?limits.handshake_timeout,
                                "relay closed a connection that did not finish its TLS handshake in time"
                            );
                        }
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_slots_are_bounded_and_given_back() {
        let slots = Arc::new(PerIp::default());
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<IpSlot> = (0..3).map(|_| slots.try_acquire(a, 3).unwrap()).collect();
        assert!(slots.try_acquire(a, 3).is_none());
        assert!(slots.try_acquire("192.0.2.2".parse().unwrap(), 3).is_some());
        drop(held);
        assert!(slots.try_acquire(a, 3).is_some());
        assert!(
            slots.0.lock().unwrap().is_empty(),
            "released slots leave no entry behind"
        );
    }

    #[test]
    fn ipv6_sources_count_by_their_slash_64() {
        let key = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    }
}
