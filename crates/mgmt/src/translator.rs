//! The translator: one thread that follows the store's change feed, translates, encodes each
//! cluster's config as sections and publishes the result for the relay streams and the API.
//!
//! It runs on its own thread, not on the async workers: a full translation of a large mesh takes
//! long enough to stall every relay stream and API call sharing those workers. An endpoint change
//! (whole discovery or a patch) and a RouteTable edit that keeps to existing targets skip full
//! translation (`trellis_translate::Incremental`) and re-encode only the upstreams or virtual
//! hosts they rewrote, so their cost follows the change, not the mesh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use trellis_api::{Resource, ResourceKey};
use trellis_model::discovery_patch::WorkloadChange;
use trellis_model::{ClusterDiscovery, Snapshot, WorkloadKey};
use trellis_relay::sections::{EncodeCache, EncodedSection, Sections};
use trellis_store::{Change, Store, Watch};
use trellis_translate::{EndpointChanges, Incremental, ResourceStatus, RouteChanges, Translation};

use super::metrics::MgmtMetrics;
use super::sharded::ShardedMap;
use super::trace_origins::TraceOrigins;

/// How long changes arriving together are gathered into one translation.
const GATHER: Duration = Duration::from_millis(5);

/// One translation, as every reader sees it.
#[derive(Default)]
pub struct Published {
    /// The store revision translated: every change up to it is in.
    pub revision: u64,
    /// Problems found, by resource.
    pub warnings: ShardedMap<Vec<String>>,
    /// Every resource's status, by `Kind/namespace/name`.
    pub statuses: ShardedMap<ResourceStatus>,
    /// Each cluster's config as relay sections, encoded once for all its streams.
    pub clusters: BTreeMap<String, Arc<EncodedCluster>>,
    /// The trace of the translation that made this (W3C `traceparent`): pushes of it continue
    /// it. None while spans are not exported.
    pub traceparent: Option<String>,
}

impl Published {
    /// The whole translation, clusters decoded from their sections (for people reading it: the
    /// translator does not keep a second copy).
    pub fn to_translation(&self) -> Translation {
        Translation {
            clusters: self
                .clusters
                .iter()
                .filter_map(|(name, encoded)| Some((name.clone(), encoded.sections.decode().ok()?)))
                .collect(),
            warnings: self.warnings.to_map(),
            statuses: self.statuses.to_map(),
        }
    }
}

pub struct EncodedCluster {
    pub version: String,
    pub sections: Sections,
}

impl EncodedCluster {
    pub(crate) fn new(sections: Sections) -> Self {
        EncodedCluster {
            version: sections.version(),
            sections,
        }
    }
}

/// What one burst of store changes touched.
#[derive(Default)]
struct Touched {
    /// The store was read again from scratch.
    everything: bool,
    /// The store must be read again from scratch.
    reread: bool,
    /// Each resource changed, with its version before the burst.
    resources: BTreeMap<ResourceKey, Option<Resource>>,
    /// Each cluster whose discovery was reported whole, with its discovery before the burst.
    discovery: BTreeMap<String, Option<ClusterDiscovery>>,
    /// Each cluster whose discovery was patched: each workload changed, before and after.
    patched: BTreeMap<String, BTreeMap<WorkloadKey, WorkloadChange>>,
}

pub struct Translator {
    store: Arc<dyn Store>,
    trust_domain: String,
    metrics: MgmtMetrics,
    revision: u64,
    /// Kept in place between changes: a change replaces one resource or one cluster's
    /// discovery in it.
    snapshot: Snapshot,
    incremental: Incremental,
    /// Whether `incremental` holds the translation of `snapshot` (not so for a replica that
    /// started by serving the leader's: it translates everything when it takes over).
    current: bool,
}

impl Translator {
    /// Reads the store and translates it.
    pub fn new(store: Arc<dyn Store>, trust_domain: &str, metrics: MgmtMetrics) -> anyhow::Result<(Self, Published)> {
        let mut translator = Self::following(store, trust_domain, metrics)?;
        let started = Instant::now();
        translator.incremental = Incremental::new(&translator.snapshot);
        let published = translator.full(&Published::default(), None);
        translator.current = true;
        translator.count(started);
        Ok((translator, published))
    }

