//! VirtualGateway listeners beyond HTTP with files: a Secret's certificate, ISTIO_MUTUAL,
//! PASSTHROUGH and TCP listeners with the RouteTable `tls` and `tcp` routes they serve, and the
//! Gloo fields Trellis accepts without applying them (WARNING naming the field).

use super::*;

const CONFIG: &str = "\
apiVersion: v1
kind: Secret
metadata: {name: shop-tls, namespace: demo}
type: kubernetes.io/tls
stringData:
  tls.crt: \"-----BEGIN CERTIFICATE-----\\nshop\\n-----END CERTIFICATE-----\\n\"
  tls.key: \"-----BEGIN PRIVATE KEY-----\\ntop-secret-key\\n-----END PRIVATE KEY-----\\n\"
---
apiVersion: networking.gloo.solo.io/v2
kind: VirtualGateway
metadata: {name: edge, namespace: demo}
spec:
  workloads: [{selector: {labels: {app: ingress-gateway}, cluster: cluster-1}}]
  listeners:
  - {port: {number: 9443}, http: {}, tls: {mode: SIMPLE, secretName: shop-tls}}
  - {port: {number: 9444}, http: {}, tls: {mode: MUTUAL, secretName: shop-tls}}
  - {port: {number: 9445}, tls: {mode: PASSTHROUGH}}
  - {port: {number: 9446}, tcp: {}}
  - {port: {number: 9447}, http: {}, tls: {mode: ISTIO_MUTUAL}}
  - {port: {number: 9448}, tls: {mode: AUTO_PASSTHROUGH}}
  - {port: {number: 9449}, exposedExternalServices: [{host: httpbin.org}], tls: {mode: ISTIO_MUTUAL}, http: {}}
  - {port: {number: 9450}, http: {}, tls: {files: {serverCert: /etc/shop/tls.crt, privateKey: /etc/shop/tls.key}}}
  - {port: {number: 9451}, http: {}, httpsRedirect: true}
  - {port: {number: 9452}, http: {}, tls: {mode: ISTIO_MUTUAL, verifySubjectAltName: [spiffe://trellis.local/ns/demo/sa/frontend]}}
  - {port: {number: 9453}, http: {}, tls: {mode: SIMPLE, secretName: shop-tls, verifySubjectAltName: [x]}}
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: streams, namespace: demo}
spec:
  hosts: [secure.example.com]
  virtualGateways: [{name: edge}]
  tls:
  - name: secure
    matchers: [{sniHosts: [secure.example.com]}]
    forwardTo: {destinations: [{ref: {name: backend, cluster: cluster-2}, port: {number: 80}}]}
  - name: by-host
    forwardTo: {destinations: [{ref: {name: backend}, port: {number: 80}}]}
  - name: broken
    forwardTo: {destinations: [{ref: {name: nowhere}}]}
  tcp:
  - name: raw
    matchers: [{port: 9446}]
    forwardTo: {destinations: [{ref: {name: frontend}, port: {number: 80}}]}
";

fn translated() -> Translation {
    let mut snapshot = load("ingress");
    snapshot
        .resources
        .extend(trellis_api::parse_documents("edge.yaml", CONFIG).unwrap());
    translate(&snapshot)
}

fn listener(t: &Translation, port: u16) -> Option<trellis_model::ir::IngressListener> {
    t.clusters["cluster-1"]
        .ingress_gateways
        .iter()
        .find(|g| g.name == "demo/edge")
        .unwrap()
        .listeners
        .iter()
        .find(|l| l.port == port)
        .cloned()
}

#[test]
fn a_secret_named_by_a_listener_becomes_its_credential_and_never_shows_in_debug_output() {
    let t = translated();
    let tls = listener(&t, 9443).unwrap().tls.unwrap();
    let credential = tls.credential.as_ref().expect("the Secret's certificate");
    assert_eq!(credential.secret, "demo/shop-tls");
    assert!(credential.cert_chain_pem.contains("shop"));
    assert!(credential.private_key_pem.contains("top-secret-key"));
    assert_eq!(credential.client_ca_pem, None);
    let debug = format!("{:?}", t.clusters["cluster-1"]);
    assert!(!debug.contains("top-secret-key"), "the key leaked into Debug output");
    // Only the gateway's cluster receives the key.
    let elsewhere = serde_json::to_string(&t.clusters["cluster-2"]).unwrap();
    assert!(!elsewhere.contains("top-secret-key"));
}

#[test]
fn gloo_file_names_istio_mutual_and_https_redirect_translate() {
    let t = translated();
    let files = listener(&t, 9450).unwrap().tls.unwrap();
    assert_eq!(files.cert_chain_file, "/etc/shop/tls.crt");
    assert_eq!(files.private_key_file, "/etc/shop/tls.key");
    assert!(files.credential.is_none() && !files.mesh_mutual);
    assert!(listener(&t, 9451).unwrap().https_redirect);
    assert!(!listener(&t, 9450).unwrap().https_redirect);
    let checked = listener(&t, 9452).unwrap().tls.unwrap();
    assert_eq!(
        checked.client_subject_alt_names,
        ["spiffe://trellis.local/ns/demo/sa/frontend"]
    );
    let mesh = listener(&t, 9447).unwrap();
    assert!(mesh.tls.unwrap().mesh_mutual);
    assert!(!mesh.virtual_hosts.is_empty(), "ISTIO_MUTUAL still serves HTTP routes");
}

#[test]
fn passthrough_and_tcp_listeners_serve_the_bound_tls_and_tcp_routes() {
    let t = translated();
    let passthrough = listener(&t, 9445).unwrap();
    assert!(passthrough.tls.is_none(), "PASSTHROUGH does not terminate");
    let stream = passthrough.stream.unwrap();
    assert!(stream.passthrough);
    let names: Vec<_> = stream.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["streams.demo.secure", "streams.demo.by-host"]);
    assert_eq!(stream.routes[0].server_names, ["secure.example.com"]);
    // No sniHosts: the route table's hosts.
    assert_eq!(stream.routes[1].server_names, ["secure.example.com"]);
    let upstream = &stream.routes[0].destinations[0].upstream;
    assert_eq!(upstream, "outbound|80||backend.demo.svc.cluster-2");
    let config = &t.clusters["cluster-1"];
    assert!(
        config.upstream(upstream).is_some_and(|u| !u.endpoints.is_empty()),
        "the route's upstream exists with endpoints"
    );

    let tcp = listener(&t, 9446).unwrap().stream.unwrap();
    assert!(!tcp.passthrough);
    let names: Vec<_> = tcp.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["streams.demo.raw"]);
    // A destination no other route uses gets its upstream too.
    let upstream = &tcp.routes[0].destinations[0].upstream;
    assert_eq!(upstream, "outbound|80||frontend.demo.svc.mesh");
    assert!(
        config.upstream(upstream).is_some_and(|u| !u.endpoints.is_empty()),
        "the TCP route's upstream exists with endpoints"
    );

    let status = &t.statuses["RouteTable/demo/streams"];
    assert_eq!(status.state, "WARNING", "{status:?}");
    assert!(
        status.message.contains("spec.tls[2].forwardTo.destinations[0]"),
        "{status:?}"
    );
}

