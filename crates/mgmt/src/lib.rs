//! `trellis mgmt`: the management server.
//!
//! ```text
//!  REST API ──apply/delete──▶ store (redb) ─┐
//!  relay ◀──discovery── agents              ├─▶ translator task ─▶ watch<Translation> ─▶ relay streams ─▶ agents
//!                                           ┘
//! ```

mod admission;
mod api;
mod api_access;
mod api_auth;
mod api_tls;
mod api_tokens;
mod check;
mod config;
mod graph;
mod insights;
mod insights_snapshot;
mod kubernetes;
mod metrics;
mod pki;
mod presence;
mod proxy_config;
mod relay;
mod replication;
mod root_trust;
mod sharded;
mod state;
mod trace_origins;
mod translation_share;
mod translator;
mod ui;

use std::sync::Arc;

use anyhow::Context;

pub use api::ADMIN_NAMESPACE;
pub use config::{MgmtArgs, MgmtConfig};
pub use state::{AgentStatus, Mgmt};

pub async fn run(args: MgmtArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", config.data_dir.display()))?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::MgmtMetrics::register(&mut registry);
    let replication = replication::open(&config, &metrics).await?;
    let store = replication.store.clone();
    let (relay_security, mesh_ca) = pki::load_or_create(&config)?;
    let server_tls = match &relay_security {
        pki::RelaySecurity::Insecure => None,
        pki::RelaySecurity::Tls(tls) => Some(Arc::new(trellis_pki::server_tls_config(
            &tls.server,
            Some(&tls.root_pem),
            true,
        )?)),
    };
    let api_tls = if config.api_insecure_plaintext {
        None
    } else {
        Some(api_tls::load_or_create(&config)?)
    };
    let (admin_token_hash, new_admin_token) = api_auth::load_or_create_admin_token(&config.data_dir)?;
    let access = api_access::ApiAccess {
        admin_token_hash,
        oidc: config.oidc.clone().map(api_auth::OidcVerifier::new).transpose()?,
        ui_login: ui::UiLogin::new(config.oidc.as_ref(), &config.ui)?,
        prometheus_url: config.ui.prometheus_url.clone(),
        retention: config.audit_retention,
        write_lock: tokio::sync::Mutex::new(()),
        injection_image: config.injection_image.clone(),
        refusal_budget: Default::default(),
        doors: api_access::Doors {
            api_addr: config.api_addr,
            api_tls: api_tls.is_some(),
            api_client_certificates: config.api_client_ca.is_some(),
            api_oidc: config.oidc.is_some(),
            admin_addr: config.admin_addr,
            relay_addr: config.relay_addr,
            production: config.production,
            declared: config.declared.clone(),
            generated_cas: [
                (
                    !config.insecure && !config.disable_ca && !config.disable_ca_cert_generation,
                    "relay root CA",
                ),
                (config.mesh_root.is_none(), "mesh root CA"),
                (api_tls.is_some() && config.api_tls.is_none(), "management API CA"),
            ]
            .into_iter()
            .filter_map(|(generated, name)| generated.then_some(name))
            .collect(),
        },
    };
    let admin_config = write_admin_config(&config, api_tls.is_some())?;
    // A replica that does not lead starts with the leader's translation, if one was shared.
    let leaders_translation = match &replication.share {
        Some(share) if !*replication.leading.borrow() => {
            let share = share.clone();
            tokio::task::spawn_blocking(move || translation_share::current(share.as_ref())).await?
        }
        _ => None,
    };
    let (mgmt, translator) = Mgmt::load(
        store,
        metrics.clone(),
        relay_security,
        mesh_ca,
        config.token_ttl,
        access,
        state::ReplicaRole {
            leading: replication.leading.clone(),
            leaders_translation,
            name: replication.name.clone(),
        },
    )?;
    // The stored RootTrustPolicy is in force before any agent is served: an intermediate signed
    // meanwhile would chain to a root about to be replaced.
    let resources = mgmt.store.list()?;
    if let Err(error) = root_trust::reconcile(&mgmt.mesh, &resources, std::time::SystemTime::now()) {
        tracing::warn!(%error, "the RootTrustPolicy cannot be applied; the management server's own root signs");
        let fallback: Vec<trellis_api::Resource> = Vec::new();
        root_trust::reconcile(&mgmt.mesh, &fallback, std::time::SystemTime::now())
            .map_err(|e| anyhow::anyhow!("cannot install the mesh root: {e}"))?;
        // The policy's problem stays visible to `trellis check` until the follower retries it.
        root_trust::keep_problem(&mgmt.mesh, error);
    }
    let translator = mgmt.start_translator(translator, replication.leading.clone());
    if let Some(presence) = &replication.presence {
        tokio::spawn(presence::share(mgmt.clone(), presence.clone()));
    }
    let sharing = match &replication.share {
        Some(share) => translation_share::start(mgmt.clone(), share.clone(), replication.leading.clone()),
        None => Vec::new(),
    };
    tokio::spawn(root_trust::follow(mgmt.clone()));
    if let Some(source) = &config.kubernetes {
        kubernetes::start(source, mgmt.clone(), replication.leading.clone()).await?;
    }

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
    let token_path = api_auth::admin_token_path(&config.data_dir);
    if new_admin_token {
        // The token itself stays in its owner-only file: logs are read by more people.
        tracing::warn!(
            token_file = %token_path.display(),
            client_config = %admin_config.display(),
            "generated the admin API token; use it with `TRELLIS_CONFIG={} trellis get ...` or `trellis config set-context --token-file`",
            admin_config.display()
        );
    }
    if config.api_insecure_plaintext {
        tracing::warn!(
            "INSECURE: the API is served over plain HTTP (--api-insecure-plaintext): tokens cross the network in clear; for demos only"
        );
    }
    if config.insecure {
        tracing::warn!(
            "INSECURE: the relay runs in plaintext and believes whatever cluster an agent claims; for demos only, never in production"
        );
    }

    let registry = Arc::new(registry);
    let router = api::router(mgmt.clone());
    let api_server = async move {
        match &api_tls {
            Some(tls) => api_tls::serve(api, tls, router, trellis_support::process::shutdown_signal()).await,
            None => axum::serve(
                api,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(trellis_support::process::shutdown_signal())
            .await
            .map_err(anyhow::Error::from),
        }
    };
    let admin_server = axum::serve(admin, metrics::admin_router(registry, mgmt.clone()));
    // === relay and shutdown ===
    let shutdown = trellis_support::process::Shutdown::on_signal();
    let relay_server = relay_server(relay, server_tls, mgmt.clone(), metrics, shutdown.clone());
    // The API stops taking requests at once on shutdown, but the process lives until the relay
    // has told its agents (tonic flushes those last messages before its server returns): only
    // an error of the API or admin server ends it early.
    let servers = async {
        tokio::select! {
            result = api_server => {
                result.context("API server failed")?;
                std::future::pending().await
            }
            result = admin_server => result.context("admin server failed"),
            result = relay_server => result.context("relay server failed"),
        }
    };
    // The relay ends its agents' streams on shutdown; whatever is still open after the grace
    // period (an agent that never closes its side) does not keep the process alive.
    if let Some(result) = trellis_support::process::drain(
        &shutdown,
        servers,
        trellis_support::process::SHUTDOWN_GRACE,
        "management server",
    )
    .await
    {
        result?;
    }
    replication.stop().await;
    mgmt.stop_translator();
    // A translation in progress finishes first: nothing of it is stored, but it is not cut off.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = translator.join();
        for thread in sharing {
            let _ = thread.join();
        }
    })
    .await;
    tracing::info!("management server stopped");
    Ok(())
}

