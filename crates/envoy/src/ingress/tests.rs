use envoy_types::pb::envoy::config::core::v3::{DataSource, config_source::ConfigSourceSpecifier, data_source};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use std::sync::Arc;
use trellis_model::ir::{ExternalUpstream, IngressListener, Route, RouteMatch, Upstream};

use super::*;
use crate::testing::{addr, hcm, mk_cluster_config, mk_endpoint, mk_forward, mk_upstream, tls_context};
use crate::{ROOT_CA_SECRET, WORKLOAD_SECRET};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn mk_host(name: &str, domain: &str, upstream: &str) -> VirtualHost {
    VirtualHost {
        name: name.to_string(),
        domains: vec![domain.to_string()],
        routes: vec![Route {
            name: format!("{name}/default"),
            matcher: RouteMatch::default(),
            action: mk_forward(&[(upstream, 1)]),
            policies: Default::default(),
        }],
        workspaces: None,
        clients: None,
    }
}

fn mk_listener(port: u16, tls: Option<IngressTls>, hosts: Vec<VirtualHost>) -> IngressListener {
    IngressListener {
        port,
        tls,
        virtual_hosts: hosts,
        stream: None,
        https_redirect: false,
        host_access: Vec::new(),
    }
}

fn mk_gateway(name: &str, selector: &[(&str, &str)], listeners: Vec<IngressListener>) -> IngressGateway {
    IngressGateway {
        name: name.to_string(),
        selector: labels(selector),
        listeners,
    }
}

fn mk_tls(ca: Option<&str>) -> IngressTls {
    IngressTls {
        cert_chain_file: "/etc/ingress/tls.crt".to_string(),
        private_key_file: "/etc/ingress/tls.key".to_string(),
        client_ca_file: ca.map(str::to_string),
        ..Default::default()
    }
}

/// [`mk_cluster_config`] plus an external upstream, an unreferenced one, and `gateways`.
fn mk_ir(gateways: Vec<IngressGateway>) -> ClusterConfig {
    let mut ir = mk_cluster_config();
    ir.upstreams.push(Arc::new(Upstream {
        external: Some(Box::new(ExternalUpstream {
            dns: false,
            tls_sni: Some("api.example.com".to_string()),
            ..Default::default()
        })),
        ..mk_upstream("api-external", "outbound_.443_._.api.example.com", vec![], &[])
    }));
    ir.upstreams.push(Arc::new(mk_upstream(
        "unused",
        "outbound_.80_._.unused",
        vec![mk_endpoint("10.0.0.9", 1, "east")],
        &[],
    )));
    ir.ingress_gateways = gateways;
    ir
}

