//! [`TranslationShare`] on etcd: the leader writes each translation, the other replicas watch
//! for it. Keys under the prefix:
//!
//! | key | value |
//! |---|---|
//! | `translation/current` | the current translation's manifest (JSON; a line per cluster) |
//! | `translation/blobs/<id>/<chunk>` | content-addressed blobs in chunks of at most 512 KiB: sections (`s<version>`), a cluster's section index (`i<hash>`), warnings and statuses (`r<hash>`) |
//!
//! Blobs are written before the manifest that names them, so a replica never reads a manifest
//! whose blobs are missing; the leader deletes blobs the last two manifests no longer name (a
//! replica still reading the one before finds its blobs), and on its first publish those left by
//! earlier leaders. Only what a translation changed is written: a section, an index or a report
//! already written is named again, not rewritten.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use trellis_store::{
    SectionPayload, SharedCluster, SharedTranslation, StampedTranslation, StoreError, TranslationShare,
};

use crate::EtcdError;
use crate::store::{EtcdStore, Inner, delete, put};
use crate::wire::*;

type Result<T> = std::result::Result<T, StoreError>;

/// The largest chunk of a blob: etcd refuses requests over 1.5 MiB by default.
const CHUNK: usize = 512 * 1024;
/// What one write transaction carries at most: under etcd's default request size and its
/// default 128 operations.
const TXN_BYTES: usize = 1024 * 1024;
const TXN_OPS: usize = 100;
/// Above this many missing sections a follower reads every section blob in pages instead of
/// one by one.
const KEYWISE_SECTIONS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct BlobRef {
    id: String,
    len: usize,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    revision: u64,
    traceparent: Option<String>,
    report: BlobRef,
    clusters: BTreeMap<String, ClusterRef>,
}

#[derive(Serialize, Deserialize)]
struct ClusterRef {
    version: String,
    index: BlobRef,
}

impl Manifest {
    fn blobs(&self) -> HashSet<String> {
        std::iter::once(self.report.id.clone())
            .chain(self.clusters.values().map(|c| c.index.id.clone()))
            .collect()
    }
}

/// What this replica knows of the shared translations.
#[derive(Default)]
pub(crate) struct ShareState {
    /// Blobs written by this replica (as leader).
    written: Mutex<HashSet<String>>,
    /// The blobs each of the last two manifests published here names, sections included.
    live: Mutex<VecDeque<HashSet<String>>>,
    /// Whether blobs left by earlier leaders were swept.
    swept: AtomicBool,
    /// The manifest as last watched: (its etcd mod revision, its bytes), once read.
    current: Mutex<(u64, Option<Vec<u8>>)>,
    /// Whether etcd was read once (before, an absent manifest may only be unread).
    loaded: AtomicBool,
    changed: Condvar,
    /// Indexes and reports read as a follower, by id (they repeat from one translation to the
    /// next); sections are the caller's to keep.
    cache: Mutex<HashMap<String, Arc<[u8]>>>,
}

fn section_id(version: u64) -> String {
    format!("s{version:016x}")
}

fn hashed_id(kind: char, bytes: &[u8]) -> String {
    format!("{kind}{:016x}", trellis_base::stable_hash(bytes))
}

impl Inner {
    fn blob_prefix(&self, id: &str) -> Vec<u8> {
        self.key(&format!("translation/blobs/{id}/"))
    }

    async fn read_blob(&self, blob: &str) -> std::result::Result<Vec<u8>, EtcdError> {
        let (_, kvs) = self.client.range_prefix(&self.blob_prefix(blob), 0).await?;
        Ok(kvs.into_iter().flat_map(|kv| kv.value).collect())
    }

    async fn read_checked(&self, blob: &BlobRef) -> std::result::Result<Vec<u8>, EtcdError> {
        let bytes = self.read_blob(&blob.id).await?;
        if bytes.len() != blob.len {
            return Err(EtcdError::Corrupt {
                what: format!("shared translation blob {}", blob.id),
                message: format!("{} bytes where the manifest says {}", bytes.len(), blob.len),
            });
        }
        Ok(bytes)
    }

