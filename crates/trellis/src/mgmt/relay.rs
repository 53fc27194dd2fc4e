//! The relay server: one stream per agent; discovery up, that cluster's config down.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use trellis_model::ClusterDiscovery;
use trellis_relay::{AgentMessage, ServerMessage, agent_message};

use super::Mgmt;
use super::metrics::ClusterLabel;
use super::state::unix_now;

pub struct RelayService {
    mgmt: Arc<Mgmt>,
}

impl RelayService {
    pub fn new(mgmt: Arc<Mgmt>) -> Self {
        RelayService { mgmt }
    }
}

type ConfigStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl trellis_relay::Relay for RelayService {
    type ConnectStream = ConfigStream;

    async fn connect(&self, request: Request<Streaming<AgentMessage>>) -> Result<Response<ConfigStream>, Status> {
        let peer = request.remote_addr();
        let mut incoming = request.into_inner();
        let hello = match incoming.next().await {
            Some(Ok(AgentMessage {
                body: Some(agent_message::Body::Hello(hello)),
            })) => hello,
            Some(Err(status)) => return Err(status),
            _ => return Err(Status::invalid_argument("the first relay message must be Hello")),
        };
        if hello.cluster.is_empty() {
            return Err(Status::invalid_argument(
                "Hello.cluster is empty: start the agent with --cluster NAME",
            ));
        }
        let (tx, rx) = mpsc::channel(8);
        let span = tracing::info_span!("relay_stream", cluster = %hello.cluster);
        tokio::spawn(serve_agent(self.mgmt.clone(), hello, incoming, tx).instrument(span));
        tracing::debug!(?peer, "relay stream accepted");
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

async fn serve_agent(
    mgmt: Arc<Mgmt>,
    hello: trellis_relay::Hello,
    mut incoming: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<ServerMessage, Status>>,
) {
    let cluster = hello.cluster.clone();
    let label = ClusterLabel {
        cluster: cluster.clone(),
    };
    mgmt.metrics.agents_connected.get_or_create(&label).inc();
    mgmt.update_agent(&cluster, |a| {
        a.connected = true;
        a.since = unix_now();
        a.acked_version = hello.last_applied_version.clone();
    });
    tracing::info!(agent_version = %hello.agent_version, last_applied = %hello.last_applied_version, "agent connected");

    let mut translations = mgmt.subscribe();
    // The agent tells us what it runs; an unchanged config is not sent again after a reconnect.
    let mut sent_version = hello.last_applied_version.clone();
    translations.mark_changed();
    loop {
        tokio::select! {
            changed = translations.changed() => {
                if changed.is_err() {
                    break;
                }
                let translation = translations.borrow_and_update().clone();
                let Some(config) = translation.clusters.get(&cluster) else { continue };
                let version = format!("{:016x}", config.content_hash());
                if version == sent_version {
                    continue;
                }
                let payload = serde_json::to_vec(config).expect("IR serializes");
                if tx.send(Ok(ServerMessage::config(version.clone(), payload))).await.is_err() {
                    break;
                }
                tracing::info!(%version, "config sent");
                mgmt.metrics.config_pushes_total.get_or_create(&label).inc();
                mgmt.update_agent(&cluster, |a| a.sent_version = version.clone());
                sent_version = version;
            }
            message = incoming.next() => {
                match message {
                    Some(Ok(message)) => handle_agent_message(&mgmt, &cluster, &label, message),
                    Some(Err(status)) => {
                        tracing::info!(%status, "relay stream ended with an error");
                        break;
                    }
                    None => break,
                }
            }
        }
    }
    mgmt.metrics.agents_connected.get_or_create(&label).dec();
    mgmt.update_agent(&cluster, |a| {
        a.connected = false;
        a.since = unix_now();
    });
    tracing::info!("agent disconnected");
}

fn handle_agent_message(mgmt: &Mgmt, cluster: &str, label: &ClusterLabel, message: AgentMessage) {
    match message.body {
        Some(agent_message::Body::Discovery(discovery)) => {
            match serde_json::from_slice::<ClusterDiscovery>(&discovery.payload) {
                // An agent speaks for its own cluster only, whatever the payload claims.
                Ok(mut report) => {
                    report.cluster = cluster.to_string();
                    tracing::debug!(version = %discovery.version, workloads = report.workloads.len(), "discovery received");
                    if let Err(error) = mgmt.report_discovery(report) {
                        tracing::error!(%error, "cannot store discovery");
                    }
                }
                Err(error) => tracing::warn!(%error, "ignoring malformed discovery"),
            }
        }
        Some(agent_message::Body::Ack(ack)) if ack.error.is_empty() => {
            tracing::debug!(version = %ack.version, "config acknowledged");
            mgmt.update_agent(cluster, |a| {
                a.acked_version = ack.version;
                a.nack = None;
            });
        }
        Some(agent_message::Body::Ack(nack)) => {
            tracing::warn!(version = %nack.version, error = %nack.error, "agent rejected config");
            mgmt.metrics.config_nacks_total.get_or_create(label).inc();
            mgmt.update_agent(cluster, |a| a.nack = Some(nack.error));
        }
        Some(agent_message::Body::Hello(_)) | None => tracing::warn!("ignoring unexpected relay message"),
    }
}
