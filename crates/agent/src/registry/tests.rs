//! The registry's rules, table by table: who may register, refresh, take over and delete what.

use super::*;
use crate::xds_tls::XdsCa;

const SECRET: &str = "role-secret-for-tests-0123456789";

fn mk_registry() -> Registry {
    let policy = AdmissionPolicy::new(&["demo".to_string()], &["payments/api".to_string()]).unwrap();
    Registry::new(
        "127.0.0.1:15010".parse().unwrap(),
        policy,
        SECRET,
        None,
        mk_ca(),
        Instant::now(),
    )
}

fn mk_ca() -> Arc<XdsCa> {
    Arc::new(XdsCa::generate(Duration::from_secs(3600)).unwrap())
}

/// Whether `token` is the credential of `id` (live or restored).
impl Registry {
    fn authenticate(&self, id: &str, token: &str) -> bool {
        self.entries
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|entry| token_matches(token, &entry.token_sha256))
    }
}

/// A CSR for a fresh key, as `trellis proxy` makes one.
fn mk_csr() -> String {
    trellis_pki::new_key_and_csr("trellis-proxy").unwrap().1
}

/// The leaf (DER) of the certificate an accepted registration returned.
fn leaf(answer: &Result<Registered, RegistryError>) -> Vec<u8> {
    let pem = answer
        .as_ref()
        .expect("accepted")
        .xds_certificate
        .as_ref()
        .expect("a certificate for the CSR");
    trellis_pki::pem_to_der_certs(pem).unwrap().remove(0)
}

fn token_of(answer: &Result<Registered, RegistryError>) -> Option<String> {
    answer.as_ref().expect("accepted").token.clone()
}

fn mk_sidecar(namespace: &str, service_account: &str, service: &str) -> ProxyRegistration {
    ProxyRegistration::Sidecar {
        workload: Workload {
            name: service.into(),
            namespace: namespace.into(),
            service: service.into(),
            labels: Default::default(),
            service_account: service_account.into(),
            address: "127.0.0.1".into(),
            ports: Vec::new(),
        },
        outbound_port: 15001,
        access_log: None,
    }
}

fn mk_gateway(host: &str) -> ProxyRegistration {
    ProxyRegistration::EastWestGateway(RegisteredGateway {
        listen_address: "127.0.0.1".into(),
        port: 15443,
        public_address: GatewayAddress {
            host: host.into(),
            port: 15443,
        },
    })
}

fn mk_addon(kind: AddonKind) -> ProxyRegistration {
    ProxyRegistration::AddOn(AddonRegistration {
        serves: kind,
        namespace: "gloo-mesh".into(),
        name: "ext-auth-service".into(),
        address: "127.0.0.1".into(),
        port: 8083,
    })
}

fn with_token(token: &str) -> Presented<'_> {
    Presented {
        token: Some(token),
        ..Default::default()
    }
}

fn with_secret(token: Option<&str>) -> Presented<'_> {
    Presented {
        token,
        role_secret: Some(SECRET),
        ..Default::default()
    }
}

/// Registers `id` afresh and returns its token.
fn first(registry: &Registry, id: &str, registration: ProxyRegistration, presented: Presented<'_>) -> String {
    registry
        .register(id, registration, presented, Instant::now())
        .expect("first registration accepted")
        .token
        .expect("a first registration is issued a token")
}

