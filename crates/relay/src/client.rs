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
        let channel = connect_any(mgmt, |address| {
            Ok(Endpoint::from_shared(endpoint_url(address, true))?.tls_config(self.tls_config(false))?)
        })
        .await?;
        let (key, csr) = trellis_pki::new_key_and_csr(cluster)?;
        let response = RelayClient::new(channel)
            .register(RegisterRequest {
                cluster: cluster.to_string(),
                token,
                csr_pem: csr,
            })
            .await
            .map_err(|status| anyhow::anyhow!("registration refused: {}", status.message()))?;
        let chain = response.into_inner().cert_chain_pem;
        let info = trellis_pki::inspect_pem(&chain)?;
        self.store(chain, key)?;
        tracing::info!(serial = %info.serial_hex, "registered with the management server; client certificate saved");
        Ok(())
    }

    /// Gets a fresh certificate over mTLS with the current one.
    pub async fn renew(&self, mgmt: &str, cluster: &str) -> anyhow::Result<()> {
        let channel = self.channel(mgmt).await?;
        let (key, csr) = trellis_pki::new_key_and_csr(cluster)?;
        let response = RelayClient::new(channel)
            .renew(RenewRequest { csr_pem: csr })
            .await
            .map_err(|status| anyhow::anyhow!("renewal refused: {}", status.message()))?;
        let chain = response.into_inner().cert_chain_pem;
        let info = trellis_pki::inspect_pem(&chain)?;
        self.store(chain, key)?;
        tracing::info!(serial = %info.serial_hex, "relay client certificate renewed");
        Ok(())
    }

    async fn channel(&self, mgmt: &str) -> anyhow::Result<Channel> {
        connect_any(mgmt, |address| {
            Ok(Endpoint::from_shared(endpoint_url(address, true))?.tls_config(self.tls_config(true))?)
        })
        .await
    }
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
