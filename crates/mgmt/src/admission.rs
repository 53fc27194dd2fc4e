//! Apply-time checks that need more than one resource: every ExtAuthPolicy's auth config, with
//! its Secrets and ConfigMaps resolved as the translator resolves them, must compile in the
//! ext-auth engine (Rego parses, JWKS keys load, boolean expressions name real configs, LDAP and
//! OIDC settings are complete). A policy that would not compile is refused here, so the running
//! config never holds one; the ext-auth add-on would otherwise deny its routes.
//!
//! A change to a ConfigMap or Secret alone can break a policy that was fine (a Rego module with a
//! syntax error): those are refused too, naming the policy they would break.

use std::collections::BTreeMap;

use trellis_api::{ApiError, DocumentError, Kind, Resource, ResourceKey};
use trellis_model::Snapshot;

/// Config id (`namespace.name`) -> why it does not compile.
fn failures(resources: Vec<Resource>) -> BTreeMap<String, String> {
    let snapshot = Snapshot::new(resources, BTreeMap::new());
    let mut failures = BTreeMap::new();
    for entry in trellis_translate::auth_configs(&snapshot) {
        match trellis_extauth::CompiledAuthConfig::compile(&entry.id, &entry.spec) {
            Err(error) => {
                failures.insert(entry.id.clone(), error.to_string());
            }
            Ok(compiled) => {
                // The I/O-backed types are checked by the server modules' own (I/O-free) parsers.
                for step in &compiled.steps {
                    let checked = match &step.evaluator {
                        trellis_extauth::Evaluator::Ldap(config) => {
                            trellis_ext_auth_server::ldap::Ldap::from_config(config).map(|_| ())
                        }
                        trellis_extauth::Evaluator::Oidc(config) => {
                            trellis_ext_auth_server::oidc::Oidc::from_config(config, None).map(|_| ())
                        }
                        _ => Ok(()),
                    };
                    if let Err(error) = checked {
                        failures.insert(entry.id.clone(), format!("{}: {} ({error:#})", entry.id, step.name));
                        break;
                    }
                }
            }
        }
    }
    failures
}

