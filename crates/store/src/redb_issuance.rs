//! [`IssuanceStore`] on the redb file: one table beside the config, created on first use.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::issuance::{IntermediateClaim, IntermediateRecord, IssuanceStore, blocking_intermediate};
use crate::redb_store::{TOKENS, decode, tx_err};
use crate::{RedbStore, Result, TokenRecord};

/// `<cluster>/<serial>` ─▶ IntermediateRecord JSON. Cluster names hold no '/', so a cluster's
/// records form one key range.
const INTERMEDIATES: TableDefinition<&str, &[u8]> = TableDefinition::new("cluster_intermediates");

pub(crate) fn range_of(cluster: &str) -> (String, String) {
    // '0' sorts right after '/': every key "<cluster>/..." lies in ["<cluster>/", "<cluster>0").
    (format!("{cluster}/"), format!("{cluster}0"))
}

fn read_cluster(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    cluster: &str,
) -> Result<Vec<IntermediateRecord>> {
    let (start, end) = range_of(cluster);
    let mut records: Vec<IntermediateRecord> = Vec::new();
    for entry in table.range(start.as_str()..end.as_str()).map_err(tx_err)? {
        let (key, value) = entry.map_err(tx_err)?;
        records.push(decode(key.value(), value.value())?);
    }
    records.sort_by_key(|r| r.issued_at);
    Ok(records)
}

