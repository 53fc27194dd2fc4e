//! RootTrustPolicy applied to the mesh PKI: which root signs the cluster intermediates, which
//! roots every proxy trusts, and how long intermediates live.
//!
//! ```text
//!  stored config ──▶ desired root ──▶ switch? ──▶ MeshRoot (watch) ──▶ relay streams: MeshTrust{bundle, active}
//!  (policy, Secret)   (checked here)    │                               agents re-request their intermediate
//!                                       └▶ the previous root stays in the bundle (passive) for one
//!                                          intermediate lifetime, so old and new certificates keep
//!                                          verifying each other while the clusters move over
//! ```
//!
//! Gloo's semantics: <https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/root_trust_policy/>.
//! A root from a Secret stays in the store: its key is never written elsewhere nor logged.
//! `mesh-trust.json` in the PKI dir holds certificates only, so that a restart knows which root
//! the agents hold and which earlier ones they still need.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use trellis_api::{CommonCertOptions, Kind, MgmtServerCa, Resource, RootTrustPolicySpec, SecretSpec, Spec};
use trellis_pki::Authority;

use super::pki::{MeshCa, PkiDir};

const DAY: Duration = Duration::from_secs(86400);
/// Gloo's default lifetime of a generated certificate (`CommonCertOptions.ttlDays`).
const DEFAULT_TTL_DAYS: u32 = 365;
const STATE_FILE: &str = "mesh-trust.json";

/// The mesh root in force.
pub struct MeshRoot {
    pub signer: Authority,
    /// The active root certificate and its hex SHA-256.
    pub root_pem: String,
    pub root_sha256: String,
    /// The active root first, then every other root still trusted.
    pub bundle_pem: String,
    pub intermediate_ttl: Duration,
    /// Earlier active roots, trusted until their intermediates can have expired.
    previous: Vec<PreviousRoot>,
    /// Where the root comes from, for logs and errors (never key material).
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreviousRoot {
    pem: String,
    /// Unix seconds after which nothing it signed is live any more.
    until: u64,
}

/// What `mesh-trust.json` keeps: public certificates only.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrustState {
    active_pem: String,
    previous: Vec<PreviousRoot>,
}

/// What the stored config asks for.
pub struct Desired {
    signer: Authority,
    intermediate_ttl: Duration,
    /// `passiveCertificateAuthorities` certificates.
    passive: Vec<String>,
    source: String,
}

/// The mesh CA at start: the base root signs until [`reconcile`] has read the stored config;
/// what the agents hold (the active root of the last run and earlier roots) comes from the
/// state file.
pub(super) fn mesh_ca(
    base: Authority,
    trust_domain: String,
    intermediate_ttl: Duration,
    dir: PkiDir,
) -> anyhow::Result<MeshCa> {
    let state: TrustState = match std::fs::read_to_string(dir.path(STATE_FILE)) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}", dir.path(STATE_FILE).display()))?,
        Err(_) => TrustState::default(),
    };
    // Until the first reconcile the root the agents hold is the one of the last run.
    let root_pem = if state.active_pem.is_empty() {
        base.root_pem()
    } else {
        state.active_pem
    };
    let root = MeshRoot {
        signer: base.clone(),
        root_sha256: trellis_pki::cert_sha256(&root_pem)?,
        bundle_pem: bundle(&root_pem, &[], &state.previous),
        root_pem,
        intermediate_ttl,
        previous: state.previous,
        source: "the management server's own root".to_string(),
    };
    Ok(MeshCa {
        trust_domain,
        base,
        intermediate_ttl,
        dir,
        current: tokio::sync::watch::Sender::new(Arc::new(root)),
        problem: std::sync::Mutex::new(None),
        replicated: false,
    })
}

