//! CORS, mirror and JWT policies on routes; kinds not applied warn.

use trellis_model::ir::{Route, RouteAction};
use trellis_model::policy::{ClaimRule, StringMatch};

use crate::Translation;

/// A VirtualDestination, a route table whose `api` route carries `gloo: "yes"`, and `extra`.
fn translated(extra: &str) -> Translation {
    let base = "apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  services: [{labels: {app: backend}}]
  ports: [{number: 80}]
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: api
    labels: {gloo: \"yes\"}
    matchers: [{uri: {prefix: /api}}]
    forwardTo: {destinations: [{ref: {name: backend}, kind: VIRTUAL_DESTINATION}]}
  - name: rest
    forwardTo: {destinations: [{ref: {name: backend}, kind: VIRTUAL_DESTINATION}]}
---
";
    crate::demo_fixture::translated_in_demo(&format!("{base}{extra}"))
}

fn route<'t>(t: &'t Translation, name: &str) -> &'t Route {
    t.clusters["cluster-1"]
        .virtual_hosts
        .iter()
        .flat_map(|h| &h.routes)
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}"))
}

const SELECTED: &str = "applyToRoutes: [{route: {labels: {gloo: \"yes\"}}}]";

#[test]
fn cors_policy_sets_its_origins_methods_and_max_age_on_the_selected_route_only() {
    let t = translated(&format!(
        "apiVersion: security.policy.gloo.solo.io/v2
kind: CORSPolicy
metadata: {{name: cors, namespace: demo}}
spec:
  {SELECTED}
  config:
    allowOrigins: [{{exact: https://shop.example.com}}, {{regex: 'https://.*\\.example\\.org'}}]
    allowMethods: [GET, POST]
    allowHeaders: [x-custom]
    exposeHeaders: [x-served-by]
    maxAge: 1h
    allowCredentials: true
"
    ));
    let cors = route(&t, "demo/backend/api")
        .policies
        .cors
        .clone()
        .expect("cors on api");
    assert_eq!(
        cors.allow_origins.iter().map(|o| o.matcher.clone()).collect::<Vec<_>>(),
        [
            StringMatch::Exact("https://shop.example.com".into()),
            StringMatch::Regex("https://.*\\.example\\.org".into())
        ]
    );
    assert_eq!(cors.allow_methods, "GET,POST");
    assert_eq!(cors.expose_headers, "x-served-by");
    assert_eq!(cors.max_age_seconds, Some(3600));
    assert_eq!(cors.allow_credentials, Some(true));
    assert!(route(&t, "demo/backend/rest").policies.cors.is_none());
    assert_eq!(t.statuses["CORSPolicy/demo/cors"].state, "ACCEPTED");
}

#[test]
fn mirror_policy_copies_to_a_virtual_destination_or_a_service_it_adds_an_upstream_for() {
    let mirror = |name: &str, destination: &str| {
        format!(
            "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: MirrorPolicy
metadata: {{name: {name}, namespace: demo}}
spec:
  {SELECTED}
  config: {{destination: {destination}, percentage: 25}}
---
"
        )
    };
    let t = translated(&mirror(
        "to-vd",
        "{ref: {name: backend}, kind: VIRTUAL_DESTINATION, port: {number: 80}}",
    ));
    let copy = route(&t, "demo/backend/api").policies.mirror.clone().unwrap();
    assert_eq!(copy.upstream, "outbound|80||backend.mesh.internal");
    assert_eq!(copy.per_million, 250_000);
    assert!(route(&t, "demo/backend/rest").policies.mirror.is_none());

    // A service no route sends to yet gets its own upstream in every cluster.
    let t = translated(&mirror(
        "to-frontend",
        "{ref: {name: frontend, cluster: cluster-1}, port: {number: 80}}",
    ));
    let copy = route(&t, "demo/backend/api").policies.mirror.clone().unwrap();
    assert_eq!(copy.upstream, "outbound|80||frontend.demo.svc.cluster-1");
    for cluster in ["cluster-1", "cluster-2"] {
        assert!(
            t.clusters[cluster].upstream(&copy.upstream).is_some(),
            "{cluster} has no upstream for the mirror"
        );
    }

    let t = translated(&mirror("nowhere", "{ref: {name: ghost}, kind: VIRTUAL_DESTINATION}"));
    assert!(route(&t, "demo/backend/api").policies.mirror.is_none());
    let status = &t.statuses["MirrorPolicy/demo/nowhere"];
    assert_eq!(status.state, "WARNING");
    assert!(status.message.contains("spec.config.destination"), "{status:?}");
}

const JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

#[test]
fn jwt_policy_requires_a_token_from_its_providers_with_its_claims_and_warns_about_fields_it_leaves_out() {
    let t = translated(&format!(
        "apiVersion: security.policy.gloo.solo.io/v2
kind: JWTPolicy
metadata: {{name: jwt, namespace: demo}}
spec:
  {SELECTED}
  config:
    phase: {{preAuthz: {{}}}}
    requiredScopes: [read]
    claims:
    - {{key: realm_access.roles, nestedClaimDelimiter: ., values: [admin], notValues: [banned]}}
    providers:
      dev:
        issuer: https://dev.example.com
        audiences: [api]
        local: {{inline: '{JWKS}'}}
        tokenSource: {{headers: [{{name: x-token, prefix: 'Bearer '}}], queryParams: [token]}}
        claimsToHeaders: [{{claim: sub, header: x-user}}]
      cloud:
        issuer: https://cloud.example.com
        remote: {{url: 'https://cloud.example.com/jwks'}}
"
    ));
    let jwt = route(&t, "demo/backend/api").policies.jwt.clone().unwrap();
    assert_eq!(jwt.name, "demo/jwt");
    assert!(!jwt.allow_missing && !jwt.allow_failed);
    let [cloud, dev] = &jwt.providers[..] else {
        panic!("two providers: {:?}", jwt.providers)
    };
    let remote = cloud.remote.as_ref().expect("the cloud key set is fetched");
    assert_eq!(
        (remote.host.as_str(), remote.port, remote.tls, remote.cluster_name()),
        (
            "cloud.example.com",
            443,
            true,
            "jwks|https|cloud.example.com:443".to_string()
        )
    );
    assert!(cloud.local_jwks.is_empty());
    assert_eq!(dev.name, "demo/jwt/dev");
    assert_eq!(dev.issuer, "https://dev.example.com");
    assert_eq!(dev.from_headers, [("x-token".to_string(), "Bearer ".to_string())]);
    assert_eq!(dev.from_params, ["token"]);
    assert_eq!(dev.claims_to_headers, [("sub".to_string(), "x-user".to_string())]);
    assert!(route(&t, "demo/backend/rest").policies.jwt.is_none());
    let status = &t.statuses["JWTPolicy/demo/jwt"];
    assert_eq!(jwt.required_scopes, ["read"]);
    assert_eq!(
        jwt.claims,
        [ClaimRule {
            path: vec!["realm_access".into(), "roles".into()],
            values: vec!["admin".into()],
            not_values: vec!["banned".into()],
        }]
    );
    assert_eq!(status.state, "WARNING");
    assert!(status.message.contains("spec.config.phase"), "{status:?}");
    assert!(!status.message.contains("requiredScopes"), "{status:?}");
    assert!(!status.message.contains("claims"), "{status:?}");
    assert!(!status.message.contains("spec.config.providers.cloud"), "{status:?}");
}

#[test]
fn jwt_policy_without_a_usable_provider_refuses_every_request_on_its_routes() {
    let t = translated(&format!(
        "apiVersion: security.policy.gloo.solo.io/v2
kind: JWTPolicy
metadata: {{name: jwt, namespace: demo}}
spec:
  {SELECTED}
  config:
    providers:
      vault: {{issuer: x, local: {{secretRef: {{objectRef: {{name: keys}}, key: jwks}}}}}}
"
    ));
    let api = route(&t, "demo/backend/api");
    assert!(
        matches!(api.action, RouteAction::DirectResponse { status: 401, .. }),
        "{:?}",
        api.action
    );
    assert!(matches!(route(&t, "demo/backend/rest").action, RouteAction::Forward(_)));
}

#[test]
fn transformation_policy_lands_on_the_selected_route_only() {
    use trellis_model::transformation::Piece;
    let t = translated(&format!(
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: TransformationPolicy
metadata: {{name: transform, namespace: demo}}
spec:
  {SELECTED}
  config: {{request: {{injaTemplate: {{headers: {{x-a: {{text: '{{{{ header(\"x-b\") }}}}'}}}}}}}}}}
"
    ));
    let applied = route(&t, "demo/backend/api").policies.transformation.clone().unwrap();
    let request = applied.request.unwrap();
    assert_eq!(
        request.set_headers,
        vec![("x-a".to_string(), vec![Piece::Header("x-b".into())])]
    );
    assert_eq!(route(&t, "demo/backend/rest").policies.transformation, None);
    let status = &t.statuses["TransformationPolicy/demo/transform"];
    assert_eq!(status.state, "ACCEPTED", "{status:?}");
}

#[test]
fn kinds_not_applied_yet_are_accepted_with_a_warning_naming_the_kind() {
    let t = translated(
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: ProxyProtocolPolicy
metadata: {name: proxy-protocol, namespace: demo}
spec:
  config: {enableProxyProtocol: true}
---
apiVersion: admin.gloo.solo.io/v2
kind: Dashboard
metadata: {name: settings, namespace: gloo-mesh}
spec: {}
",
    );
    for key in [
        "ProxyProtocolPolicy/demo/proxy-protocol",
        "Dashboard/gloo-mesh/settings",
    ] {
        let status = &t.statuses[key];
        assert_eq!(status.state, "WARNING", "{key}: {status:?}");
        assert!(status.message.contains("not applied yet"), "{key}: {status:?}");
    }
}

#[test]
fn load_balancer_and_connection_policies_combine_on_the_destinations_they_select() {
    use trellis_model::policy::{HashKey, LbPolicy, TcpKeepalive};
    let t = translated(
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: LoadBalancerPolicy
metadata: {name: a-sticky, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]
  config: {consistentHash: {httpHeaderName: x-user}, healthyPanicThreshold: 25.5, warmupDurationSecs: 10s}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: LoadBalancerPolicy
metadata: {name: b-random, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]
  config: {simple: RANDOM}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: ConnectionPolicy
metadata: {name: limits, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]
  config:
    tcp: {maxConnections: 10, connectTimeout: 250ms, tcpKeepalive: {probes: 3, time: 1m, interval: 10s}}
    http: {maxRequests: 20, maxPendingRequests: 5, maxRetries: 2, idleTimeout: 1h}
",
    );
    let upstream = t.clusters["cluster-1"]
        .upstream("outbound|80||backend.mesh.internal")
        .unwrap();
    let traffic = upstream.traffic.clone().expect("traffic settings");
    assert_eq!(traffic.lb_policy, Some(LbPolicy::RingHash), "the first policy wins");
    assert_eq!(traffic.healthy_panic_threshold_basis_points, Some(2550));
    assert_eq!(traffic.connect_timeout_ms, Some(250));
    assert_eq!(
        (
            traffic.max_connections,
            traffic.max_requests,
            traffic.max_pending_requests,
            traffic.max_retries
        ),
        (Some(10), Some(20), Some(5), Some(2))
    );
    assert_eq!(
        traffic.tcp_keepalive,
        Some(TcpKeepalive {
            probes: Some(3),
            time_s: Some(60),
            interval_s: Some(10)
        })
    );
    // Both routes forward to the hashed destination: both hash the header.
    for name in ["demo/backend/api", "demo/backend/rest"] {
        assert_eq!(
            route(&t, name).policies.hash,
            [HashKey::Header("x-user".into())],
            "{name}"
        );
    }
    assert_eq!(t.statuses["LoadBalancerPolicy/demo/b-random"].state, "FAILED");
    let sticky = &t.statuses["LoadBalancerPolicy/demo/a-sticky"];
    assert!(sticky.message.contains("spec.config.warmupDurationSecs"), "{sticky:?}");
    let limits = &t.statuses["ConnectionPolicy/demo/limits"];
    assert!(limits.message.contains("spec.config.http.idleTimeout"), "{limits:?}");
}

#[test]
fn load_balancer_warmup_becomes_the_destinations_warmup_unless_its_balancing_has_none() {
    let t = translated(
        "apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata: {name: backend-v2, namespace: demo}
spec:
  hosts: [backend-v2.mesh.internal]
  services: [{labels: {app: backend, version: v2}}]
  ports: [{number: 80}]
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: LoadBalancerPolicy
metadata: {name: warm, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]
  config: {simple: ROUND_ROBIN, warmupDurationSecs: 10s}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: LoadBalancerPolicy
metadata: {name: random, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend-v2}}]
  config: {simple: RANDOM, warmupDurationSecs: 10s}
",
    );
    let warm = t.clusters["cluster-1"]
        .upstream("outbound|80||backend.mesh.internal")
        .unwrap();
    assert_eq!(warm.traffic.as_ref().and_then(|t| t.warmup_ms), Some(10_000));
    assert_ne!(t.statuses["LoadBalancerPolicy/demo/warm"].state, "WARNING");
    let random = t.clusters["cluster-1"]
        .upstream("outbound|80||backend-v2.mesh.internal")
        .unwrap();
    assert_eq!(random.traffic.as_ref().and_then(|t| t.warmup_ms), None);
    let status = &t.statuses["LoadBalancerPolicy/demo/random"];
    assert!(status.message.contains("spec.config.warmupDurationSecs"), "{status:?}");
}

#[test]
fn jwt_policy_selects_routes_by_destination_and_without_selectors_every_route() {
    let policy = |name: &str, selectors: &str| {
        format!(
            "apiVersion: security.policy.gloo.solo.io/v2
kind: JWTPolicy
metadata: {{name: {name}, namespace: demo}}
spec:
  {selectors}
  config:
    providers:
      dev: {{issuer: https://dev.example.com, local: {{inline: '{JWKS}'}}}}
---
"
        )
    };
    let t = translated(&policy("everywhere", ""));
    for name in ["demo/backend/api", "demo/backend/rest"] {
        assert!(route(&t, name).policies.jwt.is_some(), "{name}");
    }
    // Destinations only: the routes to other destinations are left alone.
    let t = translated(&policy(
        "elsewhere",
        "applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: ghost}}]",
    ));
    for name in ["demo/backend/api", "demo/backend/rest"] {
        assert!(route(&t, name).policies.jwt.is_none(), "{name}");
    }

    let t = translated(&policy(
        "by-destination",
        "applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]",
    ));
    for name in ["demo/backend/api", "demo/backend/rest"] {
        assert_eq!(
            route(&t, name).policies.jwt.as_deref().map(|j| j.name.as_str()),
            Some("demo/by-destination"),
            "{name}"
        );
    }
}

#[test]
fn csrf_policy_enforces_or_shadows_its_share_with_its_extra_origins() {
    let t = translated(&format!(
        "apiVersion: security.policy.gloo.solo.io/v2
kind: CSRFPolicy
metadata: {{name: csrf, namespace: demo}}
spec:
  {SELECTED}
  config: {{filterEnabled: true, percentage: 50, additionalOrigins: [{{suffix: .example.com, ignoreCase: true}}]}}
"
    ));
    let csrf = route(&t, "demo/backend/api").policies.csrf.clone().unwrap();
    assert_eq!((csrf.enforce_per_million, csrf.shadow_per_million), (500_000, 0));
    assert_eq!(
        csrf.additional_origins[0].matcher,
        StringMatch::Suffix(".example.com".into())
    );
    assert!(csrf.additional_origins[0].ignore_case);
    assert!(route(&t, "demo/backend/rest").policies.csrf.is_none());
    assert_eq!(t.statuses["CSRFPolicy/demo/csrf"].state, "ACCEPTED");
}

#[test]
fn http_buffer_policy_limits_the_selected_routes_requests() {
    let t = translated(&format!(
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: HTTPBufferPolicy
metadata: {{name: buffer, namespace: demo}}
spec:
  {SELECTED}
  config: {{maxRequestBytes: 4096}}
"
    ));
    assert_eq!(
        route(&t, "demo/backend/api").policies.buffer_max_request_bytes,
        Some(4096)
    );
    assert_eq!(route(&t, "demo/backend/rest").policies.buffer_max_request_bytes, None);
    assert_eq!(t.statuses["HTTPBufferPolicy/demo/buffer"].state, "ACCEPTED");
}

#[test]
fn active_health_check_policy_maps_envoys_health_check_and_warns_about_the_rest() {
    use trellis_model::policy::HealthProbe;
    let t = translated(
        "apiVersion: resilience.policy.gloo.solo.io/v2
kind: ActiveHealthCheckPolicy
metadata: {name: health, namespace: demo}
spec:
  applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {name: backend}}]
  config:
    healthCheck:
      timeout: 2s
      interval: 5s
      unhealthyThreshold: 3
      healthyThreshold: 1
      httpHealthCheck: {path: /health, expectedStatuses: [{start: 200, end: 300}]}
      eventLogPath: /dev/stdout
    virtualGateways: [{name: north-south-gw, namespace: istio-gateways}]
",
    );
    let upstream = t.clusters["cluster-1"]
        .upstream("outbound|80||backend.mesh.internal")
        .unwrap();
    let check = upstream.traffic.as_deref().unwrap().health_check.clone().unwrap();
    assert_eq!(
        (
            check.timeout_ms,
            check.interval_ms,
            check.unhealthy_threshold,
            check.healthy_threshold
        ),
        (2_000, 5_000, 3, 1)
    );
    assert_eq!(
        check.probe,
        HealthProbe::Http {
            path: "/health".into(),
            host: "backend.mesh.internal".into(),
            expected_statuses: vec![(200, 300)]
        }
    );
    let status = &t.statuses["ActiveHealthCheckPolicy/demo/health"];
    assert_eq!(status.state, "WARNING");
    for field in ["spec.config.healthCheck.eventLogPath", "spec.config.virtualGateways"] {
        assert!(status.message.contains(field), "{field}: {status:?}");
    }
}
