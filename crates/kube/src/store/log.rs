//! The commit log on the API server: Secrets in the management plane's namespace (Secrets,
//! because commits carry Secret resources, token records and audit entries; RBAC and the API
//! server's encryption at rest cover them as they cover the user's own).
//!
//! | Secret | holds |
//! |---|---|
//! | `trellis-store-<seq>` | commit `seq` (12 digits): one [`Op`](super::op::Op) as JSON, or the reference of its parts |
//! | `trellis-store-part-<id>-<i>` | part `i` of a write or snapshot larger than one Secret holds |
//! | `trellis-store-snapshot` | the latest snapshot: its commit and the reference of its parts |
//!
//! Commit `seq` is written with *create*, which the API server refuses when the name exists:
//! exactly one write wins each place in the log, and a writer that loses reads what won and
//! tries the next place. Commits and parts carry a batch label (`seq / 1000`) so that
//! compaction deletes them a thousand at a time.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use trellis_store::StoreError;

/// What each Secret of the store is, as a label.
pub const ROLE_LABEL: &str = "trellis.io/store";
const BATCH_LABEL: &str = "trellis.io/store-batch";
const PART_LABEL: &str = "trellis.io/store-part";
/// The type of every Secret of the store.
pub const SECRET_TYPE: &str = "trellis.io/store";
/// Commits per batch label.
pub const BATCH: u64 = 1000;
/// The API server refuses a Secret whose data exceeds 1 MiB; larger writes go in parts of this.
pub const CHUNK: usize = 768 * 1024;
const SNAPSHOT: &str = "trellis-store-snapshot";
/// The most parts a body may have (3 GiB): a reference that names more is corrupt.
const MAX_PARTS: usize = 4096;

/// Where a large body's parts are, and the digest they must add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    pub id: String,
    pub count: usize,
    pub sha256: String,
}

/// The latest snapshot: the local store as it stood after commit `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub seq: u64,
    pub parts: Parts,
}

/// What [`CommitLog::set_snapshot`] did.
pub enum SnapshotSwap {
    /// The snapshot points at the new one; the one before, if any, may go.
    Replaced(Option<SnapshotRef>),
    /// It already pointed at a later snapshot: the new one may go.
    Later,
    /// Another compaction swapped it at the same moment: the new one may go.
    Raced,
}

/// A commit's body as stored: inline, or in parts written before it.
pub enum Body {
    Inline(Vec<u8>),
    Parts(Parts),
}

pub struct CommitLog {
    api: Api<Secret>,
    namespace: String,
}

pub fn commit_name(seq: u64) -> String {
    format!("trellis-store-{seq:012}")
}

fn part_name(id: &str, index: usize) -> String {
    format!("trellis-store-part-{id}-{index}")
}

