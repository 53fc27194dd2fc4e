//! Where agents are connected, shared by the replicas: an agent holds one relay stream to one
//! replica, and any replica's API, `trellis check` and UI must see it connected.

use std::collections::BTreeMap;

use crate::Result;

pub trait PresenceShare: Send + Sync + 'static {
    /// Records the agents connected to `replica` (cluster -> its status, JSON), replacing what
    /// it recorded before. Records live a few seconds unless put again: a replica that dies
    /// takes its agents with it.
    fn put_presence(&self, replica: &str, agents: &BTreeMap<String, Vec<u8>>) -> Result<()>;

    /// Every replica's records: replica -> (cluster -> status JSON).
    fn presences(&self) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>>;
}

/// One replica's record as stored: cluster -> status, as one JSON object.
pub fn encode_presence(agents: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let value: BTreeMap<&String, serde_json::Value> = agents
        .iter()
        .map(|(cluster, status)| (cluster, serde_json::from_slice(status).unwrap_or_default()))
        .collect();
    serde_json::to_vec(&value).expect("statuses serialize")
}

/// A record written by [`encode_presence`]; `what` names it in the error.
pub fn decode_presence(what: &str, bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let agents: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| crate::StoreError::Corrupt {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    Ok(agents
        .into_iter()
        .map(|(cluster, status)| (cluster, serde_json::to_vec(&status).expect("JSON serializes")))
        .collect())
}