    /// Writes `blobs` (id, bytes) in as few transactions as etcd's limits allow.
    async fn write_blobs(&self, blobs: &[(String, Arc<[u8]>)]) -> std::result::Result<(), EtcdError> {
        // A blob written before by a leader that died half way is replaced whole (etcd takes no
        // delete and put of one key in one transaction, hence apart).
        let ids: Vec<String> = blobs.iter().map(|(id, _)| id.clone()).collect();
        self.delete_blobs(ids).await?;
        let mut ops: Vec<RequestOp> = Vec::new();
        let mut bytes = 0;
        for (id, payload) in blobs {
            let prefix = self.blob_prefix(id);
            for (index, chunk) in payload.chunks(CHUNK).enumerate() {
                if bytes + chunk.len() > TXN_BYTES || ops.len() >= TXN_OPS {
                    self.write_ops(std::mem::take(&mut ops)).await?;
                    bytes = 0;
                }
                let mut key = prefix.clone();
                key.extend_from_slice(format!("{index:06}").as_bytes());
                ops.push(put(key, chunk.to_vec()));
                bytes += chunk.len();
            }
        }
        self.write_ops(ops).await
    }

    async fn write_ops(&self, ops: Vec<RequestOp>) -> std::result::Result<(), EtcdError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.client
            .txn(TxnRequest {
                compare: Vec::new(),
                success: ops,
                failure: Vec::new(),
            })
            .await
            .map(|_| ())
    }

    async fn delete_blobs(&self, ids: impl IntoIterator<Item = String>) -> std::result::Result<(), EtcdError> {
        let mut ops = Vec::new();
        for id in ids {
            let prefix = self.blob_prefix(&id);
            ops.push(delete(prefix.clone(), crate::prefix_end(&prefix)));
            if ops.len() >= TXN_OPS {
                self.write_ops(std::mem::take(&mut ops)).await?;
            }
        }
        self.write_ops(ops).await
    }

    /// Every blob id stored, read by keys only.
    async fn stored_blob_ids(&self) -> std::result::Result<HashSet<String>, EtcdError> {
        let prefix = self.key("translation/blobs/");
        let end = crate::prefix_end(&prefix);
        let mut key = prefix.clone();
        let mut ids = HashSet::new();
        loop {
            let page = self
                .client
                .range(RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    limit: 1000,
                    revision: 0,
                    keys_only: true,
                })
                .await?;
            for kv in &page.kvs {
                if let Some(id) = kv.key[prefix.len()..].split(|b| *b == b'/').next() {
                    ids.insert(String::from_utf8_lossy(id).into_owned());
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => {
                    key = last.key.clone();
                    key.push(0);
                }
                _ => return Ok(ids),
            }
        }
    }
}

