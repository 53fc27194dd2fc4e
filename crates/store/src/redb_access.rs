//! [`AccessStore`] on the redb file: two tables beside the config, created on first use.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};

use crate::access::{AccessStore, ApiTokenRecord, AuditRecord, AuditRetention};
use crate::redb_store::{decode, tx_err};
use crate::{RedbStore, Result};

/// sequence number ─▶ AuditRecord JSON.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// SHA-256 of an API token ─▶ ApiTokenRecord JSON.
const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");

impl AccessStore for RedbStore {
    fn append_audit(&self, mut record: AuditRecord, retention: AuditRetention, now: u64) -> Result<u64> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        let seq;
        {
            let mut table = tx.open_table(AUDIT).map_err(tx_err)?;
            seq = table.last().map_err(tx_err)?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            record.seq = seq;
            let bytes = serde_json::to_vec(&record).expect("audit records serialize");
            table.insert(seq, bytes.as_slice()).map_err(tx_err)?;
            while table.len().map_err(tx_err)? > retention.max_records.max(1) {
                table.pop_first().map_err(tx_err)?;
            }
            let cutoff = now.saturating_sub(retention.max_age_secs);
            loop {
                let oldest = match table.first().map_err(tx_err)? {
                    Some((key, value)) => (key.value(), decode::<AuditRecord>("audit record", value.value())?.time),
                    None => break,
                };
                if oldest.1 >= cutoff || oldest.0 == seq {
                    break;
                }
                table.remove(oldest.0).map_err(tx_err)?;
            }
        }
        tx.commit().map_err(tx_err)?;
        Ok(seq)
    }

    fn audit_records(&self) -> Result<Vec<AuditRecord>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let table = match tx.open_table(AUDIT) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(tx_err(error)),
        };
        let mut records = Vec::new();
        for entry in table.iter().map_err(tx_err)? {
            let (_, value) = entry.map_err(tx_err)?;
            records.push(decode("audit record", value.value())?);
        }
        Ok(records)
    }

    fn create_api_token(&self, token_hash: &str, record: &ApiTokenRecord) -> Result<bool> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        {
            let mut table = tx.open_table(API_TOKENS).map_err(tx_err)?;
            for entry in table.iter().map_err(tx_err)? {
                let (_, value) = entry.map_err(tx_err)?;
                let existing: ApiTokenRecord = decode("API token", value.value())?;
                if existing.name == record.name {
                    return Ok(false);
                }
            }
            let bytes = serde_json::to_vec(record).expect("token records serialize");
            table.insert(token_hash, bytes.as_slice()).map_err(tx_err)?;
        }
        tx.commit().map_err(tx_err)?;
        Ok(true)
    }

    fn api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let table = match tx.open_table(API_TOKENS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(tx_err(error)),
        };
        match table.get(token_hash).map_err(tx_err)? {
            Some(value) => Ok(Some(decode("API token", value.value())?)),
            None => Ok(None),
        }
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let table = match tx.open_table(API_TOKENS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(tx_err(error)),
        };
        let mut tokens: Vec<ApiTokenRecord> = Vec::new();
        for entry in table.iter().map_err(tx_err)? {
            let (_, value) = entry.map_err(tx_err)?;
            tokens.push(decode("API token", value.value())?);
        }
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tokens)
    }

    fn revoke_api_token(&self, name: &str) -> Result<bool> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        let removed;
        {
            let mut table = tx.open_table(API_TOKENS).map_err(tx_err)?;
            let mut hash = None;
            for entry in table.iter().map_err(tx_err)? {
                let (key, value) = entry.map_err(tx_err)?;
                let record: ApiTokenRecord = decode("API token", value.value())?;
                if record.name == name {
                    hash = Some(key.value().to_string());
                }
            }
            removed = match hash {
                Some(hash) => table.remove(hash.as_str()).map_err(tx_err)?.is_some(),
                None => false,
            };
        }
        tx.commit().map_err(tx_err)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> (RedbStore, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("trellis-access-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        (RedbStore::open(&path).unwrap(), path)
    }

    fn record(time: u64, target: &str) -> AuditRecord {
        AuditRecord {
            seq: 0,
            time,
            user: "alice".into(),
            groups: vec![],
            authenticated_by: "token".into(),
            action: "apply".into(),
            target: target.into(),
            result: "ok".into(),
            message: String::new(),
            diff: vec![],
        }
    }

    #[test]
    fn audit_is_pruned_by_count_and_age_and_survives_reopen() {
        let (store, path) = store("audit");
        let keep_three = AuditRetention {
            max_records: 3,
            max_age_secs: 1000,
        };
        for i in 0..5 {
            store
                .append_audit(record(100 + i, &format!("t{i}")), keep_three, 105)
                .unwrap();
        }
        let targets: Vec<_> = store.audit_records().unwrap().into_iter().map(|r| r.target).collect();
        assert_eq!(targets, ["t2", "t3", "t4"]);
        // Records older than the age bound go on the next append; the new one always stays.
        let short = AuditRetention {
            max_records: 10,
            max_age_secs: 10,
        };
        store.append_audit(record(200, "new"), short, 200).unwrap();
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        let records = store.audit_records().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].target.as_str(), records[0].seq), ("new", 6));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn api_tokens_have_unique_names_and_revoke_by_name() {
        let (store, path) = store("tokens");
        let token = ApiTokenRecord {
            name: "ci".into(),
            user: "ci-bot".into(),
            groups: vec!["deployers".into()],
            created_at: 1,
            expires_at: None,
            created_by: "admin".into(),
        };
        assert!(store.create_api_token("hash-1", &token).unwrap());
        assert!(
            !store.create_api_token("hash-2", &token).unwrap(),
            "a name is used once"
        );
        assert_eq!(store.api_token("hash-1").unwrap().unwrap().user, "ci-bot");
        assert!(store.api_token("hash-2").unwrap().is_none());
        assert!(store.revoke_api_token("ci").unwrap());
        assert!(!store.revoke_api_token("ci").unwrap());
        assert!(store.api_token("hash-1").unwrap().is_none());
        let _ = std::fs::remove_file(path);
    }
}
