//! The route weights in an RDS response, read the way a proxy must read them (from the protobuf
//! bytes it received) but without building the rest of each route configuration.
//!
//! A thousand simulated proxies share this process's cores with the agent under test: decoding
//! every RouteConfiguration whole (domains, matches, every field of every route) made the
//! benchmark's own parsing most of the CPU of a change, and the latency it reported mostly its
//! own. These messages declare only the path to the weights; prost skips every other field.
//! `checked_against_full_decode` keeps them honest: the first response of a run is also decoded
//! in full and both readings must agree.

use std::sync::atomic::{AtomicBool, Ordering};

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use prost::Message;

/// `envoy.config.route.v3.RouteConfiguration`, only `virtual_hosts` (2).
#[derive(Clone, PartialEq, Message)]
struct Config {
    #[prost(message, repeated, tag = "2")]
    virtual_hosts: Vec<VirtualHost>,
}

/// `VirtualHost`, only `routes` (3).
#[derive(Clone, PartialEq, Message)]
struct VirtualHost {
    #[prost(message, repeated, tag = "3")]
    routes: Vec<Route>,
}

/// `Route`, only the `route` action (2).
#[derive(Clone, PartialEq, Message)]
struct Route {
    #[prost(message, optional, tag = "2")]
    route: Option<RouteAction>,
}

/// `RouteAction`, only `weighted_clusters` (3).
#[derive(Clone, PartialEq, Message)]
struct RouteAction {
    #[prost(message, optional, tag = "3")]
    weighted_clusters: Option<WeightedCluster>,
}

/// `WeightedCluster`, only `clusters` (1).
#[derive(Clone, PartialEq, Message)]
struct WeightedCluster {
    #[prost(message, repeated, tag = "1")]
    clusters: Vec<ClusterWeight>,
}

/// `WeightedCluster.ClusterWeight`, only `weight` (2, a `google.protobuf.UInt32Value`).
#[derive(Clone, PartialEq, Message)]
struct ClusterWeight {
    #[prost(message, optional, tag = "2")]
    weight: Option<u32>,
}

static CHECKED: AtomicBool = AtomicBool::new(false);

/// Every weighted-cluster weight in a route discovery response.
pub fn route_weights(response: &DeltaDiscoveryResponse) -> Vec<u32> {
    let weights = lean(response);
    if !CHECKED.swap(true, Ordering::Relaxed) {
        checked_against_full_decode(response, &weights);
    }
    weights
}

fn lean(response: &DeltaDiscoveryResponse) -> Vec<u32> {
    let mut weights = Vec::new();
    for any in response.resources.iter().filter_map(|r| r.resource.as_ref()) {
        let Ok(config) = Config::decode(any.value.as_slice()) else {
            continue;
        };
        for route in config.virtual_hosts.iter().flat_map(|host| &host.routes) {
            if let Some(split) = route.route.as_ref().and_then(|a| a.weighted_clusters.as_ref()) {
                weights.extend(split.clusters.iter().filter_map(|c| c.weight));
            }
        }
    }
    weights
}

fn full(response: &DeltaDiscoveryResponse) -> Vec<u32> {
    let mut weights = Vec::new();
    for any in response.resources.iter().filter_map(|r| r.resource.as_ref()) {
        let Ok(config) = RouteConfiguration::decode(any.value.as_slice()) else {
            continue;
        };
        for route in config.virtual_hosts.iter().flat_map(|host| &host.routes) {
            if let Some(route::Action::Route(action)) = &route.action
                && let Some(route_action::ClusterSpecifier::WeightedClusters(split)) = &action.cluster_specifier
            {
                weights.extend(split.clusters.iter().filter_map(|c| c.weight.map(|w| w.value)));
            }
        }
    }
    weights
}

fn checked_against_full_decode(response: &DeltaDiscoveryResponse, lean: &[u32]) {
    let full = full(response);
    assert_eq!(
        lean, full,
        "the lean route decoding disagrees with the full one: fix route_weights.rs"
    );
}
