use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action::ClusterSpecifier};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, UpstreamTlsContext,
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::google::protobuf::Duration;
use trellis_model::ir::Endpoint;
use trellis_model::policy::AuthzRule;

use super::*;
use crate::testing::mk_endpoint;
use crate::testing::{
    REVIEWS_ID, addr, hcm, mk_cluster_config, mk_workload, rds_routes, sidecar_resources, tls_context, typed,
};
use crate::{ROOT_CA_SECRET, WORKLOAD_SECRET};

fn mk_sidecar() -> ProxyResources {
    sidecar_resources()
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

/// `(certificate SDS names, validation SDS name, URI SAN exact matches)`, checking every SDS
/// reference goes over ADS and every SAN matcher is a URI one.
fn tls_summary(common: &CommonTlsContext) -> (Vec<String>, String, Vec<String>) {
    let over_ads = |sds: &SdsSecretConfig| {
        assert!(
            matches!(
                sds.sds_config.as_ref().and_then(|s| s.config_source_specifier.as_ref()),
                Some(ConfigSourceSpecifier::Ads(_))
            ),
            "SDS {} not over ADS",
            sds.name
        );
        sds.name.clone()
    };
    let certs = common.tls_certificate_sds_secret_configs.iter().map(over_ads).collect();
    assert!(common.tls_certificates.is_empty(), "no inline certificates");
    let Some(ValidationContextType::CombinedValidationContext(combined)) = &common.validation_context_type else {
        panic!(
            "expected a combined validation context, got {:?}",
            common.validation_context_type
        );
    };
    let root = over_ads(
        combined
            .validation_context_sds_secret_config
            .as_ref()
            .expect("root CA SDS"),
    );
    let sans = combined
        .default_validation_context
        .as_ref()
        .expect("default validation context")
        .match_typed_subject_alt_names
        .iter()
        .map(|m| {
            assert_eq!(m.san_type, SanType::Uri as i32);
            match m.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()) {
                Some(MatchPattern::Exact(id)) => id.clone(),
                other => panic!("expected an exact SAN match, got {other:?}"),
            }
        })
        .collect();
    (certs, root, sans)
}

#[test]
fn outbound_clusters_speak_mtls_with_the_upstream_key_as_sni_and_check_its_identities() {
    let r = mk_sidecar();
    let v1: UpstreamTlsContext = tls_context(&r.clusters[0].transport_socket);
    assert_eq!(v1.sni, "outbound_.9080_.v1_.reviews.mesh.internal");
    assert_eq!(
        tls_summary(v1.common_tls_context.as_ref().expect("common context")),
        (
            vec!["default".to_string()],
            "ROOTCA".to_string(),
            vec![
                "spiffe://trellis.local/ns/default/sa/legacy".to_string(),
                REVIEWS_ID.to_string()
            ]
        )
    );
}

#[test]
fn outbound_cluster_without_identities_still_requires_the_mesh_root() {
    let r = mk_sidecar();
    let v2: UpstreamTlsContext = tls_context(&r.clusters[1].transport_socket);
    assert_eq!(v2.sni, "outbound_.9080_.v2_.reviews.mesh.internal");
    assert_eq!(
        tls_summary(v2.common_tls_context.as_ref().expect("common context")),
        (vec![WORKLOAD_SECRET.to_string()], ROOT_CA_SECRET.to_string(), vec![])
    );
}

#[test]
fn inbound_clusters_to_the_app_are_plaintext_and_no_secrets_are_made() {
    let r = mk_sidecar();
    assert!(r.clusters[2..].iter().all(|c| c.transport_socket.is_none()));
    assert!(r.secrets.is_empty());
}

#[test]
fn every_inbound_listener_terminates_mtls_and_requires_a_client_certificate() {
    let r = mk_sidecar();
    assert!(
        r.listeners[0].filter_chains[0].transport_socket.is_none(),
        "outbound is plaintext"
    );
    for listener in &r.listeners[1..] {
        let context: DownstreamTlsContext = tls_context(&listener.filter_chains[0].transport_socket);
        assert_eq!(
            context.require_client_certificate.map(|b| b.value),
            Some(true),
            "{}",
            listener.name
        );
        assert_eq!(
            tls_summary(context.common_tls_context.as_ref().expect("common context")),
            (vec!["default".to_string()], "ROOTCA".to_string(), vec![]),
            "{}",
            listener.name
        );
    }
}

