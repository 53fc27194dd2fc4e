//! `trellis proxy`: registers a workload with its cluster's agent and runs Envoy as its sidecar.
//! Also the shared machinery for anything that is "a registration plus an Envoy" (the gateway).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use trellis_model::{Protocol, Workload, WorkloadPort};

use crate::agent::ProxyRegistration;
use crate::httpc;

/// How often a proxy refreshes its registration (the agent expires it after 30 s without one).
const REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// The agent's registration API.
    #[arg(long, default_value = "127.0.0.1:9977")]
    pub agent: String,
    /// Workload name, unique in its namespace and cluster.
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The service this workload backs.
    #[arg(long)]
    pub service: String,
    /// Workload labels, `key=value` (repeatable or comma separated).
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// A served port: `NAME:SERVICE_PORT:APP_PORT[:INBOUND_PORT][/PROTOCOL]`, e.g. `http:80:8080`.
    /// The sidecar's inbound listener takes a free port unless INBOUND_PORT is given.
    #[arg(long = "port")]
    pub ports: Vec<String>,
    /// Address the inbound listeners bind and other proxies reach.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// The app's outbound HTTP proxy port on 127.0.0.1 (`curl -x http://127.0.0.1:PORT ...`).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    #[command(flatten)]
    pub envoy: EnvoyArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct EnvoyArgs {
    /// Envoy admin port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub admin_port: u16,
    /// Where the bootstrap file goes; default `.trellis/proxy-<id>`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value = "warning")]
    pub envoy_log_level: String,
    /// Envoy worker threads.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u16,
}