/// Keeps `state.current` the manifest etcd holds, waking waiting followers on each change.
/// Reads it again after a broken watch, so a change made meanwhile is not missed.
pub(crate) async fn follow_current(inner: Arc<Inner>, state: Arc<ShareState>) {
    let key = inner.key("translation/current");
    let update = |mod_revision: i64, value: Option<Vec<u8>>| {
        let mut current = state.current.lock().expect("shared translation lock");
        if current.0 != mod_revision as u64 {
            *current = (mod_revision as u64, value);
        }
        state.loaded.store(true, Ordering::Relaxed);
        state.changed.notify_all();
    };
    loop {
        let start = match inner
            .client
            .range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(response) => {
                match response.kvs.into_iter().next() {
                    Some(kv) => update(kv.mod_revision, Some(kv.value)),
                    None => update(0, None),
                }
                response.header.map(|h| h.revision + 1).unwrap_or(0)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the shared translation");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        match inner.client.watch(key.clone(), Vec::new(), start).await {
            Ok(mut stream) => {
                while let Some(Ok(response)) = stream.next().await {
                    for event in response.events {
                        let Some(kv) = event.kv else { continue };
                        let value = (event.r#type != EVENT_DELETE).then_some(kv.value);
                        update(kv.mod_revision, value);
                    }
                    if response.canceled || response.compact_revision > 0 {
                        break;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot watch the shared translation"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

impl TranslationShare for EtcdStore {
    fn publish_translation(&self, translation: &SharedTranslation, payload: SectionPayload<'_>) -> Result<()> {
        let state = self.share.clone();
        let mut blobs: Vec<(String, Arc<[u8]>)> = Vec::new();
        let mut live: HashSet<String> = HashSet::new();
        let written = state.written.lock().expect("shared translation lock").clone();
        let mut fresh = |id: String, bytes: Arc<[u8]>, blobs: &mut Vec<(String, Arc<[u8]>)>| {
            if !written.contains(&id) && !blobs.iter().any(|(b, _)| *b == id) {
                blobs.push((id.clone(), bytes));
            }
            live.insert(id);
        };
        let mut clusters = BTreeMap::new();
        for (name, cluster) in &translation.clusters {
            let mut index: Vec<(String, u64, usize)> = Vec::with_capacity(cluster.sections.len());
            for (section, version) in &cluster.sections {
                let id = section_id(*version);
                let bytes = payload(name, section).ok_or_else(|| {
                    StoreError::Transaction(format!("no payload for section {section} of cluster {name}"))
                })?;
                index.push((section.clone(), *version, bytes.len()));
                fresh(id, bytes, &mut blobs);
            }
            let encoded: Arc<[u8]> = serde_json::to_vec(&index).expect("indexes serialize").into();
            let index = BlobRef {
                id: hashed_id('i', &encoded),
                len: encoded.len(),
            };
            fresh(index.id.clone(), encoded, &mut blobs);
            clusters.insert(
                name.clone(),
                ClusterRef {
                    version: cluster.version.clone(),
                    index,
                },
            );
        }
        let report = BlobRef {
            id: hashed_id('r', &translation.report),
            len: translation.report.len(),
        };
        fresh(report.id.clone(), translation.report.clone(), &mut blobs);
        let manifest = Manifest {
            revision: translation.revision,
            traceparent: translation.traceparent.clone(),
            report,
            clusters,
        };
        let manifest = serde_json::to_vec(&manifest).expect("manifests serialize");
        let new_ids: Vec<String> = blobs.iter().map(|(id, _)| id.clone()).collect();
        let swept = state.swept.load(Ordering::Relaxed);
        let (stale, live_now) = {
            let mut history = state.live.lock().expect("shared translation lock");
            history.push_back(live);
            while history.len() > 2 {
                history.pop_front();
            }
            let live_now: HashSet<String> = history.iter().flatten().cloned().collect();
            let mut written = state.written.lock().expect("shared translation lock");
            written.extend(new_ids.iter().cloned());
            let stale: Vec<String> = written.iter().filter(|id| !live_now.contains(*id)).cloned().collect();
            for id in &stale {
                written.remove(id);
            }
            (stale, live_now)
        };
        let outcome = self.block(move |inner| async move {
            inner.write_blobs(&blobs).await?;
            inner
                .write_ops(vec![put(inner.key("translation/current"), manifest)])
                .await?;
            inner.delete_blobs(stale).await?;
            if !swept {
                // Blobs of earlier leaders that no current manifest names.
                let left = inner.stored_blob_ids().await?;
                inner
                    .delete_blobs(left.into_iter().filter(|id| !live_now.contains(id)))
                    .await?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {
                state.swept.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                // What was written is unknown: write everything again next time.
                state.written.lock().expect("shared translation lock").clear();
                Err(error)
            }
        }
    }

    fn wait_translation(&self, held: u64, timeout: Duration) -> Result<Option<StampedTranslation>> {
        let state = self.share.clone();
        let (stamp, manifest) = {
            let current = state.current.lock().expect("shared translation lock");
            let (current, _) = state
                .changed
                .wait_timeout_while(current, timeout, |(stamp, manifest)| {
                    // Nothing held and nothing shared (etcd read once): nothing to wait for.
                    let loaded = state.loaded.load(Ordering::Relaxed);
                    !loaded || (manifest.is_some() && *stamp == held) || (manifest.is_none() && held != 0)
                })
                .expect("shared translation lock");
            match &*current {
                (stamp, Some(manifest)) if *stamp != held => (*stamp, manifest.clone()),
                _ => return Ok(None),
            }
        };
        let manifest: Manifest = serde_json::from_slice(&manifest).map_err(|e| StoreError::Corrupt {
            what: "shared translation manifest".into(),
            message: e.to_string(),
        })?;
        let cached = state.cache.lock().expect("shared translation lock").clone();
        let wanted: Vec<BlobRef> = std::iter::once(manifest.report.clone())
            .chain(manifest.clusters.values().map(|c| c.index.clone()))
            .filter(|blob| !cached.contains_key(&blob.id))
            .collect();
        let fetched: Vec<(String, Arc<[u8]>)> = self.block(move |inner| async move {
            let mut fetched = Vec::new();
            for blob in wanted {
                let bytes = inner.read_checked(&blob).await?;
                fetched.push((blob.id, Arc::from(bytes)));
            }
            Ok(fetched)
        })?;
        let blobs = {
            let mut cache = state.cache.lock().expect("shared translation lock");
            cache.extend(fetched);
            // Keep what this manifest names; the rest will not be asked for again.
            let named = manifest.blobs();
            cache.retain(|id, _| named.contains(id));
            cache.clone()
        };
        let blob = |id: &str| blobs.get(id).cloned().expect("fetched above");
        let mut clusters = BTreeMap::new();
        for (name, cluster) in manifest.clusters {
            let index: Vec<(String, u64, usize)> =
                serde_json::from_slice(&blob(&cluster.index.id)).map_err(|e| StoreError::Corrupt {
                    what: format!("shared section index of cluster {name}"),
                    message: e.to_string(),
                })?;
            clusters.insert(
                name,
                SharedCluster {
                    version: cluster.version,
                    sections: index
                        .into_iter()
                        .map(|(section, version, _)| (section, version))
                        .collect(),
                },
            );
        }
        Ok(Some(StampedTranslation {
            stamp,
            translation: SharedTranslation {
                revision: manifest.revision,
                traceparent: manifest.traceparent,
                report: blob(&manifest.report.id),
                clusters,
            },
        }))
    }

    fn section_payloads(&self, versions: &[u64]) -> Result<HashMap<u64, Arc<[u8]>>> {
        let wanted: HashSet<u64> = versions.iter().copied().collect();
        self.block(move |inner| async move {
            let mut found: HashMap<u64, Arc<[u8]>> = HashMap::new();
            if wanted.len() > KEYWISE_SECTIONS {
                let prefix = inner.key("translation/blobs/s");
                let (_, kvs) = inner.client.range_prefix(&prefix, 0).await?;
                let mut chunks: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
                for kv in kvs {
                    let rest = &kv.key[prefix.len()..];
                    let Some(hex) = rest.split(|b| *b == b'/').next() else {
                        continue;
                    };
                    let Ok(version) = u64::from_str_radix(&String::from_utf8_lossy(hex), 16) else {
                        continue;
                    };
                    if wanted.contains(&version) {
                        chunks.entry(version).or_default().extend(kv.value);
                    }
                }
                found.extend(chunks.into_iter().map(|(v, bytes)| (v, Arc::from(bytes))));
            } else {
                for version in wanted.iter() {
                    let bytes = inner.read_blob(&section_id(*version)).await?;
                    if !bytes.is_empty() {
                        found.insert(*version, Arc::from(bytes));
                    }
                }
            }
            match wanted.iter().find(|v| !found.contains_key(v)) {
                Some(missing) => Err(EtcdError::Corrupt {
                    what: format!("shared translation section {}", section_id(*missing)),
                    message: "not stored (a newer translation replaced it)".into(),
                }),
                None => Ok(found),
            }
        })
    }
}
