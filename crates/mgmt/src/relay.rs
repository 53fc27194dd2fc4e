//! The relay server: one stream per agent (discovery up, that cluster's config down), plus the
//! unary calls that register agents, renew their certificates and sign cluster intermediates.
//!
//! Who an agent is comes from its verified client certificate, never from what it says: an
//! agent that claims another cluster's name in its Hello is refused.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use trellis_model::ClusterDiscovery;
use trellis_relay::delivery::{MAX_MESSAGE_BYTES, chunk};
use trellis_relay::listener::PeerInfo;
use trellis_relay::pacing::{Paced, SendBudget};
use trellis_relay::{
    AgentMessage, CertificateResponse, RegisterRequest, RenewRequest, ServerMessage, SignIntermediateRequest,
    SignIntermediateResponse, agent_message,
};
use trellis_store::{IntermediateClaim, IntermediateRecord, TokenCheck};
use trellis_support::process::Shutdown;
use trellis_support::unix_now;

use super::Mgmt;
use super::metrics::{ClusterLabel, ResultLabel};
use super::pki::{RelaySecurity, RelayTls};
use super::translator::{EncodedCluster, Published};

/// A section larger than this cannot travel: a message carries at least one whole section.
const MAX_SECTION_BYTES: usize = MAX_MESSAGE_BYTES - 64 * 1024;
/// Large config changes in flight at once, over all agents (see `trellis_relay::pacing`): a few
/// full configs of a large mesh, sent at full speed, rather than all of them at a crawl.
const SEND_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// How long one agent's change may hold its share of the budget before the next one goes.
const SEND_HOLD_LIMIT: Duration = Duration::from_secs(10);
/// Messages queued per stream: with messages of `CHUNK_BYTES`, little of a config waits in
/// memory for its agent to read it.
const STREAM_QUEUE: usize = 2;

pub struct RelayService {
    mgmt: Arc<Mgmt>,
    /// Ends every agent stream when the server shuts down: tonic waits for open streams forever.
    shutdown: Shutdown,
    budget: Arc<SendBudget>,
}

impl RelayService {
    pub fn new(mgmt: Arc<Mgmt>, shutdown: Shutdown) -> Self {
        RelayService {
            mgmt,
            shutdown,
            budget: Arc::new(SendBudget::new(SEND_BUDGET_BYTES, SEND_HOLD_LIMIT)),
        }
    }

    /// Logs, counts and builds a refusal.
    fn refuse(&self, peer: &PeerInfo, reason: &str, status: Status) -> Status {
        self.mgmt.metrics.refused(reason);
        tracing::warn!(peer = ?peer.remote, reason, message = status.message(), "relay refused a request");
        status
    }

    fn tls(&self) -> Option<&RelayTls> {
        match &self.mgmt.relay {
            RelaySecurity::Insecure => None,
            RelaySecurity::Tls(tls) => Some(tls),
        }
    }

    /// The cluster a caller may act for. With TLS: the verified client certificate's, which must
    /// be registered, unrevoked and match `claimed` when given. Insecure: whatever it claims.
    fn authenticate(&self, peer: &PeerInfo, claimed: Option<&str>) -> Result<String, Status> {
        if self.tls().is_none() {
            return claimed
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .ok_or_else(|| Status::invalid_argument("name the cluster: start the agent with --cluster NAME"));
        }
        let Some(der) = &peer.cert_der else {
            return Err(self.refuse(
                peer,
                "no_client_certificate",
                Status::unauthenticated(
                    "a client certificate is required: start the agent with --token (first registration) or --client-cert/--client-key",
                ),
            ));
        };
        let info = trellis_pki::inspect_der(der)
            .map_err(|e| self.refuse(peer, "invalid_certificate", Status::unauthenticated(e.to_string())))?;
        let cluster = info
            .uris
            .iter()
            .find_map(|uri| trellis_pki::cluster_from_relay_identity(uri))
            .or_else(|| info.dns_names.first().cloned())
            .or(info.subject_cn.clone())
            .ok_or_else(|| {
                self.refuse(
                    peer,
                    "unknown_identity",
                    Status::unauthenticated("the client certificate names no cluster"),
                )
            })?;
        let internal = |e: anyhow::Error| Status::internal(format!("store: {e}"));
        if self
            .mgmt
            .store
            .is_revoked(&info.serial_hex)
            .map_err(|e| internal(e.into()))?
        {
            return Err(self.refuse(
                peer,
                "revoked",
                Status::permission_denied(format!(
                    "the certificate of cluster {cluster} was revoked when the cluster was deregistered or rotated (after a rotation, the agent joins with the new token)"
                )),
            ));
        }
        if !self.mgmt.is_registered(&cluster).map_err(internal)? {
            return Err(self.refuse(
                peer,
                "unregistered_cluster",
                Status::permission_denied(format!(
                    "cluster {cluster} is not registered: run `trellis cluster register {cluster}`"
                )),
            ));
        }
        if let Some(claimed) = claimed
            && claimed != cluster
        {
            return Err(self.refuse(
                peer,
                "wrong_cluster",
                Status::permission_denied(format!(
                    "the client certificate is for cluster {cluster}, not {claimed}"
                )),
            ));
        }
        Ok(cluster)
    }

