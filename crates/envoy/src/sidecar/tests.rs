use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action::ClusterSpecifier};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter,
};

use super::*;
use crate::testing::{addr, hcm, mk_cluster_config, mk_workload};

fn mk_sidecar() -> ProxyResources {
    let workload = mk_workload();
    sidecar(
        &mk_cluster_config(),
        &SidecarSpec {
            workload: &workload,
            outbound_address: "127.0.0.1",
            outbound_port: 15001,
            inbound_address: "10.0.0.1",
        },
    )
}

#[test]
fn one_eds_cluster_over_ads_per_upstream_then_inbound_clusters() {
    let r = mk_sidecar();
    let names: Vec<_> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["reviews-v1", "reviews-v2", "inbound|9080", "inbound|5432"]);
    let eds = &r.clusters[0];
    assert_eq!(
        eds.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    let source = eds.eds_cluster_config.as_ref().and_then(|e| e.eds_config.as_ref());
    assert!(matches!(
        source.and_then(|s| s.config_source_specifier.as_ref()),
        Some(ConfigSourceSpecifier::Ads(_))
    ));
}

#[test]
fn endpoints_are_grouped_by_cluster_with_their_weights() {
    let r = mk_sidecar();
    let cla = &r.endpoints[0];
    assert_eq!(cla.cluster_name, "reviews-v1");
    let groups: Vec<_> = cla
        .endpoints
        .iter()
        .map(|l| {
            let region = l.locality.as_ref().map(|l| l.region.clone()).unwrap_or_default();
            let weights: Vec<_> = l
                .lb_endpoints
                .iter()
                .map(|e| e.load_balancing_weight.map(|w| w.value))
                .collect();
            (region, weights)
        })
        .collect();
    assert_eq!(
        groups,
        [("east".to_string(), vec![Some(1)]), ("west".to_string(), vec![Some(3)])]
    );
}

#[test]
fn outbound_listener_fetches_routes_over_rds_with_a_typed_router() {
    let r = mk_sidecar();
    let outbound = &r.listeners[0];
    assert_eq!(outbound.name, OUTBOUND_LISTENER);
    assert_eq!(addr(&outbound.address), ("127.0.0.1".to_string(), 15001));
    let hcm = hcm(outbound);
    assert_eq!(hcm.stat_prefix, "outbound");
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => assert_eq!(rds.route_config_name, OUTBOUND_ROUTE),
        other => panic!("expected RDS, got {other:?}"),
    }
    let router = &hcm.http_filters[0];
    assert_eq!(router.name, "envoy.filters.http.router");
    assert!(matches!(
        &router.config_type,
        Some(http_filter::ConfigType::TypedConfig(any)) if any.type_url.ends_with("router.v3.Router")
    ));
    assert_eq!(r.routes[0].name, OUTBOUND_ROUTE);
    assert_eq!(r.routes[0].virtual_hosts[0].name, "reviews");
}

#[test]
fn inbound_http_port_routes_everything_to_a_static_cluster_on_the_app_port() {
    let r = mk_sidecar();
    let listener = &r.listeners[1];
    assert_eq!(listener.name, "inbound|9080");
    assert_eq!(addr(&listener.address), ("10.0.0.1".to_string(), 15006));
    let route_config = match hcm(listener).route_specifier {
        Some(RouteSpecifier::RouteConfig(config)) => config,
        other => panic!("expected inline routes, got {other:?}"),
    };
    let vhost = &route_config.virtual_hosts[0];
    assert_eq!(vhost.domains, ["*"]);
    match &vhost.routes[0].action {
        Some(Action::Route(action)) => assert_eq!(
            action.cluster_specifier,
            Some(ClusterSpecifier::Cluster("inbound|9080".to_string()))
        ),
        other => panic!("expected a route action, got {other:?}"),
    }

    let cluster = &r.clusters[2];
    assert_eq!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
    );
    let endpoint = &cluster.load_assignment.as_ref().expect("inline endpoints").endpoints[0].lb_endpoints[0];
    match &endpoint.host_identifier {
        Some(HostIdentifier::Endpoint(e)) => {
            assert_eq!(addr(&e.address), ("127.0.0.1".to_string(), 8080))
        }
        other => panic!("expected an endpoint, got {other:?}"),
    }
}

#[test]
fn inbound_tcp_port_gets_a_tcp_proxy() {
    let r = mk_sidecar();
    let listener = &r.listeners[2];
    assert_eq!(listener.name, "inbound|5432");
    let filter = &listener.filter_chains[0].filters[0];
    assert_eq!(filter.name, "envoy.filters.network.tcp_proxy");
    assert!(matches!(
        &filter.config_type,
        Some(ConfigType::TypedConfig(any)) if any.type_url.ends_with("tcp_proxy.v3.TcpProxy")
    ));
}

#[test]
fn output_is_deterministic() {
    assert_eq!(mk_sidecar().into_typed(), mk_sidecar().into_typed());
}
