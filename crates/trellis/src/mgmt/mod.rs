//! `trellis mgmt`: the management server.
//!
//! ```text
//!  REST API ──apply/delete──▶ store (redb) ─┐
//!  relay ◀──discovery── agents              ├─▶ translator task ─▶ watch<Translation> ─▶ relay streams ─▶ agents
//!                                           ┘
//! ```

mod api;
mod metrics;
mod relay;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use trellis_store::{RedbStore, Store};

pub use state::{AgentStatus, Mgmt};

#[derive(Debug, Clone, clap::Args)]
pub struct MgmtArgs {
    /// Directory for the embedded store; created if missing.
    #[arg(long, default_value = ".trellis/mgmt")]
    pub data_dir: PathBuf,
    /// REST API address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub api_addr: SocketAddr,
    /// Relay (gRPC) address agents connect to.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub relay_addr: SocketAddr,
    /// Metrics and health address (/metrics, /healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub admin_addr: SocketAddr,
}

pub async fn run(args: MgmtArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&args.data_dir.join("store.redb"))?);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::MgmtMetrics::register(&mut registry);
    let mgmt = Mgmt::load(store, metrics)?;
    tokio::spawn(state::translate_loop(mgmt.clone()));

    let api = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("cannot listen on --api-addr {}", args.api_addr))?;
    let admin = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on --admin-addr {}", args.admin_addr))?;
    let relay = tokio::net::TcpListener::bind(args.relay_addr)
        .await
        .with_context(|| format!("cannot listen on --relay-addr {}", args.relay_addr))?;
    tracing::info!(api = %args.api_addr, relay = %args.relay_addr, admin = %args.admin_addr, data_dir = %args.data_dir.display(), "management server started");
    tracing::warn!("relay runs in plaintext: do not expose it beyond this host");

    let registry = Arc::new(registry);
    let api_server = axum::serve(api, api::router(mgmt.clone()));
    let admin_server = axum::serve(admin, metrics::admin_router(registry, mgmt.clone()));
    let relay_server = tonic::transport::Server::builder()
        .add_service(trellis_relay::RelayServer::new(relay::RelayService::new(mgmt.clone())))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(relay),
            crate::process::shutdown_signal(),
        );
    tokio::select! {
        result = api_server => result.context("API server failed")?,
        result = admin_server => result.context("admin server failed")?,
        result = relay_server => result.context("relay server failed")?,
    }
    tracing::info!("management server stopped");
    Ok(())
}
