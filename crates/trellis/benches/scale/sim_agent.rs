//! A simulated agent: what a real `trellis agent` does on the relay, without proxies behind it.
//!
//! It registers like an agent (one-time token + CSR over server-authenticated TLS), then keeps
//! one mTLS `Connect` stream open: `Hello`, its `Discovery` (again whenever the benchmark changes
//! it), and an `Ack` for every config. It reconnects with the agent's backoff when the stream
//! breaks, and reports the version it last acknowledged in `Hello`, as an agent with its cache does.
//!
//! Configs come as section deltas, a large one cut into several messages (`more` on all but the
//! last); like the agent it acknowledges a config once its last message arrived. It does not
//! assemble, check or apply them (a real agent patches its sections, decodes the JSON, writes its
//! cache and builds Envoy snapshots): the benchmark measures the management server and the relay,
//! and a thousand of these share the benchmark's two cores. It keeps the agent's limit on a
//! received message (`delivery::MAX_MESSAGE_BYTES`).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use trellis_model::ClusterDiscovery;
use trellis_relay::{
    Ack, AgentMessage, Hello, RegisterRequest, RelayClient, ServerMessage, agent_message, server_message,
};

/// The real agent's reconnect backoff (agent/relay_client.rs).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One config change as it arrived, complete (all its messages).
pub struct Received {
    /// When its last message arrived.
    pub at: Instant,
    /// Size of its relay messages, before HTTP/2 and TLS framing.
    pub bytes: usize,
    /// Ids of the markers (see [`SimAgentState::markers`]) its sections contain.
    pub found: Vec<u32>,
}

/// What a simulated agent has seen; the benchmark reads it while the agent runs.
pub struct SimAgentState {
    pub cluster: String,
    /// Substrings the benchmark is waiting for, by id: each config is searched for these.
    pub markers: Vec<(u32, String)>,
    pub received: Vec<Received>,
    /// Version of the last config acknowledged: what `Hello` says after a reconnect.
    pub acked_version: String,
    /// The change being gathered: its messages so far, their bytes and markers.
    pub pending: Option<Received>,
    /// When and why relay sessions ended (a message over the size limit ends one, for example).
    pub failures: Vec<(Instant, String)>,
}

/// Handles one message from the management server: records when a config change completed,
/// its size and the markers it carries; answers with the acknowledgement to send, if any.
///
/// All handling of server messages is here, so a change of the relay's server-to-agent message
/// is adapted in this one function.
pub fn on_server_message(state: &mut SimAgentState, msg: ServerMessage) -> Option<Ack> {
    let at = Instant::now();
    let bytes = msg.encoded_len();
    let Some(server_message::Body::Delta(delta)) = msg.body else {
        return None;
    };
    let mut found: Vec<u32> = Vec::new();
    for section in &delta.upserts {
        // Sections are JSON, so this borrows; a marker is plain ASCII text of the IR.
        let text = String::from_utf8_lossy(&section.payload);
        found.extend(
            state
                .markers
                .iter()
                .filter(|(_, marker)| text.contains(marker.as_str()))
                .map(|(id, _)| *id),
        );
    }
    let mut change = state.pending.take().unwrap_or(Received {
        at,
        bytes: 0,
        found: Vec::new(),
    });
    change.at = at;
    change.bytes += bytes;
    change.found.extend(found);
    if delta.more {
        state.pending = Some(change);
        return None;
    }
    change.found.sort_unstable();
    change.found.dedup();
    state.received.push(change);
    state.acked_version = delta.version.clone();
    Some(Ack {
        version: delta.version,
        error: String::new(),
    })
}

/// What an agent holds after registering: the relay root, its client certificate and key.
pub struct Credentials {
    pub relay: String,
    pub authority: String,
    pub root_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
    /// The loopback address it connects from: agents of different clusters come from different
    /// hosts, and the relay limits handshakes and registrations per source address.
    pub local: IpAddr,
}

fn endpoint(relay: &str, tls: ClientTlsConfig, local: IpAddr) -> anyhow::Result<Endpoint> {
    // Timeouts and keepalive as the agent sets them (agent/credentials.rs).
    Ok(Endpoint::from_shared(format!("https://{relay}"))?
        .tls_config(tls)?
        .local_address(Some(local))
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5)))
}

