use std::collections::BTreeMap;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn mk_mesh(name: &str) -> (MeshCa, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("trellis-root-trust-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = Authority::generate_root("base root", 24 * HOUR, SystemTime::now()).unwrap();
    let mesh = mesh_ca(base, "trellis.local".into(), HOUR, PkiDir::new(dir.clone())).unwrap();
    (mesh, dir)
}

fn mk_secret(values: &[(&str, &str)]) -> SecretSpec {
    SecretSpec {
        string_data: values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

fn parse(yaml: &str) -> Vec<Resource> {
    trellis_api::parse_documents("t.yaml", yaml).unwrap()
}

/// A Secret with `root` in Gloo's layout, and a RootTrustPolicy naming it.
fn mk_policy(root: &Authority, extra: &str) -> Vec<Resource> {
    let json = |s: &str| serde_json::to_string(s).unwrap();
    parse(&format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: root, namespace: gloo-mesh}}
stringData: {{\"ca-cert.pem\": {}, \"ca-key.pem\": {}}}
---
apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {{name: policy, namespace: gloo-mesh}}
spec:
  config:
    mgmtServerCa: {{secretRef: {{name: root}}}}
{extra}",
        json(&root.cert_pem),
        json(&root.key.0)
    ))
}

#[test]
fn a_secret_root_is_checked_before_it_may_sign() {
    let now = SystemTime::now();
    let root = Authority::generate_root("operator root", HOUR, now).unwrap();
    let other = Authority::generate_root("other root", HOUR, now).unwrap();
    let leaf = root.issue_server_cert(&["leaf.example".into()], HOUR, now).unwrap();
    let expired = Authority::generate_root("expired root", HOUR, now - 2 * HOUR).unwrap();
    let intermediate = root.generate_intermediate("pathlen 0", HOUR, now).unwrap();
    assert!(
        root_from_secret(
            &mk_secret(&[("ca-cert.pem", &root.cert_pem), ("ca-key.pem", &root.key.0)]),
            now
        )
        .is_ok()
    );
    assert!(
        root_from_secret(
            &mk_secret(&[("tls.crt", &root.cert_pem), ("tls.key", &root.key.0)]),
            now
        )
        .is_ok()
    );
    for (case, secret, expected) in [
        (
            "no certificate",
            mk_secret(&[("ca-key.pem", &root.key.0)]),
            "has no PEM ca-cert.pem",
        ),
        (
            "no key",
            mk_secret(&[("ca-cert.pem", &root.cert_pem)]),
            "has no PEM ca-key.pem",
        ),
        (
            "another CA's key",
            mk_secret(&[("ca-cert.pem", &root.cert_pem), ("ca-key.pem", &other.key.0)]),
            "private key does not match",
        ),
        (
            "not a CA",
            mk_secret(&[("ca-cert.pem", &leaf.cert_pem), ("ca-key.pem", &leaf.key.0)]),
            "is not a CA",
        ),
        (
            "expired",
            mk_secret(&[("ca-cert.pem", &expired.cert_pem), ("ca-key.pem", &expired.key.0)]),
            "not valid now",
        ),
        (
            "cannot sign intermediates",
            mk_secret(&[
                ("ca-cert.pem", &intermediate.cert_pem),
                ("ca-key.pem", &intermediate.key.0),
                ("root-cert.pem", &root.cert_pem),
            ]),
            "path length 0",
        ),
    ] {
        let error = root_from_secret(&secret, now).expect_err(case);
        assert!(error.contains(expected), "{case}: {error}");
        assert!(!error.contains("PRIVATE KEY"), "{case}: {error}");
    }
}

#[test]
fn a_new_root_signs_and_the_previous_one_stays_trusted() {
    let (mesh, dir) = mk_mesh("switch");
    let now = SystemTime::now();
    let base_pem = mesh.base.root_pem();
    assert!(
        !reconcile(&mesh, &[], now).unwrap(),
        "no policy: the base root, no switch"
    );
    let operator = Authority::generate_root("operator root", 30 * DAY, now).unwrap();
    let resources = mk_policy(&operator, "    intermediateCertOptions: {ttlDays: 2}\n");
    assert!(reconcile(&mesh, &resources, now).unwrap(), "switched");
    let root = mesh.current();
    assert_eq!(root.root_pem, operator.root_pem());
    assert_eq!(root.intermediate_ttl, 2 * DAY);
    assert_eq!(
        trellis_pki::pem_to_der_certs(&root.bundle_pem).unwrap().len(),
        2,
        "new root and previous root"
    );
    assert!(root.bundle_pem.starts_with(&operator.root_pem()));
    assert!(root.bundle_pem.contains(&base_pem));
    // The signer signs intermediates under the new root.
    let (_, csr) = trellis_pki::new_key_and_csr("cluster").unwrap();
    let chain = root
        .signer
        .sign_intermediate_csr(&csr, "cluster", "trellis.local", HOUR, now)
        .unwrap();
    assert!(chain.ends_with(&operator.root_pem()));
    // The same config again changes nothing.
    assert!(!reconcile(&mesh, &resources, now).unwrap());
    // The state file names the active root and holds no key.
    let state = std::fs::read_to_string(dir.join(STATE_FILE)).unwrap();
    assert!(state.contains("activePem") && !state.contains("PRIVATE KEY"), "{state}");
    // After the previous root's intermediates can have expired, it leaves the bundle.
    let later = now + 3 * DAY;
    let operator_only = reconcile(&mesh, &resources, later).unwrap();
    assert!(!operator_only);
    assert_eq!(
        trellis_pki::pem_to_der_certs(&mesh.current().bundle_pem).unwrap().len(),
        1
    );
}

#[test]
fn a_restart_keeps_the_active_root_and_the_previous_one() {
    let (mesh, dir) = mk_mesh("restart");
    let now = SystemTime::now();
    let operator = Authority::generate_root("operator root", 24 * HOUR, now).unwrap();
    let resources = mk_policy(&operator, "");
    reconcile(&mesh, &resources, now).unwrap();
    let before = mesh.current().bundle_pem.clone();
    // The same data dir, the same base root: the agents hold the operator's root already.
    let again = mesh_ca(mesh.base.clone(), "trellis.local".into(), HOUR, PkiDir::new(dir)).unwrap();
    assert!(!reconcile(&again, &resources, now).unwrap(), "not a switch");
    assert_eq!(again.current().bundle_pem, before);
    assert_eq!(again.current().signer.cert_pem, operator.cert_pem);
}

#[test]
fn an_unusable_policy_leaves_the_running_root_and_says_where() {
    let (mesh, _dir) = mk_mesh("unusable");
    let now = SystemTime::now();
    let before = mesh.current().root_sha256.clone();
    let resources = parse(
        "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: policy, namespace: gloo-mesh}
spec:
  config: {mgmtServerCa: {secretRef: {name: absent}}}
",
    );
    let error = reconcile(&mesh, &resources, now).unwrap_err();
    assert_eq!(
        mesh.problem().as_deref(),
        Some(error.as_str()),
        "kept for trellis check"
    );
    assert!(
        error.contains("RootTrustPolicy/gloo-mesh/policy: spec.config.mgmtServerCa.secretRef: Secret gloo-mesh/absent does not exist"),
        "{error}"
    );
    assert_eq!(mesh.current().root_sha256, before);
    reconcile(&mesh, &[], now).unwrap();
    assert_eq!(mesh.problem(), None, "cleared once the config applies");
}

#[test]
fn a_generated_root_is_kept_while_its_options_stay() {
    let (mesh, dir) = mk_mesh("generated");
    let now = SystemTime::now();
    let policy = |days: u32| {
        parse(&format!(
            "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {{name: policy, namespace: gloo-mesh}}
spec:
  config: {{mgmtServerCa: {{generated: {{ttlDays: {days}}}}}}}
"
        ))
    };
    assert!(reconcile(&mesh, &policy(30), now).unwrap());
    let first = mesh.current().root_pem.clone();
    let info = trellis_pki::inspect_pem(&first).unwrap();
    // Backdated a little for clock skew.
    let life = info.not_after.duration_since(info.not_before).unwrap();
    assert!(life >= 30 * DAY && life < 30 * DAY + HOUR, "{life:?}");
    assert!(!reconcile(&mesh, &policy(30), now).unwrap(), "the same root again");
    assert!(reconcile(&mesh, &policy(60), now).unwrap(), "new options, new root");
    assert_ne!(mesh.current().root_pem, first);
    let key = std::fs::metadata(dir.join("mesh-root-generated.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn replicas_refuse_a_generated_root_and_keep_the_shared_one() {
    let (mut mesh, _dir) = mk_mesh("generated-replicas");
    mesh.replicated = true;
    let before = mesh.current().root_pem.clone();
    let policy = parse(
        "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: policy, namespace: gloo-mesh}
spec:
  config: {mgmtServerCa: {generated: {ttlDays: 30}}}
",
    );
    let error = reconcile(&mesh, &policy, SystemTime::now()).unwrap_err();
    assert!(
        error.contains("mgmtServerCa.generated") && error.contains("secretRef"),
        "{error}"
    );
    assert_eq!(mesh.current().root_pem, before);
    assert_eq!(mesh.problem(), Some(error));
}

#[test]
fn deleting_the_policy_returns_to_the_base_root_and_trusts_a_passive_one() {
    let (mesh, _dir) = mk_mesh("delete");
    let now = SystemTime::now();
    let operator = Authority::generate_root("operator root", 30 * DAY, now).unwrap();
    let retired = Authority::generate_root("retired root", 30 * DAY, now).unwrap();
    let json = |s: &str| serde_json::to_string(s).unwrap();
    let mut resources = mk_policy(
        &operator,
        "    passiveCertificateAuthorities: [{secretRef: {name: retired}}]\n",
    );
    resources.extend(parse(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: retired, namespace: gloo-mesh}}\nstringData: {{\"root-cert.pem\": {}}}\n",
        json(&retired.cert_pem)
    )));
    reconcile(&mesh, &resources, now).unwrap();
    let bundle = mesh.current().bundle_pem.clone();
    assert!(bundle.contains(&retired.root_pem()), "the passive root is trusted");
    assert_eq!(trellis_pki::pem_to_der_certs(&bundle).unwrap().len(), 3);
    // The policy goes: the base root signs again, the operator's stays trusted meanwhile.
    assert!(reconcile(&mesh, &[], now).unwrap());
    let root = mesh.current();
    assert_eq!(root.root_pem, mesh.base.root_pem());
    assert!(root.bundle_pem.contains(&operator.root_pem()));
    assert!(
        !root.bundle_pem.contains(&retired.root_pem()),
        "a passive root leaves with its policy"
    );
}