#[test]
fn inbound_http_port_tells_the_app_the_callers_uri() {
    let r = mk_sidecar();
    let hcm = hcm(&r.listeners[1]);
    assert_eq!(
        hcm.forward_client_cert_details,
        ForwardClientCertDetails::SanitizeSet as i32
    );
    let details = hcm.set_current_client_cert_details.expect("client cert details");
    assert!(details.uri);
    assert!(!details.cert && !details.chain && !details.dns);
    // The outbound listener forwards no client certificate: it has none.
    assert_eq!(
        crate::testing::hcm(&r.listeners[0]).forward_client_cert_details,
        ForwardClientCertDetails::Sanitize as i32
    );
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
    let names: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.cors",
            "envoy.filters.http.csrf",
            "envoy.filters.http.fault",
            "envoy.filters.http.buffer",
            "envoy.filters.http.router"
        ]
    );
    let router = &hcm.http_filters[4];
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
    let route_config = rds_routes(&r, &hcm(listener));
    assert_eq!(route_config.name, "inbound|9080/mtls");
    let vhost = &route_config.virtual_hosts[0];
    assert!(vhost.typed_per_filter_config.is_empty(), "no policy, no RBAC rules");
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
    assert_eq!(addr(&listener.address), ("10.0.0.1".to_string(), 15007));
    let filter = &listener.filter_chains[0].filters[0];
    assert_eq!(filter.name, "envoy.filters.network.tcp_proxy");
    assert!(matches!(
        &filter.config_type,
        Some(ConfigType::TypedConfig(any)) if any.type_url.ends_with("tcp_proxy.v3.TcpProxy")
    ));
    let tcp: envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy =
        crate::testing::typed(filter);
    assert_eq!(
        tcp.cluster_specifier,
        Some(
            envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier::Cluster(
                "inbound|5432".to_string()
            )
        )
    );
}

#[test]
fn output_is_deterministic() {
    assert_eq!(mk_sidecar().into_typed(), mk_sidecar().into_typed());
}

// === policies ===

fn mk_sidecar_for(ir: &ClusterConfig, workload: &Workload) -> ProxyResources {
    sidecar(
        ir,
        &SidecarSpec {
            workload,
            outbound_address: "127.0.0.1",
            outbound_port: 15001,
            inbound_address: "10.0.0.1",
            access_log: &trellis_model::access_log::AccessLogSink::Stdout,
        },
    )
}

fn mk_sidecar_with(policies: Vec<InboundPolicy>) -> ProxyResources {
    let ir = ClusterConfig {
        inbound_policies: policies,
        ..mk_cluster_config()
    };
    mk_sidecar_for(&ir, &mk_workload())
}

fn mk_policy(name: &str, tls_mode: Option<TlsMode>, rules: Option<Vec<AuthzRule>>, dry_run: bool) -> InboundPolicy {
    InboundPolicy {
        name: name.to_string(),
        tls_mode,
        rules,
        dry_run,
        ..Default::default()
    }
}

fn any_principal() -> Vec<AuthzRule> {
    vec![AuthzRule {
        principals: vec!["*".to_string()],
        ..Default::default()
    }]
}

/// `(chain name, transport_protocol match, terminates TLS)` of each chain.
fn chains(listener: &Listener) -> Vec<(String, String, bool)> {
    listener
        .filter_chains
        .iter()
        .map(|c| {
            let protocol = c.filter_chain_match.as_ref().map(|m| m.transport_protocol.clone());
            (
                c.name.clone(),
                protocol.unwrap_or_default(),
                c.transport_socket.is_some(),
            )
        })
        .collect()
}

#[test]
fn outlier_detection_counts_5xx_and_gateway_failures_and_always_enforces() {
    let mut ir = mk_cluster_config();
    Arc::make_mut(&mut ir.upstreams[0]).outlier_detection = Some(Box::new(policy::OutlierDetection {
        consecutive_errors: 5,
        interval_ms: 10_000,
        base_ejection_time_ms: 30_500,
        max_ejection_percent: 50,
    }));
    let r = mk_sidecar_for(&ir, &mk_workload());
    let od = r.clusters[0].outlier_detection.clone().expect("outlier detection");
    let v = |o: Option<UInt32Value>| o.map(|v| v.value);
    assert_eq!(v(od.consecutive_5xx), Some(5));
    assert_eq!(v(od.consecutive_gateway_failure), Some(5));
    assert_eq!(v(od.enforcing_consecutive_5xx), Some(100));
    assert_eq!(v(od.enforcing_consecutive_gateway_failure), Some(100));
    assert_eq!(v(od.max_ejection_percent), Some(50));
    assert_eq!(od.interval, Some(Duration { seconds: 10, nanos: 0 }));
    assert_eq!(
        od.base_ejection_time,
        Some(Duration {
            seconds: 30,
            nanos: 500_000_000
        })
    );
    assert!(r.clusters[1].outlier_detection.is_none(), "only where the IR asks");
}

