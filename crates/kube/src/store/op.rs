//! One write to the store, as the commit log holds it, and its replay onto a replica's local
//! copy. Replay is deterministic: every replica that replays the same commits in the same order
//! holds the same resources, revisions, generations, audit numbers and token states, and a
//! conditional write (a token presented, an intermediate claimed) is decided once, at its place
//! in the log, identically everywhere.

use serde::{Deserialize, Serialize};
use trellis_api::{Resource, ResourceKey};
use trellis_model::{ClusterDiscovery, DiscoveryPatch};
use trellis_store::{
    AccessStore, ApiTokenRecord, ApplyOutcome, AuditRecord, AuditRetention, IntermediateClaim, IntermediateRecord,
    IssuanceStore, RedbStore, SilenceRecord, SilenceStore, Store, StoreError, TokenCheck, TokenRecord,
};

/// A write of the [`Store`] contract, with every input it depends on (the time included).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    Apply {
        resources: Vec<Resource>,
    },
    Delete {
        keys: Vec<ResourceKey>,
    },
    PutDiscovery {
        discovery: ClusterDiscovery,
    },
    PatchDiscovery {
        patch: DiscoveryPatch,
    },
    DeleteDiscovery {
        cluster: String,
    },
    PutToken {
        hash: String,
        record: TokenRecord,
    },
    ConsumeToken {
        hash: String,
        now: u64,
    },
    RecordCertificate {
        serial: String,
        cluster: String,
    },
    RevokeClusterCertificates {
        cluster: String,
    },
    AppendAudit {
        record: AuditRecord,
        retention: AuditRetention,
        now: u64,
    },
    CreateApiToken {
        hash: String,
        record: ApiTokenRecord,
    },
    RevokeApiToken {
        name: String,
    },
    ClaimIntermediate {
        record: IntermediateRecord,
        now: u64,
    },
    RevokeClusterIntermediates {
        cluster: String,
        now: u64,
    },
    VoidClusterTokens {
        cluster: String,
    },
    PutSilence {
        record: SilenceRecord,
    },
    DeleteSilence {
        code: String,
        target: Option<String>,
    },
}

impl Op {
    /// What the op is, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Apply { .. } => "apply",
            Op::Delete { .. } => "delete",
            Op::PutDiscovery { .. } => "put-discovery",
            Op::PatchDiscovery { .. } => "patch-discovery",
            Op::DeleteDiscovery { .. } => "delete-discovery",
            Op::PutToken { .. } => "put-token",
            Op::ConsumeToken { .. } => "consume-token",
            Op::RecordCertificate { .. } => "record-certificate",
            Op::RevokeClusterCertificates { .. } => "revoke-certificates",
            Op::AppendAudit { .. } => "append-audit",
            Op::CreateApiToken { .. } => "create-api-token",
            Op::RevokeApiToken { .. } => "revoke-api-token",
            Op::ClaimIntermediate { .. } => "claim-intermediate",
            Op::RevokeClusterIntermediates { .. } => "revoke-intermediates",
            Op::VoidClusterTokens { .. } => "void-tokens",
            Op::PutSilence { .. } => "put-silence",
            Op::DeleteSilence { .. } => "delete-silence",
        }
    }
}

/// What replaying an op returned, for the replica that wrote it.
#[derive(Debug)]
pub enum Outcome {
    Applied(Vec<ApplyOutcome>),
    Deleted(Vec<(ResourceKey, bool)>),
    Done,
    Token(TokenCheck),
    Count(usize),
    Sequence(u64),
    Flag(bool),
    Claim(IntermediateClaim),
}

/// Replays `op` onto `local`. An error is the op's own (a patch of a cluster with no
/// discovery), the same on every replica; it changes nothing.
pub fn replay(local: &RedbStore, op: Op) -> Result<Outcome, StoreError> {
    Ok(match op {
        Op::Apply { resources } => Outcome::Applied(local.apply(resources)?),
        Op::Delete { keys } => Outcome::Deleted(local.delete(&keys)?),
        Op::PutDiscovery { discovery } => {
            local.put_discovery(&discovery)?;
            Outcome::Done
        }
        Op::PatchDiscovery { patch } => {
            local.patch_discovery(&patch)?;
            Outcome::Done
        }
        Op::DeleteDiscovery { cluster } => {
            local.delete_discovery(&cluster)?;
            Outcome::Done
        }
        Op::PutToken { hash, record } => {
            local.put_token(&hash, &record)?;
            Outcome::Done
        }
        Op::ConsumeToken { hash, now } => Outcome::Token(local.consume_token(&hash, now)?),
        Op::RecordCertificate { serial, cluster } => {
            local.record_certificate(&serial, &cluster)?;
            Outcome::Done
        }
        Op::RevokeClusterCertificates { cluster } => Outcome::Count(local.revoke_cluster_certificates(&cluster)?),
        Op::AppendAudit { record, retention, now } => Outcome::Sequence(local.append_audit(record, retention, now)?),
        Op::CreateApiToken { hash, record } => Outcome::Flag(local.create_api_token(&hash, &record)?),
        Op::RevokeApiToken { name } => Outcome::Flag(local.revoke_api_token(&name)?),
        Op::ClaimIntermediate { record, now } => Outcome::Claim(local.claim_intermediate(&record, now)?),
        Op::RevokeClusterIntermediates { cluster, now } => {
            Outcome::Count(local.revoke_cluster_intermediates(&cluster, now)?)
        }
        Op::VoidClusterTokens { cluster } => Outcome::Count(local.void_cluster_tokens(&cluster)?),
        Op::PutSilence { record } => {
            local.put_silence(&record)?;
            Outcome::Done
        }
        Op::DeleteSilence { code, target } => Outcome::Flag(local.delete_silence(&code, target.as_deref())?),
    })
}
