//! CORS, CSRF, request mirroring and JWT validation, as routes and connection managers carry them.
//!
//! CORS, CSRF and JWT are HTTP filters configured per route: the CORS and CSRF filters sit in
//! every outbound and ingress connection manager (idle on routes without a policy, like the
//! fault filter), the
//! JWT filter only where some route requires a token, holding every provider those routes name;
//! each route then names its requirement. A mirror is part of the route's forward action.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Http1ProtocolOptions, HttpUri, RuntimeFractionalPercent, TransportSocket, UpstreamHttpProtocolOptions,
    data_source, http_uri, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::{Buffer, BufferPerRoute, buffer_per_route};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::csrf::v3::CsrfPolicy;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwksAsyncFetch, JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider as EnvoyJwtProvider,
    JwtRequirement as EnvoyRequirement, JwtRequirementOrList, PerRouteConfig, RemoteJwks as EnvoyRemoteJwks,
    jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType, per_route_config::RequirementSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig},
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Empty, UInt32Value};
use envoy_types::util::pack_any;
use prost::{Message, Name};
use trellis_model::ClusterConfig;
use trellis_model::ir::VirtualHost;
use trellis_model::policy::{
    Cors as IrCors, JwtRequirement, Mirror, OriginMatch, RemoteJwks, RoutePolicies, StringMatch,
};

use crate::common::{duration_ms, http_filter};
use crate::routes::regex_matcher;

pub(crate) const CORS_FILTER: &str = "envoy.filters.http.cors";
pub(crate) const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
pub(crate) const CSRF_FILTER: &str = "envoy.filters.http.csrf";
pub(crate) const BUFFER_FILTER: &str = "envoy.filters.http.buffer";

/// The buffer filter, disabled: only a route with a buffer policy turns it on (buffering every
/// request would break streaming).
pub(crate) fn buffer_filter() -> HttpFilter {
    HttpFilter {
        disabled: true,
        ..http_filter(
            BUFFER_FILTER,
            pack_any(Buffer {
                max_request_bytes: Some(UInt32Value { value: 1 }),
            }),
        )
    }
}

/// The CSRF filter: checks nothing (0%) until a route's policy says otherwise.
pub(crate) fn csrf_filter() -> HttpFilter {
    http_filter(
        CSRF_FILTER,
        pack_any(CsrfPolicy {
            filter_enabled: Some(runtime_fraction(0)),
            ..Default::default()
        }),
    )
}

fn runtime_fraction(per_million: u32) -> RuntimeFractionalPercent {
    RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: per_million,
            denominator: DenominatorType::Million as i32,
        }),
        runtime_key: String::new(),
    }
}

/// The CORS filter: does nothing on a route without a CORS policy.
pub(crate) fn cors_filter() -> HttpFilter {
    http_filter(CORS_FILTER, pack_any(Cors {}))
}

/// The JWT filter for these hosts' routes, `None` when none requires a token.
pub(crate) fn jwt_filter<'a>(hosts: impl IntoIterator<Item = &'a VirtualHost>) -> Option<HttpFilter> {
    // By requirement name: a policy on many routes is one requirement.
    let requirements: BTreeMap<&str, &JwtRequirement> = hosts
        .into_iter()
        .flat_map(|host| &host.routes)
        .filter_map(|route| route.policies.jwt.as_deref())
        .map(|jwt| (jwt.name.as_str(), jwt))
        .collect();
    if requirements.is_empty() {
        return None;
    }
    let providers: BTreeMap<String, EnvoyJwtProvider> = requirements
        .values()
        .flat_map(|r| &r.providers)
        .map(|p| (p.name.clone(), provider(p)))
        .collect();
    // Protobuf maps are HashMaps in prost, encoded in an order that changes from one build to
    // the next. Envoy would see a new listener (and drain its connections) for the same config,
    // so the message is written as the concatenation of one-entry messages in sorted order,
    // which protobuf reads as their merge: the same bytes every time.
    let mut value = JwtAuthentication {
        // No bypass: the CORS filter before this one answers the preflights of allowed
        // origins; any other OPTIONS request needs a token like every request.
        bypass_cors_preflight: false,
        ..Default::default()
    }
    .encode_to_vec();
    for (name, provider) in providers {
        value.extend(
            JwtAuthentication {
                providers: HashMap::from([(name, provider)]),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    for (name, r) in &requirements {
        value.extend(
            JwtAuthentication {
                requirement_map: HashMap::from([(name.to_string(), requirement(r))]),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    Some(http_filter(
        JWT_FILTER,
        Any {
            type_url: format!("type.googleapis.com/{}", JwtAuthentication::full_name()),
            value,
        },
    ))
}

/// What of the routes a sidecar's own listeners are built from: the JWT requirements (their
/// providers live in the outbound listener's filter) and whether any route transforms (the
/// Lua filter is there only then). A cache of those listeners must key on it.
pub fn listener_inputs(ir: &ClusterConfig) -> (Vec<&JwtRequirement>, bool) {
    let routes = || ir.virtual_hosts.iter().flat_map(|host| &host.routes);
    let mut requirements: Vec<&JwtRequirement> = routes().filter_map(|route| route.policies.jwt.as_deref()).collect();
    requirements.sort_by(|a, b| a.name.cmp(&b.name));
    requirements.dedup_by(|a, b| a == b);
    let transforms = routes().any(|route| route.policies.transformation.is_some());
    (requirements, transforms)
}

/// A cluster per server the JWT providers of these hosts' routes fetch key sets from: its
/// address resolved by DNS; over HTTPS, its certificate checked against the system's roots and
/// the host name.
pub(crate) fn jwks_clusters<'a>(hosts: impl IntoIterator<Item = &'a VirtualHost>) -> Vec<Cluster> {
    let remotes: BTreeMap<String, &RemoteJwks> = hosts
        .into_iter()
        .flat_map(|host| &host.routes)
        .filter_map(|route| route.policies.jwt.as_deref())
        .flat_map(|jwt| &jwt.providers)
        .filter_map(|p| p.remote.as_ref())
        .map(|remote| (remote.cluster_name(), remote))
        .collect();
    remotes
        .into_iter()
        .map(|(name, remote)| Cluster {
            name: name.clone(),
            connect_timeout: Some(crate::common::CONNECT_TIMEOUT),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32,
            )),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name,
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![crate::common::lb_endpoint(&remote.host, remote.port, None)],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            transport_socket: remote.tls.then(|| verified_tls(&remote.host)),
            typed_extension_protocol_options: if remote.tls {
                // The server's certificate must also name the host the URL does.
                [(HTTP_PROTOCOL_OPTIONS.to_string(), pack_any(san_checked()))].into()
            } else {
                Default::default()
            },
            ..Default::default()
        })
        .collect()
}

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// HTTP/1.1 whose TLS checks the certificate's names against the request's host.
fn san_checked() -> HttpProtocolOptions {
    HttpProtocolOptions {
        upstream_http_protocol_options: Some(UpstreamHttpProtocolOptions {
            auto_sni: true,
            auto_san_validation: true,
            ..Default::default()
        }),
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())),
        })),
        ..Default::default()
    }
}

