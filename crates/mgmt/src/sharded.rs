//! A map published with every translation and changed a few keys at a time: cut into shards
//! shared between versions, so a change copies the shards it touches, not the whole map (every
//! resource's status, in a mesh of 100,000 resources).

use std::collections::BTreeMap;
use std::sync::Arc;

const SHARDS: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct ShardedMap<V> {
    shards: Vec<Arc<BTreeMap<String, V>>>,
}

impl<V: Clone> Default for ShardedMap<V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| Arc::new(BTreeMap::new())).collect(),
        }
    }
}

fn shard_of(key: &str) -> usize {
    (trellis_base::stable_hash(key.as_bytes()) % SHARDS as u64) as usize
}

impl<V: Clone> ShardedMap<V> {
    pub fn from_map(map: &BTreeMap<String, V>) -> Self {
        let mut shards: Vec<BTreeMap<String, V>> = (0..SHARDS).map(|_| BTreeMap::new()).collect();
        for (key, value) in map {
            shards[shard_of(key)].insert(key.clone(), value.clone());
        }
        ShardedMap {
            shards: shards.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.shards[shard_of(key)].get(key)
    }

    /// This map with each key set to its value (`None` removes it), copying only the shards
    /// those keys fall in.
    pub fn with_changes<'k>(&self, changes: impl IntoIterator<Item = (&'k String, Option<&'k V>)>) -> Self
    where
        V: 'k,
    {
        let mut next = self.clone();
        for (key, value) in changes {
            let shard = Arc::make_mut(&mut next.shards[shard_of(key)]);
            match value {
                Some(value) => shard.insert(key.clone(), value.clone()),
                None => shard.remove(key),
            };
        }
        next
    }

    /// True when both are the very same shards (one carried over unchanged).
    pub fn is_same(&self, other: &Self) -> bool {
        self.shards.iter().zip(&other.shards).all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Every value, in no particular order, without copying.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// Every entry, by key.
    pub fn to_map(&self) -> BTreeMap<String, V> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_copies_only_the_shards_it_touches_and_reads_as_the_plain_map_would() {
        let plain: BTreeMap<String, u32> = (0..1000).map(|i| (format!("RouteTable/demo/t{i}"), i)).collect();
        let map = ShardedMap::from_map(&plain);
        assert_eq!(map.to_map(), plain);
        let (changed, gone) = ("RouteTable/demo/t7".to_string(), "RouteTable/demo/t8".to_string());
        let next = map.with_changes([(&changed, Some(&70)), (&gone, None)]);
        let mut expected = plain.clone();
        expected.insert(changed.clone(), 70);
        expected.remove(&gone);
        assert_eq!(next.to_map(), expected);
        assert_eq!((next.get(&changed), next.get(&gone)), (Some(&70), None));
        assert_eq!(map.get(&changed), Some(&7), "the map before is untouched");
        let shared = map
            .shards
            .iter()
            .zip(&next.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(shared >= SHARDS - 2, "{shared} of {SHARDS} shards shared");
    }
}
