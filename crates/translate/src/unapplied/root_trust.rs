//! RootTrustPolicy fields the management server does not apply, and roots it cannot use yet.
//! The management server applies the rest (crates/mgmt `root_trust`); a Secret that is present
//! but unusable is refused at apply time there, so only a missing Secret or key shows here.

use trellis_api::{CommonCertOptions, MgmtServerCa, Resource, RootTrustPolicySpec, Spec};

use super::not_applied;

pub(super) fn warn(resources: &[Resource], namespace: &str, spec: &RootTrustPolicySpec, found: &mut Vec<String>) {
    let config = &spec.config;
    if !spec.apply_to_meshes.is_empty() {
        found.push(not_applied("spec.applyToMeshes", "the root applies to the whole mesh"));
    }
    if config.agent_ca.is_some() {
        found.push(not_applied(
            "spec.config.agentCa",
            "the management server's root signs the cluster intermediates",
        ));
    }
    if config.auto_restart_pods {
        found.push(not_applied(
            "spec.config.autoRestartPods",
            "sidecars receive their new certificates over SDS without a restart",
        ));
    }
    if let Some(ca) = &config.mgmt_server_ca {
        if let Some(generated) = &ca.generated {
            key_and_org(generated, "spec.config.mgmtServerCa.generated", found);
        }
        secret(resources, namespace, ca, "spec.config.mgmtServerCa", true, found);
    }
    if let Some(options) = &config.intermediate_cert_options {
        let field = "spec.config.intermediateCertOptions";
        key_and_org(options, field, found);
        if options.secret_rotation_grace_period_ratio.is_some() {
            found.push(not_applied(
                &format!("{field}.secretRotationGracePeriodRatio"),
                "agents renew their intermediate at two thirds of its life",
            ));
        }
    }
    for (i, ca) in config.passive_certificate_authorities.iter().enumerate() {
        let field = format!("spec.config.passiveCertificateAuthorities[{i}]");
        if ca.generated.is_some() {
            found.push(not_applied(
                &format!("{field}.generated"),
                "a root generated only to be trusted signs nothing; name a Secret with secretRef",
            ));
        }
        secret(resources, namespace, ca, &field, false, found);
    }
}

fn key_and_org(options: &CommonCertOptions, field: &str, found: &mut Vec<String>) {
    if options.rsa_key_size_bytes.is_some() {
        found.push(not_applied(
            &format!("{field}.rsaKeySizeBytes"),
            "Trellis generates ECDSA P-256 keys",
        ));
    }
    if options.org_name.is_some() {
        found.push(not_applied(
            &format!("{field}.orgName"),
            "certificates are named by Trellis",
        ));
    }
}

/// A `secretRef` whose Secret or keys are missing: the mesh keeps its current root meanwhile.
fn secret(
    resources: &[Resource],
    namespace: &str,
    ca: &MgmtServerCa,
    field: &str,
    signs: bool,
    found: &mut Vec<String>,
) {
    let Some(reference) = &ca.secret_ref else { return };
    let ns = if reference.namespace.is_empty() {
        namespace
    } else {
        &reference.namespace
    };
    let name = &reference.name;
    let secret = resources.iter().find_map(|r| match &r.spec {
        Spec::Secret(secret) if r.metadata.namespace == ns && r.metadata.name == *name => Some(secret),
        _ => None,
    });
    let has = |keys: &[&str]| secret.is_some_and(|s| keys.iter().any(|k| s.value(k).is_some()));
    let problem = if secret.is_none() {
        format!("Secret {ns}/{name} does not exist")
    } else if signs && !has(&trellis_api::ROOT_SECRET_CERT_KEYS) {
        format!("Secret {ns}/{name} has no ca-cert.pem (or tls.crt)")
    } else if signs && !has(&trellis_api::ROOT_SECRET_KEY_KEYS) {
        format!("Secret {ns}/{name} has no ca-key.pem (or tls.key)")
    } else if !signs && !has(&["root-cert.pem", "ca-cert.pem", "tls.crt", "ca.crt"]) {
        format!("Secret {ns}/{name} has no root-cert.pem or ca-cert.pem")
    } else {
        return;
    };
    let consequence = if signs {
        "the mesh keeps its current root"
    } else {
        "this root is not trusted"
    };
    found.push(format!("{field}.secretRef: {problem}: {consequence}"));
}

