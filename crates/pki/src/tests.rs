use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConnection, ServerConnection};

use crate::*;

const DAY: Duration = Duration::from_secs(24 * 3600);
const MGMT: &str = "trellis-mgmt.trellis";

fn mk_relay_ca(now: SystemTime) -> (Authority, Authority) {
    let root = Authority::generate_root("Trellis relay root CA", 3650 * DAY, now).unwrap();
    let intermediate = root
        .generate_intermediate("Trellis relay signing CA", 365 * DAY, now)
        .unwrap();
    (root, intermediate)
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn split_chain(chain_pem: &str) -> (CertificateDer<'static>, Vec<CertificateDer<'static>>) {
    let mut ders = pem_to_der_certs(chain_pem)
        .unwrap()
        .into_iter()
        .map(CertificateDer::from);
    let leaf = ders.next().unwrap();
    (leaf, ders.collect())
}

fn verify_server(roots_pem: &str, chain_pem: &str, name: &str, at: SystemTime) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(roots_pem).unwrap()), provider())
        .build()
        .unwrap();
    let (leaf, intermediates) = split_chain(chain_pem);
    let name = ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(&leaf, &intermediates, &name, &[], unix(at))
        .map(|_| ())
}

fn verify_client(roots_pem: &str, chain_pem: &str, at: SystemTime) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(roots_pem).unwrap()), provider())
        .build()
        .unwrap();
    let (leaf, intermediates) = split_chain(chain_pem);
    verifier.verify_client_cert(&leaf, &intermediates, unix(at)).map(|_| ())
}

fn ekus(chain_pem: &str) -> (bool, bool) {
    let der = &pem_to_der_certs(chain_pem).unwrap()[0];
    let (_, x509) = x509_parser::parse_x509_certificate(der).unwrap();
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    (eku.server_auth, eku.client_auth)
}

/// Drives a TLS handshake in memory; returns the server side once both sides are done.
fn handshake(client: rustls::ClientConfig, server: rustls::ServerConfig) -> Result<ServerConnection, rustls::Error> {
    let mut client = ClientConnection::new(Arc::new(client), ServerName::try_from(MGMT).unwrap())?;
    let mut server = ServerConnection::new(Arc::new(server))?;
    for _ in 0..20 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(server);
        }
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets()?;
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets()?;
    }
    panic!("handshake did not finish");
}

// === relay PKI ===

#[test]
fn server_cert_verifies_for_its_names_only() {
    let now = SystemTime::now();
    let (root, intermediate) = mk_relay_ca(now);
    let names = [MGMT.to_string(), "127.0.0.1".to_string()];
    let server = intermediate.issue_server_cert(&names, DAY, now).unwrap();

    // Leaf + intermediate on the wire, never the root.
    assert_eq!(pem_to_der_certs(&server.cert_pem).unwrap().len(), 2);
    assert_eq!(ekus(&server.cert_pem), (true, false));

    let cases = [
        (MGMT, true),
        ("127.0.0.1", true),
        ("other.trellis", false),
        ("10.0.0.1", false),
    ];
    for (name, ok) in cases {
        let result = verify_server(&root.cert_pem, &server.cert_pem, name, now);
        assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
    }
}

#[test]
fn client_cert_carries_the_signers_identity_not_the_csrs() {
    let now = SystemTime::now();
    let (root, intermediate) = mk_relay_ca(now);

    // A CSR asking for somebody else's identity.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://trellis-relay/cluster/west".try_into().unwrap(),
    ));
    params.distinguished_name.push(rcgen::DnType::CommonName, "west");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let identity = relay_identity("east");
    let chain = intermediate.sign_client_csr(&csr, &identity, "east", DAY, now).unwrap();
    let info = inspect_pem(&chain).unwrap();
    assert_eq!(info.uris, vec![identity.clone()]);
    assert_eq!(info.dns_names, vec!["east".to_string()]);
    assert_eq!(info.subject_cn.as_deref(), Some("east"));
    assert!(!info.is_ca);
    assert_eq!(ekus(&chain), (false, true));
    assert_eq!(cluster_from_relay_identity(&info.uris[0]).as_deref(), Some("east"));
    assert_eq!(pem_to_der_certs(&chain).unwrap().len(), 2);
    verify_client(&root.cert_pem, &chain, now).unwrap();
}