#[test]
fn the_first_registration_gets_a_token_and_only_it_refreshes_changes_and_deletes() {
    let registry = mk_registry();
    let id = "sidecar~frontend.demo";
    let token = first(
        &registry,
        id,
        mk_sidecar("demo", "frontend", "frontend"),
        Presented::default(),
    );
    assert_eq!(token.len(), 43);

    // Refresh and change with the token: accepted, no new token.
    let changed = mk_sidecar("demo", "frontend", "frontend-v2");
    let answer = registry.register(id, changed.clone(), with_token(&token), Instant::now());
    assert_eq!(answer.map(|r| r.token), Ok(None));
    assert_eq!(registry.get(id), Some(changed.clone()));

    // Without it, or with another: refused, and the registration is what it was.
    let rogue = mk_sidecar("demo", "frontend", "backend");
    let other = trellis_pki::random_token();
    let cases = [
        (Presented::default(), RegistryError::CredentialRequired(id.into())),
        (with_token(&other), RegistryError::WrongCredential(id.into())),
        // The role secret does not open a sidecar's registration.
        (with_secret(None), RegistryError::CredentialRequired(id.into())),
    ];
    for (presented, expected) in cases {
        assert_eq!(
            registry.register(id, rogue.clone(), presented, Instant::now()),
            Err(expected)
        );
        assert_eq!(registry.get(id), Some(changed.clone()));
    }

    assert_eq!(
        registry.deregister(id, None),
        Err(RegistryError::CredentialRequired(id.into()))
    );
    assert_eq!(
        registry.deregister(id, Some(&other)),
        Err(RegistryError::WrongCredential(id.into()))
    );
    assert!(registry.get(id).is_some());
    assert_eq!(registry.deregister(id, Some(&token)), Ok(()));
    assert_eq!(registry.get(id), None);
    assert!(!registry.authenticate(id, &token), "a deleted id's token is worthless");
}

#[test]
fn sidecars_claim_only_identities_the_policy_lists() {
    let registry = mk_registry();
    // (namespace, service account, admitted)
    let cases = [
        ("demo", "backend", true),
        ("payments", "api", true),
        ("payments", "ledger", false),
        ("kube-system", "default", false),
        ("trellis", "ingress-gateway", false),
    ];
    for (namespace, service_account, admitted) in cases {
        let id = format!("sidecar~x.{namespace}.{service_account}");
        let answer = registry.register(
            &id,
            mk_sidecar(namespace, service_account, "x"),
            Presented::default(),
            Instant::now(),
        );
        assert_eq!(answer.is_ok(), admitted, "{namespace}/{service_account}: {answer:?}");
        if !admitted {
            assert!(matches!(answer, Err(RegistryError::NotAllowed { .. })));
            assert_eq!(registry.get(&id), None);
        }
    }
}

#[test]
fn gateways_and_addons_need_the_role_secret() {
    let registry = mk_registry();
    let wrong = Presented {
        role_secret: Some("not-the-secret-but-long-enough"),
        ..Default::default()
    };
    let cases = [
        ("east-west~fake", mk_gateway("10.9.9.9")),
        ("addon~ext-auth-service.gloo-mesh~1", mk_addon(AddonKind::ExtAuth)),
        (
            "ingress~fake",
            ProxyRegistration::IngressGateway(IngressRegistration {
                listen_address: "127.0.0.1".into(),
                port_map: Default::default(),
                labels: Default::default(),
                namespace: "trellis".into(),
                service_account: "ingress-gateway".into(),
                access_log: None,
            }),
        ),
    ];
    for (id, registration) in cases {
        for presented in [Presented::default(), wrong] {
            let answer = registry.register(id, registration.clone(), presented, Instant::now());
            assert!(
                matches!(answer, Err(RegistryError::RoleSecretRequired(_))),
                "{id}: {answer:?}"
            );
        }
        first(&registry, id, registration, with_secret(None));
    }
    assert_eq!(
        registry.discovery("c").east_west_gateway.map(|g| g.host),
        Some("10.9.9.9".into())
    );
    // The ingress (or egress) gateway is announced, once admitted, as egress routes need it.
    assert_eq!(
        registry.discovery("c").gateways,
        [trellis_model::GatewayInstance {
            namespace: "trellis".into(),
            service_account: "ingress-gateway".into(),
            address: "127.0.0.1".into(),
            labels: Default::default(),
            port_map: Default::default(),
        }]
    );
}