#[test]
fn endpoints_are_grouped_by_priority_then_cluster_with_priorities_compacted() {
    let mut ir = mk_cluster_config();
    let endpoint = |address: &str, cluster: &str, priority| Endpoint {
        priority,
        ..mk_endpoint(address, 1, cluster)
    };
    Arc::make_mut(&mut ir.upstreams[0]).endpoints = vec![
        endpoint("10.0.0.1", "east", 0),
        endpoint("10.0.0.2", "west", 0),
        endpoint("10.1.0.1", "west", 2),
        endpoint("10.1.0.2", "east", 2),
        endpoint("10.1.0.3", "east", 2),
        endpoint("10.2.0.1", "north", 7),
    ];
    let r = mk_sidecar_for(&ir, &mk_workload());
    let groups: Vec<_> = r.endpoints[0]
        .endpoints
        .iter()
        .map(|l| {
            let region = l.locality.as_ref().map(|l| l.region.clone()).unwrap_or_default();
            (
                l.priority,
                region,
                l.lb_endpoints.len(),
                l.load_balancing_weight.is_some(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            (0, "east".to_string(), 1, false),
            (0, "west".to_string(), 1, false),
            (1, "east".to_string(), 2, false),
            (1, "west".to_string(), 1, false),
            (2, "north".to_string(), 1, false),
        ]
    );
    assert!(
        r.clusters[0].common_lb_config.is_none(),
        "no locality-weighted balancing"
    );
}

#[test]
fn without_policies_inbound_listeners_are_strict_mtls_with_a_rule_less_rbac_filter() {
    let r = mk_sidecar();
    for listener in &r.listeners[1..] {
        assert_eq!(chains(listener), [("mtls".to_string(), String::new(), true)]);
        assert!(listener.listener_filters.is_empty());
    }
    let names: Vec<_> = hcm(&r.listeners[1]).http_filters.into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["envoy.filters.http.rbac", "envoy.filters.http.router"]);
    assert_eq!(r.listeners[2].filter_chains[0].filters.len(), 1, "tcp_proxy alone");
}

#[test]
fn permissive_inspects_tls_and_keeps_an_mtls_and_a_plaintext_chain_with_the_same_filters() {
    let r = mk_sidecar_with(vec![mk_policy(
        "default/p",
        Some(TlsMode::Permissive),
        Some(any_principal()),
        false,
    )]);
    for listener in &r.listeners[1..] {
        assert_eq!(
            chains(listener),
            [
                ("mtls".to_string(), "tls".to_string(), true),
                ("plaintext".to_string(), "raw_buffer".to_string(), false)
            ],
            "{}",
            listener.name
        );
        let names: Vec<_> = listener.listener_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["envoy.filters.listener.tls_inspector"]);
    }
    // The TCP chains are the same; the HTTP ones differ only in the routes they fetch, and
    // those carry the same RBAC rules.
    let tcp = &r.listeners[2];
    assert_eq!(tcp.filter_chains[0].filters, tcp.filter_chains[1].filters);
    let rules: Vec<_> = r.listeners[1]
        .filter_chains
        .iter()
        .map(|chain| {
            let http: HttpConnectionManager = typed(&chain.filters[0]);
            let routes = rds_routes(&r, &http);
            (
                routes.name.clone(),
                routes.virtual_hosts[0].typed_per_filter_config.clone(),
            )
        })
        .collect();
    assert_eq!(
        (rules[0].0.as_str(), rules[1].0.as_str()),
        ("inbound|9080/mtls", "inbound|9080/plaintext")
    );
    assert_eq!(rules[0].1, rules[1].1);
    assert!(rules[0].1.contains_key("envoy.filters.http.rbac"));
    let context: DownstreamTlsContext = tls_context(&r.listeners[1].filter_chains[0].transport_socket);
    assert_eq!(context.require_client_certificate.map(|b| b.value), Some(true));
}

