//! `trellis mgmt`: the management server.
//!
//! ```text
//!  REST API ──apply/delete──▶ store (redb) ─┐
//!  relay ◀──discovery── agents              ├─▶ translator task ─▶ watch<Translation> ─▶ relay streams ─▶ agents
//!                                           ┘
//! ```

mod admission;
mod api;
mod check;
mod config;
mod metrics;
mod pki;
mod relay;
mod state;
mod tls;

use std::sync::Arc;

use anyhow::Context;
use trellis_store::{RedbStore, Store};

pub use api::ADMIN_NAMESPACE;
pub use config::{MgmtArgs, MgmtConfig};
pub use state::{AgentStatus, Mgmt, unix_now};

pub async fn run(args: MgmtArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", config.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&config.data_dir.join("store.redb"))?);
    let (relay_security, mesh_ca) = pki::load_or_create(&config)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::MgmtMetrics::register(&mut registry);
    let server_tls = match &relay_security {
        pki::RelaySecurity::Insecure => None,
        pki::RelaySecurity::Tls(tls) => Some(Arc::new(trellis_pki::server_tls_config(
            &tls.server,
            Some(&tls.root_pem),
            true,
        )?)),
    };
    let mgmt = Mgmt::load(store, metrics.clone(), relay_security, mesh_ca, config.token_ttl)?;
    tokio::spawn(state::translate_loop(mgmt.clone()));

    let api = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("cannot listen on --api-addr {}", config.api_addr))?;
    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("cannot listen on --admin-addr {}", config.admin_addr))?;
    let relay = tokio::net::TcpListener::bind(config.relay_addr)
        .await
        .with_context(|| format!("cannot listen on --relay-addr {}", config.relay_addr))?;
    tracing::info!(
        api = %config.api_addr,
        relay = %config.relay_addr,
        admin = %config.admin_addr,
        data_dir = %config.data_dir.display(),
        relay_authority = %config.relay_authority,
        mode = if config.insecure { "insecure" } else if config.disable_ca { "operator client certificates" } else { "built-in CA" },
        "management server started"
    );
    if config.insecure {
        tracing::warn!(
            "INSECURE: the relay runs in plaintext and believes whatever cluster an agent claims; for demos only, never in production"
        );
    }

    let registry = Arc::new(registry);
    let api_server = axum::serve(api, api::router(mgmt.clone()));
    let admin_server = axum::serve(admin, metrics::admin_router(registry, mgmt.clone()));
    let service = trellis_relay::RelayServer::new(relay::RelayService::new(mgmt.clone()));
    let builder = tonic::transport::Server::builder().add_service(service);
    let relay_server = async move {
        match server_tls {
            Some(tls) => {
                builder
                    .serve_with_incoming_shutdown(tls::incoming(relay, tls, metrics), crate::process::shutdown_signal())
                    .await
            }
            None => {
                builder
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(relay).with_nodelay(Some(true)),
                        crate::process::shutdown_signal(),
                    )
                    .await
            }
        }
    };
    tokio::select! {
        result = api_server => result.context("API server failed")?,
        result = admin_server => result.context("admin server failed")?,
        result = relay_server => result.context("relay server failed")?,
    }
    tracing::info!("management server stopped");
    Ok(())
}