#[test]
fn the_role_secret_does_not_choose_the_identity() {
    let registry = mk_registry();
    // A holder of the secret asks for an identity outside the gateway namespaces.
    let ingress = ProxyRegistration::IngressGateway(IngressRegistration {
        listen_address: "127.0.0.1".into(),
        port_map: Default::default(),
        labels: Default::default(),
        namespace: "payments".into(),
        service_account: "api".into(),
        access_log: None,
    });
    let answer = registry.register("ingress~thief", ingress, with_secret(None), Instant::now());
    assert!(
        matches!(answer, Err(RegistryError::GatewayNamespaceNotAllowed(ref ns)) if ns == "payments"),
        "{answer:?}"
    );
    let ProxyRegistration::AddOn(mut addon) = mk_addon(AddonKind::ExtAuth) else {
        unreachable!()
    };
    addon.namespace = "demo".into();
    let answer = registry.register(
        "addon~x.demo~1",
        ProxyRegistration::AddOn(addon.clone()),
        with_secret(None),
        Instant::now(),
    );
    assert!(
        matches!(answer, Err(RegistryError::GatewayNamespaceNotAllowed(_))),
        "{answer:?}"
    );
    addon.namespace = "gloo-mesh".into();
    addon.name = "ns/sa/frontend".into();
    let answer = registry.register(
        "addon~x.gloo-mesh~1",
        ProxyRegistration::AddOn(addon),
        with_secret(None),
        Instant::now(),
    );
    assert!(
        matches!(answer, Err(RegistryError::Invalid(_))),
        "a name with '/' forges a SPIFFE path: {answer:?}"
    );
}

#[test]
fn a_second_gateway_without_the_secret_does_not_take_over_traffic() {
    let registry = mk_registry();
    let real = "east-west~127.0.0.1-15443";
    let token = first(&registry, real, mk_gateway("127.0.0.1"), with_secret(None));
    // A lower address would win the tie-break: without the secret it is never registered.
    let answer = registry.register(
        "east-west~evil",
        mk_gateway("1.1.1.1"),
        Presented::default(),
        Instant::now(),
    );
    assert!(answer.is_err());
    // Nor can it overwrite the real one's id with its token-less request.
    let answer = registry.register(real, mk_gateway("1.1.1.1"), with_token("x"), Instant::now());
    assert!(answer.is_err());
    assert_eq!(
        registry.discovery("c").east_west_gateway.map(|g| g.host),
        Some("127.0.0.1".into())
    );
    // The real one refreshes with its token (and the secret, as `trellis gateway` sends both).
    let answer = registry.register(real, mk_gateway("127.0.0.1"), with_secret(Some(&token)), Instant::now());
    assert_eq!(answer.map(|r| r.token), Ok(None));
}

#[test]
fn the_secret_holder_takes_over_a_privileged_id_and_the_old_token_dies() {
    let registry = mk_registry();
    let id = "addon~ext-auth-service.gloo-mesh~8083";
    let old = first(&registry, id, mk_addon(AddonKind::ExtAuth), with_secret(None));
    // A restarted add-on has lost its token: the secret gets it a new one.
    let new = first(&registry, id, mk_addon(AddonKind::ExtAuth), with_secret(None));
    assert_ne!(old, new);
    assert!(!registry.authenticate(id, &old));
    assert!(registry.authenticate(id, &new));
}

#[test]
fn addon_config_goes_only_to_a_live_addon_of_that_kind() {
    let registry = mk_registry();
    let ext_auth = first(
        &registry,
        "addon~ext-auth-service.gloo-mesh~1",
        mk_addon(AddonKind::ExtAuth),
        with_secret(None),
    );
    let limiter = first(
        &registry,
        "addon~rate-limiter.gloo-mesh~2",
        mk_addon(AddonKind::RateLimiter),
        with_secret(None),
    );
    let sidecar = first(
        &registry,
        "sidecar~frontend.demo",
        mk_sidecar("demo", "frontend", "frontend"),
        Presented::default(),
    );
    // (kind, token, served)
    let cases = [
        (AddonKind::ExtAuth, ext_auth.as_str(), true),
        (AddonKind::RateLimiter, limiter.as_str(), true),
        (AddonKind::ExtAuth, limiter.as_str(), false),
        (AddonKind::RateLimiter, ext_auth.as_str(), false),
        (AddonKind::ExtAuth, sidecar.as_str(), false),
        (AddonKind::ExtAuth, "", false),
    ];
    for (kind, token, served) in cases {
        assert_eq!(
            registry.addon_for_token(kind, token).is_some(),
            served,
            "{kind:?} with {token:?}"
        );
    }
}

