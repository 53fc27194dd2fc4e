//! Golden tests: `testdata/<case>/config.yaml` + `testdata/discovery-demo.yaml` ─▶
//! `testdata/<case>/expected.json`. Set `UPDATE_GOLDEN=1` to rewrite the expected files, then
//! review the diff.

use std::path::{Path, PathBuf};

use trellis_model::Snapshot;
use trellis_model::ir::{RouteAction, WeightedUpstream};

use super::*;

mod allowed_route_tables;
mod default_destination;
mod egress_gateway;
mod gateway_listeners;
mod policy_scoping;
mod workspace_sharing;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn load(case: &str) -> Snapshot {
    let config = std::fs::read_to_string(testdata().join(case).join("config.yaml")).unwrap();
    crate::demo_fixture::demo_snapshot(case, &config)
}

/// The first virtual host that is not a Kubernetes-style name of a cluster's own service.
fn mesh_host(config: &trellis_model::ClusterConfig) -> &trellis_model::ir::VirtualHost {
    config
        .virtual_hosts
        .iter()
        .find(|h| !h.name.contains(".svc.cluster.local"))
        .expect("a mesh virtual host")
}

fn golden(case: &str) -> Translation {
    let translation = translate(&load(case));
    let actual = serde_json::to_string_pretty(&translation).unwrap() + "\n";
    let path = testdata().join(case).join("expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run with UPDATE_GOLDEN=1 and review it", path.display()));
    assert_eq!(
        actual,
        expected,
        "translation of {case} differs from {}",
        path.display()
    );
    translation
}

#[test]
fn golden_cross_cluster() {
    let t = golden("cross-cluster");
    // cluster-1 reaches v2 only through cluster-2's gateway, weighted by the two endpoints behind it.
    let c1 = &t.clusters["cluster-1"];
    let upstream = c1.upstream("outbound|80||backend.mesh.internal").unwrap();
    let remote: Vec<_> = upstream.endpoints.iter().filter(|e| e.via_gateway).collect();
    assert_eq!(remote.len(), 1);
    assert_eq!(
        (remote[0].port, remote[0].weight, remote[0].cluster.as_str()),
        (32443, 2, "cluster-2")
    );
    // cluster-2's gateway serves every target that has endpoints in cluster-2, also the one its
    // own service's Kubernetes-style name uses, which only cluster-2's sidecars use today: a
    // route elsewhere that starts using it must find the gateway's chain already there.
    let gw: Vec<_> = t.clusters["cluster-2"]
        .gateway_upstreams
        .iter()
        .map(|u| u.key.as_str())
        .collect();
    assert_eq!(
        gw,
        [
            "outbound_.8080_._.backend-v2.mesh.internal",
            "outbound_.80_._.backend.demo.svc.cluster-2",
            "outbound_.80_._.backend.mesh.internal"
        ]
    );
}

#[test]
fn golden_weighted_split() {
    let t = golden("weighted-split");
    let vhost = &mesh_host(&t.clusters["cluster-1"]);
    // Two matchers of the first route become two IR routes; the split route comes last.
    let names: Vec<_> = vhost.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "demo/backend/canary-header/0",
            "demo/backend/canary-header/1",
            "demo/backend/split"
        ]
    );
    let RouteAction::Forward(forward) = &vhost.routes[2].action else {
        panic!("not a forward")
    };
    let weights: Vec<_> = forward
        .destinations
        .iter()
        .map(|WeightedUpstream { upstream, weight, .. }| (upstream.as_str(), *weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("outbound|80||backend.demo.svc.cluster-1", 80),
            ("outbound|80||backend.demo.svc.cluster-2", 20)
        ]
    );
}

#[test]
fn golden_unresolved_destination() {
    let t = golden("unresolved-destination");
    let route = &mesh_host(&t.clusters["cluster-2"]).routes[0];
    assert!(
        matches!(&route.action, RouteAction::DirectResponse { status: 500, .. }),
        "{route:?}"
    );
    assert!(t.warnings["RouteTable/demo/broken"][0].contains("VirtualDestination demo/nope not found"));
}

