//! A cluster's config cut into sections, so that a change moves only the sections it touches.
//!
//! Each upstream, virtual host and gateway upstream is its own section, keyed by its name
//! (unique and sorted within a config, as the IR promises); the inbound policies, whose order is
//! their precedence, travel as one; everything else rides in `base`. A section's version is the
//! hash of its encoding, and the config's version is the hash of all section names and versions:
//! both sides compute them the same way, so an agent restarted from its cache can tell the
//! management server what it holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_model::ClusterConfig;
use trellis_model::ir::{Upstream, VirtualHost};
use trellis_model::policy::InboundPolicy;

mod cache;

pub use cache::EncodeCache;

const UPSTREAM: &str = "upstream/";
const VIRTUAL_HOST: &str = "vhost/";
const GATEWAY_UPSTREAM: &str = "gateway/";
const BASE: &str = "base";
const INBOUND_POLICIES: &str = "inbound-policies";

/// One encoded section: what the relay sends and the agent keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSection {
    pub version: u64,
    /// JSON of the section's value.
    pub payload: Arc<[u8]>,
}

impl EncodedSection {
    pub fn encode<T: serde::Serialize>(value: &T) -> Self {
        let payload: Arc<[u8]> = serde_json::to_vec(value).expect("IR serializes").into();
        EncodedSection {
            version: trellis_base::stable_hash(&payload),
            payload,
        }
    }
}

/// How many shards the sections of a config are spread over (by a hash of their name). A change
/// copies only the shards it touches, and two versions of a config are compared shard by shard,
/// skipping shards they share: cost follows the change, not the config's size. Many small shards
/// also let clusters share more: a cluster's own sections (its local upstreams, its gateway)
/// make their shards its own, and with ten thousand sections over 1024 shards each such shard
/// holds about ten others, where over 128 it held about eighty.
const SHARDS: usize = 1024;

/// A whole config as sections by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    shards: Vec<Arc<Shard>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Shard {
    entries: BTreeMap<String, EncodedSection>,
    /// Hash of the names and versions of `entries`.
    digest: u64,
}

impl Shard {
    /// The one empty shard: a small config leaves most shards empty, and they cost nothing.
    fn empty() -> Arc<Shard> {
        static EMPTY: std::sync::OnceLock<Arc<Shard>> = std::sync::OnceLock::new();
        EMPTY.get_or_init(|| Arc::new(Shard::new(BTreeMap::new()))).clone()
    }

    /// This shard with `removes` taken out, then `upserts` put in.
    fn changed(&self, upserts: Vec<(String, EncodedSection)>, removes: &[String]) -> Shard {
        let mut entries = self.entries.clone();
        for name in removes {
            entries.remove(name);
        }
        entries.extend(upserts);
        Shard::new(entries)
    }

    fn new(entries: BTreeMap<String, EncodedSection>) -> Self {
        let mut bytes = Vec::with_capacity(entries.len() * 48);
        for (name, section) in &entries {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&section.version.to_be_bytes());
        }
        Shard {
            digest: trellis_base::stable_hash(&bytes),
            entries,
        }
    }
}

fn shard_of(name: &str) -> usize {
    (trellis_base::stable_hash(name.as_bytes()) % SHARDS as u64) as usize
}

impl Default for Sections {
    fn default() -> Self {
        Sections::from_map(BTreeMap::new(), None)
    }
}

impl Sections {
    /// Spreads `all` over the shards, keeping the shards of `previous` whose content is the same.
    pub fn from_map(all: BTreeMap<String, EncodedSection>, previous: Option<&Sections>) -> Self {
        Sections::spread(all, previous, None)
    }

