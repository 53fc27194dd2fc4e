//! `trellis proxy`: registers a workload with its cluster's agent and runs Envoy as its sidecar.
//! Also the shared machinery for anything that is "a registration plus an Envoy" (the gateway).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::agent_endpoint::{AgentAddress, AgentEndpoint};
use anyhow::Context;
use serde_json::Value;
use trellis_model::{Protocol, Workload, WorkloadPort};
use trellis_support::files::write_private;

use crate::ProxyRegistration;
use crate::role_secret::ClientSecret;

/// How often a proxy refreshes its registration (the agent expires it after 30 s without one).
const REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub agent: AgentAddress,
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
    /// A Kubernetes service-account token for the agent's audience (a projected volume, as the
    /// sidecar injector mounts): sent with each registration so that an agent discovering
    /// from Kubernetes can check the pod's identity. Read again at each refresh (it rotates).
    #[arg(long)]
    pub service_account_token_file: Option<PathBuf>,
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
    /// Where the entries of the AccessLogPolicies that select this proxy go: `stdout`, a file
    /// (JSON lines), or `otlp://HOST:PORT` (an OpenTelemetry collector, OTLP/gRPC); default
    /// `access.log` in the data directory.
    #[arg(long, env = "TRELLIS_ACCESS_LOG")]
    pub access_log: Option<String>,
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
            trellis_support::process::free_port()
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
        access_log: None,
    };
    run_registered_envoy(
        &args.agent.endpoint()?,
        &id,
        registration,
        &args.envoy,
        None,
        args.service_account_token_file.clone(),
    )
    .await
}

