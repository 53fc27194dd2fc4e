//! [`trellis_store::WriteLock`] on etcd: one key, `locks/writes`, held with a lease while a
//! replica runs admission and writes. A holder that dies loses it when its lease runs out; one
//! that lives renews the lease until it lets go. The lock is handed over only once this
//! replica's feed holds the last config write, so admission never judges a stale view.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::EtcdError;
use crate::store::Inner;

/// The lease of a lock whose holder died runs out after this long.
const TTL_SECS: i64 = 2;
/// How long a replica waits for the lock before the write fails (and the user tries again).
const WAIT: Duration = Duration::from_secs(20);

/// Takes the lock; returns what releases it when dropped or sent to.
pub(crate) async fn acquire(inner: Arc<Inner>) -> Result<oneshot::Sender<()>, EtcdError> {
    let key = inner.key("locks/writes");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lease = inner.client.lease_grant(TTL_SECS).await?;
        let response = inner.client.put_if_absent(key.clone(), Vec::new(), lease).await?;
        if response.succeeded {
            let (release, released) = oneshot::channel();
            tokio::spawn(hold(inner.clone(), lease, released));
            return Ok(release);
        }
        let _ = inner.client.lease_revoke(lease).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(EtcdError::Timeout(WAIT));
        }
        let revision = response.header.map(|h| h.revision).unwrap_or(0);
        tokio::select! {
            () = crate::election::until_deleted(&inner.client, key.clone(), revision + 1) => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Renews the lease until released, then revokes it (which deletes the key).
async fn hold(inner: Arc<Inner>, lease: i64, mut released: oneshot::Receiver<()>) {
    let every = Duration::from_secs(TTL_SECS as u64) / 3;
    loop {
        tokio::select! {
            _ = &mut released => break,
            () = tokio::time::sleep(every) => {
                if let Err(error) = inner.client.lease_keep_alive_once(lease).await {
                    tracing::warn!(%error, "cannot renew the write lock's lease");
                }
            }
        }
    }
    if let Err(error) = inner.client.lease_revoke(lease).await {
        tracing::warn!(%error, "cannot release the write lock (its lease runs out)");
    }
}
