//! ADS over real gRPC on a loopback port: a tonic client plays Envoy against
//! `AdsServer` fed by an in-memory `SnapshotSource`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use envoy_types::util::pack_any;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status, Streaming};
use trellis_xds::{AdsServer, CLUSTER_TYPE, ProxyStatusBoard, Snapshot, SnapshotSource, StreamPeer, XdsMetrics};

const WAIT: Duration = Duration::from_secs(5);
/// How long we listen to be confident nothing is coming.
const QUIET: Duration = Duration::from_millis(300);

// === test source ===

#[derive(Default)]
struct TestSource {
    watches: Mutex<HashMap<String, watch::Sender<Option<Arc<Snapshot>>>>>,
    revoked: Mutex<std::collections::HashSet<String>>,
}

impl TestSource {
    fn set(&self, node_id: &str, snapshot: Option<Snapshot>) {
        let mut watches = self.watches.lock().unwrap();
        let tx = watches
            .entry(node_id.to_owned())
            .or_insert_with(|| watch::channel(None).0);
        tx.send_replace(snapshot.map(Arc::new));
    }
}

impl SnapshotSource for TestSource {
    /// Nodes named `locked*` need `authorization: Bearer right`; revoked nodes get nothing.
    fn authorize(&self, node_id: &str, peer: &StreamPeer) -> Result<(), Status> {
        if self.revoked.lock().unwrap().contains(node_id) {
            return Err(Status::unauthenticated("credential revoked"));
        }
        let presented = peer.metadata.get("authorization").and_then(|v| v.to_str().ok());
        if node_id.starts_with("locked") && presented != Some("Bearer right") {
            return Err(Status::unauthenticated("wrong or missing token"));
        }
        Ok(())
    }

    fn subscribe(&self, node_id: &str) -> Result<watch::Receiver<Option<Arc<Snapshot>>>, Status> {
        if node_id == "refused" {
            return Err(Status::permission_denied("unknown proxy"));
        }
        let mut watches = self.watches.lock().unwrap();
        Ok(watches
            .entry(node_id.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe())
    }
}

// === harness ===

struct Harness {
    addr: SocketAddr,
    source: Arc<TestSource>,
    board: ProxyStatusBoard,
    metrics: XdsMetrics,
}

async fn spawn_server() -> Harness {
    let source = Arc::new(TestSource::default());
    let metrics = XdsMetrics::default();
    let server = AdsServer::new(source.clone(), metrics.clone());
    let board = server.status();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        // The workspace builds tonic without its `router` feature; one service needs no router.
        tonic::transport::Server::builder().serve_with_incoming(server.into_service(), TcpIncoming::from(listener)),
    );
    Harness {
        addr,
        source,
        board,
        metrics,
    }
}

/// One fake proxy's ADS stream.
struct Proxy {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Proxy {
    async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, None).await
    }

    /// Opens a stream sending `authorization: <value>` as Envoy's `initial_metadata` does.
    async fn connect_with(addr: SocketAddr, authorization: Option<&str>) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        let rx = client.stream_aggregated_resources(request).await.unwrap().into_inner();
        Self { tx, rx }
    }

    async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> Result<DiscoveryResponse, Status> {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .map(|m| m.expect("stream ended"))
    }

    async fn expect_silence(&mut self) {
        if let Ok(msg) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }
}

fn mk_cds_request(node_id: Option<&str>, version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node_id.map(|id| Node {
            id: id.into(),
            cluster: "test".into(),
            ..Default::default()
        }),
        type_url: CLUSTER_TYPE.into(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn mk_snapshot(clusters: &[(&str, u64)]) -> Snapshot {
    let mut s = Snapshot::default();
    let resources = clusters
        .iter()
        .map(|(name, timeout_secs)| {
            let cluster = Cluster {
                name: name.to_string(),
                connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: *timeout_secs as i64,
                    nanos: 0,
                }),
                ..Default::default()
            };
            (name.to_string(), pack_any(cluster))
        })
        .collect();
    s.insert(CLUSTER_TYPE, resources);
    s
}

fn cluster_names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .collect()
}

