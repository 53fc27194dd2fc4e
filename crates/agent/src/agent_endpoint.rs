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
            Some(client) => client.request(method, &url, None, headers, body, timeout).await,
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
