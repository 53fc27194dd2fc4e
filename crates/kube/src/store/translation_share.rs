//! [`TranslationShare`] on Kubernetes: the leader shares each translation as Secrets of the
//! store's namespace, so that the other replicas serve it instead of translating.
//!
//! | Secret | holds |
//! |---|---|
//! | `trellis-translation` | the manifest: a counter (the stamp), the revision, the report and each cluster's sections by name and version |
//! | `trellis-section-<version>` | one section's payload, by version (its hash): written once, whatever cluster uses it |
//!
//! A publish writes the sections the API server does not hold yet, then the manifest; sections
//! that neither this manifest nor the one before name are deleted (a follower may still be
//! fetching the one before's). The others follow the manifest with a watch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use trellis_store::{
    SectionPayload, SharedCluster, SharedTranslation, StampedTranslation, StoreError, TranslationShare,
};

use super::{KubeStore, Shared};

const MANIFEST: &str = "trellis-translation";

type Result<T> = std::result::Result<T, StoreError>;

fn section_name(version: u64) -> String {
    format!("trellis-section-{version:016x}")
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    stamp: u64,
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    /// Base64 of the translator's report.
    report: String,
    /// cluster -> (config version, [(section, version)]).
    clusters: BTreeMap<String, (String, Vec<(String, u64)>)>,
}

/// The leader's side (what the API server holds) and the followers' (the latest manifest).
#[derive(Default)]
pub(super) struct ShareState {
    /// Section versions known to be stored; `None` until listed once.
    written: Mutex<Option<HashSet<u64>>>,
    /// The versions the previous manifest named, kept one publish longer.
    previous: Mutex<HashSet<u64>>,
    /// The latest manifest seen, by stamp; `loaded` once read at all.
    current: Mutex<(bool, u64, Option<Arc<SharedTranslation>>)>,
    changed: Condvar,
}

fn decode(bytes: &[u8]) -> Result<(u64, SharedTranslation)> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: "shared translation manifest".into(),
        message: e.to_string(),
    })?;
    let report = base64::engine::general_purpose::STANDARD
        .decode(&manifest.report)
        .map_err(|e| StoreError::Corrupt {
            what: "shared translation report".into(),
            message: e.to_string(),
        })?;
    let clusters = manifest
        .clusters
        .into_iter()
        .map(|(name, (version, sections))| (name, SharedCluster { version, sections }))
        .collect();
    Ok((
        manifest.stamp,
        SharedTranslation {
            revision: manifest.revision,
            traceparent: manifest.traceparent,
            report: report.into(),
            clusters,
        },
    ))
}

/// Follows the manifest into `state` (every replica runs it; the leader ignores it).
pub(super) async fn follow_current(shared: Arc<Shared>, state: Arc<ShareState>) {
    loop {
        let api: kube::Api<PartialObjectMeta<Secret>> =
            kube::Api::namespaced(shared.client.clone(), &shared.config.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={MANIFEST}"));
        let mut events = watcher::watcher(api, config).boxed();
        let mut recheck = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                event = events.next() => match event {
                    None => break,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "the shared translation's watch restarts");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Some(Ok(_)) => {}
                },
                _ = recheck.tick() => {}
            }
            match shared.log.get_blob(MANIFEST).await {
                Ok(bytes) => {
                    let latest = match bytes.map(|b| decode(&b)).transpose() {
                        Ok(latest) => latest,
                        Err(error) => {
                            tracing::warn!(%error, "cannot read the shared translation");
                            continue;
                        }
                    };
                    let mut current = state.current.lock().expect("shared translation lock");
                    let stamp = latest.as_ref().map_or(0, |(stamp, _)| *stamp);
                    if !current.0 || current.1 != stamp {
                        *current = (true, stamp, latest.map(|(_, t)| Arc::new(t)));
                        state.changed.notify_all();
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot read the shared translation"),
            }
        }
    }
}

