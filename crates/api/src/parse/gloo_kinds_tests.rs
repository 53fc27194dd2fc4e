//! The Gloo Mesh 2.x policy and admin kinds beyond routing load as Gloo's documentation writes
//! them; typos and values Envoy would refuse are still refused, with the field.

use super::*;

fn errors_of(text: &str) -> Vec<DocumentError> {
    match parse_documents("test.yaml", text) {
        Ok(resources) => panic!("expected an error, got {resources:?}"),
        Err(error) => error.errors(),
    }
}

/// One document of every kind, shaped like the examples of Gloo's guides and API reference.
const EVERY_KIND: &str = r#"
apiVersion: security.policy.gloo.solo.io/v2
kind: CORSPolicy
metadata: {name: simple-cors, namespace: bookinfo}
spec:
  applyToRoutes: [{route: {labels: {route: ratings}}}]
  config:
    allowCredentials: true
    allowHeaders: [foo, bar]
    allowMethods: [GET]
    allowOrigins: [{exact: "https://example.com"}, {prefix: "https://dev."}, {regex: "https://.*\\.example\\.org", ignoreCase: true}]
    exposeHeaders: [x-served-by]
    maxAge: 1m
---
apiVersion: security.policy.gloo.solo.io/v2
kind: JWTPolicy
metadata: {name: jwt-policy, namespace: bookinfo}
spec:
  applyToRoutes: [{route: {labels: {route: ratings}}}]
  config:
    phase: {preAuthz: {}}
    providers:
      dev-example:
        issuer: https://dev.example.com
        audiences: [https://api.example.com]
        local:
          inline: '{"keys": [{"kty": "RSA", "n": "abc", "e": "AQAB"}]}'
        tokenSource: {headers: [{name: jwt}], queryParams: [jwt_token]}
        claimsToHeaders: [{claim: org, header: x-org}, {claim: email, header: x-email, append: true}]
        keepToken: true
        clockSkewSeconds: 30
      auth0:
        issuer: https://example.auth0.com/
        remote: {url: "https://example.auth0.com/.well-known/jwks.json", cacheDuration: 5m, enableAsyncFetch: true}
    validationPolicy: ALLOW_MISSING
---
apiVersion: security.policy.gloo.solo.io/v2
kind: CSRFPolicy
metadata: {name: csrf, namespace: bookinfo}
spec:
  applyToRoutes: [{route: {labels: {route: ratings}}}]
  config: {filterEnabled: true, additionalOrigins: [{suffix: example.com}]}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ClientTLSPolicy
metadata: {name: client-tls, namespace: bookinfo}
spec:
  applyToDestinations: [{kind: EXTERNAL_SERVICE, selector: {name: httpbin}}]
  simple: {config: {sni: httpbin.org, credentialName: httpbin-ca}}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: DLPPolicy
metadata: {name: dlp, namespace: bookinfo}
spec:
  applyToRoutes: [{route: {labels: {route: ratings}}}]
  config: {actions: [{predefinedAction: SSN}], sanitize: ALL}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: WAFPolicy
metadata: {name: log4shell, namespace: bookinfo}
spec:
  applyToRoutes: [{route: {labels: {route: ratings}}}]
  config:
    disableCoreRuleSet: true
    customInterventionMessage: "Log4Shell malicious payload"
    customRuleSets: [{ruleStr: "SecRuleEngine On"}]
---
apiVersion: security.policy.gloo.solo.io/v2
kind: GraphQLAllowedQueryPolicy
metadata: {name: gql, namespace: bookinfo}
spec:
  config: {allowedQueryHashes: [abc]}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: MirrorPolicy
metadata: {name: mirror, namespace: bookinfo}
spec:
  applyToRoutes: [{route: {labels: {route: reviews}}}]
  config:
    destination: {ref: {name: reviews-v3, namespace: bookinfo, cluster: cluster-1}, port: {number: 9080}}
    percentage: 50
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: TransformationPolicy
metadata: {name: transform, namespace: bookinfo}
spec:
  applyToRoutes: [{route: {labels: {route: ratings}}}]
  config:
    phase: {postAuthz: {priority: 1}}
    request: {injaTemplate: {headers: {x-user: {text: '{{ header("x-email") }}'}}}}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: LoadBalancerPolicy
metadata: {name: sticky, namespace: bookinfo}
spec:
  applyToDestinations: [{port: {number: 9080}, selector: {labels: {app: reviews}}}]
  config: {consistentHash: {httpHeaderName: x-user}, warmupDurationSecs: 10s, healthyPanicThreshold: 50}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: ProxyProtocolPolicy
metadata: {name: proxy-protocol, namespace: bookinfo}
spec:
  applyToListeners: [{virtualGateway: {name: istio-ingressgateway}, port: {number: 443}}]
  config: {enableProxyProtocol: true}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: HTTPBufferPolicy
metadata: {name: buffer, namespace: bookinfo}
spec:
  applyToRoutes: [{route: {labels: {route: ratings}}}]
  config: {maxRequestBytes: 4096}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: ConnectionPolicy
metadata: {name: connections, namespace: bookinfo}
spec:
  applyToDestinations: [{selector: {labels: {app: reviews}}}]
  config:
    tcp: {maxConnections: 100, connectTimeout: 2s, tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}}
    http: {maxRequestsPerConnection: 10, maxRetries: 3, idleTimeout: 1h}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: ActiveHealthCheckPolicy
