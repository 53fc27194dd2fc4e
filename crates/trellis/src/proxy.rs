//! `trellis proxy`: registers a workload with its cluster's agent and runs Envoy as its sidecar.
//! Also the shared machinery for anything that is "a registration plus an Envoy" (the gateway).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use trellis_model::{Protocol, Workload, WorkloadPort};

use crate::agent::ProxyRegistration;
use crate::agent::credentials::write_private;
use crate::agent::role_secret::ClientSecret;
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
    run_registered_envoy(&args.agent, &id, registration, &args.envoy, None).await
}

/// One registration with the agent, seen from the client: where, what, and the credential.
pub struct AgentRegistration {
    agent: String,
    id: String,
    body: Vec<u8>,
    /// For gateways and add-ons: the agent's role secret, read when first needed.
    secret: Option<ClientSecret>,
    secret_value: Option<String>,
    /// The token the agent issued for this id (or the one saved from an earlier run).
    pub token: Option<String>,
}

/// What one PUT came to.
pub enum PutOutcome {
    /// Accepted; `new_token` when the agent issued one (it must be kept from now on).
    Accepted { answer: Value, new_token: Option<String> },
    /// Refused: `code` is the agent's word for why (`credential-required`, `not-allowed`, ...).
    Refused { status: u16, code: String, message: String },
}