#[test]
fn disable_takes_plaintext_only() {
    let r = mk_sidecar_with(vec![mk_policy("default/off", Some(TlsMode::Disable), None, false)]);
    for listener in &r.listeners[1..] {
        assert_eq!(chains(listener), [("plaintext".to_string(), String::new(), false)]);
        assert!(listener.listener_filters.is_empty());
    }
}

#[test]
fn strict_set_explicitly_is_the_default() {
    let strict = mk_sidecar_with(vec![mk_policy("default/s", Some(TlsMode::Strict), None, false)]);
    assert_eq!(strict.into_typed(), mk_sidecar().into_typed());
}

#[test]
fn the_first_applying_policy_with_a_mode_decides_it() {
    let other_namespace = InboundPolicy {
        namespace: "other".to_string(),
        ..mk_policy("other/off", Some(TlsMode::Disable), None, false)
    };
    let r = mk_sidecar_with(vec![
        other_namespace,
        mk_policy("default/rules-only", None, Some(any_principal()), false),
        mk_policy("default/permissive", Some(TlsMode::Permissive), None, false),
        mk_policy("default/strict", Some(TlsMode::Strict), None, false),
    ]);
    assert_eq!(r.listeners[1].filter_chains.len(), 2, "PERMISSIVE");
}

#[test]
fn http_ports_authorize_before_the_router_and_tcp_ports_before_the_proxy() {
    let r = mk_sidecar_with(vec![mk_policy("default/a", None, Some(any_principal()), false)]);
    let http = hcm(&r.listeners[1]);
    let names: Vec<_> = http.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["envoy.filters.http.rbac", "envoy.filters.http.router"]);
    // The rules come with the routes, so a policy change reaches open connections.
    let per_route = &rds_routes(&r, &http).virtual_hosts[0].typed_per_filter_config;
    let rbac: envoy_types::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute =
        crate::testing::unpack(&per_route["envoy.filters.http.rbac"]);
    let rules = rbac.rbac.and_then(|r| r.rules).expect("enforced rules");
    assert!(rules.policies.contains_key("default/a/0"));
    let filters: Vec<_> = r.listeners[2].filter_chains[0]
        .filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        filters,
        ["envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
    );
    let rbac: NetworkRbac = typed(&r.listeners[2].filter_chains[0].filters[0]);
    assert_eq!(rbac.stat_prefix, "inbound|5432");
    assert!(
        rbac.rules
            .is_some_and(|rules| rules.policies.contains_key("default/a/0"))
    );
}

#[test]
fn policies_for_other_workloads_add_no_rbac() {
    let elsewhere = InboundPolicy {
        service: "ratings".to_string(),
        ..mk_policy("default/ratings-only", Some(TlsMode::Disable), Some(Vec::new()), false)
    };
    assert_eq!(mk_sidecar_with(vec![elsewhere]).into_typed(), mk_sidecar().into_typed());
}

#[test]
fn rbac_stat_names_follow_the_inbound_listener_names() {
    let workload = mk_workload();
    let http = crate::RbacStats::for_port(&workload.ports[0]);
    assert_eq!(http.allowed, "http.inbound|9080.rbac.allowed");
    assert_eq!(http.denied, "http.inbound|9080.rbac.denied");
    assert_eq!(
        http.shadow_allowed,
        "http.inbound|9080.rbac.trellis_dry_run_.shadow_allowed"
    );
    assert_eq!(
        http.shadow_denied,
        "http.inbound|9080.rbac.trellis_dry_run_.shadow_denied"
    );
    let tcp = crate::RbacStats::for_port(&workload.ports[1]);
    assert_eq!(tcp.denied, "inbound|5432.rbac.denied");
    assert_eq!(tcp.shadow_denied, "inbound|5432.rbac.trellis_dry_run_.shadow_denied");
}

