//! Builders for small IR inputs shared by the unit tests.

use std::sync::Arc;
use trellis_model::ir::{
    ClusterConfig, Endpoint, Forward, Route, RouteAction, RouteMatch, Upstream, VirtualHost, WeightedUpstream,
};
use trellis_model::{Protocol, Workload, WorkloadPort};

pub(crate) fn mk_endpoint(address: &str, weight: u32, cluster: &str) -> Endpoint {
    Endpoint {
        address: address.to_string(),
        port: 9080,
        weight,
        cluster: cluster.to_string(),
        via_gateway: cluster != "east",
        priority: 0,
    }
}

pub(crate) const REVIEWS_ID: &str = "spiffe://trellis.local/ns/default/sa/reviews";

pub(crate) fn mk_upstream(name: &str, key: &str, endpoints: Vec<Endpoint>, identities: &[&str]) -> Upstream {
    Upstream {
        name: name.to_string(),
        key: key.to_string(),
        endpoints,
        identities: identities.iter().map(|id| id.to_string()).collect(),
        outlier_detection: None,
        traffic: None,
        workspaces: None,
        external: None,
        locality_weights: Default::default(),
        terminate_tls: false,
    }
}

pub(crate) fn mk_forward(destinations: &[(&str, u32)]) -> RouteAction {
    RouteAction::Forward(Forward {
        destinations: destinations
            .iter()
            .map(|(upstream, weight)| WeightedUpstream {
                upstream: upstream.to_string(),
                weight: *weight,
            })
            .collect(),
        path_rewrite: None,
        host_rewrite: None,
    })
}

/// Cluster `east`: `reviews` split 90/10 between v1 (local plus a remote gateway, two
/// identities) and v2 (no identities listed). The gateway serves both versions.
pub(crate) fn mk_cluster_config() -> ClusterConfig {
    ClusterConfig {
        cluster: "east".to_string(),
        trust_domain: "trellis.local".to_string(),
        upstreams: [
            mk_upstream(
                "reviews-v1",
                "outbound_.9080_.v1_.reviews.mesh.internal",
                vec![mk_endpoint("10.0.0.1", 1, "east"), mk_endpoint("10.1.0.100", 3, "west")],
                &["spiffe://trellis.local/ns/default/sa/legacy", REVIEWS_ID],
            ),
            mk_upstream(
                "reviews-v2",
                "outbound_.9080_.v2_.reviews.mesh.internal",
                vec![mk_endpoint("10.0.0.2", 1, "east")],
                &[],
            ),
        ]
        .into_iter()
        .map(Arc::new)
        .collect(),
        virtual_hosts: [VirtualHost {
            name: "reviews".to_string(),
            domains: vec![
                "reviews.mesh.internal".to_string(),
                "reviews.mesh.internal:*".to_string(),
            ],
            routes: vec![Route {
                name: "default".to_string(),
                matcher: RouteMatch::default(),
                action: mk_forward(&[("reviews-v1", 90), ("reviews-v2", 10)]),
                policies: Default::default(),
            }],
            workspaces: None,
            clients: None,
        }]
        .into_iter()
        .map(Arc::new)
        .collect(),
        gateway_upstreams: vec![
            mk_upstream(
                "gw|reviews-v1",
                "outbound_.9080_.v1_.reviews.mesh.internal",
                vec![mk_endpoint("10.0.0.1", 1, "east")],
                &[REVIEWS_ID],
            ),
            mk_upstream(
                "gw|reviews-v2",
                "outbound_.9080_.v2_.reviews.mesh.internal",
                vec![mk_endpoint("10.0.0.2", 1, "east"), mk_endpoint("10.0.0.3", 1, "east")],
                &[REVIEWS_ID],
            ),
        ],
        inbound_policies: Vec::new(),
        namespace_workspaces: Default::default(),
        ingress_gateways: Vec::new(),
        addon_servers: Vec::new(),
        addons: Default::default(),
        inbound_routes: Vec::new(),
        access_logs: Vec::new(),
    }
}

