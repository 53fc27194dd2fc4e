//! [`Store`] on the Kubernetes API server, for a management plane on Kubernetes that needs no
//! etcd of its own: replicas share an ordered log of writes kept as Secrets in their namespace
//! ([`log`]), and each replays it, in order, onto a local copy (a redb file that is only a
//! cache) from which it reads ([`op`]).
//!
//! Every write takes the next place in the log with a *create*, which exactly one replica wins,
//! after replaying every commit before it; the op is then decided where it lands, identically on
//! every replica. A token presented twice at once, or two claims of a cluster's intermediate CA,
//! are therefore decided once. The leader periodically stores its local copy as a snapshot and
//! deletes the commits well behind it ([`snapshot`]); a replica that starts loads the snapshot
//! and replays what follows it. Applies hold a Lease from admission to write ([`write_lock`]).
//! Each replica also records the agents connected to it ([`presence`]), and the leader shares
//! its translations ([`translation_share`]).

mod log;
pub mod op;
mod presence;
mod snapshot;
mod translation_share;
mod write_lock;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use trellis_api::{Resource, ResourceKey};
use trellis_model::{ClusterDiscovery, DiscoveryPatch};
use trellis_store::{
    AccessStore, ApiTokenRecord, ApplyAction, ApplyOutcome, AuditRecord, AuditRetention, IntermediateClaim,
    IntermediateRecord, IssuanceStore, RedbStore, SilenceRecord, SilenceStore, Store, StoreError, TokenCheck,
    TokenRecord, Watch, WriteLock,
};

use trellis_support::own_runtime::{OwnRuntime, Unanswered};

use self::log::{Body, CommitLog};
pub use self::log::{ROLE_LABEL, SECRET_TYPE};
use self::op::{Op, Outcome, replay};

type Result<T> = std::result::Result<T, StoreError>;

/// How often a write is tried at the next place when other replicas keep taking it first.
const TRIES: usize = 50;
/// How often a replica looks for commits its watch may have missed.
const RECHECK: Duration = Duration::from_secs(2);
/// The longest a store call waits on the API server.
const CALL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct KubeStoreConfig {
    /// The management cluster's kubeconfig; `None`: the pod's in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// Where the log's Secrets and the write lock's Lease live.
    pub namespace: String,
    /// This replica's name (the write lock's holder).
    pub identity: String,
    /// The local copy (rewritten at every start).
    pub cache_path: PathBuf,
    /// The leader snapshots once this many commits follow the last snapshot.
    pub snapshot_every: u64,
    /// Commits kept behind the snapshot, for replicas that are a little behind.
    pub keep: u64,
    /// Commits per compaction batch.
    pub batch: u64,
    /// Replay other replicas' commits as they come (always, but in tests of a replica that
    /// stopped replaying: it then catches up only when it writes).
    pub follow: bool,
}

impl KubeStoreConfig {
    pub fn new(kubeconfig: Option<PathBuf>, namespace: &str, identity: &str, cache_path: PathBuf) -> Self {
        KubeStoreConfig {
            kubeconfig,
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            cache_path,
            snapshot_every: 1000,
            keep: 1000,
            batch: log::BATCH,
            follow: true,
        }
    }
}

pub(crate) struct Shared {
    log: CommitLog,
    local: RedbStore,
    /// The last commit replayed onto `local`. Held while replaying, writing and snapshotting.
    applied: tokio::sync::Mutex<u64>,
    config: KubeStoreConfig,
    client: kube::Client,
    /// One write lock attempt of this replica at a time (the Lease names the replica).
    lock_gate: Arc<tokio::sync::Mutex<()>>,
    /// Unique to this process: the write lock's holder is `<identity>/<process>`.
    process: String,
    /// Until when this replica's hold of the write lock is sure (`None`: not held); a config
    /// write after that moment is refused, since another replica may have taken the lock.
    lock_sure_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// Set once the log was compacted past this replica: it must restart from the snapshot.
    behind: std::sync::atomic::AtomicBool,
}

pub struct KubeStore {
    shared: Arc<Shared>,
    seen: presence::Seen,
    share: Arc<translation_share::ShareState>,
    /// Runs the client and the log watch; the Store trait is blocking.
    runtime: OwnRuntime,
}