    /// As `from_map`, sharing new shards with equal ones `cache` has made for other configs.
    fn spread(
        all: BTreeMap<String, EncodedSection>,
        previous: Option<&Sections>,
        mut cache: Option<&mut EncodeCache>,
    ) -> Self {
        let mut split: Vec<BTreeMap<String, EncodedSection>> = vec![BTreeMap::new(); SHARDS];
        for (name, section) in all {
            split[shard_of(&name)].insert(name, section);
        }
        let shards = split
            .into_iter()
            .enumerate()
            .map(|(i, entries)| {
                let shard = Shard::new(entries);
                match (previous.map(|p| &p.shards[i]), cache.as_deref_mut()) {
                    (Some(old), _) if old.digest == shard.digest && old.entries.len() == shard.entries.len() => {
                        old.clone()
                    }
                    _ if shard.entries.is_empty() => Shard::empty(),
                    (_, Some(cache)) => cache.intern(shard),
                    (_, None) => Arc::new(shard),
                }
            })
            .collect();
        Sections { shards }
    }

    /// The section name of the upstream called `name`.
    pub fn upstream_key(name: &str) -> String {
        format!("{UPSTREAM}{name}")
    }

    /// The section name of the virtual host called `name`.
    pub fn virtual_host_key(name: &str) -> String {
        format!("{VIRTUAL_HOST}{name}")
    }

    /// The section name of the gateway upstream called `name`.
    pub fn gateway_upstream_key(name: &str) -> String {
        format!("{GATEWAY_UPSTREAM}{name}")
    }

