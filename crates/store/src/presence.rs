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
