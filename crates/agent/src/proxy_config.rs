//! `trellis proxy-config`, the agent's part: the management server asks over the relay for one
//! proxy's live Envoy config, and the agent reads it from that Envoy's admin on loopback (the
//! port the proxy registered with). Nothing else reaches that admin port: the operator's request
//! is authenticated and authorized by the management server, and the relay is mutual TLS.

use std::time::Duration;

use trellis_relay::{AgentMessage, ProxyConfigReply, ProxyConfigRequest, agent_message};

use super::Agent;

/// Larger dumps are refused rather than relayed: they would crowd the relay stream (whose
/// messages stop at 16 MiB); such an Envoy is better read on its host.
const MAX_DUMP_BYTES: usize = 8 * 1024 * 1024;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn answer(agent: &Agent, request: ProxyConfigRequest) -> AgentMessage {
    let result = config_dump(agent, &request.proxy_id).await;
    if let Err(error) = &result {
        tracing::info!(proxy.id = %request.proxy_id.chars().take(64).collect::<String>(), %error, "proxy config not read");
    }
    let (config_dump, error) = match result {
        Ok(dump) => (dump, String::new()),
        Err(error) => (Vec::new(), error),
    };
    AgentMessage {
        body: Some(agent_message::Body::ProxyConfig(ProxyConfigReply {
            request_id: request.request_id,
            config_dump,
            error,
        })),
    }
}

async fn config_dump(agent: &Agent, id: &str) -> Result<Vec<u8>, String> {
    let port = agent.registry.admin_port(id).ok_or_else(|| {
        format!(
            "no proxy {id:?} is registered with this cluster's agent, or it did not say where its Envoy admin listens"
        )
    })?;
    let url = format!("http://127.0.0.1:{port}/config_dump");
    let response = trellis_support::httpc::get(&url, ADMIN_TIMEOUT)
        .await
        .map_err(|e| format!("the proxy's Envoy admin did not answer: {e:#}"))?;
    if response.status != 200 {
        return Err(format!("the proxy's Envoy admin answered HTTP {}", response.status));
    }
    if response.body.len() > MAX_DUMP_BYTES {
        return Err(format!(
            "the config dump is {} bytes, over the {MAX_DUMP_BYTES}-byte limit: read it on the proxy's host",
            response.body.len()
        ));
    }
    Ok(response.body.into_bytes())
}
