//! `trellis version`: this client's version and the management server's.

use anyhow::Context;

use crate::api_client::ServerArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct VersionArgs {
    /// Only the client's version; no request to the server.
    #[arg(long)]
    pub client: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn version(args: VersionArgs) -> anyhow::Result<()> {
    println!("client: {}", env!("CARGO_PKG_VERSION"));
    if args.client {
        return Ok(());
    }
    let response = args
        .server
        .client()?
        .get("/api/v1/version")
        .await
        .context("cannot reach the management server API")?;
    anyhow::ensure!(
        response.status == 200,
        "the server refused the version request (HTTP {}): {}",
        response.status,
        response.body.trim()
    );
    let body: serde_json::Value = serde_json::from_str(&response.body).context("the server's answer is not JSON")?;
    println!("server: {}", body["version"].as_str().unwrap_or("unknown"));
    Ok(())
}
