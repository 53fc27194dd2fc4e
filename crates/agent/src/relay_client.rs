//! The agent's side of the relay: connect, say hello, report discovery, apply configs, and
//! reconnect with backoff whenever the stream breaks.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tracing::Instrument;
use trellis_model::ClusterConfig;
use trellis_relay::delivery::MAX_MESSAGE_BYTES;
use trellis_relay::{AgentMessage, Hello, RelayClient, server_message};

use super::{Agent, AppliedConfig};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How long registrations are gathered before discovery goes up: each upload costs the
/// management server a translation and every proxy a push, so a thousand sidecars starting
/// together cost a few uploads rather than a thousand.
const DISCOVERY_BATCH: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The last config received, if a cache file exists and belongs to this cluster.
pub fn load_cache(path: &Path, cluster: &str) -> Option<ClusterConfig> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<ClusterConfig>(&bytes) {
        Ok(config) if config.cluster == cluster => Some(config),
        Ok(config) => {
            tracing::warn!(cache = %path.display(), cached_cluster = %config.cluster, "ignoring config cache of another cluster");
            None
        }
        Err(error) => {
            tracing::warn!(cache = %path.display(), %error, "ignoring unreadable config cache");
            None
        }
    }
}

/// The whole error chain, with tonic's statuses spelled out (their Display hides the message).
fn describe(error: &anyhow::Error) -> String {
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        return format!("{:?}: {}", status.code(), status.message());
    }
    format!("{error:#}")
}

/// Writes atomically (temp file + rename) so a crash never leaves half a cache; owner-only, as
/// the config can hold add-on secrets (OIDC client secrets).
fn store_cache(path: &Path, config: &ClusterConfig) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    // A leftover temp file would keep its old mode: start from none.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(config).expect("IR serializes"))?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

