//! The gRPC shell: one task per ADS stream drives a [`StreamState`] from the
//! proxy's requests and the snapshot watch, and reports to metrics and the
//! status board.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tonic::codegen::{Bytes, StdError, http};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, trace, warn};

use crate::delta::DeltaState;
use crate::grpc::{AdsService, Outgoing, encode};
use crate::metrics::XdsMetrics;
use crate::snapshot::Snapshot;
use crate::status::ProxyStatusBoard;
use crate::status::TypeStatus;
use crate::stream::{Outcome, StreamState};

/// Responses buffered per stream before we stop reading the proxy's requests: a change pushes
/// one response per type, and the buffer's slots are allocated per stream.
const RESPONSE_BUFFER: usize = 8;

/// The largest request a proxy may send (tonic's default).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// What differs between a state-of-the-world stream and a delta stream: their messages and their
/// state machine. The task that drives either is the same.
pub(crate) trait Protocol: Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Response: prost::Message + Send + 'static;
    fn new(node_id: String) -> Self;
    fn node_of(request: &Self::Request) -> Option<&str>;
    /// Envoy's release, from the node of a request that carries it.
    fn envoy_version_of(request: &Self::Request) -> Option<String>;
    fn node_id(&self) -> &str;
    fn handle(&mut self, request: &Self::Request) -> Outcome<Self::Response>;
    fn set_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> Vec<Self::Response>;
    /// Responses held back for the proxy to take something first, that a request let go.
    fn released(&mut self) -> Vec<Self::Response>;
    fn type_statuses(&self) -> BTreeMap<String, TypeStatus>;
    /// Type URL, version, nonce and resource count, for logs and metrics.
    fn describe(response: &Self::Response) -> (&str, &str, &str, usize);
}

impl Protocol for StreamState {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn new(node_id: String) -> Self {
        StreamState::new(node_id)
    }

    fn node_of(request: &DiscoveryRequest) -> Option<&str> {
        request.node.as_ref().map(|n| n.id.as_str())
    }

    fn envoy_version_of(request: &DiscoveryRequest) -> Option<String> {
        node_version(request.node.as_ref()?)
    }

    fn node_id(&self) -> &str {
        StreamState::node_id(self)
    }

    fn handle(&mut self, request: &DiscoveryRequest) -> Outcome<DiscoveryResponse> {
        self.handle_request(request)
    }

    fn set_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> Vec<DiscoveryResponse> {
        StreamState::set_snapshot(self, snapshot)
    }

    /// State of the world pushes every type at once (our Envoys speak delta).
    fn released(&mut self) -> Vec<DiscoveryResponse> {
        Vec::new()
    }

    fn type_statuses(&self) -> BTreeMap<String, TypeStatus> {
        StreamState::type_statuses(self)
    }

    fn describe(response: &DiscoveryResponse) -> (&str, &str, &str, usize) {
        (
            &response.type_url,
            &response.version_info,
            &response.nonce,
            response.resources.len(),
        )
    }
}

impl Protocol for DeltaState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn new(node_id: String) -> Self {
        DeltaState::new(node_id)
    }

    fn node_of(request: &DeltaDiscoveryRequest) -> Option<&str> {
        request.node.as_ref().map(|n| n.id.as_str())
    }

    fn envoy_version_of(request: &DeltaDiscoveryRequest) -> Option<String> {
        node_version(request.node.as_ref()?)
    }

    fn node_id(&self) -> &str {
        DeltaState::node_id(self)
    }

    fn handle(&mut self, request: &DeltaDiscoveryRequest) -> Outcome<DeltaDiscoveryResponse> {
        self.handle_request(request)
    }

    fn set_snapshot(&mut self, snapshot: Option<Arc<Snapshot>>) -> Vec<DeltaDiscoveryResponse> {
        DeltaState::set_snapshot(self, snapshot)
    }

    fn released(&mut self) -> Vec<DeltaDiscoveryResponse> {
        DeltaState::released(self)
    }

    fn type_statuses(&self) -> BTreeMap<String, TypeStatus> {
        DeltaState::type_statuses(self)
    }

    fn describe(response: &DeltaDiscoveryResponse) -> (&str, &str, &str, usize) {
        (
            &response.type_url,
            &response.system_version_info,
            &response.nonce,
            response.resources.len() + response.removed_resources.len(),
        )
    }
}