fn parse_port(spec: &str) -> anyhow::Result<WorkloadPort> {
    let (spec, protocol) = match spec.split_once('/') {
        Some((spec, protocol)) => (spec, protocol),
        None => (spec, "HTTP"),
    };
    let protocol = match protocol.to_ascii_uppercase().as_str() {
        "HTTP" => Protocol::Http,
        "HTTP2" => Protocol::Http2,
        "GRPC" => Protocol::Grpc,
        "TCP" => Protocol::Tcp,
        other => anyhow::bail!("--port {spec}: unknown protocol {other} (use HTTP, HTTP2, GRPC or TCP)"),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let number = |i: usize, what: &str| -> anyhow::Result<u16> {
        parts[i]
            .parse()
            .with_context(|| format!("--port {spec}: {what} {:?} is not a port number", parts[i]))
    };
    anyhow::ensure!(
        parts.len() == 3 || parts.len() == 4,
        "--port {spec}: expected NAME:SERVICE_PORT:APP_PORT[:INBOUND_PORT]"
    );
    Ok(WorkloadPort {
        name: parts[0].to_string(),
        port: number(1, "service port")?,
        protocol,
        app_port: number(2, "app port")?,
        inbound_port: if parts.len() == 4 {
            number(3, "inbound port")?
        } else {
            crate::process::free_port()
        },
    })
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let mut labels = std::collections::BTreeMap::new();
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .with_context(|| format!("--labels {label}: expected key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let ports = args
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!ports.is_empty(), "give at least one --port NAME:SERVICE_PORT:APP_PORT");
    let workload = Workload {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        service: args.service.clone(),
        labels,
        service_account: args.service_account.clone(),
        address: args.address.clone(),
        ports,
    };
    let id = format!("sidecar~{}.{}", args.name, args.namespace);
    let registration = ProxyRegistration::Sidecar {
        workload,
        outbound_port: args.outbound_port,
    };
    run_registered_envoy(&args.agent, &id, registration, &args.envoy).await
}

/// Registers, runs Envoy against the agent's ADS server, refreshes the registration until a
/// signal or Envoy's exit, then deregisters and stops Envoy.
pub async fn run_registered_envoy(
    agent: &str,
    id: &str,
    registration: ProxyRegistration,
    envoy: &EnvoyArgs,
) -> anyhow::Result<()> {
    let url = format!("http://{agent}/v1/proxies/{id}");
    let body = serde_json::to_vec(&registration)?;
    let answer = register_with_retry(&url, &body).await?;
    let cluster = answer["cluster"].as_str().unwrap_or_default().to_string();
    let xds_address = answer["xdsAddress"]
        .as_str()
        .context("agent did not say where its xDS server is")?
        .to_string();
    let xds_port = answer["xdsPort"]
        .as_u64()
        .context("agent did not say where its xDS server is")? as u16;

    let data_dir = envoy
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".trellis/proxy-{}", id.replace('~', "-"))));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let admin_port = if envoy.admin_port == 0 {
        crate::process::free_port()
    } else {
        envoy.admin_port
    };
    let bootstrap = trellis_envoy::bootstrap(&trellis_envoy::BootstrapSpec {
        node_id: id,
        node_cluster: &cluster,
        admin_address: "127.0.0.1",
        admin_port,
        xds_address: &xds_address,
        xds_port,
    });
    let bootstrap_path = data_dir.join("bootstrap.json");
    std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(&bootstrap)?)?;

    let envoy_bin = crate::envoy_bin::find()?;
    let mut command = tokio::process::Command::new(&envoy_bin);
    command.arg("-c").arg(&bootstrap_path).args([
        "--disable-hot-restart",
        "--concurrency",
        &envoy.concurrency.to_string(),
        "--log-level",
        &envoy.envoy_log_level,
    ]);
    let mut child =
        crate::process::spawn_tied(command, false).with_context(|| format!("cannot start {}", envoy_bin.display()))?;
    tracing::info!(proxy.id = id, cluster, admin = admin_port, xds = %format!("{xds_address}:{xds_port}"), "envoy started");

    let mut refresh = tokio::time::interval(REFRESH);
    let outcome = loop {
        tokio::select! {
            _ = refresh.tick() => {
                // The agent may have restarted and forgotten us: registering again is idempotent.
                if let Err(error) = httpc::request("PUT", &url, None, &[], Some(("application/json", body.clone())), Duration::from_secs(2)).await {
                    tracing::warn!(proxy.id = id, %error, "cannot refresh registration; Envoy keeps its config");
                }
            }
            status = child.wait() => break Err(anyhow::anyhow!("envoy exited: {}", status?)),
            _ = crate::process::shutdown_signal() => break Ok(()),
        }
    };
    let _ = httpc::request("DELETE", &url, None, &[], None, Duration::from_secs(2)).await;
    crate::process::terminate(&mut child, Duration::from_secs(3)).await;
    tracing::info!(proxy.id = id, "proxy stopped");
    outcome
}

async fn register_with_retry(url: &str, body: &[u8]) -> anyhow::Result<Value> {
    let mut delay = Duration::from_millis(100);
    for attempt in 1.. {
        match httpc::request(
            "PUT",
            url,
            None,
            &[],
            Some(("application/json", body.to_vec())),
            Duration::from_secs(2),
        )
        .await
        {
            Ok(response) if response.status == 200 => return Ok(serde_json::from_str(&response.body)?),
            Ok(response) => anyhow::bail!(
                "agent refused the registration ({}): {}",
                response.status,
                response.body
            ),
            Err(error) if attempt < 60 => {
                tracing::info!(%error, "agent not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(error) => return Err(error.context("agent not reachable")),
        }
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_specs() {
        let port = parse_port("http:80:8080:15006").unwrap();
        assert_eq!(
            (
                port.name.as_str(),
                port.port,
                port.app_port,
                port.inbound_port,
                port.protocol
            ),
            ("http", 80, 8080, 15006, Protocol::Http)
        );
        assert_eq!(parse_port("grpc:9000:9001:9002/grpc").unwrap().protocol, Protocol::Grpc);
        assert!(
            parse_port("http:80")
                .unwrap_err()
                .to_string()
                .contains("expected NAME:SERVICE_PORT:APP_PORT")
        );
        assert!(
            parse_port("http:eighty:8080")
                .unwrap_err()
                .to_string()
                .contains("not a port number")
        );
    }
}
