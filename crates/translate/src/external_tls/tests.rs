//! What each `clientsideTls` asks of the proxy, and what makes a port unreachable instead.

use trellis_model::ir::{ClientCredential, ExternalUpstream, TrustSource};

use crate::Translation;

fn translated(yaml: &str) -> Translation {
    crate::demo_fixture::translated_in_demo(yaml)
}

fn external(t: &Translation, port: u16) -> Option<&ExternalUpstream> {
    t.clusters["cluster-1"]
        .upstreams
        .iter()
        .find(|u| u.name == format!("outbound|{port}||api.example.com"))
        .map(|u| u.external.as_deref().unwrap())
}

const SERVICE: &str = "apiVersion: v1
kind: Secret
metadata: {name: api-client, namespace: demo}
type: kubernetes.io/tls
stringData:
  tls.crt: \"-----BEGIN CERTIFICATE-----\\nclient\\n-----END CERTIFICATE-----\\n\"
  tls.key: \"-----BEGIN PRIVATE KEY-----\\nclient-key\\n-----END PRIVATE KEY-----\\n\"
  ca.crt: \"-----BEGIN CERTIFICATE-----\\napi-ca\\n-----END CERTIFICATE-----\\n\"
---
apiVersion: networking.gloo.solo.io/v2
kind: ExternalService
metadata: {name: api, namespace: demo}
spec:
  hosts: [api.example.com]
  subjectAltNames: [api.example.com, spiffe://partner/api]
  ports:
  - {number: 80, name: http}
  - {number: 443, name: https, clientsideTls: {}}
  - {number: 8443, name: pinned, clientsideTls: {sni: edge.example.com, caCertificates: ca.pem, subjectAltNames: [edge.example.com]}}
  - {number: 9443, name: skip, clientsideTls: {insecureSkipVerify: true}}
  - {number: 10443, name: mutual, clientsideTls: {mode: MUTUAL, credentialName: api-client}}
  - {number: 11443, name: files, clientsideTls: {mode: MUTUAL, clientCertificate: c.pem, privateKey: k.pem}}
  - {number: 12443, name: missing, clientsideTls: {credentialName: nowhere}}
";

#[test]
fn the_server_is_verified_unless_skipped_and_mutual_presents_a_certificate() {
    let t = translated(SERVICE);
    assert_eq!(external(&t, 80).unwrap().tls_sni, None, "plaintext");

    // No CA given: the system store, and the service's names.
    let https = external(&t, 443).unwrap();
    assert_eq!(https.tls_sni.as_deref(), Some("api.example.com"));
    let check = https.tls_verify.as_ref().expect("verified by default");
    assert_eq!(check.trust, TrustSource::System);
    assert_eq!(check.subject_alt_names, ["api.example.com", "spiffe://partner/api"]);

    let pinned = external(&t, 8443).unwrap();
    assert_eq!(pinned.tls_sni.as_deref(), Some("edge.example.com"));
    let check = pinned.tls_verify.as_ref().unwrap();
    assert_eq!(check.trust, TrustSource::File("ca.pem".into()));
    assert_eq!(check.subject_alt_names, ["edge.example.com"]);

    assert!(external(&t, 9443).unwrap().tls_verify.is_none(), "insecureSkipVerify");

    let mutual = external(&t, 10443).unwrap();
    assert!(matches!(&mutual.tls_verify.as_ref().unwrap().trust, TrustSource::Pem(ca) if ca.contains("api-ca")));
    match mutual.tls_client.as_ref().unwrap() {
        ClientCredential::Secret(credential) => {
            assert_eq!(credential.secret, "demo/api-client");
            assert!(credential.private_key_pem.contains("client-key"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        external(&t, 11443).unwrap().tls_client,
        Some(ClientCredential::Files {
            cert: "c.pem".into(),
            key: "k.pem".into()
        })
    );
}

#[test]
fn a_tls_setting_that_cannot_be_met_leaves_the_port_unreachable_with_a_warning() {
    let t = translated(SERVICE);
    assert!(
        external(&t, 12443).is_none(),
        "no upstream rather than an unchecked one"
    );
    let status = &t.statuses["ExternalService/demo/api"];
    assert_eq!(status.state, "WARNING");
    assert!(
        status
            .message
            .contains("port 12443: clientsideTls.credentialName: Secret demo/nowhere does not exist"),
        "{status:?}"
    );
    assert!(!status.message.contains("not verified"), "{status:?}");
}