/// The root the stored config asks for. Errors name the resource and field.
pub fn desired(resources: &[Resource], mesh: &MeshCa, now: SystemTime) -> Result<Desired, String> {
    let Some((id, namespace, spec)) = policy(resources) else {
        return Ok(Desired {
            signer: mesh.base.clone(),
            intermediate_ttl: mesh.intermediate_ttl,
            passive: Vec::new(),
            source: "the management server's own root".to_string(),
        });
    };
    let config = &spec.config;
    let (signer, source) = match &config.mgmt_server_ca {
        Some(MgmtServerCa {
            secret_ref: Some(reference),
            ..
        }) => {
            let field = format!("{id}: spec.config.mgmtServerCa.secretRef");
            let ns = if reference.namespace.is_empty() {
                namespace
            } else {
                &reference.namespace
            };
            let secret = find_secret(resources, ns, &reference.name).map_err(|e| format!("{field}: {e}"))?;
            let root =
                root_from_secret(secret, now).map_err(|e| format!("{field}: Secret {ns}/{}: {e}", reference.name))?;
            (root, format!("Secret {ns}/{} ({id})", reference.name))
        }
        Some(MgmtServerCa { generated: Some(_), .. }) if mesh.replicated => {
            return Err(format!(
                "{id}: spec.config.mgmtServerCa.generated: with several management server replicas (--store etcd) each would generate a root of its own, and clusters signed by different replicas would not trust each other; give the root as spec.config.mgmtServerCa.secretRef"
            ));
        }
        Some(MgmtServerCa {
            generated: Some(options),
            ..
        }) => (
            generated_root(&mesh.dir, options, now)
                .map_err(|e| format!("{id}: spec.config.mgmtServerCa.generated: {e:#}"))?,
            format!("a root generated for {id}"),
        ),
        _ => (mesh.base.clone(), "the management server's own root".to_string()),
    };
    let intermediate_ttl = config
        .intermediate_cert_options
        .as_ref()
        .and_then(|o| o.ttl_days)
        .map_or(mesh.intermediate_ttl, |days| DAY * days);
    let mut passive = Vec::new();
    for (i, ca) in config.passive_certificate_authorities.iter().enumerate() {
        let Some(reference) = &ca.secret_ref else { continue };
        let field = format!("{id}: spec.config.passiveCertificateAuthorities[{i}].secretRef");
        let ns = if reference.namespace.is_empty() {
            namespace
        } else {
            &reference.namespace
        };
        let secret = find_secret(resources, ns, &reference.name).map_err(|e| format!("{field}: {e}"))?;
        passive.push(passive_from_secret(secret).map_err(|e| format!("{field}: Secret {ns}/{}: {e}", reference.name))?);
    }
    Ok(Desired {
        signer,
        intermediate_ttl,
        passive,
        source,
    })
}

/// The RootTrustPolicy in force: the first by namespace and name (the others get a WARNING from
/// translation). `(Kind/namespace/name, namespace, spec)`.
fn policy(resources: &[Resource]) -> Option<(String, &str, &RootTrustPolicySpec)> {
    resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::RootTrustPolicy(spec) => Some((r.key().to_string(), r.metadata.namespace.as_str(), spec)),
            _ => None,
        })
        .min_by(|a, b| a.0.cmp(&b.0))
}

fn find_secret<'a>(resources: &'a [Resource], namespace: &str, name: &str) -> Result<&'a SecretSpec, String> {
    resources
        .iter()
        .find_map(|r| match &r.spec {
            Spec::Secret(secret) if r.metadata.namespace == namespace && r.metadata.name == name => Some(secret),
            _ => None,
        })
        .ok_or_else(|| format!("Secret {namespace}/{name} does not exist"))
}

fn pick(secret: &SecretSpec, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| secret.value(k))
        .filter(|v| v.contains("-----BEGIN"))
}

fn first_cert(pem: &str) -> String {
    trellis_pki::pem_to_der_certs(pem)
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .map(|der| trellis_pki::der_to_pem(&der))
        .unwrap_or_else(|| pem.to_string())
}

/// A root trusted but not signing, from a Secret: its certificate only (`root-cert.pem`, else
/// `ca-cert.pem`, `tls.crt` or `ca.crt`), which must be a CA.
pub fn passive_from_secret(secret: &SecretSpec) -> Result<String, String> {
    let cert = pick(secret, &["root-cert.pem", "ca-cert.pem", "tls.crt", "ca.crt"])
        .ok_or("has no PEM root-cert.pem or ca-cert.pem: the CA certificate to trust")?;
    let info = trellis_pki::inspect_pem(&cert).map_err(|e| e.to_string())?;
    if !info.is_ca {
        return Err("the certificate is not a CA (basicConstraints CA:TRUE is required)".to_string());
    }
    Ok(first_cert(&cert))
}