#[cfg(test)]
mod tests {
    use crate::Warnings;

    fn warnings_for(yaml: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let resources = trellis_api::parse_documents("t.yaml", yaml).unwrap();
        let mut warnings = Warnings::default();
        super::super::warn(&resources, &mut warnings);
        warnings.0
    }

    #[test]
    fn fields_the_mesh_does_not_apply_are_named() {
        let warnings = warnings_for(
            "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: root, namespace: gloo-mesh}
spec:
  applyToMeshes: [{istio: {clusterName: cluster-1}}]
  config:
    mgmtServerCa: {generated: {ttlDays: 730, rsaKeySizeBytes: 4096, orgName: acme, secretRotationGracePeriodRatio: 0.2}}
    intermediateCertOptions: {ttlDays: 1, secretRotationGracePeriodRatio: 0.1, orgName: acme}
    autoRestartPods: true
    passiveCertificateAuthorities: [{generated: {}}]
",
        );
        let found = warnings["RootTrustPolicy/gloo-mesh/root"].join("\n");
        for field in [
            "spec.applyToMeshes",
            "spec.config.autoRestartPods",
            "spec.config.mgmtServerCa.generated.rsaKeySizeBytes",
            "spec.config.mgmtServerCa.generated.orgName",
            "spec.config.intermediateCertOptions.orgName",
            "spec.config.intermediateCertOptions.secretRotationGracePeriodRatio",
            "spec.config.passiveCertificateAuthorities[0].generated",
        ] {
            assert!(
                found.contains(&format!("{field} is accepted but not applied")),
                "{field}: {found}"
            );
        }
        // Applied: the generated root's ttlDays and grace ratio, the intermediates' ttlDays.
        for applied in [
            "generated.ttlDays",
            "generated.secretRotationGracePeriodRatio",
            "intermediateCertOptions.ttlDays",
        ] {
            assert!(!found.contains(applied), "{applied}: {found}");
        }
    }

    #[test]
    fn a_missing_root_secret_or_key_keeps_the_current_root_with_a_warning() {
        let warnings = warnings_for(
            "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: a-root, namespace: gloo-mesh}
spec:
  config:
    mgmtServerCa: {secretRef: {name: absent}}
    passiveCertificateAuthorities: [{secretRef: {name: no-keys, namespace: gloo-mesh}}]
---
apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: b-root, namespace: gloo-mesh}
spec:
  config:
    mgmtServerCa: {secretRef: {name: no-keys}}
---
apiVersion: v1
kind: Secret
metadata: {name: no-keys, namespace: gloo-mesh}
stringData: {other: x}
",
        );
        let first = warnings["RootTrustPolicy/gloo-mesh/a-root"].join("\n");
        assert!(
            first.contains("spec.config.mgmtServerCa.secretRef: Secret gloo-mesh/absent does not exist: the mesh keeps its current root"),
            "{first}"
        );
        assert!(
            first.contains("spec.config.passiveCertificateAuthorities[0].secretRef: Secret gloo-mesh/no-keys has no root-cert.pem or ca-cert.pem"),
            "{first}"
        );
        let second = warnings["RootTrustPolicy/gloo-mesh/b-root"].join("\n");
        assert!(second.contains("RootTrustPolicy/gloo-mesh/a-root applies"), "{second}");
        assert!(second.contains("has no ca-cert.pem (or tls.crt)"), "{second}");
    }

    #[test]
    fn a_usable_secret_root_gets_no_warning() {
        let warnings = warnings_for(
            "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: root, namespace: gloo-mesh}
spec:
  config: {mgmtServerCa: {secretRef: {name: root}}}
---
apiVersion: v1
kind: Secret
metadata: {name: root, namespace: gloo-mesh}
stringData: {ca-cert.pem: \"-----BEGIN CERTIFICATE-----\", ca-key.pem: \"-----BEGIN PRIVATE KEY-----\"}
",
        );
        assert!(!warnings.contains_key("RootTrustPolicy/gloo-mesh/root"), "{warnings:?}");
    }
}
