//! The embedded store: a redb file with one table of resources and one of discovery.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use trellis_api::{Resource, ResourceKey};
use trellis_model::{ClusterDiscovery, DiscoveryPatch};

use crate::feed::{Change, Feed, Watch};
use crate::{ApplyAction, ApplyOutcome, Result, Store, StoreError, TokenCheck, TokenRecord};

/// `Kind/namespace/name` ─▶ resource JSON.
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
/// `revision` ─▶ the last revision handed out; bumped by every write.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// cluster name ─▶ discovery JSON, its workloads apart (see `redb_discovery`).
pub(crate) const DISCOVERY: TableDefinition<&str, &[u8]> = TableDefinition::new("discovery");
/// SHA-256 of a registration token ─▶ TokenRecord JSON.
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// client certificate serial ─▶ cluster it was issued to.
const ISSUED: TableDefinition<&str, &str> = TableDefinition::new("issued_certificates");
/// revoked client certificate serial ─▶ cluster.
const REVOKED: TableDefinition<&str, &str> = TableDefinition::new("revoked_certificates");

pub struct RedbStore {
    pub(crate) db: Database,
    feed: Feed,
    /// Held from a write's start until its changes are in the feed, so the feed sees revisions
    /// in commit order.
    writer: Mutex<()>,
}

pub(crate) fn tx_err(error: impl std::fmt::Display) -> StoreError {
    StoreError::Transaction(error.to_string())
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        // Create the tables up front so readers never see "table does not exist".
        let tx = db.begin_write().map_err(tx_err)?;
        tx.open_table(RESOURCES).map_err(tx_err)?;
        tx.open_table(META).map_err(tx_err)?;
        tx.open_table(DISCOVERY).map_err(tx_err)?;
        tx.open_table(crate::redb_discovery::WORKLOADS).map_err(tx_err)?;
        tx.open_table(TOKENS).map_err(tx_err)?;
        tx.open_table(ISSUED).map_err(tx_err)?;
        tx.open_table(REVOKED).map_err(tx_err)?;
        tx.commit().map_err(tx_err)?;
        let revision = {
            let tx = db.begin_read().map_err(tx_err)?;
            let meta = tx.open_table(META).map_err(tx_err)?;
            meta.get("revision").map_err(tx_err)?.map(|v| v.value()).unwrap_or(0)
        };
        Ok(RedbStore {
            db,
            feed: Feed::new(revision),
            writer: Mutex::new(()),
        })
    }

    /// The record of a registration token, without using it up: lets a replicated store skip
    /// writing a presentation that could not change anything.
    pub fn token(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let table = tx.open_table(TOKENS).map_err(tx_err)?;
        match table.get(token_hash).map_err(tx_err)? {
            Some(value) => Ok(Some(decode("token", value.value())?)),
            None => Ok(None),
        }
    }

    /// Bumps the revision inside a write transaction; returns the new one.
    fn next_revision(tx: &redb::WriteTransaction) -> Result<u64> {
        let mut meta = tx.open_table(META).map_err(tx_err)?;
        let revision = meta.get("revision").map_err(tx_err)?.map(|v| v.value()).unwrap_or(0) + 1;
        meta.insert("revision", revision).map_err(tx_err)?;
        Ok(revision)
    }

    /// Every value of a JSON table, in key order.
    fn read_all<T: serde::de::DeserializeOwned>(&self, definition: TableDefinition<&str, &[u8]>) -> Result<Vec<T>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let table = tx.open_table(definition).map_err(tx_err)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(tx_err)? {
            let (key, value) = entry.map_err(tx_err)?;
            all.push(decode(key.value(), value.value())?);
        }
        Ok(all)
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

impl Store for RedbStore {
    fn list(&self) -> Result<Vec<Resource>> {
        self.read_all(RESOURCES)
    }

