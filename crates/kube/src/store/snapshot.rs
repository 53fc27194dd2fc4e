//! Snapshots and compaction. The leader stores its local copy, as it stands after commit `seq`,
//! in parts, points the snapshot Secret at them, then deletes the older snapshot's parts and
//! the whole batches of commits more than `keep` behind. A replica that starts loads the latest
//! snapshot and replays the commits after it, so start-up costs what changed since, not the
//! whole history.

use std::path::Path;

use trellis_store::StoreError;
use trellis_support::files::write_private_bytes;

use super::Shared;
use super::log::{SnapshotRef, SnapshotSwap};

/// How often a start tries again when a compaction replaced the snapshot while it was read.
const LOAD_TRIES: usize = 5;

/// Writes the latest snapshot (or nothing: an empty file) to `cache_path`, replacing what was
/// there; returns the commit it holds.
pub(super) async fn load(log: &super::CommitLog, cache_path: &Path) -> Result<u64, StoreError> {
    let io = |e: anyhow::Error| StoreError::Transaction(format!("cannot write {}: {e:#}", cache_path.display()));
    if let Some(parent) = cache_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(e.into()))?;
    }
    let _ = std::fs::remove_file(cache_path);
    let mut last_error = None;
    for _ in 0..LOAD_TRIES {
        match log.snapshot().await {
            Ok(Some((reference, bytes))) => {
                write_private_bytes(cache_path, &bytes).map_err(io)?;
                tracing::info!(seq = reference.seq, bytes = bytes.len(), "loaded the store's snapshot");
                return Ok(reference.seq);
            }
            Ok(None) => {
                // An empty file, created private, which redb then initializes.
                write_private_bytes(cache_path, &[]).map_err(io)?;
                return Ok(0);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("a failed try leaves its error"))
}

pub(super) async fn compact_if_due(shared: &Shared) -> Result<bool, StoreError> {
    let config = &shared.config;
    let last = shared.log.snapshot_ref().await?.map(|r| r.seq).unwrap_or(0);
    let (seq, bytes) = {
        // Held only while the file is read: no replay writes to it meanwhile, so the copy is
        // the local store as it stood after commit `seq`. Writes go on during the upload.
        let mut applied = shared.applied.lock().await;
        shared.catch_up(&mut applied).await?;
        if *applied < last + config.snapshot_every {
            return Ok(false);
        }
        let bytes = std::fs::read(&config.cache_path)
            .map_err(|e| StoreError::Transaction(format!("cannot read {}: {e}", config.cache_path.display())))?;
        (*applied, bytes)
    };
    let id = super::new_id(&config.identity);
    let parts = shared
        .log
        .put_parts("snapshot-part", &id, &bytes, seq / config.batch)
        .await?;
    let reference = SnapshotRef { seq, parts };
    match shared.log.set_snapshot(&reference).await? {
        SnapshotSwap::Replaced(previous) => {
            tracing::info!(seq, bytes = bytes.len(), "stored a snapshot of the store");
            if let Some(previous) = previous {
                shared.log.delete_parts(&previous.parts.id).await?;
            }
        }
        SnapshotSwap::Later | SnapshotSwap::Raced => {
            shared.log.delete_parts(&id).await?;
            return Ok(false);
        }
    }
    // Whole batches of commits at or before `seq - keep` go, with the parts written while the
    // log was a batch earlier (a part's commit may land in the batch after the one it was
    // written in). Listed, so that batches a stopped compaction left behind go too.
    let first_kept = (seq.saturating_sub(config.keep) + 1) / config.batch;
    for batch in shared.log.batches("commit").await? {
        if batch < first_kept {
            shared.log.delete_batch("commit", batch).await?;
        }
    }
    for batch in shared.log.batches("part").await? {
        if batch + 1 < first_kept {
            shared.log.delete_batch("part", batch).await?;
        }
    }
    Ok(true)
}
