//! Rate-limit configuration in the YAML format of envoyproxy/ratelimit, so users of that service
//! keep their files: `domain`, nested `descriptors` (`key`, optional `value`, `rate_limit`
//! {`unit`, `requests_per_unit`}, `unlimited`, `shadow_mode`, `name`, `replaces`).
//!
//! Matching follows that service: the request's descriptor entries are walked down the tree, an
//! entry matching a node with the same key and value, or else one with the same key and no
//! value; the limit is the one on the node the last entry lands on.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

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

/// A limit a descriptor resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub requests_per_unit: u32,
    pub unit: Unit,
    pub unlimited: bool,
    pub shadow_mode: bool,
    /// Path of the matched node, `key=value` (or `key`) per level: part of the counter's key.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    pub fn parse(text: &str) -> Option<Unit> {
        match text.to_ascii_lowercase().as_str() {
            "second" => Some(Unit::Second),
            "minute" => Some(Unit::Minute),
            "hour" => Some(Unit::Hour),
            "day" => Some(Unit::Day),
            _ => None,
        }
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86400,
        })
    }
}

/// All domains' configs, by domain.
#[derive(Debug, Clone, Default)]
pub struct RateLimitConfigs {
    domains: BTreeMap<String, DomainConfig>,
}

impl RateLimitConfigs {
    /// Parses every file; names the file and field of the first problem.
    pub fn parse(files: &[(String, String)]) -> anyhow::Result<Self> {
        let mut domains = BTreeMap::new();
        for (name, text) in files {
            let config: DomainConfig = yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            check(&config.descriptors, name, &config.domain)?;
            if domains.insert(config.domain.clone(), config).is_some() {
                anyhow::bail!("{name}: domain defined twice");
            }
        }
        Ok(RateLimitConfigs { domains })
    }

    /// The limit for one descriptor (its entries as key/value pairs), if any.
    pub fn find(&self, domain: &str, entries: &[(String, String)]) -> Option<Limit> {
        let mut level = &self.domains.get(domain)?.descriptors;
        let mut path = Vec::new();
        let mut node = None;
        for (key, value) in entries {
            let matched = level
                .iter()
                .find(|d| d.key == *key && d.value.as_deref() == Some(value))
                .or_else(|| level.iter().find(|d| d.key == *key && d.value.is_none()))?;
            path.push(match &matched.value {
                Some(v) => format!("{key}={v}"),
                // A key without a value counts each value separately.
                None => format!("{key}={value}"),
            });
            level = &matched.descriptors;
            node = Some(matched);
        }
        let node = node?;
        let limit = node.rate_limit.as_ref()?;
        Some(Limit {
            requests_per_unit: limit.requests_per_unit,
            unit: Unit::parse(&limit.unit).unwrap_or(Unit::Second),
            unlimited: limit.unlimited,
            shadow_mode: node.shadow_mode,
            path: path.join("|"),
        })
    }
}

fn check(descriptors: &[DescriptorConfig], file: &str, path: &str) -> anyhow::Result<()> {
    for descriptor in descriptors {
        let here = format!("{path}.{}", descriptor.key);
        if let Some(limit) = &descriptor.rate_limit
            && !limit.unlimited
        {
            anyhow::ensure!(
                Unit::parse(&limit.unit).is_some(),
                "{file}: {here}: unit {:?} is not one of second, minute, hour, day",
                limit.unit
            );
            anyhow::ensure!(
                limit.requests_per_unit > 0,
                "{file}: {here}: requests_per_unit must be above 0 (or use unlimited: true)"
            );
        }
        check(&descriptor.descriptors, file, &here)?;
    }
    Ok(())
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
            (key_a.requests_per_unit, key_a.unit, key_a.path.as_str()),
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