/// Polls the board until `pred` holds (the server updates it asynchronously).
async fn eventually(board: &ProxyStatusBoard, pred: impl Fn(&[trellis_xds::ProxyStatus]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !pred(&board.snapshot()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met: {:?}",
            board.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === tests ===

#[tokio::test]
async fn pushes_new_version_when_snapshot_changes() {
    let h = spawn_server().await;
    h.source.set("proxy-a", Some(mk_snapshot(&[("backend", 1)])));
    let mut proxy = Proxy::connect(h.addr).await;

    proxy.send(mk_cds_request(Some("proxy-a"), "", "")).await;
    let first = proxy.recv().await.unwrap();
    assert_eq!(first.type_url, CLUSTER_TYPE);
    assert_eq!(cluster_names(&first), ["backend"]);
    proxy
        .send(mk_cds_request(None, &first.version_info, &first.nonce))
        .await;
    proxy.expect_silence().await;

    h.source.set("proxy-a", Some(mk_snapshot(&[("backend", 2), ("db", 1)])));
    let pushed = proxy.recv().await.unwrap();
    assert_ne!(pushed.version_info, first.version_info);
    assert_ne!(pushed.nonce, first.nonce);
    assert_eq!(cluster_names(&pushed), ["backend", "db"]);
    proxy
        .send(mk_cds_request(None, &pushed.version_info, &pushed.nonce))
        .await;

    let v = pushed.version_info.clone();
    eventually(&h.board, |all| {
        all.len() == 1
            && all[0].node_id == "proxy-a"
            && all[0].types[CLUSTER_TYPE].last_acked_version.as_deref() == Some(v.as_str())
    })
    .await;
    assert_eq!(h.metrics.pushes_total(CLUSTER_TYPE), 2);
    assert_eq!(h.metrics.proxies_connected(), 1);
}

#[tokio::test]
async fn holds_requests_until_snapshot_is_ready() {
    let h = spawn_server().await;
    let mut proxy = Proxy::connect(h.addr).await;
    proxy.send(mk_cds_request(Some("proxy-b"), "", "")).await;
    proxy.expect_silence().await;

    h.source.set("proxy-b", Some(mk_snapshot(&[("backend", 1)])));
    assert_eq!(cluster_names(&proxy.recv().await.unwrap()), ["backend"]);
}

#[tokio::test]
async fn nack_is_recorded_and_not_resent() {
    let h = spawn_server().await;
    h.source.set("proxy-c", Some(mk_snapshot(&[("backend", 1)])));
    let mut proxy = Proxy::connect(h.addr).await;
    proxy.send(mk_cds_request(Some("proxy-c"), "", "")).await;
    let first = proxy.recv().await.unwrap();

    let mut nack = mk_cds_request(None, "", &first.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad cluster".into(),
        details: vec![],
    });
    proxy.send(nack).await;
    proxy.expect_silence().await;
    eventually(&h.board, |all| {
        all[0].types[CLUSTER_TYPE].last_nack.as_deref() == Some("bad cluster")
    })
    .await;
    assert_eq!(h.metrics.nacks_total(CLUSTER_TYPE), 1);

    // A fixed snapshot is pushed and supersedes the NACK.
    h.source.set("proxy-c", Some(mk_snapshot(&[("backend", 2)])));
    let fixed = proxy.recv().await.unwrap();
    assert_ne!(fixed.version_info, first.version_info);
}

#[tokio::test]
async fn first_request_without_node_id_is_invalid_argument() {
    let h = spawn_server().await;
    let mut proxy = Proxy::connect(h.addr).await;
    proxy.send(mk_cds_request(None, "", "")).await;
    assert_eq!(proxy.recv().await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn source_refusal_reaches_the_proxy() {
    let h = spawn_server().await;
    let mut proxy = Proxy::connect(h.addr).await;
    proxy.send(mk_cds_request(Some("refused"), "", "")).await;
    assert_eq!(proxy.recv().await.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn disconnect_removes_proxy_from_status_board() {
    let h = spawn_server().await;
    h.source.set("proxy-d", Some(mk_snapshot(&[("backend", 1)])));
    let mut proxy = Proxy::connect(h.addr).await;
    proxy.send(mk_cds_request(Some("proxy-d"), "", "")).await;
    proxy.recv().await.unwrap();
    eventually(&h.board, |all| all.len() == 1).await;
    assert_eq!(h.metrics.proxies_connected(), 1);

    drop(proxy);
    eventually(&h.board, |all| all.is_empty()).await;
    assert_eq!(h.metrics.proxies_connected(), 0);
}

#[tokio::test]
async fn a_node_is_served_only_to_a_stream_with_its_credential() {
    let h = spawn_server().await;
    h.source.set("locked-a", Some(mk_snapshot(&[("secret-bearing", 1)])));
    for authorization in [None, Some("Bearer wrong"), Some("right"), Some("Basic right")] {
        let mut proxy = Proxy::connect_with(h.addr, authorization).await;
        proxy.send(mk_cds_request(Some("locked-a"), "", "")).await;
        let refused = proxy.recv().await.expect_err("served without the right credential");
        assert_eq!(refused.code(), Code::Unauthenticated, "{authorization:?}: {refused:?}");
    }
    assert_eq!(h.metrics.refused_total(), 4);
    // Nothing was registered as connected for the refused streams.
    assert!(h.board.snapshot().is_empty(), "{:?}", h.board.snapshot());

    let mut proxy = Proxy::connect_with(h.addr, Some("Bearer right")).await;
    proxy.send(mk_cds_request(Some("locked-a"), "", "")).await;
    assert_eq!(cluster_names(&proxy.recv().await.unwrap()), ["secret-bearing"]);
}

#[tokio::test]
async fn a_revoked_credential_closes_the_stream_at_the_next_change() {
    let h = spawn_server().await;
    h.source.set("locked-b", Some(mk_snapshot(&[("one", 1)])));
    let mut proxy = Proxy::connect_with(h.addr, Some("Bearer right")).await;
    proxy.send(mk_cds_request(Some("locked-b"), "", "")).await;
    let first = proxy.recv().await.unwrap();
    proxy
        .send(mk_cds_request(None, &first.version_info, &first.nonce))
        .await;
    h.source.revoked.lock().unwrap().insert("locked-b".into());
    h.source.set("locked-b", Some(mk_snapshot(&[("two", 1)])));
    let closed = proxy
        .recv()
        .await
        .expect_err("the new snapshot reached a revoked stream");
    assert_eq!(closed.code(), Code::Unauthenticated);
    assert_eq!(h.metrics.refused_total(), 1);
}