#[test]
fn client_verification_rejects_foreign_and_expired_certs() {
    let now = SystemTime::now();
    let (root, intermediate) = mk_relay_ca(now);
    let (_, foreign) = mk_relay_ca(now);
    let (_, csr) = new_key_and_csr("east").unwrap();
    let identity = relay_identity("east");

    let foreign_cert = foreign.sign_client_csr(&csr, &identity, "east", DAY, now).unwrap();
    let expired_cert = intermediate
        .sign_client_csr(&csr, &identity, "east", DAY, now - 10 * DAY)
        .unwrap();
    let good_cert = intermediate.sign_client_csr(&csr, &identity, "east", DAY, now).unwrap();

    // The foreign CA has the same names as ours, so webpki gets as far as checking its signature.
    let is_untrusted = |e: &rustls::Error| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)
        )
    };
    let is_expired = |e: &rustls::Error| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        )
    };
    type Check<'a> = Option<&'a dyn Fn(&rustls::Error) -> bool>;
    let cases: [(&str, &String, Check); 3] = [
        ("good", &good_cert, None),
        ("foreign root", &foreign_cert, Some(&is_untrusted)),
        ("expired", &expired_cert, Some(&is_expired)),
    ];
    for (case, chain, expected) in cases {
        let result = verify_client(&root.cert_pem, chain, now);
        match expected {
            None => assert!(result.is_ok(), "{case}: {result:?}"),
            Some(check) => assert!(result.as_ref().is_err_and(check), "{case}: {result:?}"),
        }
    }
}

#[test]
fn client_csr_with_bad_signature_or_identity_is_rejected() {
    let now = SystemTime::now();
    let (_, intermediate) = mk_relay_ca(now);
    let (_, csr) = new_key_and_csr("east").unwrap();
    let identity = relay_identity("east");

    let cases: [(&str, &str, &str, &str); 4] = [
        ("garbage csr", "not a csr", &identity, "east"),
        ("identity not a URI", &csr, "east", "east"),
        ("dns name invalid", &csr, &identity, "east cluster"),
        ("empty dns name", &csr, &identity, ""),
    ];
    for (case, csr, identity, dns) in cases {
        let result = intermediate.sign_client_csr(csr, identity, dns, DAY, now);
        assert!(result.is_err(), "{case}: {result:?}");
    }
}

#[test]
fn issued_certs_start_a_minute_early_and_never_outlive_the_issuer() {
    let now = SystemTime::now();
    let root = Authority::generate_root("root", 10 * DAY, now).unwrap();
    let root_info = inspect_pem(&root.cert_pem).unwrap();
    let leaf = root.issue_server_cert(&[MGMT.to_string()], 100 * DAY, now).unwrap();
    let info = inspect_pem(&leaf.cert_pem).unwrap();

    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(info.not_before), secs(now - Duration::from_secs(60)));
    assert_eq!(info.not_after, root_info.not_after);
    assert!(root_info.is_ca);
    assert_eq!(root_info.subject_cn.as_deref(), Some("root"));
    assert!(info.serial_hex.len() <= 32 && !info.serial_hex.is_empty());
    assert_ne!(info.serial_hex, root_info.serial_hex);
    // The root is never sent on the wire, so a leaf straight under it travels alone.
    assert_eq!(pem_to_der_certs(&leaf.cert_pem).unwrap().len(), 1);
}

#[test]
fn zero_ttl_and_empty_names_are_rejected() {
    let now = SystemTime::now();
    let (_, intermediate) = mk_relay_ca(now);
    assert!(matches!(
        Authority::generate_root("root", Duration::ZERO, now),
        Err(PkiError::InvalidTtl { .. })
    ));
    assert!(matches!(
        intermediate.issue_server_cert(&[], DAY, now),
        Err(PkiError::InvalidName { .. })
    ));
    assert!(matches!(
        intermediate.issue_workload_cert("not-spiffe", DAY, now),
        Err(PkiError::InvalidName { .. })
    ));
}

