//! ExternalService `egressGatewayRoutes`: client sidecars reach the host only through the egress
//! gateway proxies the VirtualGateway selects, which originate to the destination and enforce
//! the AccessPolicies on the EXTERNAL_SERVICE.

use trellis_model::GatewayInstance;
use trellis_model::ir::{IngressListener, Upstream};

use super::*;

/// Gloo's egress guide, shaped for the demo mesh: port 443 with TLS origination, reached by
/// clients on `portMatch` 80; a direct port 80 too, which the egress route takes over.
const CONFIG: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata: {name: egress-gw, namespace: gateways}
spec:
  workloads: [{selector: {labels: {app: egress-gateway}}}]
  listeners:
  - {port: {number: 9443}, http: {}, tls: {mode: ISTIO_MUTUAL}, exposedExternalServices: [{host: httpbin.org}]}
  - {port: {number: 9444}, http: {}, tls: {mode: ISTIO_MUTUAL}, exposedExternalServices: [{host: other.example.com}]}
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalService
metadata: {name: httpbin, namespace: demo}
spec:
  hosts: [httpbin.org]
  ports:
  - {number: 80, name: http}
  - {number: 443, name: https, protocol: HTTPS, clientsideTls: {}, egressGatewayRoutes: {portMatch: 80, virtualGatewayRefs: [{name: egress-gw, namespace: gateways}]}}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: AccessPolicy
metadata: {name: httpbin-egress, namespace: demo}
spec:
  applyToDestinations: [{kind: EXTERNAL_SERVICE, selector: {name: httpbin, namespace: demo}}]
  config:
    authz:
      allowedClients: [{serviceAccountSelector: {name: frontend, namespace: demo}}]
";

fn translated(extra: &str) -> Translation {
    let mut snapshot = load("ingress");
    // `extra` first: what comes earlier must not win over the egress route.
    let yaml = format!("{extra}{CONFIG}");
    snapshot
        .resources
        .extend(trellis_api::parse_documents("egress.yaml", &yaml).unwrap());
    snapshot
        .discovery
        .get_mut("cluster-1")
        .unwrap()
        .gateways
        .push(GatewayInstance {
            namespace: "gateways".into(),
            service_account: "egress".into(),
            address: "10.0.0.9".into(),
            labels: [("app".to_string(), "egress-gateway".to_string())].into(),
            // It serves the VirtualGateway's port 9443 on 18443, as behind a Kubernetes Service.
            port_map: [(9443, 18443)].into(),
        });
    translate(&snapshot)
}

fn upstream<'a>(t: &'a Translation, cluster: &str, name: &str) -> Option<&'a Upstream> {
    t.clusters[cluster].upstream(name)
}

fn gateway_listener(t: &Translation, port: u16) -> IngressListener {
    t.clusters["cluster-1"]
        .ingress_gateways
        .iter()
        .find(|g| g.name == "gateways/egress-gw")
        .expect("the egress gateway")
        .listeners
        .iter()
        .find(|l| l.port == port)
        .cloned()
        .expect("the listener")
}

#[test]
fn sidecars_send_the_host_to_the_egress_gateway_over_mesh_mtls() {
    let t = translated("");
    let host = t.clusters["cluster-1"]
        .virtual_hosts
        .iter()
        .find(|h| h.domains.contains(&"httpbin.org".to_string()))
        .expect("a client-side host");
    let RouteAction::Forward(forward) = &host.routes[0].action else {
        panic!("{host:?}")
    };
    assert_eq!(forward.destinations[0].upstream, "egress|80||httpbin.org");
    let egress = upstream(&t, "cluster-1", "egress|80||httpbin.org").unwrap();
    assert!(egress.external.is_none(), "mesh mTLS to the gateway: {egress:?}");
    assert_eq!(
        egress
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), e.port))
            .collect::<Vec<_>>(),
        [("10.0.0.9", 18443)],
        "the gateway proxy on the local port of the listener exposing the host"
    );
    assert_eq!(egress.identities, ["spiffe://trellis.local/ns/gateways/sa/egress"]);
    // Another cluster has no gateway proxy: no endpoint, so no way out (not a direct one).
    assert!(
        upstream(&t, "cluster-2", "egress|80||httpbin.org")
            .unwrap()
            .endpoints
            .is_empty()
    );
}