    pub fn get(&self, name: &str) -> Option<&EncodedSection> {
        self.shards[shard_of(name)].entries.get(name)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every section, by name.
    pub fn to_map(&self) -> BTreeMap<String, EncodedSection> {
        self.shards
            .iter()
            .flat_map(|s| s.entries.iter().map(|(n, e)| (n.clone(), e.clone())))
            .collect()
    }

    /// These sections with `upserts` put in and `removes` taken out, copying only the shards
    /// touched.
    pub fn with_changes(&self, upserts: Vec<(String, EncodedSection)>, removes: &[String]) -> Sections {
        self.changed(upserts, removes, None)
    }

    /// As `with_changes`; with a `cache`, a shard changed the same way for another config is
    /// that config's new shard, not a copy.
    fn changed(
        &self,
        upserts: Vec<(String, EncodedSection)>,
        removes: &[String],
        mut cache: Option<&mut EncodeCache>,
    ) -> Sections {
        type Change = (Vec<(String, EncodedSection)>, Vec<String>);
        let mut touched: BTreeMap<usize, Change> = BTreeMap::new();
        for name in removes {
            touched.entry(shard_of(name)).or_default().1.push(name.clone());
        }
        for (name, section) in upserts {
            touched.entry(shard_of(&name)).or_default().0.push((name, section));
        }
        let mut shards = self.shards.clone();
        for (i, (upserts, removes)) in touched {
            shards[i] = match cache.as_deref_mut() {
                Some(cache) => cache.change(&self.shards[i], upserts, removes),
                None => Arc::new(self.shards[i].changed(upserts, &removes)),
            };
        }
        Sections { shards }
    }

    /// Encodes `config` whole. A change to a config already encoded goes through
    /// `encode_changes`, which encodes only what differs.
    pub fn encode(config: &ClusterConfig) -> Sections {
        Sections::encode_shared(config, &mut EncodeCache::default())
    }

    /// As `encode`, also reusing what `cache` holds for upstreams and virtual hosts this config
    /// shares (the same `Arc`) with configs encoded before it: a mesh's clusters mostly hold the
    /// same ones, encoded once for all of them.
    pub fn encode_shared(config: &ClusterConfig, cache: &mut EncodeCache) -> Sections {
        let mut sections = BTreeMap::new();
        sections.insert(BASE.to_string(), EncodedSection::encode(&base_of(config)));
        if !config.inbound_policies.is_empty() {
            sections.insert(
                INBOUND_POLICIES.to_string(),
                EncodedSection::encode(&config.inbound_policies),
            );
        }
        let upstream_address = |u: &Arc<Upstream>| Arc::as_ptr(u) as usize;
        let host_address = |h: &Arc<VirtualHost>| Arc::as_ptr(h) as usize;
        encode_list(
            &mut sections,
            UPSTREAM,
            &config.upstreams,
            |u| &u.name,
            Some((&mut *cache, upstream_address)),
        );
        encode_list(
            &mut sections,
            VIRTUAL_HOST,
            &config.virtual_hosts,
            |h| &h.name,
            Some((&mut *cache, host_address)),
        );
        encode_list(
            &mut sections,
            GATEWAY_UPSTREAM,
            &config.gateway_upstreams,
            |u| &u.name,
            None,
        );
        Sections::spread(sections, None, Some(cache))
    }

    /// The sections of `config`, made from `old_sections` (those of `old`): only what differs
    /// from `old` is encoded, and what is the same `Arc` is skipped unread, so a change to one
    /// item of a large config costs a walk of pointers and one encoding.
    pub fn encode_changes(
        config: &ClusterConfig,
        old: &ClusterConfig,
        old_sections: &Sections,
        cache: &mut EncodeCache,
    ) -> Sections {
        let mut upserts = Vec::new();
        let mut removes = Vec::new();
        let base = base_of(config);
        if base != base_of(old) {
            upserts.push((BASE.to_string(), EncodedSection::encode(&base)));
        }
        if config.inbound_policies != old.inbound_policies {
            if config.inbound_policies.is_empty() {
                removes.push(INBOUND_POLICIES.to_string());
            } else {
                upserts.push((
                    INBOUND_POLICIES.to_string(),
                    EncodedSection::encode(&config.inbound_policies),
                ));
            }
        }
        let upstream_address = |u: &Arc<Upstream>| Arc::as_ptr(u) as usize;
        let host_address = |h: &Arc<VirtualHost>| Arc::as_ptr(h) as usize;
        let changes = (&mut upserts, &mut removes);
        diff_list(
            changes,
            UPSTREAM,
            &config.upstreams,
            &old.upstreams,
            |u| &u.name,
            Some((&mut *cache, upstream_address)),
        );
        let changes = (&mut upserts, &mut removes);
        diff_list(
            changes,
            VIRTUAL_HOST,
            &config.virtual_hosts,
            &old.virtual_hosts,
            |h| &h.name,
            Some((&mut *cache, host_address)),
        );
        let changes = (&mut upserts, &mut removes);
        diff_list(
            changes,
            GATEWAY_UPSTREAM,
            &config.gateway_upstreams,
            &old.gateway_upstreams,
            |u| &u.name,
            None,
        );
        old_sections.changed(upserts, &removes, Some(cache))
    }

    /// The version of the whole config.
    pub fn version(&self) -> String {
        let bytes: Vec<u8> = self.shards.iter().flat_map(|s| s.digest.to_be_bytes()).collect();
        format!("{:016x}", trellis_base::stable_hash(&bytes))
    }

    /// Rebuilds the config from its sections; the error names the section that does not parse.
    pub fn decode(&self) -> Result<ClusterConfig, String> {
        let Some(base) = self.get(BASE) else {
            return Err("the config has no base section".to_string());
        };
        let mut config: ClusterConfig = parse(BASE, base)?;
        if let Some(policies) = self.get(INBOUND_POLICIES) {
            config.inbound_policies = parse::<Vec<InboundPolicy>>(INBOUND_POLICIES, policies)?;
        }
        for (name, section) in &self.to_map() {
            if let Some(key) = name.strip_prefix(UPSTREAM) {
                config
                    .upstreams
                    .push(Arc::new(parse_named::<Upstream>(name, section, key, |u| &u.name)?));
            } else if let Some(key) = name.strip_prefix(VIRTUAL_HOST) {
                config
                    .virtual_hosts
                    .push(Arc::new(parse_named::<VirtualHost>(name, section, key, |h| &h.name)?));
            } else if let Some(key) = name.strip_prefix(GATEWAY_UPSTREAM) {
                config
                    .gateway_upstreams
                    .push(parse_named::<Upstream>(name, section, key, |u| &u.name)?);
            } else if name != BASE && name != INBOUND_POLICIES {
                return Err(format!("unknown config section {name:?}"));
            }
        }
        Ok(config)
    }

    /// Applies a change to `config`, the decoding of the sections before it: drops `removed`
    /// and decodes only `changed` (both section names). Same result as `decode`, in time
    /// proportional to the change.
    pub fn patch(
        &self,
        mut config: ClusterConfig,
        removed: &[String],
        changed: &[String],
    ) -> Result<ClusterConfig, String> {
        for name in removed {
            if let Some(key) = name.strip_prefix(UPSTREAM) {
                remove_named(&mut config.upstreams, key, |u| &u.name);
            } else if let Some(key) = name.strip_prefix(VIRTUAL_HOST) {
                remove_named(&mut config.virtual_hosts, key, |h| &h.name);
            } else if let Some(key) = name.strip_prefix(GATEWAY_UPSTREAM) {
                remove_named(&mut config.gateway_upstreams, key, |u| &u.name);
            } else if name == INBOUND_POLICIES {
                config.inbound_policies.clear();
            }
        }
        for name in changed {
            let Some(section) = self.get(name) else {
                continue;
            };
            if let Some(key) = name.strip_prefix(UPSTREAM) {
                let value = parse_named(name, section, key, |u: &Upstream| &u.name)?;
                upsert_named(&mut config.upstreams, Arc::new(value), |u| &u.name);
            } else if let Some(key) = name.strip_prefix(VIRTUAL_HOST) {
                let value = parse_named(name, section, key, |h: &VirtualHost| &h.name)?;
                upsert_named(&mut config.virtual_hosts, Arc::new(value), |h| &h.name);
            } else if let Some(key) = name.strip_prefix(GATEWAY_UPSTREAM) {
                let value = parse_named(name, section, key, |u: &Upstream| &u.name)?;
                upsert_named(&mut config.gateway_upstreams, value, |u| &u.name);
            } else if name == INBOUND_POLICIES {
                config.inbound_policies = parse(name, section)?;
            } else if name == BASE {
                let base: ClusterConfig = parse(name, section)?;
                config = ClusterConfig {
                    upstreams: config.upstreams,
                    virtual_hosts: config.virtual_hosts,
                    gateway_upstreams: config.gateway_upstreams,
                    inbound_policies: config.inbound_policies,
                    ..base
                };
            } else {
                return Err(format!("unknown config section {name:?}"));
            }
        }
        Ok(config)
    }

    /// What turns `held` into `self`: the sections to send and the names to drop. Shards the
    /// two share are skipped unread.
    pub fn delta_from(&self, held: Option<&Sections>) -> (Vec<(&str, &EncodedSection)>, Vec<String>) {
        let (mut upserts, mut removes) = (Vec::new(), Vec::new());
        for (i, shard) in self.shards.iter().enumerate() {
            let old = held.map(|h| &h.shards[i]);
            if old.is_some_and(|old| Arc::ptr_eq(old, shard) || old.digest == shard.digest) {
                continue;
            }
            let empty = BTreeMap::new();
            let old_entries = old.map(|o| &o.entries).unwrap_or(&empty);
            for (name, section) in &shard.entries {
                if old_entries.get(name).map(|o| o.version) != Some(section.version) {
                    upserts.push((name.as_str(), section));
                }
            }
            removes.extend(old_entries.keys().filter(|n| !shard.entries.contains_key(*n)).cloned());
        }
        (upserts, removes)
    }
}

/// The config without its sectioned lists.
fn base_of(config: &ClusterConfig) -> ClusterConfig {
    ClusterConfig {
        cluster: config.cluster.clone(),
        trust_domain: config.trust_domain.clone(),
        upstreams: Vec::new(),
        virtual_hosts: Vec::new(),
        gateway_upstreams: Vec::new(),
        inbound_policies: Vec::new(),
        ingress_gateways: config.ingress_gateways.clone(),
        namespace_workspaces: config.namespace_workspaces.clone(),
        addon_servers: config.addon_servers.clone(),
        inbound_routes: config.inbound_routes.clone(),
        access_logs: config.access_logs.clone(),
        addons: config.addons.clone(),
    }
}

type Shared<'a, T> = Option<(&'a mut EncodeCache, fn(&T) -> usize)>;