/// A port that add-on policies protect routes like the mesh routes that reach it: each route
/// with its add-on configs, subsets this workload does not carry left out, and whatever no
/// mesh route would have sent here refused; other ports keep their plain catch-all.
#[test]
fn protected_inbound_port_mirrors_the_mesh_routes_with_their_add_on_checks() {
    use trellis_model::addons::{
        AddonKind, AddonServer, InboundRoute, InboundRoutes, InboundVirtualHost, RouteExtAuth, RouteRateLimit,
    };
    let mut ir = mk_cluster_config();
    ir.addon_servers = vec![
        AddonServer {
            name: "ext-auth|demo/ext-auth".into(),
            kind: AddonKind::ExtAuth,
            endpoint: None,
            timeout_ms: 500,
            fail_open: false,
            status_on_error: None,
            request_body: None,
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
    let mirror = |name: &str, prefix: &str, subset: &[(&str, &str)], protected: bool| InboundRoute {
        name: name.into(),
        matcher: trellis_model::ir::RouteMatch {
            path: trellis_model::ir::PathMatch::Prefix(prefix.into()),
            ..Default::default()
        },
        subset: subset.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ext_auth: protected.then(|| RouteExtAuth {
            server: "ext-auth|demo/ext-auth".into(),
            context_extensions: [("config_id".to_string(), "demo.api-key".to_string())].into(),
        }),
        rate_limit: protected.then(|| RouteRateLimit {
            server: "rate-limit|demo/settings".into(),
            domain: "demo.limits".into(),
            descriptors: Vec::new(),
        }),
    };
    ir.inbound_routes = vec![InboundRoutes {
        namespace: "default".into(),
        service: "reviews".into(),
        port: 9080,
        virtual_hosts: vec![InboundVirtualHost {
            name: "reviews.mesh.internal".into(),
            domains: vec!["reviews.mesh.internal".into()],
            routes: vec![
                mirror("api", "/api", &[], true),
                mirror("v2-only", "/v2", &[("version", "v2")], true),
                mirror("rest", "/", &[], false),
            ],
        }],
    }];
    let workload = mk_workload();
    let r = crate::sidecar(
        &ir,
        &crate::SidecarSpec {
            workload: &workload,
            outbound_address: "127.0.0.1",
            outbound_port: 15001,
            inbound_address: "10.0.0.1",
            access_log: &trellis_model::access_log::AccessLogSink::Stdout,
        },
    );
    let http = hcm(&r.listeners[1]);
    let filters: Vec<&str> = http.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.rbac",
            "envoy.filters.http.ext_authz.ext-auth|demo/ext-auth",
            "envoy.filters.http.ratelimit.rate-limit|demo/settings",
            "envoy.filters.http.router"
        ]
    );
    let route_config = rds_routes(&r, &http);
    let hosts: Vec<(&str, Vec<&str>)> = route_config
        .virtual_hosts
        .iter()
        .map(|h| (h.name.as_str(), h.routes.iter().map(|r| r.name.as_str()).collect()))
        .collect();
    assert_eq!(
        hosts,
        [
            (
                "reviews.mesh.internal",
                vec!["api", "rest", "reviews.mesh.internal/unmatched"]
            ),
            ("inbound|9080/unmatched", vec!["inbound|9080/unmatched"]),
        ]
    );
    assert_eq!(route_config.virtual_hosts[1].domains, ["*"]);
    let api = &route_config.virtual_hosts[0].routes[0];
    // STRICT: every caller is a mesh proxy that counted the rate limit; only ext-auth here.
    let names: Vec<&String> = api.typed_per_filter_config.keys().collect();
    assert_eq!(names, ["envoy.filters.http.ext_authz.ext-auth|demo/ext-auth"]);
    assert!(
        route_config.virtual_hosts[0].routes[1]
            .typed_per_filter_config
            .is_empty()
    );
    match &route_config.virtual_hosts[1].routes[0].action {
        Some(Action::DirectResponse(response)) => assert_eq!(response.status, 404),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // PERMISSIVE: the plaintext chain counts the rate limit too, the mTLS chain does not.
    ir.inbound_policies = vec![InboundPolicy {
        name: "default/permissive".into(),
        tls_mode: Some(TlsMode::Permissive),
        ..Default::default()
    }];
    let permissive = crate::sidecar(
        &ir,
        &crate::SidecarSpec {
            workload: &workload,
            outbound_address: "127.0.0.1",
            outbound_port: 15001,
            inbound_address: "10.0.0.1",
            access_log: &trellis_model::access_log::AccessLogSink::Stdout,
        },
    );
    let listener = &permissive.listeners[1];
    let per_chain: Vec<(String, usize)> = listener
        .filter_chains
        .iter()
        .map(|chain| {
            let http: HttpConnectionManager = typed(&chain.filters[0]);
            let config = rds_routes(&permissive, &http);
            (
                chain.name.clone(),
                config.virtual_hosts[0].routes[0].typed_per_filter_config.len(),
            )
        })
        .collect();
    assert_eq!(per_chain, [("mtls".to_string(), 1), ("plaintext".to_string(), 2)]);
    // The TCP port has no HTTP routes to mirror.
    assert_eq!(
        r.listeners[2].filter_chains[0].filters[0].name,
        "envoy.filters.network.tcp_proxy"
    );
}