fn api_error(namespace: &str, action: &str, error: kube::Error) -> StoreError {
    let hint = match &error {
        kube::Error::Api(status) if status.code == 403 => format!(
            " (hint: the management server's account needs get, list, watch, create, update, delete and deletecollection on secrets in namespace {namespace})"
        ),
        kube::Error::Api(status) if status.code == 404 && status.reason == "NotFound" && action == "namespace" => {
            format!(" (hint: create namespace {namespace})")
        }
        _ => String::new(),
    };
    StoreError::Transaction(format!("Kubernetes store: cannot {action}: {error}{hint}"))
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl CommitLog {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        CommitLog {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    /// The Secrets of the store's namespace, for records kept beside the log (presence).
    pub fn secrets(&self) -> &Api<Secret> {
        &self.api
    }

    fn secret(&self, name: String, labels: BTreeMap<String, String>, key: &str, value: Vec<u8>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.into()),
            data: Some(BTreeMap::from([(key.to_string(), ByteString(value))])),
            ..Default::default()
        }
    }

    /// Writes `bytes` as parts labelled `role` (and batch `batch`, for compaction); the parts
    /// are unreachable until a commit or the snapshot names them.
    pub async fn put_parts(&self, role: &str, id: &str, bytes: &[u8], batch: u64) -> Result<Parts, StoreError> {
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            let labels = BTreeMap::from([
                (ROLE_LABEL.to_string(), role.to_string()),
                (PART_LABEL.to_string(), id.to_string()),
                (BATCH_LABEL.to_string(), batch.to_string()),
            ]);
            let secret = self.secret(part_name(id, index), labels, "chunk", chunk.to_vec());
            match self.api.create(&PostParams::default(), &secret).await {
                Ok(_) => {}
                // Ids are random, or derived from the bytes: a part that exists is this one.
                Err(error) if is_status(&error, 409) => {}
                Err(error) => return Err(api_error(&self.namespace, "write a part", error)),
            }
        }
        Ok(Parts {
            id: id.to_string(),
            count: chunks.len(),
            sha256: trellis_base::hash::sha256_hex(bytes),
        })
    }

    async fn read_parts(&self, parts: &Parts) -> Result<Vec<u8>, StoreError> {
        if parts.count > MAX_PARTS {
            return Err(corrupt(
                &parts.id,
                &format!("{} parts, more than {MAX_PARTS}", parts.count),
            ));
        }
        let mut bytes = Vec::new();
        for index in 0..parts.count {
            let name = part_name(&parts.id, index);
            let secret = self
                .api
                .get(&name)
                .await
                .map_err(|e| api_error(&self.namespace, &format!("read {name}"), e))?;
            bytes.extend(data(&secret, "chunk").ok_or_else(|| corrupt(&name, "no chunk"))?);
        }
        if trellis_base::hash::sha256_hex(&bytes) != parts.sha256 {
            return Err(corrupt(&parts.id, "its parts do not add up to their digest"));
        }
        Ok(bytes)
    }

    pub async fn delete_parts(&self, id: &str) -> Result<(), StoreError> {
        self.delete_where(&format!("{PART_LABEL}={id}")).await
    }

    /// Creates commit `seq`; false when another write holds that place already.
    pub async fn create(&self, seq: u64, body: &Body, batch_size: u64) -> Result<bool, StoreError> {
        let labels = BTreeMap::from([
            (ROLE_LABEL.to_string(), "commit".to_string()),
            (BATCH_LABEL.to_string(), (seq / batch_size).to_string()),
        ]);
        let secret = match body {
            Body::Inline(bytes) => self.secret(commit_name(seq), labels, "op", bytes.clone()),
            Body::Parts(parts) => self.secret(
                commit_name(seq),
                labels,
                "parts",
                serde_json::to_vec(parts).expect("parts serialize"),
            ),
        };
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(true),
            Err(error) if is_status(&error, 409) => Ok(false),
            Err(error) => Err(api_error(&self.namespace, &format!("write commit {seq}"), error)),
        }
    }

    /// Commit `seq`'s op as JSON, or `None` when there is none (yet, or compacted away).
    pub async fn read(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let name = commit_name(seq);
        let Some(secret) = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&self.namespace, &format!("read commit {seq}"), e))?
        else {
            return Ok(None);
        };
        if let Some(op) = data(&secret, "op") {
            return Ok(Some(op));
        }
        let parts = data(&secret, "parts").ok_or_else(|| corrupt(&name, "neither op nor parts"))?;
        let parts: Parts = serde_json::from_slice(&parts).map_err(|e| corrupt(&name, &e.to_string()))?;
        Ok(Some(self.read_parts(&parts).await?))
    }

    /// Where the latest snapshot is, if there is one.
    pub async fn snapshot_ref(&self) -> Result<Option<SnapshotRef>, StoreError> {
        let Some(secret) = self
            .api
            .get_opt(SNAPSHOT)
            .await
            .map_err(|e| api_error(&self.namespace, "read the snapshot", e))?
        else {
            return Ok(None);
        };
        let reference = data(&secret, "snapshot").ok_or_else(|| corrupt(SNAPSHOT, "no snapshot key"))?;
        serde_json::from_slice(&reference)
            .map(Some)
            .map_err(|e| corrupt(SNAPSHOT, &e.to_string()))
    }

    /// The latest snapshot and its bytes.
    pub async fn snapshot(&self) -> Result<Option<(SnapshotRef, Vec<u8>)>, StoreError> {
        let Some(reference) = self.snapshot_ref().await? else {
            return Ok(None);
        };
        let bytes = self.read_parts(&reference.parts).await?;
        Ok(Some((reference, bytes)))
    }

    /// Points the snapshot at `reference` (its parts written before), unless it already points
    /// at a later commit (a compaction by a leader that lost the Lease meanwhile must not take
    /// the snapshot back).
    pub async fn set_snapshot(&self, reference: &SnapshotRef) -> Result<SnapshotSwap, StoreError> {
        let labels = BTreeMap::from([(ROLE_LABEL.to_string(), "snapshot".to_string())]);
        let bytes = serde_json::to_vec(reference).expect("snapshot references serialize");
        let mut secret = self.secret(SNAPSHOT.into(), labels, "snapshot", bytes);
        let fail = |e| api_error(&self.namespace, "write the snapshot", e);
        let existing = self.api.get_opt(SNAPSHOT).await.map_err(fail)?;
        let previous = match &existing {
            Some(existing) => {
                let bytes = data(existing, "snapshot").ok_or_else(|| corrupt(SNAPSHOT, "no snapshot key"))?;
                let previous: SnapshotRef =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(SNAPSHOT, &e.to_string()))?;
                if previous.seq >= reference.seq {
                    return Ok(SnapshotSwap::Later);
                }
                Some(previous)
            }
            None => None,
        };
        // With the resourceVersion read: a concurrent swap makes this one fail, not both win.
        let written = match existing {
            Some(existing) => {
                secret.metadata.resource_version = existing.metadata.resource_version;
                self.api.replace(SNAPSHOT, &PostParams::default(), &secret).await
            }
            None => self.api.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => Ok(SnapshotSwap::Replaced(previous)),
            Err(error) if is_status(&error, 409) => Ok(SnapshotSwap::Raced),
            Err(error) => Err(fail(error)),
        }
    }

    /// The batch labels of the Secrets of `role` (commits, parts) that exist.
    pub async fn batches(&self, role: &str) -> Result<std::collections::BTreeSet<u64>, StoreError> {
        let listed = self
            .api
            .list_metadata(&ListParams::default().labels(&format!("{ROLE_LABEL}={role}")))
            .await
            .map_err(|e| api_error(&self.namespace, &format!("list the store's {role} secrets"), e))?;
        Ok(listed
            .items
            .iter()
            .filter_map(|item| item.metadata.labels.as_ref()?.get(BATCH_LABEL)?.parse().ok())
            .collect())
    }

    /// Deletes the Secrets of `role` (commits, parts) labelled with batch `batch`.
    pub async fn delete_batch(&self, role: &str, batch: u64) -> Result<(), StoreError> {
        self.delete_where(&format!("{ROLE_LABEL}={role},{BATCH_LABEL}={batch}"))
            .await
    }

    async fn delete_where(&self, selector: &str) -> Result<(), StoreError> {
        self.api
            .delete_collection(&DeleteParams::default(), &ListParams::default().labels(selector))
            .await
            .map(|_| ())
            .map_err(|e| api_error(&self.namespace, &format!("delete secrets {selector}"), e))
    }

    /// Writes `bytes` under `name` (in parts when large); with `replace`, over what is there.
    /// Returns false when `name` exists and `replace` is not set.
    pub async fn put_blob(&self, name: &str, role: &str, bytes: &[u8], replace: bool) -> Result<bool, StoreError> {
        let labels = BTreeMap::from([(ROLE_LABEL.to_string(), role.to_string())]);
        let mut secret = if bytes.len() > CHUNK {
            let id = format!("{}-{}", role, trellis_base::hash::sha256_hex(bytes)[..16].to_owned());
            let parts = self.put_parts(&format!("{role}-part"), &id, bytes, 0).await?;
            let reference = serde_json::to_vec(&parts).expect("parts serialize");
            self.secret(name.to_string(), labels, "parts", reference)
        } else {
            self.secret(name.to_string(), labels, "payload", bytes.to_vec())
        };
        let fail = |e| api_error(&self.namespace, &format!("write {name}"), e);
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(true),
            Err(error) if is_status(&error, 409) && !replace => Ok(false),
            Err(error) if is_status(&error, 409) => {
                let existing = self.api.get(name).await.map_err(fail)?;
                secret.metadata.resource_version = existing.metadata.resource_version;
                self.api
                    .replace(name, &PostParams::default(), &secret)
                    .await
                    .map(|_| true)
                    .map_err(fail)
            }
            Err(error) => Err(fail(error)),
        }
    }

    /// What [`CommitLog::put_blob`] wrote under `name`, if anything.
    pub async fn get_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let secret = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| api_error(&self.namespace, &format!("read {name}"), e))?;
        let Some(secret) = secret else { return Ok(None) };
        if let Some(payload) = data(&secret, "payload") {
            return Ok(Some(payload));
        }
        let parts = data(&secret, "parts").ok_or_else(|| corrupt(name, "neither payload nor parts"))?;
        let parts: Parts = serde_json::from_slice(&parts).map_err(|e| corrupt(name, &e.to_string()))?;
        Ok(Some(self.read_parts(&parts).await?))
    }

    /// Deletes what [`CommitLog::put_blob`] wrote under `name`, parts included.
    pub async fn delete_blob(&self, name: &str) -> Result<(), StoreError> {
        let fail = |e| api_error(&self.namespace, &format!("delete {name}"), e);
        let Some(secret) = self.api.get_opt(name).await.map_err(fail)? else {
            return Ok(());
        };
        if let Some(parts) = data(&secret, "parts")
            && let Ok(parts) = serde_json::from_slice::<Parts>(&parts)
        {
            self.delete_parts(&parts.id).await?;
        }
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(error) => Err(fail(error)),
        }
    }

    /// The names of the Secrets of `role`.
    pub async fn names(&self, role: &str) -> Result<Vec<String>, StoreError> {
        let listed = self
            .api
            .list_metadata(&ListParams::default().labels(&format!("{ROLE_LABEL}={role}")))
            .await
            .map_err(|e| api_error(&self.namespace, &format!("list the store's {role} secrets"), e))?;
        Ok(listed.items.into_iter().filter_map(|item| item.metadata.name).collect())
    }

    /// Whether the namespace exists and this account may read the log: checked at start so that
    /// a misconfiguration is one clear error, not a stream of failed writes.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.api
            .list_metadata(&ListParams::default().labels(&format!("{ROLE_LABEL}=snapshot")).limit(1))
            .await
            .map(|_| ())
            .map_err(|e| api_error(&self.namespace, "list the store's secrets", e))
    }
}

fn data(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

fn corrupt(what: &str, message: &str) -> StoreError {
    StoreError::Corrupt {
        what: format!("Kubernetes store secret {what}"),
        message: message.to_string(),
    }
}
