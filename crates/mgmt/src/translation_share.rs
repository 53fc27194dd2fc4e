//! One replica translates, every replica serves: on a replicated store the leader shares each
//! translation it publishes, and the other replicas serve the leader's instead of translating.
//!
//! ```text
//!  leader:    translator ─▶ published ─▶ share thread ─▶ store (etcd): manifest + changed sections
//!  follower:  store ─▶ follow thread (fetches only the sections it lacks) ─▶ published ─▶ relay, API
//! ```
//!
//! A follower rebuilds each cluster's sections from the leader's names, versions and payloads,
//! so its config versions are the leader's: an agent that moves to another replica finds the
//! config it holds is current. When a follower becomes leader its translator translates
//! everything once and shares from then on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trellis_relay::sections::{EncodedSection, Sections};
use trellis_store::{SharedCluster, SharedTranslation, TranslationShare};
use trellis_translate::ResourceStatus;

use crate::sharded::ShardedMap;
use crate::state::Mgmt;
use crate::translator::{EncodedCluster, Published};

/// Warnings and statuses, as they travel.
#[derive(Serialize, Deserialize)]
struct Report {
    warnings: BTreeMap<String, Vec<String>>,
    statuses: BTreeMap<String, ResourceStatus>,
}

/// How long a follower waits for a new translation before it checks whether it leads now.
const WAIT: Duration = Duration::from_millis(500);

/// What the leader shares of `published`.
pub fn shared(published: &Published) -> SharedTranslation {
    let report = Report {
        warnings: published.warnings.to_map(),
        statuses: published.statuses.to_map(),
    };
    SharedTranslation {
        revision: published.revision,
        traceparent: published.traceparent.clone(),
        report: serde_json::to_vec(&report).expect("reports serialize").into(),
        clusters: published
            .clusters
            .iter()
            .map(|(name, encoded)| {
                let sections = encoded
                    .sections
                    .to_map()
                    .into_iter()
                    .map(|(section, encoded)| (section, encoded.version))
                    .collect();
                (
                    name.clone(),
                    SharedCluster {
                        version: encoded.version.clone(),
                        sections,
                    },
                )
            })
            .collect(),
    }
}

/// Rebuilds a published translation from a shared one: clusters whose version `held` already
/// has are reused whole, sections it holds are reused, and `fetch` is asked for the rest.
pub fn rebuild(
    translation: &SharedTranslation,
    held: &Published,
    fetch: impl FnOnce(&[u64]) -> anyhow::Result<HashMap<u64, Arc<[u8]>>>,
) -> anyhow::Result<Published> {
    let report: Report = serde_json::from_slice(&translation.report)?;
    // Every payload held, by section version.
    let mut payloads: HashMap<u64, Arc<[u8]>> = HashMap::new();
    let mut missing: Vec<u64> = Vec::new();
    let changed: Vec<(&String, &SharedCluster)> = translation
        .clusters
        .iter()
        .filter(|(name, cluster)| held.clusters.get(*name).map(|c| &c.version) != Some(&cluster.version))
        .collect();
    if !changed.is_empty() {
        for encoded in held.clusters.values() {
            for (_, section) in encoded.sections.to_map() {
                payloads.insert(section.version, section.payload);
            }
        }
        for (_, cluster) in &changed {
            missing.extend(
                cluster
                    .sections
                    .iter()
                    .map(|(_, version)| *version)
                    .filter(|v| !payloads.contains_key(v)),
            );
        }
        missing.sort_unstable();
        missing.dedup();
    }
    if !missing.is_empty() {
        for (version, payload) in fetch(&missing)? {
            // A section's version is its payload's hash: what does not hash to it is not the
            // leader's section.
            anyhow::ensure!(
                trellis_base::stable_hash(&payload) == version,
                "a shared section does not match its version {version:016x}"
            );
            payloads.insert(version, payload);
        }
    }
    let mut clusters = BTreeMap::new();
    for (name, cluster) in &translation.clusters {
        let encoded = match held.clusters.get(name) {
            Some(encoded) if encoded.version == cluster.version => encoded.clone(),
            previous => {
                let mut all = BTreeMap::new();
                for (section, version) in &cluster.sections {
                    let payload = payloads
                        .get(version)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("section {section} of cluster {name} was not fetched"))?;
                    all.insert(
                        section.clone(),
                        EncodedSection {
                            version: *version,
                            payload,
                        },
                    );
                }
                let encoded = EncodedCluster::new(Sections::from_map(all, previous.map(|p| &p.sections)));
                anyhow::ensure!(
                    encoded.version == cluster.version,
                    "cluster {name}: rebuilt version {} where the leader's is {}",
                    encoded.version,
                    cluster.version
                );
                Arc::new(encoded)
            }
        };
        clusters.insert(name.clone(), encoded);
    }
    Ok(Published {
        revision: translation.revision,
        warnings: ShardedMap::from_map(&report.warnings),
        statuses: ShardedMap::from_map(&report.statuses),
        clusters,
        traceparent: translation.traceparent.clone(),
    })
}