/// Where the ADS server gets each proxy's snapshot, and who may have it.
///
/// `None` in the watch means "not ready yet": requests are held and nothing is
/// sent, because an empty config would make Envoy drop the one it is serving.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Whether a stream may act as `node_id`, judged from what its peer presented: the client
    /// certificate of its TLS connection (when the server runs over mutual TLS) and its gRPC
    /// metadata. A node's snapshot can hold its private key, and the node id is only a claim
    /// the client makes, so the source, which knows what credential each node registered
    /// with, decides. Called before anything is sent and again at every snapshot change, so a
    /// revoked credential stops the stream. Refuse with `Status::unauthenticated`.
    fn authorize(&self, node_id: &str, peer: &StreamPeer) -> Result<(), Status>;

    fn subscribe(&self, node_id: &str) -> Result<watch::Receiver<Option<Arc<Snapshot>>>, Status>;
}

/// What the peer of one ADS stream presented, kept for the stream's life: every re-check sees
/// the same credential the stream was opened with. Never logged (it may hold credentials).
#[derive(Debug, Clone, Default)]
pub struct StreamPeer {
    pub metadata: MetadataMap,
    /// The leaf of the client certificate chain (DER), already verified by the TLS layer
    /// against the server's client roots; `None` over plaintext or without a certificate.
    pub client_certificate: Option<Vec<u8>>,
}

/// ADS server: state of the world and delta (incremental).
pub struct AdsServer<S: SnapshotSource> {
    source: Arc<S>,
    metrics: XdsMetrics,
    board: ProxyStatusBoard,
    next_stream_id: AtomicU64,
}

// === impl AdsServer ===

impl<S: SnapshotSource> AdsServer<S> {
    pub fn new(source: Arc<S>, metrics: XdsMetrics) -> Self {
        Self {
            source,
            metrics,
            board: ProxyStatusBoard::default(),
            next_stream_id: AtomicU64::new(0),
        }
    }

    pub fn into_service(self) -> AdsService<S> {
        AdsService::new(self)
    }

    /// Handle on the per-proxy status; stays valid after `into_service`.
    pub fn status(&self) -> ProxyStatusBoard {
        self.board.clone()
    }
}

impl<S: SnapshotSource> AdsServer<S> {
    /// Starts the task that serves one stream; returns its responses.
    pub(crate) fn start<P: Protocol, B>(&self, request: http::Request<B>) -> mpsc::Receiver<Outgoing>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let (parts, body) = request.into_parts();
        let decoder = tonic_prost::ProstDecoder::<P::Request>::default();
        let inbound = Streaming::new_request(decoder, body, None, Some(MAX_REQUEST_BYTES));
        let request = Request::from_http(http::Request::from_parts(parts, inbound));
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        // Kept for re-checks at every snapshot change; never logged (it holds a credential).
        // tonic fills in the peer certificates when the incoming connections are rustls
        // streams (the caller's TLS listener), whoever completed the handshake.
        let peer = StreamPeer {
            metadata: request.metadata().clone(),
            client_certificate: request
                .peer_certs()
                .and_then(|chain| chain.first().map(|leaf| leaf.to_vec())),
        };
        let stream = StreamTask::<S> {
            peer,
            stream_id: self.next_stream_id.fetch_add(1, Ordering::Relaxed),
            source: self.source.clone(),
            metrics: self.metrics.clone(),
            board: self.board.clone(),
            tx,
        };
        // The node id arrives in the first message, so the span is filled in later.
        let span = info_span!("ads_stream", proxy.id = tracing::field::Empty);
        // Return the response stream at once and read the first request in the
        // task: a client may wait for response headers before sending.
        tokio::spawn(stream.run::<P>(request.into_inner()).instrument(span));
        rx
    }
}