fn run(ir: &ClusterConfig, proxy_labels: &[(&str, &str)]) -> ProxyResources {
    let labels = labels(proxy_labels);
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

fn listener_names(r: &ProxyResources) -> Vec<&str> {
    r.listeners.iter().map(|l| l.name.as_str()).collect()
}

fn file(source: &Option<DataSource>) -> &str {
    match source.as_ref().and_then(|s| s.specifier.as_ref()) {
        Some(data_source::Specifier::Filename(name)) => name,
        other => panic!("expected a file name, got {other:?}"),
    }
}

#[test]
fn serves_only_gateways_whose_selector_the_labels_satisfy() {
    let ir = mk_ir(vec![
        mk_gateway(
            "default/web",
            &[("app", "ingress")],
            vec![mk_listener(8080, None, vec![])],
        ),
        mk_gateway("default/any", &[], vec![mk_listener(8081, None, vec![])]),
        mk_gateway(
            "default/two",
            &[("app", "ingress"), ("zone", "a")],
            vec![mk_listener(8082, None, vec![])],
        ),
        mk_gateway(
            "default/other",
            &[("app", "other")],
            vec![mk_listener(8083, None, vec![])],
        ),
    ]);
    let r = run(&ir, &[("app", "ingress"), ("team", "x")]);
    assert_eq!(listener_names(&r), ["ingress|8080", "ingress|8081"]);
    let r = run(&ir, &[("app", "ingress"), ("zone", "a")]);
    assert_eq!(listener_names(&r), ["ingress|8080", "ingress|8081", "ingress|8082"]);
    let r = run(&ir, &[]);
    assert_eq!(
        listener_names(&r),
        ["ingress|8081"],
        "only the empty selector matches no labels"
    );
    let routes: Vec<_> = r.routes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(routes, ["ingress|8081"]);
}

#[test]
fn nothing_selected_gives_nothing() {
    let ir = mk_ir(vec![mk_gateway(
        "default/web",
        &[("app", "ingress")],
        vec![mk_listener(
            8080,
            None,
            vec![mk_host("a", "a.example.com", "reviews-v1")],
        )],
    )]);
    assert_eq!(run(&ir, &[("app", "other")]), ProxyResources::default());
}

#[test]
fn plaintext_listener_fetches_its_routes_over_rds_and_trusts_the_remote_address() {
    let hosts = vec![mk_host("web", "web.example.com", "reviews-v1")];
    let ir = mk_ir(vec![mk_gateway(
        "default/web",
        &[],
        vec![mk_listener(8080, None, hosts.clone())],
    )]);
    let r = run(&ir, &[]);
    let [listener] = r.listeners.as_slice() else {
        panic!("expected one listener, got {:?}", r.listeners);
    };
    assert_eq!(listener.name, "ingress|8080");
    assert_eq!(addr(&listener.address), ("0.0.0.0".to_string(), 8080));
    assert_eq!(listener.filter_chains.len(), 1);
    assert!(listener.filter_chains[0].transport_socket.is_none());
    let hcm = hcm(listener);
    assert_eq!(hcm.stat_prefix, "ingress_8080");
    assert_eq!(hcm.use_remote_address, Some(BoolValue { value: true }));
    let filters: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.cors",
            "envoy.filters.http.csrf",
            "envoy.filters.http.fault",
            "envoy.filters.http.buffer",
            "envoy.filters.http.router"
        ]
    );
    match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            assert_eq!(rds.route_config_name, "ingress|8080");
            let source = rds
                .config_source
                .as_ref()
                .and_then(|s| s.config_source_specifier.as_ref());
            assert!(matches!(source, Some(ConfigSourceSpecifier::Ads(_))));
        }
        other => panic!("expected RDS, got {other:?}"),
    }
    let [config] = r.routes.as_slice() else {
        panic!("expected one route config");
    };
    assert_eq!(config.name, "ingress|8080");
    let expected: Vec<_> = hosts.iter().map(routes::virtual_host).collect();
    assert_eq!(config.virtual_hosts, expected, "converted exactly as a sidecar's");
    assert!(r.secrets.is_empty());
}

#[test]
fn simple_tls_listener_serves_the_certificate_files_without_asking_for_a_client_certificate() {
    let ir = mk_ir(vec![mk_gateway(
        "default/web",
        &[],
        vec![mk_listener(8443, Some(mk_tls(None)), vec![])],
    )]);
    let r = run(&ir, &[]);
    let context: DownstreamTlsContext = tls_context(&r.listeners[0].filter_chains[0].transport_socket);
    assert_eq!(context.require_client_certificate, None);
    let common = context.common_tls_context.expect("a common TLS context");
    assert!(common.tls_certificate_sds_secret_configs.is_empty(), "files, not SDS");
    let [cert] = common.tls_certificates.as_slice() else {
        panic!("expected one certificate, got {:?}", common.tls_certificates);
    };
    assert_eq!(file(&cert.certificate_chain), "/etc/ingress/tls.crt");
    assert_eq!(file(&cert.private_key), "/etc/ingress/tls.key");
    assert!(common.validation_context_type.is_none());
}

