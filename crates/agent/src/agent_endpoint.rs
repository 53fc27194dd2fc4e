//! Where a proxy, gateway or add-on reaches its agent's registration API: the plain port on
//! this host, or with `--agent-ca` the agent's TLS port (`--registry-tls-addr`), its certificate
//! checked against exactly that CA for `registry.trellis-agent`, whatever address the agent is
//! reached at (a Service's, a pod's). The CA file is read again when it changes (a ConfigMap
//! volume is updated in place when the agent publishes a new CA).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use trellis_support::httpc::{self, HttpClient};

/// The flags a proxy or gateway names its agent with.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentAddress {
    /// The agent's registration API.
    #[arg(long, default_value = "127.0.0.1:9977")]
    pub agent: String,
    /// The agent's CA (PEM): reach --agent on its TLS registration port (--registry-tls-addr)
    /// and trust only that CA for it; without it, --agent is the plain port on this host.
    #[arg(long)]
    pub agent_ca: Option<PathBuf>,
}

impl AgentAddress {
    pub fn endpoint(&self) -> anyhow::Result<AgentEndpoint> {
        AgentEndpoint::new(&self.agent, self.agent_ca.as_deref())
    }
}

#[derive(Clone)]
pub struct AgentEndpoint {
    /// `host:port`, as given with --agent.
    address: String,
    /// Set for the TLS port: trusts the agent's CA alone.
    tls: Option<Arc<AgentTrust>>,
}

/// The agent's CA file and the client that trusts what it last held.
struct AgentTrust {
    file: PathBuf,
    current: Mutex<(String, HttpClient)>,
}

impl AgentTrust {
    fn load(file: &Path) -> anyhow::Result<(String, HttpClient)> {
        let pem =
            std::fs::read_to_string(file).with_context(|| format!("cannot read --agent-ca {}", file.display()))?;
        let roots = trellis_pki::root_store(&pem)
            .with_context(|| format!("--agent-ca {}: not a PEM CA certificate", file.display()))?;
        let client = HttpClient::with_roots(roots).checking_server_as(crate::xds_tls::REGISTRY_SERVER_NAME);
        Ok((pem, client))
    }

    /// The client for the file as it is now; the last good one when it cannot be read.
    fn client(&self) -> HttpClient {
        let mut current = self.current.lock().expect("agent trust lock");
        match std::fs::read_to_string(&self.file) {
            Ok(pem) if pem != current.0 => match Self::load(&self.file) {
                Ok(loaded) => {
                    tracing::info!(file = %self.file.display(), "the agent's CA changed: trusting the new one");
                    *current = loaded;
                }
                Err(error) => tracing::warn!(error = %format!("{error:#}"), "keeping the agent's previous CA"),
            },
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(file = %self.file.display(), %error, "cannot read --agent-ca; keeping the CA read before")
            }
        }
        current.1.clone()
    }
}

impl AgentEndpoint {
    /// The agent at `address`, over TLS when `ca_file` (the agent's CA, PEM) is given.
    pub fn new(address: &str, ca_file: Option<&Path>) -> anyhow::Result<AgentEndpoint> {
        let tls = match ca_file {
            Some(file) => Some(Arc::new(AgentTrust {
                file: file.to_path_buf(),
                current: Mutex::new(AgentTrust::load(file)?),
            })),
            None => None,
        };
        Ok(AgentEndpoint {
            address: address.to_string(),
            tls,
        })
    }

    /// Whether answers come over TLS checked with the agent's CA: what they say (the xDS CA
    /// above all) then comes from the agent, not from whoever holds its port.
    pub fn is_authenticated(&self) -> bool {
        self.tls.is_some()
    }

    /// A plain-HTTP agent on this host (tests, local tools).
    pub fn local(address: &str) -> AgentEndpoint {
        AgentEndpoint {
            address: address.to_string(),
            tls: None,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The host of --agent (a name or an address, without brackets or port).
    pub fn host(&self) -> &str {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Where to reach a server of the agent that it says listens on `address`: at the host
    /// --agent names when it listens on every address (0.0.0.0, `::`), as in a pod, where the
    /// unspecified address would mean the proxy's own pod.
    pub fn reachable(&self, address: &str) -> String {
        match address.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => self.host().to_string(),
            _ => address.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.address)
    }

    /// One request to `path` (starting with `/`).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
        timeout: Duration,
    ) -> anyhow::Result<httpc::Response> {
        let url = self.url(path);
        match &self.tls {
            Some(trust) => trust.client().request(method, &url, None, headers, body, timeout).await,
            None => httpc::request(method, &url, None, headers, body, timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_every_address_is_reached_where_the_agent_is() {
        let agent = AgentEndpoint::local("trellis-agent.trellis.svc:9978");
        assert_eq!(agent.reachable("0.0.0.0"), "trellis-agent.trellis.svc");
        assert_eq!(agent.reachable("::"), "trellis-agent.trellis.svc");
        assert_eq!(agent.reachable("127.0.0.1"), "127.0.0.1");
        assert_eq!(AgentEndpoint::local("[::1]:9977").reachable("::"), "::1");
    }
}