// === impl StreamTask ===

struct StreamTask<S> {
    peer: StreamPeer,
    stream_id: u64,
    source: Arc<S>,
    metrics: XdsMetrics,
    board: ProxyStatusBoard,
    tx: mpsc::Sender<Outgoing>,
}

impl<S: SnapshotSource> StreamTask<S> {
    async fn run<P: Protocol>(self, mut inbound: Streaming<P::Request>) {
        let first = match inbound.message().await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(status) => {
                debug!(%status, "stream failed before its first request");
                return;
            }
        };
        let node_id = P::node_of(&first).unwrap_or_default().to_string();
        if node_id.is_empty() {
            let msg = "the first request must carry node.id (set node.id in the Envoy bootstrap)";
            let _ = self.tx.send(Err(Box::new(Status::invalid_argument(msg)))).await;
            return;
        }
        tracing::Span::current().record("proxy.id", node_id.as_str());
        if let Err(status) = self.source.authorize(&node_id, &self.peer) {
            warn!(code = ?status.code(), reason = status.message(), "refused proxy stream");
            self.metrics.refused();
            let _ = self.tx.send(Err(Box::new(status))).await;
            return;
        }
        let mut watch = match self.source.subscribe(&node_id) {
            Ok(watch) => watch,
            Err(status) => {
                warn!(%status, "refused proxy");
                let _ = self.tx.send(Err(Box::new(status))).await;
                return;
            }
        };

        let _connected = Connected::new(&self, &node_id, P::envoy_version_of(&first));
        info!("proxy connected");
        let mut state = P::new(node_id);
        // Nothing is subscribed yet, so this only primes the state.
        let snapshot = watch.borrow_and_update().clone();
        let mut traces = Traces {
            snapshot: snapshot.as_ref().and_then(|s| s.traceparent.clone()),
            ..Default::default()
        };
        state.set_snapshot(snapshot);