fn encode_list<T: serde::Serialize>(
    sections: &mut BTreeMap<String, EncodedSection>,
    prefix: &str,
    items: &[T],
    name: fn(&T) -> &String,
    mut shared: Shared<'_, T>,
) {
    for item in items {
        sections.insert(format!("{prefix}{}", name(item)), encode_item(item, &mut shared));
    }
}

/// One item's encoding, taken from the cache when another config holds the same `Arc`.
fn encode_item<T: serde::Serialize>(item: &T, shared: &mut Shared<'_, T>) -> EncodedSection {
    match shared {
        Some((cache, address)) => cache.item(address(item), || EncodedSection::encode(item)),
        None => EncodedSection::encode(item),
    }
}

/// Adds to `changes` what turns the sorted list `old` into `new`. Equal items (by pointer first,
/// for `Arc`s) are skipped.
fn diff_list<T: serde::Serialize + PartialEq>(
    (upserts, removes): (&mut Vec<(String, EncodedSection)>, &mut Vec<String>),
    prefix: &str,
    new: &[T],
    old: &[T],
    name: fn(&T) -> &String,
    mut shared: Shared<'_, T>,
) {
    let mut encode = |item: &T| encode_item(item, &mut shared);
    let (mut i, mut j) = (0, 0);
    while i < new.len() || j < old.len() {
        match (new.get(i), old.get(j)) {
            (Some(n), Some(o)) if name(n) == name(o) => {
                if n != o {
                    upserts.push((format!("{prefix}{}", name(n)), encode(n)));
                }
                i += 1;
                j += 1;
            }
            (Some(n), Some(o)) if name(n) < name(o) => {
                upserts.push((format!("{prefix}{}", name(n)), encode(n)));
                i += 1;
            }
            (Some(n), None) => {
                upserts.push((format!("{prefix}{}", name(n)), encode(n)));
                i += 1;
            }
            (_, Some(o)) => {
                removes.push(format!("{prefix}{}", name(o)));
                j += 1;
            }
            (None, None) => break,
        }
    }
}

fn remove_named<T>(list: &mut Vec<T>, key: &str, name: fn(&T) -> &String) {
    if let Ok(i) = list.binary_search_by(|item| name(item).as_str().cmp(key)) {
        list.remove(i);
    }
}

fn upsert_named<T>(list: &mut Vec<T>, value: T, name: fn(&T) -> &String) {
    match list.binary_search_by(|item| name(item).cmp(name(&value))) {
        Ok(i) => list[i] = value,
        Err(i) => list.insert(i, value),
    }
}

fn parse<T: serde::de::DeserializeOwned>(name: &str, section: &EncodedSection) -> Result<T, String> {
    serde_json::from_slice(&section.payload).map_err(|error| format!("config section {name:?} does not parse: {error}"))
}

fn parse_named<T: serde::de::DeserializeOwned>(
    name: &str,
    section: &EncodedSection,
    key: &str,
    name_of: fn(&T) -> &String,
) -> Result<T, String> {
    let value: T = parse(name, section)?;
    if name_of(&value) != key {
        return Err(format!("config section {name:?} holds {:?}", name_of(&value)));
    }
    Ok(value)
}

#[cfg(test)]
pub(crate) mod tests;