metadata: {name: health, namespace: bookinfo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {}}]
  config:
    healthCheck: {timeout: 1s, interval: 5s, unhealthyThreshold: 2, healthyThreshold: 1, httpHealthCheck: {path: /health}}
    virtualGateways: [{name: north-south-gw, namespace: istio-gateways}]
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: ListenerConnectionPolicy
metadata: {name: listener, namespace: bookinfo}
spec:
  applyToListeners: [{virtualGateway: {name: istio-ingressgateway}}]
  config: {perConnectionBufferLimitBytes: 32768}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: TrimProxyConfigPolicy
metadata: {name: trim, namespace: bookinfo}
spec:
  applyToWorkloads: [{selector: {labels: {app: productpage}}}]
  config: {includedDestinations: [{kind: SERVICE, selector: {labels: {app: reviews}}}]}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: AdaptiveRequestConcurrencyPolicy
metadata: {name: concurrency, namespace: bookinfo}
spec:
  config: {concurrencyUpdateIntervalMillis: 100}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: GraphQLPersistedQueryCachePolicy
metadata: {name: gql-cache, namespace: bookinfo}
spec:
  config: {cacheSize: 100}
---
apiVersion: observability.policy.gloo.solo.io/v2
kind: AccessLogPolicy
metadata: {name: access-logs, namespace: bookinfo}
spec:
  applyToWorkloads: [{selector: {labels: {app: reviews}}}]
  config:
    filters: [{statusCodeMatcher: {value: 200, comparator: GE}}]
    includedRequestHeaders: [x-request-id]
---
apiVersion: extensions.policy.gloo.solo.io/v2
kind: WasmDeploymentPolicy
metadata: {name: wasm, namespace: bookinfo}
spec:
  applyToWorkloads: [{selector: {labels: {app: reviews}}}]
  config: {filters: [{httpUriSource: {uri: "https://example.com/filter.wasm"}}]}
---
apiVersion: extensions.policy.gloo.solo.io/v2
kind: LuaPolicy
metadata: {name: lua, namespace: bookinfo}
spec:
  config: {sourceCode: {inlineString: "function envoy_on_request(h) end"}}
---
apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: root-trust-policy, namespace: gloo-mesh}
spec:
  config:
    mgmtServerCa: {generated: {ttlDays: 730}}
    intermediateCertOptions: {secretRotationGracePeriodRatio: 0.1, ttlDays: 1}
---
apiVersion: admin.gloo.solo.io/v2
kind: Dashboard
metadata: {name: settings, namespace: gloo-mesh}
spec:
  authn: {oidc: {clientId: gloo, issuerUrl: "https://idp.example.com", appUrl: "https://ui.example.com"}}
