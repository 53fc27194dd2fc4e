//! A cluster's east-west gateway: the door other clusters' sidecars use. It trusts nothing but
//! the routing header: a request whose key names one of `ir.gateway_upstreams` goes to that
//! upstream's local endpoints; any other request gets Envoy's 404.

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    header_matcher::HeaderMatchSpecifier, route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use trellis_model::ir::Upstream;
use trellis_model::{ClusterConfig, GATEWAY_HEADER, ROUTING_HEADER};

use crate::ProxyResources;
use crate::common::{self, Routes, overwrite_header};
use crate::routes::exact;

/// Name of the gateway's listener, of its route configuration and of its one virtual host.
pub const GATEWAY_LISTENER: &str = "east-west";
pub const GATEWAY_ROUTE: &str = "east-west";

/// The gateway a config is for.
#[derive(Debug, Clone, Copy)]
pub struct GatewaySpec<'a> {
    /// The gateway's own cluster, stamped on every forwarded request.
    pub cluster: &'a str,
    pub listen_address: &'a str,
    pub port: u16,
}

pub fn east_west_gateway(ir: &ClusterConfig, spec: &GatewaySpec) -> ProxyResources {
    let upstreams = &ir.gateway_upstreams;
    ProxyResources {
        clusters: upstreams.iter().map(|u| common::eds_cluster(&u.name)).collect(),
        endpoints: upstreams.iter().map(common::load_assignment).collect(),
        listeners: vec![common::http_listener(
            GATEWAY_LISTENER,
            spec.listen_address,
            spec.port,
            Routes::Rds(GATEWAY_ROUTE.to_string()),
        )],
        routes: vec![RouteConfiguration {
            name: GATEWAY_ROUTE.to_string(),
            virtual_hosts: vec![VirtualHost {
                name: GATEWAY_ROUTE.to_string(),
                domains: vec!["*".to_string()],
                routes: upstreams.iter().map(|u| keyed_route(u, spec.cluster)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn keyed_route(upstream: &Upstream, gateway_cluster: &str) -> Route {
    Route {
        name: upstream.name.clone(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            headers: vec![HeaderMatcher {
                name: ROUTING_HEADER.to_string(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(exact(&upstream.key))),
                ..Default::default()
            }],
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(upstream.name.clone())),
            ..Default::default()
        })),
        request_headers_to_add: vec![overwrite_header(GATEWAY_HEADER, gateway_cluster)],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