/// A fresh id for parts, unique across replicas and restarts.
fn new_id(identity: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{identity}/{}/{nanos}", std::process::id());
    trellis_base::hash::sha256_hex(seed.as_bytes())[..16].to_string()
}

impl Shared {
    /// Replays every commit after `applied` that exists.
    async fn catch_up(&self, applied: &mut u64) -> Result<()> {
        while let Some(bytes) = self.log.read(*applied + 1).await? {
            let seq = *applied + 1;
            let op: Op = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                what: log::commit_name(seq),
                message: e.to_string(),
            })?;
            settle(seq, &replay(&self.local, op))?;
            *applied = seq;
        }
        Ok(())
    }

    async fn caught_up(&self) -> Result<()> {
        let mut applied = self.applied.lock().await;
        self.catch_up(&mut applied).await
    }

    /// After `catch_up` found no next commit: whether that commit was compacted away (the
    /// snapshot is past it). Such a replica would write its next commit under a deleted name,
    /// a fork no other replica reads; it refuses writes instead, until it restarts from the
    /// snapshot.
    async fn check_not_behind(&self, applied: &mut u64) -> Result<()> {
        let Some(snapshot) = self.log.snapshot_ref().await? else {
            return Ok(());
        };
        if snapshot.seq > *applied {
            // The next commit may have appeared since.
            self.catch_up(applied).await?;
        }
        if snapshot.seq <= *applied {
            return Ok(());
        }
        self.behind.store(true, std::sync::atomic::Ordering::Relaxed);
        Err(StoreError::Transaction(format!(
            "this replica fell behind the store's compacted log (it replayed commit {applied}, the snapshot is at {}): restart it to load the snapshot",
            snapshot.seq
        )))
    }

    /// Refuses a config write when this replica holds the write lock but cannot be sure it
    /// still does (its Lease was not renewed in time).
    fn check_lock(&self, op: &Op) -> Result<()> {
        if !matches!(op, Op::Apply { .. } | Op::Delete { .. }) {
            return Ok(());
        }
        match *self.lock_sure_until.lock().expect("lock state") {
            Some(until) if std::time::Instant::now() > until => Err(StoreError::Transaction(
                "Kubernetes store: the write lock's Lease was not renewed in time, so another replica may hold it; try again".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Writes `op` at the next free place in the log and replays it, unless `settled` finds,
    /// on the caught-up copy, that it would change nothing (its answer is then returned).
    async fn commit(&self, op: Op, settled: impl Fn(&RedbStore) -> Option<Outcome>) -> Result<Outcome> {
        let bytes = serde_json::to_vec(&op).expect("ops serialize");
        if self.behind.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Transaction(
                "this replica fell behind the store's compacted log: restart it to load the snapshot".into(),
            ));
        }
        let mut applied = self.applied.lock().await;
        self.catch_up(&mut applied).await?;
        self.check_not_behind(&mut applied).await?;
        if let Some(outcome) = settled(&self.local) {
            return Ok(outcome);
        }
        let body = if bytes.len() > log::CHUNK {
            let id = new_id(&self.config.identity);
            let batch = *applied / self.config.batch;
            Body::Parts(self.log.put_parts("part", &id, &bytes, batch).await?)
        } else {
            Body::Inline(bytes)
        };
        for _ in 0..TRIES {
            self.check_lock(&op)?;
            let seq = *applied + 1;
            if self.log.create(seq, &body, self.config.batch).await? {
                let outcome = replay(&self.local, op);
                settle(seq, &outcome)?;
                *applied = seq;
                return outcome;
            }
            self.catch_up(&mut applied).await?;
        }
        if let Body::Parts(parts) = &body {
            let _ = self.log.delete_parts(&parts.id).await;
        }
        Err(StoreError::Transaction(format!(
            "Kubernetes store: other replicas took the next {TRIES} places in the log first; try again"
        )))
    }
}

/// Whether a replayed commit is done with: its op's own refusal (a patch of a cluster with no
/// discovery) is the same on every replica and done with; a failure of the local copy (I/O) is
/// not, and the commit is replayed again rather than skipped, so that no replica drifts.
fn settle<T>(seq: u64, outcome: &Result<T>) -> Result<()> {
    match outcome {
        Ok(_) => Ok(()),
        Err(StoreError::Transaction(message)) => Err(StoreError::Transaction(format!(
            "cannot replay commit {seq} onto the local copy: {message}"
        ))),
        Err(error) => {
            tracing::debug!(seq, %error, "a commit's op was refused, as where it was written");
            Ok(())
        }
    }
}

impl KubeStore {
    /// Connects, loads the latest snapshot into a fresh local copy, replays the commits after
    /// it, and starts following the log.
    pub fn open(config: KubeStoreConfig) -> Result<Self> {
        let own = OwnRuntime::new("kube-store", 2)
            .map_err(|e| StoreError::Transaction(format!("cannot start the Kubernetes client: {e}")))?;
        let runtime = own.runtime();
        let shared = runtime.block_on(async {
            let client = crate::sync::client(config.kubeconfig.as_deref())
                .await
                .map_err(|e| StoreError::Transaction(format!("Kubernetes store: {e}")))?;
            let log = CommitLog::new(client.clone(), &config.namespace);
            log.check().await?;
            let loaded = snapshot::load(&log, &config.cache_path).await?;
            let local = RedbStore::open(&config.cache_path)?;
            let shared = Arc::new(Shared {
                log,
                local,
                applied: tokio::sync::Mutex::new(loaded),
                config: config.clone(),
                client,
                lock_gate: Arc::new(tokio::sync::Mutex::new(())),
                process: new_id(&config.identity)[..8].to_string(),
                lock_sure_until: std::sync::Mutex::new(None),
                behind: Default::default(),
            });
            shared.caught_up().await?;
            Ok::<_, StoreError>(shared)
        })?;
        let share = Arc::new(translation_share::ShareState::default());
        if config.follow {
            runtime.spawn(follow(shared.clone()));
            runtime.spawn(translation_share::follow_current(shared.clone(), share.clone()));
        }
        let applied = runtime.block_on(async { *shared.applied.lock().await });
        tracing::info!(
            namespace = %config.namespace,
            commit = applied,
            revision = shared.local.revision(),
            "store on the Kubernetes API server"
        );
        Ok(KubeStore {
            shared,
            seen: Default::default(),
            share,
            runtime: own,
        })
    }

    /// Whether the log was compacted past this replica, which must then restart to load the
    /// snapshot (its writes are refused meanwhile).
    pub fn fell_behind(&self) -> bool {
        self.shared.behind.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last commit this replica replayed.
    pub fn applied(&self) -> Result<u64> {
        self.block(|shared| async move { Ok(*shared.applied.lock().await) })
    }

    /// Snapshots and compacts when enough commits followed the last snapshot; the leader's job.
    /// Returns whether it did.
    pub fn compact_if_due(&self) -> Result<bool> {
        self.block(|shared| async move { snapshot::compact_if_due(&shared).await })
    }

    /// Runs `work` on the store's own runtime and waits for it: callers may be threads of another
    /// runtime, where blocking on a future directly is not allowed.
    fn block<T, F, W>(&self, work: W) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
        W: FnOnce(Arc<Shared>) -> F,
    {
        match self.runtime.run(work(self.shared.clone()), CALL_LIMIT) {
            Ok(answer) => answer,
            Err(Unanswered::TimedOut) => Err(StoreError::Transaction(format!(
                "Kubernetes store: no answer from the API server within {CALL_LIMIT:?}"
            ))),
            Err(Unanswered::Stopped) => Err(StoreError::Transaction("the Kubernetes store's client stopped".into())),
        }
    }

    fn write(&self, op: Op) -> Result<Outcome> {
        self.write_unless(op, |_| None)
    }

    fn write_unless(
        &self,
        op: Op,
        settled: impl Fn(&RedbStore) -> Option<Outcome> + Send + 'static,
    ) -> Result<Outcome> {
        self.block(move |shared| async move { shared.commit(op, settled).await })
    }
}

/// Replays commits as other replicas write them: on every change the watch of the log's
/// Secrets reports, and every few seconds in case it missed one.
async fn follow(shared: Arc<Shared>) {
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        // Metadata only: the watch says that a commit appeared; its body is read once, in order.
        let api: kube::Api<PartialObjectMeta<Secret>> =
            kube::Api::namespaced(shared.client.clone(), &shared.config.namespace);
        let selector = format!("{}=commit", log::ROLE_LABEL);
        let mut events = watcher::watcher(api, watcher::Config::default().labels(&selector)).boxed();
        loop {
            let rechecking = tokio::select! {
                event = events.next() => match event {
                    None => break,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "the Kubernetes store's watch restarts");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        false
                    }
                    Some(Ok(_)) => false,
                },
                _ = recheck.tick() => true,
            };
            let mut applied = shared.applied.lock().await;
            let mut replayed = shared.catch_up(&mut applied).await;
            if rechecking && replayed.is_ok() {
                replayed = shared.check_not_behind(&mut applied).await;
            }
            if let Err(error) = replayed {
                tracing::warn!(%error, "cannot replay the store's log");
            }
        }
    }
}