pub(crate) fn mk_workload() -> Workload {
    Workload {
        name: "reviews-1".to_string(),
        namespace: "default".to_string(),
        service: "reviews".to_string(),
        address: "10.0.0.1".to_string(),
        ports: vec![
            WorkloadPort {
                name: "http".to_string(),
                port: 9080,
                protocol: Protocol::Http,
                inbound_port: 15006,
                app_port: 8080,
            },
            WorkloadPort {
                name: "db".to_string(),
                port: 5432,
                protocol: Protocol::Tcp,
                inbound_port: 15007,
                app_port: 5433,
            },
        ],
        ..Default::default()
    }
}

/// The HTTP connection manager of a listener's first filter.
pub(crate) fn hcm(
    listener: &envoy_types::pb::envoy::config::listener::v3::Listener,
) -> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager {
    let filter = &listener.filter_chains[0].filters[0];
    assert_eq!(filter.name, crate::common::HCM_FILTER);
    typed(filter)
}

/// The route configuration an HTTP connection manager fetches over RDS, from `resources`.
pub(crate) fn rds_routes(
    resources: &crate::ProxyResources,
    http: &envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
) -> envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
    let Some(RouteSpecifier::Rds(rds)) = &http.route_specifier else {
        panic!("expected routes over RDS, got {:?}", http.route_specifier)
    };
    resources
        .routes
        .iter()
        .find(|r| r.name == rds.route_config_name)
        .unwrap_or_else(|| panic!("no route configuration {}", rds.route_config_name))
        .clone()
}

/// The typed config of a network filter, decoded as `M`.
pub(crate) fn typed<M: prost::Message + prost::Name + Default>(
    filter: &envoy_types::pb::envoy::config::listener::v3::Filter,
) -> M {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    match &filter.config_type {
        Some(ConfigType::TypedConfig(any)) => unpack(any),
        other => panic!("filter {} has no typed config: {other:?}", filter.name),
    }
}

/// An `Any` decoded as `M`, after checking its type URL.
pub(crate) fn unpack<M: prost::Message + prost::Name + Default>(any: &envoy_types::pb::google::protobuf::Any) -> M {
    assert_eq!(any.type_url, M::type_url());
    M::decode(any.value.as_slice()).expect("Any decodes")
}

/// The TLS context in a transport socket, decoded as `M` (`UpstreamTlsContext` or
/// `DownstreamTlsContext`), after checking the socket is Envoy's TLS one.
pub(crate) fn tls_context<M: prost::Message + prost::Name + Default>(
    socket: &Option<envoy_types::pb::envoy::config::core::v3::TransportSocket>,
) -> M {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let socket = socket.as_ref().expect("a transport socket");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    match &socket.config_type {
        Some(ConfigType::TypedConfig(any)) => unpack(any),
        other => panic!("transport socket has no typed config: {other:?}"),
    }
}

/// `(address, port)` of a socket address.
pub(crate) fn addr(address: &Option<envoy_types::pb::envoy::config::core::v3::Address>) -> (String, u32) {
    use envoy_types::pb::envoy::config::core::v3::{address::Address, socket_address::PortSpecifier};
    match address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(Address::SocketAddress(sa)) => match sa.port_specifier {
            Some(PortSpecifier::PortValue(port)) => (sa.address.clone(), port),
            _ => panic!("no port in {sa:?}"),
        },
        other => panic!("not a socket address: {other:?}"),
    }
}

/// The sidecar of `reviews-1` for [`mk_cluster_config`].
pub(crate) fn sidecar_resources() -> crate::ProxyResources {
    let workload = mk_workload();
    crate::sidecar(
        &mk_cluster_config(),
        &crate::SidecarSpec {
            workload: &workload,
            outbound_address: "127.0.0.1",
            outbound_port: 15001,
            inbound_address: "10.0.0.1",
            access_log: &trellis_model::access_log::AccessLogSink::Stdout,
        },
    )
}
