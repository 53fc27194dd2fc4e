//! `trellis cluster register|rotate|deregister|list` and `trellis check`.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::api_client::ServerArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Record a new cluster and print a one-time, expiring token for its agent.
    Register(RegisterArgs),
    /// Replace a registered cluster's agent credentials: revokes its relay certificates, its mesh
    /// intermediate CA and unused tokens, closes its relay stream, and prints a new token.
    Rotate(TokenArgs),
    /// Revoke a cluster: its certificates are refused from now on and its relay stream closes.
    Deregister(NameArgs),
    /// Clusters and their agents' connection state.
    List(ServerArgs),
}

/// What `register` and `rotate` take: both print a new token for the cluster's agent.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    pub name: String,
    /// How long the token stays valid (default: the server's --token-ttl; at most 7 days).
    #[arg(long)]
    pub ttl: Option<String>,
    /// Write the relay root CA, which the agent needs as --root-ca, to this file.
    #[arg(long)]
    pub root_ca_out: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub token: TokenArgs,
    /// The cluster exists: rotate its credentials (the same as `trellis cluster rotate NAME`).
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

async fn post(server: &ServerArgs, path: &str) -> anyhow::Result<Value> {
    let response = server
        .client()?
        .request("POST", path, Some(("application/json", Vec::new())))
        .await?;
    let body: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    anyhow::ensure!(
        response.status == 200,
        "{} (HTTP {})",
        body["error"].as_str().unwrap_or(&response.body),
        response.status
    );
    Ok(body)
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Register(args) => register(args.token, args.rotate).await,
        ClusterCommand::Rotate(args) => register(args, true).await,
        ClusterCommand::Deregister(args) => {
            let body = post(&args.server, &format!("/api/v1/clusters/{}/deregister", args.name)).await?;
            println!(
                "cluster {} deregistered; {} certificate(s) and {} intermediate CA(s) revoked",
                args.name, body["revokedCertificates"], body["revokedIntermediates"]
            );
            Ok(())
        }
        ClusterCommand::List(server) => list(server).await,
    }
}

async fn register(args: TokenArgs, rotate: bool) -> anyhow::Result<()> {
    let verb = if rotate { "rotate" } else { "register" };
    let mut url = format!("/api/v1/clusters/{}/{verb}", args.name);
    if let Some(ttl) = &args.ttl {
        url.push_str(&format!("?ttl={ttl}"));
    }
    let body = post(&args.server, &url).await?;
    if let (Some(path), Some(root)) = (&args.root_ca_out, body["rootCaPem"].as_str()) {
        std::fs::write(path, root).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let name = &args.name;
    match body["mode"].as_str() {
        Some("token") => {
            let ttl = body["expiresAt"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(trellis_support::unix_now());
            if rotate {
                println!(
                    "cluster {name} rotated: {} relay certificate(s) and {} intermediate CA(s) revoked; its current agent is disconnected",
                    body["revokedCertificates"], body["revokedIntermediates"]
                );
                eprintln!(
                    "hint: the new agent needs a fresh --data-dir (or delete relay/ and mesh/ in the old one): its old credentials are revoked"
                );
            } else {
                println!("cluster {name} registered");
            }
            println!(
                "token (works once, expires in {}m{}s): {}",
                ttl / 60,
                ttl % 60,
                body["token"].as_str().unwrap_or("")
            );
            let root = args
                .root_ca_out
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "ROOT_CA_FILE".into());
            println!(
                "start its agent with:\n  TRELLIS_TOKEN=<token> trellis agent --cluster {name} --mgmt <relay address> --relay-authority {} --root-ca {root}",
                body["relayAuthority"].as_str().unwrap_or("")
            );
            if args.root_ca_out.is_none() {
                eprintln!("hint: --root-ca-out FILE writes the relay root CA the agent needs");
            }
        }
        Some("client-certificate") => println!(
            "cluster {name} registered; the server runs --disable-ca: give its agent a client certificate for {name} (--client-cert/--client-key)"
        ),
        _ => println!("cluster {name} registered; the relay runs --insecure: start its agent with --insecure"),
    }
    Ok(())
}

async fn list(server: ServerArgs) -> anyhow::Result<()> {
    let response = server.client()?.get("/api/v1/clusters").await?;
    anyhow::ensure!(response.status == 200, "HTTP {}: {}", response.status, response.body);
    let body: Value = serde_json::from_str(&response.body)?;
    println!(
        "{:<20} {:<10} {:<9} {:<9} CONFIG",
        "NAME", "REGISTERED", "CONNECTED", "WORKLOADS"
    );
    for (name, status) in body["clusters"].as_object().into_iter().flatten() {
        let config = if status["ackedVersion"] == status["currentVersion"] {
            "in sync"
        } else {
            "behind"
        };
        println!(
            "{:<20} {:<10} {:<9} {:<9} {}",
            name,
            // serde_json's Display ignores widths: format the values as strings first.
            status["registered"].to_string(),
            status["connected"].to_string(),
            status["workloads"].to_string(),
            config
        );
    }
    Ok(())
}

/// `trellis check`: prints every finding; exits non-zero when any is an error.
pub async fn check(server: ServerArgs) -> anyhow::Result<()> {
    let response = server
        .client()?
        .get("/api/v1/check")
        .await
        .context("cannot reach the management server API")?;
    let body: Value = serde_json::from_str(&response.body)?;
    for finding in body["findings"].as_array().into_iter().flatten() {
        let mark = match finding["severity"].as_str() {
            Some("ok") => "ok     ",
            Some("warning") => "WARNING",
            _ => "ERROR  ",
        };
        println!(
            "{mark} {:<28} {}",
            finding["check"].as_str().unwrap_or(""),
            finding["message"].as_str().unwrap_or("")
        );
    }
    let errors = body["errors"].as_u64().unwrap_or(0);
    println!(
        "\n{} error(s), {} warning(s)",
        errors,
        body["warnings"].as_u64().unwrap_or(0)
    );
    anyhow::ensure!(errors == 0, "check found {errors} error(s)");
    Ok(())
}