    /// Counts a translation begun at `started` (its time under both metric names).
    fn count(&self, started: Instant) {
        let took = started.elapsed().as_secs_f64();
        self.metrics.translation_seconds.observe(took);
        self.metrics.gloo_translation_time.observe(took);
        self.metrics.translations_total.inc();
    }

    /// Reads the store without translating it: for a replica that starts by serving the
    /// leader's translation.
    pub fn following(store: Arc<dyn Store>, trust_domain: &str, metrics: MgmtMetrics) -> anyhow::Result<Self> {
        let mut translator = Translator {
            store,
            trust_domain: trust_domain.to_string(),
            metrics,
            revision: 0,
            snapshot: Snapshot::default(),
            incremental: Incremental::new(&Snapshot::default()),
            current: false,
        };
        translator.read_all()?;
        Ok(translator)
    }

    fn read_all(&mut self) -> anyhow::Result<()> {
        // The revision first: a write landing during the reads is then seen again, never lost.
        self.revision = self.store.revision();
        let resources = self.store.list()?;
        let discovery = self
            .store
            .discoveries()?
            .into_iter()
            .map(|d| (d.cluster.clone(), d))
            .collect();
        self.snapshot = Snapshot::new(resources, discovery).with_trust_domain(&self.trust_domain);
        Ok(())
    }

    /// Takes in the changes after the revision translated, waiting up to `timeout` for some.
    fn follow(&mut self, timeout: Duration, touched: &mut Touched) -> anyhow::Result<()> {
        match self.store.watch(self.revision, timeout) {
            Watch::Changes { revision, changes } => {
                self.revision = revision;
                let mut resources = Vec::new();
                for change in changes {
                    match change {
                        Change::Resource { key, resource } => resources.push((key, resource.map(|r| *r))),
                        discovery => self.apply(discovery, touched),
                    }
                }
                for (key, old) in self.snapshot.change_resources(resources) {
                    touched.resources.entry(key).or_insert(old);
                }
                if std::mem::take(&mut touched.reread) {
                    self.read_all()?;
                    touched.everything = true;
                }
            }
            Watch::Resync { .. } => {
                self.read_all()?;
                touched.everything = true;
            }
        }
        Ok(())
    }

    fn apply(&mut self, change: Change, touched: &mut Touched) {
        match change {
            Change::Resource { .. } => unreachable!("resources are changed together in `follow`"),
            Change::DiscoveryPatch(patch) => {
                let Some(discovery) = self.snapshot.discovery.get_mut(&patch.cluster) else {
                    // The store refuses such a patch; should one come, this copy has drifted
                    // from the store: read it again.
                    touched.reread = true;
                    return;
                };
                let changes = touched.patched.entry(patch.cluster.clone()).or_default();
                for (before, after) in patch.apply_to(discovery) {
                    let Some(key) = before.as_ref().or(after.as_ref()).map(WorkloadKey::of) else {
                        continue;
                    };
                    // A workload patched twice keeps its version from before the first patch.
                    changes.entry(key).or_insert((before, None)).1 = after;
                }
            }
            Change::Discovery { cluster, discovery } => {
                let old = match discovery {
                    Some(discovery) => self.snapshot.discovery.insert(cluster.clone(), *discovery),
                    None => self.snapshot.discovery.remove(&cluster),
                };
                touched.discovery.entry(cluster).or_insert(old);
            }
        }
    }

