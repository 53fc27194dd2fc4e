//! Add-on servers as Envoy sees them: one gRPC cluster per server, one HTTP filter per server in
//! every connection manager that serves routes (ext_authz first, so the rate limiter can key on
//! what auth added), and per-route filter configs that turn them on.
//!
//! Ext-auth filters are disabled by default and enabled only on routes an ExtAuthPolicy selects,
//! with the policy's `config_id` as a context extension. Rate-limit filters do nothing on a route
//! without rate-limit actions; a RateLimitPolicy gives its routes the domain and actions.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{ApiVersion, GrpcService, grpc_service};
use envoy_types::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
use envoy_types::pb::envoy::config::route::v3::{FilterConfig, RateLimit as RouteRateLimit, rate_limit};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    BufferSettings, CheckSettings, ExtAuthz, ExtAuthzPerRoute, ext_authz, ext_authz_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::{
    RateLimit, RateLimitPerRoute, rate_limit::XRateLimitHeadersRfcVersion,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use trellis_model::addons::{AddonKind, AddonServer, RateLimitAction, RouteRateLimit as IrRateLimit};
use trellis_model::policy::RoutePolicies;

use crate::common::{self, duration_ms};

/// The HTTP filter's name for a server; per-route configs are keyed by it.
pub(crate) fn filter_name(server: &str) -> String {
    if server.starts_with("ext-auth|") {
        format!("envoy.filters.http.ext_authz.{server}")
    } else {
        format!("envoy.filters.http.ratelimit.{server}")
    }
}

fn grpc_service(server: &AddonServer) -> GrpcService {
    GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
            cluster_name: server.name.clone(),
            // Envoy's default authority is the cluster name, whose `|` and `/` are not valid in an
            // HTTP/2 `:authority`: the add-on's server would reset the stream.
            authority: server.name.replace(['|', '/'], "."),
            ..Default::default()
        })),
        timeout: Some(duration_ms(server.timeout_ms)),
        ..Default::default()
    }
}

/// One gRPC cluster per server; without a registered endpoint it has none, so calls fail fast and
/// the server's failure mode decides. An endpoint with an identity is called over mTLS: the
/// proxy's own workload certificate (which the add-on requires, from its cluster's CA) and the
/// add-on's SPIFFE ID checked, so neither side talks to an impostor.
pub(crate) fn clusters(servers: &[AddonServer]) -> Vec<Cluster> {
    servers
        .iter()
        .map(|server| {
            let cluster = match &server.endpoint {
                Some(endpoint) => Cluster {
                    transport_socket: (!endpoint.identity.is_empty())
                        .then(|| crate::tls::addon_socket(&endpoint.identity)),
                    ..common::static_cluster(&server.name, &endpoint.address, endpoint.port)
                },
                None => common::static_cluster_without_endpoints(&server.name),
            };
            common::with_http2(cluster)
        })
        .collect()
}

/// The filters to put before the router, ext-auth ones first.
pub(crate) fn filters(servers: &[AddonServer]) -> Vec<HttpFilter> {
    let mut ordered: Vec<&AddonServer> = servers.iter().collect();
    ordered.sort_by_key(|s| (s.kind, s.name.clone()));
    ordered
        .into_iter()
        .map(|server| match server.kind {
            AddonKind::ExtAuth => {
                let config = ExtAuthz {
                    services: Some(ext_authz::Services::GrpcService(grpc_service(server))),
                    transport_api_version: ApiVersion::V3 as i32,
                    failure_mode_allow: server.fail_open,
                    status_on_error: Some(HttpStatus {
                        code: server.status_on_error.unwrap_or(403) as i32,
                    }),
                    // The ext-auth service sees the caller's mesh identity.
                    include_peer_certificate: true,
                    with_request_body: server.request_body.as_ref().map(|body| BufferSettings {
                        max_request_bytes: body.max_bytes,
                        allow_partial_message: body.allow_partial,
                        pack_as_bytes: body.as_bytes,
                    }),
                    ..Default::default()
                };
                let mut filter = common::http_filter(&filter_name(&server.name), pack_any(config));
                filter.disabled = true;
                filter
            }
            AddonKind::RateLimit => {
                let config = RateLimit {
                    // Required by Envoy; every route that uses the filter names its own domain.
                    domain: "trellis".to_string(),
                    request_type: "both".to_string(),
                    timeout: Some(duration_ms(server.timeout_ms)),
                    failure_mode_deny: !server.fail_open,
                    rate_limit_service: Some(RateLimitServiceConfig {
                        grpc_service: Some(grpc_service(server)),
                        transport_api_version: ApiVersion::V3 as i32,
                    }),
                    enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
                    ..Default::default()
                };
                common::http_filter(&filter_name(&server.name), pack_any(config))
            }
        })
        .collect()
}

