//! Small builders for the Envoy messages that sidecars, gateways and bootstraps share, so each
//! proxy kind reads as "what it serves" rather than as protobuf plumbing.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Http2ProtocolOptions, Locality, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig},
};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use envoy_types::util::pack_any;

/// Every cluster we generate waits this long for a TCP connection before failing over.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration { seconds: 1, nanos: 0 };

pub(crate) const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub(crate) const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const ROUTER_FILTER: &str = "envoy.filters.http.router";
const TLS_INSPECTOR_FILTER: &str = "envoy.filters.listener.tls_inspector";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub(crate) fn socket_address(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// `{ads: {}, resource_api_version: V3}`: fetch over the proxy's one ADS stream.
pub(crate) fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// A round-robin cluster whose endpoints arrive over EDS on the ADS stream.
pub(crate) fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(CONNECT_TIMEOUT),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

/// A cluster with fixed IP endpoints carried inline (the app beside a sidecar, the xDS server).
pub(crate) fn static_cluster(name: &str, address: &str, port: u16) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(CONNECT_TIMEOUT),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb_endpoint(address, port, None)],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A static cluster with no endpoints: every request to it fails at once ("no healthy upstream").
pub(crate) fn static_cluster_without_endpoints(name: &str) -> Cluster {
    let mut cluster = static_cluster(name, "127.0.0.1", 1);
    if let Some(assignment) = &mut cluster.load_assignment {
        assignment.endpoints.clear();
    }
    cluster
}

/// Makes a cluster speak HTTP/2 to its endpoints (gRPC backends, the xDS server).
pub(crate) fn with_http2(mut cluster: Cluster) -> Cluster {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())),
        })),
        ..Default::default()
    };
    cluster
        .typed_extension_protocol_options
        .insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack_any(options));
    cluster
}

pub(crate) fn lb_endpoint(address: &str, port: u16, weight: Option<u32>) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(address, port)),
            ..Default::default()
        })),
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        ..Default::default()
    }
}

/// Where an HTTP connection manager gets its routes.
pub(crate) enum Routes {
    /// By name over RDS on the ADS stream.
    Rds(String),
}

/// An HTTP connection manager whose only filter is the router; callers put theirs before it.
pub(crate) fn http_connection_manager(name: &str, routes: Routes) -> HttpConnectionManager {
    let route_specifier = match routes {
        Routes::Rds(route_config_name) => RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name,
        }),
    };
    HttpConnectionManager {
        stat_prefix: name.to_string(),
        route_specifier: Some(route_specifier),
        http_filters: vec![http_filter(ROUTER_FILTER, pack_any(Router::default()))],
        ..Default::default()
    }
}

/// A listener with one filter chain that matches every connection.
pub(crate) fn listener(name: &str, address: &str, port: u16, filter: Filter) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// A TCP proxy to one cluster, counted under `stat_prefix`.
pub(crate) fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    let tcp = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    network_filter(TCP_PROXY_FILTER, pack_any(tcp))
}

/// The endpoints of one upstream, grouped by priority and, within one, by the cluster they live
/// in (as the locality's region) so Envoy's stats and admin output show where traffic goes.
///
/// Envoy requires priorities to run 0, 1, 2... without gaps, while the IR only promises their
/// order (a failover policy may leave 1 empty), so they are renumbered densely in order. No
/// locality weights are set: the cluster balances over hosts, not localities.
pub(crate) fn load_assignment(upstream: &trellis_model::ir::Upstream) -> ClusterLoadAssignment {
    let priorities: BTreeSet<u32> = upstream.endpoints.iter().map(|e| e.priority).collect();
    let dense = |priority: u32| priorities.range(..priority).count() as u32;
    let mut groups: BTreeMap<(u32, &str), Vec<LbEndpoint>> = BTreeMap::new();
    // With locality weights, a cluster without a share gets no traffic (Envoy refuses a zero
    // locality weight, so its endpoints are left out).
    let weighted = !upstream.locality_weights.is_empty();
    let share = |cluster: &str| upstream.locality_weights.get(cluster).copied().filter(|w| *w > 0);
    for endpoint in upstream
        .endpoints
        .iter()
        .filter(|e| !weighted || share(&e.cluster).is_some())
    {
        // Envoy rejects a weight of 0; the IR promises relative weights, so 0 means "least".
        let weight = endpoint.weight.max(1);
        groups
            .entry((dense(endpoint.priority), endpoint.cluster.as_str()))
            .or_default()
            .push(lb_endpoint(&endpoint.address, endpoint.port, Some(weight)));
    }
    ClusterLoadAssignment {
        cluster_name: upstream.name.clone(),
        endpoints: groups
            .into_iter()
            .map(|((priority, cluster), lb_endpoints)| LocalityLbEndpoints {
                locality: Some(Locality {
                    region: cluster.to_string(),
                    ..Default::default()
                }),
                lb_endpoints,
                priority,
                load_balancing_weight: share(cluster).map(|value| UInt32Value { value }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A protobuf duration from the IR's milliseconds.
pub(crate) fn duration_ms(ms: u64) -> Duration {
    Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// An HTTP filter with an explicit typed config (Envoy NACKs a filter named only).
pub(crate) fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// Reads the first bytes of a connection to tell TLS (and its SNI) from plaintext, for filter
/// chains that match on `server_names` or `transport_protocol`.
pub(crate) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: TLS_INSPECTOR_FILTER.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            TlsInspector::default(),
        ))),
        ..Default::default()
    }
}
