//! `trellis config`, `trellis token` and `trellis audit`: the client config's contexts, API
//! tokens for people and CI, and the audit log.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::api_client::ServerArgs;
use crate::cli_config::{CliConfig, Context};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// List the contexts; `*` marks the current one.
    GetContexts(ConfigFile),
    /// Print the current context's name.
    CurrentContext(ConfigFile),
    /// Make a context the current one.
    UseContext(UseContextArgs),
    /// Add or replace a context.
    SetContext(SetContextArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigFile {
    /// The client config file [default: $XDG_CONFIG_HOME/trellis/config.yaml]
    #[arg(long = "config", env = "TRELLIS_CONFIG")]
    pub config_file: Option<PathBuf>,
}

impl ConfigFile {
    fn path(&self) -> anyhow::Result<PathBuf> {
        ServerArgs {
            config_file: self.config_file.clone(),
            ..Default::default()
        }
        .config_path()
    }
}

#[derive(Debug, clap::Args)]
pub struct UseContextArgs {
    pub name: String,
    #[command(flatten)]
    pub file: ConfigFile,
}

#[derive(Debug, clap::Args)]
pub struct SetContextArgs {
    pub name: String,
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// A file holding the token (preferred: the token stays out of shell history).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    /// Also make it the current context.
    #[arg(long)]
    pub current: bool,
    #[command(flatten)]
    pub file: ConfigFile,
}

pub fn config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::GetContexts(file) => {
            let config = CliConfig::load(&file.path()?)?;
            println!("{:<2}{:<24} SERVER", "", "NAME");
            for context in &config.contexts {
                let mark = if context.name == config.current_context {
                    "*"
                } else {
                    ""
                };
                println!("{mark:<2}{:<24} {}", context.name, context.server);
            }
            Ok(())
        }
        ConfigCommand::CurrentContext(file) => {
            let config = CliConfig::load(&file.path()?)?;
            anyhow::ensure!(!config.current_context.is_empty(), "no current context");
            println!("{}", config.current_context);
            Ok(())
        }
        ConfigCommand::UseContext(args) => {
            let path = args.file.path()?;
            let mut config = CliConfig::load(&path)?;
            anyhow::ensure!(
                config.context(&args.name).is_some(),
                "no context {:?} in {}; add it with `trellis config set-context`",
                args.name,
                path.display()
            );
            config.current_context = args.name.clone();
            config.save(&path)?;
            println!("switched to context {:?}", args.name);
            Ok(())
        }
        ConfigCommand::SetContext(args) => {
            let path = args.file.path()?;
            let mut config = CliConfig::load(&path)?;
            config.upsert(Context {
                name: args.name.clone(),
                server: args.server,
                certificate_authority: args.ca_file,
                token: None,
                token_file: args.token_file,
                client_certificate: args.client_cert,
                client_key: args.client_key,
            });
            if args.current || config.current_context.is_empty() {
                config.current_context = args.name.clone();
            }
            config.save(&path)?;
            println!("context {:?} set in {}", args.name, path.display());
            Ok(())
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Issue a token; it is printed once and stored only as a digest.
    Create(TokenCreateArgs),
    /// List tokens (names, users, groups, expiry; never the tokens).
    List(ServerArgs),
    /// Revoke a token by name: requests with it are refused from now on.
    Revoke(TokenNameArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// A unique name to list and revoke it by.
    pub name: String,
    /// The user requests with this token act as (RBAC subjects of kind User).
    #[arg(long)]
    pub user: String,
    /// Groups of that user (RBAC subjects of kind Group); repeatable.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Lifetime, e.g. 720h [default: 2160h; at most 8784h]
    #[arg(long)]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct TokenNameArgs {
    pub name: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn failure(response: &trellis_support::httpc::Response) -> anyhow::Error {
    let body: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    anyhow::anyhow!(
        "{} (HTTP {})",
        body["error"].as_str().unwrap_or(&response.body),
        response.status
    )
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let body = json!({"name": args.name, "user": args.user, "groups": args.groups, "ttl": args.ttl});
            let response = args.server.client()?.post_json("/api/v1/tokens", &body).await?;
            if response.status != 200 {
                return Err(failure(&response));
            }
            let body: Value = serde_json::from_str(&response.body)?;
            eprintln!(
                "token {:?} for user {:?} created; it is shown only now:",
                args.name, args.user
            );
            println!("{}", body["token"].as_str().context("the server returned no token")?);
            Ok(())
        }
        TokenCommand::List(server) => {
            let body = server.client()?.get_json("/api/v1/tokens").await?;
            println!("{:<20} {:<20} {:<30} EXPIRES", "NAME", "USER", "GROUPS");
            for token in body["tokens"].as_array().into_iter().flatten() {
                let groups: Vec<&str> = token["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let expires = token["expiresAt"]
                    .as_u64()
                    .map(|t| t.to_string())
                    .unwrap_or("never".into());
                println!(
                    "{:<20} {:<20} {:<30} {expires}",
                    token["name"].as_str().unwrap_or(""),
                    token["user"].as_str().unwrap_or(""),
                    groups.join(",")
                );
            }
            Ok(())
        }
        TokenCommand::Revoke(args) => {
            let response = args
                .server
                .client()?
                .request("DELETE", &format!("/api/v1/tokens/{}", args.name), None)
                .await?;
            if response.status != 200 {
                return Err(failure(&response));
            }
            println!("token {:?} revoked", args.name);
            Ok(())
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only records of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this action: apply, delete, register, rotate, deregister, token-create, token-revoke.
    #[arg(long)]
    pub action: Option<String>,
    /// Only this result: ok, denied, rejected, failed.
    #[arg(long)]
    pub result: Option<String>,
    /// Only targets containing this text (e.g. `RouteTable/demo`).
    #[arg(long)]
    pub target: Option<String>,
    /// At most this many, newest last.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// json prints whole records (with diffs).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let mut query = vec![format!("limit={}", args.limit)];
    for (key, value) in [
        ("user", &args.user),
        ("action", &args.action),
        ("result", &args.result),
        ("target", &args.target),
    ] {
        if let Some(value) = value {
            query.push(format!("{key}={}", crate::client::encode(value)));
        }
    }
    let body = args
        .server
        .client()?
        .get_json(&format!("/api/v1/audit?{}", query.join("&")))
        .await?;
    let records = body["records"].as_array().cloned().unwrap_or_default();
    if args.output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    println!(
        "{:<6} {:<11} {:<16} {:<13} {:<9} TARGET",
        "SEQ", "TIME", "USER", "ACTION", "RESULT"
    );
    for record in records {
        println!(
            "{:<6} {:<11} {:<16} {:<13} {:<9} {}",
            record["seq"].to_string(),
            record["time"].to_string(),
            record["user"].as_str().unwrap_or(""),
            record["action"].as_str().unwrap_or(""),
            record["result"].as_str().unwrap_or(""),
            record["target"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