/// A root CA from a Secret: `ca-cert.pem` and `ca-key.pem` (or `tls.crt`, `tls.key`), with
/// `cert-chain.pem` / `root-cert.pem` above it when `ca-cert.pem` is itself an intermediate. The
/// certificate must be a CA that may sign, unexpired, and the key must be its key. Messages
/// never carry key material.
pub fn root_from_secret(secret: &SecretSpec, now: SystemTime) -> Result<Authority, String> {
    let cert = pick(secret, &trellis_api::ROOT_SECRET_CERT_KEYS)
        .ok_or("has no PEM ca-cert.pem (or tls.crt): the root CA certificate")?;
    let key = pick(secret, &trellis_api::ROOT_SECRET_KEY_KEYS)
        .ok_or("has no PEM ca-key.pem (or tls.key): the root CA's private key")?;
    let mut chain = pick(secret, &["cert-chain.pem"]).unwrap_or_default();
    if chain.is_empty()
        && let Some(root) = pick(secret, &["root-cert.pem"])
        && trellis_pki::cert_sha256(&root).ok() != trellis_pki::cert_sha256(&cert).ok()
    {
        chain = root;
    }
    let authority = Authority::from_pem(&cert, &key, &chain).map_err(|e| e.to_string())?;
    let info = trellis_pki::inspect_pem(&authority.cert_pem).map_err(|e| e.to_string())?;
    if info.not_after <= now || info.not_before > now {
        return Err("the CA certificate is not valid now (check its notBefore/notAfter)".to_string());
    }
    // Intermediates are signed with path length 0: a signer must leave room for them.
    authority
        .generate_intermediate("Trellis RootTrustPolicy check", DAY, now)
        .map_err(|e| e.to_string())?;
    Ok(authority)
}

/// The root generated for `generated`: kept in the PKI dir and reused while its options stay the
/// same and more than `secretRotationGracePeriodRatio` (default a tenth) of its life is left.
fn generated_root(dir: &PkiDir, options: &CommonCertOptions, now: SystemTime) -> anyhow::Result<Authority> {
    let name = "mesh-root-generated";
    let options_file = dir.path(&format!("{name}.options.json"));
    let wanted = serde_json::to_string(options)?;
    if dir.exists(name) && std::fs::read_to_string(&options_file).ok().as_deref() == Some(wanted.as_str()) {
        let root = dir.load_authority(name, "")?;
        let info = trellis_pki::inspect_pem(&root.cert_pem)?;
        let life = info.not_after.duration_since(info.not_before).unwrap_or_default();
        let grace = life.mul_f64(options.secret_rotation_grace_period_ratio.unwrap_or(0.1));
        if info.not_after > now + grace {
            return Ok(root);
        }
    }
    let ttl = DAY * options.ttl_days.unwrap_or(DEFAULT_TTL_DAYS);
    let root = Authority::generate_root("Trellis mesh root CA (RootTrustPolicy)", ttl, now)?;
    dir.save(name, &root.cert_pem, &root.key)?;
    std::fs::write(&options_file, wanted)?;
    tracing::info!(path = %dir.path(&format!("{name}.pem")).display(), ttl_days = ttl.as_secs() / 86400, "generated a mesh root CA for the RootTrustPolicy");
    Ok(root)
}