    /// Signs a client CSR for `cluster` and remembers the serial (for revocation).
    fn issue_client_certificate(
        &self,
        tls: &RelayTls,
        peer: &PeerInfo,
        cluster: &str,
        csr_pem: &str,
        kind: &str,
    ) -> Result<String, Status> {
        let Some(signer) = &tls.signer else {
            return Err(self.refuse(peer, "ca_disabled", ca_disabled()));
        };
        let chain = signer
            .sign_client_csr(
                csr_pem,
                &trellis_pki::relay_identity(cluster),
                cluster,
                tls.client_cert_ttl,
                SystemTime::now(),
            )
            .map_err(|e| {
                self.refuse(
                    peer,
                    "bad_csr",
                    Status::invalid_argument(format!("cannot sign the CSR: {e}")),
                )
            })?;
        let info = trellis_pki::inspect_pem(&chain).map_err(|e| Status::internal(e.to_string()))?;
        self.mgmt
            .store
            .record_certificate(&info.serial_hex, cluster)
            .map_err(|e| Status::internal(format!("store: {e}")))?;
        self.mgmt
            .metrics
            .certificates_issued_total
            .get_or_create(&ResultLabel { result: kind.into() })
            .inc();
        tracing::info!(cluster, serial = %info.serial_hex, kind, "issued a relay client certificate");
        Ok(chain)
    }
}

// === only the leader signs ===

impl RelayService {
    /// Refuses a signing request on a replica that does not lead (`Unavailable`: the client
    /// asks the next replica), so that one replica signs for the mesh.
    fn require_leader(&self) -> Result<(), Status> {
        if *self.mgmt.leading.borrow() {
            return Ok(());
        }
        self.mgmt.metrics.signing_sent_to_leader_total.inc();
        Err(Status::unavailable(trellis_relay::client::NOT_LEADER))
    }
}

// === one live intermediate per cluster ===

/// A renewal asked for a little before the agent's own renewal time (clocks differ) is still a renewal.
const RENEWAL_CLOCK_ALLOWANCE: u64 = 60;

impl RelayService {
    /// Records `chain`'s intermediate as `cluster`'s, or refuses when the cluster already has a live one not yet
    /// due for renewal: relay credentials for a cluster (stolen, or from a token issued by mistake) must not
    /// yield a second CA beside the legitimate agent's.
    fn claim_intermediate(
        &self,
        peer: &PeerInfo,
        cluster: &str,
        chain: &str,
        root_sha256: &str,
        now: SystemTime,
    ) -> Result<(), Status> {
        let info = trellis_pki::inspect_pem(chain).map_err(|e| Status::internal(e.to_string()))?;
        let issued_at = unix_secs(now);
        let renewable_at = unix_secs(trellis_pki::renew_at(info.not_before, info.not_after))
            .saturating_sub(RENEWAL_CLOCK_ALLOWANCE)
            .max(issued_at);
        let record = IntermediateRecord {
            cluster: cluster.to_string(),
            serial: info.serial_hex,
            issued_at,
            not_after: unix_secs(info.not_after),
            renewable_at,
            revoked: false,
            // Lets the agent retry with the same key when the answer was lost (shortly after only).
            public_key_sha256: trellis_pki::public_key_sha256(chain).map_err(|e| Status::internal(e.to_string()))?,
            root_sha256: root_sha256.to_string(),
        };
        let claim = self
            .mgmt
            .store
            .claim_intermediate(&record, issued_at)
            .map_err(|e| Status::internal(format!("store: {e}")))?;
        match claim {
            IntermediateClaim::Recorded => Ok(()),
            // The live intermediate chains to a root the mesh left (a RootTrustPolicy switched
            // it): the cluster moves to the new root, and the old intermediate stops counting.
            IntermediateClaim::Refused { existing } if !self.signed_by_current_root(&existing, root_sha256) => {
                self.mgmt
                    .store
                    .revoke_cluster_intermediates(cluster, issued_at)
                    .map_err(|e| Status::internal(format!("store: {e}")))?;
                tracing::info!(cluster, serial = %existing.serial, "the cluster's intermediate chains to an earlier mesh root: signing one under the current root");
                match self.mgmt.store.claim_intermediate(&record, issued_at) {
                    Ok(IntermediateClaim::Recorded) => Ok(()),
                    Ok(IntermediateClaim::Refused { .. }) => Err(Status::aborted("another intermediate was signed for this cluster meanwhile; retry")),
                    Err(e) => Err(Status::internal(format!("store: {e}"))),
                }
            }
            IntermediateClaim::Refused { existing } => Err(self.refuse(
                peer,
                "intermediate_exists",
                Status::already_exists(format!(
                    "cluster {cluster} already has a live intermediate CA (serial {}, renewable from {} Unix time); \
                     a second one is not signed. If this agent lost its data dir, run `trellis cluster rotate {cluster}` \
                     and start it with the new token",
                    existing.serial, existing.renewable_at
                )),
            )),
        }
    }
}