#[test]
fn mutual_tls_listener_requires_a_client_certificate_chained_to_the_ca_file() {
    let ir = mk_ir(vec![mk_gateway(
        "default/web",
        &[],
        vec![mk_listener(8443, Some(mk_tls(Some("/etc/ingress/ca.crt"))), vec![])],
    )]);
    let r = run(&ir, &[]);
    let context: DownstreamTlsContext = tls_context(&r.listeners[0].filter_chains[0].transport_socket);
    assert_eq!(context.require_client_certificate, Some(BoolValue { value: true }));
    let common = context.common_tls_context.expect("a common TLS context");
    assert_eq!(
        file(&common.tls_certificates[0].certificate_chain),
        "/etc/ingress/tls.crt"
    );
    match &common.validation_context_type {
        Some(ValidationContextType::ValidationContext(validation)) => {
            assert_eq!(file(&validation.trusted_ca), "/etc/ingress/ca.crt");
        }
        other => panic!("expected an inline validation context, got {other:?}"),
    }
}

#[test]
fn only_referenced_upstreams_become_clusters_built_as_the_sidecar_builds_them() {
    let ir = mk_ir(vec![
        mk_gateway(
            "default/web",
            &[],
            vec![mk_listener(
                8080,
                None,
                vec![mk_host("web", "web.example.com", "reviews-v2")],
            )],
        ),
        mk_gateway(
            "default/api",
            &[],
            vec![mk_listener(
                8443,
                None,
                vec![mk_host("api", "api.example.com", "api-external")],
            )],
        ),
        // Not selected: its upstream must not appear.
        mk_gateway(
            "default/other",
            &[("app", "other")],
            vec![mk_listener(
                9000,
                None,
                vec![mk_host("x", "x.example.com", "reviews-v1")],
            )],
        ),
    ]);
    let r = run(&ir, &[]);
    let names: Vec<_> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["reviews-v2", "api-external"], "IR order, referenced only");
    let endpoints: Vec<_> = r.endpoints.iter().map(|e| e.cluster_name.as_str()).collect();
    assert_eq!(endpoints, names);
    let expected: Vec<_> = ["reviews-v2", "api-external"]
        .iter()
        .map(|n| sidecar::outbound_cluster(ir.upstream(n).unwrap()))
        .collect();
    assert_eq!(r.clusters, expected);
    // The mesh upstream: mTLS with the gateway's own identity and the mesh root over SDS.
    let mesh: UpstreamTlsContext = tls_context(&r.clusters[0].transport_socket);
    assert_eq!(mesh.sni, "outbound_.9080_.v2_.reviews.mesh.internal");
    let common = mesh.common_tls_context.expect("mesh mTLS");
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, WORKLOAD_SECRET);
    match &common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            assert_eq!(
                c.validation_context_sds_secret_config.as_ref().unwrap().name,
                ROOT_CA_SECRET
            );
        }
        other => panic!("expected the mesh root, got {other:?}"),
    }
    // The external one: TLS originated with its SNI, no mesh certificate, and (skipping the
    // check, as this upstream asks) no validation either.
    let external: UpstreamTlsContext = tls_context(&r.clusters[1].transport_socket);
    assert_eq!(external.sni, "api.example.com");
    let common = external.common_tls_context.unwrap();
    assert!(common.tls_certificate_sds_secret_configs.is_empty() && common.tls_certificates.is_empty());
    assert!(common.validation_context_type.is_none());
}