/// One registration with the agent, seen from the client: where, what, and the credential.
pub struct AgentRegistration {
    pub agent: AgentEndpoint,
    id: String,
    body: Value,
    /// For gateways and add-ons: the agent's role secret, read when first needed.
    secret: Option<ClientSecret>,
    secret_value: Option<String>,
    /// Whether the next PUT carries the role secret: only to register without a token, or when
    /// the agent asked for it. Whoever squats the agent's port while it restarts then sees a
    /// refresh's token, not the secret of every gateway and add-on on the host.
    secret_wanted: bool,
    /// The token the agent issued for this id (or the one saved from an earlier run).
    pub token: Option<String>,
    /// A CSR for this proxy's xDS client key, sent (as `xdsCsr`) while `send_csr` is set.
    pub xds_csr: Option<String>,
    pub send_csr: bool,
    /// The loopback port of the Envoy this registration is for, sent as `adminPort`.
    pub admin_port: Option<u16>,
    /// The pod's service-account token, read at each PUT (it rotates), sent as
    /// `serviceAccountToken`.
    pub pod_token_file: Option<PathBuf>,
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
        agent: &AgentEndpoint,
        id: &str,
        registration: &ProxyRegistration,
        secret: Option<ClientSecret>,
        token: Option<String>,
    ) -> Self {
        AgentRegistration {
            agent: agent.clone(),
            id: id.to_string(),
            body: serde_json::to_value(registration).expect("registration serializes"),
            secret,
            secret_value: None,
            secret_wanted: token.is_none(),
            token,
            xds_csr: None,
            send_csr: false,
            admin_port: None,
            pod_token_file: None,
        }
    }

    fn path(&self) -> String {
        format!("/v1/proxies/{}", self.id)
    }

    /// One PUT with whatever credentials this registration has; a newly issued token replaces
    /// the one held. `Err` when the agent cannot be reached (or the role secret not read).
    pub async fn put(&mut self) -> anyhow::Result<PutOutcome> {
        let send_secret = self.secret.is_some() && (self.secret_wanted || self.token.is_none());
        if let (true, Some(secret), None) = (send_secret, &self.secret, &self.secret_value) {
            self.secret_value = Some(secret.read(self.agent.address())?);
        }
        let authorization = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(value) = &authorization {
            headers.push(("authorization", value));
        }
        if let (true, Some(secret)) = (send_secret, &self.secret_value) {
            headers.push((crate::role_secret::HEADER, secret));
        }
        let mut body = self.body.clone();
        if let (true, Some(csr)) = (self.send_csr, &self.xds_csr) {
            body["xdsCsr"] = csr.clone().into();
        }
        if let Some(port) = self.admin_port {
            body["adminPort"] = port.into();
        }
        if let Some(path) = &self.pod_token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --service-account-token-file {}", path.display()))?;
            body["serviceAccountToken"] = token.trim().into();
        }
        let response = self
            .agent
            .request(
                "PUT",
                &self.path(),
                &headers,
                Some(("application/json", serde_json::to_vec(&body).expect("body serializes"))),
                Duration::from_secs(2),
            )
            .await?;
        if response.status == 200 {
            let answer: Value = serde_json::from_str(&response.body).context("the agent's answer is not JSON")?;
            let new_token = answer["token"].as_str().map(str::to_string);
            if let Some(token) = &new_token {
                self.token = Some(token.clone());
            }
            self.secret_wanted = false;
            return Ok(PutOutcome::Accepted { answer, new_token });
        }
        let error: Value = serde_json::from_str(&response.body).unwrap_or_default();
        if error["code"] == "role-secret-required" {
            // The agent may have been given another secret since it was read: read it again.
            self.secret_value = None;
            self.secret_wanted = true;
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
        self.agent
            .request("DELETE", &self.path(), &headers, None, Duration::from_secs(2))
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

/// The TLS material of Envoy's ADS connection, in `<data dir>/xds-tls` (mode 0700), which
/// Envoy watches: the client key (0600, made here, never sent), the certificate the agent
/// signed for it, the agent's xDS CA, and the two SDS files that name them.
struct XdsFiles {
    dir: PathBuf,
    /// The agent's CA as last written, and the CA the current certificate came from.
    ca_pem: Option<String>,
    cert_ca_pem: Option<String>,
    /// When the current certificate is due for renewal.
    renew_at: Option<SystemTime>,
}

impl XdsFiles {
    /// Creates the directory and a new key; returns the files and a CSR for the key. A new key
    /// per run: nothing needs the old one (the agent honours only certificates it issued to
    /// this registration, and a restart gets a new one).
    fn create(data_dir: &Path) -> anyhow::Result<(XdsFiles, String)> {
        use std::os::unix::fs::PermissionsExt;
        let dir = data_dir.join("xds-tls");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let (key, csr) = trellis_pki::new_key_and_csr("trellis-proxy")?;
        write_private(&dir.join("client.key"), &key.0)?;
        let files = XdsFiles {
            dir,
            ca_pem: None,
            cert_ca_pem: None,
            renew_at: None,
        };
        Ok((files, csr))
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Writes what an accepted registration brought: a new CA, a new certificate. Every file
    /// is replaced by rename, which is what Envoy's directory watch reacts to. `authenticated`:
    /// the answer came over the agent's TLS port, checked with its CA (`--agent-ca`).
    fn apply(&mut self, answer: &Value, authenticated: bool) -> anyhow::Result<()> {
        if let Some(ca) = answer["xdsCa"].as_str()
            && self.ca_pem.as_deref() != Some(ca)
        {
            // Over the plain port, trust on first use: a process that took the agent's port
            // while it restarted must not swap the CA Envoy checks its xDS server with, and an
            // agent that really lost its CA is taken up by restarting this proxy. Over the
            // checked TLS port the answer is the agent's own: a new CA (an agent restarted
            // without its data, as a pod with an emptyDir is) is taken, with a new certificate.
            anyhow::ensure!(
                self.ca_pem.is_none() || authenticated,
                "the agent at this address now answers with another xDS CA: if the agent lost its data directory, restart this proxy to trust its new CA; otherwise something else answers on the agent's port"
            );
            if self.ca_pem.is_some() {
                tracing::info!("the agent's xDS CA changed (said over its checked TLS port): trusting the new one");
            }
            write_private(&self.dir.join("ca.pem"), ca)?;
            self.ca_pem = Some(ca.to_string());
        }
        if let Some(certificate) = answer["xdsCertificate"].as_str() {
            let info = trellis_pki::inspect_pem(certificate).context("the agent's xDS certificate")?;
            write_private(&self.dir.join("client.pem"), certificate)?;
            self.cert_ca_pem = self.ca_pem.clone();
            self.renew_at = Some(trellis_pki::renew_at(info.not_before, info.not_after));
        }
        Ok(())
    }

    /// Whether the next refresh should send the CSR: no certificate yet, one due for renewal,
    /// one from a CA the agent no longer uses (it lost its data directory), or the agent holds
    /// none for this registration (it adopted our token after such a loss).
    fn wants_certificate(&self, answer: &Value) -> bool {
        answer["xdsCertificateNeeded"] == true
            || self.cert_ca_pem != self.ca_pem
            || self.renew_at.is_none_or(|due| SystemTime::now() >= due)
    }

    /// The SDS files and the bootstrap's view of them; written once (they name files only).
    fn tls(&self, server_name: &str) -> anyhow::Result<(String, String, String)> {
        let (client, server) = (self.path("client-secret.json"), self.path("server-secret.json"));
        let secret = trellis_envoy::xds_client_certificate_secret(&self.path("client.pem"), &self.path("client.key"));
        write_private(Path::new(&client), &secret.to_string())?;
        let secret = trellis_envoy::xds_server_validation_secret(&self.path("ca.pem"), server_name);
        write_private(Path::new(&server), &secret.to_string())?;
        Ok((self.dir.display().to_string(), client, server))
    }
}

/// Registers, runs Envoy against the agent's ADS server, refreshes the registration until a
/// signal or Envoy's exit, then deregisters and stops Envoy. `secret` for the privileged roles
/// (gateways).
///
/// The registration's token is kept in the data directory (mode 0600) so that a restarted proxy
/// keeps its id; Envoy never sees it. Envoy authenticates its ADS stream with a client
/// certificate the agent signs for this registration, its key in a 0600 file ([`XdsFiles`]),
/// renewed here on a refresh before it is due.
pub async fn run_registered_envoy(
    agent: &AgentEndpoint,
    id: &str,
    mut registration: ProxyRegistration,
    envoy: &EnvoyArgs,
    secret: Option<ClientSecret>,
    pod_token_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let data_dir = envoy
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".trellis/proxy-{}", id.replace('~', "-"))));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    // Envoy reads the TLS files by these paths from its own working directory.
    let data_dir =
        std::fs::canonicalize(&data_dir).with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    registration.set_access_log(crate::access_log_sink::from_flag(
        envoy.access_log.as_deref(),
        &data_dir,
    )?);
    let token_path = data_dir.join("agent-token");
    let saved = std::fs::read_to_string(&token_path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let admin_port = if envoy.admin_port == 0 {
        trellis_support::process::free_port()
    } else {
        envoy.admin_port
    };
    let mut link = AgentRegistration::new(agent, id, &registration, secret, saved);
    link.pod_token_file = pod_token_file;
    // The agent reads this Envoy's config dump there for `trellis proxy-config`.
    link.admin_port = Some(admin_port);
    let (mut xds_files, csr) = XdsFiles::create(&data_dir)?;
    link.xds_csr = Some(csr);
    link.send_csr = true;
    let answer = register_with_retry(&mut link).await?;
    let token = link.token.clone().context("the agent issued no credential")?;
    write_private(&token_path, &token)?;
    anyhow::ensure!(
        answer["xdsCertificate"].is_string(),
        "the agent signed no xDS client certificate (an older agent? upgrade it)"
    );
    xds_files.apply(&answer, link.agent.is_authenticated())?;
    link.send_csr = xds_files.wants_certificate(&answer);
    let server_name = answer["xdsServerName"]
        .as_str()
        .context("agent did not say what name its xDS server certificate carries")?;
    let (tls_dir, client_secret, server_secret) = xds_files.tls(server_name)?;
    let cluster = answer["cluster"].as_str().unwrap_or_default().to_string();
    let xds_address = link.agent.reachable(
        answer["xdsAddress"]
            .as_str()
            .context("agent did not say where its xDS server is")?,
    );
    let xds_port = answer["xdsPort"]
        .as_u64()
        .context("agent did not say where its xDS server is")? as u16;

    let bootstrap = trellis_envoy::bootstrap_with_client_certificate(
        &trellis_envoy::BootstrapSpec {
            node_id: id,
            node_cluster: &cluster,
            admin_address: "127.0.0.1",
            admin_port,
            xds_address: &xds_address,
            xds_port,
        },
        &trellis_envoy::XdsTls {
            dir: &tls_dir,
            client_secret_file: &client_secret,
            server_secret_file: &server_secret,
            server_name,
        },
    );
    let bootstrap_path = data_dir.join("bootstrap.json");
    write_private(
        &bootstrap_path,
        &serde_json::to_string_pretty(&bootstrap).expect("bootstrap serializes"),
    )?;

    let envoy_bin = trellis_support::envoy_bin::find()?;
    let mut command = tokio::process::Command::new(&envoy_bin);
    // A listener whose filters a config change replaced (an access log added or removed) drains
    // the connections opened before: Envoy's default strategy (gradual) closes them at random
    // over its drain time, ten minutes, and until then they keep the old filters; `immediate`
    // closes each after its next response, so a change reaches a caller's pooled connections
    // within one request. Access log entries reach their file within a second (people tail it).
    command.arg("-c").arg(&bootstrap_path).args([
        "--drain-strategy",
        "immediate",
        "--file-flush-interval-msec",
        "1000",
        "--disable-hot-restart",
        "--concurrency",
        &envoy.concurrency.to_string(),
        "--log-level",
        &envoy.envoy_log_level,
    ]);
    let mut child = trellis_support::process::spawn_tied(command, false)
        .with_context(|| format!("cannot start {}", envoy_bin.display()))?;
    tracing::info!(proxy.id = id, cluster, admin = admin_port, xds = %format!("{xds_address}:{xds_port}"), "envoy started");

    let mut refresh = tokio::time::interval(REFRESH);
    let outcome = loop {
        tokio::select! {
            _ = refresh.tick() => {
                // The agent may have restarted and forgotten us: it knows our credential from its
                // data directory, or adopts the token we present.
                link.send_csr = link.send_csr || xds_files.renew_at.is_none_or(|due| SystemTime::now() >= due);
                match link.put().await {
                    Ok(PutOutcome::Accepted { new_token: None, answer }) => {
                        if let Err(error) = xds_files.apply(&answer, link.agent.is_authenticated()) {
                            tracing::error!(proxy.id = id, error = %format!("{error:#}"), "cannot write the renewed xDS certificate; Envoy keeps the one it has");
                        } else if answer["xdsCertificate"].is_string() {
                            tracing::info!(proxy.id = id, "xDS client certificate renewed");
                        }
                        link.send_csr = xds_files.wants_certificate(&answer);
                    }
                    Ok(PutOutcome::Accepted { new_token: Some(token), .. }) => {
                        // Only a holder of the role secret can replace a gateway's credential
                        // (two gateways started with one id). The certificate Envoy holds died with the old one.
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
            _ = trellis_support::process::shutdown_signal() => break Ok(()),
        }
    };
    // Deregistered, the token is worthless and a fresh start gets a new one; otherwise it is
    // kept, so that a restart presents it instead of waiting for the agent to expire the id.
    if link.delete().await {
        let _ = std::fs::remove_file(&token_path);
    }
    trellis_support::process::terminate(&mut child, Duration::from_secs(3)).await;
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
    use std::sync::Arc;

    use super::*;

    /// An agent stand-in on loopback that answers every PUT with `answers` in turn and records
    /// whether each carried the role secret.
    async fn fake_agent(answers: Vec<(u16, Value)>) -> (String, Arc<std::sync::Mutex<Vec<bool>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
        let recorded = seen.clone();
        let app = axum::Router::new().route(
            "/v1/proxies/{id}",
            axum::routing::put(move |headers: axum::http::HeaderMap| {
                let recorded = recorded.clone();
                let answers = answers.clone();
                async move {
                    recorded
                        .lock()
                        .unwrap()
                        .push(headers.contains_key(crate::role_secret::HEADER));
                    let (status, body) = answers.lock().unwrap().next().expect("an answer left");
                    (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(body))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (address, seen)
    }

    #[test]
    fn the_xds_ca_is_trusted_on_first_use_and_never_swapped() {
        let dir = std::env::temp_dir().join(format!("trellis-proxy-ca-{}", std::process::id()));
        let (mut files, _csr) = XdsFiles::create(&dir).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let real = trellis_pki::Authority::generate_root("agent", day, now)
            .unwrap()
            .cert_pem;
        let rogue = trellis_pki::Authority::generate_root("squatter", day, now)
            .unwrap()
            .cert_pem;
        files.apply(&serde_json::json!({"xdsCa": real}), false).unwrap();
        files.apply(&serde_json::json!({"xdsCa": real}), false).unwrap();
        let error = files
            .apply(&serde_json::json!({"xdsCa": rogue}), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("another xDS CA"), "{error}");
        assert_eq!(std::fs::read_to_string(dir.join("xds-tls/ca.pem")).unwrap(), real);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_xds_ca_said_over_the_checked_tls_port_is_taken_with_a_new_certificate() {
        let dir = std::env::temp_dir().join(format!("trellis-proxy-ca-tls-{}", std::process::id()));
        let (mut files, _csr) = XdsFiles::create(&dir).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let before = trellis_pki::Authority::generate_root("agent", day, now).unwrap();
        let after = trellis_pki::Authority::generate_root("agent restarted", day, now).unwrap();
        files
            .apply(&serde_json::json!({"xdsCa": before.cert_pem}), true)
            .unwrap();
        files.cert_ca_pem = files.ca_pem.clone();
        files.renew_at = Some(now + day);
        assert!(!files.wants_certificate(&serde_json::json!({})));
        files
            .apply(&serde_json::json!({"xdsCa": after.cert_pem}), true)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("xds-tls/ca.pem")).unwrap(),
            after.cert_pem
        );
        assert!(
            files.wants_certificate(&serde_json::json!({})),
            "a certificate of the old CA is replaced"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_role_secret_is_sent_only_when_the_agent_needs_it() {
        let dir = std::env::temp_dir().join(format!("trellis-proxy-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("role-secret");
        write_private(&file, "a-role-secret-of-enough-length-0123456789").unwrap();
        let (agent, seen) = fake_agent(vec![
            (200, serde_json::json!({"token": "issued-token"})),
            (200, serde_json::json!({})),
            (
                403,
                serde_json::json!({"code": "role-secret-required", "error": "secret needed"}),
            ),
            (200, serde_json::json!({})),
        ])
        .await;
        let registration = ProxyRegistration::EastWestGateway(crate::RegisteredGateway {
            listen_address: "127.0.0.1".into(),
            port: 15443,
            public_address: trellis_model::GatewayAddress {
                host: "127.0.0.1".into(),
                port: 15443,
            },
        });
        let secret = ClientSecret { file: Some(file) };
        let mut link = AgentRegistration::new(
            &AgentEndpoint::local(&agent),
            "east-west~gw",
            &registration,
            Some(secret),
            None,
        );
        for _ in 0..4 {
            link.put().await.unwrap();
        }
        // First registration: secret. Refresh with the token: none. Asked for it: sent again.
        assert_eq!(*seen.lock().unwrap(), [true, false, false, true]);
        let _ = std::fs::remove_dir_all(dir);
    }

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
