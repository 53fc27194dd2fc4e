//! How much of large config changes the relay server sends at once, over all its streams.
//!
//! A thousand agents sent their full config at the same moment put a thousand configs in
//! buffers (stream queues, encoders, HTTP/2 send buffers) and split the machine a thousand
//! ways: every connection drains slowly, and a keepalive ping queued behind megabytes of data is
//! answered too late, so one side drops a healthy connection and the config starts over. With a
//! budget, a few streams send at full speed while the rest wait without data in flight (their
//! pings answered at once); a small change, such as one route, never waits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Changes smaller than this go at once: they cost little to hold and to send.
pub const SMALL_CHANGE_BYTES: usize = 256 * 1024;

/// Bytes of large changes in flight at once, over all streams.
pub struct SendBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
    /// How long one change may hold its share: a slow agent must not stall the others for good.
    hold_limit: Duration,
}

/// A share of the budget, held while its change is sent; released when dropped, or when its
/// hold limit passes (the send then goes on unpaced).
pub struct Paced {
    share: Option<(OwnedSemaphorePermit, Instant)>,
}

impl SendBudget {
    pub fn new(bytes: usize, hold_limit: Duration) -> Self {
        let total_kib = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        SendBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            hold_limit,
        }
    }

    /// Waits until a change of `bytes` may go. A change larger than the whole budget takes all of
    /// it. Waiters are served in order.
    pub async fn acquire(&self, bytes: usize) -> Paced {
        if bytes < SMALL_CHANGE_BYTES {
            return Paced { share: None };
        }
        let kib = (bytes / 1024).clamp(1, self.total_kib as usize) as u32;
        let permit = self
            .kib
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("the budget's semaphore is never closed");
        Paced {
            share: Some((permit, Instant::now() + self.hold_limit)),
        }
    }

    /// KiB not held by any change (for tests and metrics).
    pub fn available_kib(&self) -> usize {
        self.kib.available_permits()
    }
}

impl Paced {
    /// Whether this change holds a share of the budget.
    pub fn is_held(&self) -> bool {
        self.share.is_some()
    }

    /// Completes when the share's hold limit has passed; never when no share is held.
    pub async fn expired(&self) {
        match &self.share {
            Some((_, deadline)) => tokio::time::sleep_until(*deadline).await,
            None => std::future::pending().await,
        }
    }

    /// Gives the share back before the change is sent whole.
    pub fn release(&mut self) {
        self.share = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn small_changes_never_wait() {
        let budget = SendBudget::new(MIB, Duration::from_secs(10));
        let _all = budget.acquire(10 * MIB).await;
        assert_eq!(budget.available_kib(), 0);
        let small = tokio::time::timeout(Duration::from_millis(100), budget.acquire(1024)).await;
        assert!(!small.expect("a small change goes at once").is_held());
    }

    #[tokio::test]
    async fn large_changes_wait_for_room_and_get_it_when_one_ends() {
        let budget = Arc::new(SendBudget::new(8 * MIB, Duration::from_secs(10)));
        let first = budget.acquire(5 * MIB).await;
        assert!(first.is_held());
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire(5 * MIB).await.is_held() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "two 5 MiB changes do not fit in 8 MiB");
        drop(first);
        assert!(waiting.await.unwrap());
        assert_eq!(budget.available_kib(), 8 * 1024, "every share came back");
    }

    #[tokio::test]
    async fn a_share_expires_after_its_hold_limit() {
        let budget = SendBudget::new(MIB, Duration::from_millis(50));
        let mut paced = budget.acquire(MIB).await;
        let started = Instant::now();
        paced.expired().await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        paced.release();
        assert_eq!(budget.available_kib(), 1024);
        // Nothing held: never expires.
        let unheld = Paced { share: None };
        assert!(
            tokio::time::timeout(Duration::from_millis(200), unheld.expired())
                .await
                .is_err()
        );
    }
}
