//! What one round of encoding shares between the clusters it encodes.
//!
//! A mesh's clusters see mostly the same config: the same virtual hosts, and the same view of
//! every service they do not run themselves. Encoded apart, a thousand clusters would hold a
//! thousand copies of each section and of each shard map. Here an item is encoded once however
//! many configs hold it (same `Arc`), a shard equal in content to one already made is that one,
//! and the same change to the same shard is made once: a thousand clusters cost about one
//! config plus what each has of its own.

use std::collections::HashMap;
use std::sync::Arc;

use super::{EncodedSection, Shard};

/// Valid for one round of encoding, while the configs and sections it was fed stay alive: item
/// addresses mean nothing once their item is dropped. Shards are held, never only addressed.
#[derive(Default)]
pub struct EncodeCache {
    /// Encodings of shared items, by the address of their `Arc`.
    items: HashMap<usize, EncodedSection>,
    /// Shards made this round, by digest (a digest can collide: equal entries decide).
    shards: HashMap<u64, Vec<Arc<Shard>>>,
    /// Changes made to shards this round: (old shard's address, digest of the change).
    changed: HashMap<(usize, u64), Vec<ShardChange>>,
}

/// One change made to one shard, kept whole so that a digest collision cannot pass for a hit.
struct ShardChange {
    /// Holds the old shard: its address stays its own while this entry lives.
    old: Arc<Shard>,
    upserts: Vec<(String, u64)>,
    removes: Vec<String>,
    new: Arc<Shard>,
}

impl EncodeCache {
    /// The encoding of the item at `address`, made by `encode` the first time.
    pub(super) fn item(&mut self, address: usize, encode: impl FnOnce() -> EncodedSection) -> EncodedSection {
        self.items.entry(address).or_insert_with(encode).clone()
    }

    /// The shard of this round equal to `shard`, or `shard` itself, now shared.
    pub(super) fn intern(&mut self, shard: Shard) -> Arc<Shard> {
        let same_digest = self.shards.entry(shard.digest).or_default();
        if let Some(found) = same_digest.iter().find(|s| s.entries == shard.entries) {
            return found.clone();
        }
        let shard = Arc::new(shard);
        same_digest.push(shard.clone());
        shard
    }

    /// `old` with `upserts` put in after `removes` were taken out: made once per round for the
    /// same shard and change, shared by every config that makes it.
    pub(super) fn change(
        &mut self,
        old: &Arc<Shard>,
        upserts: Vec<(String, EncodedSection)>,
        removes: Vec<String>,
    ) -> Arc<Shard> {
        let upsert_keys: Vec<(String, u64)> = upserts.iter().map(|(n, s)| (n.clone(), s.version)).collect();
        let key = (Arc::as_ptr(old) as usize, change_digest(&upsert_keys, &removes));
        let same = |c: &&ShardChange| Arc::ptr_eq(&c.old, old) && c.upserts == upsert_keys && c.removes == removes;
        if let Some(found) = self.changed.get(&key).and_then(|list| list.iter().find(same)) {
            return found.new.clone();
        }
        let new = self.intern(old.changed(upserts, &removes));
        self.changed.entry(key).or_default().push(ShardChange {
            old: old.clone(),
            upserts: upsert_keys,
            removes,
            new: new.clone(),
        });
        new
    }
}

fn change_digest(upserts: &[(String, u64)], removes: &[String]) -> u64 {
    let mut bytes = Vec::new();
    for (name, version) in upserts {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&version.to_be_bytes());
    }
    bytes.extend_from_slice(&[0, 0]);
    for name in removes {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
    }
    trellis_base::stable_hash(&bytes)
}
