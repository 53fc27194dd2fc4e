//! `trellis gateway east-west`: the cluster's east-west gateway, an Envoy that receives traffic
//! from other clusters and routes each request to local endpoints by its routing key.
//!
//! Gateways receive other workloads' traffic, so the agent registers them only with its role
//! secret (`--role-secret-file`, by default the copy the agent publishes for its local user).

use std::path::PathBuf;

use crate::agent_endpoint::AgentAddress;
use crate::proxy::{EnvoyArgs, run_registered_envoy};
use crate::role_secret::ClientSecret;
use crate::{IngressRegistration, ProxyRegistration, RegisteredGateway};

#[derive(Debug, Clone, clap::Args)]
pub struct EastWestArgs {
    #[command(flatten)]
    pub agent: AgentAddress,
    #[arg(long, default_value = "127.0.0.1")]
    pub listen_address: String,
    #[arg(long, default_value_t = 15443)]
    pub port: u16,
    /// Address other clusters use to reach this gateway, `host:port`; default the listen address.
    /// Must be an IP address: Envoy endpoints are not resolved by DNS.
    #[arg(long)]
    pub public_address: Option<String>,
    /// The agent's role secret (its --role-secret-file); default: the copy the agent publishes
    /// for local clients of its user.
    #[arg(long)]
    pub role_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub envoy: EnvoyArgs,
}

pub async fn run_east_west(args: EastWestArgs) -> anyhow::Result<()> {
    let public = args
        .public_address
        .clone()
        .unwrap_or_else(|| format!("{}:{}", args.listen_address, args.port));
    let (host, port) = public
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--public-address {public}: expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--public-address {public}: {port:?} is not a port"))?;
    anyhow::ensure!(
        host.parse::<std::net::IpAddr>().is_ok(),
        "--public-address {public}: use an IP address"
    );
    let registration = ProxyRegistration::EastWestGateway(RegisteredGateway {
        listen_address: args.listen_address.clone(),
        port: args.port,
        public_address: trellis_model::GatewayAddress {
            host: host.to_string(),
            port,
        },
    });
    let id = format!("east-west~{}-{}", args.listen_address, args.port);
    run_gateway(&args.agent, &id, registration, &args.envoy, &args.role_secret_file).await
}

/// Registers a gateway (with the role secret) and runs its Envoy.
async fn run_gateway(
    agent: &AgentAddress,
    id: &str,
    registration: ProxyRegistration,
    envoy: &EnvoyArgs,
    role_secret_file: &Option<PathBuf>,
) -> anyhow::Result<()> {
    let secret = ClientSecret {
        file: role_secret_file.clone(),
    };
    run_registered_envoy(&agent.endpoint()?, id, registration, envoy, Some(secret), None).await
}

#[derive(Debug, Clone, clap::Args)]
pub struct IngressArgs {
    #[command(flatten)]
    pub agent: AgentAddress,
    /// A name for this gateway proxy, unique in its cluster.
    #[arg(long, default_value = "ingress")]
    pub name: String,
    /// Address its listeners bind (ports come from the VirtualGateways it serves).
    #[arg(long, default_value = "127.0.0.1")]
    pub listen_address: String,
    /// Labels VirtualGateway `workloads[].selector.labels` match, `key=value` (repeatable or comma separated).
    #[arg(long, value_delimiter = ',', default_value = "app=ingress-gateway")]
    pub labels: Vec<String>,
    /// Namespace and service account of its mesh identity.
    /// A VirtualGateway port served on another local port, `port=local` (repeatable or comma
    /// separated), as a Kubernetes Service's targetPort: `80=8080` binds port 80's listener on 8080.
    #[arg(long, value_delimiter = ',')]
    pub port_map: Vec<String>,
    #[arg(long, default_value = "trellis")]
    pub namespace: String,
    #[arg(long, default_value = "ingress-gateway")]
    pub service_account: String,
    /// The agent's role secret (its --role-secret-file); default: the copy the agent publishes
    /// for local clients of its user.
    #[arg(long)]
    pub role_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub envoy: EnvoyArgs,
}

pub async fn run_ingress(args: IngressArgs) -> anyhow::Result<()> {
    let mut labels = std::collections::BTreeMap::new();
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--labels {label}: expected key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let mut port_map = std::collections::BTreeMap::new();
    for entry in &args.port_map {
        let parsed = entry
            .split_once('=')
            .and_then(|(port, local)| Some((port.parse::<u16>().ok()?, local.parse::<u16>().ok()?)));
        let (port, local) =
            parsed.ok_or_else(|| anyhow::anyhow!("--port-map {entry}: expected port=local-port, e.g. 80=8080"))?;
        port_map.insert(port, local);
    }
    let registration = ProxyRegistration::IngressGateway(IngressRegistration {
        listen_address: args.listen_address.clone(),
        port_map,
        labels,
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        access_log: None,
    });
    let id = format!("ingress~{}", args.name);
    run_gateway(&args.agent, &id, registration, &args.envoy, &args.role_secret_file).await
}
