//! [`Store`] on etcd. Keys under the configured prefix:
//!
//! | key | value |
//! |---|---|
//! | `config/revision` | the last revision handed out (decimal); the guard of every config write |
//! | `config/journal` | the last config write's changes (JSON); replicas watch its history |
//! | `resources/<Kind/ns/name>` | resource JSON |
//! | `discovery/<cluster>` | a cluster's discovery without its workloads |
//! | `workloads/<cluster>/<ns>/<name>` | one workload |
//! | `tokens/<sha256>`, `issued/<serial>`, `revoked/<serial>` | registration tokens, client certificates |
//! | `audit/<seq>`, `api-tokens/<sha256>`, `intermediates/<cluster>/<serial>`, `silences/<key>` | as in redb |
//! | `guards/<what>` | guards of the read-modify-write records that have no counter of their own |

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use trellis_api::{Resource, ResourceKey};
use trellis_model::{ClusterDiscovery, DiscoveryPatch, Workload};
use trellis_store::{
    AccessStore, ApiTokenRecord, ApplyAction, ApplyOutcome, AuditRecord, AuditRetention, Change, Feed,
    IntermediateClaim, IntermediateRecord, IssuanceStore, SilenceRecord, SilenceStore, Store, StoreError, TokenCheck,
    TokenRecord, Watch, blocking_intermediate, silence_key, stamp,
};

use trellis_support::own_runtime::{OwnRuntime, Unanswered};

use crate::EtcdError;
use crate::client::{EtcdClient, EtcdConfig, prefix_end};
use crate::wire::*;

/// How often a guarded write is tried again when another replica wrote first.
const TRIES: usize = 50;
/// Applies of more resources than this read the whole resource range instead of key by key.
const KEYWISE_READS: usize = 32;

type Result<T> = std::result::Result<T, StoreError>;

/// What one config write changed, as the journal key holds it.
#[derive(Serialize, Deserialize)]
struct JournalEntry {
    revision: u64,
    changes: Vec<Change>,
}

pub struct EtcdStore {
    inner: Arc<Inner>,
    feed: Arc<Feed>,
    pub(crate) share: Arc<crate::translation_share::ShareState>,
    pub(crate) presence: crate::presence::PresenceState,
    /// Runs the client and the journal watch; the Store trait is blocking.
    runtime: OwnRuntime,
    timeout: Duration,
}

pub(crate) struct Inner {
    pub(crate) client: EtcdClient,
    prefix: String,
}

fn decode<T: serde::de::DeserializeOwned>(what: &[u8], bytes: &[u8]) -> std::result::Result<T, EtcdError> {
    serde_json::from_slice(bytes).map_err(|e| EtcdError::Corrupt {
        what: String::from_utf8_lossy(what).into_owned(),
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored records serialize")
}

pub(crate) fn put(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Put(PutRequest { key, value, lease: 0 })),
    }
}

pub(crate) fn delete(key: Vec<u8>, range_end: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::DeleteRange(DeleteRangeRequest { key, range_end })),
    }
}

fn unchanged_since(key: Vec<u8>, mod_revision: i64) -> Compare {
    Compare {
        result: COMPARE_EQUAL,
        target: TARGET_MOD,
        key,
        target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
    }
}

/// A guard key as read: the etcd revision of the read, its last change and its value.
struct Guard {
    revision: i64,
    mod_revision: i64,
    value: Vec<u8>,
}

