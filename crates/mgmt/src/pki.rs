//! The management server's certificate authorities, loaded from `--data-dir/pki` or generated
//! there at first start (unless the operator supplies them).
//!
//! ```text
//!  relay:  root ─▶ signing CA ─▶ server certificate (DNS SAN = relay authority)
//!                              └▶ agent client certificates (from agents' CSRs)
//!  mesh:   mesh root ─▶ one intermediate per cluster (from the agents' CSRs) ─▶ workload certificates (agents)
//! ```
//!
//! Private keys are written with mode 0600 and never logged (`KeyPem` redacts itself).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use trellis_pki::{Authority, CertifiedKey, KeyPem};

use super::config::MgmtConfig;

const YEAR: Duration = Duration::from_secs(365 * 86400);

/// How the relay authenticates agents.
pub enum RelaySecurity {
    /// Plaintext; the agent's Hello is believed. Demos only.
    Insecure,
    Tls(RelayTls),
}

pub struct RelayTls {
    pub server: CertifiedKey,
    /// The root agents trust for the server and that client certificates must chain to.
    pub root_pem: String,
    /// Signs agent CSRs; `None` with `--disable-ca`.
    pub signer: Option<Authority>,
    pub client_cert_ttl: Duration,
    pub authority: String,
}

/// The mesh PKI: the root that signs cluster intermediates now (see [`super::root_trust`]).
pub struct MeshCa {
    pub trust_domain: String,
    /// The root from the flags or the data dir: the mesh root while no RootTrustPolicy names
    /// another.
    pub base: Authority,
    /// `--intermediate-ttl`: unless a RootTrustPolicy sets `intermediateCertOptions.ttlDays`.
    pub intermediate_ttl: Duration,
    /// Where the public trust state is kept (`mesh-trust.json`) and a generated root's files.
    pub(super) dir: PkiDir,
    pub(super) current: tokio::sync::watch::Sender<std::sync::Arc<super::root_trust::MeshRoot>>,
    /// Why the stored RootTrustPolicy cannot be applied, while it cannot (`trellis check`).
    pub(super) problem: std::sync::Mutex<Option<String>>,
    /// Several replicas share the store: a root generated here would be this replica's alone.
    pub(super) replicated: bool,
}

impl MeshCa {
    /// The root that signs now, with the bundle every proxy trusts.
    pub fn current(&self) -> std::sync::Arc<super::root_trust::MeshRoot> {
        self.current.borrow().clone()
    }

    /// Why the stored RootTrustPolicy is not in force, if it is not.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().expect("problem lock").clone()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<std::sync::Arc<super::root_trust::MeshRoot>> {
        self.current.subscribe()
    }
}

pub(super) fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes a file readable by its owner only.
pub(super) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

pub(super) struct PkiDir(PathBuf);

impl PkiDir {
    pub(super) fn new(path: PathBuf) -> PkiDir {
        PkiDir(path)
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub(super) fn exists(&self, name: &str) -> bool {
        self.path(&format!("{name}.pem")).is_file() && self.path(&format!("{name}.key")).is_file()
    }

    pub(super) fn load_authority(&self, name: &str, chain_pem: &str) -> anyhow::Result<Authority> {
        let cert = read(&self.path(&format!("{name}.pem")))?;
        let key = read(&self.path(&format!("{name}.key")))?;
        Authority::from_pem(&cert, &key, chain_pem).with_context(|| format!("{}", self.path(name).display()))
    }

    pub(super) fn save(&self, name: &str, cert_pem: &str, key: &KeyPem) -> anyhow::Result<()> {
        std::fs::write(self.path(&format!("{name}.pem")), cert_pem)?;
        write_private(&self.path(&format!("{name}.key")), &key.0)
    }
}

/// An authority the operator supplied: its certificate file may carry its chain after it.
fn operator_authority(cert: &Path, key: &Path, root_pem: &str) -> anyhow::Result<Authority> {
    Authority::from_pem(&read(cert)?, &read(key)?, root_pem)
        .with_context(|| format!("operator CA {} / {}", cert.display(), key.display()))
}

fn operator_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    Ok(CertifiedKey {
        cert_pem: read(cert)?,
        key: KeyPem(read(key)?),
    })
}

