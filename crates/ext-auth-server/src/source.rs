//! Where the auth configs come from: `--config` files and the agent's long-polled document
//! (`GET /v1/addons/ext-auth`), merged by `config_id` with the agent's winning.
//!
//! Files are checked strictly at startup (a typo stops the service with the message). The
//! agent's documents are compiled per config: an invalid one is left out, so its routes are
//! denied while every other config keeps being updated; the management server runs the same
//! compile when a config is applied, so this should be rare.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::watch;
use trellis_extauth::AuthConfigSet;

use super::runtime::{Runtime, Shared};

/// The `configs` entries of the `--config` files (YAML or JSON), each file checked by compiling it.
pub fn load_files(paths: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let mut entries = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --config {}", path.display()))?;
        let document: Value = yaml_serde::from_str(&text).with_context(|| format!("--config {}", path.display()))?;
        AuthConfigSet::compile(&document).with_context(|| format!("--config {}", path.display()))?;
        entries.extend(
            document
                .get("configs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
    }
    Ok(entries)
}

/// Builds a runtime from file entries and the agent's (which replace files' of the same id).
/// Errors of single configs are logged and those configs left out; a document of the wrong
/// shape is an error and the caller keeps its current runtime.
pub fn build(files: &[Value], agent: &[Value], shared: &Shared) -> anyhow::Result<Runtime> {
    let agent_ids: Vec<&Value> = agent.iter().filter_map(|entry| entry.get("id")).collect();
    let merged: Vec<&Value> = files
        .iter()
        .filter(|entry| entry.get("id").is_none_or(|id| !agent_ids.contains(&id)))
        .chain(agent)
        .collect();
    let (set, errors) = AuthConfigSet::compile_lenient(&json!({ "configs": merged }))?;
    for error in errors {
        tracing::warn!(%error, "auth config rejected; requests for it are denied");
    }
    let (runtime, errors) = Runtime::build(set, shared);
    for error in errors {
        tracing::warn!(
            error = format!("{error:#}"),
            "auth config cannot start; requests for it are denied"
        );
    }
    Ok(runtime)
}

/// Installs each document the agent sends; returns when the service stops.
pub async fn follow_agent(
    agent: trellis_agent::agent_endpoint::AgentEndpoint,
    credential: trellis_agent::addon_client::AgentCredential,
    files: Vec<Value>,
    runtime: watch::Sender<Arc<Runtime>>,
    shared: Arc<Shared>,
) {
    let kind = trellis_agent::AddonKind::ExtAuth;
    trellis_agent::addon_client::watch_config(agent, kind, credential, move |document: Value| {
        let entries = document
            .get("configs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        match build(&files, &entries, &shared) {
            Ok(new) => {
                tracing::info!(configs = new.config_count(), "auth configs updated");
                runtime.send_replace(Arc::new(new));
            }
            Err(error) => tracing::warn!(%error, "auth configs from the agent rejected; keeping the last good ones"),
        }
    })
    .await
}