#[test]
fn no_sidecar_can_reach_the_destination_directly() {
    let t = translated("");
    for cluster in ["cluster-1", "cluster-2"] {
        let direct = upstream(&t, cluster, "external|443||httpbin.org").expect("the gateway's upstream");
        assert_eq!(direct.workspaces, Some(Vec::new()), "visible to a sidecar: {direct:?}");
        assert!(upstream(&t, cluster, "outbound|80||httpbin.org").is_none());
        // Nothing on a sidecar routes to the destination itself.
        for host in &t.clusters[cluster].virtual_hosts {
            for route in &host.routes {
                if let RouteAction::Forward(forward) = &route.action {
                    assert!(
                        forward
                            .destinations
                            .iter()
                            .all(|d| !d.upstream.ends_with("||httpbin.org") || d.upstream.starts_with("egress|")),
                        "{host:?}"
                    );
                }
            }
        }
    }
    let status = &t.statuses["ExternalService/demo/httpbin"];
    assert!(
        status
            .message
            .contains("spec.ports[0]: httpbin.org:80 is an egressGatewayRoutes.portMatch; requests to it go through the egress gateway"),
        "{status:?}"
    );
    assert!(!status.message.contains("not supported"), "{status:?}");
}

#[test]
fn another_service_cannot_open_a_direct_path_to_an_egress_host() {
    let t = translated(
        "apiVersion: networking.gloo.solo.io/v2\nkind: ExternalService\n\
         metadata: {name: httpbin-direct, namespace: other}\n\
         spec:\n  hosts: [httpbin.org]\n  ports: [{number: 80, name: http}]\n---\n",
    );
    let status = &t.statuses["ExternalService/other/httpbin-direct"];
    assert!(
        status
            .message
            .contains("spec.ports[0]: httpbin.org:80 is an egressGatewayRoutes.portMatch"),
        "{status:?}"
    );
    let host = t.clusters["cluster-1"]
        .virtual_hosts
        .iter()
        .find(|h| h.domains.contains(&"httpbin.org".to_string()))
        .unwrap();
    let RouteAction::Forward(forward) = &host.routes[0].action else {
        panic!("{host:?}")
    };
    assert_eq!(forward.destinations[0].upstream, "egress|80||httpbin.org");
}

#[test]
fn the_gateway_originates_to_the_destination_and_enforces_the_access_policy() {
    let t = translated("");
    let listener = gateway_listener(&t, 9443);
    assert!(listener.tls.as_ref().is_some_and(|tls| tls.mesh_mutual), "{listener:?}");
    let host = listener
        .virtual_hosts
        .iter()
        .find(|h| h.name == "egress|httpbin.org:80")
        .expect("the egress host");
    assert_eq!(host.domains, ["httpbin.org", "httpbin.org:80"]);
    let RouteAction::Forward(forward) = &host.routes[0].action else {
        panic!("{host:?}")
    };
    assert_eq!(forward.destinations[0].upstream, "external|443||httpbin.org");
    let tls_sni = upstream(&t, "cluster-1", "external|443||httpbin.org")
        .unwrap()
        .external
        .as_ref()
        .unwrap()
        .tls_sni
        .clone();
    assert_eq!(tls_sni.as_deref(), Some("httpbin.org"), "TLS originated at the gateway");
    let access = &listener.host_access;
    assert_eq!(access.len(), 1, "{access:?}");
    assert_eq!(access[0].host, "egress|httpbin.org:80");
    let rules = access[0].policies[0].rules.as_ref().unwrap();
    assert_eq!(rules[0].principals, ["spiffe://trellis.local/ns/demo/sa/frontend"]);
    // The listener exposing another host serves nothing for httpbin.
    let other = gateway_listener(&t, 9444);
    assert!(other.virtual_hosts.is_empty(), "{other:?}");
    let status = &t.statuses["VirtualGateway/gateways/egress-gw"];
    assert!(
        status
            .message
            .contains("spec.listeners[1].exposedExternalServices: no ExternalService routes"),
        "{status:?}"
    );
    assert!(!status.message.contains("spec.listeners[0]"), "{status:?}");
    assert_eq!(t.statuses["AccessPolicy/demo/httpbin-egress"].state, "ACCEPTED");
}

