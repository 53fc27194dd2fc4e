//! Discovery on the redb file: each cluster's gateway and add-ons in one row of `discovery`, its
//! workloads one row each here, so a patch writes the workloads it changes and nothing else.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use trellis_model::{ClusterDiscovery, DiscoveryPatch, Workload};

use crate::redb_issuance::range_of;
use crate::redb_store::{DISCOVERY, decode, tx_err};
use crate::{RedbStore, Result, StoreError};

/// `<cluster>/<namespace>/<name>` ─▶ Workload JSON. Cluster names hold no '/', so a cluster's
/// workloads form one key range.
pub(crate) const WORKLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("discovery_workloads");

fn workload_key(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{cluster}/{namespace}/{name}")
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("discovery serializes")
}

/// Replaces a cluster's whole discovery.
pub(crate) fn write_whole(tx: &WriteTransaction, discovery: &ClusterDiscovery) -> Result<()> {
    let frame = ClusterDiscovery {
        workloads: Vec::new(),
        ..discovery.clone()
    };
    tx.open_table(DISCOVERY)
        .map_err(tx_err)?
        .insert(discovery.cluster.as_str(), encode(&frame).as_slice())
        .map_err(tx_err)?;
    remove_workloads(tx, &discovery.cluster)?;
    let mut table = tx.open_table(WORKLOADS).map_err(tx_err)?;
    for workload in &discovery.workloads {
        let key = workload_key(&discovery.cluster, &workload.namespace, &workload.name);
        table
            .insert(key.as_str(), encode(workload).as_slice())
            .map_err(tx_err)?;
    }
    Ok(())
}

/// Writes the workloads a patch changes; refused for a cluster with no discovery to patch.
pub(crate) fn write_patch(tx: &WriteTransaction, patch: &DiscoveryPatch) -> Result<()> {
    let known = tx
        .open_table(DISCOVERY)
        .map_err(tx_err)?
        .get(patch.cluster.as_str())
        .map_err(tx_err)?
        .is_some();
    if !known {
        return Err(StoreError::NoDiscovery(patch.cluster.clone()));
    }
    let mut table = tx.open_table(WORKLOADS).map_err(tx_err)?;
    for key in &patch.removes {
        table
            .remove(workload_key(&patch.cluster, &key.namespace, &key.name).as_str())
            .map_err(tx_err)?;
    }
    for workload in &patch.upserts {
        let key = workload_key(&patch.cluster, &workload.namespace, &workload.name);
        table
            .insert(key.as_str(), encode(workload).as_slice())
            .map_err(tx_err)?;
    }
    Ok(())
}

/// Removes every workload row of `cluster`.
pub(crate) fn remove_workloads(tx: &WriteTransaction, cluster: &str) -> Result<()> {
    let mut table = tx.open_table(WORKLOADS).map_err(tx_err)?;
    let (start, end) = range_of(cluster);
    let keys: Vec<String> = table
        .range(start.as_str()..end.as_str())
        .map_err(tx_err)?
        .map(|entry| entry.map(|(key, _)| key.value().to_string()).map_err(tx_err))
        .collect::<Result<_>>()?;
    for key in keys {
        table.remove(key.as_str()).map_err(tx_err)?;
    }
    Ok(())
}

impl RedbStore {
    /// Every cluster's discovery, normalized. A discovery stored whole by an earlier version
    /// (its workloads inside its row) reads as it was.
    pub(crate) fn read_discoveries(&self) -> Result<Vec<ClusterDiscovery>> {
        let tx = self.db.begin_read().map_err(tx_err)?;
        let frames = tx.open_table(DISCOVERY).map_err(tx_err)?;
        let workloads = tx.open_table(WORKLOADS).map_err(tx_err)?;
        let mut all = Vec::new();
        for entry in frames.iter().map_err(tx_err)? {
            let (key, value) = entry.map_err(tx_err)?;
            let mut discovery: ClusterDiscovery = decode(key.value(), value.value())?;
            let (start, end) = range_of(&discovery.cluster);
            for row in workloads.range(start.as_str()..end.as_str()).map_err(tx_err)? {
                let (key, value) = row.map_err(tx_err)?;
                discovery
                    .workloads
                    .push(decode::<Workload>(key.value(), value.value())?);
            }
            discovery.normalize();
            all.push(discovery);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use trellis_model::Workload;

    use super::*;
    use crate::Store;

    fn workload(name: &str, address: &str) -> Workload {
        Workload {
            name: name.to_string(),
            namespace: "demo".to_string(),
            service: "svc".to_string(),
            address: address.to_string(),
            ..Default::default()
        }
    }

    fn discovery(cluster: &str, workloads: &[(&str, &str)]) -> ClusterDiscovery {
        let mut discovery = ClusterDiscovery {
            cluster: cluster.to_string(),
            workloads: workloads.iter().map(|(n, a)| workload(n, a)).collect(),
            ..Default::default()
        };
        discovery.normalize();
        discovery
    }

    #[test]
    fn a_patched_discovery_reads_back_as_the_patch_applied_and_only_its_cluster_changes() {
        let path = std::env::temp_dir().join(format!("trellis-discovery-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = RedbStore::open(&path).unwrap();
        let refused = DiscoveryPatch {
            cluster: "c1".to_string(),
            upserts: vec![workload("a", "10.0.0.1")],
            removes: Vec::new(),
            workloads: 1,
        };
        assert!(
            matches!(store.patch_discovery(&refused), Err(StoreError::NoDiscovery(ref c)) if c == "c1"),
            "no discovery to patch yet"
        );

        let c1 = discovery("c1", &[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
        // "c1-x" sorts inside a careless "c1" prefix range: it must not leak into c1.
        let neighbour = discovery("c1-x", &[("z", "10.9.0.1")]);
        store.put_discovery(&c1).unwrap();
        store.put_discovery(&neighbour).unwrap();
        let next = discovery("c1", &[("b", "10.0.0.9"), ("c", "10.0.0.3")]);
        let patch = DiscoveryPatch::between(&c1, &next).unwrap();
        let revision = store.revision();
        store.patch_discovery(&patch).unwrap();
        assert_eq!(store.discoveries().unwrap(), vec![next.clone(), neighbour.clone()]);
        match store.watch(revision, std::time::Duration::ZERO) {
            crate::Watch::Changes { changes, .. } => {
                assert_eq!(changes, vec![crate::Change::DiscoveryPatch(Box::new(patch))])
            }
            other => panic!("expected the patch in the feed, got {other:?}"),
        }

        // A whole report replaces every workload; forgetting the cluster drops them.
        store.put_discovery(&c1).unwrap();
        assert_eq!(store.discoveries().unwrap(), vec![c1, neighbour.clone()]);
        store.delete_discovery("c1").unwrap();
        assert_eq!(store.discoveries().unwrap(), vec![neighbour]);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_discovery_stored_whole_by_an_earlier_version_still_reads() {
        let path = std::env::temp_dir().join(format!("trellis-discovery-old-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = RedbStore::open(&path).unwrap();
        let old = discovery("c1", &[("a", "10.0.0.1")]);
        let tx = store.db.begin_write().unwrap();
        tx.open_table(DISCOVERY)
            .unwrap()
            .insert("c1", encode(&old).as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(store.discoveries().unwrap(), vec![old]);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
}
