//! `trellis agent`: one per cluster.
//!
//! ```text
//!  proxies ──register (HTTP, loopback)──▶ registry ──discovery──▶ relay client ──▶ mgmt
//!  mgmt ──config──▶ relay client ──▶ cache file + watch<ClusterConfig> ─┐
//!                                        registry ──────────────────────┴─▶ per-proxy Envoy snapshots ─▶ ADS ─▶ Envoy
//! ```
//!
//! The agent keeps serving its last good config while the relay is down, and reloads it from
//! its cache after a restart, so neither a management server outage nor an agent restart
//! changes what running proxies do.
//!
//! Its local ports are open to every process on the host, so nothing on them is served on a
//! claim alone: every registration gets its own credential, and its Envoy an xDS client
//! certificate (mutual TLS on the xDS port, from a CA that never leaves the agent); sidecars
//! claim only identities `--allow-namespace`/`--allow-service-account` list; gateways and
//! add-ons need the role secret (see `registry`, `xds_tls`, `policy`, `role_secret`).
//!
//! The clients of that local API live here too, so that one crate holds both ends of it (as
//! `trellis-relay` does for the relay): [`proxy`] (`trellis proxy`: a sidecar registers and runs
//! its Envoy), [`gateway`] (`trellis gateway east-west|ingress`) and [`addon_client`] (the
//! add-ons register, long-poll their config and keep a mesh certificate).

pub mod access_log_sink;
pub mod addon_client;
pub mod addon_config;
mod addon_identity;
pub mod agent_endpoint;
pub mod gateway;
mod mesh_identity;
mod policy;
pub mod proxy;
mod proxy_config;
mod proxy_metrics;
mod registry;
pub mod registry_tls;
mod relay_client;
pub mod role_secret;
mod system_ca;
mod xds_source;
pub mod xds_tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use trellis_model::ClusterConfig;
use trellis_relay::client::{CredentialOptions, RelayCredentials};

pub use registry::{AddonKind, AddonRegistration, IngressRegistration, MAX_BODY, ProxyRegistration, RegisteredGateway};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// This cluster's name, unique in the mesh.
    #[arg(long)]
    pub cluster: String,
    /// The region this cluster's workloads run in, for FailoverPolicy `localityMappings`; given,
    /// it and --zone/--sub-zone win over the nodes' labels [default: in Kubernetes mode the
    /// region, zone and sub-zone the nodes running the cluster's pods share
    /// (`topology.kubernetes.io/region` and `/zone`, `topology.istio.io/subzone`); otherwise, or
    /// when the nodes carry no such label, the cluster's name].
    #[arg(long)]
    pub region: Option<String>,
    /// The zone within the region (`topology.kubernetes.io/zone`); none when not given.
    #[arg(long, default_value = "")]
    pub zone: String,
    /// The sub-zone within the zone (`topology.istio.io/subzone`); none when not given.
    #[arg(long, default_value = "")]
    pub sub_zone: String,
    /// The management server's relay address (host:port); several replicas comma-separated, the
    /// first that answers is used.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub mgmt: String,
    /// Directory for the agent's config cache; created if missing.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Local workload registration API, plain HTTP: registrations only from this host
    /// (loopback); other hosts get its read endpoints (/metrics, /v1/status, /v1/proxies).
    #[arg(long, default_value = "127.0.0.1:9977")]
    pub registry_addr: SocketAddr,
    /// The same registration API over TLS, for proxies on other hosts or pods: a certificate
    /// of the agent's CA for `registry.trellis-agent`, which clients check with --agent-ca (in
    /// Kubernetes mode the agent publishes that CA as ConfigMap `trellis-agent-ca` in every
    /// namespace).
    #[arg(long)]
    pub registry_tls_addr: Option<SocketAddr>,
    /// ADS (xDS) server for this cluster's Envoys (loopback only).
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub xds_addr: SocketAddr,
    /// Plaintext relay, no certificates: only against a management server run with --insecure.
    #[arg(long)]
    pub insecure: bool,
    /// The name the relay server certificate must carry.
    #[arg(long, default_value = "trellis-mgmt.trellis")]
    pub relay_authority: String,
    /// The relay root CA (PEM) that the server certificate must chain to (rootTlsSecret).
    #[arg(long)]
    pub root_ca: Option<PathBuf>,
    /// A client certificate and key from the operator's CA (clientTlsSecret), instead of registering.
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    /// One-time registration token from `trellis cluster register NAME`.
    #[arg(long, env = "TRELLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Lifetime of the workload certificates this agent issues; renewed at two thirds.
    #[arg(long, default_value = "1h")]
    pub workload_cert_ttl: String,
    /// Lifetime of the client certificates proxies present on the xDS port; renewed at two
    /// thirds. Each is honoured only while its registration lives, whatever its dates.
    #[arg(long, default_value = "24h")]
    pub xds_client_cert_ttl: String,
    /// A namespace whose identities (any service account) sidecars may claim here; repeatable
    /// or comma separated; `*` for any. With neither this nor --allow-service-account, no
    /// sidecar may register.
    #[arg(long = "allow-namespace", value_delimiter = ',')]
    pub allow_namespaces: Vec<String>,
    /// One identity sidecars may claim here, `NAMESPACE/SERVICE_ACCOUNT`; repeatable or comma
    /// separated.
    #[arg(long = "allow-service-account", value_delimiter = ',')]
    pub allow_service_accounts: Vec<String>,
    /// A namespace whose identities gateways and add-ons (with the role secret) may take;
    /// repeatable or comma separated [default: trellis, gloo-mesh, gloo-mesh-gateways,
    /// gloo-mesh-addons]
    #[arg(long = "allow-gateway-namespace", value_delimiter = ',')]
    pub allow_gateway_namespaces: Vec<String>,
    /// The secret gateways and add-ons must present to register (they receive other workloads'
    /// traffic); generated (mode 0600) if missing. Default `<data-dir>/role-secret`. A copy is
    /// published for local clients of this user, so `trellis gateway` and the add-ons on this
    /// host find it without a flag.
    #[arg(long)]
    pub role_secret_file: Option<PathBuf>,
    /// OTLP/gRPC collector (host:port) for this agent's spans and its proxies' request traces.
    /// The agent builds every proxy's Envoy config, so it is where tracing is set for the
    /// cluster: proxies and gateways need no flag, and one setting reaches them all. None: no
    /// tracing.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<trellis_support::span_export::OtlpEndpoint>,
    /// Percentage (0-100) of requests the proxies trace when they arrive without a sampling
    /// decision; a request with a sampled `traceparent` is always traced. Only with
    /// --otlp-endpoint.
    #[arg(long, default_value_t = 1.0, value_parser = parse_percent)]
    pub trace_sampling: f64,
    /// Discover the cluster's workloads from its Kubernetes API (Services, EndpointSlices,
    /// Pods), with this kubeconfig; sidecars then register for their config only
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// As --kubeconfig, with the pod's in-cluster configuration
    #[arg(long, conflicts_with = "kubeconfig")]
    pub kubernetes: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err(format!("{s:?}: expected a percentage from 0 to 100")),
    }
}