/// The leader's current translation, for a replica that starts without leading; `None` when
/// none was shared yet (or it cannot be read: the replica then translates itself).
pub fn current(share: &dyn TranslationShare) -> Option<Published> {
    let stamped = match share.wait_translation(0, Duration::from_secs(5)) {
        Ok(stamped) => stamped?,
        Err(error) => {
            tracing::warn!(%error, "cannot read the leader's translation; translating");
            return None;
        }
    };
    let fetch = |versions: &[u64]| share.section_payloads(versions).map_err(anyhow::Error::from);
    match rebuild(&stamped.translation, &Published::default(), fetch) {
        Ok(published) => {
            tracing::info!(revision = published.revision, "starting with the leader's translation");
            Some(published)
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot rebuild the leader's translation; translating");
            None
        }
    }
}

/// Starts the two threads: sharing this replica's translations while it leads, serving the
/// leader's while it does not. They end when the server stops.
pub fn start(
    mgmt: Arc<Mgmt>,
    share: Arc<dyn TranslationShare>,
    leading: tokio::sync::watch::Receiver<bool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let sharing = {
        let (mgmt, share, leading) = (mgmt.clone(), share.clone(), leading.clone());
        std::thread::Builder::new()
            .name("translation-share".into())
            .spawn(move || share_while_leading(&mgmt, share.as_ref(), &leading))
            .expect("spawn the translation share thread")
    };
    let following = std::thread::Builder::new()
        .name("translation-follow".into())
        .spawn(move || follow_while_not_leading(&mgmt, share.as_ref(), &leading))
        .expect("spawn the translation follow thread");
    vec![sharing, following]
}

fn share_while_leading(mgmt: &Mgmt, share: &dyn TranslationShare, leading: &tokio::sync::watch::Receiver<bool>) {
    let mut translations = mgmt.subscribe();
    let mut shared_revision: Option<(u64, usize)> = None;
    while !mgmt.is_stopping() {
        std::thread::sleep(Duration::from_millis(20));
        if !*leading.borrow() {
            shared_revision = None;
            continue;
        }
        let published = translations.borrow_and_update().clone();
        // The same translation is shared once; a new one (even of the same revision) again.
        let this = (published.revision, Arc::as_ptr(&published) as usize);
        if shared_revision == Some(this) {
            continue;
        }
        let translation = shared(&published);
        let payload = |cluster: &str, section: &str| {
            published
                .clusters
                .get(cluster)?
                .sections
                .get(section)
                .map(|s| s.payload.clone())
        };
        match share.publish_translation(&translation, &payload) {
            Ok(()) => {
                shared_revision = Some(this);
                tracing::debug!(
                    revision = published.revision,
                    "translation shared with the other replicas"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "cannot share the translation with the other replicas; trying again");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn follow_while_not_leading(mgmt: &Mgmt, share: &dyn TranslationShare, leading: &tokio::sync::watch::Receiver<bool>) {
    let mut held_stamp = 0;
    while !mgmt.is_stopping() {
        if *leading.borrow() {
            // A leader serves its own; following again starts from whatever is current.
            held_stamp = 0;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let stamped = match share.wait_translation(held_stamp, WAIT) {
            Ok(Some(stamped)) => stamped,
            Ok(None) => {
                // Nothing shared yet: the first leader has not translated.
                if held_stamp == 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the leader's translation; serving the last one");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let held = mgmt.published();
        let fetch = |versions: &[u64]| share.section_payloads(versions).map_err(anyhow::Error::from);
        match rebuild(&stamped.translation, &held, fetch) {
            // A replica that took over meanwhile keeps its own.
            Ok(published) if !*leading.borrow() => {
                tracing::debug!(revision = published.revision, "serving the leader's translation");
                mgmt.metrics.translations_followed_total.inc();
                mgmt.publish_followed(published);
                held_stamp = stamped.stamp;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot rebuild the leader's translation; waiting for the next");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_rebuilds_the_leaders_translation_fetching_only_what_it_lacks() {
        let leader = crate::translator::tests::demo_published("share");
        let translation = shared(&leader);
        let payloads: HashMap<u64, Arc<[u8]>> = leader
            .clusters
            .values()
            .flat_map(|c| c.sections.to_map().into_values().map(|s| (s.version, s.payload)))
            .collect();
        // From nothing: every section is fetched, and the versions are the leader's.
        let mut asked = 0;
        let rebuilt = rebuild(&translation, &Published::default(), |versions| {
            asked += versions.len();
            Ok(versions.iter().map(|v| (*v, payloads[v].clone())).collect())
        })
        .unwrap();
        assert_eq!(asked, payloads.len());
        assert_eq!(rebuilt.revision, leader.revision);
        for (name, cluster) in &leader.clusters {
            assert_eq!(rebuilt.clusters[name].version, cluster.version);
            assert_eq!(
                rebuilt.clusters[name].sections.decode().unwrap(),
                cluster.sections.decode().unwrap()
            );
        }
        assert_eq!(rebuilt.statuses.to_map(), leader.statuses.to_map());
        // Holding it already: nothing is fetched.
        let again = rebuild(&translation, &rebuilt, |_| panic!("nothing to fetch")).unwrap();
        assert!(Arc::ptr_eq(
            again.clusters.values().next().unwrap(),
            rebuilt.clusters.values().next().unwrap()
        ));
        // A payload that does not match the leader's version is refused, not served.
        let mut wrong = HashMap::new();
        let tampered = rebuild(&translation, &Published::default(), |versions| {
            for v in versions {
                wrong.insert(*v, Arc::from(b"{}".to_vec()));
            }
            Ok(wrong.clone())
        });
        assert!(tampered.is_err());
    }
}