/// Puts `desired` in force. A new root moves the old one to the trust bundle's passive roots
/// (for as long as intermediates it signed can live) and tells every relay stream. Returns
/// whether the active root changed.
pub fn apply(mesh: &MeshCa, desired: Desired, now: SystemTime) -> anyhow::Result<bool> {
    let current = mesh.current();
    let root_pem = desired.signer.root_pem();
    let root_sha256 = trellis_pki::cert_sha256(&root_pem)?;
    let now_secs = unix(now);
    let mut previous: Vec<PreviousRoot> = current
        .previous
        .iter()
        .filter(|p| p.until > now_secs && trellis_pki::cert_sha256(&p.pem).ok().as_ref() != Some(&root_sha256))
        .cloned()
        .collect();
    let switched = root_sha256 != current.root_sha256;
    if switched {
        previous.push(PreviousRoot {
            pem: current.root_pem.clone(),
            until: now_secs + current.intermediate_ttl.max(desired.intermediate_ttl).as_secs(),
        });
    }
    let bundle_pem = bundle(&root_pem, &desired.passive, &previous);
    if !switched
        && bundle_pem == current.bundle_pem
        && desired.signer.cert_pem == current.signer.cert_pem
        && desired.intermediate_ttl == current.intermediate_ttl
    {
        return Ok(false);
    }
    let state = TrustState {
        active_pem: root_pem.clone(),
        previous: previous.clone(),
    };
    std::fs::write(mesh.dir.path(STATE_FILE), serde_json::to_string_pretty(&state)?)
        .with_context(|| format!("cannot write {}", mesh.dir.path(STATE_FILE).display()))?;
    if switched {
        let subject = trellis_pki::inspect_pem(&root_pem)
            .ok()
            .and_then(|i| i.subject_cn)
            .unwrap_or_default();
        tracing::info!(source = %desired.source, %subject, root_sha256, "the mesh root changed; clusters get new intermediates, the previous root stays trusted meanwhile");
    }
    mesh.current.send_replace(Arc::new(MeshRoot {
        signer: desired.signer,
        root_pem,
        root_sha256,
        bundle_pem,
        intermediate_ttl: desired.intermediate_ttl,
        previous,
        source: desired.source,
    }));
    Ok(switched)
}

/// The active root, then passive and previous roots, each once.
fn bundle(active: &str, passive: &[String], previous: &[PreviousRoot]) -> String {
    let mut seen = Vec::new();
    let mut out = String::new();
    for pem in std::iter::once(active)
        .chain(passive.iter().map(String::as_str))
        .chain(previous.iter().map(|p| p.pem.as_str()))
    {
        let pem = first_cert(pem);
        if let Ok(sha) = trellis_pki::cert_sha256(&pem)
            && !seen.contains(&sha)
        {
            seen.push(sha);
            out.push_str(&pem);
        }
    }
    out
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the stored config and puts its root in force; on a config that cannot be applied the
/// running root stays, and the reason is returned (and kept for `trellis check`).
pub fn reconcile(mesh: &MeshCa, resources: &[Resource], now: SystemTime) -> Result<bool, String> {
    let result =
        desired(resources, mesh, now).and_then(|desired| apply(mesh, desired, now).map_err(|e| format!("{e:#}")));
    *mesh.problem.lock().expect("problem lock") = result.as_ref().err().cloned();
    result
}

/// Records `problem` as the reason the stored policy is not in force.
pub fn keep_problem(mesh: &MeshCa, problem: String) {
    *mesh.problem.lock().expect("problem lock") = Some(problem);
}

/// Follows the store: when a RootTrustPolicy or Secret changed (and once a minute, to let
/// expired previous roots go) the stored RootTrustPolicy is applied again.
pub async fn follow(mgmt: Arc<super::Mgmt>) {
    let mut published = mgmt.subscribe();
    let mut last_error: Option<String> = None;
    let mut last_inputs: Option<Vec<(String, u64)>> = None;
    loop {
        let ticked = tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            () = tokio::time::sleep(Duration::from_secs(60)) => true,
        };
        let resources = match mgmt.stored() {
            Ok(resources) => resources,
            Err(error) => {
                tracing::warn!(%error, "cannot read the store for the RootTrustPolicy");
                continue;
            }
        };
        // Most changes touch neither policies nor Secrets: nothing to check then.
        let inputs: Vec<(String, u64)> = resources
            .iter()
            .filter(|r| matches!(r.kind(), Kind::RootTrustPolicy | Kind::Secret))
            .map(|r| (r.key().to_string(), r.metadata.generation))
            .collect();
        if !ticked && last_inputs.as_ref() == Some(&inputs) {
            continue;
        }
        last_inputs = Some(inputs);
        match reconcile(&mgmt.mesh, &resources, SystemTime::now()) {
            Ok(_) => last_error = None,
            Err(error) if last_error.as_ref() != Some(&error) => {
                tracing::warn!(%error, "the RootTrustPolicy cannot be applied; the mesh keeps its current root");
                last_error = Some(error);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
