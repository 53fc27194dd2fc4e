//! The cluster's mesh identity: an intermediate CA whose key the agent generates and the
//! management server's mesh root signs, and the short-lived SPIFFE certificates it issues to
//! this cluster's sidecars (delivered over SDS, renewed at two thirds of their life).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use trellis_pki::{Authority, CertifiedKey, KeyPem};
use trellis_relay::{RelayClient, SignIntermediateRequest};
use trellis_support::files::write_private;

use super::Agent;

/// The intermediate CA of this cluster and what it chains to.
pub struct ClusterCa {
    pub ca: Authority,
    pub root_pem: String,
    pub trust_domain: String,
    renew_at: SystemTime,
}

impl ClusterCa {
    fn from_parts(key: &str, chain: &str, root_pem: String, trust_domain: String) -> anyhow::Result<Self> {
        let ca = trellis_pki::intermediate_from_signed(KeyPem(key.to_string()), chain)?;
        let info = trellis_pki::inspect_pem(chain)?;
        Ok(ClusterCa {
            ca,
            root_pem,
            trust_domain,
            renew_at: trellis_pki::renew_at(info.not_before, info.not_after),
        })
    }

    /// The cached CA from an earlier run, if still before its renewal time.
    pub fn load(dir: &Path) -> Option<Self> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let ca = Self::from_parts(
            &read("ca.key")?,
            &read("ca-chain.pem")?,
            read("root.pem")?,
            read("trust-domain")?,
        )
        .ok()?;
        (ca.renew_at > SystemTime::now()).then_some(ca)
    }

    fn save(&self, dir: &Path, key: &KeyPem, chain: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_private(&dir.join("ca.key"), &key.0)?;
        std::fs::write(dir.join("ca-chain.pem"), chain)?;
        std::fs::write(dir.join("root.pem"), &self.root_pem)?;
        std::fs::write(dir.join("trust-domain"), &self.trust_domain)?;
        Ok(())
    }
}

/// How long a new trust bundle has to reach every proxy (of every cluster: the management server
/// sends it to all agents at once) before certificates under a new root are shown. Gloo's
/// MULTI_ROOT rotation does the same: first both roots, then the new intermediate.
const TRUST_PROPAGATION: Duration = Duration::from_secs(3);

/// The management server's word on the mesh's trust: proxies trust `bundle_pem` from now on, and
/// an intermediate that chains to another root than the active one is renewed (after
/// [`TRUST_PROPAGATION`]). Before the cluster has an intermediate there is nothing to change: its
/// first one comes with the bundle.
pub fn on_mesh_trust(agent: &Agent, trust: &trellis_relay::MeshTrust) {
    if trust.bundle_pem.is_empty() || trellis_pki::pem_to_der_certs(&trust.bundle_pem).is_err() {
        tracing::warn!("ignoring a mesh trust bundle without certificates");
        return;
    }
    let Some(current) = agent.mesh.borrow().clone() else {
        return;
    };
    let signed_by = trellis_pki::cert_sha256(&current.ca.root_pem()).unwrap_or_default();
    let stale = signed_by != trust.active_root_sha256;
    if !stale && current.root_pem == trust.bundle_pem {
        return;
    }
    let renew_at = if stale {
        tracing::info!(active_root = %trust.active_root_sha256, "the mesh root changed: trusting both roots, then renewing the cluster CA under the new one");
        SystemTime::now() + TRUST_PROPAGATION
    } else {
        current.renew_at
    };
    agent.mesh.send_replace(Some(Arc::new(ClusterCa {
        ca: current.ca.clone(),
        root_pem: trust.bundle_pem.clone(),
        trust_domain: current.trust_domain.clone(),
        renew_at: renew_at.min(current.renew_at),
    })));
}

pub fn mesh_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("mesh")
}

