//! Files only their owner may read: keys, tokens and secrets.

use std::path::Path;

use anyhow::Context;

/// Writes `contents` to `path` with mode 0600, through a temporary file renamed over it, so no
/// reader ever sees half a file.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    write_private_bytes(path, contents.as_bytes())
}

/// [`write_private`] of bytes (an archive).
pub fn write_private_bytes(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a secret only its owner may read (mode 0600 or stricter) and of at most 64 KiB,
/// trimmed. A secret others could read is refused rather than used: it must be treated as
/// leaked. `what` names it in errors (e.g. `--oidc-client-secret-file`).
pub fn read_private(path: &Path, what: &str) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}: cannot read", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{what} {}: readable by others (mode {mode:o}); treat the secret as leaked, replace it and `chmod 600` the file",
        path.display()
    );
    anyhow::ensure!(
        meta.len() <= 64 * 1024,
        "{what} {}: {} bytes; a secret is at most 64 KiB",
        path.display(),
        meta.len()
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("{what} {}: cannot read", path.display()))?;
    let secret = text.trim().to_string();
    anyhow::ensure!(!secret.is_empty(), "{what} {}: empty", path.display());
    Ok(secret)
}
