//! The local registration API: proxies (sidecars and gateways) announce themselves and refresh
//! their registration; a registration not refreshed within [`TTL`] expires. After an agent
//! restart the proxies' next refresh rebuilds the registry, no state file needed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use trellis_model::discovery::AddonInstance;
use trellis_model::{ClusterDiscovery, GatewayAddress, Workload};

use super::Agent;

/// How long a registration lives without a refresh. Proxies refresh every few seconds.
pub const TTL: Duration = Duration::from_secs(30);

/// What a proxy sends when it registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ProxyRegistration {
    /// A workload's sidecar.
    #[serde(rename_all = "camelCase")]
    Sidecar { workload: Workload, outbound_port: u16 },
    /// The cluster's east-west gateway.
    #[serde(rename_all = "camelCase")]
    EastWestGateway(RegisteredGateway),
    /// An ingress gateway: serves the VirtualGateways whose workload selector matches its labels.
    #[serde(rename_all = "camelCase")]
    IngressGateway(IngressRegistration),
    /// An add-on server (`trellis ext-auth`, `trellis rate-limiter`): the policies' server
    /// references resolve to it by namespace and name, and it loads its config from this agent.
    #[serde(rename_all = "camelCase")]
    AddOn(AddonInstance),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRegistration {
    pub listen_address: String,
    pub labels: BTreeMap<String, String>,
    /// Its mesh identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredGateway {
    /// Where the gateway listens.
    pub listen_address: String,
    pub port: u16,
    /// Where other clusters reach it (may differ behind NAT or a load balancer).
    pub public_address: GatewayAddress,
}

pub struct Registry {
    proxies: Mutex<BTreeMap<String, (ProxyRegistration, Instant)>>,
    /// Bumped on every change of the set of registrations.
    pub changes: watch::Sender<u64>,
    xds_addr: SocketAddr,
}

impl Registry {
    pub fn new(xds_addr: SocketAddr) -> Self {
        Registry {
            proxies: Mutex::new(BTreeMap::new()),
            changes: watch::Sender::new(0),
            xds_addr,
        }
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn register(&self, id: &str, registration: ProxyRegistration) {
        let mut proxies = self.proxies.lock().expect("registry lock");
        let changed = proxies.get(id).map(|(r, _)| r) != Some(&registration);
        proxies.insert(id.to_string(), (registration, Instant::now() + TTL));
        drop(proxies);
        if changed {
            tracing::info!(proxy.id = id, "proxy registered");
            self.bump();
        }
    }

    pub fn deregister(&self, id: &str) -> bool {
        let removed = self.proxies.lock().expect("registry lock").remove(id).is_some();
        if removed {
            tracing::info!(proxy.id = id, "proxy deregistered");
            self.bump();
        }
        removed
    }

    pub fn get(&self, id: &str) -> Option<ProxyRegistration> {
        self.proxies
            .lock()
            .expect("registry lock")
            .get(id)
            .map(|(r, _)| r.clone())
    }

    pub fn all(&self) -> BTreeMap<String, ProxyRegistration> {
        self.proxies
            .lock()
            .expect("registry lock")
            .iter()
            .map(|(k, (r, _))| (k.clone(), r.clone()))
            .collect()
    }

    fn expire(&self, now: Instant) {
        let mut proxies = self.proxies.lock().expect("registry lock");
        let before = proxies.len();
        proxies.retain(|id, (_, expires)| {
            let keep = *expires > now;
            if !keep {
                tracing::warn!(proxy.id = %id, "registration expired: the proxy stopped refreshing it");
            }
            keep
        });
        let changed = proxies.len() != before;
        drop(proxies);
        if changed {
            self.bump();
        }
    }

    /// This cluster as the management server should see it.
    pub fn discovery(&self, cluster: &str) -> ClusterDiscovery {
        let mut discovery = ClusterDiscovery {
            cluster: cluster.to_string(),
            ..Default::default()
        };
        for registration in self.all().into_values() {
            match registration {
                ProxyRegistration::Sidecar { workload, .. } => discovery.workloads.push(workload),
                ProxyRegistration::IngressGateway(_) => {}
                ProxyRegistration::AddOn(addon) => discovery.addons.push(addon),
                ProxyRegistration::EastWestGateway(gateway) => {
                    // With several gateway replicas, one stable address wins.
                    if discovery
                        .east_west_gateway
                        .as_ref()
                        .is_none_or(|g| gateway.public_address < *g)
                    {
                        discovery.east_west_gateway = Some(gateway.public_address);
                    }
                }
            }
        }
        discovery.normalize();
        discovery
    }
}

pub async fn expire_loop(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        agent.registry.expire(Instant::now());
    }
}

pub fn router(
    agent: Arc<Agent>,
    board: trellis_xds::ProxyStatusBoard,
    metrics: Arc<prometheus_client::registry::Registry>,
) -> Router {
    Router::new()
        .route("/v1/proxies", get(list))
        .route("/v1/proxies/{id}", put(register).delete(deregister))
        .route("/v1/status", get(status))
        .route("/v1/addons/{kind}", get(super::addon_config::serve))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut text = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut text, &metrics);
                    text
                }
            }),
        )
        .with_state((agent, board))
}

type AppState = State<(Arc<Agent>, trellis_xds::ProxyStatusBoard)>;

async fn register(
    State((agent, _)): AppState,
    Path(id): Path<String>,
    Json(registration): Json<ProxyRegistration>,
) -> Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)> {
    if let ProxyRegistration::Sidecar { workload, .. } = &registration
        && (workload.name.is_empty()
            || workload.namespace.is_empty()
            || workload.service.is_empty()
            || workload.address.is_empty())
    {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "workload name, namespace, service and address are required"})),
        ));
    }
    agent.registry.register(&id, registration);
    let xds = agent.registry.xds_addr;
    Ok(Json(
        json!({"cluster": agent.cluster, "xdsAddress": xds.ip().to_string(), "xdsPort": xds.port()}),
    ))
}

async fn deregister(State((agent, _)): AppState, Path(id): Path<String>) -> StatusCode {
    if agent.registry.deregister(&id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn list(State((agent, _)): AppState) -> Json<serde_json::Value> {
    Json(json!({"proxies": agent.registry.all()}))
}

async fn status(State((agent, board)): AppState) -> Json<serde_json::Value> {
    let config = agent.config.borrow().clone();
    let proxies: Vec<_> = board
        .snapshot()
        .into_iter()
        .map(|p| {
            let types: BTreeMap<_, _> = p
                .types
                .iter()
                .map(|(t, s)| {
                    (
                        t.rsplit('.').next().unwrap_or(t).to_string(),
                        json!({"sent": s.last_sent_version, "acked": s.last_acked_version, "nack": s.last_nack}),
                    )
                })
                .collect();
            json!({"nodeId": p.node_id, "types": types})
        })
        .collect();
    Json(json!({
        "cluster": agent.cluster,
        "relayConnected": agent.relay_connected.load(std::sync::atomic::Ordering::Relaxed),
        "configVersion": config.map(|c| format!("{:016x}", c.content_hash())),
        "connectedProxies": proxies,
    }))
}