    /// Brings the translation up to what `touched` says changed.
    fn translate(&mut self, previous: &Published, touched: Touched, origins: &TraceOrigins) -> Published {
        let span = tracing::info_span!("translate", revision = self.revision, path = tracing::field::Empty);
        // The apply that caused it, if it came through the API.
        if let Some(traceparent) = origins.take_up_to(self.revision) {
            trellis_support::trace_context::continue_trace(&span, &traceparent);
        }
        let _enter = span.enter();
        let started = Instant::now();
        let endpoint_only = !touched.everything
            && touched.resources.is_empty()
            && touched
                .patched
                .keys()
                .all(|cluster| !touched.discovery.contains_key(cluster))
            && touched
                .discovery
                .iter()
                .all(|(cluster, old)| old.is_some() && self.snapshot.discovery.contains_key(cluster));
        let moved = endpoint_only.then(|| self.endpoints_moved(&touched)).flatten();
        let routes_only = !touched.everything && touched.discovery.is_empty() && touched.patched.is_empty();
        let routes = (routes_only && moved.is_none())
            .then(|| self.incremental.route_tables_edited(&self.snapshot, &touched.resources))
            .flatten();
        let path = match (&moved, &routes) {
            (Some(_), _) => "endpoints",
            (None, Some(_)) => "routes",
            (None, None) => "full",
        };
        span.record("path", path);
        let mut published = match (moved, routes) {
            (Some(changes), _) => self.publish_endpoints(previous, changes),
            (None, Some(changes)) => self.publish_routes(previous, changes),
            (None, None) => {
                let replaced = self.incremental.retranslate(&self.snapshot);
                // An endpoint pass that stopped at a cluster whose change reached further may
                // have rewritten other clusters in place: `replaced` then no longer matches what
                // `previous` encoded, and nothing may be reused against it.
                let before = (!endpoint_only).then_some(&replaced);
                self.full(previous, before)
            }
        };
        self.count(started);
        tracing::debug!(took_ms = started.elapsed().as_millis() as u64, path, "translated");
        published.traceparent = trellis_support::trace_context::traceparent(&span);
        published
    }

    /// Applies the burst as endpoint changes; `None` when one of them reaches further.
    fn endpoints_moved(&mut self, touched: &Touched) -> Option<EndpointChanges> {
        let mut all = EndpointChanges::default();
        for (cluster, old) in &touched.discovery {
            let changes = self
                .incremental
                .endpoints_moved(&self.snapshot, cluster, old.as_ref()?)?;
            all.upstreams.extend(changes.upstreams);
            all.gateway_upstreams.extend(changes.gateway_upstreams);
        }
        for (cluster, workloads) in &touched.patched {
            let pairs: Vec<_> = workloads.values().map(|(a, b)| (a.as_ref(), b.as_ref())).collect();
            let changes = self.incremental.workloads_moved(&self.snapshot, cluster, &pairs)?;
            all.upstreams.extend(changes.upstreams);
            all.gateway_upstreams.extend(changes.gateway_upstreams);
        }
        Some(all)
    }

    /// Re-encodes only the upstreams an endpoint change rewrote.
    fn publish_endpoints(&self, previous: &Published, changes: EndpointChanges) -> Published {
        let translation = self.incremental.translation();
        let mut clusters = previous.clusters.clone();
        let touched: std::collections::BTreeSet<&String> = changes
            .upstreams
            .keys()
            .chain(changes.gateway_upstreams.keys())
            .collect();
        for cluster in touched {
            let (Some(config), Some(encoded)) = (translation.clusters.get(cluster), previous.clusters.get(cluster))
            else {
                continue;
            };
            let mut upserts = Vec::new();
            for name in changes.upstreams.get(cluster).into_iter().flatten() {
                if let Some(upstream) = config.upstream(name) {
                    upserts.push((Sections::upstream_key(name), EncodedSection::encode(upstream)));
                }
            }
            for name in changes.gateway_upstreams.get(cluster).into_iter().flatten() {
                if let Some(upstream) = config.gateway_upstreams.iter().find(|u| &u.name == name) {
                    upserts.push((Sections::gateway_upstream_key(name), EncodedSection::encode(upstream)));
                }
            }
            let sections = encoded.sections.with_changes(upserts, &[]);
            clusters.insert(cluster.clone(), Arc::new(EncodedCluster::new(sections)));
        }
        Published {
            revision: self.revision,
            traceparent: None,
            warnings: previous.warnings.clone(),
            statuses: previous.statuses.clone(),
            clusters,
        }
    }

