//! The CLI's connection to the management API: which server, which CA, which credential.
//!
//! Each piece is taken from the first place that has it, as kubectl does: flags (`--server`,
//! `--token`, `--ca-file`, `--client-cert/--client-key`), then the environment
//! (`$TRELLIS_SERVER`, `$TRELLIS_TOKEN`, `$TRELLIS_CA_FILE`), then the selected context of the
//! client config (`--context`/`$TRELLIS_CONTEXT`, else its current context), then the default
//! server `https://127.0.0.1:8090` without a credential.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use trellis_support::httpc::{HttpClient, Response};

use crate::cli_config::{CliConfig, Context};

const DEFAULT_SERVER: &str = "https://127.0.0.1:8090";

/// Where the CLI finds the management server's API and its credential.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// The API's URL [default: the context's server, else https://127.0.0.1:8090]
    #[arg(long, env = "TRELLIS_SERVER")]
    pub server: Option<String>,
    /// A bearer token: the admin token, one from `trellis token create`, or an OIDC ID token.
    #[arg(long, env = "TRELLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM file of the CA the API's certificate chains to.
    #[arg(long, env = "TRELLIS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM chain) and its key, for servers run with --api-client-ca.
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    /// The client config file [default: $XDG_CONFIG_HOME/trellis/config.yaml]
    #[arg(long = "config", env = "TRELLIS_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// The context of the client config to use [default: its current context]
    #[arg(long, env = "TRELLIS_CONTEXT")]
    pub context: Option<String>,
}

impl ServerArgs {
    /// The client config file these arguments point at.
    pub fn config_path(&self) -> anyhow::Result<PathBuf> {
        self.config_file
            .clone()
            .or_else(crate::cli_config::default_path)
            .context("no client config path: set --config, $TRELLIS_CONFIG or $HOME")
    }

    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let config = match self.config_path() {
            Ok(path) => CliConfig::load(&path)?,
            Err(_) => CliConfig::default(),
        };
        let context = config.selected(self.context.as_deref())?.cloned().unwrap_or_default();
        resolve(self, &context)
    }
}

fn resolve(args: &ServerArgs, context: &Context) -> anyhow::Result<ApiClient> {
    let server = args
        .server
        .clone()
        .or_else(|| (!context.server.is_empty()).then(|| context.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = match (&args.token, &context.token, &context.token_file) {
        (Some(token), _, _) => Some(token.clone()),
        (None, Some(token), _) => Some(token.clone()),
        (None, None, Some(file)) => Some(read_token(file)?),
        (None, None, None) => None,
    };
    let ca_files: Vec<PathBuf> = args
        .ca_file
        .clone()
        .or_else(|| context.certificate_authority.clone())
        .into_iter()
        .collect();
    let http = match (
        args.client_cert.as_ref().or(context.client_certificate.as_ref()),
        args.client_key.as_ref().or(context.client_key.as_ref()),
    ) {
        (Some(cert), Some(key)) => HttpClient::with_client_certificate(&ca_files, cert, key)?,
        (None, None) => HttpClient::with_ca_files(&ca_files)?,
        _ => anyhow::bail!("give both --client-cert and --client-key, or neither"),
    };
    refuse_token_in_clear(&server, token.is_some())?;
    Ok(ApiClient {
        server: server.trim_end_matches('/').to_string(),
        token,
        http,
    })
}

/// A bearer token over plain HTTP is readable by anyone on the path: only to a loopback server
/// (a demo run with --api-insecure-plaintext), never across the network.
fn refuse_token_in_clear(server: &str, has_token: bool) -> anyhow::Result<()> {
    let Some(rest) = server.strip_prefix("http://") else {
        return Ok(());
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(
        !has_token || loopback,
        "refusing to send a token to {server} over plain HTTP: use https://"
    );
    Ok(())
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read token file {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// Requests to one management API with one credential.
#[derive(Clone)]
pub struct ApiClient {
    pub server: String,
    token: Option<String>,
    http: HttpClient,
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl ApiClient {
    /// A client with an explicit server, CA file and token (tests, `trellis up`).
    pub fn new(server: &str, ca_file: Option<&Path>, token: Option<String>) -> anyhow::Result<ApiClient> {
        let ca_files: Vec<PathBuf> = ca_file.map(Path::to_path_buf).into_iter().collect();
        refuse_token_in_clear(server, token.is_some())?;
        Ok(ApiClient {
            server: server.trim_end_matches('/').to_string(),
            token,
            http: HttpClient::with_ca_files(&ca_files)?,
        })
    }

    /// The bearer token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The admin client of a management server's data directory: the context it writes to
    /// `admin.conf` at start.
    pub fn from_config_file(path: &Path) -> anyhow::Result<ApiClient> {
        let config = CliConfig::load(path)?;
        let context = config
            .selected(None)?
            .with_context(|| format!("{} has no current context", path.display()))?
            .clone();
        resolve(&ServerArgs::default(), &context)
    }

    /// One request to `path` (starting with `/`); any HTTP status is an `Ok`.
    pub async fn request(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<Response> {
        let url = format!("{}{path}", self.server);
        let authorization = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        self.http.request(method, &url, None, &headers, body, TIMEOUT).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        self.request("GET", path, None).await
    }

    /// GET, expecting 200 and JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = self.get(path).await?;
        anyhow::ensure!(
            response.status == 200,
            "GET {path}: HTTP {}: {}",
            response.status,
            response.body
        );
        Ok(serde_json::from_str(&response.body)?)
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Response> {
        self.request("POST", path, Some(("application/json", serde_json::to_vec(body)?)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_context() {
        let context = Context {
            name: "c".into(),
            server: "https://from-context:1".into(),
            token: Some("context-token".into()),
            ..Default::default()
        };
        let args = ServerArgs {
            token: Some("flag-token".into()),
            ..Default::default()
        };
        let client = resolve(&args, &context).unwrap();
        assert_eq!(client.server, "https://from-context:1");
        assert_eq!(client.token.as_deref(), Some("flag-token"));
        let client = resolve(&ServerArgs::default(), &Context::default()).unwrap();
        assert_eq!((client.server.as_str(), client.token), (DEFAULT_SERVER, None));
        assert!(refuse_token_in_clear("http://10.0.0.5:8090", true).is_err());
        assert!(refuse_token_in_clear("http://127.0.0.1:8090", true).is_ok());
        assert!(refuse_token_in_clear("http://[::1]:8090/x", true).is_ok());
        assert!(refuse_token_in_clear("http://mgmt.example:8090", false).is_ok());
        assert!(refuse_token_in_clear("https://mgmt.example:8090", true).is_ok());
        let half = ServerArgs {
            client_cert: Some("cert.pem".into()),
            ..Default::default()
        };
        assert!(resolve(&half, &context).is_err());
    }
}
