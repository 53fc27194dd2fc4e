//! Which workload identities a sidecar may claim on this agent: `--allow-namespace NS` and
//! `--allow-service-account NS/SA`.
//!
//! A sidecar's registration names the namespace and service account its certificate is issued
//! for, and any local process can send one, so the agent only admits identities its operator
//! listed. With no list, no sidecar registers: an agent must not hand any identity to whoever
//! asks. `--allow-namespace '*'` says "any namespace" explicitly (a trusted single-user host).
//! Gateways and add-ons are admitted by the role secret instead (see `role_secret`).

use std::collections::BTreeSet;

use super::registry::RegistryError;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdmissionPolicy {
    any_namespace: bool,
    namespaces: BTreeSet<String>,
    service_accounts: BTreeSet<(String, String)>,
    /// Namespaces whose identities gateways and add-ons (admitted by the role secret) may take.
    gateway_namespaces: BTreeSet<String>,
}

/// Where gateways and add-ons live by default: the ingress gateway's namespace (`trellis`), and
/// where Gloo installs them: `gloo-mesh`, `gloo-mesh-gateways` and `gloo-mesh-addons`.
pub const DEFAULT_GATEWAY_NAMESPACES: [&str; 4] = ["trellis", "gloo-mesh", "gloo-mesh-gateways", "gloo-mesh-addons"];

impl AdmissionPolicy {
    /// From the flags' values; an entry that is not a valid name is an error naming the flag.
    pub fn new(namespaces: &[String], service_accounts: &[String]) -> anyhow::Result<Self> {
        let mut policy = AdmissionPolicy {
            gateway_namespaces: DEFAULT_GATEWAY_NAMESPACES.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        for namespace in namespaces {
            if namespace == "*" {
                policy.any_namespace = true;
                continue;
            }
            anyhow::ensure!(
                is_name(namespace),
                "--allow-namespace {namespace:?}: not a namespace name (lowercase letters, digits, '-' and '.'), or '*' for any"
            );
            policy.namespaces.insert(namespace.clone());
        }
        for entry in service_accounts {
            let parsed = entry.split_once('/').filter(|(ns, sa)| is_name(ns) && is_name(sa));
            let Some((namespace, service_account)) = parsed else {
                anyhow::bail!("--allow-service-account {entry:?}: expected NAMESPACE/SERVICE_ACCOUNT");
            };
            policy
                .service_accounts
                .insert((namespace.to_string(), service_account.to_string()));
        }
        Ok(policy)
    }

    /// True when no sidecar can register.
    pub fn admits_nothing(&self) -> bool {
        !self.any_namespace && self.namespaces.is_empty() && self.service_accounts.is_empty()
    }

    /// Whether a sidecar may claim `namespace`/`service_account`.
    pub fn admit(&self, namespace: &str, service_account: &str) -> Result<(), RegistryError> {
        let listed = self.any_namespace
            || self.namespaces.contains(namespace)
            || self
                .service_accounts
                .contains(&(namespace.to_string(), service_account.to_string()));
        if listed {
            Ok(())
        } else {
            Err(RegistryError::NotAllowed {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
            })
        }
    }

    /// Replaces the namespaces gateways and add-ons may take identities in (`--allow-gateway-namespace`).
    pub fn with_gateway_namespaces(mut self, namespaces: &[String]) -> anyhow::Result<Self> {
        if namespaces.is_empty() {
            return Ok(self);
        }
        for namespace in namespaces {
            anyhow::ensure!(
                is_name(namespace),
                "--allow-gateway-namespace {namespace:?}: not a namespace name (lowercase letters, digits, '-' and '.')"
            );
        }
        self.gateway_namespaces = namespaces.iter().cloned().collect();
        Ok(self)
    }

    /// Whether a gateway or add-on (already admitted by the role secret) may take an identity in
    /// `namespace`.
    pub fn admit_gateway(&self, namespace: &str) -> Result<(), RegistryError> {
        if self.gateway_namespaces.contains(namespace) {
            Ok(())
        } else {
            Err(RegistryError::GatewayNamespaceNotAllowed(namespace.to_string()))
        }
    }

    /// For the start-up log line.
    pub fn describe(&self) -> String {
        if self.any_namespace {
            return "any namespace".into();
        }
        let mut parts: Vec<String> = self.namespaces.iter().map(|ns| format!("namespace {ns}")).collect();
        parts.extend(self.service_accounts.iter().map(|(ns, sa)| format!("{ns}/{sa}")));
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A Kubernetes-style name (DNS subdomain): these end up in SPIFFE IDs
/// (`spiffe://<td>/ns/<namespace>/sa/<sa>`), where a `/` would forge path segments.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_policy(namespaces: &[&str], service_accounts: &[&str]) -> AdmissionPolicy {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AdmissionPolicy::new(&owned(namespaces), &owned(service_accounts)).unwrap()
    }

    #[test]
    fn admits_only_listed_namespaces_and_service_accounts() {
        let policy = mk_policy(&["demo"], &["payments/api"]);
        // (namespace, service account, admitted)
        let cases = [
            ("demo", "frontend", true),
            ("demo", "anything", true),
            ("payments", "api", true),
            ("payments", "worker", false),
            ("trellis", "ingress-gateway", false),
            ("kube-system", "default", false),
        ];
        for (namespace, service_account, admitted) in cases {
            assert_eq!(
                policy.admit(namespace, service_account).is_ok(),
                admitted,
                "{namespace}/{service_account}"
            );
        }
    }

    #[test]
    fn the_default_admits_nothing_and_star_admits_everything() {
        let none = AdmissionPolicy::default();
        assert!(none.admits_nothing());
        assert!(none.admit("default", "default").is_err());
        assert!(mk_policy(&["*"], &[]).admit("any", "one").is_ok());
    }

    #[test]
    fn refuses_malformed_entries() {
        let owned = |s: &str| vec![s.to_string()];
        assert!(AdmissionPolicy::new(&owned("Demo"), &[]).is_err());
        assert!(AdmissionPolicy::new(&owned("a/b"), &[]).is_err());
        assert!(AdmissionPolicy::new(&[], &owned("demo")).is_err());
        assert!(AdmissionPolicy::new(&[], &owned("demo/sa/x")).is_err());
        assert!(!is_name("demo/sa/frontend"));
        assert!(!is_name("-x") && !is_name("") && is_name("ingress-gateway"));
    }
}
