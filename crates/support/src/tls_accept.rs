//! Accepting mutual TLS on a raw listener (the agent's xDS port, the add-ons' gRPC port) so that
//! a local loop of connections can neither stall the accept loop nor fill the log: each
//! handshake runs on a task of its own, within a timeout, and refusals are logged at most once
//! every 10 s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Completes the TLS handshake of `tcp` within `timeout` on a task of its own, holding `permit`
/// until it ends (the caller bounds handshakes in progress with it); sends the connection to
/// `tx`, or gives `refused` the reason there is none.
pub fn spawn_handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
    permit: OwnedSemaphorePermit,
    tx: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
    refused: impl FnOnce(&str) + Send + 'static,
) {
    tokio::spawn(async move {
        let accepted = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
        drop(permit);
        match accepted {
            Ok(Ok(stream)) => {
                let _ = tx.send(Ok(stream)).await;
            }
            Ok(Err(error)) => refused(&error.to_string()),
            Err(_) => refused("TLS handshake timed out"),
        }
    });
}

/// Whether a refusal may be logged now: true at most once every 10 s per `last_logged` (the
/// second it last was), so a local loop of connections cannot fill the log.
pub fn refusal_log_due(last_logged: &AtomicU64) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = last_logged.load(Ordering::Relaxed);
    now >= last + 10
        && last_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