#[test]
fn ids_bodies_and_tokens_are_validated() {
    let registry = mk_registry();
    let sidecar = || mk_sidecar("demo", "frontend", "frontend");
    let bad_ids = [
        "",
        "sidecar~a/b",
        "sidecar~a b",
        "sidecar~ä",
        &format!("sidecar~{}", "a".repeat(300)),
    ];
    for id in bad_ids {
        let answer = registry.register(id, sidecar(), Presented::default(), Instant::now());
        assert!(matches!(answer, Err(RegistryError::InvalidId(_))), "{id:?}: {answer:?}");
    }
    // A sidecar cannot pose as a gateway node (and so be given a gateway's resources).
    let answer = registry.register("east-west~x", sidecar(), Presented::default(), Instant::now());
    assert!(matches!(answer, Err(RegistryError::IdRole { .. })), "{answer:?}");
    // Identity names that would forge SPIFFE path segments.
    let answer = registry.register(
        "sidecar~x.demo",
        mk_sidecar("demo", "frontend/ns/other", "x"),
        Presented::default(),
        Instant::now(),
    );
    assert!(matches!(answer, Err(RegistryError::Invalid(_))), "{answer:?}");
    // A weak token is not adopted.
    let answer = registry.register("sidecar~y.demo", sidecar(), with_token("short"), Instant::now());
    assert_eq!(answer, Err(RegistryError::MalformedToken));
}

#[test]
fn a_well_formed_token_for_an_unknown_id_is_adopted() {
    let registry = mk_registry();
    let kept = trellis_pki::random_token();
    let answer = registry.register(
        "sidecar~frontend.demo",
        mk_sidecar("demo", "frontend", "frontend"),
        with_token(&kept),
        Instant::now(),
    );
    assert_eq!(answer.map(|r| r.token), Ok(None));
    assert!(registry.authenticate("sidecar~frontend.demo", &kept));
}

