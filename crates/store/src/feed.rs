//! The store's change feed: every committed write, in revision order, for the translator to
//! follow instead of re-reading the whole store after each change.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use trellis_api::{Resource, ResourceKey};
use trellis_model::{ClusterDiscovery, DiscoveryPatch};

/// One committed change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// A resource created or updated (`Some`), or deleted (`None`).
    Resource {
        key: ResourceKey,
        resource: Option<Box<Resource>>,
    },
    /// A cluster's discovery reported whole (`Some`) or forgotten (`None`).
    Discovery {
        cluster: String,
        discovery: Option<Box<ClusterDiscovery>>,
    },
    /// Workloads of a cluster's discovery changed.
    DiscoveryPatch(Box<DiscoveryPatch>),
}

/// What `watch` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Watch {
    /// The changes after the revision asked for, up to `revision` (none if the wait timed out).
    Changes { revision: u64, changes: Vec<Change> },
    /// The feed no longer reaches back to the revision asked for (it keeps the most recent
    /// changes only, and starts empty at each start): read everything again, as of `revision`.
    Resync { revision: u64 },
}

/// The most recent changes kept; a watcher further behind resynchronizes.
const KEPT: usize = 200_000;

/// The recent changes of a store, in revision order, with waiting watchers. A replicated backend
/// fills it from its own watch of the shared store.
pub struct Feed {
    state: Mutex<FeedState>,
    changed: Condvar,
}

struct FeedState {
    /// The revision the store is at.
    revision: u64,
    /// (revision, change), oldest first; every revision after `first` is here.
    log: VecDeque<(u64, Change)>,
    /// The oldest revision a watcher may start after without resynchronizing.
    first: u64,
}

impl Feed {
    pub fn new(revision: u64) -> Self {
        Feed {
            state: Mutex::new(FeedState {
                revision,
                log: VecDeque::new(),
                first: revision,
            }),
            changed: Condvar::new(),
        }
    }

    pub fn revision(&self) -> u64 {
        self.state.lock().expect("feed lock").revision
    }

    /// Records a committed write. The caller holds the store's writer lock, so revisions arrive
    /// in order.
    pub fn publish(&self, revision: u64, changes: Vec<Change>) {
        let mut state = self.state.lock().expect("feed lock");
        for change in changes {
            state.log.push_back((revision, change));
        }
        state.revision = state.revision.max(revision);
        while state.log.len() > KEPT {
            if let Some((dropped, _)) = state.log.pop_front() {
                state.first = dropped;
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until the feed has reached `revision`; false if `timeout` passed first.
    pub fn wait_for(&self, revision: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().expect("feed lock");
        while state.revision < revision {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self.changed.wait_timeout(state, deadline - now).expect("feed lock").0;
        }
        true
    }

    /// Forgets every kept change and stands at `revision`: watchers behind it read everything
    /// again. For a backend that lost part of its history (a compacted replicated log).
    pub fn reset(&self, revision: u64) {
        let mut state = self.state.lock().expect("feed lock");
        state.log.clear();
        state.revision = state.revision.max(revision);
        state.first = state.revision;
        drop(state);
        self.changed.notify_all();
    }

    pub fn watch(&self, since: u64, timeout: Duration) -> Watch {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().expect("feed lock");
        loop {
            if since < state.first {
                return Watch::Resync {
                    revision: state.revision,
                };
            }
            if state.revision > since {
                let start = state.log.partition_point(|(revision, _)| *revision <= since);
                let changes = state.log.range(start..).map(|(_, change)| change.clone()).collect();
                return Watch::Changes {
                    revision: state.revision,
                    changes,
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Watch::Changes {
                    revision: state.revision,
                    changes: Vec::new(),
                };
            }
            state = self.changed.wait_timeout(state, deadline - now).expect("feed lock").0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleted(name: &str) -> Change {
        Change::Discovery {
            cluster: name.to_string(),
            discovery: None,
        }
    }

    #[test]
    fn a_watcher_gets_what_came_after_its_revision() {
        let feed = Feed::new(4);
        assert_eq!(
            feed.watch(4, Duration::ZERO),
            Watch::Changes {
                revision: 4,
                changes: vec![]
            }
        );
        // Before the feed started: only a full read can tell.
        assert_eq!(feed.watch(3, Duration::ZERO), Watch::Resync { revision: 4 });
        feed.publish(5, vec![deleted("a"), deleted("b")]);
        feed.publish(6, vec![deleted("c")]);
        assert_eq!(
            feed.watch(5, Duration::ZERO),
            Watch::Changes {
                revision: 6,
                changes: vec![deleted("c")]
            }
        );
        assert_eq!(
            feed.watch(4, Duration::ZERO),
            Watch::Changes {
                revision: 6,
                changes: vec![deleted("a"), deleted("b"), deleted("c")]
            }
        );
    }

    #[test]
    fn a_waiting_watcher_wakes_on_the_next_write() {
        let feed = std::sync::Arc::new(Feed::new(0));
        let writer = feed.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.publish(1, vec![deleted("a")]);
        });
        let started = Instant::now();
        let seen = feed.watch(0, Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            seen,
            Watch::Changes {
                revision: 1,
                changes: vec![deleted("a")]
            }
        );
        handle.join().unwrap();
    }

    #[test]
    fn a_watcher_left_behind_resynchronizes() {
        let feed = Feed::new(0);
        for revision in 1..=(KEPT as u64 + 10) {
            feed.publish(revision, vec![deleted("x")]);
        }
        assert!(matches!(feed.watch(1, Duration::ZERO), Watch::Resync { .. }));
        let Watch::Changes { changes, .. } = feed.watch(KEPT as u64, Duration::ZERO) else {
            panic!("recent revisions are kept");
        };
        assert_eq!(changes.len(), 10);
    }
}
