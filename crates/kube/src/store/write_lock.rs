//! [`WriteLock`] on Kubernetes: a `coordination.k8s.io` Lease, `trellis-store-write-lock`, held
//! by one replica from admission to write, renewed while held, and taken over from a holder
//! that stopped renewing it once its duration has passed (by the taker's clock, as in leader
//! election). The lock is handed to the caller only after this replica replayed every commit,
//! so admission never judges a stale view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::oneshot;
use trellis_store::{StoreError, WriteLock};

use super::Shared;
use crate::lease::{LeaseConfig, Observed, release, try_acquire_or_renew};

const NAME: &str = "trellis-store-write-lock";
/// A dead holder's Lease is taken over after this long.
const DURATION: Duration = Duration::from_secs(2);
/// How long a write waits for the lock before it fails (and the user tries again).
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// How long after a successful renewal the hold is sure: well within the duration, since
/// another replica counts the duration from when it saw the renewal.
const SURE_FOR: Duration = Duration::from_millis(1300);

pub(super) async fn acquire(shared: Arc<Shared>) -> Result<WriteLock, StoreError> {
    // One holder per replica: the Lease names the replica, so two of its own writers would
    // both believe they hold it.
    let gate = shared.lock_gate.clone().lock_owned().await;
    let api: kube::Api<Lease> = kube::Api::namespaced(shared.client.clone(), &shared.config.namespace);
    let config = LeaseConfig {
        namespace: shared.config.namespace.clone(),
        name: NAME.into(),
        // This process's own name: a second process misconfigured with the same replica name,
        // or this replica restarted, never mistakes another's hold for its own.
        identity: format!("{}/{}", shared.config.identity, shared.process),
        duration: DURATION,
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut observed = Observed::nothing_yet();
    loop {
        match try_acquire_or_renew(&api, &config, &mut observed).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot reach the store's write lock"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Transaction(format!(
                "Kubernetes store: another replica held the write lock (Lease {NAME}) for {WAIT:?}; try again"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    *shared.lock_sure_until.lock().expect("lock state") = Some(Instant::now() + SURE_FOR);
    let (released, on_release) = oneshot::channel::<()>();
    tokio::spawn(hold(shared.clone(), api, config, on_release, gate));
    shared.caught_up().await?;
    Ok(WriteLock::holding(released))
}

/// Renews the Lease until the lock is dropped, then clears it; this replica's next writer waits
/// (on `gate`) until it is cleared.
async fn hold(
    shared: Arc<Shared>,
    api: kube::Api<Lease>,
    config: LeaseConfig,
    mut on_release: oneshot::Receiver<()>,
    gate: tokio::sync::OwnedMutexGuard<()>,
) {
    let mut observed = Observed::nothing_yet();
    loop {
        tokio::select! {
            _ = &mut on_release => break,
            () = tokio::time::sleep(DURATION / 3) => {
                let started = Instant::now();
                match try_acquire_or_renew(&api, &config, &mut observed).await {
                    Ok(true) => *shared.lock_sure_until.lock().expect("lock state") = Some(started + SURE_FOR),
                    Ok(false) => tracing::warn!("another replica took the store's write lock"),
                    Err(error) => tracing::warn!(%error, "cannot renew the store's write lock"),
                }
            }
        }
    }
    *shared.lock_sure_until.lock().expect("lock state") = None;
    release(&api, &config).await;
    drop(gate);
}
