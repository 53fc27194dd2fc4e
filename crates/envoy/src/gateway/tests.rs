use envoy_types::pb::envoy::config::listener::v3::listener_filter;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use super::*;
use crate::testing::{addr, mk_cluster_config, mk_endpoint, mk_upstream, typed, unpack};

fn mk_gateway() -> ProxyResources {
    east_west_gateway(&mk_cluster_config(), &mk_spec())
}

fn mk_spec() -> GatewaySpec<'static> {
    GatewaySpec {
        listen_address: "0.0.0.0",
        port: 15443,
    }
}

/// `(server names, filter name, tcp_proxy stat prefix, tcp_proxy cluster)` of each chain.
fn chains(listener: &Listener) -> Vec<(Vec<String>, String, String, String)> {
    listener
        .filter_chains
        .iter()
        .map(|chain| {
            assert_eq!(chain.filters.len(), 1, "one filter per chain");
            assert!(chain.transport_socket.is_none(), "the gateway must not terminate TLS");
            let filter = &chain.filters[0];
            let tcp: TcpProxy = typed(filter);
            let cluster = match tcp.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) => cluster,
                other => panic!("expected one cluster, got {other:?}"),
            };
            let server_names = chain
                .filter_chain_match
                .as_ref()
                .expect("a filter chain match")
                .server_names
                .clone();
            (server_names, filter.name.clone(), tcp.stat_prefix, cluster)
        })
        .collect()
}

#[test]
fn serves_only_gateway_upstreams_over_eds_in_plain_tcp() {
    let r = mk_gateway();
    let clusters: Vec<_> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(clusters, ["gw|reviews-v1", "gw|reviews-v2"]);
    assert!(
        r.clusters.iter().all(|c| c.transport_socket.is_none()),
        "TLS passes through to the server sidecar"
    );
    assert_eq!(r.endpoints[0].cluster_name, "gw|reviews-v1");
    assert_eq!(r.endpoints[0].endpoints[0].lb_endpoints.len(), 1);
    assert_eq!(r.endpoints[1].endpoints[0].lb_endpoints.len(), 2);
}

#[test]
fn no_http_no_routes_no_secrets() {
    let r = mk_gateway();
    assert!(r.routes.is_empty());
    assert!(r.secrets.is_empty());
}

#[test]
fn listener_inspects_tls_to_read_the_sni() {
    let r = mk_gateway();
    assert_eq!(r.listeners.len(), 1);
    let listener = &r.listeners[0];
    assert_eq!(listener.name, GATEWAY_LISTENER);
    assert_eq!(addr(&listener.address), ("0.0.0.0".to_string(), 15443));
    let [inspector] = listener.listener_filters.as_slice() else {
        panic!("expected one listener filter, got {:?}", listener.listener_filters);
    };
    assert_eq!(inspector.name, "envoy.filters.listener.tls_inspector");
    match &inspector.config_type {
        Some(listener_filter::ConfigType::TypedConfig(any)) => {
            let _: TlsInspector = unpack(any);
        }
        other => panic!("expected a typed tls_inspector, got {other:?}"),
    }
    assert!(
        listener.default_filter_chain.is_none(),
        "unknown SNI must match nothing"
    );
}

#[test]
fn one_chain_per_key_matches_its_sni_and_proxies_tcp_to_its_cluster() {
    let r = mk_gateway();
    let proxy = |key: &str, cluster: &str| {
        (
            vec![key.to_string()],
            "envoy.filters.network.tcp_proxy".to_string(),
            cluster.to_string(),
            cluster.to_string(),
        )
    };
    assert_eq!(
        chains(&r.listeners[0]),
        [
            proxy("outbound_.9080_.v1_.reviews.mesh.internal", "gw|reviews-v1"),
            proxy("outbound_.9080_.v2_.reviews.mesh.internal", "gw|reviews-v2"),
        ]
    );
}

#[test]
fn a_repeated_key_keeps_only_its_first_upstream() {
    let mut ir = mk_cluster_config();
    let key = ir.gateway_upstreams[0].key.clone();
    ir.gateway_upstreams.push(mk_upstream(
        "gw|zzz",
        &key,
        vec![mk_endpoint("10.0.0.9", 1, "east")],
        &[],
    ));
    let r = east_west_gateway(&ir, &mk_spec());
    let clusters: Vec<_> = chains(&r.listeners[0]).into_iter().map(|c| c.3).collect();
    assert_eq!(clusters, ["gw|reviews-v1", "gw|reviews-v2"]);
}

#[test]
fn with_nothing_to_serve_one_chain_without_filters_closes_everything() {
    let ir = ClusterConfig {
        gateway_upstreams: Vec::new(),
        ..mk_cluster_config()
    };
    let r = east_west_gateway(&ir, &mk_spec());
    assert!(r.clusters.is_empty() && r.endpoints.is_empty());
    let [chain] = r.listeners[0].filter_chains.as_slice() else {
        panic!("expected one chain, got {:?}", r.listeners[0].filter_chains);
    };
    assert!(chain.filters.is_empty());
    assert!(chain.filter_chain_match.is_none());
}

#[test]
fn output_is_deterministic() {
    assert_eq!(mk_gateway().into_typed(), mk_gateway().into_typed());
}
