//! `trellis ext-auth`: the external auth service Envoy's ext_authz filter (v3, gRPC) calls.
//! Each route names its auth config with the `config_id` context extension; a config is a Gloo
//! `AuthConfigSpec` (basic, API key, JWT, OPA, LDAP, OIDC, passthrough, combined by a boolean
//! expression), compiled by `trellis-extauth` and run here with the I/O some steps need.
//!
//! ```text
//!  --config FILEs + agent (long poll) --compile--> Runtime (watch) <-- Check (Envoy)
//! ```
//! Everything fails closed: an unknown `config_id`, a key set that cannot be fetched, or a
//! passthrough server that cannot be reached all deny.

pub mod jwks;
pub mod ldap;
pub mod oidc;
mod passthrough;
mod runtime;
mod service;
mod source;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use tokio::sync::watch;

use runtime::Shared;

#[derive(Debug, Clone, clap::Args)]
pub struct ExtAuthArgs {
    /// gRPC address Envoy's ext_authz filter calls.
    #[arg(long, default_value = "127.0.0.1:18082")]
    pub listen: SocketAddr,
    /// Auth configs in a YAML or JSON file, `configs: [{id, spec}]` (repeatable); they add to
    /// what the agent sends, which wins for the same id.
    #[arg(long = "config")]
    pub configs: Vec<PathBuf>,
    /// Redis for OIDC sessions (e.g. redis://127.0.0.1:6379); in memory without it.
    #[arg(long)]
    pub redis: Option<String>,
    /// PEM file of CA certificates (a bundle is fine) trusted, besides the system's roots, for
    /// https key sets (remoteJwks) and OIDC providers (repeatable).
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_files: Vec<PathBuf>,
    #[command(flatten)]
    pub link: trellis_agent::addon_client::AgentLinkArgs,
    /// Serve Prometheus metrics at `/metrics` here (off when unset).
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
}

pub async fn run(args: ExtAuthArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
    serve(args, listener, trellis_support::process::shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes (tests pass their own listener and signal).
pub async fn serve(
    args: ExtAuthArgs,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.configs.is_empty() || args.link.agent.is_some(),
        "nothing to serve: give --config files, --agent (the policies of the agent's cluster), or both"
    );
    let files = source::load_files(&args.configs)?;
    let http = trellis_support::httpc::HttpClient::with_ca_files(&args.ca_files).context("--ca-file")?;
    let shared = Arc::new(Shared::new(args.redis.clone(), http));
    let initial = source::build(&files, &[], &shared)?;
    let listen = listener.local_addr()?;
    tracing::info!(%listen, configs = initial.config_count(), "ext-auth service started");
    let (sender, receiver) = watch::channel(Arc::new(initial));
    let mut tasks = Vec::new();
    let tls = trellis_agent::addon_client::AddonTls::default();
    if let Some(agent) = args.link.endpoint()? {
        let instance = args.link.instance("ext-auth-service", listen);
        let credential = trellis_agent::addon_client::AgentCredential::default();
        tasks.push(tokio::spawn(trellis_agent::addon_client::keep_registered(
            agent.clone(),
            args.link.secret(),
            trellis_agent::AddonKind::ExtAuth,
            instance,
            credential.clone(),
        )));
        tasks.push(tokio::spawn(trellis_agent::addon_client::keep_identity(
            agent.clone(),
            trellis_agent::AddonKind::ExtAuth,
            credential.clone(),
            tls.clone(),
        )));
        tasks.push(tokio::spawn(source::follow_agent(
            agent.clone(),
            credential,
            files,
            sender.clone(),
            shared,
        )));
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = service::CheckMetrics::register(&mut registry);
    if let Some(addr) = args.admin_addr {
        let bound = trellis_support::addon_metrics::serve(addr, registry).await?;
        tracing::info!(admin = %bound, "metrics at /metrics");
    }
    let router = tonic::transport::Server::builder().add_service(AuthorizationServer::new(
        service::ExtAuthService::new(receiver, metrics),
    ));
    // With an agent, mutual TLS only: the port answers this cluster's proxies, not any local
    // process (which could otherwise test API keys against it).
    let served = if args.link.agent.is_some() {
        router
            .serve_with_incoming_shutdown(trellis_agent::addon_client::tls_incoming(listener, tls), shutdown)
            .await
    } else {
        trellis_agent::addon_client::plaintext_without_agent(trellis_agent::AddonKind::ExtAuth, listen)?;
        // Answers are small HTTP/2 frames: without TCP_NODELAY, Nagle holds each one until the
        // peer's delayed ACK, adding a millisecond or more to every check.
        router
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
    };
    for task in tasks {
        task.abort();
    }
    drop(sender);
    Ok(served?)
}