#[test]
fn gateways_on_one_port_merge_into_one_listener_and_route_config() {
    let ir = mk_ir(vec![
        mk_gateway(
            "default/a",
            &[],
            vec![mk_listener(
                8443,
                Some(mk_tls(None)),
                vec![mk_host("a", "a.example.com", "reviews-v1")],
            )],
        ),
        mk_gateway(
            "default/b",
            &[],
            vec![
                mk_listener(
                    8443,
                    Some(mk_tls(Some("/etc/ingress/ca.crt"))),
                    vec![
                        mk_host("b", "b.example.com", "reviews-v2"),
                        // Same name as a's: the first wins.
                        mk_host("a", "other.example.com", "unused"),
                        // Only a domain a already serves: dropped.
                        mk_host("c", "a.example.com", "unused"),
                    ],
                ),
                mk_listener(8080, None, vec![mk_host("plain", "plain.example.com", "reviews-v1")]),
            ],
        ),
    ]);
    let r = run(&ir, &[]);
    assert_eq!(listener_names(&r), ["ingress|8080", "ingress|8443"]);
    let routes: Vec<_> = r.routes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(routes, ["ingress|8080", "ingress|8443"]);
    let hosts: Vec<_> = r.routes[1]
        .virtual_hosts
        .iter()
        .map(|h| (h.name.as_str(), h.domains.clone()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("a", vec!["a.example.com".to_string()]),
            ("b", vec!["b.example.com".to_string()])
        ]
    );
    let context: DownstreamTlsContext = tls_context(&r.listeners[1].filter_chains[0].transport_socket);
    assert_eq!(context.require_client_certificate, None, "the first gateway's TLS wins");
    let names: Vec<_> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["reviews-v1", "reviews-v2"], "dropped hosts reference nothing");
}

#[test]
fn output_is_deterministic() {
    let ir = mk_ir(vec![mk_gateway(
        "default/web",
        &[],
        vec![
            mk_listener(
                8443,
                Some(mk_tls(Some("/ca"))),
                vec![mk_host("a", "a.example.com", "reviews-v1")],
            ),
            mk_listener(8080, None, vec![mk_host("b", "b.example.com", "reviews-v2")]),
        ],
    )]);
    assert_eq!(run(&ir, &[]), run(&ir, &[]));
}

#[test]
fn stream_routes_bring_their_upstreams_and_a_passthrough_listener_reads_the_sni() {
    use trellis_model::ir::{StreamListener, StreamRoute, WeightedUpstream};
    let stream = |passthrough: bool| StreamListener {
        passthrough,
        routes: vec![StreamRoute {
            name: "vault".to_string(),
            server_names: if passthrough {
                vec!["secure.example.com".to_string()]
            } else {
                Vec::new()
            },
            destinations: vec![WeightedUpstream {
                upstream: "unused".to_string(),
                weight: 1,
            }],
        }],
    };
    let listeners = vec![
        IngressListener {
            stream: Some(stream(true)),
            ..mk_listener(9445, None, vec![])
        },
        IngressListener {
            stream: Some(stream(false)),
            ..mk_listener(9446, None, vec![])
        },
    ];
    let r = run(&mk_ir(vec![mk_gateway("default/web", &[], listeners)]), &[]);
    let clusters: Vec<_> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(clusters, ["unused"], "only the stream routes' upstream");
    assert!(r.routes.is_empty(), "stream listeners fetch no routes");
    let passthrough = &r.listeners[0];
    assert_eq!(passthrough.listener_filters.len(), 1, "a TLS inspector");
    let chain = &passthrough.filter_chains[0];
    assert_eq!(
        chain.filter_chain_match.as_ref().unwrap().server_names,
        ["secure.example.com"]
    );
    assert!(chain.transport_socket.is_none(), "TLS passes through");
    assert!(r.listeners[1].listener_filters.is_empty());
    assert!(r.listeners[1].filter_chains[0].filter_chain_match.is_none());
}

#[test]
fn an_https_redirect_listener_requires_tls_on_every_virtual_host() {
    let listeners = vec![
        IngressListener {
            https_redirect: true,
            ..mk_listener(8080, None, vec![mk_host("shop", "shop.example.com", "unused")])
        },
        mk_listener(8081, None, vec![mk_host("shop", "shop.example.com", "unused")]),
    ];
    let r = run(&mk_ir(vec![mk_gateway("default/web", &[], listeners)]), &[]);
    let require: Vec<i32> = r.routes.iter().map(|rc| rc.virtual_hosts[0].require_tls).collect();
    assert_eq!(
        require,
        [TlsRequirementType::All as i32, TlsRequirementType::None as i32]
    );
}

