//! `trellis up`: a whole local mesh from the one binary, with a demo app.
//!
//! ```text
//!  mgmt ─┬─ cluster-1: agent, east-west gateway, frontend (+sidecar), backend v1 (+sidecar)
//!        └─ cluster-2: agent, east-west gateway,                     backend v2 (+sidecar)
//! ```
//!
//! [`LocalMesh`] is also what the end-to-end tests and the benchmarks start, so the README's
//! main job is the thing the tests exercise. Every process is a child of this one (and dies with
//! it); logs go to `<dir>/logs/<process>.log`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use trellis_support::httpc;
use trellis_support::process::free_port;

pub const DEMO_VIRTUAL_DESTINATIONS: &str = include_str!("../../../examples/demo/virtual-destinations.yaml");
pub const DEMO_ROUTE_TABLE: &str = include_str!("../../../examples/demo/route-table.yaml");

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Working directory for stores, bootstraps and logs; wiped at start.
    #[arg(long, default_value = ".trellis/up")]
    pub dir: PathBuf,
    /// The management server's API port (what `trellis apply/get` talk to).
    #[arg(long, default_value_t = 8090)]
    pub api_port: u16,
    /// The frontend sidecar's outbound proxy port, for the printed curl commands.
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Run the relay in plaintext without registration (demos of the insecure mode only).
    #[arg(long)]
    pub insecure: bool,
    /// Do not start the add-ons (ext-auth; Redis and the rate limiter).
    #[arg(long)]
    pub no_addons: bool,
    /// OTLP/gRPC collector (host:port, e.g. Jaeger's 4317): the management server and agents
    /// export their spans there, and every proxy its request traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Percentage of requests the proxies trace (with --otlp-endpoint).
    #[arg(long, default_value_t = 100.0)]
    pub trace_sampling: f64,
    /// Do not run the built-in Prometheus (started when `prometheus` is on PATH) that feeds the
    /// UI's service graph.
    #[arg(long)]
    pub no_prometheus: bool,
}

/// How many listeners an Envoy is still warming, from its admin stats; `None` when it does not
/// answer.
async fn listeners_warming(admin_port: u16) -> Option<u64> {
    let url = format!("http://127.0.0.1:{admin_port}/stats?filter=^listener_manager.total_listeners_warming$");
    let response = httpc::get(&url, Duration::from_secs(2)).await.ok()?;
    response
        .body
        .lines()
        .find_map(|line| line.strip_prefix("listener_manager.total_listeners_warming: "))
        .and_then(|value| value.trim().parse().ok())
}

