//! Where a proxy, gateway or add-on reaches its agent's registration API: the plain port on
//! this host, or with `--agent-ca` the agent's TLS port (`--registry-tls-addr`), its certificate
//! checked against exactly that CA for `registry.trellis-agent`, whatever address the agent is
//! reached at (a Service's, a pod's).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use trellis_support::httpc::{self, HttpClient};

#[derive(Clone)]
pub struct AgentEndpoint {
    /// `host:port`, as given with --agent.
    address: String,
    /// Set for the TLS port: trusts the agent's CA alone.
    tls: Option<HttpClient>,
}

impl AgentEndpoint {
    /// The agent at `address`, over TLS when `ca_file` (the agent's CA, PEM) is given.
    pub fn new(address: &str, ca_file: Option<&Path>) -> anyhow::Result<AgentEndpoint> {
        let tls = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| format!("cannot read --agent-ca {}", path.display()))?;
                let roots = trellis_pki::root_store(&String::from_utf8_lossy(&pem))
                    .with_context(|| format!("--agent-ca {}: not a PEM CA certificate", path.display()))?;
                Some(HttpClient::with_roots(roots).checking_server_as(crate::xds_tls::REGISTRY_SERVER_NAME))
            }
            None => None,
        };
        Ok(AgentEndpoint {
            address: address.to_string(),
            tls,
        })
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
            Some(client) => client.request(method, &url, None, headers, body, timeout).await,
            None => httpc::request(method, &url, None, headers, body, timeout).await,
        }
    }
}