// === mesh PKI ===

#[test]
fn cluster_intermediate_from_csr_issues_workload_certs_chaining_to_the_mesh_root() {
    let now = SystemTime::now();
    let mesh_root = Authority::generate_root("Trellis mesh root CA", 3650 * DAY, now).unwrap();

    // Agent: key + CSR; mgmt: signs; agent: assembles its CA.
    let (key, csr) = new_key_and_csr("east").unwrap();
    let signed = mesh_root
        .sign_intermediate_csr(&csr, "Trellis mesh CA east", "cluster.local", 365 * DAY, now)
        .unwrap();
    let ca = intermediate_from_signed(key, &signed).unwrap();

    let ca_info = inspect_pem(&ca.cert_pem).unwrap();
    assert!(ca_info.is_ca);
    assert_eq!(ca_info.subject_cn.as_deref(), Some("Trellis mesh CA east"));
    assert_eq!(
        pem_to_der_certs(&ca.root_pem()).unwrap(),
        pem_to_der_certs(&mesh_root.cert_pem).unwrap()
    );
    assert_eq!(mesh_root.root_pem(), ca.root_pem());

    let id = "spiffe://cluster.local/ns/shop/sa/cart".to_string();
    let workload = ca.issue_workload_cert(&id, Duration::from_secs(3600), now).unwrap();
    let info = inspect_pem(&workload.cert_pem).unwrap();
    assert_eq!(info.uris, vec![id]);
    assert!(info.dns_names.is_empty());
    assert_eq!(info.subject_cn, None);
    assert!(!info.is_ca);
    assert_eq!(ekus(&workload.cert_pem), (true, true));
    // Leaf + cluster intermediate, no root.
    assert_eq!(pem_to_der_certs(&workload.cert_pem).unwrap().len(), 2);

    // OpenSSL, like Envoy's BoringSSL, checks the intermediate's URI name constraints (webpki cannot).
    openssl_verify(&mesh_root.root_pem(), &workload.cert_pem).unwrap();
    let other_root = Authority::generate_root("other mesh", DAY, now).unwrap();
    assert!(openssl_verify(&other_root.cert_pem, &workload.cert_pem).is_err());
}

#[test]
fn intermediate_from_signed_rejects_a_key_that_does_not_match() {
    let now = SystemTime::now();
    let mesh_root = Authority::generate_root("Trellis mesh root CA", DAY, now).unwrap();
    let (_, csr) = new_key_and_csr("east").unwrap();
    let (other_key, _) = new_key_and_csr("east").unwrap();
    let signed = mesh_root
        .sign_intermediate_csr(&csr, "east", "cluster.local", DAY, now)
        .unwrap();
    assert!(matches!(
        intermediate_from_signed(other_key, &signed),
        Err(PkiError::KeyMismatch { .. })
    ));
}

#[test]
fn path_length_zero_intermediates_cannot_sign_cas() {
    let now = SystemTime::now();
    let (_, intermediate) = mk_relay_ca(now);
    let (_, csr) = new_key_and_csr("x").unwrap();
    assert!(matches!(
        intermediate.generate_intermediate("x", DAY, now),
        Err(PkiError::PathLenExhausted { .. })
    ));
    assert!(matches!(
        intermediate.sign_intermediate_csr(&csr, "x", "cluster.local", DAY, now),
        Err(PkiError::PathLenExhausted { .. })
    ));
}

// === from_pem ===