#[test]
fn egress_hosts_carry_the_rbac_of_their_access_policies_and_others_none() {
    use trellis_model::ir::HostAccess;
    use trellis_model::policy::{AuthzRule, InboundPolicy};
    let policy = InboundPolicy {
        name: "demo/weather-egress".to_string(),
        rules: Some(vec![AuthzRule {
            principals: vec!["spiffe://trellis.local/ns/demo/sa/frontend".to_string()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let listener = IngressListener {
        host_access: vec![HostAccess {
            host: "egress|api.example.com:80".to_string(),
            policies: vec![policy.clone()],
        }],
        ..mk_listener(
            9443,
            Some(IngressTls {
                mesh_mutual: true,
                ..Default::default()
            }),
            vec![
                mk_host("egress|api.example.com:80", "api.example.com", "api-external"),
                mk_host("web", "web.example.com", "reviews-v1"),
            ],
        )
    };
    let r = run(&mk_ir(vec![mk_gateway("demo/egress-gw", &[], vec![listener])]), &[]);
    let hcm = hcm(&r.listeners[0]);
    assert_eq!(
        hcm.http_filters[0].name, "envoy.filters.http.rbac",
        "the RBAC filter decides before anything else runs"
    );
    let hosts = &r.routes[0].virtual_hosts;
    let guarded = hosts.iter().find(|h| h.name == "egress|api.example.com:80").unwrap();
    let expected = crate::authz::http_rbac_per_route(&[&policy]).unwrap();
    assert_eq!(
        guarded.typed_per_filter_config.get(&expected.0),
        Some(&expected.1),
        "{guarded:?}"
    );
    let open = hosts.iter().find(|h| h.name == "web").unwrap();
    assert!(open.typed_per_filter_config.is_empty(), "{open:?}");
    // The destination is reached as a sidecar would reach it: TLS originated with its SNI.
    assert!(r.clusters.iter().any(|c| c.name == "api-external"));

    // A gateway without access rules has no RBAC filter at all.
    let plain = run(
        &mk_ir(vec![mk_gateway(
            "demo/web",
            &[],
            vec![mk_listener(
                8080,
                None,
                vec![mk_host("web", "web.example.com", "reviews-v1")],
            )],
        )]),
        &[],
    );
    assert!(hcm_names(&plain).iter().all(|n| *n != "envoy.filters.http.rbac"));
}

fn hcm_names(r: &ProxyResources) -> Vec<String> {
    hcm(&r.listeners[0])
        .http_filters
        .iter()
        .map(|f| f.name.clone())
        .collect()
}

#[test]
fn access_logs_that_select_the_gateway_are_on_its_http_listeners() {
    use trellis_model::access_log::AccessLog;
    let hosts = vec![mk_host("web", "web.example.com", "reviews-v1")];
    let mut ir = mk_ir(vec![mk_gateway("gw", &[], vec![mk_listener(80, None, hosts)])]);
    ir.access_logs = vec![
        AccessLog {
            name: "gloo-mesh/edge".into(),
            namespace: "gloo-mesh".into(),
            labels: labels(&[("app", "ingress")]),
            ..Default::default()
        },
        AccessLog {
            name: "bookinfo/sidecars".into(),
            namespace: "bookinfo".into(),
            ..Default::default()
        },
    ];
    let r = run(&ir, &[("app", "ingress")]);
    let http = hcm(&r.listeners[0]);
    assert_eq!(http.access_log.len(), 1, "only the log that selects the gateway");
    assert_eq!(http.access_log[0].name, "envoy.access_loggers.stdout");
    // A gateway with other labels is not selected.
    let r = run(&ir, &[("app", "edge")]);
    assert!(hcm(&r.listeners[0]).access_log.is_empty());
}