/// Keeps a valid cluster CA: asks the mesh root to sign a new one at first start and at two
/// thirds of each one's life. Proxies keep their certificates while this retries.
pub async fn keep_cluster_ca(agent: Arc<Agent>, mgmt: String, dir: PathBuf) {
    // A refusal can last (the server signs one live intermediate per cluster, and says so until an
    // operator rotates the cluster): retry at once at first, then no more than once a minute.
    let mut backoff = Duration::from_secs(1);
    // One key per intermediate, kept across retries: when an answer is lost, the server signs the
    // same key again (for a few minutes after the first signing), where a new key would be refused.
    let mut pending: Option<(KeyPem, String)> = None;
    // A new mesh root moves the renewal time forward (see `on_mesh_trust`).
    let mut changes = agent.mesh.subscribe();
    loop {
        let due = changes.borrow_and_update().as_ref().map(|ca| ca.renew_at);
        if let Some(at) = due
            && let Ok(wait) = at.duration_since(SystemTime::now())
        {
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
                _ = changes.changed() => {}
            }
            continue;
        }
        // Before the agent has registered there is no identity to ask with; the relay client
        // registers first, so wait for it quietly.
        if let trellis_relay::client::RelayCredentials::Tls(tls) = &*agent.credentials
            && !tls.has_identity()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let (key, csr) = match pending.take() {
            Some(pending) => pending,
            None => {
                match trellis_pki::new_key_and_csr(&format!("Trellis intermediate CA for cluster {}", agent.cluster)) {
                    Ok(fresh) => fresh,
                    Err(error) => {
                        tracing::error!(%error, "cannot create the cluster CA key");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
            }
        };
        match request_ca(&agent, &mgmt, &key, &csr).await {
            Ok((ca, chain)) => {
                if let Err(error) = ca.save(&dir, &key, &chain) {
                    tracing::error!(%error, "cannot cache the cluster CA; it is used anyway");
                }
                tracing::info!(trust_domain = %ca.trust_domain, "cluster intermediate CA signed by the mesh root");
                agent.mesh.send_replace(Some(Arc::new(ca)));
                backoff = Duration::from_secs(1);
            }
            Err(error) => {
                pending = Some((key, csr));
                tracing::warn!(error = %format!("{error:#}"), retry_in = ?backoff, "cannot get the cluster CA signed yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

async fn request_ca(agent: &Agent, mgmt: &str, key: &KeyPem, csr: &str) -> anyhow::Result<(ClusterCa, String)> {
    let response = agent
        .credentials
        .on_leader(mgmt, |channel| {
            let request = SignIntermediateRequest {
                csr_pem: csr.to_string(),
                cluster: agent.cluster.clone(),
            };
            async move { RelayClient::new(channel).sign_intermediate(request).await }
        })
        .await
        .map_err(|status| anyhow::anyhow!("signing refused: {}", status.message()))?;
    let ca = ClusterCa::from_parts(
        &key.0,
        &response.chain_pem,
        response.mesh_root_pem,
        response.trust_domain,
    )?;
    Ok((ca, response.chain_pem))
}

/// Workload certificates by SPIFFE ID, reissued when due or when the cluster CA changed.
pub struct WorkloadCerts {
    ttl: Duration,
    issued: Mutex<BTreeMap<String, Issued>>,
    /// Bumped when a certificate comes due, so snapshots are rebuilt (and reissue it).
    pub due: watch::Sender<u64>,
}

struct Issued {
    cert: CertifiedKey,
    ca_cert: String,
    renew_at: SystemTime,
}

impl WorkloadCerts {
    pub fn new(ttl: Duration) -> Self {
        WorkloadCerts {
            ttl,
            issued: Mutex::new(BTreeMap::new()),
            due: watch::Sender::new(0),
        }
    }

    /// The current certificate for `spiffe_id`, issuing one if there is none or it is due.
    pub fn get(&self, ca: &ClusterCa, spiffe_id: &str) -> anyhow::Result<CertifiedKey> {
        let mut issued = self.issued.lock().expect("certs lock");
        let now = SystemTime::now();
        if let Some(current) = issued.get(spiffe_id)
            && current.renew_at > now
            && current.ca_cert == ca.ca.cert_pem
        {
            return Ok(current.cert.clone());
        }
        let cert = ca.ca.issue_workload_cert(spiffe_id, self.ttl, now)?;
        let info = trellis_pki::inspect_pem(&cert.cert_pem)?;
        tracing::info!(spiffe_id, serial = %info.serial_hex, ttl = ?self.ttl, "issued a workload certificate");
        issued.insert(
            spiffe_id.to_string(),
            Issued {
                cert: cert.clone(),
                ca_cert: ca.ca.cert_pem.clone(),
                renew_at: trellis_pki::renew_at(info.not_before, info.not_after),
            },
        );
        Ok(cert)
    }

    /// Wakes the snapshot builder whenever a certificate reaches its renewal time.
    pub async fn watch_due(self: Arc<Self>) {
        loop {
            let next = self
                .issued
                .lock()
                .expect("certs lock")
                .values()
                .map(|i| i.renew_at)
                .min();
            let wait = next
                .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(Duration::from_secs(1));
            tokio::time::sleep(wait.clamp(Duration::from_millis(100), Duration::from_secs(1))).await;
            let now = SystemTime::now();
            if self
                .issued
                .lock()
                .expect("certs lock")
                .values()
                .any(|i| i.renew_at <= now)
            {
                self.due.send_modify(|n| *n += 1);
            }
        }
    }
}