impl TranslationShare for KubeStore {
    fn publish_translation(&self, translation: &SharedTranslation, payload: SectionPayload<'_>) -> Result<()> {
        let state = self.share.clone();
        let known = state.written.lock().expect("shared translation lock").clone();
        let known = match known {
            Some(known) => known,
            None => {
                let names = self.block(|shared| async move { shared.log.names("section").await })?;
                names
                    .iter()
                    .filter_map(|n| u64::from_str_radix(n.strip_prefix("trellis-section-")?, 16).ok())
                    .collect()
            }
        };
        // The payloads of the sections the API server lacks, read here (the callback is not
        // Send).
        let mut fresh: BTreeMap<u64, Arc<[u8]>> = BTreeMap::new();
        let mut named: HashSet<u64> = HashSet::new();
        for (cluster, shared_cluster) in &translation.clusters {
            for (section, version) in &shared_cluster.sections {
                named.insert(*version);
                if !known.contains(version) && !fresh.contains_key(version) {
                    let bytes = payload(cluster, section).ok_or_else(|| {
                        StoreError::Transaction(format!(
                            "section {section} of cluster {cluster} has no payload to share"
                        ))
                    })?;
                    fresh.insert(*version, bytes);
                }
            }
        }
        let manifest_clusters = translation
            .clusters
            .iter()
            .map(|(name, c)| (name.clone(), (c.version.clone(), c.sections.clone())))
            .collect();
        let (revision, traceparent) = (translation.revision, translation.traceparent.clone());
        let report = base64::engine::general_purpose::STANDARD.encode(&translation.report);
        let previous = state.previous.lock().expect("shared translation lock").clone();
        let keep: HashSet<u64> = named.union(&previous).copied().collect();
        let stale: Vec<u64> = known.iter().filter(|v| !keep.contains(v)).copied().collect();
        let written_now: Vec<u64> = fresh.keys().copied().collect();
        let outcome = self.block(move |shared| async move {
            for (version, bytes) in &fresh {
                shared
                    .log
                    .put_blob(&section_name(*version), "section", bytes, false)
                    .await?;
            }
            let stamp = match shared.log.get_blob(MANIFEST).await? {
                Some(bytes) => decode(&bytes).map(|(stamp, _)| stamp).unwrap_or(0),
                None => 0,
            };
            let manifest = Manifest {
                stamp: stamp + 1,
                revision,
                traceparent,
                report,
                clusters: manifest_clusters,
            };
            let bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
            shared.log.put_blob(MANIFEST, "translation", &bytes, true).await?;
            for version in &stale {
                shared.log.delete_blob(&section_name(*version)).await?;
            }
            Ok(stale)
        });
        let mut written = state.written.lock().expect("shared translation lock");
        match outcome {
            Ok(deleted) => {
                let mut now = known;
                now.extend(written_now);
                for version in deleted {
                    now.remove(&version);
                }
                *written = Some(now);
                *state.previous.lock().expect("shared translation lock") = named;
                Ok(())
            }
            Err(error) => {
                // What was written is unknown: list it again next time.
                *written = None;
                Err(error)
            }
        }
    }

    fn wait_translation(&self, held: u64, timeout: Duration) -> Result<Option<StampedTranslation>> {
        let state = &self.share;
        let current = state.current.lock().expect("shared translation lock");
        let (current, _) = state
            .changed
            .wait_timeout_while(current, timeout, |(loaded, stamp, manifest)| {
                // Nothing held and nothing shared (read once): nothing to wait for.
                !*loaded || (manifest.is_some() && *stamp == held) || (manifest.is_none() && held != 0)
            })
            .expect("shared translation lock");
        Ok(match &*current {
            (_, stamp, Some(translation)) if *stamp != held => Some(StampedTranslation {
                stamp: *stamp,
                translation: translation.as_ref().clone(),
            }),
            _ => None,
        })
    }

    fn section_payloads(&self, versions: &[u64]) -> Result<HashMap<u64, Arc<[u8]>>> {
        let versions = versions.to_vec();
        self.block(move |shared| async move {
            let mut payloads = HashMap::new();
            for version in versions {
                let bytes = shared.log.get_blob(&section_name(version)).await?.ok_or_else(|| {
                    StoreError::Transaction(format!("shared section {version:016x} is not in the API server"))
                })?;
                payloads.insert(version, Arc::from(bytes));
            }
            Ok(payloads)
        })
    }
}