#[test]
fn a_missing_or_unfit_gateway_is_a_warning_and_leaves_no_way_out() {
    let mut snapshot = load("ingress");
    let yaml = "apiVersion: networking.gloo.solo.io/v2\nkind: ExternalService\n\
                metadata: {name: httpbin, namespace: demo}\n\
                spec:\n  hosts: [httpbin.org]\n  ports:\n\
                \x20 - {number: 80, name: http, egressGatewayRoutes: {virtualGatewayRefs: [{name: nowhere}, {name: plain}]}}\n\
                ---\napiVersion: networking.gloo.solo.io/v2\nkind: VirtualGateway\n\
                metadata: {name: plain, namespace: demo}\n\
                spec:\n  workloads: [{selector: {labels: {app: egress-gateway}}}]\n\
                \x20 listeners: [{port: {number: 9443}, http: {}, exposedExternalServices: [{host: httpbin.org}]}]\n";
    snapshot
        .resources
        .extend(trellis_api::parse_documents("egress.yaml", yaml).unwrap());
    let t = translate(&snapshot);
    let status = &t.statuses["ExternalService/demo/httpbin"];
    assert_eq!(status.state, "WARNING", "{status:?}");
    for field in [
        "spec.ports[0].egressGatewayRoutes.virtualGatewayRefs[0]: VirtualGateway demo/nowhere does not exist",
        "spec.ports[0].egressGatewayRoutes.virtualGatewayRefs[1]: VirtualGateway demo/plain has no http listener with tls.mode ISTIO_MUTUAL",
    ] {
        assert!(status.message.contains(field), "{field} missing from {status:?}");
    }
    let gateway = &t.statuses["VirtualGateway/demo/plain"];
    assert!(
        gateway.message.contains(
            "spec.listeners[0].exposedExternalServices: an egress listener must be http with tls.mode ISTIO_MUTUAL"
        ),
        "{gateway:?}"
    );
    let egress = upstream(&t, "cluster-1", "egress|80||httpbin.org").unwrap();
    assert!(egress.endpoints.is_empty(), "{egress:?}");
    // An AccessPolicy on an ExternalService that no egress gateway carries: said, not ignored.
    let policy = "apiVersion: security.policy.gloo.solo.io/v2\nkind: AccessPolicy\n\
                  metadata: {name: direct, namespace: demo}\n\
                  spec:\n  applyToDestinations: [{kind: EXTERNAL_SERVICE, selector: {name: weather}}]\n\
                  \x20 config: {authz: {allowedClients: [{serviceAccountSelector: {name: frontend}}]}}\n";
    snapshot
        .resources
        .extend(trellis_api::parse_documents("policy.yaml", policy).unwrap());
    let t = translate(&snapshot);
    let status = &t.statuses["AccessPolicy/demo/direct"];
    assert_eq!(status.state, "WARNING", "{status:?}");
    assert!(
        status
            .message
            .contains("spec.applyToDestinations[0]: selects no ExternalService routed through an egress gateway"),
        "{status:?}"
    );
    assert_eq!(
        upstream(&t, "cluster-1", "external|80||httpbin.org")
            .unwrap()
            .workspaces,
        Some(Vec::new())
    );
}

#[test]
fn a_destination_routed_twice_gets_one_gateway_upstream() {
    let t = translated(
        "apiVersion: networking.gloo.solo.io/v2\nkind: ExternalService\n\
         metadata: {name: httpbin-again, namespace: other}\n\
         spec:\n  hosts: [httpbin.org]\n\
         \x20 ports: [{number: 443, egressGatewayRoutes: {portMatch: 8080, virtualGatewayRefs: [{name: egress-gw, namespace: gateways}]}}]\n---\n",
    );
    let names: Vec<&str> = t.clusters["cluster-1"]
        .upstreams
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique, "Envoy refuses a cluster named twice");
    // Whichever comes second says so.
    let messages = format!(
        "{}\n{}",
        t.statuses["ExternalService/other/httpbin-again"].message, t.statuses["ExternalService/demo/httpbin"].message
    );
    assert!(
        messages.contains("egressGatewayRoutes: httpbin.org:443 is already routed through an egress gateway"),
        "{messages}"
    );
}