#[test]
fn golden_policies() {
    use trellis_model::policy::TlsMode;
    let t = golden("policies");
    let status = |key: &str| t.statuses[key].clone();
    assert_eq!(status("RetryTimeoutPolicy/demo/retries").state, "ACCEPTED");
    assert_eq!(status("RetryTimeoutPolicy/demo/retries-again").state, "FAILED");
    assert!(
        status("RetryTimeoutPolicy/demo/retries-again")
            .message
            .contains("an older RetryTimeoutPolicy")
    );
    assert_eq!(status("AccessPolicy/demo/ghosts").state, "WARNING");
    assert_eq!(
        *status("AccessPolicy/demo/backend-access").clusters,
        ["cluster-1", "cluster-2"]
    );

    let c1 = &t.clusters["cluster-1"];
    let api = mesh_host(c1)
        .routes
        .iter()
        .find(|r| r.name == "demo/backend/api")
        .unwrap();
    assert_eq!(api.policies.retry.as_ref().unwrap().attempts, 3);
    assert_eq!(
        api.policies.timeout_ms,
        Some(2000),
        "the newer policy's 9s must not win"
    );
    assert_eq!(
        api.policies.fault.as_ref().unwrap().abort.as_ref().unwrap().per_million,
        5_000
    );
    let rest = mesh_host(c1)
        .routes
        .iter()
        .find(|r| r.name == "demo/backend/rest")
        .unwrap();
    assert!(rest.policies.retry.is_none() && rest.policies.fault.is_none());
    assert_eq!(rest.policies.request_headers.add[0].name, "x-mesh");

    // Failover: cluster-1's clients use cluster-2 only as priority 1; outlier detection is on.
    let upstream = c1.upstream("outbound|80||backend.mesh.internal").unwrap();
    assert!(upstream.outlier_detection.is_some());
    let priorities: Vec<_> = upstream
        .endpoints
        .iter()
        .map(|e| (e.cluster.as_str(), e.priority))
        .collect();
    assert_eq!(priorities, [("cluster-1", 0), ("cluster-2", 1)]);

    // Access: frontend's identity, paths and method in one rule; ops namespace only in dry run.
    let policies = &c1.inbound_policies;
    let enforced = policies
        .iter()
        .find(|p| p.name == "demo/backend-access" && !p.dry_run)
        .unwrap();
    assert_eq!(enforced.tls_mode, Some(TlsMode::Strict));
    let rule = &enforced.rules.as_ref().unwrap()[0];
    assert_eq!(rule.principals, ["spiffe://trellis.local/ns/demo/sa/default"]);
    assert_eq!(rule.methods, ["GET"]);
    let dry = policies
        .iter()
        .find(|p| p.name == "demo/backend-access" && p.dry_run)
        .unwrap();
    assert_eq!(
        dry.rules.as_ref().unwrap()[0].principals,
        ["spiffe://trellis.local/ns/ops/sa/"]
    );
    let ghosts = policies.iter().find(|p| p.name == "demo/ghosts").unwrap();
    assert_eq!(
        ghosts.rules.as_ref().unwrap()[0].principals,
        ["spiffe://trellis.invalid/nobody"]
    );
}

#[test]
fn golden_external() {
    let t = golden("external");
    let c1 = &t.clusters["cluster-1"];
    let weather = c1.upstream("outbound|80||api.weather.test").unwrap();
    assert_eq!(
        (weather.endpoints[0].address.as_str(), weather.endpoints[0].port),
        ("127.0.0.1", 30080)
    );
    assert!(!weather.external.as_deref().unwrap().dns);
    let payments = c1.upstream("outbound|443||payments.example.com").unwrap();
    let external = payments.external.as_deref().unwrap();
    assert!(external.dns);
    assert_eq!(external.tls_sni.as_deref(), Some("payments.example.com"));
    // Verified against the system store by default: nothing to warn about.
    assert_eq!(
        external.tls_verify.as_ref().unwrap().trust,
        trellis_model::ir::TrustSource::System
    );
    assert_eq!(t.statuses["ExternalService/demo/payments"].state, "ACCEPTED");
    assert!(
        c1.virtual_hosts
            .iter()
            .any(|h| h.domains.contains(&"api.weather.test".to_string()))
    );
}