/// Refuses `batch` when it would leave an ExtAuthPolicy whose auth config does not compile, or a
/// RootTrustPolicy whose root Secret holds no usable CA.
pub fn check(source: &str, stored: &[Resource], batch: &[Resource]) -> Result<(), ApiError> {
    root_trust(source, stored, batch)?;
    let touches_auth = batch
        .iter()
        .any(|r| matches!(r.kind(), Kind::ExtAuthPolicy | Kind::Secret | Kind::ConfigMap));
    if !touches_auth {
        return Ok(());
    }
    let before = failures(stored.to_vec());
    let mut merged: BTreeMap<ResourceKey, Resource> = stored.iter().map(|r| (r.key(), r.clone())).collect();
    for resource in batch {
        merged.insert(resource.key(), resource.clone());
    }
    let after = failures(merged.into_values().collect());
    let in_batch = |id: &str| {
        batch.iter().position(|r| {
            r.kind() == Kind::ExtAuthPolicy && format!("{}.{}", r.metadata.namespace, r.metadata.name) == id
        })
    };
    let errors: Vec<DocumentError> = after
        .into_iter()
        .filter(|(id, message)| in_batch(id).is_some() || before.get(id) != Some(message))
        .map(|(id, message)| {
            let (namespace, name) = id.split_once('.').unwrap_or(("", &id));
            let document = in_batch(&id)
                .or_else(|| {
                    batch
                        .iter()
                        .position(|r| matches!(r.kind(), Kind::Secret | Kind::ConfigMap))
                })
                .unwrap_or(0);
            DocumentError {
                source: source.to_string(),
                document: document + 1,
                resource: Some(format!("ExtAuthPolicy/{namespace}/{name}")),
                field: Some("spec.config.glooAuth".to_string()),
                message: format!("the auth config does not compile: {message}"),
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// A RootTrustPolicy's `secretRef` (and `passiveCertificateAuthorities[].secretRef`) naming a
/// Secret that exists must hold a CA the mesh can use: a certificate and key that match, CA:TRUE
/// with keyCertSign, valid now. Refused at apply so the running root is never asked to switch to
/// it. A Secret not applied yet is only a WARNING in the policy's status (it may come next).
fn root_trust(source: &str, stored: &[Resource], batch: &[Resource]) -> Result<(), ApiError> {
    if !batch
        .iter()
        .any(|r| matches!(r.kind(), Kind::RootTrustPolicy | Kind::Secret))
    {
        return Ok(());
    }
    let mut merged: BTreeMap<ResourceKey, Resource> = stored.iter().map(|r| (r.key(), r.clone())).collect();
    for resource in batch {
        merged.insert(resource.key(), resource.clone());
    }
    let now = std::time::SystemTime::now();
    let mut errors = Vec::new();
    for policy in merged.values() {
        let trellis_api::Spec::RootTrustPolicy(spec) = &policy.spec else {
            continue;
        };
        let config = &spec.config;
        let refs = config
            .mgmt_server_ca
            .iter()
            .map(|ca| ("spec.config.mgmtServerCa.secretRef".to_string(), ca, true))
            .chain(
                config
                    .passive_certificate_authorities
                    .iter()
                    .enumerate()
                    .map(|(i, ca)| {
                        (
                            format!("spec.config.passiveCertificateAuthorities[{i}].secretRef"),
                            ca,
                            false,
                        )
                    }),
            );
        for (field, ca, signs) in refs {
            let Some(reference) = &ca.secret_ref else { continue };
            let namespace = if reference.namespace.is_empty() {
                &policy.metadata.namespace
            } else {
                &reference.namespace
            };
            let key = ResourceKey::new(Kind::Secret, namespace, &reference.name);
            let Some(trellis_api::Spec::Secret(secret)) = merged.get(&key).map(|r| &r.spec) else {
                continue;
            };
            let problem = if signs {
                super::root_trust::root_from_secret(secret, now).err()
            } else {
                super::root_trust::passive_from_secret(secret).err()
            };
            let Some(problem) = problem else { continue };
            // The document to blame: the policy if it is in the batch, else the Secret; neither
            // (a stored pair this batch leaves alone) is not this apply's doing.
            let Some(document) = batch
                .iter()
                .position(|r| r.key() == policy.key())
                .or_else(|| batch.iter().position(|r| r.key() == key))
            else {
                continue;
            };
            errors.push(DocumentError {
                source: source.to_string(),
                document: document + 1,
                resource: Some(policy.key().to_string()),
                field: Some(field),
                message: format!(
                    "Secret {namespace}/{}: {problem}; the mesh keeps its current root",
                    reference.name
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// Refuses deleting `keys` when an ExtAuthPolicy uses what they hold (a Secret's API keys or
/// client secret, a ConfigMap's Rego): its resolved auth config would change under it, and the
/// add-on would start denying its routes. A delete passes admission as an apply does.
pub fn check_delete(source: &str, stored: &[Resource], keys: &[ResourceKey]) -> Result<(), ApiError> {
    let touches_auth = keys.iter().any(|k| matches!(k.kind, Kind::Secret | Kind::ConfigMap));
    if !touches_auth {
        return Ok(());
    }
    let resolved = |resources: Vec<Resource>| -> BTreeMap<String, serde_json::Value> {
        let snapshot = Snapshot::new(resources, BTreeMap::new());
        trellis_translate::auth_configs(&snapshot)
            .into_iter()
            .map(|entry| (entry.id, entry.spec))
            .collect()
    };
    let before = resolved(stored.to_vec());
    let after = resolved(stored.iter().filter(|r| !keys.contains(&r.key())).cloned().collect());
    let document = keys
        .iter()
        .position(|k| matches!(k.kind, Kind::Secret | Kind::ConfigMap))
        .unwrap_or(0);
    let errors: Vec<DocumentError> = after
        .iter()
        .filter(|(id, spec)| before.get(*id) != Some(spec))
        .map(|(id, _)| {
            let (namespace, name) = id.split_once('.').unwrap_or(("", id));
            DocumentError {
                source: source.to_string(),
                document: document + 1,
                resource: Some(keys[document].to_string()),
                field: None,
                message: format!(
                    "ExtAuthPolicy/{namespace}/{name} uses it: its auth config would lose what this holds; change or delete the policy first"
                ),
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Resource> {
        trellis_api::parse_documents("test.yaml", text).unwrap()
    }

    const POLICY: &str = "apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: admin, namespace: demo}
spec:
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: opa
        opaAuth: {modules: [{name: policy}], query: data.admin.allow == true}
";

    fn config_map(rego: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: policy, namespace: demo}}\ndata:\n  policy.rego: {rego:?}\n"
        )
    }

    #[test]
    fn refuses_a_policy_whose_rego_does_not_parse_and_names_it() {
        let batch = parse(&format!("{}---\n{POLICY}", config_map("package admin\nallow {{{")));
        let error = check("policy.yaml", &[], &batch).unwrap_err().to_string();
        assert!(error.contains("ExtAuthPolicy/demo/admin"), "{error}");
        assert!(error.contains("spec.config.glooAuth"), "{error}");
        let good = parse(&format!(
            "{}---\n{POLICY}",
            config_map("package admin\ndefault allow := false\n")
        ));
        check("policy.yaml", &[], &good).unwrap();
    }

    #[test]
    fn a_config_map_change_that_breaks_a_stored_policy_is_refused() {
        let stored = parse(&format!(
            "{}---\n{POLICY}",
            config_map("package admin\ndefault allow := false\n")
        ));
        let broken = parse(&config_map("package admin\nallow {{{"));
        let error = check("cm.yaml", &stored, &broken).unwrap_err().to_string();
        assert!(
            error.contains("ExtAuthPolicy/demo/admin") && error.contains("document 1"),
            "{error}"
        );
        // Unrelated applies are never refused for it.
        let unrelated = parse(
            "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {name: x, namespace: demo}\nspec: {hosts: [x.mesh], ports: [{number: 80}]}\n",
        );
        check("vd.yaml", &stored, &unrelated).unwrap();
    }

    #[test]
    fn refuses_a_boolean_expression_naming_a_missing_config() {
        let batch = parse(
            "apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: both, namespace: demo}
spec:
  config:
    server: {name: ext-auth}
    glooAuth:
      booleanExpr: basic1 || nope
      configs:
      - name: basic1
        basicAuth: {realm: r, apr: {users: {}}}
",
        );
        let error = check("policy.yaml", &[], &batch).unwrap_err().to_string();
        assert!(error.contains("nope"), "{error}");
    }

    fn root_secret(name: &str, cert: &str, key: &str) -> String {
        let json = |s: &str| serde_json::to_string(s).unwrap();
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: gloo-mesh}}\nstringData: {{\"ca-cert.pem\": {}, \"ca-key.pem\": {}}}\n",
            json(cert),
            json(key)
        )
    }

    const ROOT_TRUST: &str = "apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata: {name: root, namespace: gloo-mesh}
spec:
  config: {mgmtServerCa: {secretRef: {name: mesh-root}}}
";

    #[test]
    fn a_root_secret_that_cannot_sign_is_refused_with_the_policy_and_field() {
        let now = std::time::SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        let good = trellis_pki::Authority::generate_root("good", hour, now).unwrap();
        let other = trellis_pki::Authority::generate_root("other", hour, now).unwrap();
        let good_secret = root_secret("mesh-root", &good.cert_pem, &good.key.0);
        let bad_secret = root_secret("mesh-root", &good.cert_pem, &other.key.0);
        // A usable root applies; a policy whose Secret is not there yet too (a WARNING says so).
        check("t.yaml", &[], &parse(&format!("{good_secret}---\n{ROOT_TRUST}"))).unwrap();
        check("t.yaml", &[], &parse(ROOT_TRUST)).unwrap();
        // The policy with a mismatched key: refused, naming the policy, field and Secret.
        let Err(ApiError::Invalid(errors)) = check("t.yaml", &[], &parse(&format!("{bad_secret}---\n{ROOT_TRUST}")))
        else {
            panic!("applied")
        };
        assert_eq!(errors[0].resource.as_deref(), Some("RootTrustPolicy/gloo-mesh/root"));
        assert_eq!(errors[0].field.as_deref(), Some("spec.config.mgmtServerCa.secretRef"));
        assert_eq!(errors[0].document, 2);
        assert!(
            errors[0]
                .message
                .contains("Secret gloo-mesh/mesh-root: private key does not match"),
            "{errors:?}"
        );
        // The Secret alone, replacing a good one under a stored policy: refused too.
        let stored = parse(&format!("{good_secret}---\n{ROOT_TRUST}"));
        let Err(ApiError::Invalid(errors)) = check("t.yaml", &stored, &parse(&bad_secret)) else {
            panic!("applied")
        };
        assert_eq!(errors[0].document, 1);
        assert!(!errors[0].message.contains("PRIVATE KEY"), "{errors:?}");
    }
}
