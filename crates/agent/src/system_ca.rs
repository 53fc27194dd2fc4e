//! The host's system CA bundle, which proxies trust for servers outside the mesh (an
//! ExternalService verified without its own CAs, a JWKS over HTTPS). Envoy has no system store
//! of its own, so the agent finds the bundle and hands its path over SDS.

use std::path::Path;
use std::sync::OnceLock;

/// Where Linux distributions and macOS keep the bundle (the list Go's crypto/x509 searches),
/// after `SSL_CERT_FILE`, which overrides them as it does for OpenSSL.
const WELL_KNOWN: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The bundle's path, found once; `None` (and a warning) when the host has none: clusters that
/// trust it then never warm, and their requests fail instead of going unchecked.
pub fn bundle() -> Option<&'static str> {
    static FOUND: OnceLock<Option<String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let from_env = std::env::var("SSL_CERT_FILE").ok().filter(|p| !p.is_empty());
            let found = from_env
                .into_iter()
                .chain(WELL_KNOWN.iter().map(|p| p.to_string()))
                .find(|p| Path::new(p).is_file());
            match &found {
                Some(path) => tracing::info!(path, "system CA bundle for servers outside the mesh"),
                None => tracing::warn!(
                    "no system CA bundle found (set SSL_CERT_FILE): servers outside the mesh checked against it are unreachable"
                ),
            }
            found
        })
        .as_deref()
}

/// Adds the bundle's SDS secret to `resources` when `config` has a cluster that trusts it and
/// the host has one.
pub fn add_if_used(resources: &mut trellis_envoy::ProxyResources, config: &trellis_model::ClusterConfig) {
    if trellis_envoy::uses_system_ca(config)
        && let Some(path) = bundle()
    {
        resources.secrets.push(trellis_envoy::system_ca_secret(path));
    }
}