/// Relay messages larger than this are refused. Configs travel as sections in messages of about
/// 2 MiB whatever their size; a discovery report of tens of thousands of workloads fits.
const RELAY_MAX_MESSAGE: usize = trellis_relay::delivery::MAX_MESSAGE_BYTES;

/// The relay gRPC server until shutdown: bounded messages, headers and streams per connection,
/// and HTTP/2 keepalive so a peer that vanished (or stopped answering) is closed.
async fn relay_server(
    listener: tokio::net::TcpListener,
    server_tls: Option<Arc<rustls::ServerConfig>>,
    mgmt: Arc<Mgmt>,
    metrics: metrics::MgmtMetrics,
    shutdown: trellis_support::process::Shutdown,
) -> Result<(), tonic::transport::Error> {
    let service = trellis_relay::RelayServer::new(relay::RelayService::new(mgmt, shutdown.clone()))
        .max_decoding_message_size(RELAY_MAX_MESSAGE);
    let builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .http2_max_header_list_size(16 * 1024)
        // One relay stream and a few unary calls per agent.
        .max_concurrent_streams(Some(16))
        .add_service(service);
    let stop = async move { shutdown.requested().await };
    match server_tls {
        Some(tls) => {
            builder
                .serve_with_incoming_shutdown(
                    trellis_relay::listener::incoming(
                        listener,
                        tls,
                        metrics,
                        trellis_relay::listener::RelayLimits::default(),
                    ),
                    stop,
                )
                .await
        }
        None => {
            builder
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stop,
                )
                .await
        }
    }
}

/// Writes `--data-dir/admin.conf` (mode 0600): a client config whose one context reaches this
/// server as admin (its URL, the API CA, the admin token file), like kubeadm's `admin.conf`.
/// `trellis up` and tests point `TRELLIS_CONFIG` at it; nobody copies the token by hand.
fn write_admin_config(config: &MgmtConfig, tls: bool) -> anyhow::Result<std::path::PathBuf> {
    let ip = config.api_addr.ip();
    let host = match ip {
        ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    let scheme = if tls { "https" } else { "http" };
    let absolute = |path: std::path::PathBuf| std::path::absolute(&path).unwrap_or(path);
    let context = trellis_cli::cli_config::Context {
        name: "trellis-admin".into(),
        server: format!("{scheme}://{host}:{}", config.api_addr.port()),
        certificate_authority: (tls && config.api_tls.is_none())
            .then(|| absolute(api_tls::ca_path(&config.data_dir)))
            .or_else(|| config.api_tls_ca.clone().map(absolute)),
        token_file: Some(absolute(api_auth::admin_token_path(&config.data_dir))),
        ..Default::default()
    };
    let client_config = trellis_cli::cli_config::CliConfig {
        current_context: context.name.clone(),
        contexts: vec![context],
    };
    let path = config.data_dir.join("admin.conf");
    client_config.save(&path)?;
    Ok(path)
}