#[test]
fn golden_workspaces() {
    let t = golden("workspaces");
    let c1 = &t.clusters["cluster-1"];
    // shop exports to guest, but guest does not import shop: only shop sees the backend.
    let backend = c1
        .virtual_hosts
        .iter()
        .find(|h| h.name == "backend.mesh.internal:80")
        .unwrap();
    assert_eq!(backend.workspaces, Some(vec!["shop".to_string()]));
    assert_eq!(
        c1.upstream("outbound|80||backend.mesh.internal").unwrap().workspaces,
        Some(vec!["shop".to_string()])
    );
    assert_eq!(c1.namespace_workspaces.get("demo").map(String::as_str), Some("shop"));
    assert_eq!(
        t.statuses["VirtualDestination/demo/backend"].workspaces,
        Some(vec!["shop".to_string()])
    );
    // Federation: every shop service in every cluster has a name of its own.
    let federated = c1
        .virtual_hosts
        .iter()
        .find(|h| h.name == "backend.demo.cluster-2.global:80")
        .unwrap();
    assert_eq!(
        federated.domains,
        ["backend.demo.cluster-2.global", "backend.demo.cluster-2.global:80"]
    );
    assert_eq!(federated.workspaces, Some(vec!["shop".to_string()]));
    let trellis_model::ir::RouteAction::Forward(forward) = &federated.routes[0].action else {
        panic!("not a forward")
    };
    assert_eq!(
        forward.destinations[0].upstream,
        "outbound|80||backend.demo.svc.cluster-2"
    );
    // Isolation: every shop workload accepts shop's namespaces only.
    let isolation: Vec<_> = c1
        .inbound_policies
        .iter()
        .filter(|p| p.name == "workspace/shop/service-isolation")
        .collect();
    assert_eq!(isolation.len(), 2, "frontend and backend-v1 in cluster-1");
    assert_eq!(
        isolation[0].rules.as_ref().unwrap()[0].principals,
        ["spiffe://trellis.local/ns/demo/sa/"]
    );

    // Once guest imports shop, guest sees the backend and may call it.
    let mut snapshot = load("workspaces");
    let settings = trellis_api::parse_one(
        "guest",
        "apiVersion: admin.gloo.solo.io/v2\nkind: WorkspaceSettings\nmetadata: {name: guest, namespace: guest}\nspec: {importFrom: [{workspaces: [{name: shop}]}]}\n",
    )
    .unwrap();
    snapshot.resources.push(settings);
    let shared = translate(&snapshot);
    assert_eq!(
        shared.clusters["cluster-1"].virtual_hosts[0].workspaces,
        Some(vec!["guest".to_string(), "shop".to_string()])
    );
}

#[test]
fn golden_ingress() {
    let t = golden("ingress");
    // Only cluster-1 runs the gateway; the bound route goes to cluster-2's backend.
    let gateways = &t.clusters["cluster-1"].ingress_gateways;
    let ingress = gateways.iter().find(|g| g.name == "demo/ingress").unwrap();
    assert_eq!(ingress.selector.get("app").map(String::as_str), Some("ingress-gateway"));
    let listener = &ingress.listeners[0];
    assert_eq!(
        listener.tls.as_ref().unwrap().client_ca_file.as_deref(),
        Some("/etc/shop/clients.pem")
    );
    assert_eq!(
        listener.virtual_hosts[0].domains,
        ["shop.example.com", "shop.example.com:*"]
    );
    assert!(
        t.clusters["cluster-2"]
            .ingress_gateways
            .iter()
            .all(|g| g.name != "demo/ingress")
    );
    // Bound to a gateway: not a sidecar route.
    assert!(
        t.clusters["cluster-1"]
            .virtual_hosts
            .iter()
            .all(|h| h.name != "shop.example.com")
    );
    assert_eq!(t.statuses["VirtualGateway/demo/unused"].state, "WARNING");
}

#[test]
fn golden_ingress_streams() {
    let t = golden("ingress-streams");
    let gateway = &t.clusters["cluster-1"].ingress_gateways[0];
    let passthrough = gateway.listeners[0].stream.as_ref().unwrap();
    assert_eq!(passthrough.routes[0].destinations.len(), 2);
    for destination in &passthrough.routes[0].destinations {
        assert!(
            t.clusters["cluster-1"].upstream(&destination.upstream).is_some(),
            "{} has no upstream",
            destination.upstream
        );
    }
}

#[test]
fn a_route_table_bound_to_a_virtual_gateway_that_does_not_exist_is_a_warning_naming_the_field() {
    let mut snapshot = load("ingress");
    let yaml = "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\n\
                metadata: {name: lost, namespace: demo}\n\
                spec:\n  hosts: [lost.example.com]\n  virtualGateways: [{name: ingress}, {name: nowhere, namespace: ops}]\n\
                \x20 http: [{name: all, directResponse: {status: 200}}]\n";
    snapshot
        .resources
        .extend(trellis_api::parse_documents("lost.yaml", yaml).unwrap());
    let t = translate(&snapshot);
    let status = &t.statuses["RouteTable/demo/lost"];
    assert_eq!(status.state, "WARNING", "{status:?}");
    assert!(
        status
            .message
            .contains("spec.virtualGateways[1]: VirtualGateway ops/nowhere not found"),
        "{status:?}"
    );
    assert!(
        !status.message.contains("virtualGateways[0]"),
        "demo/ingress exists: {status:?}"
    );
    assert_eq!(t.statuses["RouteTable/demo/shop"].state, "ACCEPTED");
}

