//! Who may use the management API and what they did: API tokens (stored by the SHA-256 of their
//! value, never the value) and the audit log (append-only, pruned by count and age).

use serde::{Deserialize, Serialize};

use crate::Result;

/// One change, or one refused attempt at a change, on the management API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Set by the store: increasing, never reused.
    #[serde(default)]
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    pub user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How the caller authenticated: admin-token, token, client-certificate, oidc.
    pub authenticated_by: String,
    /// apply, delete, register, rotate, deregister, token-create, token-revoke, or the verb a
    /// refused request asked for.
    pub action: String,
    /// What it acted on: `Kind/namespace/name`, `cluster/NAME`, `token/NAME`.
    pub target: String,
    /// `ok`, `denied` (authorization refused it), `rejected` (invalid or conflicting), `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Fields that changed: `[{path, before, after}]` (Secret values never appear).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<serde_json::Value>,
}

/// How much audit history to keep; the older records go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRetention {
    pub max_records: u64,
    pub max_age_secs: u64,
}

/// An API token an admin issued, stored under the SHA-256 of its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenRecord {
    /// Unique; how the token is listed and revoked.
    pub name: String,
    /// The user and groups a request with this token acts as.
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub created_at: u64,
    /// Seconds since the Unix epoch; `None`: until revoked.
    pub expires_at: Option<u64>,
    pub created_by: String,
}

/// The management API's own records, beside the config.
pub trait AccessStore {
    /// Appends `record` (its `seq` is assigned), then drops records beyond `retention`, in one
    /// transaction. Returns the assigned sequence number.
    fn append_audit(&self, record: AuditRecord, retention: AuditRetention, now: u64) -> Result<u64>;
    /// Every kept record, oldest first.
    fn audit_records(&self) -> Result<Vec<AuditRecord>>;
    /// Stores a new token; refuses a name already in use (returns false).
    fn create_api_token(&self, token_hash: &str, record: &ApiTokenRecord) -> Result<bool>;
    fn api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>>;
    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>>;
    /// Removes the token named `name`; false when there is none.
    fn revoke_api_token(&self, name: &str) -> Result<bool>;
}
