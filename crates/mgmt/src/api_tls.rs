//! The API's HTTPS listener: its certificate (the operator's files, or issued at start by the
//! management server's own API CA under `--data-dir/pki`), optional client certificates, and a
//! bounded accept loop (handshakes time out; connections are capped) serving the axum router.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use trellis_pki::{Authority, CertifiedKey, KeyPem};

use super::config::MgmtConfig;
use super::pki::{PkiDir, read};

const YEAR: Duration = Duration::from_secs(365 * 86400);
/// A TLS handshake that takes longer is a stalled or hostile client.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open API connections at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
/// Open API connections from one address (IPv6: one /64): one host cannot take every slot.
const MAX_CONNECTIONS_PER_SOURCE: usize = 64;

/// Connections open per source, released when a connection ends.
#[derive(Default, Clone)]
struct PerSource(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

struct SourceSlot(PerSource, std::net::IpAddr);

impl PerSource {
    fn source(addr: &SocketAddr) -> std::net::IpAddr {
        match addr.ip() {
            std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                std::net::IpAddr::V6(octets.into())
            }
            std::net::IpAddr::V6(v6) => std::net::IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
            ip => ip,
        }
    }

    fn take(&self, addr: &SocketAddr) -> Option<SourceSlot> {
        let source = Self::source(addr);
        let mut open = self.0.lock().expect("per-source lock");
        let count = open.entry(source).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(SourceSlot(self.clone(), source))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().expect("per-source lock");
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// What the API serves over TLS, and the CA clients trust for it.
pub struct ApiTls {
    pub server: CertifiedKey,
    /// Verifies client certificates, when the operator gave `--api-client-ca`.
    pub client_ca_pem: Option<String>,
}

/// The names the generated server certificate carries: loopback, `localhost`, the listen
/// address when it is a specific one, and `--api-server-name`s.
fn server_names(config: &MgmtConfig) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let ip = config.api_addr.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names.extend(config.api_server_names.iter().cloned());
    names.sort();
    names.dedup();
    names
}

pub fn load_or_create(config: &MgmtConfig) -> anyhow::Result<ApiTls> {
    let client_ca_pem = match &config.api_client_ca {
        Some(path) => Some(read(path)?),
        None => None,
    };
    if let Some((cert, key)) = &config.api_tls {
        return Ok(ApiTls {
            server: CertifiedKey {
                cert_pem: read(cert)?,
                key: KeyPem(read(key)?),
            },
            client_ca_pem,
        });
    }
    let dir = PkiDir::new(config.data_dir.join("pki"));
    let now = SystemTime::now();
    let ca = if dir.exists("api-ca") {
        dir.load_authority("api-ca", "")?
    } else {
        let ca = Authority::generate_root("Trellis management API CA", 10 * YEAR, now)?;
        dir.save("api-ca", &ca.cert_pem, &ca.key)?;
        tracing::info!(path = %dir.path("api-ca.pem").display(), "generated the management API CA");
        ca
    };
    let names = server_names(config);
    // Reissued when missing or when the names it must carry changed.
    let existing = dir.exists("api-server").then(|| -> anyhow::Result<CertifiedKey> {
        Ok(CertifiedKey {
            cert_pem: read(&dir.path("api-server.pem"))?,
            key: KeyPem(read(&dir.path("api-server.key"))?),
        })
    });
    let server = match existing.transpose()? {
        Some(server) if covers(&server.cert_pem, &names)? => server,
        _ => {
            let server = ca.issue_server_cert(&names, YEAR, now)?;
            dir.save("api-server", &server.cert_pem, &server.key)?;
            tracing::info!(names = ?names, "issued the management API server certificate");
            server
        }
    };
    Ok(ApiTls { server, client_ca_pem })
}

fn covers(cert_pem: &str, names: &[String]) -> anyhow::Result<bool> {
    let info = trellis_pki::inspect_pem(cert_pem)?;
    let expires_soon = info.not_after < SystemTime::now() + Duration::from_secs(30 * 86400);
    Ok(!expires_soon
        && names
            .iter()
            .all(|n| info.dns_names.contains(n) || n.parse::<std::net::IpAddr>().is_ok()))
}

/// The verified client certificate of a connection, handed to the handlers.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificate(pub Option<Vec<u8>>);

/// Serves `router` over TLS until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: &ApiTls,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = trellis_pki::server_tls_config(&tls.server, tls.client_ca_pem.as_deref(), false)
        .context("the management API certificate")?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_source = PerSource::default();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => return Ok(()),
        };
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let Some(source_slot) = per_source.take(&peer) else {
            tracing::debug!(%peer, "API connection refused: too many open from its address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = (permit, source_slot);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "API TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "API TLS handshake timed out");
                    return;
                }
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| der.as_ref().to_vec());
            let service = router.map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(PeerCertificate(certificate.clone()));
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                request
            });
            // HTTP/1.1 only: the CLI and browsers' fetches need nothing more, and it keeps the
            // listener's attack surface small.
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .await
            {
                tracing::debug!(%peer, error = %error, "API connection ended with an error");
            }
        });
    }
}

/// Where the CLI finds the API's CA certificate.
pub fn ca_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("pki").join("api-ca.pem")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_gets_at_most_its_share_and_gets_it_back() {
        let per_source = PerSource::default();
        let one: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_SOURCE)
            .map(|_| per_source.take(&one).unwrap())
            .collect();
        assert!(per_source.take(&one).is_none());
        assert!(per_source.take(&other).is_some(), "another address is not affected");
        // Addresses of one IPv6 /64 count together.
        let a: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8::2]:1".parse().unwrap();
        assert_eq!(PerSource::source(&a), PerSource::source(&b));
        drop(held);
        assert!(per_source.take(&one).is_some());
    }
}