impl RelayService {
    /// Whether `existing` was signed by the root whose certificate hashes to `root_sha256`.
    /// Records from before roots were recorded were signed by the management server's own root.
    fn signed_by_current_root(&self, existing: &IntermediateRecord, root_sha256: &str) -> bool {
        if existing.root_sha256.is_empty() {
            let base = trellis_pki::cert_sha256(&self.mgmt.mesh.base.root_pem()).unwrap_or_default();
            return base == root_sha256;
        }
        existing.root_sha256 == root_sha256
    }
}

fn ca_disabled() -> Status {
    Status::failed_precondition(
        "this management server runs with --disable-ca: agents bring their own client certificates (--client-cert/--client-key)",
    )
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn peer_of<T>(request: &Request<T>) -> PeerInfo {
    request.extensions().get::<PeerInfo>().cloned().unwrap_or_default()
}

type ConfigStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl trellis_relay::Relay for RelayService {
    type ConnectStream = ConfigStream;

    async fn connect(&self, request: Request<Streaming<AgentMessage>>) -> Result<Response<ConfigStream>, Status> {
        let peer = peer_of(&request);
        let mut incoming = request.into_inner();
        let hello = match incoming.next().await {
            Some(Ok(AgentMessage {
                body: Some(agent_message::Body::Hello(hello)),
            })) => hello,
            Some(Err(status)) => return Err(status),
            _ => return Err(Status::invalid_argument("the first relay message must be Hello")),
        };
        let cluster = self.authenticate(&peer, Some(&hello.cluster))?;
        let validity = peer
            .cert_der
            .as_deref()
            .and_then(|der| trellis_pki::inspect_der(der).ok())
            .map(|i| (unix_secs(i.not_before), unix_secs(i.not_after)));
        self.mgmt.update_agent(&cluster, |a| a.client_cert_validity = validity);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let span = tracing::info_span!("relay_stream", cluster = %cluster);
        let stream = AgentStream {
            mgmt: self.mgmt.clone(),
            budget: self.budget.clone(),
            shutdown: self.shutdown.clone(),
            cluster,
        };
        tokio::spawn(serve_agent(stream, hello, incoming, tx).instrument(span));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<CertificateResponse>, Status> {
        let peer = peer_of(&request);
        let Some(tls) = self.tls() else {
            return Err(Status::failed_precondition(
                "this management server runs --insecure: agents connect without registering",
            ));
        };
        // Before the token is looked at: a follower must not use it up.
        self.require_leader()?;
        if tls.signer.is_none() {
            // Checked before the token, which stays unused: there is nothing to sign with.
            return Err(self.refuse(&peer, "ca_disabled", ca_disabled()));
        }
        let request = request.into_inner();
        let hash = trellis_base::sha256_hex(request.token.as_bytes());
        let check = self
            .mgmt
            .store
            .consume_token(&hash, unix_now())
            .map_err(|e| Status::internal(format!("store: {e}")))?;
        let cluster = match check {
            TokenCheck::Accepted { cluster } if cluster == request.cluster => cluster,
            TokenCheck::Accepted { cluster } => {
                return Err(self.refuse(
                    &peer,
                    "token_wrong_cluster",
                    Status::permission_denied(format!(
                        "this token was issued for cluster {cluster}, not {}; it is now used up",
                        request.cluster
                    )),
                ));
            }
            TokenCheck::Unknown => {
                return Err(self.refuse(
                    &peer,
                    "token_unknown",
                    Status::unauthenticated("unknown registration token"),
                ));
            }
            TokenCheck::AlreadyUsed { cluster } => {
                return Err(self.refuse(
                    &peer,
                    "token_reused",
                    Status::unauthenticated(format!("the registration token of cluster {cluster} was already used: tokens work once; run `trellis cluster register {cluster}` for a new one")),
                ));
            }
            TokenCheck::Expired { cluster } => {
                return Err(self.refuse(
                    &peer,
                    "token_expired",
                    Status::unauthenticated(format!("the registration token of cluster {cluster} has expired; run `trellis cluster register {cluster}` for a new one")),
                ));
            }
        };
        let chain = self.issue_client_certificate(tls, &peer, &cluster, &request.csr_pem, "registration")?;
        tracing::info!(cluster, peer = ?peer.remote, "agent registered");
        Ok(Response::new(CertificateResponse { cert_chain_pem: chain }))
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<CertificateResponse>, Status> {
        let peer = peer_of(&request);
        let Some(tls) = self.tls() else {
            return Err(Status::failed_precondition(
                "this management server runs --insecure: there are no certificates to renew",
            ));
        };
        let cluster = self.authenticate(&peer, None)?;
        self.require_leader()?;
        let chain = self.issue_client_certificate(tls, &peer, &cluster, &request.into_inner().csr_pem, "renewal")?;
        Ok(Response::new(CertificateResponse { cert_chain_pem: chain }))
    }

    async fn sign_intermediate(
        &self,
        request: Request<SignIntermediateRequest>,
    ) -> Result<Response<SignIntermediateResponse>, Status> {
        let peer = peer_of(&request);
        let request = request.into_inner();
        let cluster = self.authenticate(
            &peer,
            Some(&request.cluster).filter(|c| !c.is_empty()).map(String::as_str),
        )?;
        self.require_leader()?;
        let mesh = &self.mgmt.mesh;
        let root = mesh.current();
        let now = SystemTime::now();
        let chain = root
            .signer
            .sign_intermediate_csr(
                &request.csr_pem,
                &format!("Trellis intermediate CA for cluster {cluster}"),
                &mesh.trust_domain,
                root.intermediate_ttl,
                now,
            )
            .map_err(|e| {
                self.refuse(
                    &peer,
                    "bad_csr",
                    Status::invalid_argument(format!("cannot sign the CSR: {e}")),
                )
            })?;
        // Signed but not yet handed out: it leaves only if the store records it as the cluster's one
        // live intermediate (see trellis_store::IssuanceStore).
        self.claim_intermediate(&peer, &cluster, &chain, &root.root_sha256, now)?;
        self.mgmt
            .metrics
            .certificates_issued_total
            .get_or_create(&ResultLabel {
                result: "intermediate".into(),
            })
            .inc();
        let validity = trellis_pki::inspect_pem(&chain)
            .ok()
            .map(|i| (unix_secs(i.not_before), unix_secs(i.not_after)));
        self.mgmt.update_agent(&cluster, |a| a.intermediate_validity = validity);
        tracing::info!(cluster, "signed a cluster intermediate CA");
        Ok(Response::new(SignIntermediateResponse {
            chain_pem: chain,
            // Every root still trusted: proxies verify peers whose certificates chain to an
            // earlier root while the clusters move to this one.
            mesh_root_pem: root.bundle_pem.clone(),
            trust_domain: mesh.trust_domain.clone(),
        }))
    }
}

/// What one agent stream works with.
struct AgentStream {
    mgmt: Arc<Mgmt>,
    budget: Arc<SendBudget>,
    shutdown: Shutdown,
    cluster: String,
}

type Tx = mpsc::Sender<Result<ServerMessage, Status>>;

async fn serve_agent(stream: AgentStream, hello: trellis_relay::Hello, mut incoming: Streaming<AgentMessage>, tx: Tx) {
    let AgentStream {
        mgmt,
        budget,
        shutdown,
        cluster,
    } = stream;
    let label = ClusterLabel {
        cluster: cluster.clone(),
    };
    mgmt.metrics.agents_connected.get_or_create(&label).inc();
    mgmt.update_agent(&cluster, |a| {
        a.connected = true;
        a.since = unix_now();
        a.acked_version = hello.last_applied_version.clone();
        a.registry_address = hello.registry_address.clone();
        // Shown as it came; a version is short, and nothing longer is worth keeping.
        a.agent_version = hello.agent_version.chars().take(64).collect();
        a.last_error = None;
    });
    tracing::info!(agent_version = %hello.agent_version, last_applied = %hello.last_applied_version, "agent connected");

    let mut translations = mgmt.subscribe();
    let mut kicks = mgmt.kicks.subscribe();
    // The mesh's trust goes first on every stream, and again whenever a RootTrustPolicy moves it.
    let mut trust = mgmt.mesh.subscribe();
    trust.mark_changed();
    // What the agent holds, as far as this stream knows: the agent told us its version; if that
    // is the current config, nothing is sent after a reconnect, and later changes are deltas.
    let mut holds = Holds::after_hello(&hello, &translations.borrow_and_update(), &cluster);
    let mut discovery_version: Option<String> = None;
    let mut proxy_config_requests = mgmt.proxy_queries.open(&cluster);
    translations.mark_changed();
    let mut error = None;
    // A change waiting for its share of the send budget. Meanwhile the stream holds no
    // translation: when its turn comes it sends the latest, whatever came while it waited.
    let mut waiting: Option<Pin<Box<dyn Future<Output = Paced> + Send>>> = None;
    loop {
        tokio::select! {
            changed = translations.changed(), if waiting.is_none() => {
                if changed.is_err() {
                    break;
                }
                let encoded = current(&mut translations, &cluster);
                let bytes = encoded.map_or(0, |e| holds.bytes_to_send(&e));
                let budget = budget.clone();
                waiting = Some(Box::pin(async move { budget.acquire(bytes).await }));
            }
            paced = async { waiting.as_mut().expect("guarded by the condition").await }, if waiting.is_some() => {
                waiting = None;
                let Some(encoded) = current(&mut translations, &cluster) else { continue };
                let traceparent = translations.borrow().traceparent.clone();
                if let Err(failure) = send_config(&mgmt, &label, &tx, &mut holds, (&encoded, traceparent.as_deref()), paced).await {
                    error = Some(failure);
                    break;
                }
            }
            changed = trust.changed() => {
                if changed.is_err() {
                    break;
                }
                let root = trust.borrow_and_update().clone();
                let message = ServerMessage::mesh_trust(trellis_relay::MeshTrust {
                    bundle_pem: root.bundle_pem.clone(),
                    active_root_sha256: root.root_sha256.clone(),
                });
                if tx.send(Ok(message)).await.is_err() {
                    break;
                }
            }
            Some((request_id, proxy_id)) = proxy_config_requests.recv() => {
                let message = ServerMessage::proxy_config_request(trellis_relay::ProxyConfigRequest { request_id, proxy_id });
                if tx.send(Ok(message)).await.is_err() {
                    break;
                }
            }
            () = shutdown.requested() => {
                // The agent reconnects (to this server restarted, or another replica) and keeps serving meanwhile.
                let _ = tx.try_send(Err(Status::unavailable("the management server is shutting down")));
                tracing::info!("management server shutting down: relay stream closed");
                break;
            }
            kicked = kicks.recv() => {
                if matches!(kicked, Ok(ref name) if *name == cluster) {
                    let _ = tx.send(Err(Status::permission_denied(format!("the credentials of cluster {cluster} were revoked (deregistered or rotated)")))).await;
                    tracing::warn!("cluster deregistered or rotated: relay stream closed");
                    break;
                }
            }
            message = incoming.next() => {
                match message {
                    Some(Ok(message)) => match handle_agent_message(&mgmt, &cluster, &label, &mut discovery_version, message) {
                        Reply::Nothing => {}
                        Reply::Rejected(rejected) => {
                            // The agent kept its last good config: it holds what it held before
                            // this one, which this stream no longer knows. Send the next one whole,
                            // and this one again whole once (it may have been refused for a delta
                            // that did not fit, not for its content).
                            if holds.retry_whole(&rejected) {
                                translations.mark_changed();
                            }
                        }
                        Reply::End(reason) => {
                            tracing::warn!(%reason, "relay stream closed");
                            let _ = tx.send(Err(Status::failed_precondition(reason.clone()))).await;
                            error = Some(reason);
                            break;
                        }
                    },
                    Some(Err(status)) => {
                        tracing::info!(%status, "relay stream ended with an error");
                        error = Some(format!("{:?}: {}", status.code(), status.message()));
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
        a.last_error = error;
    });
    tracing::info!("agent disconnected");
}

/// The latest translation of `cluster`, marked seen; only its own config is kept, not the whole
/// translation.
fn current(
    translations: &mut tokio::sync::watch::Receiver<Arc<Published>>,
    cluster: &str,
) -> Option<Arc<EncodedCluster>> {
    translations.borrow_and_update().clusters.get(cluster).cloned()
}

/// What one stream believes its agent holds.
struct Holds {
    /// The config last sent (the agent applies it or NACKs it), if the agent holds a known one.
    sent: Option<Arc<EncodedCluster>>,
    /// The version last resent whole after a NACK: never twice, or a bad config would loop.
    resent_whole: Option<String>,
}

impl Holds {
    fn after_hello(hello: &trellis_relay::Hello, published: &Published, cluster: &str) -> Self {
        let current = published.clusters.get(cluster);
        Holds {
            sent: current.filter(|c| c.version == hello.last_applied_version).cloned(),
            resent_whole: None,
        }
    }

    /// Payload bytes of the change that brings the agent to `encoded`.
    fn bytes_to_send(&self, encoded: &EncodedCluster) -> usize {
        let held = match &self.sent {
            Some(sent) if sent.version == encoded.version => return 0,
            Some(sent) => Some(&sent.sections),
            None => None,
        };
        let (upserts, _) = encoded.sections.delta_from(held);
        upserts.iter().map(|(_, s)| s.payload.len()).sum()
    }

    fn retry_whole(&mut self, rejected: &str) -> bool {
        self.sent = None;
        if self.resent_whole.as_deref() == Some(rejected) {
            return false;
        }
        self.resent_whole = Some(rejected.to_string());
        true
    }
}

/// Sends what the agent lacks of `encoded`: a delta from what it holds, cut into messages under
/// the relay's limit, made as they are sent. A paced change keeps its share of the send budget
/// until its agent has taken every message off the queue. An error ends the stream, with the
/// reason for `check`.
/// `traceparent` is the translation's: the push continues its trace, and hands its own on to
/// the agent in the messages.
async fn send_config(
    mgmt: &Mgmt,
    label: &ClusterLabel,
    tx: &Tx,
    holds: &mut Holds,
    (encoded, traceparent): (&Arc<EncodedCluster>, Option<&str>),
    paced: Paced,
) -> Result<(), String> {
    if holds.sent.as_ref().is_some_and(|sent| sent.version == encoded.version) {
        return Ok(());
    }
    let span = tracing::info_span!("push_config", cluster = %label.cluster, version = %encoded.version);
    if let Some(traceparent) = traceparent {
        trellis_support::trace_context::continue_trace(&span, traceparent);
    }
    let carried = trellis_support::trace_context::traceparent(&span).unwrap_or_default();
    push_config(mgmt, label, tx, holds, encoded, paced, carried)
        .instrument(span)
        .await
}

async fn push_config(
    mgmt: &Mgmt,
    label: &ClusterLabel,
    tx: &Tx,
    holds: &mut Holds,
    encoded: &Arc<EncodedCluster>,
    mut paced: Paced,
    traceparent: String,
) -> Result<(), String> {
    let (held, base) = match &holds.sent {
        Some(sent) => (Some(&sent.sections), sent.version.as_str()),
        None => (None, ""),
    };
    let (upserts, removes) = encoded.sections.delta_from(held);
    let (sections, removed) = (upserts.len(), removes.len());
    if let Some((name, section)) = upserts.iter().find(|(_, s)| s.payload.len() > MAX_SECTION_BYTES) {
        let reason = format!(
            "config section {name} is {} bytes, over the relay's {MAX_SECTION_BYTES}-byte limit; the agent keeps its last config",
            section.payload.len()
        );
        tracing::error!(%reason, "cannot deliver config");
        return Err(reason);
    }
    let closed = || "the relay stream closed while sending a config".to_string();
    let mut count = 0;
    for mut message in chunk(&encoded.version, base, &upserts, removes) {
        message.traceparent.clone_from(&traceparent);
        let slot = queue_slot(tx, &mut paced).await.map_err(|_| closed())?;
        slot.send(Ok(ServerMessage::delta(message)));
        count += 1;
    }
    if paced.is_held() {
        // Taken off the queue: the rest is in the connection's buffers and window.
        tokio::select! {
            drained = tx.reserve_many(STREAM_QUEUE) => { drained.map_err(|_| closed())?; }
            () = paced.expired() => {}
        }
    }
    tracing::info!(version = %encoded.version, base = %base, sections, removed, messages = count, "config sent");
    mgmt.metrics.config_pushes_total.get_or_create(label).inc();
    mgmt.update_agent(&label.cluster, |a| a.sent_version = encoded.version.clone());
    holds.sent = Some(encoded.clone());
    Ok(())
}

/// A free place in the stream's queue. Waiting past the hold limit gives the budget share back
/// and waits on without it.
async fn queue_slot<'a>(
    tx: &'a Tx,
    paced: &mut Paced,
) -> Result<mpsc::Permit<'a, Result<ServerMessage, Status>>, mpsc::error::SendError<()>> {
    if paced.is_held() {
        tokio::select! {
            slot = tx.reserve() => return slot,
            () = paced.expired() => {
                tracing::debug!("agent slow to take a large config: its share of the send budget is released");
                paced.release();
            }
        }
    }
    tx.reserve().await
}

/// What an agent's message asks of its stream.
enum Reply {
    Nothing,
    /// The agent refused this config version.
    Rejected(String),
    /// The stream cannot go on (the agent reconnects and starts over); why.
    End(String),
}

/// Handles one message from the agent. `discovery_version` is the version of the discovery
/// this stream last stored: a patch must follow it.
fn handle_agent_message(
    mgmt: &Mgmt,
    cluster: &str,
    label: &ClusterLabel,
    discovery_version: &mut Option<String>,
    message: AgentMessage,
) -> Reply {
    match message.body {
        Some(agent_message::Body::Discovery(discovery)) => {
            *discovery_version = None;
            match serde_json::from_slice::<ClusterDiscovery>(&discovery.payload) {
                // An agent speaks for its own cluster only, whatever the payload claims.
                Ok(mut report) => {
                    report.cluster = cluster.to_string();
                    tracing::debug!(version = %discovery.version, workloads = report.workloads.len(), "discovery received");
                    match mgmt.report_discovery(report) {
                        Ok(()) => *discovery_version = Some(discovery.version),
                        Err(error) => tracing::error!(%error, "cannot store discovery"),
                    }
                }
                Err(error) => tracing::warn!(%error, "ignoring malformed discovery"),
            }
        }
        Some(agent_message::Body::ProxyConfig(reply)) => {
            let answer = if reply.error.is_empty() {
                Ok(reply.config_dump)
            } else {
                Err(reply.error.chars().take(1024).collect())
            };
            mgmt.proxy_queries.answer(cluster, reply.request_id, answer);
        }
        Some(agent_message::Body::DiscoveryPatch(patch)) => {
            if discovery_version.as_deref() != Some(patch.base.as_str()) {
                return Reply::End(format!(
                    "the agent patched discovery version {:?} but this stream holds {:?}; it reconnects and reports whole",
                    patch.base,
                    discovery_version.as_deref().unwrap_or("none")
                ));
            }
            let mut report = match serde_json::from_slice::<trellis_model::DiscoveryPatch>(&patch.payload) {
                Ok(report) => report,
                Err(error) => return Reply::End(format!("malformed discovery patch: {error}")),
            };
            report.cluster = cluster.to_string();
            tracing::debug!(version = %patch.version, workloads = report.len(), "discovery patch received");
            if let Err(error) = mgmt.report_discovery_patch(&report) {
                *discovery_version = None;
                return Reply::End(format!("cannot store discovery patch: {error}"));
            }
            *discovery_version = Some(patch.version);
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
            return Reply::Rejected(nack.version);
        }
        Some(agent_message::Body::Proxies(report)) => {
            match serde_json::from_slice::<Vec<trellis_model::ProxyState>>(&report.payload) {
                Ok(states) => mgmt.update_agent(cluster, |a| a.proxies = states),
                Err(error) => tracing::warn!(%error, "ignoring malformed proxy report"),
            }
        }
        Some(agent_message::Body::Hello(_)) | None => tracing::warn!("ignoring unexpected relay message"),
    }
    Reply::Nothing
}
