//! The per-proxy resource snapshot and its content-derived versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use trellis_base::Fnv1a;

// The type URLs are the Envoy generator's: one definition for what is produced and served.
// CDS and LDS are wildcard types (always sent in full); EDS, RDS and SDS are requested by name.
pub use trellis_envoy::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};

/// Push order: Envoy must see clusters (and their endpoints) before the
/// listeners and routes that reference them, or it serves 503s while warming.
pub(crate) const PUSH_ORDER: [&str; 5] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE];

/// One xDS resource with its content hash, computed once. Shared (`Arc`) by every proxy snapshot
/// that holds it: proxies that see the same outbound config hold one copy of it, not one each.
#[derive(Debug)]
pub struct Resource {
    pub name: String,
    pub any: Any,
    hash: u64,
    /// Hash of the name, so a type's version hashes two words per resource, not its name.
    name_hash: u64,
    /// A cluster whose endpoints come over EDS: Envoy activates it only once they arrive.
    pub(crate) eds_cluster: bool,
}

/// Equal when named alike with the same content hash: comparing two proxies' snapshots costs a
/// few words per resource, not their bytes.
impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        // Snapshots mostly share their resources: the same one is equal without reading its name.
        std::ptr::eq(self, other) || (self.hash == other.hash && self.name == other.name)
    }
}

impl Resource {
    /// The resource's own version, as delta xDS sends it.
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }

    pub fn new(name: String, any: Any) -> Arc<Self> {
        let mut h = Fnv1a::new();
        field(&mut h, any.type_url.as_bytes());
        field(&mut h, &any.value);
        let mut n = Fnv1a::new();
        field(&mut n, name.as_bytes());
        Arc::new(Resource {
            eds_cluster: any.type_url == CLUSTER_TYPE && discovery_type(&any.value) == Some(EDS),
            name_hash: n.finish(),
            name,
            any,
            hash: h.finish(),
        })
    }
}

/// All resources for one proxy, by type URL. Resources within a type are sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Shared lists, so a delta stream that sent a whole type holds the list itself, not a copy.
    pub resources: BTreeMap<String, Arc<[Arc<Resource>]>>,
    /// The trace of the change that built it (W3C `traceparent`): its pushes and their ACKs
    /// continue it. Not part of equality: equal resources are the same snapshot.
    pub traceparent: Option<String>,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.resources == other.resources
    }
}

impl Snapshot {
    /// Sets the resources of one type from (name, resource) pairs.
    pub fn insert(&mut self, type_url: &str, resources: Vec<(String, Any)>) {
        let shared = resources
            .into_iter()
            .map(|(name, any)| Resource::new(name, any))
            .collect();
        self.insert_shared(type_url, shared);
    }

    /// Sets the resources of one type, sharing them.
    pub fn insert_shared(&mut self, type_url: &str, mut resources: Vec<Arc<Resource>>) {
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        self.resources.insert(type_url.to_string(), resources.into());
    }

    /// Sets the resources of one type from a list its builder already sorted by name (a
    /// thousand proxies' snapshots are assembled per change: sorting each again is waste).
    pub fn insert_sorted(&mut self, type_url: &str, resources: Vec<Arc<Resource>>) {
        debug_assert!(resources.is_sorted_by(|a, b| a.name <= b.name), "{type_url} not sorted");
        self.resources.insert(type_url.to_string(), resources.into());
    }

    /// Stable content hash (FNV-1a 64, hex) of one type's resources.
    ///
    /// Derived from content rather than a counter so a control-plane restart
    /// that rebuilds identical config yields identical versions and Envoy's
    /// reconnect does not look like a change.
    pub fn version_of(&self, type_url: &str) -> String {
        content_version(self.of_type(type_url).iter())
    }

    /// The resources of one type; empty when the snapshot has none.
    pub fn of_type(&self, type_url: &str) -> &[Arc<Resource>] {
        self.resources.get(type_url).map(|list| &list[..]).unwrap_or(&[])
    }

    /// The list of one type itself, to share.
    pub(crate) fn shared_of_type(&self, type_url: &str) -> Option<&Arc<[Arc<Resource>]>> {
        self.resources.get(type_url)
    }
}

/// `Cluster.type` (field 2) of an EDS cluster.
const EDS: u64 = 3;