fn unexpected(outcome: Outcome) -> StoreError {
    StoreError::Transaction(format!("Kubernetes store: unexpected outcome {outcome:?}"))
}

impl Store for KubeStore {
    fn revision(&self) -> u64 {
        self.shared.local.revision()
    }

    fn watch(&self, since: u64, timeout: Duration) -> Watch {
        self.shared.local.watch(since, timeout)
    }

    fn lock_writes(&self) -> Result<WriteLock> {
        self.block(|shared| async move { write_lock::acquire(shared).await })
    }

    fn list(&self) -> Result<Vec<Resource>> {
        self.shared.local.list()
    }

    fn get(&self, key: &ResourceKey) -> Result<Option<Resource>> {
        self.shared.local.get(key)
    }

    fn apply(&self, resources: Vec<Resource>) -> Result<Vec<ApplyOutcome>> {
        let candidates = resources.clone();
        let unchanged = move |local: &RedbStore| {
            let mut outcomes = Vec::new();
            for resource in &candidates {
                let existing = local.get(&resource.key()).ok()??;
                let mut revision = 0;
                let outcome = trellis_store::stamp(Some(&existing), &mut resource.clone(), &mut revision);
                if outcome.action != ApplyAction::Unchanged {
                    return None;
                }
                outcomes.push(outcome);
            }
            Some(Outcome::Applied(outcomes))
        };
        match self.write_unless(Op::Apply { resources }, unchanged)? {
            Outcome::Applied(outcomes) => Ok(outcomes),
            other => Err(unexpected(other)),
        }
    }