#[test]
fn translation_is_deterministic_whatever_the_input_order() {
    let snapshot = load("weighted-split");
    let mut reversed = snapshot.clone();
    reversed.resources.reverse();
    let reversed = Snapshot::new(reversed.resources, reversed.discovery);
    assert_eq!(translate(&snapshot), translate(&reversed));
}

#[test]
fn a_cluster_without_gateway_is_not_reachable_from_others() {
    let mut snapshot = load("cross-cluster");
    snapshot.discovery.get_mut("cluster-2").unwrap().east_west_gateway = None;
    let t = translate(&snapshot);
    let upstream = t.clusters["cluster-1"]
        .upstream("outbound|80||backend.mesh.internal")
        .unwrap();
    assert!(upstream.endpoints.iter().all(|e| !e.via_gateway));
    assert!(t.warnings["Cluster/cluster-2"][0].contains("no east-west gateway"));
}

#[test]
fn golden_addons() {
    let t = golden("addons");
    let c1 = &t.clusters["cluster-1"];
    let host = c1
        .virtual_hosts
        .iter()
        .find(|h| h.name.starts_with("backend.mesh"))
        .unwrap();
    let route = |suffix: &str| host.routes.iter().find(|r| r.name.ends_with(suffix)).unwrap();
    let api = &route("/api").policies;
    let ext_auth = api.ext_auth.as_ref().unwrap();
    assert_eq!(ext_auth.server, "ext-auth|demo/ext-auth");
    assert_eq!(
        ext_auth.context_extensions["config_id"], "demo.api-key",
        "the oldest policy wins"
    );
    // Routes to the backend are mirrored for its sidecars (cluster-1 runs them; cluster-2 has
    // its own backend, with its own mirror).
    let inbound = &c1.inbound_routes;
    assert_eq!(
        inbound
            .iter()
            .map(|r| (r.namespace.as_str(), r.service.as_str(), r.port))
            .collect::<Vec<_>>(),
        [("demo", "backend", 80)]
    );
    let mirrored = inbound[0]
        .virtual_hosts
        .iter()
        .find(|h| h.domains.contains(&"backend.mesh.internal".to_string()))
        .expect("the mesh host is mirrored");
    let mirror = |suffix: &str| mirrored.routes.iter().find(|r| r.name.ends_with(suffix)).unwrap();
    // The rate limit is counted where the request leaves, and at the destination for plaintext
    // callers only (the Envoy side puts it on the plaintext chain).
    let rate_limit = api.rate_limit.as_ref().unwrap();
    assert_eq!(
        (rate_limit.domain.as_str(), rate_limit.descriptors.len()),
        ("demo.limits", 2)
    );
    assert_eq!(mirror("/api").rate_limit.as_ref(), Some(rate_limit));
    // Ext-auth is checked on both sides; unprotected routes are mirrored so they keep working.
    assert_eq!(mirror("/api").ext_auth, api.ext_auth);
    assert_eq!(
        mirror("/admin").ext_auth.as_ref().unwrap().context_extensions["config_id"],
        "demo.admin"
    );
    assert!(mirror("/rest").ext_auth.is_none() && mirror("/rest").rate_limit.is_none());
    // sourceCluster would name the destination's own cluster there: counted only where the
    // request leaves, and the status says a plaintext caller of the destination escapes it.
    assert!(route("/by-source").policies.rate_limit.is_some());
    assert!(mirror("/by-source").rate_limit.is_none());
    assert!(
        t.statuses["RateLimitPolicy/demo/per-source"]
            .message
            .contains("a plaintext caller of the destination's sidecar is not counted"),
        "{}",
        t.statuses["RateLimitPolicy/demo/per-source"].message
    );
    assert!(
        t.statuses["RateLimitPolicy/demo/limit"]
            .message
            .contains("counted once: on the caller's sidecar or ingress gateway, or on the destination's sidecar inbound for plaintext callers")
    );
    assert!(
        t.statuses["ExtAuthPolicy/demo/admin"]
            .message
            .contains("again on the destination's sidecar inbound")
    );
    assert_eq!(
        route("/admin").policies.ext_auth.as_ref().unwrap().context_extensions["config_id"],
        "demo.admin"
    );
    assert!(route("/rest").policies.ext_auth.is_none() && route("/rest").policies.rate_limit.is_none());
    // Servers resolve to the add-ons each cluster registered; cluster-2 has none.
    let endpoint = |config: &ClusterConfig, name: &str| {
        config
            .addon_servers
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .endpoint
            .clone()
    };
    assert_eq!(endpoint(c1, "ext-auth|demo/ext-auth").unwrap().port, 18082);
    assert_eq!(endpoint(c1, "rate-limit|demo/settings").unwrap().port, 18081);
    assert!(endpoint(&t.clusters["cluster-2"], "ext-auth|demo/ext-auth").is_none());
    // API keys travel as digests, from the policy's namespace only; Rego is inlined.
    let text = serde_json::to_string(&c1.addons).unwrap();
    assert!(
        !text.contains("alice-secret-key") && !text.contains("mallory-key"),
        "{text}"
    );
    let api_key = &c1
        .addons
        .auth_configs
        .iter()
        .find(|c| c.id == "demo.api-key")
        .unwrap()
        .spec;
    let keys = api_key["configs"][0]["apiKeyAuth"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["metadata"]["user-id"], "alice");
    let admin = &c1
        .addons
        .auth_configs
        .iter()
        .find(|c| c.id == "demo.admin")
        .unwrap()
        .spec;
    assert!(admin["configs"][0]["opaAuth"]["regoModules"]["demo/admin-policy/policy.rego"].is_string());
    assert_eq!(t.statuses["ExtAuthPolicy/demo/api-key-again"].state, "FAILED");
    assert_eq!(t.statuses["RateLimitPolicy/demo/limit"].state, "ACCEPTED");
    // A policy naming a missing server still guards its route, with a server that has no
    // endpoint in any cluster (Envoy refuses: fail closed), and says so.
    let typo = route("/typo").policies.ext_auth.as_ref().unwrap();
    assert_eq!(endpoint(c1, &typo.server), None);
    assert!(t.warnings["ExtAuthPolicy/demo/typo"][0].contains("does not exist"));
    assert!(
        t.warnings["ExtAuthPolicy/demo/api-key"]
            .iter()
            .any(|w| w.contains("own namespace"))
    );
}

