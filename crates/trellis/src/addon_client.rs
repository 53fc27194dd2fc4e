//! What both add-ons do with their cluster's agent: register (so that policies' server references
//! resolve to them, refreshed like a proxy's registration) and long-poll their config.

use std::time::Duration;

use serde::de::DeserializeOwned;
use trellis_model::discovery::AddonInstance;

use crate::agent::ProxyRegistration;
use crate::httpc;

/// How often the registration is refreshed: well inside the agent's TTL.
const REFRESH: Duration = Duration::from_secs(5);

/// Where an add-on registers and what it announces.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentLinkArgs {
    /// The cluster agent's local API (`host:port`): register there and load the policies' config
    /// from it. Without it the add-on serves only what its config files say.
    #[arg(long)]
    pub agent: Option<String>,
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

/// Registers and keeps the registration fresh until the task is dropped; the agent forgets it
/// one TTL after the add-on stops.
pub async fn keep_registered(agent: String, instance: AddonInstance) {
    let id = format!("addon~{}.{}~{}", instance.name, instance.namespace, instance.port);
    let url = format!("http://{agent}/v1/proxies/{id}");
    let body = serde_json::to_vec(&ProxyRegistration::AddOn(instance)).expect("registration serializes");
    let mut registered = false;
    loop {
        let answer = httpc::request(
            "PUT",
            &url,
            None,
            &[],
            Some(("application/json", body.clone())),
            Duration::from_secs(2),
        )
        .await;
        match answer {
            Ok(response) if response.status == 200 => {
                if !registered {
                    tracing::info!(agent, id, "registered with the agent");
                }
                registered = true;
            }
            Ok(response) => tracing::warn!(
                agent,
                status = response.status,
                body = response.body,
                "agent refused the registration"
            ),
            Err(error) => tracing::warn!(agent, %error, "cannot reach the agent to register; retrying"),
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// Long-polls `GET /v1/addons/{kind}` and hands every new document to `apply`; keeps the last
/// good one when the agent is unreachable or a document does not parse.
pub async fn watch_config<T: DeserializeOwned>(agent: String, kind: &'static str, mut apply: impl FnMut(T)) {
    let mut version = String::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        let url = format!("http://{agent}/v1/addons/{kind}?version={version}");
        match httpc::get(&url, crate::agent::addon_config::LONG_POLL + Duration::from_secs(5)).await {
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