---
apiVersion: admin.gloo.solo.io/v2
kind: IstioLifecycleManager
metadata: {name: istiod, namespace: gloo-mesh}
spec:
  installations: [{revision: 1-20, clusters: [{name: cluster-1, defaultRevision: true}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: GatewayLifecycleManager
metadata: {name: gateways, namespace: gloo-mesh}
spec:
  installations: [{gatewayRevision: 1-20, clusters: [{name: cluster-1, activeGateway: true}]}]
---
apiVersion: admin.gloo.solo.io/v2alpha1
kind: InsightsConfig
metadata: {name: insights-config, namespace: gloo-mesh}
spec:
  disabledInsights: [CFG0002]
---
apiVersion: admin.gloo.solo.io/v2alpha1
kind: WaypointLifecycleManager
metadata: {name: waypoint, namespace: gloo-mesh}
spec:
  applyToServiceAccount: [{name: reviews, namespace: bookinfo}]
"#;

#[test]
fn every_gloo_policy_and_admin_kind_loads_as_gloo_writes_it() {
    let resources = parse_documents("gloo.yaml", EVERY_KIND).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<String> = resources.iter().map(|r| r.kind().to_string()).collect();
    assert_eq!(kinds.len(), 27, "{kinds:?}");
    assert!(kinds.contains(&"CORSPolicy".to_string()) && kinds.contains(&"WaypointLifecycleManager".to_string()));
    // What is stored reads back the same.
    for resource in &resources {
        let again: Resource = serde_json::from_value(resource.to_value()).unwrap();
        assert_eq!(&again, resource);
    }
}

#[test]
fn a_typo_in_a_new_kind_is_refused_with_its_field_path() {
    let errors = errors_of(
        "apiVersion: security.policy.gloo.solo.io/v2
kind: CORSPolicy
metadata: {name: cors, namespace: demo}
spec:
  config: {allowOrigin: [{exact: a}], allowOrigins: [{exactly: b}]}
",
    );
    let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
    assert!(fields.contains(&"spec.config.allowOrigin"), "{errors:?}");
    assert!(fields.contains(&"spec.config.allowOrigins[0].exactly"), "{errors:?}");
}

#[test]
fn a_kind_under_another_group_is_refused_naming_its_own() {
    let errors = errors_of(
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: CORSPolicy
metadata: {name: cors, namespace: demo}
spec: {}
",
    );
    assert!(
        errors[0].message.contains("security.policy.gloo.solo.io/v2"),
        "{errors:?}"
    );
}

#[test]
fn values_envoy_would_refuse_are_refused_with_the_field() {
    let errors = errors_of(
        r#"apiVersion: security.policy.gloo.solo.io/v2
kind: CORSPolicy
metadata: {name: cors, namespace: demo}
spec:
  config: {allowOrigins: [{regex: "(unclosed"}, {exact: a, prefix: b}], allowMethods: ["GET, POST"], maxAge: soon}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: JWTPolicy
metadata: {name: jwt, namespace: demo}
spec:
  config:
    validationPolicy: SOMETIMES
    claims: [{values: [a]}, {key: email}, {key: sub, values: ["a*b"]}]
    requiredScopes: ["read write"]
    providers:
      broken: {issuer: x, local: {inline: "not a key set"}}
      both: {issuer: y, local: {inline: "{}"}, remote: {url: "https://x"}}
      headers: {issuer: z, remote: {url: "ftp://x"}, claimsToHeaders: [{claim: sub, header: "bad header"}]}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: LoadBalancerPolicy
metadata: {name: lb, namespace: demo}
spec:
  config: {simple: FASTEST, healthyPanicThreshold: 101}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: ConnectionPolicy
metadata: {name: connections, namespace: demo}
spec:
  config: {tcp: {maxConnections: -1, tcpKeepalive: {time: 500ms}}, http: {idleTimeout: forever}}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: MirrorPolicy
metadata: {name: mirror, namespace: demo}
spec:
  config: {destination: {ref: {name: a}}, percentage: 150}
"#,
    );
    let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
    for expected in [
        "spec.config.allowOrigins[0].regex",
        "spec.config.allowOrigins[1]",
        "spec.config.allowMethods[0]",
        "spec.config.maxAge",
        "spec.config.validationPolicy",
        "spec.config.claims[0].key",
        "spec.config.claims[1]",
        "spec.config.claims[2].values[0]",
        "spec.config.requiredScopes[0]",
        "spec.config.providers.broken.local.inline",
        "spec.config.providers.both",
        "spec.config.providers.headers.remote.url",
        "spec.config.providers.headers.claimsToHeaders[0].header",
        "spec.config.simple",
        "spec.config.healthyPanicThreshold",
        "spec.config.tcp.maxConnections",
        "spec.config.tcp.tcpKeepalive.time",
        "spec.config.http.idleTimeout",
        "spec.config.percentage",
    ] {
        assert!(fields.contains(&expected), "{expected} not in {fields:?}");
    }
}

#[test]
fn new_kinds_have_cli_names() {
    for (input, kind) in [
        ("corspolicies", Kind::CorsPolicy),
        ("corsp", Kind::CorsPolicy),
        ("jwtpolicy", Kind::JwtPolicy),
        ("mirrorpolicies", Kind::MirrorPolicy),
        ("lbp", Kind::LoadBalancerPolicy),
        ("roottrustpolicies", Kind::RootTrustPolicy),
        ("insightsconfig", Kind::InsightsConfig),
    ] {
        assert_eq!(Kind::parse_loose(input), Some(kind), "{input}");
    }
    assert_eq!(Kind::InsightsConfig.group(), "admin.gloo.solo.io");
}

#[test]
fn root_trust_policy_fields_are_typed_and_checked_with_their_path() {
    let errors = errors_of(
        "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: typo, namespace: gloo-mesh}
spec:
  config:
    mgmtServerCa: {secretRefs: {name: root}}
    intermediateCertOptions: {ttlDay: 1}
---
apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: values, namespace: gloo-mesh}
spec:
  config:
    mgmtServerCa: {generated: {ttlDays: 0}, secretRef: {name: root}}
    intermediateCertOptions: {secretRotationGracePeriodRatio: 1.5}
    passiveCertificateAuthorities: [{secretRef: {namespace: gloo-mesh}}, {secretRef: {name: x, namespace: other}}]
",
    );
    let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
    for field in [
        "spec.config.mgmtServerCa.secretRefs",
        "spec.config.intermediateCertOptions.ttlDay",
        "spec.config.mgmtServerCa",
        "spec.config.intermediateCertOptions.secretRotationGracePeriodRatio",
        "spec.config.passiveCertificateAuthorities[0].secretRef.name",
        "spec.config.passiveCertificateAuthorities[1].secretRef.namespace",
    ] {
        assert!(fields.contains(&field), "{field} missing from {errors:?}");
    }
    let both = errors
        .iter()
        .find(|e| e.field.as_deref() == Some("spec.config.mgmtServerCa"))
        .unwrap();
    assert!(both.message.contains("not both"), "{both:?}");
}

#[test]
fn a_root_trust_policy_naming_a_secret_root_loads_typed() {
    let resources = parse_documents(
        "test.yaml",
        "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: root-trust-policy, namespace: gloo-mesh}
spec:
  config:
    mgmtServerCa: {secretRef: {name: my-root, namespace: gloo-mesh}}
    intermediateCertOptions: {ttlDays: 30, orgName: acme}
    passiveCertificateAuthorities: [{secretRef: {name: old-root}}]
",
    )
    .unwrap();
    let Spec::RootTrustPolicy(spec) = &resources[0].spec else {
        panic!("{resources:?}")
    };
    let ca = spec.config.mgmt_server_ca.as_ref().unwrap();
    assert_eq!(ca.secret_ref.as_ref().unwrap().name, "my-root");
    let options = spec.config.intermediate_cert_options.as_ref().unwrap();
    assert_eq!(options.ttl_days, Some(30));
    assert_eq!(
        spec.config.passive_certificate_authorities[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "old-root"
    );
}

#[test]
fn access_log_filters_of_unknown_shape_are_refused_with_resource_and_field() {
    let errors = errors_of(
        "apiVersion: observability.policy.gloo.solo.io/v2
kind: AccessLogPolicy
metadata: {name: logs, namespace: demo}
spec:
  config:
    filters:
    - statusCodeMatcher: {value: 400, comparison: GE}
    - durationMatcher: {value: 5s}
    - headerMatcher: {name: x, value: y}
      statusCodeMatcher: {value: 500}
    includedRequestHeaders: [authorization]
",
    );
    let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
    // Gloo's field is `comparator`; an unknown matcher kind is not a filter.
    assert!(
        fields.contains(&"spec.config.filters[0].statusCodeMatcher.comparison"),
        "{errors:?}"
    );
    assert!(fields.contains(&"spec.config.filters[1].durationMatcher"), "{errors:?}");
    let text = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("AccessLogPolicy/demo/logs"), "{text}");
    // Semantic checks run on what parses: a second fix-and-apply names these.
    let errors = errors_of(
        "apiVersion: observability.policy.gloo.solo.io/v2
kind: AccessLogPolicy
metadata: {name: logs, namespace: demo}
spec:
  config:
    filters: [{headerMatcher: {name: x, value: y}, statusCodeMatcher: {value: 500}}]
    includedRequestHeaders: [authorization]
",
    );
    let fields: Vec<_> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
    assert_eq!(
        fields,
        ["spec.config.filters[0]", "spec.config.includedRequestHeaders[0]"],
        "{errors:?}"
    );
}
