//! What each connected proxy has been sent, has accepted and has rejected.
//!
//! The board is keyed by stream, not node id: a proxy that reconnects opens
//! its new stream before the old one is torn down, and the old stream's
//! cleanup must not erase the new entry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Status of one connected proxy (one ADS stream).
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyStatus {
    pub node_id: String,
    pub connected_since: SystemTime,
    /// Envoy's release (`1.40.0`), as its first request's node said.
    pub envoy_version: Option<String>,
    /// By type URL, for every type the proxy subscribed to.
    pub types: BTreeMap<String, TypeStatus>,
}

/// Status of one resource type on one proxy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeStatus {
    pub last_sent_version: Option<String>,
    pub last_acked_version: Option<String>,
    /// The proxy's error message while our latest response stands rejected.
    pub last_nack: Option<String>,
}

/// Cloneable handle on the status of all connected proxies.
#[derive(Clone, Debug, Default)]
pub struct ProxyStatusBoard {
    inner: Arc<Mutex<BTreeMap<u64, ProxyStatus>>>,
}

impl ProxyStatusBoard {
    /// All connected proxies, ordered by node id then connection time.
    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        let mut all: Vec<ProxyStatus> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| (&a.node_id, a.connected_since).cmp(&(&b.node_id, b.connected_since)));
        all
    }

    /// `f` of every proxy's status, under the lock and without copying the statuses, in the
    /// order of [`snapshot`](Self::snapshot): what a periodic report of a thousand proxies needs.
    pub fn summarize<T>(&self, f: impl Fn(&ProxyStatus) -> T) -> Vec<T> {
        let board = self.lock();
        let mut all: Vec<&ProxyStatus> = board.values().collect();
        all.sort_by(|a, b| (&a.node_id, a.connected_since).cmp(&(&b.node_id, b.connected_since)));
        all.into_iter().map(f).collect()
    }

    pub(crate) fn connect(&self, stream_id: u64, node_id: &str, envoy_version: Option<String>) {
        let status = ProxyStatus {
            node_id: node_id.to_owned(),
            connected_since: SystemTime::now(),
            envoy_version,
            types: BTreeMap::new(),
        };
        self.lock().insert(stream_id, status);
    }

    pub(crate) fn update(&self, stream_id: u64, types: BTreeMap<String, TypeStatus>) {
        if let Some(status) = self.lock().get_mut(&stream_id) {
            status.types = types;
        }
    }

    pub(crate) fn disconnect(&self, stream_id: u64) {
        self.lock().remove(&stream_id);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, ProxyStatus>> {
        // The map is always left consistent, so a panic elsewhere while
        // holding the lock does not make the data unusable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_keeps_new_entry_when_old_stream_ends() {
        let board = ProxyStatusBoard::default();
        board.connect(1, "a", None);
        board.connect(2, "a", None);
        board.disconnect(1);
        let all = board.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].node_id, "a");
    }

    #[test]
    fn summaries_come_in_node_order() {
        let board = ProxyStatusBoard::default();
        board.connect(1, "b", None);
        board.connect(2, "a", None);
        assert_eq!(board.summarize(|s| s.node_id.clone()), ["a", "b"]);
    }

    #[test]
    fn update_replaces_type_status() {
        let board = ProxyStatusBoard::default();
        board.connect(7, "b", None);
        let mut types = BTreeMap::new();
        types.insert(
            "t".to_owned(),
            TypeStatus {
                last_nack: Some("boom".into()),
                ..Default::default()
            },
        );
        board.update(7, types.clone());
        assert_eq!(board.snapshot()[0].types, types);
        board.disconnect(7);
        assert!(board.snapshot().is_empty());
    }
}