/// Registers `cluster` (which the API has just recorded, issuing `token`): a new key, its CSR,
/// and the relay's `Register` over TLS that authenticates the server only.
pub async fn register(
    relay: &str,
    authority: &str,
    root_pem: &str,
    cluster: &str,
    token: &str,
    local: IpAddr,
) -> anyhow::Result<Credentials> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root_pem))
        .domain_name(authority);
    let channel = endpoint(relay, tls, local)?.connect().await?;
    let (key, csr) = trellis_pki::new_key_and_csr(cluster)?;
    let response = RelayClient::new(channel)
        .register(RegisterRequest {
            cluster: cluster.to_string(),
            token: token.to_string(),
            csr_pem: csr,
        })
        .await
        .map_err(|status| anyhow::anyhow!("registration refused: {:?}: {}", status.code(), status.message()))?;
    Ok(Credentials {
        relay: relay.to_string(),
        authority: authority.to_string(),
        root_pem: root_pem.to_string(),
        chain_pem: response.into_inner().cert_chain_pem,
        key_pem: key.0,
        local,
    })
}

/// A running simulated agent.
pub struct SimAgent {
    pub state: Arc<Mutex<SimAgentState>>,
    discovery: watch::Sender<ClusterDiscovery>,
    task: tokio::task::JoinHandle<()>,
}

impl SimAgent {
    pub fn start(credentials: Credentials, discovery: ClusterDiscovery) -> SimAgent {
        let state = Arc::new(Mutex::new(SimAgentState {
            cluster: discovery.cluster.clone(),
            markers: Vec::new(),
            received: Vec::new(),
            acked_version: String::new(),
            pending: None,
            failures: Vec::new(),
        }));
        let (discovery, changes) = watch::channel(discovery);
        let task = tokio::spawn(run(credentials, state.clone(), changes));
        SimAgent { state, discovery, task }
    }

    /// Reports a new discovery, as an agent does when its workloads change.
    pub fn set_discovery(&self, discovery: ClusterDiscovery) {
        self.discovery.send_replace(discovery);
    }

    pub fn discovery(&self) -> ClusterDiscovery {
        self.discovery.borrow().clone()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SimAgentState> {
        self.state.lock().expect("sim agent state")
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    credentials: Credentials,
    state: Arc<Mutex<SimAgentState>>,
    mut changes: watch::Receiver<ClusterDiscovery>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let error = match session(&credentials, &state, &mut changes).await {
            Ok(()) => {
                backoff = MIN_BACKOFF;
                "stream closed by the management server".to_string()
            }
            Err(error) => describe(&error),
        };
        {
            let mut state = state.lock().expect("sim agent state");
            state.failures.push((Instant::now(), error));
            // A change cut short with the stream is not taken; the server starts over.
            state.pending = None;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// tonic's Display hides a status's message; the message is what says why.
fn describe(error: &anyhow::Error) -> String {
    match error.downcast_ref::<tonic::Status>() {
        Some(status) => format!("{:?}: {}", status.code(), status.message()),
        None => format!("{error:#}"),
    }
}

async fn session(
    credentials: &Credentials,
    state: &Mutex<SimAgentState>,
    changes: &mut watch::Receiver<ClusterDiscovery>,
) -> anyhow::Result<()> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&credentials.root_pem))
        .domain_name(credentials.authority.clone())
        .identity(Identity::from_pem(&credentials.chain_pem, &credentials.key_pem));
    let channel: Channel = endpoint(&credentials.relay, tls, credentials.local)?.connect().await?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(8);
    let (cluster, last_applied) = {
        let state = state.lock().expect("sim agent state");
        (state.cluster.clone(), state.acked_version.clone())
    };
    tx.send(AgentMessage::hello(Hello {
        cluster,
        agent_version: "bench-scale".into(),
        last_applied_version: last_applied,
        registry_address: "127.0.0.1:9977".into(),
    }))
    .await?;
    let mut incoming = RelayClient::new(channel)
        .max_decoding_message_size(trellis_relay::delivery::MAX_MESSAGE_BYTES)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    changes.mark_changed();
    let mut reporter = trellis_relay::discovery_report::DiscoveryReporter::default();
    loop {
        tokio::select! {
            changed = changes.changed() => {
                changed?;
                // As a real agent does: whole on a new stream, then only the workloads that changed.
                let discovery = changes.borrow_and_update().clone();
                if let Some(report) = reporter.report(discovery) {
                    tx.send(report).await?;
                }
            }
            message = incoming.next() => {
                let Some(message) = message.transpose()? else { return Ok(()) };
                let ack = on_server_message(&mut state.lock().expect("sim agent state"), message);
                if let Some(ack) = ack {
                    tx.send(AgentMessage { body: Some(agent_message::Body::Ack(ack)) }).await?;
                }
            }
        }
    }
}
