//! [`SilenceStore`] on the redb file: one table beside the config, created on first use.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::redb_store::{decode, tx_err};
use crate::silences::{SilenceRecord, SilenceStore, silence_key};
use crate::{RedbStore, Result};

/// `code|target` ─▶ SilenceRecord JSON.
const SILENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("insight_silences");

impl SilenceStore for RedbStore {
    fn put_silence(&self, record: &SilenceRecord) -> Result<()> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        {
            let mut table = tx.open_table(SILENCES).map_err(tx_err)?;
            let bytes = serde_json::to_vec(record).expect("silences serialize");
            table.insert(record.key().as_str(), bytes.as_slice()).map_err(tx_err)?;
        }
        tx.commit().map_err(tx_err)
    }

    fn delete_silence(&self, code: &str, target: Option<&str>) -> Result<bool> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        let removed = {
            let mut table = tx.open_table(SILENCES).map_err(tx_err)?;
            table
                .remove(silence_key(code, target).as_str())
                .map_err(tx_err)?
                .is_some()
        };
        tx.commit().map_err(tx_err)?;
        Ok(removed)
    }

    fn silences(&self) -> Result<Vec<SilenceRecord>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let table = match tx.open_table(SILENCES) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(tx_err(error)),
        };
        let mut silences = Vec::new();
        for entry in table.iter().map_err(tx_err)? {
            let (_, value) = entry.map_err(tx_err)?;
            silences.push(decode("insight silence", value.value())?);
        }
        Ok(silences)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silences_survive_a_reopen_and_are_removed_by_code_and_target() {
        let dir = std::env::temp_dir().join(format!("trellis-silences-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        let record = |target: Option<&str>| SilenceRecord {
            code: "TRL0018".into(),
            target: target.map(str::to_string),
            created_by: "admin".into(),
            created_at: 1,
        };
        {
            let store = RedbStore::open(&path).unwrap();
            assert!(store.silences().unwrap().is_empty());
            store.put_silence(&record(None)).unwrap();
            store.put_silence(&record(Some("AccessPolicy/demo/p"))).unwrap();
            store.put_silence(&record(Some("AccessPolicy/demo/p"))).unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.silences().unwrap().len(),
            2,
            "one per code and target, kept across a reopen"
        );
        assert!(store.delete_silence("TRL0018", Some("AccessPolicy/demo/p")).unwrap());
        assert!(!store.delete_silence("TRL0018", Some("AccessPolicy/demo/p")).unwrap());
        assert_eq!(store.silences().unwrap(), vec![record(None)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
