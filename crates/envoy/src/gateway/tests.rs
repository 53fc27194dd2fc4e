use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, route::Action, route_action::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

use super::*;
use crate::testing::{addr, hcm, mk_cluster_config};

fn mk_gateway() -> ProxyResources {
    east_west_gateway(
        &mk_cluster_config(),
        &GatewaySpec {
            cluster: "east",
            listen_address: "0.0.0.0",
            port: 15443,
        },
    )
}

#[test]
fn serves_only_gateway_upstreams_over_eds() {
    let r = mk_gateway();
    let clusters: Vec<_> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(clusters, ["gw|reviews-v1"]);
    assert_eq!(r.endpoints[0].cluster_name, "gw|reviews-v1");
    assert_eq!(r.endpoints[0].endpoints[0].lb_endpoints.len(), 1);
}

#[test]
fn listener_fetches_the_east_west_routes_over_rds() {
    let r = mk_gateway();
    let listener = &r.listeners[0];
    assert_eq!(listener.name, "east-west");
    assert_eq!(addr(&listener.address), ("0.0.0.0".to_string(), 15443));
    match hcm(listener).route_specifier {
        Some(RouteSpecifier::Rds(rds)) => assert_eq!(rds.route_config_name, "east-west"),
        other => panic!("expected RDS, got {other:?}"),
    }
}

#[test]
fn route_matches_the_routing_key_and_marks_the_gateway() {
    let r = mk_gateway();
    let vhost = &r.routes[0].virtual_hosts[0];
    assert_eq!(
        (vhost.name.as_str(), vhost.domains.as_slice()),
        ("east-west", &["*".to_string()][..])
    );
    let route = &vhost.routes[0];
    let header = &route.r#match.as_ref().expect("match").headers[0];
    assert_eq!(header.name, trellis_model::ROUTING_HEADER);
    match &header.header_match_specifier {
        Some(HeaderMatchSpecifier::StringMatch(m)) => assert_eq!(
            m.match_pattern,
            Some(MatchPattern::Exact("outbound_.9080_.v1_.reviews".to_string()))
        ),
        other => panic!("expected an exact match, got {other:?}"),
    }
    match &route.action {
        Some(Action::Route(a)) => assert_eq!(
            a.cluster_specifier,
            Some(ClusterSpecifier::Cluster("gw|reviews-v1".to_string()))
        ),
        other => panic!("expected a route action, got {other:?}"),
    }
    let added = route.request_headers_to_add[0].header.as_ref().expect("header");
    assert_eq!(
        (added.key.as_str(), added.value.as_str()),
        (trellis_model::GATEWAY_HEADER, "east")
    );
}
