//! A minimal HTTP/1.1 client on hyper: the CLI talks to the API with it, the demo frontend calls
//! through its sidecar with it, tests send traffic with it, and the ext-auth service fetches key
//! sets and talks to OpenID providers with it. Optional forward proxy: the request then goes to
//! the proxy in absolute form, as `curl -x` does.
//!
//! `https://` URLs go over TLS (rustls, ring) with ALPN `http/1.1` and the URL's host as SNI and
//! as the name the certificate must carry; they are never sent in clear. [`HttpClient`] says
//! which roots to trust: the system's (loaded once per process, on the first https request) plus
//! optional private CAs. The free functions [`request`] and [`get`] use the system's roots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

/// The largest response body read: answers come from servers on the network (OpenID providers,
/// key sets, agents), and one that never ends must not exhaust memory. Far above any real
/// answer (the management API's largest, a whole config dump, included).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with the system's trust roots (see [`HttpClient::request`]).
pub async fn request(
    method: &str,
    url: &str,
    proxy: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    HttpClient::default()
        .request(method, url, proxy, headers, body, timeout)
        .await
}

pub async fn get(url: &str, timeout: Duration) -> anyhow::Result<Response> {
    request("GET", url, None, &[], None, timeout).await
}

/// An HTTP/1.1 client for `http://` and `https://` URLs; cheap to clone (the TLS configuration
/// is shared). The default trusts the system's roots.
#[derive(Clone, Default)]
pub struct HttpClient {
    /// `None`: the process-wide connector with the system's roots.
    tls: Option<TlsConnector>,
    /// The name the server's certificate must carry, when not the URL's host.
    server_name: Option<String>,
}

/// The system's trust roots, read once (the platform store, or `SSL_CERT_FILE`/`SSL_CERT_DIR`).
/// Unreadable entries are logged and skipped; with none, every https server is of an unknown
/// issuer.
static SYSTEM_ROOTS: LazyLock<RootCertStore> = LazyLock::new(|| {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "cannot load some of the system's TLS trust roots");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    tracing::debug!(added, ignored, "loaded the system's TLS trust roots");
    roots
});

static SYSTEM_CONNECTOR: LazyLock<TlsConnector> = LazyLock::new(|| connector(SYSTEM_ROOTS.clone()));

impl HttpClient {
    /// Trusts the system's roots and every certificate of the PEM files `ca_files` (bundles
    /// allowed). A file that cannot be read or holds no certificate is an error.
    pub fn with_ca_files(ca_files: &[PathBuf]) -> anyhow::Result<HttpClient> {
        if ca_files.is_empty() {
            return Ok(HttpClient::default());
        }
        let mut roots = SYSTEM_ROOTS.clone();
        for path in ca_files {
            let pem = std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))?;
            add_pem(&mut roots, &pem, path)?;
        }
        Ok(HttpClient::with_roots(roots))
    }

    /// Trusts the system's roots and every certificate of `pem`.
    pub fn with_ca_pem(pem: &str) -> anyhow::Result<HttpClient> {
        let mut roots = SYSTEM_ROOTS.clone();
        add_pem(&mut roots, pem.as_bytes(), Path::new("<PEM>"))?;
        Ok(HttpClient::with_roots(roots))
    }

    /// Trusts the system's roots and `ca_files`, and presents a client certificate (chain and
    /// key, PEM files) to servers that ask for one.
    pub fn with_client_certificate(ca_files: &[PathBuf], cert: &Path, key: &Path) -> anyhow::Result<HttpClient> {
        let mut roots = SYSTEM_ROOTS.clone();
        for path in ca_files {
            let pem = std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))?;
            add_pem(&mut roots, &pem, path)?;
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("client certificate {}: {e}", cert.display()))?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
            .map_err(|e| anyhow::anyhow!("client key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("client certificate and key do not match")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpClient {
            tls: Some(TlsConnector::from(Arc::new(config))),
            server_name: None,
        })
    }

    /// Trusts exactly `roots` (not the system's).
    pub fn with_roots(roots: RootCertStore) -> HttpClient {
        HttpClient {
            tls: Some(connector(roots)),
            server_name: None,
        }
    }

    /// Checks every server's certificate for `name` instead of the URL's host (sent as SNI too):
    /// for a server known by a fixed name however it is reached, as Envoy checks its xDS server.
    pub fn checking_server_as(mut self, name: &str) -> HttpClient {
        self.server_name = Some(name.to_string());
        self
    }

    /// Sends one request. `url` is `http[s]://host[:port]/path`; with `proxy` the TCP connection
    /// goes to the proxy and the URL is sent in absolute form (http only: https through a proxy
    /// is refused, not sent in clear).
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        proxy: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
        timeout: Duration,
    ) -> anyhow::Result<Response> {
        // Every error names the request: callers log it as it is.
        match tokio::time::timeout(timeout, self.send(method, url, proxy, headers, body)).await {
            Ok(result) => result.map_err(|e| anyhow::anyhow!("{method} {url}: {e:#}")),
            Err(_) => Err(anyhow::anyhow!("{method} {url}: no answer within {timeout:?}")),
        }
    }

    pub async fn get(&self, url: &str, timeout: Duration) -> anyhow::Result<Response> {
        self.request("GET", url, None, &[], None, timeout).await
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        proxy: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Response> {
        let uri: hyper::Uri = url.parse().map_err(|e| anyhow::anyhow!("bad URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("only http:// and https:// URLs are supported"),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("the URL has no host"))?
            .clone();
        let connect_to = match proxy {
            Some(_) if tls => anyhow::bail!("https through a proxy is not supported"),
            Some(proxy) => proxy.to_string(),
            None => format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(if tls { 443 } else { 80 })
            ),
        };
        let stream = tokio::net::TcpStream::connect(&connect_to)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {connect_to}: {e}"))?;
        let target = if proxy.is_some() {
            uri.to_string()
        } else {
            uri.path_and_query().map(|p| p.to_string()).unwrap_or("/".into())
        };
        let mut builder = Request::builder().method(method).uri(target);
        // A caller's own Host (a virtual host at a gateway's local port) replaces the URL's:
        // two Host headers would leave the server to pick one, and Envoy takes the first.
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            builder = builder.header("host", authority.as_str());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = match body {
            Some((content_type, bytes)) => builder
                .header("content-type", content_type)
                .body(Full::new(Bytes::from(bytes)))?,
            None => builder.body(Full::new(Bytes::new()))?,
        };
        if !tls {
            return exchange(stream, request).await;
        }
        // IPv6 literals come bracketed in the authority; the certificate names the bare address.
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => authority.host().trim_start_matches('[').trim_end_matches(']'),
        };
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| anyhow::anyhow!("{host:?} is not a TLS server name: {e}"))?;
        let connector = self.tls.as_ref().unwrap_or(&SYSTEM_CONNECTOR);
        let stream = connector
            .connect(server_name, stream)
            .await
            .map_err(|e| anyhow::anyhow!("TLS handshake with {connect_to} failed: {e}{}", tls_hint(&e)))?;
        exchange(stream, request).await
    }
}

