//! Leader election on Kubernetes with a `coordination.k8s.io/v1` Lease, as client-go's leader
//! election does it: the holder renews the Lease; the others take it over once they have seen
//! it unchanged for longer than its duration (by their own clock, so clock skew between
//! replicas does not matter); writes carry the Lease's resourceVersion, so two replicas cannot
//! both win; a holder that cannot renew steps down before its Lease could run out.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name, written as the Lease's holder.
    pub identity: String,
    /// How long a Lease not renewed stays its holder's.
    pub duration: Duration,
}

/// This replica's part in the election.
pub struct LeaseLeadership {
    leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseLeadership {
    pub fn start(client: Client, config: LeaseConfig) -> Self {
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let task = tokio::spawn(campaign(api, config, leading_tx, stop_rx));
        LeaseLeadership { leading, stop, task }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Hands the Lease over at once (its holder cleared) and stops campaigning.
    pub async fn resign(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// What this replica last saw of the Lease, and when (by its own clock).
pub(crate) struct Observed {
    record: Option<LeaseSpec>,
    at: Instant,
}

impl Observed {
    pub(crate) fn nothing_yet() -> Self {
        Observed {
            record: None,
            at: Instant::now(),
        }
    }
}

async fn campaign(api: Api<Lease>, config: LeaseConfig, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
    let retry = config.duration / 4;
    let mut observed = Observed::nothing_yet();
    let mut renewed = Instant::now();
    loop {
        match try_acquire_or_renew(&api, &config, &mut observed).await {
            Ok(true) => {
                renewed = Instant::now();
                if !*leading.borrow() {
                    tracing::info!(identity = %config.identity, lease = %config.name, "leading the management plane (Kubernetes Lease)");
                }
                let _ = leading.send(true);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(identity = %config.identity, "another replica holds the Lease");
                }
                let _ = leading.send(false);
            }
            Err(error) => {
                tracing::warn!(%error, "leader election: cannot reach the Lease");
                // Step down before the Lease could have run out for the others.
                if *leading.borrow() && renewed.elapsed() >= config.duration * 2 / 3 {
                    tracing::warn!(identity = %config.identity, "no longer leading: the Lease could not be renewed");
                    let _ = leading.send(false);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.changed() => {
                if *leading.borrow() {
                    release(&api, &config).await;
                    let _ = leading.send(false);
                }
                return;
            }
        }
    }
}

/// Takes or renews the Lease; true while this replica holds it.
pub(crate) async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let duration_secs = config.duration.as_secs().max(1) as i32;
    let mine = LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(duration_secs),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        lease_transitions: Some(0),
        ..Default::default()
    };
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(mine),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    if observed.record.as_ref() != Some(&current) {
        observed.record = Some(current.clone());
        observed.at = Instant::now();
    }
    let holder = current.holder_identity.clone().unwrap_or_default();
    let held_for = Duration::from_secs(current.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64);
    let i_hold = holder == config.identity;
    if !i_hold && !holder.is_empty() && observed.at.elapsed() < held_for {
        return Ok(false);
    }
    let mut spec = current.clone();
    spec.holder_identity = Some(config.identity.clone());
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(now());
    if !i_hold {
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(current.lease_transitions.unwrap_or(0) + 1);
    }
    lease.spec = Some(spec);
    // The resourceVersion read makes this a compare-and-swap: a concurrent writer wins alone.
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(written) => {
            observed.record = written.spec;
            observed.at = Instant::now();
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Clears the holder so that another replica takes over without waiting out the Lease.
pub(crate) async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    if let Err(error) = api.replace(&config.name, &PostParams::default(), &lease).await {
        tracing::warn!(%error, "cannot release the Lease; it runs out instead");
    }
}
