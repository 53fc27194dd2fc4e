//! What both add-ons do with their cluster's agent: register (so that policies' server references
//! resolve to them, refreshed like a proxy's registration), long-poll their config, and keep a
//! mesh certificate to serve gRPC over mutual TLS.
//!
//! ```text
//!  keep_registered: PUT /v1/proxies/addon~<name>.<ns>~<port> + role secret ──▶ token ──┐
//!  watch_config:    GET /v1/addons/<kind>, Authorization: Bearer <token>  ◀────────────┤
//!  keep_identity:   POST /v1/addons/<kind>/certificate {csr}, Bearer <token> ◀──────────┘
//!                   ─▶ tls_incoming: gRPC over mTLS, client certificates of this cluster's CA
//! ```
//!
//! The role secret proves the add-on may take the role (it will see every auth decision, and
//! OIDC client secrets); the token, held in memory only, is what the config is served to. A
//! restarted add-on gets a new token with the secret.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::agent_endpoint::AgentEndpoint;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use trellis_model::discovery::AddonInstance;

use crate::proxy::{AgentRegistration, PutOutcome};
use crate::role_secret::ClientSecret;
use crate::{AddonKind, AddonRegistration, ProxyRegistration};

/// How often the registration is refreshed: well inside the agent's TTL.
const REFRESH: Duration = Duration::from_secs(5);

/// Where an add-on registers and what it announces.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentLinkArgs {
    /// The cluster agent's local API (`host:port`): register there and load the policies' config
    /// from it. Without it the add-on serves only what its config files say.
    #[arg(long)]
    pub agent: Option<String>,
    /// The agent's CA (PEM): reach --agent on its TLS registration port (--registry-tls-addr)
    /// and trust only that CA for it; without it, --agent is the plain port on this host.
    #[arg(long)]
    pub agent_ca: Option<PathBuf>,
    /// Service name policies reference this add-on by (`destinationServer.ref.name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace policies reference this add-on by.
    #[arg(long, default_value = "gloo-mesh")]
    pub namespace: String,
    /// Address the cluster's proxies reach this add-on at; default: the listen address, or
    /// 127.0.0.1 when listening on all addresses.
    #[arg(long)]
    pub advertise: Option<String>,
    /// The agent's role secret (its --role-secret-file), which add-on registrations need;
    /// default: the copy the agent publishes for local clients of its user.
    #[arg(long)]
    pub role_secret_file: Option<PathBuf>,
}

/// The add-on's registration credential, shared by the registration task (which gets and
/// renews it) and the config watch (which presents it).
#[derive(Clone)]
pub struct AgentCredential(Arc<watch::Sender<Option<String>>>);

impl Default for AgentCredential {
    fn default() -> Self {
        AgentCredential(Arc::new(watch::Sender::new(None)))
    }
}

impl AgentCredential {
    /// A credential already holding `token` (tests that play the agent).
    #[cfg(test)]
    pub(crate) fn with_token(token: &str) -> Self {
        AgentCredential(Arc::new(watch::Sender::new(Some(token.to_string()))))
    }

    /// The current token, waiting for the first registration if need be.
    async fn current(&self) -> String {
        let mut receiver = self.0.subscribe();
        let token = receiver
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self");
        token.clone().expect("waited for Some")
    }
}

impl AgentLinkArgs {
    pub fn instance(&self, default_name: &str, listen: std::net::SocketAddr) -> AddonInstance {
        let address = self.advertise.clone().unwrap_or_else(|| {
            if listen.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                listen.ip().to_string()
            }
        });
        AddonInstance {
            namespace: self.namespace.clone(),
            name: self.name.clone().unwrap_or_else(|| default_name.to_string()),
            address,
            port: listen.port(),
        }
    }
}

impl AgentLinkArgs {
    /// The agent given with --agent (and --agent-ca), if any.
    pub fn endpoint(&self) -> anyhow::Result<Option<AgentEndpoint>> {
        self.agent
            .as_deref()
            .map(|agent| AgentEndpoint::new(agent, self.agent_ca.as_deref()))
            .transpose()
    }

    pub fn secret(&self) -> ClientSecret {
        ClientSecret {
            file: self.role_secret_file.clone(),
        }
    }
}