        let mut next = Some(first);
        loop {
            let flow = if let Some(req) = next.take() {
                self.on_request::<P>(&mut state, &req, &mut traces).await
            } else {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => { next = Some(req); ControlFlow::Continue(()) }
                        Ok(None) => { info!("proxy closed the stream"); ControlFlow::Break(()) }
                        Err(status) => { info!(%status, "stream ended"); ControlFlow::Break(()) }
                    },
                    changed = watch.changed() => match changed {
                        Ok(()) => {
                            // The credential may have been revoked or replaced meanwhile.
                            if let Err(status) = self.source.authorize(state.node_id(), &self.peer) {
                                warn!(code = ?status.code(), reason = status.message(), "proxy credential no longer valid; closing its stream");
                                self.metrics.refused();
                                let _ = self.tx.send(Err(Box::new(status))).await;
                                ControlFlow::Break(())
                            } else {
                                let snapshot = watch.borrow_and_update().clone();
                                traces.snapshot = snapshot.as_ref().and_then(|s| s.traceparent.clone());
                                let pushes = state.set_snapshot(snapshot);
                                self.board.update(self.stream_id, state.type_statuses());
                                self.send_all::<P>(state.node_id(), pushes, &mut traces).await
                            }
                        }
                        Err(_) => {
                            // The source forgot this proxy; ending the stream
                            // makes Envoy reconnect and subscribe afresh while
                            // it keeps serving its current config.
                            let _ = self.tx.send(Err(Box::new(Status::unavailable("snapshot source closed")))).await;
                            ControlFlow::Break(())
                        }
                    },
                    () = self.tx.closed() => ControlFlow::Break(()),
                }
            };
            if flow.is_break() {
                break;
            }
        }
    }

    async fn on_request<P: Protocol>(&self, state: &mut P, req: &P::Request, traces: &mut Traces) -> ControlFlow<()> {
        let mut responses = Vec::new();
        match state.handle(req) {
            Outcome::Send(resp) => responses.push(resp),
            Outcome::Acked { type_url, version } => {
                // When the proxy took a config: a child of the push it acknowledges.
                let ack = info_span!(parent: None, "xds_ack", proxy.id = state.node_id(), type_url, version);
                if let Some((pushed, traceparent)) = traces.pushed.get(&type_url)
                    && *pushed == version
                {
                    trellis_support::trace_context::continue_trace(&ack, traceparent);
                }
                ack.in_scope(|| debug!(type_url, version, "ack"));
            }
            Outcome::Nacked {
                type_url,
                rejected_version,
                running_version,
                message,
            } => {
                warn!(
                    proxy.id = state.node_id(),
                    type_url,
                    version = rejected_version,
                    running_version,
                    error = message,
                    "proxy rejected config"
                );
                self.metrics.nack(&type_url);
            }
            Outcome::StaleNonce { type_url, nonce } => {
                trace!(type_url, nonce, "ignoring stale nonce")
            }
            Outcome::Held { type_url } => debug!(type_url, "snapshot not ready; holding request"),
            Outcome::Invalid(msg) => {
                warn!(error = msg, "invalid request");
                let _ = self.tx.send(Err(Box::new(Status::invalid_argument(msg)))).await;
                return ControlFlow::Break(());
            }
        }
        // What the proxy just took may let go of what waited for it (routes after clusters).
        responses.extend(state.released());
        self.board.update(self.stream_id, state.type_statuses());
        self.send_all::<P>(state.node_id(), responses, traces).await
    }

    async fn send_all<P: Protocol>(
        &self,
        node_id: &str,
        responses: Vec<P::Response>,
        traces: &mut Traces,
    ) -> ControlFlow<()> {
        for resp in responses {
            let (type_url, version, nonce, resources) = P::describe(&resp);
            // In the trace of the change that built the snapshot, not under the stream's span,
            // which lasts as long as Envoy runs.
            let span = info_span!(parent: None, "xds_push", proxy.id = node_id, type_url, version, resources);
            if let Some(traceparent) = &traces.snapshot {
                trellis_support::trace_context::continue_trace(&span, traceparent);
            }
            if let Some(traceparent) = trellis_support::trace_context::traceparent(&span) {
                traces
                    .pushed
                    .insert(type_url.to_string(), (version.to_string(), traceparent));
            }
            let pushed = async {
                debug!(type_url, version, nonce, resources, "push");
                self.metrics.push(type_url);
                self.tx.send(Ok(encode(&resp))).await
            };
            if pushed.instrument(span).await.is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// What one stream's spans continue: the current snapshot's trace, and per type the version
/// last pushed with its push's trace (the ACK of that version continues it).
#[derive(Default)]
struct Traces {
    snapshot: Option<String>,
    pushed: BTreeMap<String, (String, String)>,
}

/// Counts the proxy as connected for as long as it lives, so every exit
/// path (including a panic) cleans up the gauge and the status board.
/// `1.40.0` from a node's structured build version, or its free-form version string (bounded:
/// it is the client's claim).
fn node_version(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Option<String> {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    match node.user_agent_version_type.as_ref()? {
        UserAgentVersionType::UserAgentBuildVersion(build) => {
            let v = build.version.as_ref()?;
            Some(format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
        }
        UserAgentVersionType::UserAgentVersion(text) => Some(text.chars().take(64).collect()),
    }
}

struct Connected {
    stream_id: u64,
    board: ProxyStatusBoard,
    metrics: XdsMetrics,
}

impl Connected {
    fn new<S>(task: &StreamTask<S>, node_id: &str, envoy_version: Option<String>) -> Self {
        task.board.connect(task.stream_id, node_id, envoy_version);
        task.metrics.proxies_connected.inc();
        Self {
            stream_id: task.stream_id,
            board: task.board.clone(),
            metrics: task.metrics.clone(),
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.board.disconnect(self.stream_id);
        self.metrics.proxies_connected.dec();
        info!("proxy disconnected");
    }
}