/// How the agent's proxies trace requests (from --otlp-endpoint and --trace-sampling).
#[derive(Debug, Clone)]
pub struct ProxyTracing {
    pub collector: trellis_support::span_export::OtlpEndpoint,
    pub sampling_percent: f64,
}

impl AgentArgs {
    /// This cluster's locality: the flags, the cluster's name as the region when none is given.
    pub fn proxy_tracing(&self) -> Option<ProxyTracing> {
        Some(ProxyTracing {
            collector: self.otlp_endpoint.clone()?,
            sampling_percent: self.trace_sampling,
        })
    }

    pub fn locality(&self) -> trellis_model::Locality {
        trellis_model::Locality {
            region: self.region.clone().unwrap_or_else(|| self.cluster.clone()),
            zone: self.zone.clone(),
            sub_zone: self.sub_zone.clone(),
        }
    }
}

/// The config an agent serves, with its relay version (what proxies and the management server
/// compare delivery by).
#[derive(Debug)]
pub struct AppliedConfig {
    pub version: String,
    pub config: ClusterConfig,
    /// The trace of the relay delivery that brought it: building the proxies' snapshots from it
    /// continues that trace. None for a config from the cache, or without span export.
    pub traceparent: Option<String>,
}

impl std::ops::Deref for AppliedConfig {
    type Target = ClusterConfig;

    fn deref(&self) -> &ClusterConfig {
        &self.config
    }
}

