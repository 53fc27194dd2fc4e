//! The translator: one thread that follows the store's change feed, translates, encodes each
//! cluster's config as sections and publishes the result for the relay streams and the API.
//!
//! It runs on its own thread, not on the async workers: a translation of a large mesh takes long
//! enough to stall every relay stream and API call sharing those workers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use trellis_api::{Resource, ResourceKey};
use trellis_model::{ClusterDiscovery, Snapshot};
use trellis_relay::sections::Sections;
use trellis_store::{Change, Store, Watch};
use trellis_translate::Translation;

use super::metrics::MgmtMetrics;

/// How long changes arriving together are gathered into one translation.
const GATHER: Duration = Duration::from_millis(5);

/// One translation, as every reader sees it.
#[derive(Default)]
pub struct Published {
    /// The store revision translated: every change up to it is in.
    pub revision: u64,
    pub translation: Arc<Translation>,
    /// Each cluster's config as relay sections, encoded once for all its streams.
    pub clusters: BTreeMap<String, Arc<EncodedCluster>>,
}

pub struct EncodedCluster {
    pub version: String,
    pub sections: Sections,
}

/// What the translator reads: the store's resources and discovery, kept up to date from the feed.
struct Inputs {
    revision: u64,
    resources: BTreeMap<ResourceKey, Resource>,
    discovery: BTreeMap<String, ClusterDiscovery>,
}

impl Inputs {
    fn read(store: &dyn Store) -> anyhow::Result<Self> {
        // The revision first: a write landing during the reads is then seen again, never lost.
        let revision = store.revision();
        let resources = store.list()?.into_iter().map(|r| (r.key(), r)).collect();
        let discovery = store
            .discoveries()?
            .into_iter()
            .map(|d| (d.cluster.clone(), d))
            .collect();
        Ok(Inputs {
            revision,
            resources,
            discovery,
        })
    }

    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Resource {
                    key,
                    resource: Some(resource),
                } => {
                    self.resources.insert(key, *resource);
                }
                Change::Resource { key, resource: None } => {
                    self.resources.remove(&key);
                }
                Change::Discovery {
                    cluster,
                    discovery: Some(discovery),
                } => {
                    self.discovery.insert(cluster, *discovery);
                }
                Change::Discovery {
                    cluster,
                    discovery: None,
                } => {
                    self.discovery.remove(&cluster);
                }
            }
        }
    }

    /// Waits for the next changes and takes them in; false when there were none.
    fn follow(&mut self, store: &dyn Store, timeout: Duration) -> anyhow::Result<bool> {
        match store.watch(self.revision, timeout) {
            Watch::Changes { revision, changes } => {
                let changed = revision != self.revision;
                self.revision = revision;
                self.apply(changes);
                Ok(changed)
            }
            Watch::Resync { .. } => {
                *self = Inputs::read(store)?;
                Ok(true)
            }
        }
    }
}

pub struct Translator {
    store: Arc<dyn Store>,
    trust_domain: String,
    metrics: MgmtMetrics,
    inputs: Inputs,
}

impl Translator {
    pub fn new(store: Arc<dyn Store>, trust_domain: &str, metrics: MgmtMetrics) -> anyhow::Result<Self> {
        let inputs = Inputs::read(store.as_ref())?;
        Ok(Translator {
            store,
            trust_domain: trust_domain.to_string(),
            metrics,
            inputs,
        })
    }

    /// Translates the inputs as they are; encodes reusing `previous` wherever a cluster's
    /// config did not change.
    pub fn translate(&self, previous: &Published) -> Published {
        let span = tracing::info_span!("translate", revision = self.inputs.revision);
        let _enter = span.enter();
        let started = Instant::now();
        let snapshot = Snapshot::new(
            self.inputs.resources.values().cloned().collect(),
            self.inputs.discovery.clone(),
        )
        .with_trust_domain(&self.trust_domain);
        let translation = trellis_translate::translate(&snapshot);
        let translated = started.elapsed();
        let clusters = translation
            .clusters
            .iter()
            .map(|(name, config)| {
                let before = previous.translation.clusters.get(name).zip(previous.clusters.get(name));
                let encoded = match before {
                    // Unchanged: the very same encoding, so streams see the same version at no cost.
                    Some((old, encoded)) if old == config => encoded.clone(),
                    Some((old, encoded)) => Arc::new(EncodedCluster::new(Sections::encode(
                        config,
                        Some((old, &encoded.sections)),
                    ))),
                    None => Arc::new(EncodedCluster::new(Sections::encode(config, None))),
                };
                (name.clone(), encoded)
            })
            .collect();
        self.metrics
            .translation_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.translations_total.inc();
        tracing::debug!(
            translate_ms = translated.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "translated"
        );
        Published {
            revision: self.inputs.revision,
            translation: Arc::new(translation),
            clusters,
        }
    }

    /// Follows the store until `stop` is set, publishing a translation after each burst of changes.
    pub fn run(mut self, published: &tokio::sync::watch::Sender<Arc<Published>>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match self.inputs.follow(self.store.as_ref(), Duration::from_millis(500)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(error) => {
                    tracing::error!(%error, "cannot read the store; agents keep their last config");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
            // Applies and discovery reports often come in bursts: take them in one translation.
            std::thread::sleep(GATHER);
            if let Err(error) = self.inputs.follow(self.store.as_ref(), Duration::ZERO) {
                tracing::error!(%error, "cannot read the store; agents keep their last config");
                continue;
            }
            let next = self.translate(&published.borrow());
            published.send_replace(Arc::new(next));
        }
    }
}

impl EncodedCluster {
    fn new(sections: Sections) -> Self {
        EncodedCluster {
            version: sections.version(),
            sections,
        }
    }
}
