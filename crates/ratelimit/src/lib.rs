//! Rate-limit domains and how a request's descriptor finds its limit. Shared by the translator
//! (from RateLimitServerConfig) and the rate limiter (which also reads envoyproxy/ratelimit files).
//!
//! Tree descriptors match like envoyproxy/ratelimit: the request's entries are walked down the
//! tree, each entry matching a node with the same key and value, or else one with the same key
//! and no value (then each value has its own counter); the limit is on the node the last entry
//! lands on. Set descriptors (Gloo's `setDescriptors`) match a request descriptor that starts
//! with the entry [`SET_DESCRIPTOR_KEY`] and holds all their entries in any order; the one with
//! the most entries wins.
//!
//! [`config`] reads the YAML files of envoyproxy/ratelimit into these domains. Pure: no I/O, no
//! async runtime; the rate limiter service (`trellis-rate-limiter`) counts in Redis around it.

pub mod config;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// First entry of a descriptor built from `setActions` (Gloo's convention).
pub const SET_DESCRIPTOR_KEY: (&str, &str) = ("generic_key", "solo.setDescriptor.uniqueValue");

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitDomain {
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptors: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_descriptors: Vec<SetDescriptor>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub descriptors: Vec<Descriptor>,
    /// Among several matching descriptors of one request, only those of the highest weight
    /// count, plus every `always_apply` one.
    #[serde(default)]
    pub weight: u32,
    #[serde(default)]
    pub always_apply: bool,
    /// Count and report, never refuse.
    #[serde(default)]
    pub shadow_mode: bool,
    /// Name of this node's limit, for `replaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_name: Option<String>,
    /// Named limits this one replaces when both match one request (envoyproxy/ratelimit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetDescriptor {
    /// (key, value); a `None` value matches any value, counted per value.
    pub entries: Vec<(String, Option<String>)>,
    pub limit: LimitSpec,
    #[serde(default)]
    pub always_apply: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitSpec {
    pub unit: Unit,
    pub requests_per_unit: u32,
    /// Matches, but is never counted or refused.
    #[serde(default)]
    pub unlimited: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Unit {
    #[default]
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

/// The limit one request descriptor resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub spec: LimitSpec,
    pub shadow_mode: bool,
    pub weight: u32,
    pub always_apply: bool,
    pub name: Option<String>,
    pub replaces: Vec<String>,
    /// The matched node's path, `key=value` per level (`|`-joined): part of the counter's key,
    /// so each value of a value-less key has its own counter.
    pub path: String,
}

impl RateLimitDomain {
    /// The limit for one request descriptor, if any.
    pub fn find(&self, entries: &[(String, String)]) -> Option<Limit> {
        if entries
            .first()
            .is_some_and(|(k, v)| (k.as_str(), v.as_str()) == SET_DESCRIPTOR_KEY)
        {
            return self.find_set(&entries[1..]);
        }
        let mut level = &self.descriptors;
        let mut path = Vec::new();
        let mut node = None;
        for (key, value) in entries {
            let matched = level
                .iter()
                .find(|d| d.key == *key && d.value.as_deref() == Some(value))
                .or_else(|| level.iter().find(|d| d.key == *key && d.value.is_none()))?;
            path.push(entry(key, value));
            level = &matched.descriptors;
            node = Some(matched);
        }
        let node = node?;
        Some(Limit {
            spec: node.limit?,
            shadow_mode: node.shadow_mode,
            weight: node.weight,
            always_apply: node.always_apply,
            name: node.limit_name.clone(),
            replaces: node.replaces.clone(),
            path: path.join("|"),
        })
    }

    fn find_set(&self, entries: &[(String, String)]) -> Option<Limit> {
        let matches = |set: &&SetDescriptor| {
            set.entries.iter().all(|(key, value)| {
                entries
                    .iter()
                    .any(|(k, v)| k == key && value.as_ref().is_none_or(|value| value == v))
            })
        };
        // The most specific set wins; ties go to the first listed.
        let (index, set) = self
            .set_descriptors
            .iter()
            .enumerate()
            .filter(|(_, set)| matches(set))
            .min_by_key(|(index, set)| (std::cmp::Reverse(set.entries.len()), *index))?;
        let mut path: Vec<String> = set
            .entries
            .iter()
            .map(|(key, _)| {
                let value = entries
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                entry(key, value)
            })
            .collect();
        path.insert(0, format!("set{index}"));
        Some(Limit {
            spec: set.limit,
            shadow_mode: false,
            weight: 0,
            always_apply: set.always_apply,
            name: None,
            replaces: Vec::new(),
            path: path.join("|"),
        })
    }
}

/// One `key=value` step of a counter's path, with `%`, `|` and `=` escaped: the values come
/// from requests (headers), and a crafted one must not spell another descriptor's path and
/// share its counter.
fn entry(key: &str, value: &str) -> String {
    let escape = |text: &str| text.replace('%', "%25").replace('|', "%7C").replace('=', "%3D");
    format!("{}={}", escape(key), escape(value))
}

/// Settles one request's matched limits: a limit named in another's `replaces` drops out; then
/// the highest weight wins and `always_apply` limits always count. Dropped entries become `None`.
pub fn settle(limits: &mut [Option<Limit>]) {
    let replaced: Vec<String> = limits.iter().flatten().flat_map(|l| l.replaces.clone()).collect();
    for slot in limits.iter_mut() {
        if slot
            .as_ref()
            .and_then(|l| l.name.as_ref())
            .is_some_and(|name| replaced.contains(name))
        {
            *slot = None;
        }
    }
    apply_weights(limits);
}

fn apply_weights(limits: &mut [Option<Limit>]) {
    let Some(top) = limits
        .iter()
        .flatten()
        .filter(|l| !l.always_apply)
        .map(|l| l.weight)
        .max()
    else {
        return;
    };
    for slot in limits.iter_mut() {
        if slot.as_ref().is_some_and(|l| !l.always_apply && l.weight < top) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_replaces_the_named_one() {
        let mut limits = vec![
            Some(Limit {
                spec: LimitSpec::default(),
                shadow_mode: false,
                weight: 0,
                always_apply: false,
                name: Some("general".into()),
                replaces: Vec::new(),
                path: "a".into(),
            }),
            Some(Limit {
                spec: LimitSpec::default(),
                shadow_mode: false,
                weight: 0,
                always_apply: false,
                name: None,
                replaces: vec!["general".into()],
                path: "b".into(),
            }),
        ];
        settle(&mut limits);
        assert!(limits[0].is_none() && limits[1].is_some());
    }

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn limit(unit: Unit, requests_per_unit: u32) -> Option<LimitSpec> {
        Some(LimitSpec {
            unit,
            requests_per_unit,
            unlimited: false,
        })
    }

    fn domain() -> RateLimitDomain {
        RateLimitDomain {
            domain: "demo.limits".into(),
            descriptors: vec![
                Descriptor {
                    key: "api_key".into(),
                    limit: limit(Unit::Minute, 20),
                    ..Default::default()
                },
                Descriptor {
                    key: "generic_key".into(),
                    value: Some("vip".into()),
                    limit: limit(Unit::Second, 1000),
                    weight: 1,
                    ..Default::default()
                },
                Descriptor {
                    key: "remote_address".into(),
                    descriptors: vec![Descriptor {
                        key: "path".into(),
                        value: Some("/login".into()),
                        limit: limit(Unit::Second, 2),
                        always_apply: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            set_descriptors: vec![
                SetDescriptor {
                    entries: vec![("user".into(), None)],
                    limit: LimitSpec {
                        unit: Unit::Minute,
                        requests_per_unit: 5,
                        unlimited: false,
                    },
                    always_apply: false,
                },
                SetDescriptor {
                    entries: vec![("user".into(), None), ("plan".into(), Some("free".into()))],
                    limit: LimitSpec {
                        unit: Unit::Minute,
                        requests_per_unit: 1,
                        unlimited: false,
                    },
                    always_apply: false,
                },
            ],
        }
    }

    #[test]
    fn request_values_cannot_spell_another_counter() {
        let domain = domain();
        let crafted = domain
            .find(&entries(&[("remote_address", "10.0.0.1|path=/login")]))
            .map(|l| l.path);
        assert_eq!(crafted, None, "no limit on the parent");
        let a = domain.find(&entries(&[("api_key", "a|x=y")])).unwrap();
        assert_eq!(a.path, "api_key=a%7Cx%3Dy");
    }

    #[test]
    fn tree_descriptors_match_by_value_then_by_key() {
        let domain = domain();
        let a = domain.find(&entries(&[("api_key", "a")])).unwrap();
        assert_eq!(
            (a.spec.requests_per_unit, a.spec.unit, a.path.as_str()),
            (20, Unit::Minute, "api_key=a")
        );
        assert_ne!(domain.find(&entries(&[("api_key", "b")])).unwrap().path, a.path);
        assert!(domain.find(&entries(&[("generic_key", "other")])).is_none());
        assert!(
            domain.find(&entries(&[("remote_address", "10.0.0.1")])).is_none(),
            "no limit on the parent"
        );
        let login = domain
            .find(&entries(&[("remote_address", "10.0.0.1"), ("path", "/login")]))
            .unwrap();
        assert_eq!(login.path, "remote_address=10.0.0.1|path=/login");
    }

    #[test]
    fn set_descriptors_match_in_any_order_most_specific_first() {
        let domain = domain();
        let set = |pairs: &[(&str, &str)]| {
            let mut all = entries(&[SET_DESCRIPTOR_KEY]);
            all.extend(entries(pairs));
            domain.find(&all)
        };
        assert_eq!(set(&[("user", "alice")]).unwrap().spec.requests_per_unit, 5);
        let free = set(&[("plan", "free"), ("user", "alice")]).unwrap();
        assert_eq!(free.spec.requests_per_unit, 1);
        assert_eq!(free.path, "set1|user=alice|plan=free");
        assert_eq!(
            set(&[("plan", "paid"), ("user", "alice")])
                .unwrap()
                .spec
                .requests_per_unit,
            5
        );
        assert!(set(&[("plan", "free")]).is_none());
        // Without the marker entry, set descriptors are not consulted.
        assert!(domain.find(&entries(&[("user", "alice")])).is_none());
    }

    #[test]
    fn weights_keep_the_heaviest_and_always_apply() {
        let domain = domain();
        let mut limits = vec![
            domain.find(&entries(&[("api_key", "a")])),
            domain.find(&entries(&[("generic_key", "vip")])),
            domain.find(&entries(&[("remote_address", "1.2.3.4"), ("path", "/login")])),
        ];
        settle(&mut limits);
        assert!(limits[0].is_none(), "weight 0 loses to weight 1");
        assert!(limits[1].is_some());
        assert!(limits[2].is_some(), "always_apply");
    }
}