fn verified_tls(host: &str) -> TransportSocket {
    let context = UpstreamTlsContext {
        sni: host.to_string(),
        common_tls_context: Some(CommonTlsContext {
            // The names are checked against the request's host (auto_san_validation).
            validation_context_type: Some(crate::tls::system_trust(CertificateValidationContext::default())),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    }
}

/// What a route's policies set on the CORS and JWT filters.
pub(crate) fn route_configs(policies: &RoutePolicies) -> Vec<(String, Any)> {
    let cors = policies
        .cors
        .as_ref()
        .map(|cors| (CORS_FILTER.to_string(), pack_any(cors_policy(cors))));
    let jwt = policies.jwt.as_deref().map(|jwt| {
        (
            JWT_FILTER.to_string(),
            pack_any(PerRouteConfig {
                requirement_specifier: Some(RequirementSpecifier::RequirementName(jwt.name.clone())),
            }),
        )
    });
    let csrf = policies.csrf.as_deref().map(|csrf| {
        (
            CSRF_FILTER.to_string(),
            pack_any(CsrfPolicy {
                filter_enabled: Some(runtime_fraction(csrf.enforce_per_million)),
                shadow_enabled: Some(runtime_fraction(csrf.shadow_per_million)),
                additional_origins: csrf.additional_origins.iter().map(origin_matcher).collect(),
            }),
        )
    });
    let buffer = policies.buffer_max_request_bytes.map(|value| {
        (
            BUFFER_FILTER.to_string(),
            pack_any(BufferPerRoute {
                r#override: Some(buffer_per_route::Override::Buffer(Buffer {
                    max_request_bytes: Some(UInt32Value { value }),
                })),
            }),
        )
    });
    let claims = policies.jwt.as_deref().and_then(crate::jwt_claims::route_config);
    cors.into_iter()
        .chain(csrf)
        .chain(jwt)
        .chain(claims)
        .chain(buffer)
        .collect()
}

pub(crate) fn mirror_policy(mirror: &Mirror) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster: mirror.upstream.clone(),
        runtime_fraction: Some(runtime_fraction(mirror.per_million)),
        ..Default::default()
    }
}

fn cors_policy(cors: &IrCors) -> CorsPolicy {
    CorsPolicy {
        allow_origin_string_match: cors.allow_origins.iter().map(origin_matcher).collect(),
        allow_methods: cors.allow_methods.clone(),
        allow_headers: cors.allow_headers.clone(),
        expose_headers: cors.expose_headers.clone(),
        max_age: cors.max_age_seconds.map(|s| s.to_string()).unwrap_or_default(),
        allow_credentials: cors.allow_credentials.map(|value| BoolValue { value }),
        ..Default::default()
    }
}