/// One child process that can be stopped, killed and started again with the same arguments.
pub struct Proc {
    pub name: String,
    bin: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Proc {
    /// A process of `bin` with `args`, logging to `<dir>/logs/<name>.log`; not started yet.
    pub fn new(bin: &Path, dir: &Path, name: &str, args: Vec<String>) -> Self {
        Proc {
            name: name.to_string(),
            bin: bin.to_path_buf(),
            args,
            env: Vec::new(),
            log: dir.join("logs").join(format!("{name}.log")),
            child: None,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = tokio::process::Command::new(&self.bin);
        command
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(
            trellis_support::process::spawn_tied(command, false)
                .with_context(|| format!("cannot start {}", self.name))?,
        );
        Ok(())
    }

    /// SIGKILL: a crash, for tests.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            trellis_support::process::terminate(&mut child, Duration::from_secs(5)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

pub struct ClusterProcs {
    pub name: String,
    pub agent: Proc,
    pub gateway: Proc,
    pub registry_port: u16,
    /// The agent's TLS registration port, with [`MeshOptions::registry_tls`].
    pub registry_tls_port: Option<u16>,
    pub gateway_port: u16,
    pub gateway_admin_port: u16,
    /// Add-on processes (ext-auth, redis, rate-limiter) with the port each listens on.
    pub addons: Vec<(Proc, u16)>,
}

pub struct AppProcs {
    pub name: String,
    pub cluster: String,
    pub app: Proc,
    pub sidecar: Proc,
    pub app_port: u16,
    /// The sidecar's inbound (mTLS) listener.
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub admin_port: u16,
}

pub struct LocalMesh {
    pub dir: PathBuf,
    /// The built-in Prometheus and its port, with [`MeshOptions::prometheus`].
    pub prometheus: Option<(Proc, u16)>,
    pub mgmt: Proc,
    pub api_url: String,
    /// The admin client config the management server writes (`TRELLIS_CONFIG` for the CLI).
    pub api_config: PathBuf,
    pub admin_port: u16,
    pub clusters: Vec<ClusterProcs>,
    pub apps: Vec<AppProcs>,
    progress: Progress,
    /// Where sidecars accept inbound mesh traffic.
    app_address: String,
    sidecar_token_dir: Option<PathBuf>,
    /// How sidecars name their agent's host.
    agent_host: &'static str,
}

/// What `trellis up` prints as it goes: each step once done, with the seconds since the start,
/// so a person sees where the minute goes (and where it stopped, if it does). Silent in tests.
#[derive(Debug, Clone, Copy)]
struct Progress {
    started: Instant,
    enabled: bool,
}

impl Progress {
    fn step(&self, what: impl std::fmt::Display) {
        if self.enabled {
            println!("  [{:5.1} s] {what}", self.started.elapsed().as_secs_f64());
        }
    }
}

/// How to start a local mesh: the ports a person types (everything else is picked free), the
/// relay's security, and extra flags for the agents (tests shorten certificate lifetimes).
pub struct MeshOptions {
    pub api: u16,
    pub frontend_outbound: u16,
    pub insecure: bool,
    pub mgmt_flags: Vec<String>,
    pub agent_flags: Vec<String>,
    /// Extra flags for one cluster's agent only, after `agent_flags` (e.g. its `--region`).
    pub cluster_agent_flags: Vec<(String, Vec<String>)>,
    /// Start the add-ons in every cluster: `trellis ext-auth`, and a Redis with `trellis
    /// rate-limiter` when `redis-server` is installed.
    pub addons: bool,
    /// Print each step as it is done (`trellis up`).
    pub progress: bool,
    /// Run a Prometheus (`prometheus` on PATH) scraping the management server and the agents'
    /// merged proxy stats, and give its URL to the management server for the UI's graph.
    pub prometheus: bool,
    /// Where the mesh sends its traces, if anywhere.
    pub tracing: Option<MeshTracing>,
    /// Relay addresses of further management server replicas, after the mesh's own: agents
    /// take the first that answers.
    pub extra_relays: Vec<String>,
    /// Where sidecars accept inbound mesh traffic (default 127.0.0.1): a host address where
    /// the workloads' addresses come from Kubernetes, which refuses loopback endpoints.
    pub app_address: Option<String>,
    /// Sidecars present `<dir>/<app name>.token` as their Kubernetes service-account token.
    pub sidecar_token_dir: Option<PathBuf>,
    /// Agents also serve registration over TLS, and sidecars register there, checking it with
    /// the agent's CA, as an injected sidecar does in Kubernetes.
    pub registry_tls: bool,
    /// Agents listen for xDS and TLS registration on every address, and sidecars reach them by
    /// name (`localhost`), as pods reach their agent through its Service.
    pub agents_by_name: bool,
}

/// Traces of a local mesh: the management server's and agents' spans, and the proxies'
/// request traces at `sampling_percent`.
#[derive(Debug, Clone)]
pub struct MeshTracing {
    /// An OTLP/gRPC collector, host:port.
    pub endpoint: String,
    pub sampling_percent: f64,
}

impl MeshOptions {
    pub fn free() -> Self {
        MeshOptions {
            api: free_port(),
            frontend_outbound: free_port(),
            insecure: false,
            mgmt_flags: Vec::new(),
            agent_flags: Vec::new(),
            cluster_agent_flags: Vec::new(),
            addons: false,
            progress: false,
            prometheus: false,
            tracing: None,
            extra_relays: Vec::new(),
            app_address: None,
            sidecar_token_dir: None,
            registry_tls: false,
            agents_by_name: false,
        }
    }
}

/// One app with its sidecar, for [`LocalMesh::start_app`].
pub struct AppSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub service: &'a str,
    pub version: &'a str,
    pub cluster: &'a str,
    /// URL the app calls through its sidecar on every request (a frontend).
    pub calls: Option<&'a str>,
    /// A fixed outbound port; a free one when `None`.
    pub outbound_port: Option<u16>,
    /// The service port clients name (the app itself listens on a free one): 80 in the demo,
    /// 9080 for bookinfo-style services.
    pub port: u16,
}

impl<'a> AppSpec<'a> {
    /// A service on port 80 that calls nothing, its outbound port picked free.
    pub fn new(name: &'a str, namespace: &'a str, service: &'a str, version: &'a str, cluster: &'a str) -> Self {
        AppSpec {
            name,
            namespace,
            service,
            version,
            cluster,
            calls: None,
            outbound_port: None,
            port: 80,
        }
    }

    /// The same app serving `port` instead.
    pub fn on_port(self, port: u16) -> Self {
        AppSpec { port, ..self }
    }
}

impl LocalMesh {
    /// Starts the management server, two clusters and the demo app; returns once the API answers.
    /// Apply the demo config and call [`LocalMesh::wait_for_traffic`] to know traffic flows.
    pub async fn start(bin: &Path, dir: &Path, options: MeshOptions) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("logs"))?;
        let s = |v: &dyn ToString| v.to_string();
        let relay_port = free_port();
        let admin_port = free_port();
        let mut mgmt = Proc::new(
            bin,
            dir,
            "mgmt",
            vec![
                "mgmt".into(),
                "--data-dir".into(),
                s(&dir.join("mgmt").display()),
                "--api-addr".into(),
                format!("127.0.0.1:{}", options.api),
                "--relay-addr".into(),
                format!("127.0.0.1:{relay_port}"),
                "--admin-addr".into(),
                format!("127.0.0.1:{admin_port}"),
            ],
        );
        if options.insecure {
            mgmt.args.push("--insecure".into());
        }
        if let Some(tracing) = &options.tracing {
            mgmt.args.extend([
                "--otlp-endpoint".into(),
                tracing.endpoint.clone(),
                "--cluster-name".into(),
                "mgmt".into(),
            ]);
        }
        let prometheus_port = options.prometheus.then(free_port);
        if let Some(port) = prometheus_port {
            mgmt.args
                .extend(["--prometheus-url".into(), format!("http://127.0.0.1:{port}")]);
            // The Prometheus started below is a demo's, and insights say so in a production profile.
            mgmt.args.push("--builtin-prometheus".into());
        }
        if options.addons && redis_installed() {
            // The Redis started below is a demo's, and insights say so in a production profile.
            mgmt.args.push("--builtin-redis".into());
        }
        mgmt.args.extend(options.mgmt_flags.iter().cloned());
        mgmt.start()?;
        let mut mesh = LocalMesh {
            dir: dir.to_path_buf(),
            mgmt,
            api_url: format!("https://127.0.0.1:{}", options.api),
            api_config: dir.join("mgmt").join("admin.conf"),
            admin_port,
            prometheus: None,
            clusters: Vec::new(),
            apps: Vec::new(),
            progress: Progress {
                started: Instant::now(),
                enabled: options.progress,
            },
            app_address: options.app_address.clone().unwrap_or_else(|| "127.0.0.1".into()),
            sidecar_token_dir: options.sidecar_token_dir.clone(),
            agent_host: if options.agents_by_name {
                "localhost"
            } else {
                "127.0.0.1"
            },
        };
        mesh.wait_for_api(Duration::from_secs(30)).await?;
        mesh.progress.step(format_args!(
            "management server: API {}, relay 127.0.0.1:{relay_port}, metrics 127.0.0.1:{admin_port}",
            mesh.api_url
        ));

        for cluster in ["cluster-1", "cluster-2"] {
            let registry_port = free_port();
            let registry_tls_port = options.registry_tls.then(free_port);
            let bind = if options.agents_by_name { "0.0.0.0" } else { "127.0.0.1" };
            let xds_port = free_port();
            let gateway_port = free_port();
            let gateway_admin_port = free_port();
            let mut agent = Proc::new(
                bin,
                dir,
                &format!("agent-{cluster}"),
                vec![
                    "agent".into(),
                    "--cluster".into(),
                    cluster.into(),
                    "--mgmt".into(),
                    std::iter::once(format!("127.0.0.1:{relay_port}"))
                        .chain(options.extra_relays.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(","),
                    "--data-dir".into(),
                    s(&dir.join(format!("agent-{cluster}")).display()),
                    "--registry-addr".into(),
                    format!("127.0.0.1:{registry_port}"),
                    "--xds-addr".into(),
                    format!("{bind}:{xds_port}"),
                    // The demo's workloads live in `demo`: sidecars may claim only its identities.
                    // Gateways and add-ons find the agent's role secret where it publishes it.
                    "--allow-namespace".into(),
                    "demo".into(),
                ],
            );
            if options.insecure {
                agent.args.push("--insecure".into());
            } else {
                // Register the cluster, as an operator would with `trellis cluster register`.
                let (token, root_ca) = mesh.register_cluster(cluster).await?;
                mesh.progress
                    .step(format_args!("{cluster}: registered (a one-time token for its agent)"));
                let root_path = dir.join(format!("relay-root-ca-{cluster}.pem"));
                std::fs::write(&root_path, root_ca)?;
                agent.args.extend(["--root-ca".into(), s(&root_path.display())]);
                agent.env.push(("TRELLIS_TOKEN".into(), token));
            }
            if let Some(tracing) = &options.tracing {
                agent.args.extend([
                    "--otlp-endpoint".into(),
                    tracing.endpoint.clone(),
                    "--trace-sampling".into(),
                    tracing.sampling_percent.to_string(),
                ]);
            }
            if let Some(port) = registry_tls_port {
                agent
                    .args
                    .extend(["--registry-tls-addr".into(), format!("{bind}:{port}")]);
            }
            agent.args.extend(options.agent_flags.iter().cloned());
            for (_, flags) in options.cluster_agent_flags.iter().filter(|(name, _)| name == cluster) {
                agent.args.extend(flags.iter().cloned());
            }
            agent.start()?;
            let agent_ca = dir.join(format!("agent-{cluster}")).join("xds-ca.pem");
            if registry_tls_port.is_some() {
                // The gateway reads the agent's CA when it starts: the agent writes it first.
                wait_for_file(&agent_ca, Duration::from_secs(20)).await?;
            }
            let mut gateway = Proc::new(
                bin,
                dir,
                &format!("east-west-{cluster}"),
                vec![
                    "gateway".into(),
                    "east-west".into(),
                    "--agent".into(),
                    format!("127.0.0.1:{}", registry_tls_port.unwrap_or(registry_port)),
                    "--port".into(),
                    s(&gateway_port),
                    "--admin-port".into(),
                    s(&gateway_admin_port),
                    "--data-dir".into(),
                    s(&dir.join(format!("east-west-{cluster}")).display()),
                ],
            );
            if registry_tls_port.is_some() {
                gateway.args.extend(["--agent-ca".into(), s(&agent_ca.display())]);
            }
            gateway.start()?;
            mesh.progress
                .step(format_args!("{cluster}: agent and east-west gateway started"));
            let addons = if options.addons {
                let addons = start_addons(bin, dir, cluster, registry_port).await?;
                mesh.progress
                    .step(format_args!("{cluster}: add-ons started (ext-auth, rate limiter)"));
                addons
            } else {
                Vec::new()
            };
            mesh.clusters.push(ClusterProcs {
                name: cluster.into(),
                agent,
                gateway,
                registry_port,
                registry_tls_port,
                gateway_port,
                gateway_admin_port,
                addons,
            });
        }
        if let Some(port) = prometheus_port {
            mesh.start_prometheus(port)?;
            mesh.progress.step(format_args!(
                "Prometheus 127.0.0.1:{port}: scraping the management server and both agents' proxies"
            ));
        }

        // (name, service, version, cluster, calls)
        let demo = [
            (
                "frontend",
                "frontend",
                "v1",
                "cluster-1",
                Some("http://backend.mesh.internal/"),
            ),
            ("backend-v1", "backend", "v1", "cluster-1", None),
            ("backend-v2", "backend", "v2", "cluster-2", None),
        ];
        for (name, service, version, cluster, calls) in demo {
            let outbound = (name == "frontend").then_some(options.frontend_outbound);
            mesh.start_app(
                bin,
                AppSpec {
                    calls,
                    outbound_port: outbound,
                    ..AppSpec::new(name, "demo", service, version, cluster)
                },
            )?;
        }
        mesh.progress
            .step("demo apps started: frontend and backend v1 in cluster-1, backend v2 in cluster-2");
        Ok(mesh)
    }

    /// Starts a demo app and its sidecar in one of the mesh's clusters. The service account is
    /// the service name; labels are `app=<service>,version=<version>`.
    pub fn start_app(&mut self, bin: &Path, app: AppSpec<'_>) -> anyhow::Result<()> {
        let dir = self.dir.clone();
        let s = |v: &dyn ToString| v.to_string();
        let AppSpec {
            name,
            namespace,
            service,
            version,
            cluster,
            calls,
            outbound_port,
            port,
        } = app;
        let (registry_port, registry_tls_port) = {
            let procs = self.cluster(cluster);
            (procs.registry_port, procs.registry_tls_port)
        };
        let app_port = free_port();
        let inbound_port = free_port();
        let outbound_port = outbound_port.unwrap_or_else(free_port);
        let admin_port = free_port();
        let mut app_args: Vec<String> = vec![
            "demo-app".into(),
            "--name".into(),
            service.into(),
            "--version".into(),
            version.into(),
            "--cluster".into(),
            cluster.into(),
            "--listen".into(),
            format!("127.0.0.1:{app_port}"),
        ];
        if let Some(call) = calls {
            app_args.extend([
                "--call".into(),
                call.into(),
                "--via".into(),
                format!("127.0.0.1:{outbound_port}"),
            ]);
        }
        let mut app = Proc::new(bin, &dir, name, app_args);
        app.start()?;
        let mut sidecar = Proc::new(
            bin,
            &dir,
            &format!("sidecar-{name}"),
            vec![
                "proxy".into(),
                "--agent".into(),
                format!("{}:{}", self.agent_host, registry_tls_port.unwrap_or(registry_port)),
                "--name".into(),
                name.into(),
                "--namespace".into(),
                namespace.into(),
                "--service".into(),
                service.into(),
                "--labels".into(),
                format!("app={service},version={version}"),
                "--service-account".into(),
                service.into(),
                "--port".into(),
                format!("http:{port}:{app_port}:{inbound_port}"),
                "--address".into(),
                self.app_address.clone(),
                "--outbound-port".into(),
                s(&outbound_port),
                "--admin-port".into(),
                s(&admin_port),
                "--data-dir".into(),
                s(&dir.join(format!("sidecar-{name}")).display()),
            ],
        );
        if registry_tls_port.is_some() {
            // The agent's CA as it keeps it (the Kubernetes ConfigMap holds the same).
            sidecar.args.extend([
                "--agent-ca".into(),
                s(&self.dir.join(format!("agent-{cluster}")).join("xds-ca.pem").display()),
            ]);
        }
        if let Some(dir) = &self.sidecar_token_dir {
            sidecar.args.extend([
                "--service-account-token-file".into(),
                dir.join(format!("{name}.token")).display().to_string(),
            ]);
        }
        sidecar.start()?;
        self.apps.push(AppProcs {
            name: name.into(),
            cluster: cluster.into(),
            app,
            sidecar,
            app_port,
            inbound_port,
            outbound_port,
            admin_port,
        });
        Ok(())
    }

    pub fn app(&self, name: &str) -> &AppProcs {
        self.apps.iter().find(|a| a.name == name).expect("demo app exists")
    }

    pub fn app_mut(&mut self, name: &str) -> &mut AppProcs {
        self.apps.iter_mut().find(|a| a.name == name).expect("demo app exists")
    }

    pub fn cluster(&self, name: &str) -> &ClusterProcs {
        self.clusters.iter().find(|c| c.name == name).expect("cluster exists")
    }

    pub fn cluster_mut(&mut self, name: &str) -> &mut ClusterProcs {
        self.clusters
            .iter_mut()
            .find(|c| c.name == name)
            .expect("cluster exists")
    }

    /// Registers a cluster through the API; returns its one-time token and the relay root CA.
    pub async fn register_cluster(&self, cluster: &str) -> anyhow::Result<(String, String)> {
        let response = self
            .api()?
            .request(
                "POST",
                &format!("/api/v1/clusters/{cluster}/register"),
                Some(("application/json", Vec::new())),
            )
            .await?;
        anyhow::ensure!(response.status == 200, "cannot register {cluster}: {}", response.body);
        let body: serde_json::Value = serde_json::from_str(&response.body)?;
        let field = |name: &str| {
            body[name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("register answer has no {name}: {body}"))
        };
        Ok((field("token")?, field("rootCaPem")?))
    }

    pub async fn wait_for_api(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            // The server writes its admin client config before it listens.
            if let Ok(api) = self.api()
                && let Ok(Ok(response)) =
                    tokio::time::timeout(Duration::from_secs(1), api.get("/api/v1/resources")).await
                && response.status == 200
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "management server API not up after {limit:?}; see {}",
                self.mgmt.log_path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs YAML to the apply endpoint; returns the HTTP status and body.
    pub async fn apply(&self, source: &str, yaml: &str) -> anyhow::Result<httpc::Response> {
        self.api()?
            .request(
                "POST",
                &format!("/api/v1/apply?source={source}"),
                Some(("application/yaml", yaml.as_bytes().to_vec())),
            )
            .await
    }

    /// The API as admin, through the client config the management server wrote.
    pub fn api(&self) -> anyhow::Result<crate::api_client::ApiClient> {
        crate::api_client::ApiClient::from_config_file(&self.api_config)
    }

    pub async fn apply_demo_config(&self) -> anyhow::Result<()> {
        for (source, yaml) in [
            ("virtual-destinations.yaml", DEMO_VIRTUAL_DESTINATIONS),
            ("route-table.yaml", DEMO_ROUTE_TABLE),
        ] {
            let response = self.apply(source, yaml).await?;
            anyhow::ensure!(response.status == 200, "demo config rejected: {}", response.body);
        }
        Ok(())
    }

    /// One request from the frontend's sidecar (as the frontend app would send it).
    pub async fn call_from_frontend(&self, url: &str) -> anyhow::Result<httpc::Response> {
        self.call_from("frontend", url).await
    }

    /// One request through an app's sidecar, as that app would send it.
    pub async fn call_from(&self, app: &str, url: &str) -> anyhow::Result<httpc::Response> {
        let proxy = format!("127.0.0.1:{}", self.app(app).outbound_port);
        httpc::request("GET", url, Some(&proxy), &[], None, Duration::from_secs(5)).await
    }

    /// Waits until the frontend's sidecar reaches the v2 backend in cluster-2 (the whole path:
    /// relay, translation, both agents, ADS, both sidecars and the gateway works) and every
    /// sidecar's listeners are up.
    pub async fn wait_for_traffic(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        loop {
            match self.call_from_frontend("http://backend-v2.mesh.internal/").await {
                Ok(response) if response.status == 200 && response.body.contains("\"cluster-2\"") => {
                    self.progress
                        .step("traffic crosses clusters: the frontend reaches backend v2 in cluster-2");
                    break;
                }
                Ok(response) => last = format!("HTTP {}: {}", response.status, response.body.trim()),
                Err(error) => last = error.to_string(),
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no cross-cluster traffic after {limit:?} (last answer: {last}); logs in {}",
                self.dir.join("logs").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The demo's split route answers too, to both clusters' targets: a sidecar can have a
        // route before the cluster it names (Envoy answers 503 until the cluster arrives).
        let mut in_a_row = 0;
        while in_a_row < 20 {
            match self.call_from_frontend("http://backend.mesh.internal/").await {
                Ok(response) if response.status == 200 => in_a_row += 1,
                Ok(response) => {
                    in_a_row = 0;
                    last = format!("HTTP {}: {}", response.status, response.body.trim());
                }
                Err(error) => {
                    in_a_row = 0;
                    last = error.to_string();
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "backend.mesh.internal does not answer steadily after {limit:?} (last answer: {last}); logs in {}",
                self.dir.join("logs").display()
            );
        }
        self.progress.step("the demo's 80/20 split answers steadily");
        // Every sidecar's listeners are up too, not only the ones on that path.
        for app in &self.apps {
            for (host, port) in [
                (self.app_address.as_str(), app.inbound_port),
                ("127.0.0.1", app.outbound_port),
            ] {
                while tokio::net::TcpStream::connect((host, port)).await.is_err() {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "{} has no listener on port {port} after {limit:?}",
                        app.name
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // A bound port is not a serving one: a listener whose routes (RDS) have not arrived
            // yet is still warming, and the kernel queues connections to it meanwhile.
            while listeners_warming(app.admin_port).await != Some(0) {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{}'s sidecar still has listeners warming after {limit:?}",
                    app.name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.progress.step("every sidecar serves");
        Ok(())
    }

    /// Stops everything, proxies first so they can deregister.
    /// What a Prometheus scrapes of this mesh, every second: the management server's admin port
    /// and each agent's merged proxy stats (`/metrics/proxies`).
    pub fn prometheus_config(&self) -> String {
        let agents: Vec<String> = self
            .clusters
            .iter()
            .map(|cluster| format!("'127.0.0.1:{}'", cluster.registry_port))
            .collect();
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: trellis-mgmt\n\
             \x20 static_configs: [{{targets: ['127.0.0.1:{}']}}]\n\
             - job_name: trellis-proxies\n\
             \x20 metrics_path: /metrics/proxies\n\
             \x20 static_configs: [{{targets: [{}]}}]\n",
            self.admin_port,
            agents.join(", ")
        )
    }

    /// Starts Debian's (or any) `prometheus` on `port` with [`LocalMesh::prometheus_config`].
    pub fn start_prometheus(&mut self, port: u16) -> anyhow::Result<()> {
        let dir = self.dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("prometheus.yml"), self.prometheus_config())?;
        let mut prometheus = Proc::new(
            Path::new("prometheus"),
            &self.dir,
            "prometheus",
            vec![
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ],
        );
        prometheus.start()?;
        self.prometheus = Some((prometheus, port));
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        if let Some((prometheus, _)) = &mut self.prometheus {
            prometheus.stop().await;
        }
        for app in &mut self.apps {
            app.sidecar.stop().await;
            app.app.stop().await;
        }
        for cluster in &mut self.clusters {
            for (addon, _) in cluster.addons.iter_mut().rev() {
                addon.stop().await;
            }
            cluster.gateway.stop().await;
            cluster.agent.stop().await;
        }
        self.mgmt.stop().await;
    }
}

/// Whether `prometheus` runs here (Debian's package, or any on PATH).
fn prometheus_installed() -> bool {
    std::process::Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The add-ons of one cluster, registered with its agent under Gloo's default names
/// (`ext-auth-service` and `rate-limiter` in `gloo-mesh`), so policies reference them as in Gloo.
/// Waits until `path` exists (a process writes it as it starts).
async fn wait_for_file(path: &Path, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear within {limit:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn start_addons(bin: &Path, dir: &Path, cluster: &str, registry_port: u16) -> anyhow::Result<Vec<(Proc, u16)>> {
    start_addons_in(bin, dir, cluster, registry_port, "gloo-mesh").await
}

/// [`start_addons`] registered in `namespace` instead: Gloo 2.x's add-ons chart installs them in
/// `gloo-mesh-addons`, where its guides' ExtAuthServer and rate-limit resources point.
pub async fn start_addons_in(
    bin: &Path,
    dir: &Path,
    cluster: &str,
    registry_port: u16,
    namespace: &str,
) -> anyhow::Result<Vec<(Proc, u16)>> {
    let agent = format!("127.0.0.1:{registry_port}");
    let mut procs = Vec::new();
    let ext_auth_port = free_port();
    let mut ext_auth = Proc::new(
        bin,
        dir,
        &format!("ext-auth-{cluster}"),
        vec![
            "ext-auth".into(),
            "--listen".into(),
            format!("127.0.0.1:{ext_auth_port}"),
            "--agent".into(),
            agent.clone(),
            "--namespace".into(),
            namespace.into(),
        ],
    );
    ext_auth.start()?;
    procs.push((ext_auth, ext_auth_port));
    if !redis_installed() {
        tracing::warn!(
            cluster,
            "redis-server is not installed: no rate limiter (scripts/setup installs it)"
        );
        return Ok(procs);
    }
    let redis_port = free_port();
    let mut redis = Proc::new(
        Path::new("redis-server"),
        dir,
        &format!("redis-{cluster}"),
        [
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(String::from)
        .to_vec(),
    );
    redis.start()?;
    // The rate limiter connects to Redis as it starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "redis-server did not start: see {}",
            redis.log_path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    procs.push((redis, redis_port));
    let limiter_port = free_port();
    let mut limiter = Proc::new(
        bin,
        dir,
        &format!("rate-limiter-{cluster}"),
        vec![
            "rate-limiter".into(),
            "--listen".into(),
            format!("127.0.0.1:{limiter_port}"),
            "--redis".into(),
            format!("redis://127.0.0.1:{redis_port}"),
            "--agent".into(),
            agent,
            "--namespace".into(),
            namespace.into(),
        ],
    );
    limiter.start()?;
    procs.push((limiter, limiter_port));
    Ok(procs)
}

/// `redis-server` runs here: the mesh's add-ons then include a Redis and a rate limiter.
fn redis_installed() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // Ctrl-C is caught from here on: pressed during the minute of start-up, it stops what has
    // started and says so, like a Ctrl-C after it.
    let stop = trellis_support::process::Shutdown::on_signal();
    let bin = std::env::current_exe()?;
    trellis_support::envoy_bin::find()?;
    // The two ports a person types must be free; say so now rather than after a long wait.
    for (port, flag) in [(args.api_port, "--api-port"), (args.outbound_port, "--outbound-port")] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            anyhow::bail!(
                "port {port} on 127.0.0.1 is in use (another `trellis up`?): stop it or pass {flag} with a free port"
            );
        }
    }
    println!("Starting a local mesh in {} ...", args.dir.display());
    let starting = LocalMesh::start(
        &bin,
        &args.dir,
        MeshOptions {
            api: args.api_port,
            frontend_outbound: args.outbound_port,
            insecure: args.insecure,
            mgmt_flags: Vec::new(),
            agent_flags: Vec::new(),
            cluster_agent_flags: Vec::new(),
            addons: !args.no_addons,
            progress: true,
            prometheus: !args.no_prometheus && prometheus_installed(),
            tracing: args.otlp_endpoint.clone().map(|endpoint| MeshTracing {
                endpoint,
                sampling_percent: args.trace_sampling,
            }),
            extra_relays: Vec::new(),
            app_address: None,
            sidecar_token_dir: None,
            // The demo's sidecars register as a pod's would: over TLS, checked with the agent's CA.
            registry_tls: true,
            agents_by_name: false,
        },
    );
    // Stopped while its processes start: dropping them ends them (they die with `trellis up`).
    let mut mesh = tokio::select! {
        mesh = starting => mesh?,
        _ = stop.requested() => {
            println!("\nStopped before the mesh was up.");
            return Ok(());
        }
    };
    let outcome = async {
        mesh.apply_demo_config().await?;
        mesh.progress
            .step("demo config applied: VirtualDestinations and the 80/20 RouteTable");
        mesh.wait_for_traffic(Duration::from_secs(60)).await
    };
    let outcome = tokio::select! {
        outcome = outcome => Some(outcome),
        _ = stop.requested() => None,
    };
    match outcome {
        Some(Err(error)) => {
            mesh.shutdown().await;
            return Err(error);
        }
        Some(Ok(())) => {
            let context = match install_context(&mesh) {
                Ok(path) => format!(
                    "the CLI's current context is now \"trellis-up\" (in {})",
                    path.display()
                ),
                Err(error) => format!(
                    "could not add the \"trellis-up\" context to your client config ({error:#}); use TRELLIS_CONFIG={}",
                    mesh.api_config.display()
                ),
            };
            print_summary(&mesh, &context);
            stop.requested().await;
        }
        // Ctrl-C while the demo was still settling.
        None => {}
    }
    println!("\nStopping ...");
    mesh.shutdown().await;
    println!("Stopped.");
    Ok(())
}

/// Adds the local mesh to the user's client config as the current context `trellis-up`, so
/// `trellis get`/`apply` reach it as admin with nothing to copy: like `kind create cluster`.
/// The context references the server's CA and admin token files; no secret is copied.
fn install_context(mesh: &LocalMesh) -> anyhow::Result<PathBuf> {
    let path = crate::api_client::ServerArgs::default().config_path()?;
    let admin = crate::cli_config::CliConfig::load(&mesh.api_config)?;
    let mut context = admin
        .selected(None)?
        .context("the management server wrote no admin context")?
        .clone();
    context.name = "trellis-up".into();
    let mut config = crate::cli_config::CliConfig::load(&path)?;
    config.upsert(context);
    config.current_context = "trellis-up".into();
    config.save(&path)?;
    Ok(path)
}

fn print_summary(mesh: &LocalMesh, context: &str) {
    println!("\nTrellis is up: a management server and two clusters.\n");
    println!(
        "  management server   API {} (HTTPS; admin token in {})   metrics http://127.0.0.1:{}/metrics",
        mesh.api_url,
        mesh.dir.join("mgmt/api/admin-token").display(),
        mesh.admin_port
    );
    println!("  {context}");
    for cluster in &mesh.clusters {
        println!(
            "  {:<10} agent registry 127.0.0.1:{}   east-west gateway 127.0.0.1:{} (admin {})",
            cluster.name, cluster.registry_port, cluster.gateway_port, cluster.gateway_admin_port
        );
        if !cluster.addons.is_empty() {
            let addons: Vec<String> = cluster
                .addons
                .iter()
                .map(|(proc, port)| {
                    format!(
                        "{} 127.0.0.1:{port}",
                        proc.name.trim_end_matches(&format!("-{}", cluster.name))
                    )
                })
                .collect();
            println!("  {:<10}   add-ons: {}", "", addons.join(", "));
        }
        for app in mesh.apps.iter().filter(|a| a.cluster == cluster.name) {
            println!(
                "  {:<10}   {:<11} app 127.0.0.1:{:<5}  sidecar outbound 127.0.0.1:{:<5}  envoy admin 127.0.0.1:{}",
                "", app.name, app.app_port, app.outbound_port, app.admin_port
            );
        }
    }
    let frontend = mesh.app("frontend");
    println!(
        "\nConfig: examples/demo/ (VirtualDestinations backend and backend-v2, RouteTable backend: 80% v1 / 20% v2)\n"
    );
    println!("Try it (from the frontend's point of view, through its sidecar):");
    println!(
        "  curl -x http://127.0.0.1:{} http://backend-v2.mesh.internal/    # always crosses to cluster-2 via its east-west gateway",
        frontend.outbound_port
    );
    println!(
        "  curl -x http://127.0.0.1:{} http://backend.mesh.internal/       # 80% v1 in cluster-1, 20% v2 in cluster-2",
        frontend.outbound_port
    );
    println!(
        "  curl http://127.0.0.1:{}/                                        # the frontend app calling the backend",
        frontend.app_port
    );
    println!("  trellis get routetables -n demo -o yaml");
    if mesh.clusters.iter().any(|c| c.addons.len() == 3) {
        println!("\nAdd-ons: `trellis apply -f examples/addons/`, then:");
        println!(
            "  curl -x http://127.0.0.1:{} http://api.mesh.internal/                                # 401: no API key",
            frontend.outbound_port
        );
        println!(
            "  curl -x http://127.0.0.1:{} -H 'x-api-key: frontend-demo-key' http://api.mesh.internal/  # 200; the 11th in a minute is 429",
            frontend.outbound_port
        );
    }
    println!(
        "\nWeb UI: {}/ui/  (sign in with the admin token: `trellis dashboard` opens it signed in)",
        mesh.api_url
    );
    match &mesh.prometheus {
        Some((_, port)) => {
            println!("  Its service graph shows live rates from the built-in Prometheus, http://127.0.0.1:{port}/")
        }
        None => println!("  (no `prometheus` on PATH: the UI's service graph stays empty)"),
    }
    println!("\nLogs: {}.  Ctrl-C stops everything.", mesh.dir.join("logs").display());
}