#[test]
fn from_pem_accepts_only_a_ca_with_its_own_key() {
    let now = SystemTime::now();
    let (root, intermediate) = mk_relay_ca(now);
    let leaf = intermediate.issue_server_cert(&[MGMT.to_string()], DAY, now).unwrap();

    type Check = fn(&Result<Authority>) -> bool;
    let cases: [(&str, &str, &str, &str, Check); 7] = [
        ("root", &root.cert_pem, &root.key.0, "", |r| r.is_ok()),
        (
            "intermediate with chain",
            &intermediate.cert_pem,
            &intermediate.key.0,
            &intermediate.chain_pem,
            |r| r.is_ok(),
        ),
        (
            "bundle in cert_pem",
            &format!("{}{}", intermediate.cert_pem, root.cert_pem),
            &intermediate.key.0,
            "",
            |r| r.is_ok(),
        ),
        ("leaf is not a CA", &leaf.cert_pem, &leaf.key.0, "", |r| {
            matches!(r, Err(PkiError::NotCa { .. }))
        }),
        ("key of another CA", &root.cert_pem, &intermediate.key.0, "", |r| {
            matches!(r, Err(PkiError::KeyMismatch { .. }))
        }),
        (
            "chain in wrong order",
            &intermediate.cert_pem,
            &intermediate.key.0,
            &leaf.cert_pem,
            |r| matches!(r, Err(PkiError::BrokenChain { .. })),
        ),
        ("not PEM", "hello", &root.key.0, "", |r| {
            matches!(r, Err(PkiError::NoCertificate { .. }))
        }),
    ];
    for (case, cert, key, chain, check) in cases {
        let result = Authority::from_pem(cert, key, chain);
        assert!(check(&result), "{case}: {result:?}");
    }

    // A bundle in cert_pem becomes cert + chain.
    let loaded = Authority::from_pem(
        &format!("{}{}", intermediate.cert_pem, root.cert_pem),
        &intermediate.key.0,
        "",
    )
    .unwrap();
    assert_eq!(pem_to_der_certs(&loaded.cert_pem).unwrap().len(), 1);
    assert_eq!(loaded.root_pem(), root.root_pem());
    // A key that is not PKCS#8 PEM says so.
    assert!(matches!(
        Authority::from_pem(&root.cert_pem, "junk", ""),
        Err(PkiError::NoKey { .. })
    ));
}

// === TLS configs ===

#[test]
fn server_tls_config_builds_with_and_without_client_roots() {
    let now = SystemTime::now();
    let (root, intermediate) = mk_relay_ca(now);
    let server = intermediate.issue_server_cert(&[MGMT.to_string()], DAY, now).unwrap();
    for (roots, h2) in [(None, false), (Some(root.cert_pem.as_str()), true)] {
        let config = server_tls_config(&server, roots, h2).unwrap();
        assert_eq!(config.alpn_protocols.is_empty(), !h2);
    }
    assert!(server_tls_config(&server, Some("no roots here"), false).is_err());
}

#[test]
fn mtls_handshake_admits_clients_with_and_without_a_cert() {
    let now = SystemTime::now();
    let (root, intermediate) = mk_relay_ca(now);
    let server = intermediate.issue_server_cert(&[MGMT.to_string()], DAY, now).unwrap();
    let (key, csr) = new_key_and_csr("east").unwrap();
    let client = CertifiedKey {
        cert_pem: intermediate
            .sign_client_csr(&csr, &relay_identity("east"), "east", DAY, now)
            .unwrap(),
        key,
    };
    let server_config = || server_tls_config(&server, Some(&root.cert_pem), true).unwrap();

    let conn = handshake(
        client_tls_config(Some(&client), &root.cert_pem, true).unwrap(),
        server_config(),
    )
    .unwrap();
    let peer = conn.peer_certificates().unwrap();
    assert_eq!(inspect_der(&peer[0]).unwrap().uris, vec![relay_identity("east")]);
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));

    // Registration: no client certificate yet.
    let conn = handshake(client_tls_config(None, &root.cert_pem, true).unwrap(), server_config()).unwrap();
    assert!(conn.peer_certificates().is_none());

    // A client that does not trust the server's root fails.
    let (other_root, _) = mk_relay_ca(now);
    assert!(
        handshake(
            client_tls_config(None, &other_root.cert_pem, true).unwrap(),
            server_config()
        )
        .is_err()
    );
}

// === small helpers ===

#[test]
fn key_pem_debug_is_redacted() {
    let (key, _) = new_key_and_csr("east").unwrap();
    assert!(key.0.contains("PRIVATE KEY"));
    let debug = format!("{key:?}");
    assert_eq!(debug, "KeyPem(<redacted>)");
    let certified = Authority::generate_root("root", DAY, SystemTime::now()).unwrap();
    assert!(!format!("{certified:?}").contains("PRIVATE KEY"));
}