impl IssuanceStore for RedbStore {
    fn claim_intermediate(&self, record: &IntermediateRecord, now: u64) -> Result<IntermediateClaim> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        let claim = {
            let mut table = tx.open_table(INTERMEDIATES).map_err(tx_err)?;
            let existing = read_cluster(&table, &record.cluster)?;
            let blocking = blocking_intermediate(existing, record, now);
            match blocking {
                Some(existing) => IntermediateClaim::Refused { existing },
                None => {
                    let key = format!("{}/{}", record.cluster, record.serial);
                    let bytes = serde_json::to_vec(record).expect("intermediate records serialize");
                    table.insert(key.as_str(), bytes.as_slice()).map_err(tx_err)?;
                    IntermediateClaim::Recorded
                }
            }
        };
        if claim == IntermediateClaim::Recorded {
            tx.commit().map_err(tx_err)?;
        }
        Ok(claim)
    }

    fn cluster_intermediates(&self, cluster: &str) -> Result<Vec<IntermediateRecord>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        match tx.open_table(INTERMEDIATES) {
            Ok(table) => read_cluster(&table, cluster),
            Err(TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(error) => Err(tx_err(error)),
        }
    }

    fn revoke_cluster_intermediates(&self, cluster: &str, now: u64) -> Result<usize> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        let mut live = 0;
        {
            let mut table = tx.open_table(INTERMEDIATES).map_err(tx_err)?;
            for mut record in read_cluster(&table, cluster)? {
                if record.revoked {
                    continue;
                }
                live += usize::from(record.is_live(now));
                record.revoked = true;
                let key = format!("{}/{}", record.cluster, record.serial);
                let bytes = serde_json::to_vec(&record).expect("intermediate records serialize");
                table.insert(key.as_str(), bytes.as_slice()).map_err(tx_err)?;
            }
        }
        tx.commit().map_err(tx_err)?;
        Ok(live)
    }

    fn void_cluster_tokens(&self, cluster: &str) -> Result<usize> {
        let tx = self.db.begin_write().map_err(tx_err)?;
        let mut voided = 0;
        {
            let mut table = tx.open_table(TOKENS).map_err(tx_err)?;
            let mut unused = Vec::new();
            for entry in table.iter().map_err(tx_err)? {
                let (hash, value) = entry.map_err(tx_err)?;
                let record: TokenRecord = decode("token", value.value())?;
                if record.cluster == cluster && !record.used {
                    unused.push((hash.value().to_string(), record));
                }
            }
            for (hash, mut record) in unused {
                record.used = true;
                let bytes = serde_json::to_vec(&record).expect("token records serialize");
                table.insert(hash.as_str(), bytes.as_slice()).map_err(tx_err)?;
                voided += 1;
            }
        }
        tx.commit().map_err(tx_err)?;
        Ok(voided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::issuance::SAME_KEY_RETRY_SECS;

    fn path_of(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("trellis-store-issuance-{name}-{}.redb", std::process::id()))
    }

    fn temp_store(name: &str) -> RedbStore {
        let path = path_of(name);
        let _ = std::fs::remove_file(&path);
        RedbStore::open(&path).unwrap()
    }

    fn mk_record(cluster: &str, serial: &str, issued_at: u64) -> IntermediateRecord {
        IntermediateRecord {
            cluster: cluster.into(),
            serial: serial.into(),
            issued_at,
            not_after: issued_at + 300,
            renewable_at: issued_at + 200,
            revoked: false,
            public_key_sha256: format!("key-{serial}"),
            root_sha256: String::new(),
        }
    }

    #[test]
    fn the_same_key_may_retry_shortly_after_its_intermediate_was_signed() {
        let store = temp_store("retry");
        // Long-lived records: only the retry window decides here, not renewal.
        let record = |cluster: &str, serial: &str, key: &str, at: u64| IntermediateRecord {
            not_after: at + 10_000,
            renewable_at: at + 5_000,
            public_key_sha256: key.into(),
            ..mk_record(cluster, serial, at)
        };
        store
            .claim_intermediate(&record("east", "aa", "k1", 1000), 1000)
            .unwrap();
        // The answer was lost; the agent asks again with the same key: signed again.
        assert_eq!(
            store
                .claim_intermediate(&record("east", "ab", "k1", 1010), 1010)
                .unwrap(),
            IntermediateClaim::Recorded
        );
        // Another key is refused, and so is the same key once the retry window has passed.
        assert!(matches!(
            store
                .claim_intermediate(&record("east", "bb", "k2", 1020), 1020)
                .unwrap(),
            IntermediateClaim::Refused { .. }
        ));
        // Retries within the window do not move it: it counts from the key's first signing.
        let in_window = 1000 + SAME_KEY_RETRY_SECS - 1;
        assert_eq!(
            store
                .claim_intermediate(&record("east", "ad", "k1", in_window), in_window)
                .unwrap(),
            IntermediateClaim::Recorded
        );
        let late = 1000 + SAME_KEY_RETRY_SECS;
        assert!(matches!(
            store
                .claim_intermediate(&record("east", "ac", "k1", late), late)
                .unwrap(),
            IntermediateClaim::Refused { .. }
        ));
        // Records without a key digest (from before it was kept) never count as retries.
        store.claim_intermediate(&record("west", "ca", "", 1000), 1000).unwrap();
        assert!(matches!(
            store.claim_intermediate(&record("west", "cb", "", 1001), 1001).unwrap(),
            IntermediateClaim::Refused { .. }
        ));
    }

    #[test]
    fn refuses_a_second_intermediate_while_the_first_is_live_and_not_due() {
        let store = temp_store("second");
        let first = mk_record("east", "aa", 1000);
        assert_eq!(
            store.claim_intermediate(&first, 1000).unwrap(),
            IntermediateClaim::Recorded
        );
        assert_eq!(
            store.claim_intermediate(&mk_record("east", "bb", 1010), 1010).unwrap(),
            IntermediateClaim::Refused {
                existing: first.clone()
            }
        );
        // Another cluster is not affected, and a cluster whose name extends this one's neither.
        for other in ["west", "east-2", "eas"] {
            assert_eq!(
                store.claim_intermediate(&mk_record(other, "cc", 1010), 1010).unwrap(),
                IntermediateClaim::Recorded,
                "{other}"
            );
        }
        // Due for renewal: the successor is recorded; now it blocks.
        assert_eq!(
            store.claim_intermediate(&mk_record("east", "dd", 1200), 1200).unwrap(),
            IntermediateClaim::Recorded
        );
        assert!(matches!(
            store.claim_intermediate(&mk_record("east", "ee", 1201), 1201).unwrap(),
            IntermediateClaim::Refused { existing } if existing.serial == "dd"
        ));
        let serials: Vec<String> = store
            .cluster_intermediates("east")
            .unwrap()
            .into_iter()
            .map(|r| r.serial)
            .collect();
        assert_eq!(serials, vec!["aa", "dd"]);
        assert!(store.cluster_intermediates("nowhere").unwrap().is_empty());
    }

    #[test]
    fn revoking_lets_the_cluster_get_a_new_intermediate() {
        let store = temp_store("revoke");
        store.claim_intermediate(&mk_record("east", "aa", 1000), 1000).unwrap();
        store.claim_intermediate(&mk_record("west", "bb", 1000), 1000).unwrap();
        assert_eq!(store.revoke_cluster_intermediates("east", 1010).unwrap(), 1);
        assert_eq!(store.revoke_cluster_intermediates("east", 1011).unwrap(), 0);
        assert!(store.cluster_intermediates("east").unwrap()[0].revoked);
        assert!(!store.cluster_intermediates("west").unwrap()[0].revoked);
        assert_eq!(
            store.claim_intermediate(&mk_record("east", "cc", 1020), 1020).unwrap(),
            IntermediateClaim::Recorded
        );
        // Expired ones do not block either.
        assert_eq!(
            store.claim_intermediate(&mk_record("west", "dd", 1300), 1300).unwrap(),
            IntermediateClaim::Recorded
        );
        // Outstanding registration tokens of the cluster stop working; others' keep theirs.
        let token = |cluster: &str| crate::TokenRecord {
            cluster: cluster.into(),
            expires_at: 5000,
            used: false,
        };
        store.put_token("h1", &token("east")).unwrap();
        store.put_token("h2", &token("east")).unwrap();
        store.put_token("h3", &token("west")).unwrap();
        assert_eq!(store.void_cluster_tokens("east").unwrap(), 2);
        assert!(matches!(
            store.consume_token("h1", 1000).unwrap(),
            crate::TokenCheck::AlreadyUsed { .. }
        ));
        assert!(matches!(
            store.consume_token("h3", 1000).unwrap(),
            crate::TokenCheck::Accepted { .. }
        ));
        // The records outlive a restart: they are what keeps a restarted server from signing twice.
        let path = path_of("revoke");
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert!(matches!(
            store.claim_intermediate(&mk_record("east", "ee", 1021), 1021).unwrap(),
            IntermediateClaim::Refused { existing } if existing.serial == "cc"
        ));
    }
}