#[test]
fn credentials_survive_a_restart_for_one_ttl_and_registrations_come_back_by_refresh() {
    let dir = std::env::temp_dir().join(format!("trellis-registry-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("registrations.json");
    let policy = || AdmissionPolicy::new(&["demo".to_string()], &[]).unwrap();
    let xds: SocketAddr = "127.0.0.1:15010".parse().unwrap();
    let start = Instant::now();
    let ca = mk_ca();
    let before = Registry::new(xds, policy(), SECRET, Some(store.clone()), ca.clone(), start);
    let id = "sidecar~frontend.demo";
    let token = first(
        &before,
        id,
        mk_sidecar("demo", "frontend", "frontend"),
        Presented::default(),
    );
    drop(before);

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&store).unwrap();
    assert!(!text.contains(&token), "the token itself is never stored");

    let after = Registry::new(xds, policy(), SECRET, Some(store.clone()), ca.clone(), start);
    // Restored: the Envoy's ADS stream authenticates; nothing is registered until the refresh.
    assert!(after.authenticate(id, &token));
    assert!(after.all().is_empty());
    // Somebody else cannot claim the id meanwhile.
    let answer = after.register(id, mk_sidecar("demo", "frontend", "evil"), Presented::default(), start);
    assert_eq!(answer, Err(RegistryError::CredentialRequired(id.into())));
    // The proxy's refresh brings it back, with the same token.
    let answer = after.register(
        id,
        mk_sidecar("demo", "frontend", "frontend"),
        with_token(&token),
        start,
    );
    assert_eq!(answer.map(|r| r.token), Ok(None));
    assert_eq!(after.all().len(), 1);

    // Not refreshed for a TTL: gone, credential and all, and the file says so.
    assert_eq!(after.expire(start + TTL + Duration::from_secs(1)), vec![id.to_string()]);
    assert!(!after.authenticate(id, &token));
    let restarted = Registry::new(xds, policy(), SECRET, Some(store), ca.clone(), start);
    assert!(!restarted.authenticate(id, &token));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn listings_carry_no_credentials() {
    let registry = mk_registry();
    let token = first(
        &registry,
        "sidecar~frontend.demo",
        mk_sidecar("demo", "frontend", "frontend"),
        Presented::default(),
    );
    let listed = serde_json::to_string(&registry.all()).unwrap();
    assert!(!listed.contains(&token));
    assert!(!listed.contains(&trellis_base::sha256_hex(token.as_bytes())));
}

#[test]
fn bearer_reads_only_bearer_authorization() {
    let mut headers = HeaderMap::new();
    assert_eq!(bearer(&headers), None);
    headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
    assert_eq!(bearer(&headers), Some("abc"));
    headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
    assert_eq!(bearer(&headers), None);
}

// === the xDS client certificate: bound to the node id and to the current registration ===

#[test]
fn an_xds_certificate_opens_only_its_own_nodes_stream_while_its_registration_lives() {
    let registry = mk_registry();
    let (victim, other) = ("sidecar~frontend.demo", "sidecar~mallory.demo");
    let csr = mk_csr();
    let answer = registry.register(
        victim,
        mk_sidecar("demo", "frontend", "frontend"),
        Presented {
            xds_csr: Some(&csr),
            ..Default::default()
        },
        Instant::now(),
    );
    let token = token_of(&answer).expect("a first registration is issued a token");
    let cert = leaf(&answer);
    assert!(!answer.as_ref().unwrap().xds_certificate_needed);
    assert_eq!(registry.authorize_xds(victim, &cert), Ok(()));

    // The attacker's own registration and certificate open its own node, not the victim's.
    let csr = mk_csr();
    let mallory = registry.register(
        other,
        mk_sidecar("demo", "mallory", "mallory"),
        Presented {
            xds_csr: Some(&csr),
            ..Default::default()
        },
        Instant::now(),
    );
    let mallory_cert = leaf(&mallory);
    assert_eq!(registry.authorize_xds(other, &mallory_cert), Ok(()));
    assert_eq!(
        registry.authorize_xds(victim, &mallory_cert),
        Err("the client certificate names another node")
    );

    // A certificate the CA signed for the victim's id but that the registry did not issue to
    // its registration (e.g. one from a CSR sent before a takeover) opens nothing.
    let unbound = registry
        .xds_ca
        .sign(&mk_csr(), victim, std::time::SystemTime::now())
        .unwrap();
    let unbound = trellis_pki::pem_to_der_certs(&unbound).unwrap().remove(0);
    assert!(registry.authorize_xds(victim, &unbound).is_err());

    // Without the token, no CSR for the victim's id is signed.
    let csr = mk_csr();
    for presented in [
        Presented {
            xds_csr: Some(&csr),
            ..Default::default()
        },
        Presented {
            token: Some(&token_of(&mallory).unwrap()),
            xds_csr: Some(&csr),
            ..Default::default()
        },
    ] {
        let answer = registry.register(
            victim,
            mk_sidecar("demo", "frontend", "frontend"),
            presented,
            Instant::now(),
        );
        assert!(answer.is_err(), "{answer:?}");
    }

    // Deleted: the certificate, still within its validity dates, opens nothing.
    registry.deregister(victim, Some(&token)).unwrap();
    assert!(registry.authorize_xds(victim, &cert).is_err());
}

#[test]
fn renewal_keeps_the_previous_certificate_and_drops_older_ones() {
    let registry = mk_registry();
    let id = "sidecar~frontend.demo";
    let register = |presented| {
        registry.register(
            id,
            mk_sidecar("demo", "frontend", "frontend"),
            presented,
            Instant::now(),
        )
    };
    let csr = mk_csr();
    let first_answer = register(Presented {
        xds_csr: Some(&csr),
        ..Default::default()
    });
    let token = token_of(&first_answer).unwrap();
    let renew = || {
        leaf(&register(Presented {
            token: Some(&token),
            xds_csr: Some(&csr),
            ..Default::default()
        }))
    };
    let (first, second) = (leaf(&first_answer), renew());
    assert_ne!(first, second);
    assert_eq!(
        registry.authorize_xds(id, &first),
        Ok(()),
        "the previous one still works"
    );
    assert_eq!(registry.authorize_xds(id, &second), Ok(()));
    let third = renew();
    assert!(
        registry.authorize_xds(id, &first).is_err(),
        "two renewals later it is gone"
    );
    assert_eq!(registry.authorize_xds(id, &third), Ok(()));
    // A refresh without a CSR keeps what was issued.
    let answer = register(with_token(&token));
    assert!(!answer.unwrap().xds_certificate_needed);
    assert_eq!(registry.authorize_xds(id, &third), Ok(()));
}

#[test]
fn a_takeover_voids_the_certificates_of_the_replaced_credential() {
    let registry = mk_registry();
    let id = "ingress~main";
    let ingress = || {
        ProxyRegistration::IngressGateway(IngressRegistration {
            listen_address: "127.0.0.1".into(),
            port_map: Default::default(),
            labels: Default::default(),
            namespace: "trellis".into(),
            service_account: "ingress-gateway".into(),
            access_log: None,
        })
    };
    let csr = mk_csr();
    let old = registry.register(
        id,
        ingress(),
        Presented {
            role_secret: Some(SECRET),
            xds_csr: Some(&csr),
            ..Default::default()
        },
        Instant::now(),
    );
    let old_cert = leaf(&old);
    let taken = registry.register(id, ingress(), with_secret(None), Instant::now());
    assert!(token_of(&taken).is_some(), "a new credential");
    assert!(taken.unwrap().xds_certificate_needed);
    assert!(registry.authorize_xds(id, &old_cert).is_err());
}

#[test]
fn an_invalid_csr_is_refused_and_registers_nothing() {
    let registry = mk_registry();
    let answer = registry.register(
        "sidecar~x.demo",
        mk_sidecar("demo", "x", "x"),
        Presented {
            xds_csr: Some("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
            ..Default::default()
        },
        Instant::now(),
    );
    assert!(
        matches!(answer, Err(RegistryError::Invalid(ref m)) if m.starts_with("xdsCsr")),
        "{answer:?}"
    );
    assert_eq!(registry.get("sidecar~x.demo"), None);
}

#[test]
fn certificates_survive_a_restart_with_their_credential() {
    let dir = std::env::temp_dir().join(format!("trellis-registry-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("registrations.json");
    let policy = || AdmissionPolicy::new(&["demo".to_string()], &[]).unwrap();
    let xds: SocketAddr = "127.0.0.1:15010".parse().unwrap();
    let (ca, start, id) = (mk_ca(), Instant::now(), "sidecar~frontend.demo");
    let before = Registry::new(xds, policy(), SECRET, Some(store.clone()), ca.clone(), start);
    let csr = mk_csr();
    let cert = leaf(&before.register(
        id,
        mk_sidecar("demo", "frontend", "frontend"),
        Presented {
            xds_csr: Some(&csr),
            ..Default::default()
        },
        start,
    ));
    drop(before);
    let after = Registry::new(xds, policy(), SECRET, Some(store.clone()), ca, start);
    assert_eq!(after.authorize_xds(id, &cert), Ok(()), "the running Envoy reconnects");
    after.expire(start + TTL + Duration::from_secs(1));
    assert!(after.authorize_xds(id, &cert).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_register_body_carries_an_optional_csr_beside_the_registration() {
    let body: RegisterBody = serde_json::from_value(serde_json::json!({
        "kind": "eastWestGateway", "listenAddress": "127.0.0.1", "port": 15443,
        "publicAddress": {"host": "127.0.0.1", "port": 15443}, "xdsCsr": "CSR"
    }))
    .unwrap();
    assert_eq!(body.registration, mk_gateway("127.0.0.1"));
    assert_eq!(body.xds_csr.as_deref(), Some("CSR"));
    let body: RegisterBody =
        serde_json::from_value(serde_json::to_value(mk_sidecar("demo", "a", "a")).unwrap()).unwrap();
    assert_eq!(body.xds_csr, None);
}

#[test]
fn gateways_and_addons_are_signalled_at_once_sidecars_only_with_the_rest() {
    let registry = mk_registry();
    let (changes, frame) = (registry.changes.subscribe(), registry.frame_changes.subscribe());
    let counts = || (*changes.borrow(), *frame.borrow());
    let token = first(
        &registry,
        "sidecar~a.demo",
        mk_sidecar("demo", "a", "a"),
        Presented::default(),
    );
    assert_eq!(counts(), (1, 0), "a sidecar waits for the batch");
    first(
        &registry,
        "addon~ext-auth-service.gloo-mesh~1",
        mk_addon(AddonKind::ExtAuth),
        with_secret(None),
    );
    assert_eq!(counts(), (2, 1), "an add-on goes at once");
    let gateway_token = first(&registry, "east-west~gw", mk_gateway("10.0.0.1"), with_secret(None));
    assert_eq!(counts(), (3, 2), "a gateway goes at once");
    registry.deregister("sidecar~a.demo", Some(&token)).unwrap();
    assert_eq!(counts(), (4, 2));
    registry.deregister("east-west~gw", Some(&gateway_token)).unwrap();
    assert_eq!(counts(), (5, 3), "a gateway leaving goes at once");
}

#[test]
fn an_ingress_registration_with_a_port_map_survives_json() {
    let registration = ProxyRegistration::IngressGateway(IngressRegistration {
        listen_address: "127.0.0.1".into(),
        port_map: BTreeMap::from([(80, 30080), (443, 30443)]),
        labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        namespace: "gloo-mesh-gateways".into(),
        service_account: "istio-ingressgateway".into(),
        access_log: None,
    });
    let json = serde_json::to_string(&registration).unwrap();
    let back: ProxyRegistration = serde_json::from_str(&json).unwrap();
    assert_eq!(back, registration, "{json}");
    let bad = json.replace("\"80\"", "\"http\"");
    let error = serde_json::from_str::<ProxyRegistration>(&bad).unwrap_err();
    assert!(error.to_string().contains("\"http\" is not a port number"), "{error}");
}

#[test]
fn an_access_log_sink_travels_with_the_registration_and_is_checked() {
    use trellis_model::access_log::AccessLogSink;
    let registry = mk_registry();
    let mut sidecar = mk_sidecar("demo", "frontend", "frontend");
    // Without one (an older proxy), entries go to Envoy's standard output.
    assert_eq!(sidecar.access_log(), &AccessLogSink::Stdout);
    sidecar.set_access_log(AccessLogSink::File("/srv/frontend/access.log".into()));
    let json = serde_json::to_value(&sidecar).unwrap();
    assert_eq!(
        json["accessLog"],
        serde_json::json!({"file": "/srv/frontend/access.log"})
    );
    let body: RegisterBody = serde_json::from_value(json).unwrap();
    assert_eq!(body.registration, sidecar);
    first(
        &registry,
        "sidecar~frontend.demo",
        sidecar.clone(),
        Presented::default(),
    );
    // A relative path (Envoy would resolve it against its own working directory) is refused.
    sidecar.set_access_log(AccessLogSink::File("access.log".into()));
    let answer = registry.register("sidecar~other.demo", sidecar, Presented::default(), Instant::now());
    assert!(
        matches!(answer, Err(RegistryError::Invalid(ref m)) if m.contains("absolute")),
        "{answer:?}"
    );
}