impl Guard {
    fn counter(&self) -> u64 {
        std::str::from_utf8(&self.value)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Inner {
    pub(crate) fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    async fn get(&self, key: Vec<u8>, revision: i64) -> std::result::Result<Option<KeyValue>, EtcdError> {
        let response = self
            .client
            .range(RangeRequest {
                key,
                revision,
                ..Default::default()
            })
            .await?;
        Ok(response.kvs.into_iter().next())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, rest: &str) -> std::result::Result<Option<T>, EtcdError> {
        match self.get(self.key(rest), 0).await? {
            Some(kv) => Ok(Some(decode(&kv.key, &kv.value)?)),
            None => Ok(None),
        }
    }

    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        rest: &str,
        revision: i64,
    ) -> std::result::Result<Vec<(Vec<u8>, T)>, EtcdError> {
        let (_, kvs) = self.client.range_prefix(&self.key(rest), revision).await?;
        kvs.into_iter()
            .map(|kv| Ok((kv.key.clone(), decode(&kv.key, &kv.value)?)))
            .collect()
    }

    async fn read_guard(&self, rest: &str) -> std::result::Result<Guard, EtcdError> {
        let response = self
            .client
            .range(RangeRequest {
                key: self.key(rest),
                ..Default::default()
            })
            .await?;
        let revision = response.header.as_ref().map(|h| h.revision).unwrap_or(0);
        let kv = response.kvs.into_iter().next().unwrap_or_default();
        Ok(Guard {
            revision,
            mod_revision: kv.mod_revision,
            value: kv.value,
        })
    }

    /// Commits `ops` if nothing wrote `guard` since it was read; false when something did.
    async fn commit(&self, compares: Vec<Compare>, ops: Vec<RequestOp>) -> std::result::Result<bool, EtcdError> {
        let response = self
            .client
            .txn(TxnRequest {
                compare: compares,
                success: ops,
                failure: Vec::new(),
            })
            .await?;
        Ok(response.succeeded)
    }

    async fn put_plain(&self, rest: &str, value: Vec<u8>) -> std::result::Result<(), EtcdError> {
        self.commit(Vec::new(), vec![put(self.key(rest), value)])
            .await
            .map(|_| ())
    }

    /// Writes a config change: bumps `config/revision` past `guard`, records `changes` in the
    /// journal and does `ops`, unless another config write came first (false).
    async fn commit_config(
        &self,
        guard: &Guard,
        revision: u64,
        changes: Vec<Change>,
        mut ops: Vec<RequestOp>,
    ) -> std::result::Result<bool, EtcdError> {
        let guard_key = self.key("config/revision");
        ops.push(put(guard_key.clone(), revision.to_string().into_bytes()));
        ops.push(put(
            self.key("config/journal"),
            encode(&JournalEntry { revision, changes }),
        ));
        self.commit(vec![unchanged_since(guard_key, guard.mod_revision)], ops)
            .await
    }
}

impl EtcdStore {
    /// Connects to etcd, reads the config revision and starts following the journal.
    pub fn open(config: &EtcdConfig) -> Result<Self> {
        let own = OwnRuntime::new("etcd-store", 1)
            .map_err(|e| StoreError::Transaction(format!("cannot start the etcd client: {e}")))?;
        let runtime = own.runtime();
        let client = {
            let _entered = runtime.enter();
            EtcdClient::connect(config)?
        };
        let inner = Arc::new(Inner {
            client,
            prefix: config.prefix.clone(),
        });
        let reader = inner.clone();
        let guard = runtime
            .block_on(async move {
                tokio::time::timeout(Duration::from_secs(10), reader.read_guard("config/revision")).await
            })
            .map_err(|_| EtcdError::Timeout(Duration::from_secs(10)))??;
        let feed = Arc::new(Feed::new(guard.counter()));
        runtime.spawn(follow_journal(inner.clone(), feed.clone(), guard.revision + 1));
        let share = Arc::new(crate::translation_share::ShareState::default());
        runtime.spawn(crate::translation_share::follow_current(inner.clone(), share.clone()));
        tracing::info!(
            endpoints = %config.endpoints.join(","),
            prefix = %config.prefix,
            revision = guard.counter(),
            "store on etcd"
        );
        Ok(EtcdStore {
            inner,
            feed,
            share,
            presence: Default::default(),
            runtime: own,
            timeout: config.timeout,
        })
    }

    /// The client, for leader election on the same etcd.
    pub fn client(&self) -> EtcdClient {
        self.inner.client.clone()
    }