    fn get(&self, key: &ResourceKey) -> Result<Option<Resource>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let table = tx.open_table(RESOURCES).map_err(tx_err)?;
        let name = key.to_string();
        match table.get(name.as_str()).map_err(tx_err)? {
            Some(value) => Ok(Some(decode(&name, value.value())?)),
            None => Ok(None),
        }
    }

    fn revision(&self) -> u64 {
        self.feed.revision()
    }

    fn watch(&self, since: u64, timeout: Duration) -> Watch {
        self.feed.watch(since, timeout)
    }

    fn apply(&self, resources: Vec<Resource>) -> Result<Vec<ApplyOutcome>> {
        let _writer = self.writer.lock().expect("writer lock");
        let tx = self.db.begin_write().map_err(tx_err)?;
        let mut outcomes = Vec::new();
        let mut changes = Vec::new();
        {
            let mut meta = tx.open_table(META).map_err(tx_err)?;
            let mut table = tx.open_table(RESOURCES).map_err(tx_err)?;
            let mut revision = meta.get("revision").map_err(tx_err)?.map(|v| v.value()).unwrap_or(0);
            for mut resource in resources {
                let key = resource.key();
                let name = key.to_string();
                let existing: Option<Resource> = match table.get(name.as_str()).map_err(tx_err)? {
                    Some(value) => Some(decode(&name, value.value())?),
                    None => None,
                };
                let outcome = crate::stamp(existing.as_ref(), &mut resource, &mut revision);
                let unchanged = outcome.action == ApplyAction::Unchanged;
                outcomes.push(outcome);
                if unchanged {
                    continue;
                }
                let bytes = serde_json::to_vec(&resource).expect("resources serialize");
                table.insert(name.as_str(), bytes.as_slice()).map_err(tx_err)?;
                changes.push(Change::Resource {
                    key,
                    resource: Some(Box::new(resource)),
                });
            }
            meta.insert("revision", revision).map_err(tx_err)?;
        }
        tx.commit().map_err(tx_err)?;
        if let Some(Change::Resource {
            resource: Some(last), ..
        }) = changes.last()
        {
            let revision = last.metadata.resource_version;
            self.feed.publish(revision, changes);
        }
        Ok(outcomes)
    }

    fn delete(&self, keys: &[ResourceKey]) -> Result<Vec<(ResourceKey, bool)>> {
        let _writer = self.writer.lock().expect("writer lock");
        let tx = self.db.begin_write().map_err(tx_err)?;
        let mut results = Vec::new();
        {
            let mut table = tx.open_table(RESOURCES).map_err(tx_err)?;
            for key in keys {
                let existed = table.remove(key.to_string().as_str()).map_err(tx_err)?.is_some();
                results.push((key.clone(), existed));
            }
        }
        let revision = Self::next_revision(&tx)?;
        tx.commit().map_err(tx_err)?;
        let changes = results
            .iter()
            .filter(|(_, existed)| *existed)
            .map(|(key, _)| Change::Resource {
                key: key.clone(),
                resource: None,
            })
            .collect();
        self.feed.publish(revision, changes);
        Ok(results)
    }

    fn put_discovery(&self, discovery: &ClusterDiscovery) -> Result<()> {
        let _writer = self.writer.lock().expect("writer lock");
        let tx = self.db.begin_write().map_err(tx_err)?;
        crate::redb_discovery::write_whole(&tx, discovery)?;
        let revision = Self::next_revision(&tx)?;
        tx.commit().map_err(tx_err)?;
        let change = Change::Discovery {
            cluster: discovery.cluster.clone(),
            discovery: Some(Box::new(discovery.clone())),
        };
        self.feed.publish(revision, vec![change]);
        Ok(())
    }

    fn patch_discovery(&self, patch: &DiscoveryPatch) -> Result<()> {
        let _writer = self.writer.lock().expect("writer lock");
        let tx = self.db.begin_write().map_err(tx_err)?;
        crate::redb_discovery::write_patch(&tx, patch)?;
        let revision = Self::next_revision(&tx)?;
        tx.commit().map_err(tx_err)?;
        self.feed
            .publish(revision, vec![Change::DiscoveryPatch(Box::new(patch.clone()))]);
        Ok(())
    }

    fn discoveries(&self) -> Result<Vec<ClusterDiscovery>> {
        self.read_discoveries()
    }

    fn delete_discovery(&self, cluster: &str) -> Result<()> {
        let _writer = self.writer.lock().expect("writer lock");
        let tx = self.db.begin_write().map_err(tx_err)?;
        tx.open_table(DISCOVERY)
            .map_err(tx_err)?
            .remove(cluster)
            .map_err(tx_err)?;
        crate::redb_discovery::remove_workloads(&tx, cluster)?;
        let revision = Self::next_revision(&tx)?;
        tx.commit().map_err(tx_err)?;
        let change = Change::Discovery {
            cluster: cluster.to_string(),
            discovery: None,
        };
        self.feed.publish(revision, vec![change]);
        Ok(())
    }

    fn put_token(&self, token_hash: &str, record: &TokenRecord) -> Result<()> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        {
            let mut table = tx.open_table(TOKENS).map_err(tx_err)?;
            let bytes = serde_json::to_vec(record).expect("token records serialize");
            table.insert(token_hash, bytes.as_slice()).map_err(tx_err)?;
        }
        tx.commit().map_err(tx_err)
    }

    fn consume_token(&self, token_hash: &str, now: u64) -> Result<TokenCheck> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        let check = {
            let mut table = tx.open_table(TOKENS).map_err(tx_err)?;
            let record: Option<TokenRecord> = match table.get(token_hash).map_err(tx_err)? {
                Some(value) => Some(decode("token", value.value())?),
                None => None,
            };
            match record {
                None => TokenCheck::Unknown,
                Some(mut record) => {
                    let check = record.check(now);
                    if matches!(check, TokenCheck::Accepted { .. }) {
                        record.used = true;
                        let bytes = serde_json::to_vec(&record).expect("token records serialize");
                        table.insert(token_hash, bytes.as_slice()).map_err(tx_err)?;
                    }
                    check
                }
            }
        };
        tx.commit().map_err(tx_err)?;
        Ok(check)
    }

    fn record_certificate(&self, serial: &str, cluster: &str) -> Result<()> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        tx.open_table(ISSUED)
            .map_err(tx_err)?
            .insert(serial, cluster)
            .map_err(tx_err)?;
        tx.commit().map_err(tx_err)
    }

    fn revoke_cluster_certificates(&self, cluster: &str) -> Result<usize> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        let mut count = 0;
        {
            let issued = tx.open_table(ISSUED).map_err(tx_err)?;
            let mut revoked = tx.open_table(REVOKED).map_err(tx_err)?;
            for entry in issued.iter().map_err(tx_err)? {
                let (serial, owner) = entry.map_err(tx_err)?;
                if owner.value() == cluster {
                    revoked.insert(serial.value(), cluster).map_err(tx_err)?;
                    count += 1;
                }
            }
        }
        tx.commit().map_err(tx_err)?;
        Ok(count)
    }

    fn is_revoked(&self, serial: &str) -> Result<bool> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let table = tx.open_table(REVOKED).map_err(tx_err)?;
        Ok(table.get(serial).map_err(tx_err)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("trellis-store-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    fn vd(name: &str, host: &str) -> Resource {
        let text = format!(
            "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{hosts: [{host}], ports: [{{number: 80}}]}}\n"
        );
        trellis_api::parse_one("test", &text).unwrap()
    }

    #[test]
    fn the_feed_follows_every_write_and_a_reopened_store_resynchronizes() {
        let path = temp_path("feed");
        let store = RedbStore::open(&path).unwrap();
        let start = store.revision();
        store.apply(vec![vd("a", "a.mesh"), vd("b", "b.mesh")]).unwrap();
        // An unchanged apply commits nothing and wakes nobody.
        store.apply(vec![vd("a", "a.mesh")]).unwrap();
        store.delete(&[vd("a", "a.mesh").key()]).unwrap();
        store
            .put_discovery(&ClusterDiscovery {
                cluster: "c1".to_string(),
                ..Default::default()
            })
            .unwrap();
        let Watch::Changes { revision, changes } = store.watch(start, Duration::ZERO) else {
            panic!("the feed reaches back to the start");
        };
        assert_eq!(revision, start + 4);
        let seen: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Resource { key, resource } => format!("{key} {}", resource.is_some()),
                Change::Discovery { cluster, discovery } => format!("{cluster} {}", discovery.is_some()),
                Change::DiscoveryPatch(patch) => format!("{} patched", patch.cluster),
            })
            .collect();
        assert_eq!(
            seen,
            [
                "VirtualDestination/demo/a true",
                "VirtualDestination/demo/b true",
                "VirtualDestination/demo/a false",
                "c1 true"
            ]
        );
        let Watch::Changes { changes, .. } = store.watch(start + 3, Duration::ZERO) else {
            panic!("recent");
        };
        assert_eq!(changes.len(), 1);
        drop(store);
        let reopened = RedbStore::open(&path).unwrap();
        assert_eq!(reopened.revision(), start + 4, "the revision survives a restart");
        assert_eq!(
            reopened.watch(start, Duration::ZERO),
            Watch::Resync { revision: start + 4 }
        );
    }

    #[test]
    fn generations_count_changes_and_survive_reopen() {
        let path = temp_path("generations");
        {
            let store = RedbStore::open(&path).unwrap();
            let first = store.apply(vec![vd("a", "a.mesh"), vd("b", "b.mesh")]).unwrap();
            assert!(
                first
                    .iter()
                    .all(|o| o.action == ApplyAction::Created && o.generation == 1)
            );
            let again = store.apply(vec![vd("a", "a.mesh")]).unwrap();
            assert_eq!((again[0].action, again[0].generation), (ApplyAction::Unchanged, 1));
            let changed = store.apply(vec![vd("a", "a2.mesh")]).unwrap();
            assert_eq!((changed[0].action, changed[0].generation), (ApplyAction::Configured, 2));
        }
        let store = RedbStore::open(&path).unwrap();
        let all = store.list().unwrap();
        assert_eq!(all.len(), 2);
        let a = store.get(&all[0].key()).unwrap().unwrap();
        assert_eq!(a.metadata.generation, 2);
        // Creation order is kept across updates: "a" was created first.
        assert!(all[0].metadata.creation_revision < all[1].metadata.creation_revision);
        assert_eq!(
            store
                .delete(&[a.key(), a.key()])
                .unwrap()
                .iter()
                .map(|(_, e)| *e)
                .collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(store.list().unwrap().len(), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn tokens_work_once_and_expire() {
        let path = temp_path("tokens");
        let store = RedbStore::open(&path).unwrap();
        let record = |expires_at| TokenRecord {
            cluster: "c1".into(),
            expires_at,
            used: false,
        };
        store.put_token("fresh", &record(100)).unwrap();
        store.put_token("stale", &record(50)).unwrap();
        let c1 = || "c1".to_string();
        assert_eq!(
            store.consume_token("fresh", 60).unwrap(),
            TokenCheck::Accepted { cluster: c1() }
        );
        assert_eq!(
            store.consume_token("fresh", 61).unwrap(),
            TokenCheck::AlreadyUsed { cluster: c1() }
        );
        assert_eq!(
            store.consume_token("stale", 60).unwrap(),
            TokenCheck::Expired { cluster: c1() }
        );
        assert_eq!(store.consume_token("nope", 60).unwrap(), TokenCheck::Unknown);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn revokes_only_the_clusters_certificates() {
        let path = temp_path("revoke");
        let store = RedbStore::open(&path).unwrap();
        store.record_certificate("aa", "c1").unwrap();
        store.record_certificate("bb", "c1").unwrap();
        store.record_certificate("cc", "c2").unwrap();
        assert_eq!(store.revoke_cluster_certificates("c1").unwrap(), 2);
        assert!(store.is_revoked("aa").unwrap() && store.is_revoked("bb").unwrap());
        assert!(!store.is_revoked("cc").unwrap());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn keeps_last_discovery_per_cluster() {
        let path = temp_path("discovery");
        let store = RedbStore::open(&path).unwrap();
        let mut d = ClusterDiscovery {
            cluster: "c1".into(),
            ..Default::default()
        };
        store.put_discovery(&d).unwrap();
        d.east_west_gateway = Some(trellis_model::GatewayAddress {
            host: "127.0.0.1".into(),
            port: 1,
        });
        store.put_discovery(&d).unwrap();
        assert_eq!(store.discoveries().unwrap(), vec![d]);
        let _ = std::fs::remove_file(&path);
    }
}