fn origin_matcher(origin: &OriginMatch) -> StringMatcher {
    let pattern = |pattern| StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: origin.ignore_case,
    };
    match &origin.matcher {
        StringMatch::Exact(text) => pattern(MatchPattern::Exact(text.clone())),
        StringMatch::Prefix(text) => pattern(MatchPattern::Prefix(text.clone())),
        StringMatch::Suffix(text) => pattern(MatchPattern::Suffix(text.clone())),
        // Envoy refuses `ignore_case` on a regex ("has no effect"): ask RE2 itself.
        StringMatch::Regex(regex) if origin.ignore_case => StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex_matcher(&format!("(?i){regex}")))),
            ignore_case: false,
        },
        StringMatch::Regex(regex) => pattern(MatchPattern::SafeRegex(regex_matcher(regex))),
    }
}

fn provider(p: &trellis_model::policy::JwtProvider) -> EnvoyJwtProvider {
    EnvoyJwtProvider {
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        forward: p.forward,
        from_headers: p
            .from_headers
            .iter()
            .map(|(name, prefix)| JwtHeader {
                name: name.clone(),
                value_prefix: prefix.clone(),
            })
            .collect(),
        from_params: p.from_params.clone(),
        forward_payload_header: p.payload_header.clone(),
        // Where the route's claim and scope rules read the verified payload (jwt_claims.rs).
        payload_in_metadata: p.name.clone(),
        clock_skew_seconds: p.clock_skew_seconds.unwrap_or(60),
        claim_to_headers: p
            .claims_to_headers
            .iter()
            .map(|(claim, header)| JwtClaimToHeader {
                header_name: header.clone(),
                claim_name: claim.clone(),
                ..Default::default()
            })
            .collect(),
        jwks_source_specifier: Some(match &p.remote {
            Some(remote) => JwksSourceSpecifier::RemoteJwks(EnvoyRemoteJwks {
                http_uri: Some(HttpUri {
                    uri: remote.url.clone(),
                    // Envoy requires a timeout; Gloo does not say one.
                    timeout: Some(duration_ms(remote.timeout_ms.unwrap_or(5_000))),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(remote.cluster_name())),
                }),
                cache_duration: remote.cache_duration_ms.map(duration_ms),
                async_fetch: remote.async_fetch.then(JwksAsyncFetch::default),
                ..Default::default()
            }),
            None => JwksSourceSpecifier::LocalJwks(DataSource {
                specifier: Some(data_source::Specifier::InlineString(p.local_jwks.clone())),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// A valid token from any provider; with `allow_missing`, no token at all passes too.
fn requirement(r: &JwtRequirement) -> EnvoyRequirement {
    if r.allow_failed {
        return EnvoyRequirement {
            requires_type: Some(RequiresType::AllowMissingOrFailed(Empty {})),
        };
    }
    let mut any: Vec<EnvoyRequirement> = r
        .providers
        .iter()
        .map(|p| EnvoyRequirement {
            requires_type: Some(RequiresType::ProviderName(p.name.clone())),
        })
        .collect();
    if r.allow_missing {
        any.push(EnvoyRequirement {
            requires_type: Some(RequiresType::AllowMissing(Empty {})),
        });
    }
    // Translation never sends a required token without a provider (it answers 401 instead).
    if any.len() == 1 {
        any.remove(0)
    } else {
        EnvoyRequirement {
            requires_type: Some(RequiresType::RequiresAny(JwtRequirementOrList { requirements: any })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_model::ir::Route;
    use trellis_model::policy::JwtProvider;

    fn host_requiring(names: &[&str]) -> VirtualHost {
        let requirement = |name: &str| JwtRequirement {
            name: format!("demo/{name}"),
            providers: ["a", "b", "c"]
                .iter()
                .map(|p| JwtProvider {
                    name: format!("demo/{name}/{p}"),
                    local_jwks: r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#.into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        VirtualHost {
            name: "h".into(),
            routes: names
                .iter()
                .map(|name| Route {
                    name: name.to_string(),
                    matcher: trellis_model::ir::RouteMatch {
                        path: trellis_model::ir::PathMatch::Prefix("/".into()),
                        ignore_case: false,
                        headers: Vec::new(),
                        query_params: Vec::new(),
                        method: None,
                    },
                    action: trellis_model::ir::RouteAction::DirectResponse {
                        status: 200,
                        body: String::new(),
                    },
                    policies: RoutePolicies {
                        jwt: Some(Box::new(requirement(name))),
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn jwt_filter_bytes_are_the_same_every_build_and_hold_every_provider() {
        let host = host_requiring(&["one", "two", "three"]);
        let typed = |filter: HttpFilter| {
            match filter.config_type {
            Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(any)) => any,
            other => panic!("{other:?}"),
        }
        };
        let first = typed(jwt_filter([&host]).unwrap());
        for _ in 0..20 {
            assert_eq!(typed(jwt_filter([&host]).unwrap()), first);
        }
        let decoded = JwtAuthentication::decode(&first.value[..]).unwrap();
        assert_eq!(decoded.providers.len(), 9);
        assert_eq!(decoded.requirement_map.len(), 3);
        assert!(matches!(
            decoded.requirement_map["demo/two"].requires_type,
            Some(RequiresType::RequiresAny(_))
        ));
        assert!(jwt_filter([&host_requiring(&[])]).is_none());
    }
}
