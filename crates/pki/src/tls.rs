//! rustls configurations, always on the ring provider (never the process-wide default provider).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::cert::pem_to_der_certs;
use crate::{CertifiedKey, PkiError, Result};

/// A server config presenting `cert`.
///
/// With `client_roots_pem`, client certificates are verified against those roots, but clients without a
/// certificate are still let in: registration happens before a client has one, so callers check for a peer
/// certificate per request. With `alpn_h2`, ALPN offers `h2` then `http/1.1`, so gRPC and plain HTTP
/// clients can share the listener.
pub fn server_tls_config(
    cert: &CertifiedKey,
    client_roots_pem: Option<&str>,
    alpn_h2: bool,
) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let chain = cert_chain(&cert.cert_pem)?;
    let key = private_key(&cert.key.0)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error("select protocol versions"))?;
    let builder = match client_roots_pem {
        Some(pem) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(pem)?), provider)
                .allow_unauthenticated()
                .build()
                .map_err(PkiError::ClientVerifier)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(tls_error("load the server certificate and key"))?;
    if alpn_h2 {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(config)
}

/// A client config trusting `roots_pem`, presenting `cert` when given. With `alpn_h2`, ALPN offers `h2` only.
pub fn client_tls_config(cert: Option<&CertifiedKey>, roots_pem: &str, alpn_h2: bool) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error("select protocol versions"))?
        .with_root_certificates(root_store(roots_pem)?);
    let mut config = match cert {
        Some(cert) => builder
            .with_client_auth_cert(cert_chain(&cert.cert_pem)?, private_key(&cert.key.0)?)
            .map_err(tls_error("load the client certificate and key"))?,
        None => builder.with_no_client_auth(),
    };
    if alpn_h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    Ok(config)
}

/// A root store holding every certificate of `pem`.
pub fn root_store(pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for der in pem_to_der_certs(pem)? {
        roots
            .add(CertificateDer::from(der))
            .map_err(tls_error("add a trust root"))?;
    }
    Ok(roots)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    Ok(pem_to_der_certs(pem)?.into_iter().map(CertificateDer::from).collect())
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    const WHAT: &str = "TLS private key";
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|source| PkiError::Pem { what: WHAT, source })?
        .ok_or(PkiError::NoKey { what: WHAT })
}

fn tls_error(context: &'static str) -> impl FnOnce(rustls::Error) -> PkiError {
    move |source| PkiError::Tls { context, source }
}