/// Registers and keeps the registration fresh until the task is dropped, publishing its token
/// in `credential`; the agent forgets it one TTL after the add-on stops.
pub async fn keep_registered(
    agent: AgentEndpoint,
    secret: ClientSecret,
    kind: AddonKind,
    instance: AddonInstance,
    credential: AgentCredential,
) {
    let id = format!("addon~{}.{}~{}", instance.name, instance.namespace, instance.port);
    let registration = ProxyRegistration::AddOn(AddonRegistration::new(kind, instance));
    let mut link = AgentRegistration::new(&agent, &id, &registration, Some(secret), None);
    let mut registered = false;
    loop {
        match link.put().await {
            Ok(PutOutcome::Accepted { new_token, .. }) => {
                if let Some(token) = new_token {
                    credential.0.send_replace(Some(token));
                }
                if !registered {
                    tracing::info!(agent = agent.address(), id, "registered with the agent");
                }
                registered = true;
            }
            Ok(PutOutcome::Refused { status, message, .. }) => {
                registered = false;
                tracing::warn!(
                    agent = agent.address(),
                    status,
                    error = message,
                    "agent refused the registration"
                )
            }
            Err(error) => {
                tracing::warn!(agent = agent.address(), error = %format!("{error:#}"), "cannot register with the agent; retrying")
            }
        }
        // Until registered, try again soon: an add-on started with its agent waits for it.
        tokio::time::sleep(if registered {
            REFRESH
        } else {
            Duration::from_millis(500)
        })
        .await;
    }
}