    /// Re-encodes only the virtual hosts a route table edit rewrote, and takes its new status.
    fn publish_routes(&self, previous: &Published, changes: RouteChanges) -> Published {
        let translation = self.incremental.translation();
        let statuses = previous
            .statuses
            .with_changes(changes.statuses.iter().map(|key| (key, translation.statuses.get(key))));
        let warnings = previous
            .warnings
            .with_changes(changes.statuses.iter().map(|key| (key, translation.warnings.get(key))));
        let mut clusters = previous.clusters.clone();
        if !changes.virtual_hosts.is_empty() {
            // Every cluster holds the same virtual host: encoded once for all of them.
            let Some(config) = translation.clusters.values().next() else {
                return Published {
                    revision: self.revision,
                    traceparent: None,
                    warnings,
                    statuses,
                    clusters,
                };
            };
            let upserts: Vec<(String, EncodedSection)> = changes
                .virtual_hosts
                .iter()
                .filter_map(|name| {
                    let at = config.virtual_hosts.binary_search_by(|h| h.name.cmp(name)).ok()?;
                    Some((
                        Sections::virtual_host_key(name),
                        EncodedSection::encode(&*config.virtual_hosts[at]),
                    ))
                })
                .collect();
            for encoded in clusters.values_mut() {
                let sections = encoded.sections.with_changes(upserts.clone(), &[]);
                *encoded = Arc::new(EncodedCluster::new(sections));
            }
        }
        Published {
            revision: self.revision,
            traceparent: None,
            warnings,
            statuses,
            clusters,
        }
    }

    /// Publishes a full translation, reusing the encoding of what did not change since `before`.
    fn full(&self, previous: &Published, before: Option<&Translation>) -> Published {
        let translation = self.incremental.translation();
        // Upstreams and virtual hosts shared between clusters are encoded once for all of them.
        let mut cache = EncodeCache::default();
        let clusters = translation
            .clusters
            .iter()
            .map(|(name, config)| {
                let old = before
                    .and_then(|b| b.clusters.get(name))
                    .zip(previous.clusters.get(name));
                let encoded = match old {
                    // Unchanged: the very same encoding, so streams see the same version at no cost.
                    Some((old, encoded)) if old == config => encoded.clone(),
                    Some((old, encoded)) => Arc::new(EncodedCluster::new(Sections::encode_changes(
                        config,
                        old,
                        &encoded.sections,
                        &mut cache,
                    ))),
                    None => Arc::new(EncodedCluster::new(Sections::encode_shared(config, &mut cache))),
                };
                (name.clone(), encoded)
            })
            .collect();
        Published {
            revision: self.revision,
            traceparent: None,
            warnings: ShardedMap::from_map(&translation.warnings),
            statuses: ShardedMap::from_map(&translation.statuses),
            clusters,
        }
    }

    /// Takes over translation from another replica: translates everything it holds, as the
    /// translations it skipped left nothing to build on.
    fn take_over(&mut self, previous: &Published) -> Published {
        let span = tracing::info_span!("translate", revision = self.revision, path = "take over");
        let _enter = span.enter();
        let started = Instant::now();
        self.incremental = Incremental::new(&self.snapshot);
        self.current = true;
        let mut published = self.full(previous, None);
        self.count(started);
        tracing::info!(revision = self.revision, "leading: translating from here on");
        published.traceparent = trellis_support::trace_context::traceparent(&span);
        published
    }

    /// Follows the store until `stop` is set, publishing a translation after each burst of
    /// changes while `leading` says this replica leads. A replica that does not lead keeps its
    /// copy of the store current but translates nothing: it serves the leader's translations
    /// (`translation_share`), and translates everything once when it takes over.
    pub fn run(
        mut self,
        published: &tokio::sync::watch::Sender<Arc<Published>>,
        stop: &AtomicBool,
        origins: &TraceOrigins,
        leading: &tokio::sync::watch::Receiver<bool>,
    ) {
        // The first translation (`new`) counts as this replica's own.
        let mut translating = self.current && *leading.borrow();
        while !stop.load(Ordering::Relaxed) {
            let mut touched = Touched::default();
            let before = self.revision;
            if let Err(error) = self.follow(Duration::from_millis(500), &mut touched) {
                tracing::error!(%error, "cannot read the store; agents keep their last config");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            match (*leading.borrow(), translating) {
                (false, _) => {
                    translating = false;
                    continue;
                }
                (true, false) => {
                    translating = true;
                    let previous = published.borrow().clone();
                    let next = self.take_over(&previous);
                    published.send_replace(Arc::new(next));
                    continue;
                }
                (true, true) => {}
            }
            if self.revision == before {
                continue;
            }
            // Applies and discovery reports often come in bursts: take them in one translation.
            std::thread::sleep(GATHER);
            if let Err(error) = self.follow(Duration::ZERO, &mut touched) {
                tracing::error!(%error, "cannot read the store; agents keep their last config");
                continue;
            }
            let previous = published.borrow().clone();
            let next = self.translate(&previous, touched, origins);
            published.send_replace(Arc::new(next));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