    /// Runs `work` on the store's own runtime and waits for it: callers may be threads of another
    /// runtime, where blocking on a future directly is not allowed.
    pub(crate) fn block<T, F, W>(&self, work: W) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, EtcdError>> + Send + 'static,
        W: FnOnce(Arc<Inner>) -> F,
    {
        let limit = self.timeout * 4;
        match self.runtime.run(work(self.inner.clone()), limit) {
            Ok(answer) => answer.map_err(StoreError::from),
            Err(Unanswered::TimedOut) => Err(EtcdError::Timeout(limit).into()),
            Err(Unanswered::Stopped) => Err(StoreError::Transaction("the etcd client stopped".into())),
        }
    }

    /// After a config write: returns once this replica's feed has it, so a caller that reads the
    /// revision next sees its own write.
    fn settle(&self, revision: u64) {
        if !self.feed.wait_for(revision, self.timeout) {
            tracing::warn!(revision, "the etcd journal watch is behind this replica's own write");
        }
    }
}

/// Feeds every config write, from any replica, into `feed`, in revision order. Reconnects after
/// etcd goes away; after a compaction it loses history and makes watchers read everything again.
async fn follow_journal(inner: Arc<Inner>, feed: Arc<Feed>, mut next: i64) {
    let key = inner.key("config/journal");
    loop {
        match inner.client.watch(key.clone(), Vec::new(), next).await {
            Ok(mut stream) => {
                while let Some(message) = stream.next().await {
                    let response = match message {
                        Ok(response) => response,
                        Err(status) => {
                            tracing::warn!(error = %status, "etcd journal watch ended");
                            break;
                        }
                    };
                    if response.compact_revision > 0 {
                        match inner.read_guard("config/revision").await {
                            Ok(guard) => {
                                tracing::warn!(
                                    compacted = response.compact_revision,
                                    "etcd compacted journal history this replica had not read; reading everything again"
                                );
                                feed.reset(guard.counter());
                                next = guard.revision + 1;
                            }
                            Err(error) => tracing::warn!(%error, "cannot read the config revision"),
                        }
                        break;
                    }
                    for event in response.events {
                        let Some(kv) = event.kv else { continue };
                        next = kv.mod_revision + 1;
                        if event.r#type == EVENT_DELETE {
                            continue;
                        }
                        match serde_json::from_slice::<JournalEntry>(&kv.value) {
                            Ok(entry) => feed.publish(entry.revision, entry.changes),
                            Err(error) => {
                                tracing::error!(%error, "unreadable etcd journal entry; reading everything again")
                            }
                        }
                    }
                    if response.canceled {
                        tracing::warn!(reason = %response.cancel_reason, "etcd cancelled the journal watch");
                        break;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot watch the etcd journal"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Resources as of `revision`, by key: those named, or all when many are named.
async fn existing_resources(
    inner: &Inner,
    keys: &[String],
    revision: i64,
) -> std::result::Result<HashMap<String, Resource>, EtcdError> {
    let mut found = HashMap::new();
    if keys.len() > KEYWISE_READS {
        for (key, resource) in inner.list::<Resource>("resources/", revision).await? {
            let key = String::from_utf8_lossy(&key[inner.prefix.len() + "resources/".len()..]).into_owned();
            found.insert(key, resource);
        }
    } else {
        for key in keys {
            if let Some(kv) = inner.get(inner.key(&format!("resources/{key}")), revision).await? {
                found.insert(key.clone(), decode(&kv.key, &kv.value)?);
            }
        }
    }
    Ok(found)
}

fn workload_rest(cluster: &str, namespace: &str, name: &str) -> String {
    format!("workloads/{cluster}/{namespace}/{name}")
}

impl Store for EtcdStore {
    fn lock_writes(&self) -> Result<trellis_store::WriteLock> {
        let release = self.block(crate::write_lock::acquire)?;
        let lock = trellis_store::WriteLock::holding(release);
        // Admission reads this replica's view: it must hold every config write made before.
        let guard = self.block(|inner| async move { inner.read_guard("config/revision").await })?;
        if !self.feed.wait_for(guard.counter(), self.timeout) {
            return Err(StoreError::Transaction(format!(
                "this replica's view of the store is behind etcd's (revision {}): not writing on it; try again",
                guard.counter()
            )));
        }
        Ok(lock)
    }

    fn revision(&self) -> u64 {
        self.feed.revision()
    }

    fn watch(&self, since: u64, timeout: Duration) -> Watch {
        self.feed.watch(since, timeout)
    }

    fn list(&self) -> Result<Vec<Resource>> {
        self.block(|inner| async move {
            Ok(inner
                .list::<Resource>("resources/", 0)
                .await?
                .into_iter()
                .map(|(_, r)| r)
                .collect())
        })
    }

    fn get(&self, key: &ResourceKey) -> Result<Option<Resource>> {
        let rest = format!("resources/{key}");
        self.block(|inner| async move { inner.get_json(&rest).await })
    }

    fn apply(&self, resources: Vec<Resource>) -> Result<Vec<ApplyOutcome>> {
        let (outcomes, revision) = self.block(|inner| async move {
            let keys: Vec<String> = resources.iter().map(|r| r.key().to_string()).collect();
            for _ in 0..TRIES {
                let guard = inner.read_guard("config/revision").await?;
                let mut existing = existing_resources(&inner, &keys, guard.revision).await?;
                let mut revision = guard.counter();
                let (mut outcomes, mut changes, mut ops) = (Vec::new(), Vec::new(), BTreeMap::new());
                for mut resource in resources.iter().cloned() {
                    let key = resource.key();
                    let name = key.to_string();
                    let outcome = stamp(existing.get(&name), &mut resource, &mut revision);
                    let unchanged = outcome.action == ApplyAction::Unchanged;
                    outcomes.push(outcome);
                    if unchanged {
                        continue;
                    }
                    // A resource named twice in one apply is written once, as its last version.
                    ops.insert(
                        name.clone(),
                        put(inner.key(&format!("resources/{name}")), encode(&resource)),
                    );
                    existing.insert(name, resource.clone());
                    changes.push(Change::Resource {
                        key,
                        resource: Some(Box::new(resource)),
                    });
                }
                if changes.is_empty() {
                    return Ok((outcomes, None));
                }
                if inner
                    .commit_config(&guard, revision, changes, ops.into_values().collect())
                    .await?
                {
                    return Ok((outcomes, Some(revision)));
                }
            }
            Err(EtcdError::Contended(TRIES))
        })?;
        if let Some(revision) = revision {
            self.settle(revision);
        }
        Ok(outcomes)
    }

    fn delete(&self, keys: &[ResourceKey]) -> Result<Vec<(ResourceKey, bool)>> {
        let keys = keys.to_vec();
        let (results, revision) = self.block(|inner| async move {
            let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
            for _ in 0..TRIES {
                let guard = inner.read_guard("config/revision").await?;
                let mut existing = existing_resources(&inner, &names, guard.revision).await?;
                let mut results = Vec::new();
                let (mut changes, mut ops) = (Vec::new(), Vec::new());
                for (key, name) in keys.iter().zip(&names) {
                    let existed = existing.remove(name).is_some();
                    if existed {
                        ops.push(delete(inner.key(&format!("resources/{name}")), Vec::new()));
                        changes.push(Change::Resource {
                            key: key.clone(),
                            resource: None,
                        });
                    }
                    results.push((key.clone(), existed));
                }
                if changes.is_empty() {
                    return Ok((results, None));
                }
                let revision = guard.counter() + 1;
                if inner.commit_config(&guard, revision, changes, ops).await? {
                    return Ok((results, Some(revision)));
                }
            }
            Err(EtcdError::Contended(TRIES))
        })?;
        if let Some(revision) = revision {
            self.settle(revision);
        }
        Ok(results)
    }

    fn put_discovery(&self, discovery: &ClusterDiscovery) -> Result<()> {
        let discovery = discovery.clone();
        let revision = self.block(|inner| async move {
            let cluster = discovery.cluster.clone();
            let frame = ClusterDiscovery {
                workloads: Vec::new(),
                ..discovery.clone()
            };
            let workloads = inner.key(&format!("workloads/{cluster}/"));
            for _ in 0..TRIES {
                let guard = inner.read_guard("config/revision").await?;
                let mut ops = vec![put(inner.key(&format!("discovery/{cluster}")), encode(&frame))];
                let mut reported = std::collections::HashSet::new();
                for workload in &discovery.workloads {
                    let key = inner.key(&workload_rest(&cluster, &workload.namespace, &workload.name));
                    if reported.insert(key.clone()) {
                        ops.push(put(key, encode(workload)));
                    }
                }
                // etcd refuses a transaction that deletes a range it also writes into: delete
                // only the workloads gone.
                let (_, stored) = inner.client.range_prefix(&workloads, guard.revision).await?;
                for kv in stored {
                    if !reported.contains(&kv.key) {
                        ops.push(delete(kv.key, Vec::new()));
                    }
                }
                let revision = guard.counter() + 1;
                let change = Change::Discovery {
                    cluster: cluster.clone(),
                    discovery: Some(Box::new(discovery.clone())),
                };
                if inner.commit_config(&guard, revision, vec![change], ops).await? {
                    return Ok(revision);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })?;
        self.settle(revision);
        Ok(())
    }

    fn patch_discovery(&self, patch: &DiscoveryPatch) -> Result<()> {
        let cluster = patch.cluster.clone();
        let patch = patch.clone();
        let revision = self.block(|inner| async move {
            for _ in 0..TRIES {
                let guard = inner.read_guard("config/revision").await?;
                let frame = inner.key(&format!("discovery/{}", patch.cluster));
                if inner.get(frame, guard.revision).await?.is_none() {
                    return Ok(None);
                }
                // One operation per key: etcd refuses a transaction that names a key twice.
                let mut by_key: BTreeMap<Vec<u8>, RequestOp> = BTreeMap::new();
                for key in &patch.removes {
                    let key = inner.key(&workload_rest(&patch.cluster, &key.namespace, &key.name));
                    by_key.insert(key.clone(), delete(key, Vec::new()));
                }
                for workload in &patch.upserts {
                    let key = inner.key(&workload_rest(&patch.cluster, &workload.namespace, &workload.name));
                    by_key.insert(key.clone(), put(key, encode(workload)));
                }
                let ops = by_key.into_values().collect();
                let revision = guard.counter() + 1;
                let change = Change::DiscoveryPatch(Box::new(patch.clone()));
                if inner.commit_config(&guard, revision, vec![change], ops).await? {
                    return Ok(Some(revision));
                }
            }
            Err(EtcdError::Contended(TRIES))
        })?;
        match revision {
            Some(revision) => {
                self.settle(revision);
                Ok(())
            }
            None => Err(StoreError::NoDiscovery(cluster)),
        }
    }

    fn discoveries(&self) -> Result<Vec<ClusterDiscovery>> {
        self.block(|inner| async move {
            let (revision, frames) = inner.client.range_prefix(&inner.key("discovery/"), 0).await?;
            let workloads: Vec<(Vec<u8>, Workload)> = inner.list("workloads/", revision).await?;
            let skip = inner.prefix.len() + "workloads/".len();
            let mut by_cluster: BTreeMap<String, Vec<Workload>> = BTreeMap::new();
            for (key, workload) in workloads {
                let rest = String::from_utf8_lossy(&key[skip..]).into_owned();
                let cluster = rest.split('/').next().unwrap_or_default().to_string();
                by_cluster.entry(cluster).or_default().push(workload);
            }
            let mut all = Vec::new();
            for kv in frames {
                let mut discovery: ClusterDiscovery = decode(&kv.key, &kv.value)?;
                discovery.workloads = by_cluster.remove(&discovery.cluster).unwrap_or_default();
                discovery.normalize();
                all.push(discovery);
            }
            Ok(all)
        })
    }

    fn delete_discovery(&self, cluster: &str) -> Result<()> {
        let cluster = cluster.to_string();
        let revision = self.block(|inner| async move {
            let workloads = inner.key(&format!("workloads/{cluster}/"));
            for _ in 0..TRIES {
                let guard = inner.read_guard("config/revision").await?;
                let ops = vec![
                    delete(inner.key(&format!("discovery/{cluster}")), Vec::new()),
                    delete(workloads.clone(), prefix_end(&workloads)),
                ];
                let revision = guard.counter() + 1;
                let change = Change::Discovery {
                    cluster: cluster.clone(),
                    discovery: None,
                };
                if inner.commit_config(&guard, revision, vec![change], ops).await? {
                    return Ok(revision);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })?;
        self.settle(revision);
        Ok(())
    }

    fn put_token(&self, token_hash: &str, record: &TokenRecord) -> Result<()> {
        let (rest, value) = (format!("tokens/{token_hash}"), encode(record));
        self.block(|inner| async move { inner.put_plain(&rest, value).await })
    }

    fn consume_token(&self, token_hash: &str, now: u64) -> Result<TokenCheck> {
        let rest = format!("tokens/{token_hash}");
        self.block(|inner| async move {
            for _ in 0..TRIES {
                let Some(kv) = inner.get(inner.key(&rest), 0).await? else {
                    return Ok(TokenCheck::Unknown);
                };
                let mut record: TokenRecord = decode(&kv.key, &kv.value)?;
                let check = record.check(now);
                if !matches!(check, TokenCheck::Accepted { .. }) {
                    return Ok(check);
                }
                record.used = true;
                let compare = unchanged_since(kv.key.clone(), kv.mod_revision);
                if inner.commit(vec![compare], vec![put(kv.key, encode(&record))]).await? {
                    return Ok(check);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })
    }

    fn record_certificate(&self, serial: &str, cluster: &str) -> Result<()> {
        let (rest, value) = (format!("issued/{serial}"), cluster.as_bytes().to_vec());
        self.block(|inner| async move { inner.put_plain(&rest, value).await })
    }

    fn revoke_cluster_certificates(&self, cluster: &str) -> Result<usize> {
        let cluster = cluster.to_string();
        self.block(|inner| async move {
            let (_, issued) = inner.client.range_prefix(&inner.key("issued/"), 0).await?;
            let skip = inner.prefix.len() + "issued/".len();
            let ops: Vec<RequestOp> = issued
                .into_iter()
                .filter(|kv| kv.value == cluster.as_bytes())
                .map(|kv| {
                    let serial = String::from_utf8_lossy(&kv.key[skip..]).into_owned();
                    put(inner.key(&format!("revoked/{serial}")), kv.value)
                })
                .collect();
            let count = ops.len();
            if count > 0 {
                inner.commit(Vec::new(), ops).await?;
            }
            Ok(count)
        })
    }

    fn is_revoked(&self, serial: &str) -> Result<bool> {
        let rest = format!("revoked/{serial}");
        self.block(|inner| async move { Ok(inner.get(inner.key(&rest), 0).await?.is_some()) })
    }
}

/// Audit keys sort by sequence number.
fn audit_rest(seq: u64) -> String {
    format!("audit/{seq:020}")
}

impl AccessStore for EtcdStore {
    fn append_audit(&self, mut record: AuditRecord, retention: AuditRetention, now: u64) -> Result<u64> {
        self.block(|inner| async move {
            for _ in 0..TRIES {
                let guard = inner.read_guard("guards/audit").await?;
                let seq = guard.counter() + 1;
                record.seq = seq;
                let guard_key = inner.key("guards/audit");
                let mut ops = vec![
                    put(guard_key.clone(), seq.to_string().into_bytes()),
                    put(inner.key(&audit_rest(seq)), encode(&record)),
                ];
                // By count: everything up to seq - max_records goes in one range.
                let keep_from = (seq + 1).saturating_sub(retention.max_records.max(1)).max(1);
                if keep_from > 1 {
                    ops.push(delete(inner.key("audit/"), inner.key(&audit_rest(keep_from))));
                }
                // By age: the oldest records, a page at a time (the next append takes more).
                let cutoff = now.saturating_sub(retention.max_age_secs);
                let oldest = inner
                    .client
                    .range(RangeRequest {
                        key: inner.key(&audit_rest(keep_from)),
                        range_end: prefix_end(&inner.key("audit/")),
                        limit: 100,
                        revision: guard.revision,
                        keys_only: false,
                    })
                    .await?;
                for kv in oldest.kvs {
                    let old: AuditRecord = decode(&kv.key, &kv.value)?;
                    if old.time >= cutoff {
                        break;
                    }
                    ops.push(delete(kv.key, Vec::new()));
                }
                if inner
                    .commit(vec![unchanged_since(guard_key, guard.mod_revision)], ops)
                    .await?
                {
                    return Ok(seq);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })
    }

    fn audit_records(&self) -> Result<Vec<AuditRecord>> {
        self.block(|inner| async move { Ok(inner.list("audit/", 0).await?.into_iter().map(|(_, r)| r).collect()) })
    }

    fn create_api_token(&self, token_hash: &str, record: &ApiTokenRecord) -> Result<bool> {
        let (rest, record) = (format!("api-tokens/{token_hash}"), record.clone());
        self.block(|inner| async move {
            for _ in 0..TRIES {
                let guard = inner.read_guard("guards/api-tokens").await?;
                let tokens: Vec<(Vec<u8>, ApiTokenRecord)> = inner.list("api-tokens/", guard.revision).await?;
                if tokens.iter().any(|(_, t)| t.name == record.name) {
                    return Ok(false);
                }
                let guard_key = inner.key("guards/api-tokens");
                let ops = vec![
                    put(guard_key.clone(), Vec::new()),
                    put(inner.key(&rest), encode(&record)),
                ];
                if inner
                    .commit(vec![unchanged_since(guard_key, guard.mod_revision)], ops)
                    .await?
                {
                    return Ok(true);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })
    }

    fn api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>> {
        let rest = format!("api-tokens/{token_hash}");
        self.block(|inner| async move { inner.get_json(&rest).await })
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.block(|inner| async move {
            let mut tokens: Vec<ApiTokenRecord> = inner
                .list("api-tokens/", 0)
                .await?
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            tokens.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(tokens)
        })
    }

    fn revoke_api_token(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.block(|inner| async move {
            for _ in 0..TRIES {
                let guard = inner.read_guard("guards/api-tokens").await?;
                let tokens: Vec<(Vec<u8>, ApiTokenRecord)> = inner.list("api-tokens/", guard.revision).await?;
                let Some((key, _)) = tokens.into_iter().find(|(_, t)| t.name == name) else {
                    return Ok(false);
                };
                let guard_key = inner.key("guards/api-tokens");
                let ops = vec![put(guard_key.clone(), Vec::new()), delete(key, Vec::new())];
                if inner
                    .commit(vec![unchanged_since(guard_key, guard.mod_revision)], ops)
                    .await?
                {
                    return Ok(true);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })
    }
}

async fn cluster_intermediates(
    inner: &Inner,
    cluster: &str,
    revision: i64,
) -> std::result::Result<Vec<IntermediateRecord>, EtcdError> {
    let mut records: Vec<IntermediateRecord> = inner
        .list(&format!("intermediates/{cluster}/"), revision)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    records.sort_by_key(|r| r.issued_at);
    Ok(records)
}

impl IssuanceStore for EtcdStore {
    fn claim_intermediate(&self, record: &IntermediateRecord, now: u64) -> Result<IntermediateClaim> {
        let record = record.clone();
        self.block(|inner| async move {
            let guard_rest = format!("guards/intermediates/{}", record.cluster);
            for _ in 0..TRIES {
                let guard = inner.read_guard(&guard_rest).await?;
                let existing = cluster_intermediates(&inner, &record.cluster, guard.revision).await?;
                if let Some(existing) = blocking_intermediate(existing, &record, now) {
                    return Ok(IntermediateClaim::Refused { existing });
                }
                let guard_key = inner.key(&guard_rest);
                let rest = format!("intermediates/{}/{}", record.cluster, record.serial);
                let ops = vec![
                    put(guard_key.clone(), Vec::new()),
                    put(inner.key(&rest), encode(&record)),
                ];
                if inner
                    .commit(vec![unchanged_since(guard_key, guard.mod_revision)], ops)
                    .await?
                {
                    return Ok(IntermediateClaim::Recorded);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })
    }

    fn cluster_intermediates(&self, cluster: &str) -> Result<Vec<IntermediateRecord>> {
        let cluster = cluster.to_string();
        self.block(|inner| async move { cluster_intermediates(&inner, &cluster, 0).await })
    }

    fn revoke_cluster_intermediates(&self, cluster: &str, now: u64) -> Result<usize> {
        let cluster = cluster.to_string();
        self.block(|inner| async move {
            let guard_rest = format!("guards/intermediates/{cluster}");
            for _ in 0..TRIES {
                let guard = inner.read_guard(&guard_rest).await?;
                let guard_key = inner.key(&guard_rest);
                let mut ops = vec![put(guard_key.clone(), Vec::new())];
                let mut live = 0;
                for mut record in cluster_intermediates(&inner, &cluster, guard.revision).await? {
                    if record.revoked {
                        continue;
                    }
                    live += usize::from(record.is_live(now));
                    record.revoked = true;
                    let rest = format!("intermediates/{cluster}/{}", record.serial);
                    ops.push(put(inner.key(&rest), encode(&record)));
                }
                if inner
                    .commit(vec![unchanged_since(guard_key, guard.mod_revision)], ops)
                    .await?
                {
                    return Ok(live);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })
    }

    fn void_cluster_tokens(&self, cluster: &str) -> Result<usize> {
        let cluster = cluster.to_string();
        self.block(|inner| async move {
            for _ in 0..TRIES {
                let (_, tokens) = inner.client.range_prefix(&inner.key("tokens/"), 0).await?;
                let (mut compares, mut ops) = (Vec::new(), Vec::new());
                for kv in tokens {
                    let mut record: TokenRecord = decode(&kv.key, &kv.value)?;
                    if record.cluster != cluster || record.used {
                        continue;
                    }
                    record.used = true;
                    compares.push(unchanged_since(kv.key.clone(), kv.mod_revision));
                    ops.push(put(kv.key, encode(&record)));
                }
                let voided = ops.len();
                if voided == 0 || inner.commit(compares, ops).await? {
                    return Ok(voided);
                }
            }
            Err(EtcdError::Contended(TRIES))
        })
    }
}

impl SilenceStore for EtcdStore {
    fn put_silence(&self, record: &SilenceRecord) -> Result<()> {
        let (rest, value) = (format!("silences/{}", record.key()), encode(record));
        self.block(|inner| async move { inner.put_plain(&rest, value).await })
    }

    fn delete_silence(&self, code: &str, target: Option<&str>) -> Result<bool> {
        let rest = format!("silences/{}", silence_key(code, target));
        self.block(|inner| async move {
            let key = inner.key(&rest);
            let response = inner.client.txn(TxnRequest {
                compare: Vec::new(),
                success: vec![delete(key, Vec::new())],
                failure: Vec::new(),
            });
            let response = response.await?;
            Ok(response.responses.into_iter().any(|op| {
                matches!(op.response, Some(response_op::Response::DeleteRange(DeleteRangeResponse { deleted, .. })) if deleted > 0)
            }))
        })
    }

    fn silences(&self) -> Result<Vec<SilenceRecord>> {
        self.block(|inner| async move { Ok(inner.list("silences/", 0).await?.into_iter().map(|(_, r)| r).collect()) })
    }
}