    fn delete(&self, keys: &[ResourceKey]) -> Result<Vec<(ResourceKey, bool)>> {
        match self.write(Op::Delete { keys: keys.to_vec() })? {
            Outcome::Deleted(results) => Ok(results),
            other => Err(unexpected(other)),
        }
    }

    fn put_discovery(&self, discovery: &ClusterDiscovery) -> Result<()> {
        let same = discovery.clone();
        let unchanged = move |local: &RedbStore| {
            let stored = local.discoveries().ok()?;
            stored.contains(&same).then_some(Outcome::Done)
        };
        self.write_unless(
            Op::PutDiscovery {
                discovery: discovery.clone(),
            },
            unchanged,
        )
        .map(|_| ())
    }

    fn patch_discovery(&self, patch: &DiscoveryPatch) -> Result<()> {
        self.write(Op::PatchDiscovery { patch: patch.clone() }).map(|_| ())
    }

    fn discoveries(&self) -> Result<Vec<ClusterDiscovery>> {
        self.shared.local.discoveries()
    }

    fn delete_discovery(&self, cluster: &str) -> Result<()> {
        self.write(Op::DeleteDiscovery {
            cluster: cluster.to_string(),
        })
        .map(|_| ())
    }

    fn put_token(&self, token_hash: &str, record: &TokenRecord) -> Result<()> {
        self.write(Op::PutToken {
            hash: token_hash.to_string(),
            record: record.clone(),
        })
        .map(|_| ())
    }

