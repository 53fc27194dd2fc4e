//! The role secret: what a registration must present to take a privileged role on this agent
//! (east-west gateway, ingress gateway, add-on).
//!
//! Why a secret and not first-come-first-served: whoever holds one of these roles receives
//! other workloads' traffic (the east-west gateway all of the cluster's incoming cross-cluster
//! traffic, an ext-auth add-on every auth decision, and the add-on config with its OIDC client
//! secrets), so a local process that registers first, or after the real one stopped, must not
//! get it. The agent's ports are open to every local user; files are not. So the agent keeps a
//! random secret in a file only its own user can read, and only processes of that user (or of
//! whom the operator gives the file) can register those roles.
//!
//! ```text
//!  agent start:  --role-secret-file (default <data-dir>/role-secret, generated 0600 once)
//!                └─ copy, 0600, in a 0700 directory of this user: <runtime dir>/agent-<port>.role-secret
//!  gateway/add-on: --role-secret-file, default that copy for the --agent port ──▶ header x-trellis-role-secret
//! ```
//!
//! The published copy is what lets `trellis gateway` and the add-ons find it with no flag when
//! they run as the agent's user on its host; elsewhere, give them the file.

use std::path::{Path, PathBuf};

use anyhow::Context;

use trellis_support::files::write_private;

/// The header a privileged registration carries the secret in.
pub const HEADER: &str = "x-trellis-role-secret";

/// Reads the secret from `path`, generating one (mode 0600) when the file does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().to_string();
            anyhow::ensure!(
                secret.len() >= 16,
                "--role-secret-file {}: the secret must be at least 16 characters",
                path.display()
            );
            warn_if_readable_by_others(path);
            Ok(secret)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let secret = trellis_pki::random_token();
            write_private(path, &secret)?;
            tracing::info!(path = %path.display(), "generated the role secret for gateway and add-on registrations");
            Ok(secret)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read --role-secret-file {}", path.display())),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the role secret file is readable by other users: chmod 600 it");
    }
}

/// This user's directory for what local clients of an agent look up: `$XDG_RUNTIME_DIR/trellis`,
/// else `<temp dir>/trellis-<uid>`. Created 0700; `None` when it exists but another user owns it
/// or others can enter it (in a shared temp directory someone could have planted it to read
/// what we put there).
fn runtime_dir() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("trellis"),
        _ => std::env::temp_dir().join(format!("trellis-{uid}")),
    };
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), "not using the local runtime directory: it is not a private directory of this user");
        return None;
    }
    Some(dir)
}

/// Where the agent whose registration API listens on `port` publishes its role secret for local
/// clients. Keyed by port only: a port belongs to one agent on a host however clients spell its
/// address.
pub fn published_path(port: u16) -> Option<PathBuf> {
    Some(runtime_dir()?.join(format!("agent-{port}.role-secret")))
}

/// Publishes the secret for local clients of the agent on `port`; returns where.
pub fn publish(secret: &str, port: u16) -> Option<PathBuf> {
    let path = published_path(port)?;
    match write_private(&path, secret) {
        Ok(()) => Some(path),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot publish the role secret for local gateways and add-ons; give them --role-secret-file");
            None
        }
    }
}

/// Removes the published copy if it is still ours (another agent may own the port by now).
pub fn unpublish(secret: &str, port: u16) {
    if let Some(path) = published_path(port)
        && std::fs::read_to_string(&path).is_ok_and(|text| text.trim() == secret)
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Where a gateway or add-on gets the secret it presents.
#[derive(Debug, Clone)]
pub struct ClientSecret {
    /// The operator's file; `None`: the copy the agent published.
    pub file: Option<PathBuf>,
}

impl ClientSecret {
    pub fn read(&self, agent: &str) -> anyhow::Result<String> {
        read_for_client(self.file.as_deref(), agent)
    }
}

/// What a gateway or add-on presents: the file it was given, else the copy the agent at `agent`
/// (`host:port`) published. Read at every registration attempt, so a client started together
/// with its agent finds the secret once the agent has written it.
pub fn read_for_client(explicit: Option<&Path>, agent: &str) -> anyhow::Result<String> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let port = agent
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .with_context(|| format!("--agent {agent}: expected host:port"))?;
            published_path(port).context(
                "no private runtime directory to find the agent's role secret in: give --role-secret-file (the agent's --role-secret-file)",
            )?
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the agent's role secret from {} (hint: run as the agent's user on its host, or give --role-secret-file with the agent's --role-secret-file)",
            path.display()
        )
    })?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_owner_only_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("trellis-role-secret-test-{}", std::process::id()));
        let path = dir.join("role-secret");
        let first = load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), first, "a restart keeps the secret");
        assert_eq!(read_for_client(Some(&path), "127.0.0.1:1").unwrap(), first);
        std::fs::write(&path, "short").unwrap();
        assert!(load_or_create(&path).is_err(), "a weak secret is refused");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
