//! Insight silences: an admin's record that an insight (a code, maybe one target) is known and
//! accepted. Kept beside the config so they survive restarts.

use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceRecord {
    pub code: String,
    /// `None`: the code everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub created_by: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl SilenceRecord {
    /// One silence per code and target.
    pub fn key(&self) -> String {
        silence_key(&self.code, self.target.as_deref())
    }
}

pub fn silence_key(code: &str, target: Option<&str>) -> String {
    format!("{code}|{}", target.unwrap_or("*"))
}

pub trait SilenceStore {
    /// Stores `record`, replacing a silence of the same code and target.
    fn put_silence(&self, record: &SilenceRecord) -> Result<()>;
    /// Removes the silence of `code` and `target`; false when there is none.
    fn delete_silence(&self, code: &str, target: Option<&str>) -> Result<bool>;
    /// Every silence, by code then target.
    fn silences(&self) -> Result<Vec<SilenceRecord>>;
}
