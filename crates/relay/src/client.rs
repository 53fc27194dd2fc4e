//! The agent's relay credentials: how it reaches the management server and proves who it is.
//!
//! ```text
//!  first start:  --token ──Register(token, CSR) over server-authenticated TLS──▶ client certificate
//!  afterwards:   mTLS with the saved certificate (or the operator's --client-cert/--client-key)
//!  at 2/3 life:  Renew(CSR) over mTLS ──▶ new certificate, used from the next connection on;
//!                the open relay stream is not touched
//! ```
//!
//! The agent's private keys are generated here, written with mode 0600 and never sent anywhere.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use trellis_pki::KeyPem;
use trellis_support::files::write_private;

use crate::{RegisterRequest, RelayClient, RenewRequest};

/// How the agent talks to the relay.
pub enum RelayCredentials {
    Insecure,
    Tls(TlsCredentials),
}

pub struct TlsCredentials {
    authority: String,
    root_pem: String,
    /// Client certificate chain and key in use; `None` until registered.
    identity: Mutex<Option<(String, KeyPem)>>,
    /// Where a certificate issued to us is saved; `None` for operator-supplied files.
    save_dir: Option<PathBuf>,
    token: Option<String>,
}

pub struct CredentialOptions<'a> {
    pub insecure: bool,
    pub authority: &'a str,
    pub root_ca: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
    pub token: Option<String>,
    pub data_dir: &'a Path,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

impl RelayCredentials {
    pub fn load(options: CredentialOptions<'_>) -> anyhow::Result<Self> {
        if options.insecure {
            return Ok(RelayCredentials::Insecure);
        }
        let root_ca = options.root_ca.context(
            "the relay needs --root-ca FILE (the relay root CA, from `trellis cluster register`), or --insecure for a plaintext demo relay",
        )?;
        let root_pem = read(root_ca)?;
        let (identity, save_dir) = match (options.client_cert, options.client_key) {
            (Some(cert), Some(key)) => (Some((read(cert)?, KeyPem(read(key)?))), None),
            (None, None) => {
                let dir = options.data_dir.join("relay");
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                let saved = match (read(&dir.join("client.pem")), read(&dir.join("client.key"))) {
                    (Ok(cert), Ok(key)) => Some((cert, KeyPem(key))),
                    _ => None,
                };
                anyhow::ensure!(
                    saved.is_some() || options.token.is_some(),
                    "no relay client certificate yet: give --token (from `trellis cluster register NAME`) or --client-cert/--client-key"
                );
                (saved, Some(dir))
            }
            _ => anyhow::bail!("give both --client-cert and --client-key, or neither"),
        };
        Ok(RelayCredentials::Tls(TlsCredentials {
            authority: options.authority.to_string(),
            root_pem,
            identity: Mutex::new(identity),
            save_dir,
            token: options.token,
        }))
    }
}

fn endpoint_url(mgmt: &str, tls: bool) -> String {
    if mgmt.contains("://") {
        mgmt.to_string()
    } else if tls {
        format!("https://{mgmt}")
    } else {
        format!("http://{mgmt}")
    }
}

impl TlsCredentials {
    fn tls_config(&self, with_identity: bool) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.root_pem))
            .domain_name(self.authority.clone());
        if with_identity && let Some((cert, key)) = self.identity.lock().expect("identity lock").as_ref() {
            config = config.identity(Identity::from_pem(cert, &key.0));
        }
        config
    }

    pub fn has_identity(&self) -> bool {
        self.identity.lock().expect("identity lock").is_some()
    }

    /// When the current client certificate should be renewed; `None` for operator-supplied
    /// certificates (the operator rotates those) or when there is none yet.
    pub fn renew_at(&self) -> Option<SystemTime> {
        self.save_dir.as_ref()?;
        let identity = self.identity.lock().expect("identity lock");
        let info = trellis_pki::inspect_pem(&identity.as_ref()?.0).ok()?;
        Some(trellis_pki::renew_at(info.not_before, info.not_after))
    }

    fn store(&self, chain: String, key: KeyPem) -> anyhow::Result<()> {
        if let Some(dir) = &self.save_dir {
            write_private(&dir.join("client.key"), &key.0)?;
            std::fs::write(dir.join("client.pem"), &chain)?;
        }
        *self.identity.lock().expect("identity lock") = Some((chain, key));
        Ok(())
    }

    /// Registers with the one-time token; the certificate is saved for every later start.
    pub async fn register(&self, mgmt: &str, cluster: &str) -> anyhow::Result<()> {
        let token = self.token.clone().context("no --token to register with")?;
        let (key, csr) = trellis_pki::new_key_and_csr(cluster)?;
        let endpoint =
            |address: &str| Ok(Endpoint::from_shared(endpoint_url(address, true))?.tls_config(self.tls_config(false))?);
        let response = on_leader(mgmt, endpoint, |channel| {
            let request = RegisterRequest {
                cluster: cluster.to_string(),
                token: token.clone(),
                csr_pem: csr.clone(),
            };
            async move { RelayClient::new(channel).register(request).await }
        })
        .await
        .map_err(|status| anyhow::anyhow!("registration refused: {}", status.message()))?;
        let chain = response.cert_chain_pem;
        let info = trellis_pki::inspect_pem(&chain)?;
        self.store(chain, key)?;
        tracing::info!(serial = %info.serial_hex, "registered with the management server; client certificate saved");
        Ok(())
    }

    /// Gets a fresh certificate over mTLS with the current one.
    pub async fn renew(&self, mgmt: &str, cluster: &str) -> anyhow::Result<()> {
        let (key, csr) = trellis_pki::new_key_and_csr(cluster)?;
        let response = on_leader(
            mgmt,
            |address| self.endpoint(address),
            |channel| {
                let request = RenewRequest { csr_pem: csr.clone() };
                async move { RelayClient::new(channel).renew(request).await }
            },
        )
        .await
        .map_err(|status| anyhow::anyhow!("renewal refused: {}", status.message()))?;
        let chain = response.cert_chain_pem;
        let info = trellis_pki::inspect_pem(&chain)?;
        self.store(chain, key)?;
        tracing::info!(serial = %info.serial_hex, "relay client certificate renewed");
        Ok(())
    }

    async fn channel(&self, mgmt: &str) -> anyhow::Result<Channel> {
        connect_any(mgmt, |address| self.endpoint(address)).await
    }

    /// A replica's endpoint, presenting the current client certificate.
    fn endpoint(&self, address: &str) -> anyhow::Result<Endpoint> {
        Ok(Endpoint::from_shared(endpoint_url(address, true))?.tls_config(self.tls_config(true))?)
    }
}

