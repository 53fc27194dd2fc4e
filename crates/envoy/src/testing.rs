//! Builders for small IR inputs shared by the unit tests.

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
    }
}

pub(crate) fn mk_upstream(name: &str, key: &str, endpoints: Vec<Endpoint>) -> Upstream {
    Upstream {
        name: name.to_string(),
        key: key.to_string(),
        endpoints,
    }
}

pub(crate) fn mk_forward(destinations: &[(&str, &str, u32)]) -> RouteAction {
    RouteAction::Forward(Forward {
        destinations: destinations
            .iter()
            .map(|(upstream, key, weight)| WeightedUpstream {
                upstream: upstream.to_string(),
                key: key.to_string(),
                weight: *weight,
            })
            .collect(),
        path_rewrite: None,
        host_rewrite: None,
    })
}

/// Cluster `east`: `reviews` split 90/10 between v1 (local plus a remote gateway) and v2.
pub(crate) fn mk_cluster_config() -> ClusterConfig {
    ClusterConfig {
        cluster: "east".to_string(),
        upstreams: vec![
            mk_upstream(
                "reviews-v1",
                "outbound_.9080_.v1_.reviews",
                vec![mk_endpoint("10.0.0.1", 1, "east"), mk_endpoint("10.1.0.100", 3, "west")],
            ),
            mk_upstream(
                "reviews-v2",
                "outbound_.9080_.v2_.reviews",
                vec![mk_endpoint("10.0.0.2", 1, "east")],
            ),
        ],
        virtual_hosts: vec![VirtualHost {
            name: "reviews".to_string(),
            domains: vec![
                "reviews.mesh.internal".to_string(),
                "reviews.mesh.internal:*".to_string(),
            ],
            routes: vec![Route {
                name: "default".to_string(),
                matcher: RouteMatch::default(),
                action: mk_forward(&[
                    ("reviews-v1", "outbound_.9080_.v1_.reviews", 90),
                    ("reviews-v2", "outbound_.9080_.v2_.reviews", 10),
                ]),
            }],
        }],
        gateway_upstreams: vec![mk_upstream(
            "gw|reviews-v1",
            "outbound_.9080_.v1_.reviews",
            vec![mk_endpoint("10.0.0.1", 1, "east")],
        )],
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
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use prost::Message;
    let filter = &listener.filter_chains[0].filters[0];
    assert_eq!(filter.name, crate::common::HCM_FILTER);
    match &filter.config_type {
        Some(ConfigType::TypedConfig(any)) => Message::decode(any.value.as_slice()).expect("HCM decodes"),
        other => panic!("listener {} has no typed HCM: {other:?}", listener.name),
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