#[test]
fn what_trellis_cannot_serve_is_accepted_with_a_warning_naming_the_field() {
    let t = translated();
    let status = &t.statuses["VirtualGateway/demo/edge"];
    assert_eq!(status.state, "WARNING", "{status:?}");
    for field in [
        "spec.listeners[1].tls.secretName: Secret demo/shop-tls has no PEM ca.crt",
        "spec.listeners[5].tls.mode: AUTO_PASSTHROUGH",
        "spec.listeners[6].exposedExternalServices",
        "spec.listeners[10].tls.verifySubjectAltName: needs MUTUAL or ISTIO_MUTUAL",
    ] {
        assert!(status.message.contains(field), "{field} missing from {status:?}");
    }
    // Not served, rather than served without the TLS asked for.
    for port in [9444, 9448, 9453] {
        assert!(listener(&t, port).is_none(), "port {port} is served");
    }
}

#[test]
fn stream_routes_of_a_sidecar_route_table_are_a_warning_naming_the_field() {
    let mut snapshot = load("ingress");
    let yaml = "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\n\
                metadata: {name: raw, namespace: demo}\n\
                spec:\n  hosts: [backend.demo]\n\
                \x20 tcp: [{forwardTo: {destinations: [{ref: {name: backend}, port: {number: 80}}]}}]\n";
    snapshot
        .resources
        .extend(trellis_api::parse_documents("raw.yaml", yaml).unwrap());
    let t = translate(&snapshot);
    let status = &t.statuses["RouteTable/demo/raw"];
    assert_eq!(status.state, "WARNING", "{status:?}");
    assert!(
        status.message.contains("spec.tcp: served by gateways only"),
        "{status:?}"
    );
}
