//! Rate-limit configuration in the YAML format of envoyproxy/ratelimit, so users of that service
//! keep their files: `domain`, nested `descriptors` (`key`, optional `value`, `rate_limit`
//! {`unit`, `requests_per_unit`}, `unlimited`, `shadow_mode`, `name`, `replaces`).
//!
//! Matching follows that service: the request's descriptor entries are walked down the tree, an
//! entry matching a node with the same key and value, or else one with the same key and no
//! value; the limit is the one on the node the last entry lands on.

use crate::{Descriptor, Limit, LimitSpec, RateLimitDomain, Unit};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    pub domain: String,
    #[serde(default)]
    pub descriptors: Vec<DescriptorConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorConfig {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub descriptors: Vec<DescriptorConfig>,
    #[serde(default)]
    pub shadow_mode: bool,
    #[serde(default)]
    pub detailed_metric: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub requests_per_unit: u32,
    #[serde(default)]
    pub unlimited: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub replaces: Vec<Replaces>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replaces {
    pub name: String,
}

/// All domains' limits, by domain: from files, from the agent (the RateLimitServerConfigs of the
/// cluster's policies), or both.
#[derive(Debug, Clone, Default)]
pub struct RateLimitConfigs {
    domains: BTreeMap<String, RateLimitDomain>,
}

impl RateLimitConfigs {
    /// Parses every file; names the file and field of the first problem.
    pub fn parse(files: &[(String, String)]) -> anyhow::Result<Self> {
        let mut domains = BTreeMap::new();
        for (name, text) in files {
            let config: DomainConfig = yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let domain = RateLimitDomain {
                domain: config.domain.clone(),
                descriptors: convert(&config.descriptors, name, &config.domain)?,
                set_descriptors: Vec::new(),
            };
            if domains.insert(config.domain.clone(), domain).is_some() {
                anyhow::bail!("{name}: domain {:?} defined twice", config.domain);
            }
        }
        Ok(RateLimitConfigs { domains })
    }

    /// These configs with `more` added; on a domain in both, this one's (the files') wins.
    pub fn merged(&self, more: Vec<RateLimitDomain>) -> RateLimitConfigs {
        let mut domains: BTreeMap<String, RateLimitDomain> = more.into_iter().map(|d| (d.domain.clone(), d)).collect();
        for (name, domain) in &self.domains {
            if domains.insert(name.clone(), domain.clone()).is_some() {
                tracing::warn!(
                    domain = name,
                    "domain defined by a config file and by a policy: the file wins"
                );
            }
        }
        RateLimitConfigs { domains }
    }

    /// The limit for one descriptor (its entries as key/value pairs), if any.
    pub fn find(&self, domain: &str, entries: &[(String, String)]) -> Option<Limit> {
        self.domains.get(domain)?.find(entries)
    }

    pub fn domains(&self) -> usize {
        self.domains.len()
    }
}

fn convert(descriptors: &[DescriptorConfig], file: &str, path: &str) -> anyhow::Result<Vec<Descriptor>> {
    descriptors
        .iter()
        .map(|descriptor| {
            let here = format!("{path}.{}", descriptor.key);
            let limit = match &descriptor.rate_limit {
                None => None,
                Some(limit) if limit.unlimited => Some(LimitSpec {
                    unit: Unit::Second,
                    requests_per_unit: 0,
                    unlimited: true,
                }),
                Some(limit) => {
                    let unit = Unit::parse(&limit.unit).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{file}: {here}: unit {:?} is not one of second, minute, hour, day",
                            limit.unit
                        )
                    })?;
                    anyhow::ensure!(
                        limit.requests_per_unit > 0,
                        "{file}: {here}: requests_per_unit must be above 0 (or use unlimited: true)"
                    );
                    Some(LimitSpec {
                        unit,
                        requests_per_unit: limit.requests_per_unit,
                        unlimited: false,
                    })
                }
            };
            Ok(Descriptor {
                key: descriptor.key.clone(),
                value: descriptor.value.clone(),
                limit,
                descriptors: convert(&descriptor.descriptors, file, &here)?,
                weight: 0,
                always_apply: false,
                shadow_mode: descriptor.shadow_mode,
                limit_name: descriptor.rate_limit.as_ref().and_then(|l| l.name.clone()),
                replaces: descriptor
                    .rate_limit
                    .iter()
                    .flat_map(|l| l.replaces.iter().map(|r| r.name.clone()))
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "
domain: mesh
descriptors:
  - key: api_key
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: generic_key
    value: vip
    rate_limit: {unlimited: true}
  - key: remote_address
    descriptors:
      - key: path
        value: /login
        rate_limit: {unit: second, requests_per_unit: 2}
        shadow_mode: true
";

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn finds_limits_like_envoyproxy_ratelimit() {
        let configs = RateLimitConfigs::parse(&[("limits.yaml".into(), CONFIG.into())]).unwrap();
        let key_a = configs.find("mesh", &entries(&[("api_key", "a")])).unwrap();
        assert_eq!(
            (key_a.spec.requests_per_unit, key_a.spec.unit, key_a.path.as_str()),
            (20, Unit::Minute, "api_key=a")
        );
        // Each value of a value-less key has its own counter.
        assert_ne!(
            configs.find("mesh", &entries(&[("api_key", "b")])).unwrap().path,
            key_a.path
        );
        assert!(
            configs
                .find("mesh", &entries(&[("generic_key", "vip")]))
                .unwrap()
                .spec
                .unlimited
        );
        assert!(configs.find("mesh", &entries(&[("generic_key", "other")])).is_none());
        let login = configs
            .find("mesh", &entries(&[("remote_address", "10.0.0.1"), ("path", "/login")]))
            .unwrap();
        assert!(login.shadow_mode);
        assert_eq!(login.path, "remote_address=10.0.0.1|path=/login");
        assert!(
            configs
                .find("mesh", &entries(&[("remote_address", "10.0.0.1")]))
                .is_none(),
            "no limit on the parent node"
        );
        assert!(configs.find("other", &entries(&[("api_key", "a")])).is_none());
    }

    #[test]
    fn a_named_limit_is_replaced_by_the_one_that_names_it() {
        let text = "
domain: mesh
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 10, name: per-user}
  - key: plan
    value: gold
    rate_limit: {unit: minute, requests_per_unit: 1000, replaces: [{name: per-user}]}
";
        let configs = RateLimitConfigs::parse(&[("replaces.yaml".into(), text.into())]).unwrap();
        let mut limits = vec![
            configs.find("mesh", &entries(&[("user", "alice")])),
            configs.find("mesh", &entries(&[("plan", "gold")])),
        ];
        crate::settle(&mut limits);
        assert!(limits[0].is_none(), "gold replaces the per-user limit");
        assert_eq!(limits[1].as_ref().unwrap().spec.requests_per_unit, 1000);
        let mut silver = vec![
            configs.find("mesh", &entries(&[("user", "alice")])),
            configs.find("mesh", &entries(&[("plan", "silver")])),
        ];
        crate::settle(&mut silver);
        assert!(silver[0].is_some(), "nothing replaces it without gold");
    }

    #[test]
    fn bad_files_name_the_file_and_descriptor() {
        let bad = "domain: mesh\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n";
        let error = RateLimitConfigs::parse(&[("bad.yaml".into(), bad.into())])
            .unwrap_err()
            .to_string();
        assert!(error.contains("bad.yaml: mesh.a: unit \"fortnight\""), "{error}");
        let typo = "domain: mesh\ndescriptor: []\n";
        assert!(
            RateLimitConfigs::parse(&[("typo.yaml".into(), typo.into())])
                .unwrap_err()
                .to_string()
                .contains("typo.yaml")
        );
    }
}
