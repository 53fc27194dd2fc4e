//! All the simulated agents of a scenario: registering them, and waiting until the ones that
//! should have seen a change did.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::parallel;
use super::process::Mgmt;
use super::sim_agent::{Credentials, SimAgent, register};
use super::waiting;
use trellis_model::ClusterDiscovery;

/// Registrations in flight at once: the relay admits 32 connections without a client
/// certificate and 64 handshakes in progress (mgmt/tls.rs); staying under both measures the
/// server, not its flood protection.
const REGISTRATION_CONCURRENCY: usize = 16;

pub struct Fleet {
    pub agents: Vec<SimAgent>,
    next_marker: AtomicU32,
}

/// The loopback address agent `n` connects from (127.1.0.1, 127.1.0.2, ...).
fn local_address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8))
}

/// Records the cluster through the API (which returns a one-time token) and registers its agent
/// on the relay, retrying a refused connection (the relay's limits) with the same token.
async fn register_cluster(
    api: trellis_cli::api_client::ApiClient,
    relay: String,
    n: usize,
    cluster: String,
) -> anyhow::Result<Credentials> {
    let response = api
        .request(
            "POST",
            &format!("/api/v1/clusters/{cluster}/register"),
            Some(("application/json", Vec::new())),
        )
        .await?;
    anyhow::ensure!(
        response.status == 200,
        "register {cluster}: HTTP {}: {}",
        response.status,
        response.body
    );
    let body: serde_json::Value = serde_json::from_str(&response.body)?;
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_string();
    let mut last = None;
    for attempt in 0..5 {
        match register(
            &relay,
            &text("relayAuthority"),
            &text("rootCaPem"),
            &cluster,
            &text("token"),
            local_address(n),
        )
        .await
        {
            Ok(credentials) => return Ok(credentials),
            // A refusal by the server (token used, ...) will not change; a refused connection may.
            Err(error) if error.to_string().contains("registration refused") => return Err(error),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    Err(last.expect("an attempt failed"))
}

impl Fleet {
    /// Registers one agent per discovery and starts them all.
    pub async fn start(mgmt: &Mgmt, discoveries: Vec<ClusterDiscovery>) -> anyhow::Result<Fleet> {
        let api = mgmt.api();
        let registered = parallel::bounded(discoveries.len(), REGISTRATION_CONCURRENCY, |n| {
            register_cluster(api.clone(), mgmt.relay.clone(), n, discoveries[n].cluster.clone())
        })
        .await;
        let mut agents = Vec::new();
        for (result, discovery) in registered.into_iter().zip(discoveries) {
            agents.push(SimAgent::start(result?, discovery));
        }
        Ok(Fleet {
            agents,
            next_marker: AtomicU32::new(0),
        })
    }

    /// Makes every agent look for `marker` in the configs it receives from now on.
    pub fn watch(&self, marker: &str) -> u32 {
        let id = self.next_marker.fetch_add(1, Ordering::Relaxed);
        for agent in &self.agents {
            agent.lock().markers.push((id, marker.to_string()));
        }
        id
    }

    pub fn unwatch(&self, id: u32) {
        for agent in &self.agents {
            agent.lock().markers.retain(|(m, _)| *m != id);
        }
    }

    /// When agent `n` first received a config with marker `id` at or after `since`.
    pub fn seen_at(&self, n: usize, id: u32, since: Instant) -> Option<Instant> {
        let state = self.agents[n].lock();
        state
            .received
            .iter()
            .find(|r| r.at >= since && r.found.contains(&id))
            .map(|r| r.at)
    }

    /// Relay bytes the agents received between `since` and `until`, per agent.
    pub fn bytes_per_agent(&self, since: Instant, until: Instant) -> f64 {
        let total: usize = self
            .agents
            .iter()
            .map(|a| {
                a.lock()
                    .received
                    .iter()
                    .filter(|r| r.at >= since && r.at <= until)
                    .map(|r| r.bytes)
                    .sum::<usize>()
            })
            .sum();
        total as f64 / self.agents.len().max(1) as f64
    }

    /// Waits until each of agents `which` has received a config with marker `id` after `since`
    /// (see [`waiting::wait`]).
    pub async fn wait(
        &self,
        id: u32,
        which: &[usize],
        since: Instant,
        limit: Duration,
    ) -> Result<Vec<Duration>, String> {
        waiting::wait(self, id, which, since, limit).await
    }
}

impl waiting::Watched for Fleet {
    fn seen_at(&self, n: usize, id: u32, since: Instant) -> Option<Instant> {
        Fleet::seen_at(self, n, id, since)
    }

    fn failures_since(&self, n: usize, since: Instant) -> Vec<(Instant, String)> {
        waiting::failures_since(&self.agents[n].lock().failures, since)
    }

    fn name(&self, n: usize) -> String {
        self.agents[n].lock().cluster.clone()
    }
}
