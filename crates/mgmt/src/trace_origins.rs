//! The traces that store writes belong to, so the translation that takes a write in continues
//! its trace: the API records an apply's `traceparent` with the store revision it wrote, and the
//! translator takes the latest one its translation covers. Bounded, and only filled while spans
//! are exported (without export there is no `traceparent`).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Writes remembered at most; the oldest are forgotten first.
const KEPT: usize = 64;

#[derive(Default)]
pub struct TraceOrigins {
    by_revision: Mutex<VecDeque<(u64, String)>>,
}

impl TraceOrigins {
    /// The write that reached store revision `revision` belongs to the trace of `traceparent`.
    pub fn record(&self, revision: u64, traceparent: Option<String>) {
        let Some(traceparent) = traceparent else { return };
        let mut origins = self.by_revision.lock().expect("trace origins lock");
        if origins.len() == KEPT {
            origins.pop_front();
        }
        origins.push_back((revision, traceparent));
    }

    /// The trace of the latest write up to `revision`, forgetting every write up to it: a burst
    /// of applies translated together continues the last one's trace.
    pub fn take_up_to(&self, revision: u64) -> Option<String> {
        let mut origins = self.by_revision.lock().expect("trace origins lock");
        let mut latest = None;
        while origins.front().is_some_and(|(r, _)| *r <= revision) {
            latest = origins.pop_front().map(|(_, traceparent)| traceparent);
        }
        latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_translation_continues_the_latest_write_it_covers() {
        let origins = TraceOrigins::default();
        origins.record(3, Some("a".into()));
        origins.record(5, Some("b".into()));
        origins.record(9, Some("c".into()));
        origins.record(10, None);
        assert_eq!(origins.take_up_to(2), None);
        assert_eq!(origins.take_up_to(6).as_deref(), Some("b"));
        assert_eq!(origins.take_up_to(6), None);
        assert_eq!(origins.take_up_to(12).as_deref(), Some("c"));
    }

    #[test]
    fn only_the_latest_writes_are_kept() {
        let origins = TraceOrigins::default();
        for revision in 0..(KEPT as u64 + 10) {
            origins.record(revision, Some(revision.to_string()));
        }
        assert_eq!(origins.by_revision.lock().unwrap().len(), KEPT);
        assert_eq!(origins.take_up_to(u64::MAX), Some((KEPT as u64 + 9).to_string()));
    }
}