/// A client config on the ring provider (never the process-wide default provider) trusting
/// `roots`, offering ALPN `http/1.1` only.
fn connector(roots: RootCertStore) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// What to do about the usual certificate failures.
fn tls_hint(error: &std::io::Error) -> &'static str {
    use rustls::CertificateError::*;
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(UnknownIssuer)) => {
            " (unknown issuer: the server's certificate is not signed by a trusted CA)"
        }
        Some(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {
            " (the server's certificate does not name the URL's host)"
        }
        _ => "",
    }
}

/// Adds every certificate of `pem` (read from `source`) to `roots`.
fn add_pem(roots: &mut RootCertStore, pem: &[u8], source: &Path) -> anyhow::Result<()> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("CA file {}: {e}", source.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "CA file {}: no PEM CERTIFICATE in it",
        source.display()
    );
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("CA file {}: {e}", source.display()))?;
    }
    Ok(())
}

async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> anyhow::Result<Response>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            anyhow::anyhow!("reading the answer ({status}): {e}; at most {MAX_RESPONSE_BYTES} bytes are read")
        })?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_other_schemes_and_https_through_a_proxy() {
        let timeout = Duration::from_secs(2);
        let error = get("ftp://127.0.0.1:1/x", timeout).await.unwrap_err().to_string();
        assert!(
            error.starts_with("GET ftp://127.0.0.1:1/x: only http:// and https://"),
            "{error}"
        );
        let error = request("GET", "https://127.0.0.1:1/x", Some("127.0.0.1:1"), &[], None, timeout)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("https through a proxy is not supported"), "{error}");
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("trellis-httpc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = HttpClient::with_ca_files(std::slice::from_ref(&empty)).err().unwrap();
        assert!(format!("{error:#}").contains("no PEM CERTIFICATE"), "{error:#}");
        let missing = dir.join("missing.pem");
        let error = HttpClient::with_ca_files(&[missing]).err().unwrap();
        assert!(format!("{error:#}").contains("cannot read CA file"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A server that answers with the Host header lines it received.
    async fn host_echo() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            let hosts: Vec<String> = String::from_utf8_lossy(&head)
                .lines()
                .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
                .map(str::to_string)
                .collect();
            let body = hosts.join("\n");
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        port
    }

    #[tokio::test]
    async fn a_callers_host_header_replaces_the_urls() {
        let port = host_echo().await;
        let url = format!("http://127.0.0.1:{port}/");
        let response = request(
            "GET",
            &url,
            None,
            &[("host", "www.example.com")],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(response.body, "host: www.example.com");
        let port = host_echo().await;
        let url = format!("http://127.0.0.1:{port}/");
        let response = request("GET", &url, None, &[], None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.body, format!("host: 127.0.0.1:{port}"));
    }

    #[tokio::test]
    async fn an_answer_that_never_ends_is_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 100000000000\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 1 << 20];
            while stream.write_all(&chunk).await.is_ok() {}
        });
        let error = get(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(30))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("at most 67108864 bytes"), "{error}");
    }
}