#[test]
fn random_tokens_are_43_url_safe_chars_and_differ() {
    let (a, b) = (random_token(), random_token());
    assert_eq!(a.len(), 43);
    assert!(
        a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{a}"
    );
    assert_ne!(a, b);
}

#[test]
fn base64_matches_rfc4648_vectors() {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (input, expected) in cases {
        assert_eq!(crate::util::base64_encode(input.as_bytes(), STD, true), expected);
        assert_eq!(
            crate::util::base64_encode(input.as_bytes(), STD, false),
            expected.trim_end_matches('=')
        );
    }
}

#[test]
fn der_to_pem_round_trips() {
    let root = Authority::generate_root("root", DAY, SystemTime::now()).unwrap();
    let der = pem_to_der_certs(&root.cert_pem).unwrap().remove(0);
    let pem = crate::util::der_to_pem(&der);
    assert_eq!(pem, root.cert_pem.replace("\r\n", "\n"));
    assert_eq!(pem_to_der_certs(&pem).unwrap(), vec![der]);
}

#[test]
fn relay_identity_round_trips_and_rejects_others() {
    assert_eq!(relay_identity("east"), "spiffe://trellis-relay/cluster/east");
    let cases = [
        ("spiffe://trellis-relay/cluster/east", Some("east")),
        ("spiffe://trellis-relay/cluster/", None),
        ("spiffe://trellis-relay/cluster/east/extra", None),
        ("spiffe://cluster.local/ns/a/sa/b", None),
        ("east", None),
    ];
    for (uri, expected) in cases {
        assert_eq!(cluster_from_relay_identity(uri).as_deref(), expected, "{uri}");
    }
}

#[test]
fn renewal_is_due_at_two_thirds_of_the_lifetime() {
    let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
    let skew = Duration::from_secs(60);
    let secs = Duration::from_secs;
    // (not_before, not_after, due): life counts from issue time, not_before + the 60 s backdate.
    let cases = [
        (start - skew, start + 3 * DAY, start + 2 * DAY),
        (start - skew, start + secs(3600), start + secs(2400)),
        // A 6 s certificate is due 4 s after issue, not at once.
        (start - skew, start + secs(6), start + secs(4)),
        // Not backdated (an operator's): counted from not_before.
        (start, start + secs(30), start + secs(20)),
        (start, start, start),
        (start + DAY, start, start),
    ];
    for (not_before, not_after, expected) in cases {
        assert_eq!(
            renew_at(not_before, not_after),
            expected,
            "{not_before:?}..{not_after:?}"
        );
    }
}

#[test]
fn pem_to_der_certs_requires_a_certificate() {
    assert!(matches!(pem_to_der_certs(""), Err(PkiError::NoCertificate { .. })));
    assert!(inspect_der(b"not der").is_err());
}

// === name constraints of cluster intermediates ===

/// `openssl verify` of a leaf-first chain (without its root) against `root_pem`. OpenSSL implements URI,
/// DNS and IP name constraints as BoringSSL does, and BoringSSL (Envoy) is what verifies mesh certificates.
fn openssl_verify(root_pem: &str, chain_pem: &str) -> Result<(), String> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("trellis-pki-verify-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ders = pem_to_der_certs(chain_pem).unwrap();
    let untrusted: String = ders[1..].iter().map(|d| crate::util::der_to_pem(d)).collect();
    std::fs::write(dir.join("root.pem"), root_pem).unwrap();
    std::fs::write(dir.join("leaf.pem"), crate::util::der_to_pem(&ders[0])).unwrap();
    std::fs::write(dir.join("untrusted.pem"), untrusted).unwrap();
    let output = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("root.pem"))
        .arg("-untrusted")
        .arg(dir.join("untrusted.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .expect("these tests need the `openssl` command (Debian package openssl)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() { Ok(()) } else { Err(text) }
}

/// What an attacker holding a cluster intermediate's key can sign: any SANs, bypassing
/// [`Authority::issue_workload_cert`]'s own checks.
fn forge_leaf(ca: &Authority, sans: Vec<rcgen::SanType>, now: SystemTime) -> String {
    let ca_key = rcgen::KeyPair::from_pem(&ca.key.0).unwrap();
    let ca_der = CertificateDer::from(pem_to_der_certs(&ca.cert_pem).unwrap().remove(0));
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans;
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + DAY).into();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let mut chain = leaf.pem();
    chain.push_str(&ca.cert_pem);
    chain
}

