//! Command-line definitions (clap derive; doc comments are the `--help` text) and dispatch.

use clap::{Parser, Subcommand};

use trellis_agent::{self as agent, gateway, proxy};
use trellis_cli::api_client::ServerArgs;
use trellis_cli::{
    access_cli, client, cluster_cli, dashboard_cli, debug_report, demo_app, insights_cli, proxy_config_cli, up,
    version_cli,
};
use trellis_ext_auth_server as extauth;
use trellis_mgmt as mgmt;
use trellis_rate_limiter as ratelimit;

/// Trellis: a multi-cluster service mesh that programs Envoy.
#[derive(Debug, Parser)]
#[command(name = "trellis", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as `text` or `json` (one object a line, with the spans around each event);
    /// processes `trellis up` starts inherit TRELLIS_LOG_FORMAT.
    #[arg(long, global = true, env = "TRELLIS_LOG_FORMAT", default_value = "text")]
    pub log_format: trellis_support::telemetry::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the management server.
    Mgmt(Box<mgmt::MgmtArgs>),
    /// Run a cluster's agent.
    Agent(Box<agent::AgentArgs>),
    /// Register a workload with its agent and run its Envoy sidecar.
    Proxy(proxy::ProxyArgs),
    /// Run the rate limit service (Envoy RLS v3, counters in Redis).
    RateLimiter(ratelimit::RateLimiterArgs),
    /// Run the external auth service (Envoy ext_authz v3).
    ExtAuth(extauth::ExtAuthArgs),
    /// Run a gateway.
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Run a local two-cluster mesh with a demo app; Ctrl-C stops it all.
    Up(up::UpArgs),
    /// Create or update resources from files, directories or `-` (stdin).
    Apply(client::ApplyArgs),
    /// List resources of a kind, or show one.
    Get(client::GetArgs),
    /// Delete resources named in files, or one by kind and name.
    Delete(client::DeleteArgs),
    /// Show one resource's status and its delivery to proxies (from Envoy's ACKs and NACKs).
    Describe(client::DescribeArgs),
    /// Register, deregister and list workload clusters.
    #[command(subcommand)]
    Cluster(cluster_cli::ClusterCommand),
    /// Check the mesh: relay security, certificate expiry, agents' connection state.
    Check(ServerArgs),
    /// Coded insights about the mesh (TRLnnnn: severity, target, summary, fix); exits non-zero
    /// while an error is active. `silence`/`unsilence` hide a code (admin only).
    Insights(insights_cli::InsightsArgs),
    /// This client's version and the management server's.
    Version(version_cli::VersionArgs),
    /// A proxy's live Envoy config, read by its cluster's agent.
    ProxyConfig(proxy_config_cli::ProxyConfigArgs),
    /// Open the web UI in a browser, signed in with this client's token.
    Dashboard(dashboard_cli::DashboardArgs),
    /// Support tools: `trellis debug report` writes one archive of the mesh's state.
    #[command(subcommand)]
    Debug(debug_report::DebugCommand),
    /// A shell completion script on stdout, e.g. `source <(trellis completion bash)`.
    Completion { shell: clap_complete::Shell },
    /// The Gloo kinds as Kubernetes CustomResourceDefinitions on stdout, for
    /// `trellis crds | kubectl apply -f -` on the management cluster.
    Crds,
    /// The client config: contexts (server, CA, credential) and the current one.
    #[command(subcommand)]
    Config(access_cli::ConfigCommand),
    /// API tokens for people and CI: create (shown once), list, revoke.
    #[command(subcommand)]
    Token(access_cli::TokenCommand),
    /// The audit log: who changed what, when, and what was refused.
    Audit(access_cli::AuditArgs),
    /// A small HTTP service for demos and tests.
    #[command(hide = true)]
    DemoApp(demo_app::DemoAppArgs),
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// The cluster's east-west gateway (traffic from other clusters).
    EastWest(gateway::EastWestArgs),
    /// An ingress gateway: serves the VirtualGateways that select its labels.
    Ingress(gateway::IngressArgs),
}

impl Cli {
    /// The daemons export their spans when given a collector; other commands never do.
    pub fn span_export(&self) -> Option<trellis_support::span_export::SpanExport> {
        use trellis_support::span_export::SpanExport;
        match &self.command {
            Command::Mgmt(args) => Some(SpanExport {
                endpoint: args.otlp_endpoint.clone()?,
                service: "trellis-mgmt",
                cluster: args.cluster_name.clone(),
            }),
            Command::Agent(args) => Some(SpanExport {
                endpoint: args.otlp_endpoint.clone()?,
                service: "trellis-agent",
                cluster: Some(args.cluster.clone()),
            }),
            _ => None,
        }
    }
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Mgmt(args) => mgmt::run(*args).await,
        Command::Agent(args) => agent::run(*args).await,
        Command::Proxy(args) => proxy::run(args).await,
        Command::Gateway(GatewayCommand::EastWest(args)) => gateway::run_east_west(args).await,
        Command::Gateway(GatewayCommand::Ingress(args)) => gateway::run_ingress(args).await,
        Command::Up(args) => up::run(args).await,
        Command::RateLimiter(args) => ratelimit::run(args).await,
        Command::ExtAuth(args) => extauth::run(args).await,
        Command::Apply(args) => client::apply(args).await,
        Command::Get(args) => client::get(args).await,
        Command::Delete(args) => client::delete(args).await,
        Command::Describe(args) => client::describe(args).await,
        Command::Cluster(command) => cluster_cli::run(command).await,
        Command::Check(args) => cluster_cli::check(args).await,
        Command::Insights(args) => insights_cli::run(args).await,
        Command::Version(args) => version_cli::version(args).await,
        Command::Dashboard(args) => dashboard_cli::dashboard(args).await,
        Command::ProxyConfig(args) => proxy_config_cli::proxy_config(args).await,
        Command::Debug(command) => debug_report::run(command).await,
        Command::Completion { shell } => {
            // Into memory first: clap_complete panics on a write error, such as a closed pipe.
            let mut script = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "trellis", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(())
        }
        Command::Crds => {
            let yaml = trellis_kube::crds::custom_resource_definitions_yaml();
            std::io::Write::write_all(&mut std::io::stdout(), yaml.as_bytes())?;
            Ok(())
        }
        Command::Config(command) => access_cli::config(command),
        Command::Token(command) => access_cli::token(command).await,
        Command::Audit(args) => access_cli::audit(args).await,
        Command::DemoApp(args) => demo_app::run(args).await,
    }
}