pub struct Agent {
    pub cluster: String,
    /// Where this cluster's workloads run, reported with its discovery.
    pub locality: trellis_model::Locality,
    /// Whether `locality` was given (--region): it then wins over the Kubernetes nodes' labels.
    pub locality_given: bool,
    pub config: watch::Sender<Option<Arc<AppliedConfig>>>,
    /// The sections of the config held, which relay deltas change.
    pub receiver: std::sync::Mutex<trellis_relay::delivery::Receiver>,
    pub registry: Arc<registry::Registry>,
    pub relay_connected: std::sync::atomic::AtomicBool,
    pub credentials: Arc<RelayCredentials>,
    /// The cluster's intermediate CA, once signed (or loaded from the cache).
    pub mesh: watch::Sender<Option<Arc<mesh_identity::ClusterCa>>>,
    pub certs: Arc<mesh_identity::WorkloadCerts>,
    pub snapshots: Arc<xds_source::ProxySnapshots>,
    pub board: trellis_xds::ProxyStatusBoard,
    /// Where the registration API listens; told to the management server for `trellis check`.
    pub registry_addr: SocketAddr,
    /// Request tracing in every proxy's HTTP listeners; none: off.
    pub proxy_tracing: Option<ProxyTracing>,
    /// In Kubernetes mode, checks the service-account token each sidecar registers with.
    pub pod_identity: Option<trellis_kube::pod_identity::TokenReviewer>,
    cache_path: PathBuf,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".trellis/agent-{}", args.cluster)));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create --data-dir {}", data_dir.display()))?;
    let cache_path = data_dir.join("config.json");
    let cached = relay_client::load_cache(&cache_path, &args.cluster);
    let receiver = cached
        .as_ref()
        .map(trellis_relay::delivery::Receiver::holding)
        .unwrap_or_default();
    let cached = cached.map(|config| {
        tracing::info!(version = %receiver.version(), "serving cached config until the management server answers");
        Arc::new(AppliedConfig {
            version: receiver.version().to_string(),
            config,
            traceparent: None,
        })
    });
    let credentials = RelayCredentials::load(CredentialOptions {
        insecure: args.insecure,
        authority: &args.relay_authority,
        root_ca: args.root_ca.as_deref(),
        client_cert: args.client_cert.as_deref(),
        client_key: args.client_key.as_deref(),
        token: args.token.clone(),
        data_dir: &data_dir,
    })?;
    if args.insecure {
        tracing::warn!(
            "INSECURE: the relay runs in plaintext without authentication; for demos only, never in production"
        );
    }
    let workload_ttl = trellis_base::parse_duration(&args.workload_cert_ttl).context("--workload-cert-ttl")?;
    let policy = policy::AdmissionPolicy::new(&args.allow_namespaces, &args.allow_service_accounts)?
        .with_gateway_namespaces(&args.allow_gateway_namespaces)?;
    if policy.admits_nothing() {
        tracing::warn!(
            "no --allow-namespace or --allow-service-account: no sidecar can register with this agent (gateways and add-ons can, with the role secret)"
        );
    } else {
        tracing::info!(allowed = %policy.describe(), "sidecars may claim these identities");
    }
    let role_secret_path = args
        .role_secret_file
        .clone()
        .unwrap_or_else(|| data_dir.join("role-secret"));
    let role_secret = role_secret::load_or_create(&role_secret_path)?;
    let xds_client_ttl = trellis_base::parse_duration(&args.xds_client_cert_ttl).context("--xds-client-cert-ttl")?;
    let xds_ca = Arc::new(xds_tls::XdsCa::load_or_create(&data_dir, xds_client_ttl)?);
    let xds_tls_config = xds_ca.server_config(args.xds_addr.ip())?;
    let xds_ca_pem = xds_ca.ca_pem().to_string();
    let registry_tls_config = match args.registry_tls_addr {
        Some(addr) => Some(xds_ca.registry_server_config(addr.ip())?),
        None => None,
    };
    let registry = Arc::new(registry::Registry::new(
        args.xds_addr,
        policy,
        &role_secret,
        Some(data_dir.join("registrations.json")),
        xds_ca,
        std::time::Instant::now(),
    ));
    let mesh_dir = mesh_identity::mesh_dir(&data_dir);
    let mut metrics_registry = prometheus_client::registry::Registry::default();
    let xds_metrics = trellis_xds::XdsMetrics::register(&mut metrics_registry);
    let source = Arc::new(xds_source::ProxySnapshots::new(registry.clone()));
    let ads = trellis_xds::AdsServer::new(source.clone(), xds_metrics);
    let board = ads.status();
    let kubernetes = match args.kubeconfig.is_some() || args.kubernetes {
        true => Some(trellis_kube::sync::client(args.kubeconfig.as_deref()).await?),
        false => None,
    };
    let agent = Arc::new(Agent {
        cluster: args.cluster.clone(),
        locality: args.locality(),
        locality_given: args.region.is_some(),
        config: watch::Sender::new(cached),
        receiver: std::sync::Mutex::new(receiver),
        registry,
        relay_connected: Default::default(),
        credentials: Arc::new(credentials),
        mesh: watch::Sender::new(mesh_identity::ClusterCa::load(&mesh_dir).map(Arc::new)),
        certs: Arc::new(mesh_identity::WorkloadCerts::new(workload_ttl)),
        snapshots: source.clone(),
        board: board.clone(),
        registry_addr: args.registry_addr,
        proxy_tracing: args.proxy_tracing(),
        pod_identity: kubernetes.clone().map(trellis_kube::pod_identity::TokenReviewer::new),
        cache_path,
    });

    if let Some(client) = kubernetes {
        let registry = agent.registry.clone();
        tracing::info!("discovering workloads from the Kubernetes API");
        tokio::spawn(trellis_kube::discovery::run(client.clone(), move |view| {
            registry.set_kubernetes_view(view)
        }));
        // Injected sidecars check the TLS registration port against it.
        tokio::spawn(trellis_kube::ca_publish::run(client, xds_ca_pem));
    }
    tokio::spawn(xds_source::keep_snapshots_current(agent.clone(), source));
    tokio::spawn(registry::expire_loop(agent.clone()));
    tokio::spawn(relay_client::run(agent.clone(), args.mgmt.clone()));
    tokio::spawn(relay_client::keep_cache(agent.clone()));
    tokio::spawn(trellis_relay::client::renew_loop(
        agent.credentials.clone(),
        args.mgmt.clone(),
        args.cluster.clone(),
    ));
    tokio::spawn(mesh_identity::keep_cluster_ca(
        agent.clone(),
        args.mgmt.clone(),
        mesh_dir,
    ));
    tokio::spawn(agent.certs.clone().watch_due());

    // Published before the registration API listens, so a gateway or add-on started with the
    // agent finds the current secret by the time its registration can be answered.
    // Under each registration port's number: local clients look it up by the port they use.
    let ports: Vec<u16> = std::iter::once(args.registry_addr.port())
        .chain(args.registry_tls_addr.map(|a| a.port()))
        .collect();
    let published: Vec<u16> = ports
        .into_iter()
        .filter(|port| role_secret::publish(&role_secret, *port).is_some())
        .collect();
    if !published.is_empty() {
        tracing::info!(?published, "role secret published for local gateways and add-ons");
    }
    let registry_listener = tokio::net::TcpListener::bind(args.registry_addr)
        .await
        .with_context(|| format!("cannot listen on --registry-addr {}", args.registry_addr))?;
    let registry_tls_listener = match args.registry_tls_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --registry-tls-addr {addr}"))?;
            let config = registry_tls_config.expect("made with the address");
            Some(registry_tls::TlsListener::new(listener, config)?)
        }
        None => None,
    };
    let xds_listener = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("cannot listen on --xds-addr {}", args.xds_addr))?;
    tracing::info!(cluster = %args.cluster, mgmt = %args.mgmt, registry = %args.registry_addr, registry_tls = ?args.registry_tls_addr, xds = %args.xds_addr, "agent started");
    if !args.registry_addr.ip().is_loopback() {
        // Registrations need credentials, but the read endpoints (workload list, delivery status,
        // metrics) answer whoever reaches the port: fine on loopback, an information leak beyond.
        tracing::warn!(
            registry = %args.registry_addr,
            "--registry-addr is not a loopback address: its read endpoints (/v1/proxies, /v1/status, /metrics) answer any host that reaches it (registrations from other hosts are refused: they use --registry-tls-addr); bind it to loopback or firewall it"
        );
    }

    let router = registry::router(agent.clone(), board, Arc::new(metrics_registry));
    let plain = router
        .clone()
        .layer(axum::middleware::from_fn(registry_tls::plain_port_guard));
    let api = axum::serve(
        registry_listener,
        plain.into_make_service_with_connect_info::<SocketAddr>(),
    );
    let tls_api = async {
        match registry_tls_listener {
            Some(listener) => axum::serve(listener, router).await,
            None => std::future::pending().await,
        }
    };
    let shutdown = trellis_support::process::Shutdown::on_signal();
    let stop = shutdown.clone();
    let xds = tonic::transport::Server::builder()
        .add_service(ads.into_service())
        .serve_with_incoming_shutdown(
            xds_tls::incoming(xds_listener, xds_tls_config, xds_tls::TlsPort::Xds),
            async move { stop.requested().await },
        );
    let servers = async {
        tokio::select! {
            result = api => result.context("registry API failed"),
            result = tls_api => result.context("TLS registry API failed"),
            result = xds => result.context("xDS server failed"),
        }
    };
    // Envoys keep their ADS streams open for as long as they run: after SIGTERM the agent gives
    // them the grace period, then exits anyway (they keep their config and reconnect).
    let outcome =
        trellis_support::process::drain(&shutdown, servers, trellis_support::process::SHUTDOWN_GRACE, "agent")
            .await
            .unwrap_or(Ok(()));
    for port in published {
        role_secret::unpublish(&role_secret, port);
    }
    outcome?;
    tracing::info!("agent stopped");
    Ok(())
}