/// rustls reports webpki's NameConstraintViolation as an "other" certificate error.
fn assert_name_constraint_violation(result: Result<(), rustls::Error>) {
    let error = result.expect_err("verification must fail");
    assert!(format!("{error:?}").contains("NameConstraintViolation"), "{error:?}");
}

fn mk_cluster_ca(trust_domain: &str, now: SystemTime) -> (Authority, Authority) {
    let mesh_root = Authority::generate_root("Trellis mesh root CA", 3650 * DAY, now).unwrap();
    let (key, csr) = new_key_and_csr("east").unwrap();
    let signed = mesh_root
        .sign_intermediate_csr(
            &csr,
            "Trellis intermediate CA for cluster east",
            trust_domain,
            365 * DAY,
            now,
        )
        .unwrap();
    (mesh_root, intermediate_from_signed(key, &signed).unwrap())
}

fn uri(s: &str) -> rcgen::SanType {
    rcgen::SanType::URI(s.try_into().unwrap())
}

#[test]
fn cluster_intermediate_carries_critical_name_constraints_and_path_length_zero() {
    let now = SystemTime::now();
    let (_, ca) = mk_cluster_ca("trellis.local", now);
    let der = &pem_to_der_certs(&ca.cert_pem).unwrap()[0];
    let (_, x509) = x509_parser::parse_x509_certificate(der).unwrap();
    let nc = x509.name_constraints().unwrap().expect("nameConstraints present");
    assert!(nc.critical);
    let permitted: Vec<String> = nc
        .value
        .permitted_subtrees
        .iter()
        .flatten()
        .map(|s| format!("{:?}", s.base))
        .collect();
    assert_eq!(permitted, vec![r#"URI("trellis.local")"#]);
    let excluded: Vec<String> = nc
        .value
        .excluded_subtrees
        .iter()
        .flatten()
        .map(|s| format!("{:?}", s.base))
        .collect();
    assert_eq!(excluded.len(), 3, "{excluded:?}");
    assert!(excluded[0].starts_with("DNSName(\"\")"), "{excluded:?}");
    let bc = x509.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
}

#[test]
fn leaf_inside_the_trust_domain_verifies_and_outside_fails() {
    let now = SystemTime::now();
    let (root, ca) = mk_cluster_ca("trellis.local", now);
    let inside = ca
        .issue_workload_cert("spiffe://trellis.local/ns/demo/sa/frontend", DAY, now)
        .unwrap();
    openssl_verify(&root.cert_pem, &inside.cert_pem).unwrap();

    // The attack: the intermediate's key signs identities of another trust domain the same verifiers trust.
    for outside in [
        "spiffe://other.example/ns/demo/sa/frontend",
        "spiffe://evil.trellis.local/ns/demo/sa/frontend",
        "spiffe://trellis.local.evil/ns/demo/sa/frontend",
    ] {
        let forged = forge_leaf(&ca, vec![uri(outside)], now);
        let error = openssl_verify(&root.cert_pem, &forged).expect_err(outside);
        assert!(error.contains("permitted subtree violation"), "{outside}: {error}");
    }
    // A URI SAN inside plus a second one outside: one bad name fails the certificate.
    let mixed = forge_leaf(
        &ca,
        vec![
            uri("spiffe://trellis.local/ns/demo/sa/frontend"),
            uri("spiffe://other.example/ns/demo/sa/frontend"),
        ],
        now,
    );
    assert!(openssl_verify(&root.cert_pem, &mixed).is_err());
}

#[test]
fn cluster_intermediate_cannot_sign_host_names_or_addresses() {
    let now = SystemTime::now();
    let (root, ca) = mk_cluster_ca("trellis.local", now);
    for san in [
        rcgen::SanType::DnsName("frontend.demo.svc".try_into().unwrap()),
        rcgen::SanType::DnsName("trellis-mgmt.trellis".try_into().unwrap()),
        rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
        rcgen::SanType::IpAddress("::1".parse().unwrap()),
    ] {
        let forged = forge_leaf(&ca, vec![san.clone()], now);
        let error = openssl_verify(&root.cert_pem, &forged).expect_err(&format!("{san:?}"));
        assert!(error.contains("excluded subtree violation"), "{san:?}: {error}");
    }
    // webpki (rustls) enforces DNS exclusions too: a server certificate for a host name fails.
    let forged = forge_leaf(
        &ca,
        vec![rcgen::SanType::DnsName("frontend.demo.svc".try_into().unwrap())],
        now,
    );
    assert_name_constraint_violation(verify_server(&root.cert_pem, &forged, "frontend.demo.svc", now));
    // Control: the same leaf from an unconstrained CA under the same root verifies, so the constraint is what
    // refused it above.
    let unconstrained = root.generate_intermediate("unconstrained", DAY, now).unwrap();
    let allowed = forge_leaf(
        &unconstrained,
        vec![rcgen::SanType::DnsName("frontend.demo.svc".try_into().unwrap())],
        now,
    );
    verify_server(&root.cert_pem, &allowed, "frontend.demo.svc", now).unwrap();
    openssl_verify(&root.cert_pem, &allowed).unwrap();
}

#[test]
fn webpki_refuses_every_uri_below_a_uri_constrained_ca() {
    // rustls-webpki does not implement URI name constraints and fails closed: mesh certificates must be
    // verified by Envoy (BoringSSL), never by rustls. If this starts passing, webpki learned URI constraints.
    let now = SystemTime::now();
    let (root, ca) = mk_cluster_ca("trellis.local", now);
    let inside = ca
        .issue_workload_cert("spiffe://trellis.local/ns/demo/sa/frontend", DAY, now)
        .unwrap();
    assert_name_constraint_violation(verify_client(&root.cert_pem, &inside.cert_pem, now));
}

#[test]
fn constrained_ca_refuses_to_issue_outside_its_trust_domain() {
    let now = SystemTime::now();
    let (_, ca) = mk_cluster_ca("trellis.local", now);
    let error = ca
        .issue_workload_cert("spiffe://other.example/ns/demo/sa/frontend", DAY, now)
        .unwrap_err();
    assert!(matches!(error, PkiError::OutsideNameConstraints { .. }), "{error}");
    assert!(error.to_string().contains("trellis.local"), "{error}");
}

#[test]
fn intermediate_signing_refuses_a_malformed_trust_domain() {
    let now = SystemTime::now();
    let mesh_root = Authority::generate_root("Trellis mesh root CA", DAY, now).unwrap();
    let (_, csr) = new_key_and_csr("east").unwrap();
    for bad in ["", ".trellis.local", "Trellis.Local", "spiffe://trellis.local"] {
        let error = mesh_root
            .sign_intermediate_csr(&csr, "east", bad, DAY, now)
            .unwrap_err();
        assert!(
            matches!(
                error,
                PkiError::InvalidName {
                    field: "trust domain",
                    ..
                }
            ),
            "{bad:?}: {error}"
        );
    }
}

#[test]
fn public_key_digest_names_the_key_not_the_certificate() {
    let now = SystemTime::now();
    let root = Authority::generate_root("Trellis mesh root CA", DAY, now).unwrap();
    let (_, csr) = new_key_and_csr("east").unwrap();
    let (_, other_csr) = new_key_and_csr("east").unwrap();
    let sign = |csr: &str| {
        root.sign_intermediate_csr(csr, "east", "trellis.local", DAY, now)
            .unwrap()
    };
    let (first, again, other) = (sign(&csr), sign(&csr), sign(&other_csr));
    assert_ne!(
        inspect_pem(&first).unwrap().serial_hex,
        inspect_pem(&again).unwrap().serial_hex
    );
    assert_eq!(public_key_sha256(&first).unwrap(), public_key_sha256(&again).unwrap());
    assert_ne!(public_key_sha256(&first).unwrap(), public_key_sha256(&other).unwrap());
    assert_eq!(public_key_sha256(&first).unwrap().len(), 64);
}