/// Long-polls `GET /v1/addons/{kind}` and hands every new document to `apply`; keeps the last
/// good one when the agent is unreachable or a document does not parse.
pub async fn watch_config<T: DeserializeOwned>(
    agent: AgentEndpoint,
    kind: AddonKind,
    credential: AgentCredential,
    mut apply: impl FnMut(T),
) {
    let kind = kind.as_str();
    let mut version = String::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        let path = format!("/v1/addons/{kind}?version={version}");
        let authorization = format!("Bearer {}", credential.current().await);
        let answer = agent
            .request(
                "GET",
                &path,
                &[("authorization", &authorization)],
                None,
                crate::addon_config::LONG_POLL + Duration::from_secs(5),
            )
            .await;
        match answer {
            Ok(response) if response.status == 200 => {
                backoff = Duration::from_millis(200);
                let parsed: Result<(String, T), String> = serde_json::from_str::<serde_json::Value>(&response.body)
                    .map_err(|e| e.to_string())
                    .and_then(|value| {
                        let new_version = value["version"].as_str().unwrap_or_default().to_string();
                        serde_json::from_value(value)
                            .map(|t| (new_version, t))
                            .map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok((new_version, document)) => {
                        tracing::info!(kind, version = new_version, "loaded config from the agent");
                        version = new_version;
                        apply(document);
                    }
                    Err(error) => {
                        tracing::warn!(kind, %error, "config from the agent does not parse; keeping the last good one");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
            Ok(response) if response.status == 304 => {}
            Ok(response) => {
                tracing::warn!(
                    kind,
                    status = response.status,
                    body = response.body,
                    "agent refused the config request"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::warn!(kind, %error, "cannot reach the agent for config; keeping the last good one");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

// === mesh identity: gRPC over mutual TLS ===

/// Tolerated at once: TLS handshakes in progress, each within [`HANDSHAKE_TIMEOUT`]; a local
/// flood of connections must not starve the checks of the real proxies.
const MAX_HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this long between certificate requests, so a rotated cluster CA (whose new proxy
/// certificates the add-on must accept) is taken up within minutes, not at the next renewal.
const MAX_RENEW_INTERVAL: Duration = Duration::from_secs(600);
/// At least this long between certificate requests: a certificate that is due at once (its CA
/// about to expire) must not turn the renewal into a busy loop against the agent.
const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// The add-on's TLS server configuration: its mesh certificate and the client CA it requires;
/// `None` until the agent issued the first certificate (connections are refused until then).
#[derive(Clone)]
pub struct AddonTls(Arc<watch::Sender<Option<Arc<rustls::ServerConfig>>>>);

impl Default for AddonTls {
    fn default() -> Self {
        AddonTls(Arc::new(watch::Sender::new(None)))
    }
}

impl AddonTls {
    /// Wakes on every new server configuration (tests).
    #[cfg(test)]
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<rustls::ServerConfig>>> {
        self.0.subscribe()
    }
}

/// What the agent answers at `POST /v1/addons/{kind}/certificate`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssuedCertificate {
    spiffe_id: String,
    cert_chain: String,
    client_ca: String,
}

/// Keeps a mesh certificate for the add-on: a new key and CSR each time (the key never leaves
/// this process, is never written or logged), signed by the agent for the identity the add-on
/// registered as; renewed at two thirds of its life (and at least every ten minutes, to follow
/// the cluster CA). A failed renewal keeps the current certificate and retries.
pub async fn keep_identity(agent: AgentEndpoint, kind: AddonKind, credential: AgentCredential, tls: AddonTls) {
    let mut backoff = Duration::from_millis(500);
    // The client CA before the current one: proxies keep certificates of a replaced cluster CA
    // until their renewal, and must not be refused meanwhile.
    let mut previous_ca: Option<String> = None;
    let mut current_ca: Option<String> = None;
    loop {
        let token = credential.current().await;
        match request_certificate(&agent, kind, &token).await {
            Ok((issued, key)) => {
                if current_ca.as_deref() != Some(issued.client_ca.as_str()) {
                    previous_ca = current_ca.take();
                    current_ca = Some(issued.client_ca.clone());
                }
                let mut client_cas = issued.client_ca.clone();
                if let Some(previous) = &previous_ca {
                    client_cas.push_str(previous);
                }
                match server_config(&issued.cert_chain, &key, &client_cas) {
                    Ok(config) => {
                        let first = tls.0.send_replace(Some(Arc::new(config))).is_none();
                        let info = trellis_pki::inspect_pem(&issued.cert_chain);
                        let renew = info
                            .as_ref()
                            .map(|i| trellis_pki::renew_at(i.not_before, i.not_after))
                            .unwrap_or_else(|_| std::time::SystemTime::now() + MAX_RENEW_INTERVAL);
                        if first {
                            tracing::info!(
                                kind = kind.as_str(),
                                spiffe_id = issued.spiffe_id,
                                "serving gRPC over mutual TLS: client certificates of this cluster's CA only"
                            );
                        } else {
                            tracing::debug!(kind = kind.as_str(), "add-on certificate renewed");
                        }
                        backoff = Duration::from_millis(500);
                        let wait = renew
                            .duration_since(std::time::SystemTime::now())
                            .unwrap_or_default()
                            .clamp(MIN_RENEW_INTERVAL, MAX_RENEW_INTERVAL);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(kind = kind.as_str(), error = %format!("{error:#}"), "the agent's certificate is unusable; retrying")
                    }
                }
            }
            Err(error) => tracing::warn!(
                kind = kind.as_str(),
                error = %format!("{error:#}"),
                "cannot get a certificate from the agent; retrying (proxies cannot call this add-on until it has one)"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn request_certificate(
    agent: &AgentEndpoint,
    kind: AddonKind,
    token: &str,
) -> anyhow::Result<(IssuedCertificate, trellis_pki::KeyPem)> {
    let (key, csr) = trellis_pki::new_key_and_csr(&format!("trellis {}", kind.as_str()))?;
    let body = serde_json::to_vec(&serde_json::json!({ "csr": csr }))?;
    let authorization = format!("Bearer {token}");
    let response = agent
        .request(
            "POST",
            &format!("/v1/addons/{}/certificate", kind.as_str()),
            &[("authorization", &authorization)],
            Some(("application/json", body)),
            Duration::from_secs(10),
        )
        .await?;
    anyhow::ensure!(
        response.status == 200,
        "the agent answered {}: {}",
        response.status,
        response.body
    );
    let issued: IssuedCertificate = serde_json::from_str(&response.body)?;
    Ok((issued, key))
}

/// Serves `cert_chain` with `key`; requires a client certificate chaining to one of
/// `client_cas_pem` (this cluster's CA, not the mesh root: another cluster's proxies, or anyone
/// holding a certificate of another CA under the same root, are refused). HTTP/2 only (gRPC).
fn server_config(
    cert_chain: &str,
    key: &trellis_pki::KeyPem,
    client_cas_pem: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = trellis_pki::pem_to_der_certs(cert_chain)?
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.0.as_bytes())
        .map_err(|_| anyhow::anyhow!("the add-on's own key does not parse"))?;
    let verifier = client_verifier(client_cas_pem, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Client certificates issued by one of `client_cas_pem`, required.
fn client_verifier(
    client_cas_pem: &str,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    // The cluster CA itself is the trust anchor, without its name constraints: webpki supports
    // no URI name constraints and refuses every SPIFFE ID under them. Nothing here decides by
    // name (the only question is "issued by this cluster's CA?"), and the proxies, whose
    // BoringSSL does check them, enforce the constraints where names matter.
    let mut roots = trellis_pki::root_store(client_cas_pem)?;
    for anchor in &mut roots.roots {
        anchor.name_constraints = None;
    }
    Ok(rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?)
}

/// Accepts TCP connections and completes their mutual TLS handshakes off the accept loop with
/// the current [`AddonTls`]; yields the connections that presented a certificate of this
/// cluster's CA. Before the first certificate, connections are closed at once.
pub fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: AddonTls,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let refusals = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "add-on accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(config) = tls.0.borrow().clone() else {
                refused(&refusals, peer, "no certificate from the agent yet");
                continue;
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                refused(&refusals, peer, "too many TLS handshakes in progress");
                continue;
            };
            // Answers are small HTTP/2 frames: without TCP_NODELAY, Nagle holds each one until
            // the peer's delayed ACK, adding a millisecond or more to every check.
            let _ = tcp.set_nodelay(true);
            let refusals = refusals.clone();
            trellis_support::tls_accept::spawn_handshake(
                tokio_rustls::TlsAcceptor::from(config),
                tcp,
                HANDSHAKE_TIMEOUT,
                permit,
                tx.clone(),
                move |reason| refused(&refusals, peer, reason),
            );
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Logs a refused connection at most once every 10 s, so a local loop of connections cannot
/// fill the log.
fn refused(last_logged: &std::sync::atomic::AtomicU64, peer: std::net::SocketAddr, reason: &str) {
    if trellis_support::tls_accept::refusal_log_due(last_logged) {
        tracing::warn!(%peer, reason, "add-on refused a connection (it needs a client certificate of this cluster's CA; further refusals in the next 10 s are not logged)");
    }
}

/// Without an agent there is no mesh identity to serve: plaintext gRPC, said loudly, and only on
/// loopback, where only this host's processes reach it (tests, `--config`-only runs).
pub fn plaintext_without_agent(kind: AddonKind, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "without --agent the {} add-on has no certificate and would serve plaintext gRPC on {listen}: \
         give --agent (mutual TLS with a certificate from the cluster's agent) or listen on loopback",
        kind.as_str()
    );
    tracing::warn!(
        kind = kind.as_str(),
        %listen,
        "INSECURE: no --agent, so no mesh certificate: serving plaintext gRPC on loopback; any local process can call this add-on"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn verify(verifier: &dyn rustls::server::danger::ClientCertVerifier, cert: &trellis_pki::CertifiedKey) -> bool {
        let certs: Vec<rustls::pki_types::CertificateDer> = trellis_pki::pem_to_der_certs(&cert.cert_pem)
            .unwrap()
            .into_iter()
            .map(rustls::pki_types::CertificateDer::from)
            .collect();
        verifier
            .verify_client_cert(&certs[0], &certs[1..], rustls::pki_types::UnixTime::now())
            .is_ok()
    }

    #[test]
    fn accepts_client_certificates_of_its_cluster_ca_only() {
        let (now, day) = (SystemTime::now(), Duration::from_secs(86400));
        let root = trellis_pki::Authority::generate_root("mesh root", day, now).unwrap();
        // Signed as the management server signs cluster CAs: name-constrained to the trust domain.
        let (key, csr) = trellis_pki::new_key_and_csr("cluster-1").unwrap();
        let chain = root
            .sign_intermediate_csr(&csr, "cluster-1", "trellis.local", day, now)
            .unwrap();
        let own = trellis_pki::intermediate_from_signed(key, &chain).unwrap();
        let other = root.generate_intermediate("cluster-2", day, now).unwrap();
        let id = "spiffe://trellis.local/ns/demo/sa/frontend";
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let own_ca = own
            .cert_pem
            .split_inclusive("-----END CERTIFICATE-----")
            .next()
            .unwrap()
            .to_string();
        let verifier = client_verifier(&own_ca, provider).unwrap();
        assert!(verify(&*verifier, &own.issue_workload_cert(id, day, now).unwrap()));
        assert!(
            !verify(&*verifier, &other.issue_workload_cert(id, day, now).unwrap()),
            "another cluster's proxy, under the same mesh root"
        );
        let stranger = trellis_pki::Authority::generate_root("other", day, now).unwrap();
        assert!(!verify(
            &*verifier,
            &stranger.issue_workload_cert(id, day, now).unwrap()
        ));
        assert!(
            verifier.client_auth_mandatory(),
            "a client without a certificate is refused"
        );
    }
}