/// The per-route filter configs a route's add-on policies need.
pub(crate) fn route_configs(policies: &RoutePolicies) -> Vec<(String, Any)> {
    let mut configs = Vec::new();
    if let Some(auth) = &policies.ext_auth {
        let per_route = ExtAuthzPerRoute {
            r#override: Some(ext_authz_per_route::Override::CheckSettings(CheckSettings {
                context_extensions: auth.context_extensions.clone().into_iter().collect(),
                ..Default::default()
            })),
        };
        let enable = FilterConfig {
            config: Some(pack_any(per_route)),
            is_optional: false,
            disabled: false,
        };
        configs.push((filter_name(&auth.server), pack_any(enable)));
    }
    if let Some(limit) = &policies.rate_limit {
        configs.push((filter_name(&limit.server), pack_any(rate_limit_per_route(limit))));
    }
    configs
}

fn rate_limit_per_route(limit: &IrRateLimit) -> RateLimitPerRoute {
    RateLimitPerRoute {
        domain: limit.domain.clone(),
        rate_limits: limit
            .descriptors
            .iter()
            .map(|descriptor| RouteRateLimit {
                actions: descriptor.actions.iter().map(action).collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn action(action: &RateLimitAction) -> rate_limit::Action {
    use rate_limit::action::{self, ActionSpecifier};
    let specifier = match action {
        RateLimitAction::SourceCluster => ActionSpecifier::SourceCluster(action::SourceCluster {}),
        RateLimitAction::DestinationCluster => ActionSpecifier::DestinationCluster(action::DestinationCluster {}),
        RateLimitAction::RemoteAddress => ActionSpecifier::RemoteAddress(action::RemoteAddress {}),
        RateLimitAction::RequestHeaders {
            header_name,
            descriptor_key,
            skip_if_absent,
        } => ActionSpecifier::RequestHeaders(action::RequestHeaders {
            header_name: header_name.clone(),
            descriptor_key: descriptor_key.clone(),
            skip_if_absent: *skip_if_absent,
        }),
        RateLimitAction::GenericKey {
            descriptor_key,
            descriptor_value,
        } => ActionSpecifier::GenericKey(action::GenericKey {
            descriptor_value: descriptor_value.clone(),
            descriptor_key: descriptor_key.clone(),
            ..Default::default()
        }),
        RateLimitAction::HeaderValueMatch {
            descriptor_key,
            descriptor_value,
            expect_match,
            headers,
        } => ActionSpecifier::HeaderValueMatch(action::HeaderValueMatch {
            descriptor_key: descriptor_key.clone(),
            descriptor_value: descriptor_value.clone(),
            expect_match: Some(envoy_types::pb::google::protobuf::BoolValue { value: *expect_match }),
            headers: headers
                .iter()
                .map(|(name, value, invert)| {
                    let mut matcher = crate::routes::header_value_matcher(name, value);
                    matcher.invert_match = *invert;
                    matcher
                })
                .collect(),
            ..Default::default()
        }),
        RateLimitAction::Metadata {
            descriptor_key,
            filter,
            path,
            default_value,
            route_entry,
            skip_if_absent,
        } => {
            use envoy_types::pb::envoy::r#type::metadata::v3::{MetadataKey, metadata_key::PathSegment};
            ActionSpecifier::Metadata(action::MetaData {
                descriptor_key: descriptor_key.clone(),
                metadata_key: Some(MetadataKey {
                    key: filter.clone(),
                    path: path
                        .iter()
                        .map(|key| PathSegment {
                            segment: Some(
                                envoy_types::pb::envoy::r#type::metadata::v3::metadata_key::path_segment::Segment::Key(
                                    key.clone(),
                                ),
                            ),
                        })
                        .collect(),
                }),
                default_value: default_value.clone(),
                source: if *route_entry {
                    action::meta_data::Source::RouteEntry as i32
                } else {
                    action::meta_data::Source::Dynamic as i32
                },
                skip_if_absent: *skip_if_absent,
            })
        }
    };
    rate_limit::Action {
        action_specifier: Some(specifier),
    }
}