pub async fn run(agent: Arc<Agent>, mgmt: String) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let span = tracing::info_span!("relay", cluster = %agent.cluster, mgmt = %mgmt);
        match session(&agent, &mgmt).instrument(span).await {
            Ok(()) => {
                tracing::warn!(mgmt = %mgmt, "relay stream closed by the management server; reconnecting");
                backoff = MIN_BACKOFF;
            }
            Err(error) => {
                tracing::warn!(mgmt = %mgmt, error = %describe(&error), retry_in = ?backoff, "relay unavailable; serving the last config")
            }
        }
        agent.relay_connected.store(false, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(agent: &Arc<Agent>, mgmt: &str) -> anyhow::Result<()> {
    if let trellis_relay::client::RelayCredentials::Tls(tls) = &*agent.credentials
        && !tls.has_identity()
    {
        tls.register(mgmt, &agent.cluster).await?;
    }
    let channel = agent.credentials.channel(mgmt).await?;
    let mut client = RelayClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<AgentMessage>(8);
    let last_applied = agent.receiver.lock().expect("receiver lock").version().to_string();
    tx.send(AgentMessage::hello(Hello {
        cluster: agent.cluster.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        last_applied_version: last_applied,
        registry_address: agent.registry_addr.to_string(),
    }))
    .await?;
    let mut registry_changes = agent.registry.changes.subscribe();
    registry_changes.mark_changed();
    let mut frame_changes = agent.registry.frame_changes.subscribe();
    let mut incoming = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    agent.relay_connected.store(true, Ordering::Relaxed);
    tracing::info!("relay connected");

    let mut reporter = trellis_relay::discovery_report::DiscoveryReporter::default();
    let mut last_states = None;
    // When set, discovery goes up at that instant with every registry change until then.
    let mut upload_at: Option<tokio::time::Instant> = None;
    let mut report_tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = report_tick.tick() => {
                let states = agent.snapshots.states(&agent.board);
                if last_states.as_ref() != Some(&states) {
                    let payload = serde_json::to_vec(&states).expect("states serialize");
                    tx.send(AgentMessage { body: Some(trellis_relay::agent_message::Body::Proxies(trellis_relay::ProxyReport { payload })) }).await?;
                    last_states = Some(states);
                }
            }
            changed = registry_changes.changed() => {
                changed?;
                registry_changes.borrow_and_update();
                upload_at.get_or_insert_with(|| tokio::time::Instant::now() + DISCOVERY_BATCH);
            }
            changed = frame_changes.changed() => {
                changed?;
                frame_changes.borrow_and_update();
                // A gateway or an add-on: other proxies' config waits on it, so it goes now.
                upload_at = Some(tokio::time::Instant::now());
            }
            () = sleep_until(upload_at), if upload_at.is_some() => {
                upload_at = None;
                let mut discovery = agent.registry.discovery(&agent.cluster);
                if agent.locality_given || discovery.locality.is_none() {
                    discovery.locality = Some(agent.locality.clone());
                }
                let workloads = discovery.workloads.len();
                // Whole on a new stream, then only the workloads that changed.
                let Some(report) = reporter.report(discovery) else { continue };
                tx.send(report).await?;
                tracing::debug!(workloads, "discovery sent");
            }
            message = incoming.next() => {
                let Some(message) = message.transpose()? else { return Ok(()) };
                let delta = match message.body {
                    Some(server_message::Body::Delta(delta)) => delta,
                    Some(server_message::Body::MeshTrust(trust)) => {
                        crate::mesh_identity::on_mesh_trust(agent, &trust);
                        continue;
                    }
                    Some(server_message::Body::ProxyConfigRequest(request)) => {
                        // Off the stream's loop: a slow Envoy must not hold config up.
                        let (agent, tx) = (agent.clone(), tx.clone());
                        tokio::spawn(async move {
                            let reply = crate::proxy_config::answer(&agent, request).await;
                            let _ = tx.send(reply).await;
                        });
                        continue;
                    }
                    None => continue,
                };
                let version = delta.version.clone();
                let (upserts, removes) = (delta.upserts.len(), delta.removes.len());
                // One span for the config once its last part is in, continuing the push's trace.
                let span = if delta.more {
                    tracing::Span::none()
                } else {
                    tracing::info_span!("receive_config", %version)
                };
                trellis_support::trace_context::continue_trace(&span, &delta.traceparent);
                let error = match span.in_scope(|| apply_delta(agent, delta)) {
                    Ok(false) => continue,
                    Ok(true) => {
                        tracing::info!(%version, upserts, removes, "config applied");
                        None
                    }
                    Err(error) => {
                        tracing::warn!(%version, %error, "config rejected; keeping the last good one");
                        Some(error)
                    }
                };
                tx.send(AgentMessage::ack(version, error.unwrap_or_default())).instrument(span).await?;
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Takes one delta message: `Ok(true)` when a config was completed and installed, `Ok(false)`
/// when more of it is to come, `Err(reason)` when it is refused (the last good one stays).
fn apply_delta(agent: &Agent, delta: trellis_relay::ConfigDelta) -> Result<bool, String> {
    let mut receiver = agent.receiver.lock().expect("receiver lock");
    let check = |config: &ClusterConfig| {
        if config.cluster == agent.cluster {
            Ok(())
        } else {
            Err(format!(
                "config is for cluster {:?}, this agent serves {:?}",
                config.cluster, agent.cluster
            ))
        }
    };
    let Some(config) = receiver.receive(delta, check)? else {
        return Ok(false);
    };
    let applied = AppliedConfig {
        version: receiver.version().to_string(),
        config,
        traceparent: trellis_support::trace_context::traceparent(&tracing::Span::current()),
    };
    agent.config.send_replace(Some(Arc::new(applied)));
    Ok(true)
}

/// Writes each config the agent takes to its cache, off the relay's path: a large config's
/// write and fsync do not delay its acknowledgement, and a burst of changes costs one write.
pub async fn keep_cache(agent: Arc<Agent>) {
    let mut changes = agent.config.subscribe();
    changes.borrow_and_update();
    while changes.changed().await.is_ok() {
        let Some(applied) = changes.borrow_and_update().clone() else {
            continue;
        };
        let path = agent.cache_path.clone();
        let written = tokio::task::spawn_blocking(move || store_cache(&path, &applied.config)).await;
        if let Ok(Err(error)) = written {
            // Still served: losing the cache only matters if the agent restarts while mgmt is down.
            tracing::error!(%error, cache = %agent.cache_path.display(), "cannot write config cache");
        }
    }
}