#[test]
fn golden_addons_inbound() {
    let t = golden("addons-inbound");
    let mirror = |cluster: &str| {
        let routes = &t.clusters[cluster].inbound_routes;
        assert_eq!(routes.len(), 1, "one protected service port in {cluster}");
        routes[0].virtual_hosts.clone()
    };
    let hosts = mirror("cluster-1");
    // Envoy refuses a domain in two virtual hosts of one route configuration.
    let mut domains: Vec<&String> = hosts.iter().flat_map(|h| &h.domains).collect();
    let count = domains.len();
    domains.sort();
    domains.dedup();
    assert_eq!(domains.len(), count, "{hosts:#?}");
    let host = |domain: &str| {
        hosts
            .iter()
            .find(|h| h.domains.iter().any(|d| d == domain))
            .unwrap_or_else(|| panic!("no mirrored host for {domain}: {hosts:#?}"))
    };
    let names = |domain: &str| -> Vec<String> {
        host(domain)
            .routes
            .iter()
            .map(|r| r.name.rsplit('/').next().unwrap().to_string())
            .collect()
    };
    // The exact mirrors first (an unprotected one too, so it keeps working), then the
    // rewritten route as a catch-all of its host, with its ext-auth.
    assert_eq!(names("backend.mesh.internal"), ["open", "v2-only", "rewritten"]);
    let mesh = &host("backend.mesh.internal").routes;
    assert!(mesh[0].ext_auth.is_none());
    assert_eq!(mesh[1].subset.get("version").map(String::as_str), Some("v2"));
    assert_eq!(mesh[2].matcher, trellis_model::ir::RouteMatch::default());
    assert!(mesh[2].ext_auth.is_some());
    // A host rewrite is matched by the host the destination receives.
    assert_eq!(names("internal.backend"), ["renamed"]);
    assert!(host("internal.backend:*").routes[0].ext_auth.is_some());
    // What the ingress gateway forwards is guarded at the destination too.
    assert_eq!(names("shop.example.com"), ["to-backend"]);
    // cluster-2's backends get their own mirror; the frontend, which nothing protects, none.
    assert_eq!(mirror("cluster-2").len(), hosts.len());
    assert!(
        t.clusters["cluster-1"]
            .inbound_routes
            .iter()
            .all(|r| r.service == "backend")
    );
}
