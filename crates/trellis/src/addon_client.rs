//! What both add-ons do with their cluster's agent: register (so that policies' server references
//! resolve to them, refreshed like a proxy's registration) and long-poll their config.
//!
//! ```text
//!  keep_registered: PUT /v1/proxies/addon~<name>.<ns>~<port> + role secret ──▶ token ──┐
//!  watch_config:    GET /v1/addons/<kind>, Authorization: Bearer <token>  ◀────────────┘
//! ```
//!
//! The role secret proves the add-on may take the role (it will see every auth decision, and
//! OIDC client secrets); the token, held in memory only, is what the config is served to. A
//! restarted add-on gets a new token with the secret.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use trellis_model::discovery::AddonInstance;

use crate::agent::role_secret::ClientSecret;
use crate::agent::{AddonKind, AddonRegistration, ProxyRegistration};
use crate::httpc;
use crate::proxy::{AgentRegistration, PutOutcome};

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
    pub fn secret(&self) -> ClientSecret {
        ClientSecret {
            file: self.role_secret_file.clone(),
        }
    }
}

/// Registers and keeps the registration fresh until the task is dropped, publishing its token
/// in `credential`; the agent forgets it one TTL after the add-on stops.
pub async fn keep_registered(
    agent: String,
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
                    tracing::info!(agent, id, "registered with the agent");
                }
                registered = true;
            }
            Ok(PutOutcome::Refused { status, message, .. }) => {
                registered = false;
                tracing::warn!(agent, status, error = message, "agent refused the registration")
            }
            Err(error) => {
                tracing::warn!(agent, error = %format!("{error:#}"), "cannot register with the agent; retrying")
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
    agent: String,
    kind: AddonKind,
    credential: AgentCredential,
    mut apply: impl FnMut(T),
) {
    let kind = kind.as_str();
    let mut version = String::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        let url = format!("http://{agent}/v1/addons/{kind}?version={version}");
        let authorization = format!("Bearer {}", credential.current().await);
        let answer = httpc::request(
            "GET",
            &url,
            None,
            &[("authorization", &authorization)],
            None,
            crate::agent::addon_config::LONG_POLL + Duration::from_secs(5),
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