impl AgentRegistration {
    pub fn new(
        agent: &str,
        id: &str,
        registration: &ProxyRegistration,
        secret: Option<ClientSecret>,
        token: Option<String>,
    ) -> Self {
        AgentRegistration {
            agent: agent.to_string(),
            id: id.to_string(),
            body: serde_json::to_vec(registration).expect("registration serializes"),
            secret,
            secret_value: None,
            token,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/proxies/{}", self.agent, self.id)
    }

    /// One PUT with whatever credentials this registration has; a newly issued token replaces
    /// the one held. `Err` when the agent cannot be reached (or the role secret not read).
    pub async fn put(&mut self) -> anyhow::Result<PutOutcome> {
        if let (Some(secret), None) = (&self.secret, &self.secret_value) {
            self.secret_value = Some(secret.read(&self.agent)?);
        }
        let authorization = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(value) = &authorization {
            headers.push(("authorization", value));
        }
        if let Some(secret) = &self.secret_value {
            headers.push((crate::agent::role_secret::HEADER, secret));
        }
        let response = httpc::request(
            "PUT",
            &self.url(),
            None,
            &headers,
            Some(("application/json", self.body.clone())),
            Duration::from_secs(2),
        )
        .await?;
        if response.status == 200 {
            let answer: Value = serde_json::from_str(&response.body).context("the agent's answer is not JSON")?;
            let new_token = answer["token"].as_str().map(str::to_string);
            if let Some(token) = &new_token {
                self.token = Some(token.clone());
            }
            return Ok(PutOutcome::Accepted { answer, new_token });
        }
        let error: Value = serde_json::from_str(&response.body).unwrap_or_default();
        if error["code"] == "role-secret-required" {
            // The agent may have been given another secret since it was read: read it again.
            self.secret_value = None;
        }
        Ok(PutOutcome::Refused {
            status: response.status,
            code: error["code"].as_str().unwrap_or_default().to_string(),
            message: error["error"].as_str().unwrap_or(&response.body).to_string(),
        })
    }

    /// Deregisters with the credential held (best effort: the agent forgets it after its TTL
    /// anyway); true when the agent no longer holds the id.
    pub async fn delete(&self) -> bool {
        let authorization = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = authorization.iter().map(|v| ("authorization", v.as_str())).collect();
        httpc::request("DELETE", &self.url(), None, &headers, None, Duration::from_secs(2))
            .await
            .is_ok_and(|response| response.status == 204 || response.status == 404)
    }
}

/// Refusals worth waiting out: the id is still held by an earlier run that did not deregister
/// (it expires one TTL after its last refresh), or the secret changed under us.
fn transient(code: &str) -> bool {
    matches!(
        code,
        "credential-required" | "wrong-credential" | "role-secret-required"
    )
}

/// How long a held id is waited for: a little more than the agent's TTL.
const HELD_ID_WAIT: Duration = Duration::from_secs(45);

/// Registers, runs Envoy against the agent's ADS server, refreshes the registration until a
/// signal or Envoy's exit, then deregisters and stops Envoy. `secret` for the privileged roles
/// (gateways).
///
/// The registration's token is kept in the data directory (mode 0600) so that a restarted proxy
/// keeps its id, and goes into Envoy's bootstrap (mode 0600) for the ADS stream.
pub async fn run_registered_envoy(
    agent: &str,
    id: &str,
    registration: ProxyRegistration,
    envoy: &EnvoyArgs,
    secret: Option<ClientSecret>,
) -> anyhow::Result<()> {
    let data_dir = envoy
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".trellis/proxy-{}", id.replace('~', "-"))));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let token_path = data_dir.join("agent-token");
    let saved = std::fs::read_to_string(&token_path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let mut link = AgentRegistration::new(agent, id, &registration, secret, saved);
    let answer = register_with_retry(&mut link).await?;
    let token = link.token.clone().context("the agent issued no credential")?;
    write_private(&token_path, &token)?;
    let cluster = answer["cluster"].as_str().unwrap_or_default().to_string();
    let xds_address = answer["xdsAddress"]
        .as_str()
        .context("agent did not say where its xDS server is")?
        .to_string();
    let xds_port = answer["xdsPort"]
        .as_u64()
        .context("agent did not say where its xDS server is")? as u16;

    let admin_port = if envoy.admin_port == 0 {
        crate::process::free_port()
    } else {
        envoy.admin_port
    };
    let bootstrap = trellis_envoy::bootstrap_with_token(
        &trellis_envoy::BootstrapSpec {
            node_id: id,
            node_cluster: &cluster,
            admin_address: "127.0.0.1",
            admin_port,
            xds_address: &xds_address,
            xds_port,
        },
        &token,
    );
    let bootstrap_path = data_dir.join("bootstrap.json");
    write_private(
        &bootstrap_path,
        &serde_json::to_string_pretty(&bootstrap).expect("bootstrap serializes"),
    )?;

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
                // The agent may have restarted and forgotten us: it knows our credential from its
                // data directory, or adopts the token we present.
                match link.put().await {
                    Ok(PutOutcome::Accepted { new_token: None, .. }) => {}
                    Ok(PutOutcome::Accepted { new_token: Some(token), .. }) => {
                        // Only a holder of the role secret can replace a gateway's credential
                        // (two gateways started with one id). Envoy's bootstrap holds the old one.
                        let _ = write_private(&token_path, &token);
                        break Err(anyhow::anyhow!("the agent replaced this proxy's credential (another process registered {id}); restart to use it"));
                    }
                    Ok(PutOutcome::Refused { status, message, .. }) => {
                        tracing::warn!(proxy.id = id, status, error = message, "the agent refused the refresh; Envoy keeps its config");
                    }
                    Err(error) => tracing::warn!(proxy.id = id, error = %format!("{error:#}"), "cannot refresh registration; Envoy keeps its config"),
                }
            }
            status = child.wait() => break Err(anyhow::anyhow!("envoy exited: {}", status?)),
            _ = crate::process::shutdown_signal() => break Ok(()),
        }
    };
    // Deregistered, the token is worthless and a fresh start gets a new one; otherwise it is
    // kept, so that a restart presents it instead of waiting for the agent to expire the id.
    if link.delete().await {
        let _ = std::fs::remove_file(&token_path);
    }
    crate::process::terminate(&mut child, Duration::from_secs(3)).await;
    tracing::info!(proxy.id = id, "proxy stopped");
    outcome
}

/// Registers, waiting for an agent that is not up yet and for an id still held by an earlier
/// run of this proxy; a refusal for any other reason is final.
pub async fn register_with_retry(link: &mut AgentRegistration) -> anyhow::Result<Value> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    for attempt in 1.. {
        match link.put().await {
            Ok(PutOutcome::Accepted { answer, .. }) => return Ok(answer),
            Ok(PutOutcome::Refused { code, message, .. }) if transient(&code) && started.elapsed() < HELD_ID_WAIT => {
                tracing::warn!(
                    proxy.id = link.id,
                    error = message,
                    "registration refused for now; retrying"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(PutOutcome::Refused { status, message, .. }) => {
                anyhow::bail!("agent refused the registration ({status}): {message}")
            }
            Err(error) if attempt < 60 => {
                tracing::info!(error = %format!("{error:#}"), "agent not reachable yet; retrying");
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