pub fn load_or_create(config: &MgmtConfig) -> anyhow::Result<(RelaySecurity, MeshCa)> {
    let dir = PkiDir(config.data_dir.join("pki"));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("cannot create {}", dir.0.display()))?;
    let now = SystemTime::now();
    let relay = if config.insecure {
        RelaySecurity::Insecure
    } else {
        RelaySecurity::Tls(relay_tls(config, &dir, now)?)
    };
    let root = match &config.mesh_root {
        Some((cert, key)) => operator_authority(cert, key, "")?,
        None if dir.exists("mesh-root") => dir.load_authority("mesh-root", "")?,
        None => {
            let root = Authority::generate_root("Trellis mesh root CA", 10 * YEAR, now)?;
            dir.save("mesh-root", &root.cert_pem, &root.key)?;
            tracing::info!(path = %dir.path("mesh-root.pem").display(), "generated the mesh root CA");
            root
        }
    };
    let mut mesh = super::root_trust::mesh_ca(root, config.trust_domain.clone(), config.intermediate_ttl, dir)?;
    mesh.replicated = !matches!(config.store, super::config::StoreChoice::Redb);
    Ok((relay, mesh))
}

fn relay_tls(config: &MgmtConfig, dir: &PkiDir, now: SystemTime) -> anyhow::Result<RelayTls> {
    let authority = config.relay_authority.clone();
    let (root_pem, signer, server) = if config.disable_ca || config.disable_ca_cert_generation {
        let root_pem = read(config.relay_root_ca.as_ref().expect("validated"))?;
        let signer = match (&config.relay_signing, config.disable_ca) {
            (Some((cert, key)), false) => Some(operator_authority(cert, key, &root_pem)?),
            _ => None,
        };
        let (cert, key) = config.relay_server.as_ref().expect("validated");
        (root_pem, signer, operator_certified_key(cert, key)?)
    } else {
        let root = if dir.exists("relay-root") {
            dir.load_authority("relay-root", "")?
        } else {
            let root = Authority::generate_root("Trellis relay root CA", 10 * YEAR, now)?;
            dir.save("relay-root", &root.cert_pem, &root.key)?;
            tracing::info!(path = %dir.path("relay-root.pem").display(), "generated the relay root CA");
            root
        };
        let signer = if dir.exists("relay-signing") {
            dir.load_authority("relay-signing", &root.cert_pem)?
        } else {
            let signer = root.generate_intermediate("Trellis relay signing CA", 5 * YEAR, now)?;
            dir.save("relay-signing", &signer.cert_pem, &signer.key)?;
            signer
        };
        // The server certificate is reissued when missing or when the authority changed.
        let existing = dir.exists("relay-server").then(|| -> anyhow::Result<CertifiedKey> {
            operator_certified_key(&dir.path("relay-server.pem"), &dir.path("relay-server.key"))
        });
        let server = match existing.transpose()? {
            Some(server)
                if trellis_pki::inspect_pem(&server.cert_pem)?
                    .dns_names
                    .contains(&authority) =>
            {
                server
            }
            _ => {
                let server = signer.issue_server_cert(std::slice::from_ref(&authority), YEAR, now)?;
                dir.save("relay-server", &server.cert_pem, &server.key)?;
                tracing::info!(authority, "issued the relay server certificate");
                server
            }
        };
        (root.cert_pem.clone(), Some(signer), server)
    };
    Ok(RelayTls {
        server,
        root_pem,
        signer,
        client_cert_ttl: config.client_cert_ttl,
        authority,
    })
}