/// `Cluster.type` read from the encoded cluster without decoding the rest of it: the agent makes
/// thousands of clusters per change, and only this one field is wanted. `None` when the bytes
/// are not a well-formed message or do not set it (STATIC).
fn discovery_type(mut bytes: &[u8]) -> Option<u64> {
    let mut found = None;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        match key & 7 {
            0 => {
                let value = varint(&mut bytes)?;
                if key >> 3 == 2 {
                    found = Some(value);
                }
            }
            1 => bytes = bytes.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                bytes = bytes.get(len..)?;
            }
            5 => bytes = bytes.get(4..)?,
            _ => return None,
        }
    }
    found
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Whether Envoy subscribes to this type without naming resources.
pub(crate) fn is_wildcard(type_url: &str) -> bool {
    type_url == CLUSTER_TYPE || type_url == LISTENER_TYPE
}

/// Version of an arbitrary selection of resources, with the same hash as
/// [`Snapshot::version_of`] so a full selection has the type's version.
/// Each resource's content was hashed once when it was made, so a version costs a few bytes per
/// resource however large the resources are.
pub(crate) fn content_version<'a>(resources: impl Iterator<Item = &'a Arc<Resource>>) -> String {
    let mut h = Fnv1a::new();
    for resource in resources {
        // The name's hash was taken with a length prefix, which keeps ("ab","c") and ("a","bc")
        // from colliding.
        h.write(&resource.name_hash.to_le_bytes());
        h.write(&resource.hash.to_le_bytes());
    }
    format!("{:016x}", h.finish())
}

fn field(h: &mut Fnv1a, bytes: &[u8]) {
    h.write(&(bytes.len() as u64).to_le_bytes());
    h.write(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_any(v: &[u8]) -> Any {
        Any {
            type_url: CLUSTER_TYPE.into(),
            value: v.to_vec(),
        }
    }

    fn mk_snapshot(items: &[(&str, &[u8])]) -> Snapshot {
        let mut s = Snapshot::default();
        s.insert(
            CLUSTER_TYPE,
            items.iter().map(|(n, v)| (n.to_string(), mk_any(v))).collect(),
        );
        s
    }

    #[test]
    fn version_is_stable_for_equal_content() {
        let a = mk_snapshot(&[("a", b"1"), ("b", b"2")]);
        let b = mk_snapshot(&[("a", b"1"), ("b", b"2")]);
        assert_eq!(a.version_of(CLUSTER_TYPE), b.version_of(CLUSTER_TYPE));
        assert_eq!(a.version_of(CLUSTER_TYPE).len(), 16);
    }

    #[test]
    fn version_changes_with_content_name_or_boundaries() {
        let base = mk_snapshot(&[("a", b"1")]).version_of(CLUSTER_TYPE);
        assert_ne!(base, mk_snapshot(&[("a", b"2")]).version_of(CLUSTER_TYPE));
        assert_ne!(base, mk_snapshot(&[("b", b"1")]).version_of(CLUSTER_TYPE));
        assert_ne!(
            mk_snapshot(&[("ab", b"c")]).version_of(CLUSTER_TYPE),
            mk_snapshot(&[("a", b"bc")]).version_of(CLUSTER_TYPE)
        );
    }

    #[test]
    fn an_eds_cluster_is_told_from_its_encoding() {
        use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
        use prost::Message;
        let encoded = |discovery: cluster::DiscoveryType| {
            let cluster = Cluster {
                name: "outbound|80||a".into(),
                connect_timeout: Some(Default::default()),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
                ..Default::default()
            };
            Resource::new(
                cluster.name.clone(),
                Any {
                    type_url: CLUSTER_TYPE.into(),
                    value: cluster.encode_to_vec(),
                },
            )
        };
        assert!(encoded(cluster::DiscoveryType::Eds).eds_cluster);
        assert!(!encoded(cluster::DiscoveryType::StrictDns).eds_cluster);
        assert!(!encoded(cluster::DiscoveryType::Static).eds_cluster);
        assert!(!Resource::new("x".into(), mk_any(b"\xff\xff")).eds_cluster);
    }

    #[test]
    fn missing_type_has_the_empty_version() {
        let s = Snapshot::default();
        assert_eq!(s.version_of(LISTENER_TYPE), content_version(std::iter::empty()));
    }
}