    fn consume_token(&self, token_hash: &str, now: u64) -> Result<TokenCheck> {
        // Presenting an unknown, used or expired token changes nothing: it is answered without
        // a commit, so that guessing tokens cannot fill the API server with Secrets.
        let hash = token_hash.to_string();
        let refused = move |local: &RedbStore| match local.token(&hash) {
            Ok(None) => Some(Outcome::Token(TokenCheck::Unknown)),
            Ok(Some(record)) => match record.check(now) {
                TokenCheck::Accepted { .. } => None,
                check => Some(Outcome::Token(check)),
            },
            Err(_) => None,
        };
        let op = Op::ConsumeToken {
            hash: token_hash.to_string(),
            now,
        };
        match self.write_unless(op, refused)? {
            Outcome::Token(check) => Ok(check),
            other => Err(unexpected(other)),
        }
    }

    fn record_certificate(&self, serial: &str, cluster: &str) -> Result<()> {
        self.write(Op::RecordCertificate {
            serial: serial.to_string(),
            cluster: cluster.to_string(),
        })
        .map(|_| ())
    }

    fn revoke_cluster_certificates(&self, cluster: &str) -> Result<usize> {
        match self.write(Op::RevokeClusterCertificates {
            cluster: cluster.to_string(),
        })? {
            Outcome::Count(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    fn is_revoked(&self, serial: &str) -> Result<bool> {
        self.shared.local.is_revoked(serial)
    }
}

impl AccessStore for KubeStore {
    fn append_audit(&self, record: AuditRecord, retention: AuditRetention, now: u64) -> Result<u64> {
        match self.write(Op::AppendAudit { record, retention, now })? {
            Outcome::Sequence(seq) => Ok(seq),
            other => Err(unexpected(other)),
        }
    }

    fn audit_records(&self) -> Result<Vec<AuditRecord>> {
        self.shared.local.audit_records()
    }

    fn create_api_token(&self, token_hash: &str, record: &ApiTokenRecord) -> Result<bool> {
        match self.write(Op::CreateApiToken {
            hash: token_hash.to_string(),
            record: record.clone(),
        })? {
            Outcome::Flag(created) => Ok(created),
            other => Err(unexpected(other)),
        }
    }

    fn api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>> {
        self.shared.local.api_token(token_hash)
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.shared.local.api_tokens()
    }

    fn revoke_api_token(&self, name: &str) -> Result<bool> {
        match self.write(Op::RevokeApiToken { name: name.to_string() })? {
            Outcome::Flag(revoked) => Ok(revoked),
            other => Err(unexpected(other)),
        }
    }
}

impl IssuanceStore for KubeStore {
    fn claim_intermediate(&self, record: &IntermediateRecord, now: u64) -> Result<IntermediateClaim> {
        match self.write(Op::ClaimIntermediate {
            record: record.clone(),
            now,
        })? {
            Outcome::Claim(claim) => Ok(claim),
            other => Err(unexpected(other)),
        }
    }

    fn cluster_intermediates(&self, cluster: &str) -> Result<Vec<IntermediateRecord>> {
        self.shared.local.cluster_intermediates(cluster)
    }

    fn revoke_cluster_intermediates(&self, cluster: &str, now: u64) -> Result<usize> {
        match self.write(Op::RevokeClusterIntermediates {
            cluster: cluster.to_string(),
            now,
        })? {
            Outcome::Count(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    fn void_cluster_tokens(&self, cluster: &str) -> Result<usize> {
        match self.write(Op::VoidClusterTokens {
            cluster: cluster.to_string(),
        })? {
            Outcome::Count(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }
}

impl SilenceStore for KubeStore {
    fn put_silence(&self, record: &SilenceRecord) -> Result<()> {
        self.write(Op::PutSilence { record: record.clone() }).map(|_| ())
    }

    fn delete_silence(&self, code: &str, target: Option<&str>) -> Result<bool> {
        match self.write(Op::DeleteSilence {
            code: code.to_string(),
            target: target.map(str::to_string),
        })? {
            Outcome::Flag(deleted) => Ok(deleted),
            other => Err(unexpected(other)),
        }
    }

    fn silences(&self) -> Result<Vec<SilenceRecord>> {
        self.shared.local.silences()
    }
}
