//! The CLI's client config, like a kubeconfig: named contexts (server, CA, credential) and the
//! current one. It lives in `$TRELLIS_CONFIG`, else `$XDG_CONFIG_HOME/trellis/config.yaml`, else
//! `~/.config/trellis/config.yaml`; written mode 0600 because contexts may hold tokens.
//!
//! ```yaml
//! currentContext: trellis-up
//! contexts:
//! - name: trellis-up
//!   server: https://127.0.0.1:8090
//!   certificateAuthority: .trellis/up/mgmt/pki/api-ca.pem
//!   tokenFile: .trellis/up/mgmt/api/admin-token
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CliConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_context: String,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// Where one management server is and how to prove who you are to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    pub name: String,
    pub server: String,
    /// PEM file of the CA the server's certificate chains to (besides the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token (the management server's admin token file, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

/// The config file the CLI reads when `--config` and `$TRELLIS_CONFIG` are not set.
pub fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("trellis").join("config.yaml"))
}

impl CliConfig {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<CliConfig> {
        match std::fs::read_to_string(path) {
            Ok(text) => yaml_serde::from_str(&text).with_context(|| format!("client config {}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(CliConfig::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read client config {}", path.display())),
        }
    }

    /// Writes `path` (and its directory) readable by its owner only.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = yaml_serde::to_string(self)?;
        // A fresh file each time, renamed over the old one: never a moment with a readable token.
        let temporary = path.with_extension("tmp");
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Adds `context`, replacing one of the same name.
    pub fn upsert(&mut self, context: Context) {
        self.contexts.retain(|c| c.name != context.name);
        self.contexts.push(context);
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// The named context, else the current one; `None` when the file names none.
    pub fn selected(&self, name: Option<&str>) -> anyhow::Result<Option<&Context>> {
        match name.filter(|n| !n.is_empty()) {
            Some(name) => self.context(name).map(Some).ok_or_else(|| {
                let known: Vec<_> = self.contexts.iter().map(|c| c.name.as_str()).collect();
                anyhow::anyhow!("no context {name:?} in the client config (known: {})", known.join(", "))
            }),
            None if self.current_context.is_empty() => Ok(None),
            None => self.context(&self.current_context).map(Some).ok_or_else(|| {
                anyhow::anyhow!(
                    "the current context {:?} is not in the client config; run `trellis config use-context NAME`",
                    self.current_context
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn round_trips_owner_only_and_selects_contexts() {
        let dir = std::env::temp_dir().join(format!("trellis-cli-config-{}", std::process::id()));
        let path = dir.join("nested").join("config.yaml");
        let mut config = CliConfig::default();
        config.upsert(Context {
            name: "a".into(),
            server: "https://a:8090".into(),
            token: Some("secret".into()),
            ..Default::default()
        });
        config.upsert(Context {
            name: "b".into(),
            server: "https://b:8090".into(),
            ..Default::default()
        });
        config.current_context = "b".into();
        config.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = CliConfig::load(&path).unwrap();
        assert_eq!(loaded, config);
        assert_eq!(loaded.selected(None).unwrap().unwrap().server, "https://b:8090");
        assert_eq!(
            loaded.selected(Some("a")).unwrap().unwrap().token.as_deref(),
            Some("secret")
        );
        let error = loaded.selected(Some("c")).unwrap_err().to_string();
        assert!(error.contains("no context \"c\"") && error.contains("a, b"), "{error}");
        assert_eq!(
            CliConfig::load(&dir.join("missing.yaml")).unwrap(),
            CliConfig::default()
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