/// What a replica that does not lead answers a signing request with (code `Unavailable`): only
/// the leader signs, and the client asks the next replica.
pub const NOT_LEADER: &str = "this management server replica does not lead; only the leader signs: ask another replica";

/// How many times the replicas are tried in turn while one says it does not lead: behind one
/// load-balanced address each new connection may reach another replica.
const LEADER_ROUNDS: u32 = 6;

/// Makes a signing call on the leading replica: `call` on each replica of `mgmt` in turn, past
/// those that do not lead or do not answer. While some replica says it does not lead, a few
/// more rounds; when none answered at all, the caller's own retry takes over at once. Any
/// other answer is returned.
pub async fn on_leader<T, F, Fut>(
    mgmt: &str,
    endpoint: impl Fn(&str) -> anyhow::Result<Endpoint>,
    call: F,
) -> Result<T, tonic::Status>
where
    F: Fn(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let addresses: Vec<&str> = mgmt.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    let mut last = tonic::Status::unavailable("no management server address given (--mgmt)");
    for round in 0..LEADER_ROUNDS {
        let mut not_leading = false;
        for address in &addresses {
            let endpoint = endpoint(address).map_err(|e| tonic::Status::invalid_argument(format!("{e:#}")))?;
            let channel = match connect(endpoint).await {
                Ok(channel) => channel,
                Err(error) => {
                    last = tonic::Status::unavailable(format!("management server {address}: {error:#}"));
                    continue;
                }
            };
            match call(channel).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    not_leading |= status.message() == NOT_LEADER;
                    last = status;
                }
                Err(status) => return Err(status),
            }
        }
        if !not_leading {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200) * (round + 1)).await;
    }
    Err(last)
}

async fn connect(endpoint: Endpoint) -> anyhow::Result<Channel> {
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// A channel to the first management server replica of `mgmt` (addresses, comma-separated) that
/// answers: an agent goes on with another replica when the one it used is gone.
async fn connect_any(mgmt: &str, endpoint: impl Fn(&str) -> anyhow::Result<Endpoint>) -> anyhow::Result<Channel> {
    let mut failure = None;
    for address in mgmt.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match connect(endpoint(address)?).await {
            Ok(channel) => return Ok(channel),
            Err(error) => failure = Some(error.context(format!("management server {address}"))),
        }
    }
    Err(failure.unwrap_or_else(|| anyhow::anyhow!("no management server address given (--mgmt)")))
}

impl RelayCredentials {
    /// A channel to the relay with the current credentials.
    pub async fn channel(&self, mgmt: &str) -> anyhow::Result<Channel> {
        match self {
            RelayCredentials::Insecure => {
                connect_any(mgmt, |address| Ok(Endpoint::from_shared(endpoint_url(address, false))?)).await
            }
            RelayCredentials::Tls(tls) => tls.channel(mgmt).await,
        }
    }

    /// A signing call made on the leading replica (see [`on_leader`]).
    pub async fn on_leader<T, F, Fut>(&self, mgmt: &str, call: F) -> Result<T, tonic::Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self {
            RelayCredentials::Insecure => {
                on_leader(
                    mgmt,
                    |address| Ok(Endpoint::from_shared(endpoint_url(address, false))?),
                    call,
                )
                .await
            }
            RelayCredentials::Tls(tls) => on_leader(mgmt, |address| tls.endpoint(address), call).await,
        }
    }
}

/// Renews the relay client certificate at two thirds of its life, for as long as the agent runs.
pub async fn renew_loop(credentials: std::sync::Arc<RelayCredentials>, mgmt: String, cluster: String) {
    let RelayCredentials::Tls(tls) = &*credentials else {
        return;
    };
    loop {
        let wait = match tls.renew_at() {
            Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            None => Duration::from_secs(1),
        };
        tokio::time::sleep(wait.max(Duration::from_millis(200))).await;
        if tls.renew_at().is_none_or(|at| at > SystemTime::now()) {
            continue;
        }
        if let Err(error) = tls.renew(&mgmt, &cluster).await {
            tracing::warn!(error = %format!("{error:#}"), "cannot renew the relay client certificate yet; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
