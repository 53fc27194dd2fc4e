//! Shared set-up for the end-to-end tests and the benches: real processes (the `trellis` binary
//! in every role and real Envoy), on loopback ephemeral ports, in a temp directory removed on
//! success; and the real servers around a mesh that tests talk to. A dev-dependency only.
//!
//! ```text
//!  (this file)    demo meshes (LocalMesh), MgmtProcess, AgentProcess, ports, HTTP and mTLS requests,
//!                 metrics scrapes, Redis, static Envoy listeners, signals
//!  addons         the demo mesh with its add-ons, and requests to the README's add-on example
//!  echo           a workload that echoes what reached it, behind a real sidecar
//!  jwt_issuer     an ES256 JWT issuer and its key set
//!  oidc_provider  a real OpenID provider (the `oidc-provider` npm package in `oidc-provider/`)
//!  slapd          a real OpenLDAP server
//! ```
//!
//! The `trellis` binary these start is the one Cargo builds for the tests and benches of the
//! `trellis` package ([`bin`]): the end-to-end tests live there, in `crates/trellis/tests`.

mod addons;
pub mod echo;
pub mod etcd;
pub mod jaeger;
pub mod jwt_issuer;
pub mod kube;
pub mod oidc_provider;
pub mod prometheus;
pub mod slapd;

pub use addons::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trellis_cli::up::{LocalMesh, MeshOptions};

/// The `trellis` binary: `CARGO_BIN_EXE_trellis`, which Cargo sets while the `trellis` package's
/// tests and benches run, else the one in the target directory of the running test executable
/// (`target/<profile>/deps/<test>` beside `target/<profile>/trellis`).
pub fn bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_trellis") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("trellis"))
        .expect("the test executable is in a target directory")
}

pub fn test_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("trellis-e2e-{name}-{}", std::process::id()))
}

/// The demo mesh with its config applied and cross-cluster traffic flowing.
pub async fn demo_mesh(name: &str) -> LocalMesh {
    demo_mesh_with(name, MeshOptions::free()).await
}

/// [`demo_mesh`] whose agents also admit sidecars of `namespaces` (the demo's agents admit only
/// `demo`: an agent hands out no identity its policy does not list).
pub async fn demo_mesh_allowing(name: &str, namespaces: &[&str]) -> LocalMesh {
    let mut options = MeshOptions::free();
    for namespace in namespaces {
        options
            .agent_flags
            .extend(["--allow-namespace".to_string(), namespace.to_string()]);
    }
    demo_mesh_with(name, options).await
}

/// [`demo_mesh`] started with `options`.
pub async fn demo_mesh_with(name: &str, options: MeshOptions) -> LocalMesh {
    let mesh = LocalMesh::start(&bin(), &test_dir(name), options)
        .await
        .expect("mesh starts");
    mesh.apply_demo_config().await.expect("demo config applies");
    mesh.wait_for_traffic(Duration::from_secs(60))
        .await
        .expect("traffic flows");
    mesh
}

/// The route table of the demo with other weights for v1 (cluster-1) and v2 (cluster-2).
pub fn route_table(v1: u32, v2: u32) -> String {
    trellis_cli::up::DEMO_ROUTE_TABLE
        .replace("weight: 80", &format!("weight: {v1}"))
        .replace("weight: 20", &format!("weight: {v2}"))
}

/// Sends `n` requests to backend.mesh.internal from the frontend's sidecar; counts answers by
/// version. Any non-200 answer fails the test.
pub async fn versions(mesh: &LocalMesh, n: usize) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for i in 0..n {
        let response = mesh
            .call_from_frontend("http://backend.mesh.internal/")
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        if response.status != 200 {
            let mut stats = String::new();
            for app in ["frontend", "backend-v1", "backend-v2"] {
                let admin = mesh.app(app).admin_port;
                let url = format!(
                    "http://127.0.0.1:{admin}/stats?filter=(no_cluster|no_route|upstream_rq_503|cx_connect_fail|rbac.denied|total_listeners_warming)"
                );
                let body = trellis_support::httpc::get(&url, Duration::from_secs(2))
                    .await
                    .map(|r| r.body)
                    .unwrap_or_default();
                let nonzero: Vec<&str> = body.lines().filter(|l| !l.ends_with(": 0")).collect();
                stats.push_str(&format!("\n{app}: {nonzero:?}"));
            }
            stats.push_str(&frontend_xds_state(mesh).await);
            panic!(
                "request {i}: {} {} {:?}{stats}",
                response.status, response.body, response.headers
            );
        }
        if response.body.contains("\"version\":\"v1\"") {
            v1 += 1;
        } else if response.body.contains("\"version\":\"v2\"") {
            v2 += 1;
        } else {
            panic!("request {i}: unexpected answer {}", response.body);
        }
    }
    (v1, v2)
}

/// When the frontend's Envoy last took each xDS type, and which clusters its routes name that it
/// does not have: what a failed request needs to tell a late push from a missing cluster.
async fn frontend_xds_state(mesh: &LocalMesh) -> String {
    let admin = mesh.app("frontend").admin_port;
    let get = |path: String| async move {
        trellis_support::httpc::get(&format!("http://127.0.0.1:{admin}{path}"), Duration::from_secs(2))
            .await
            .map(|r| r.body)
            .unwrap_or_default()
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let updates =
        get("/stats?filter=(cds|lds|rds|eds)\\..*(update_time|update_success|update_rejected)$|warming".into()).await;
    let clusters: serde_json::Value =
        serde_json::from_str(&get("/config_dump?resource=dynamic_active_clusters".into()).await).unwrap_or_default();
    let active: std::collections::BTreeSet<String> = clusters["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_string))
        .collect();
    let routes: serde_json::Value =
        serde_json::from_str(&get("/config_dump?resource=dynamic_route_configs".into()).await).unwrap_or_default();
    let mut named = std::collections::BTreeSet::new();
    route_clusters(&routes, &mut named);
    let missing: Vec<&String> = named.difference(&active).collect();
    format!("\nfrontend at {now_ms} ms: routes name clusters it lacks: {missing:?}\n{updates}")
}

/// The cluster names a route configuration sends to: `cluster` and the `weighted_clusters`' names.
fn route_clusters(value: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("cluster", serde_json::Value::String(name)) => {
                        out.insert(name.clone());
                    }
                    ("weighted_clusters", weighted) => {
                        for entry in weighted["clusters"].as_array().into_iter().flatten() {
                            if let Some(name) = entry["name"].as_str() {
                                out.insert(name.to_string());
                            }
                        }
                    }
                    _ => route_clusters(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| route_clusters(item, out)),
        _ => {}
    }
}

/// Polls until `n` consecutive requests all reach `version`; returns when that run started.
pub async fn until_all(mesh: &LocalMesh, version: &str, n: usize, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    let needle = format!("\"version\":\"{version}\"");
    let mut run = 0;
    let mut run_started = Instant::now();
    loop {
        let started = Instant::now();
        let ok = matches!(mesh.call_from_frontend("http://backend.mesh.internal/").await, Ok(r) if r.status == 200 && r.body.contains(&needle));
        if ok {
            if run == 0 {
                run_started = started;
            }
            run += 1;
            if run == n {
                return run_started;
            }
        } else {
            run = 0;
        }
        assert!(
            Instant::now() < deadline,
            "traffic did not all go to {version} within {limit:?}"
        );
    }
}

/// The lines of an Envoy admin /stats page whose names match `pattern` (a regex, as
/// `/stats?filter=` takes it).
async fn envoy_stats_page(admin_port: u16, pattern: &str) -> String {
    let url = format!(
        "http://127.0.0.1:{admin_port}/stats?filter={}",
        pattern.replace('|', "%7C")
    );
    trellis_support::httpc::get(&url, Duration::from_secs(2))
        .await
        .expect("envoy admin answers")
        .body
}

/// A counter from an Envoy admin /stats page.
pub async fn envoy_stat(admin_port: u16, name: &str) -> u64 {
    envoy_stats_page(admin_port, name)
        .await
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The sum of an Envoy's counters whose names match `pattern` (a regex).
pub async fn envoy_stat_sum(admin_port: u16, pattern: &str) -> u64 {
    envoy_stats_page(admin_port, pattern)
        .await
        .lines()
        .filter_map(|line| line.rsplit_once(": ").and_then(|(_, v)| v.trim().parse::<u64>().ok()))
        .sum()
}

pub async fn finish(mut mesh: LocalMesh) {
    mesh.shutdown().await;
    let _ = std::fs::remove_dir_all(&mesh.dir);
}

/// A management server process on free ports, for tests that need no mesh around it.
pub struct MgmtProcess {
    child: tokio::process::Child,
    pub url: String,
    pub relay: String,
    pub admin_port: u16,
    pub data_dir: PathBuf,
    args: Vec<String>,
    pub log: PathBuf,
}

impl MgmtProcess {
    pub async fn start(dir: &std::path::Path, extra: &[&str]) -> MgmtProcess {
        Self::start_on(dir, trellis_support::process::free_port(), extra).await
    }

    /// [`MgmtProcess::start`] with the API on `api`, for flags that must name it beforehand
    /// (an OIDC redirect URI registered at the provider).
    pub async fn start_on(dir: &std::path::Path, api: u16, extra: &[&str]) -> MgmtProcess {
        use trellis_support::process::free_port;
        std::fs::create_dir_all(dir).unwrap();
        let (relay, admin_port) = (free_port(), free_port());
        let data_dir = dir.join("mgmt");
        let mut args = vec![
            "mgmt".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--api-addr".into(),
            format!("127.0.0.1:{api}"),
            "--relay-addr".into(),
            format!("127.0.0.1:{relay}"),
            "--admin-addr".into(),
            format!("127.0.0.1:{admin_port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = dir.join("mgmt.log");
        let child = spawn_logged(&args, &log, &[]);
        let server = MgmtProcess {
            child,
            url: format!("https://127.0.0.1:{api}"),
            relay: format!("127.0.0.1:{relay}"),
            admin_port,
            data_dir,
            args,
            log,
        };
        server.wait().await;
        server
    }

    /// The admin client config the server writes at start: `TRELLIS_CONFIG` for CLI runs.
    pub fn admin_config(&self) -> PathBuf {
        self.data_dir.join("admin.conf")
    }

    /// The API as admin.
    pub fn api(&self) -> trellis_cli::api_client::ApiClient {
        trellis_cli::api_client::ApiClient::from_config_file(&self.admin_config()).expect("the admin client config")
    }

    async fn wait(&self) {
        for _ in 0..300 {
            if let Ok(api) = trellis_cli::api_client::ApiClient::from_config_file(&self.admin_config())
                && let Ok(Ok(response)) =
                    tokio::time::timeout(Duration::from_secs(1), api.get("/api/v1/resources")).await
                && response.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("management server did not start; see {}", self.log.display());
    }

    pub async fn restart(&mut self) {
        self.child.kill().await.unwrap();
        self.child = spawn_logged(&self.args, &self.log, &[]);
        self.wait().await;
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.api().get(path).await.unwrap();
        serde_json::from_str(&response.body).unwrap()
    }

    pub async fn post_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .api()
            .request("POST", path, Some(("application/json", Vec::new())))
            .await
            .unwrap();
        (
            response.status,
            serde_json::from_str(&response.body).unwrap_or_default(),
        )
    }

    /// Registers a cluster; returns (token, relay root CA PEM).
    pub async fn register(&self, cluster: &str, ttl: Option<&str>) -> (String, String) {
        let query = ttl.map(|t| format!("?ttl={t}")).unwrap_or_default();
        let (status, body) = self
            .post_json(&format!("/api/v1/clusters/{cluster}/register{query}"))
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["token"].as_str().unwrap().to_string(),
            body["rootCaPem"].as_str().unwrap().to_string(),
        )
    }

    /// One sample of a Prometheus counter from /metrics (0 when absent).
    pub async fn metric(&self, series: &str) -> u64 {
        scrape(self.admin_port, series).await
    }

    pub async fn cluster_status(&self, cluster: &str) -> serde_json::Value {
        self.get_json("/api/v1/clusters").await["clusters"][cluster].clone()
    }

    /// Waits until `cluster`'s agent is connected (or not), failing after `limit`.
    pub async fn wait_connected(&self, cluster: &str, connected: bool, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.cluster_status(cluster).await["connected"] != connected {
            assert!(
                Instant::now() < deadline,
                "cluster {cluster} connected != {connected} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn spawn_logged(args: &[String], log: &std::path::Path, env: &[(&str, &str)]) -> tokio::process::Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    tokio::process::Command::new(bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// An agent process (no proxies) with its own data directory and log.
pub struct AgentProcess {
    pub child: tokio::process::Child,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl AgentProcess {
    pub fn start(
        dir: &std::path::Path,
        name: &str,
        cluster: &str,
        mgmt: &MgmtProcess,
        extra: &[&str],
        token: Option<&str>,
    ) -> AgentProcess {
        use trellis_support::process::free_port;
        let data_dir = dir.join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--cluster".into(),
            cluster.into(),
            "--mgmt".into(),
            mgmt.relay.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--xds-addr".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        // A test may choose where the registration API listens; by default a loopback port.
        if !extra.contains(&"--registry-addr") {
            args.extend(["--registry-addr".into(), format!("127.0.0.1:{}", free_port())]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = dir.join(format!("{name}.log"));
        let env: Vec<(&str, &str)> = token.map(|t| ("TRELLIS_TOKEN", t)).into_iter().collect();
        AgentProcess {
            child: spawn_logged(&args, &log, &env),
            data_dir,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent's log contains `text`.
    pub async fn wait_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log_text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "agent log {} never said {text:?}:\n{}",
                self.log.display(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An HTTPS GET straight to a sidecar's inbound listener, optionally with a client certificate.
/// The server certificate is not checked (there is no DNS name to check; the server's identity
/// is not what these tests are about): what is tested is whether the sidecar lets the client in.
pub async fn mtls_get(
    port: u16,
    client: Option<&trellis_pki::CertifiedKey>,
) -> anyhow::Result<trellis_support::httpc::Response> {
    mtls_request(port, client, "GET", "/").await
}

/// Like [`mtls_get`], with any method and path.
pub async fn mtls_request(
    port: u16,
    client: Option<&trellis_pki::CertifiedKey>,
    method: &str,
    path: &str,
) -> anyhow::Result<trellis_support::httpc::Response> {
    mtls_request_with(port, client, "workload.mesh", method, path, "backend", &[]).await
}

/// Like [`mtls_request`], with the TLS server name, the request's `host` and extra `headers`
/// chosen by the caller (a sidecar's inbound routes by host).
pub async fn mtls_request_with(
    port: u16,
    client: Option<&trellis_pki::CertifiedKey>,
    server_name: &str,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<trellis_support::httpc::Response> {
    let config = client_tls(client)?;
    request_over_tls(port, server_name, host, config, method, path, headers).await
}

/// A TLS client config presenting `client` (if any) and accepting any server certificate.
fn client_tls(client: Option<&trellis_pki::CertifiedKey>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(ServerCheck::any()));
    Ok(match client {
        Some(cert) => {
            use rustls::pki_types::pem::PemObject;
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key.0.as_bytes())?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// One HTTP/1.1 connection over mTLS, kept open across requests: what a pooled client holds.
pub struct MtlsConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl MtlsConnection {
    pub async fn open(port: u16, client: Option<&trellis_pki::CertifiedKey>) -> anyhow::Result<Self> {
        Self::open_with_sni(port, "workload.mesh", client).await
    }

    /// As [`open`](Self::open), asking for `sni` (an east-west gateway routes on it).
    pub async fn open_with_sni(
        port: u16,
        sni: &str,
        client: Option<&trellis_pki::CertifiedKey>,
    ) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_tls(client)?))
            .connect(rustls::pki_types::ServerName::try_from(sni.to_string())?, tcp)
            .await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(MtlsConnection { sender })
    }

    /// The status of `GET path` on this connection; an error once the server closed it.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<u16> {
        use http_body_util::BodyExt;
        self.sender.ready().await?;
        let request = hyper::Request::builder()
            .uri(path)
            .header("host", "backend")
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.sender.send_request(request)).await??;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// How a test client checks the server it reached: signatures always; the certificate either
/// not at all ([`ServerCheck::any`]: these tests are about what the server lets in, and there is
/// often no name to check against) or only for its SPIFFE ID ([`ServerCheck::spiffe_id`]).
#[derive(Debug)]
pub struct ServerCheck {
    spiffe_id: Option<String>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCheck {
    /// Accepts any server certificate.
    pub fn any() -> Self {
        ServerCheck {
            spiffe_id: None,
            provider: std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    /// Accepts a server certificate whose URI SANs are exactly `expected`.
    pub fn spiffe_id(expected: &str) -> Self {
        ServerCheck {
            spiffe_id: Some(expected.to_string()),
            ..ServerCheck::any()
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Some(expected) = &self.spiffe_id {
            let info = trellis_pki::inspect_der(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
            if info.uris != [expected.clone()] {
                return Err(rustls::Error::General(format!("server presented {:?}", info.uris)));
            }
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// One sample of a Prometheus series from the /metrics page on `port` (0 when absent).
pub async fn scrape(port: u16, series: &str) -> u64 {
    scrape_present(port, series).await.unwrap_or(0)
}

/// One sample of a Prometheus series from the /metrics page on `port`; `None` when the page
/// has no such series.
pub async fn scrape_present(port: u16, series: &str) -> Option<u64> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let body = trellis_support::httpc::get(&url, Duration::from_secs(5))
        .await
        .unwrap()
        .body;
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|v| v as u64)
}

/// The stored resources, without the statuses translation adds to them (those are derived, and
/// appear a moment after an apply).
pub async fn stored_resources(api: &trellis_cli::api_client::ApiClient) -> String {
    let body = api.get("/api/v1/resources").await.unwrap().body;
    let mut value: serde_json::Value = serde_json::from_str(&body).unwrap();
    for item in value["items"].as_array_mut().into_iter().flatten() {
        item.as_object_mut().unwrap().remove("status");
    }
    value.to_string()
}

/// An HTTPS GET to `127.0.0.1:port` that verifies the server as `server_name` against
/// `roots_pem`, optionally presenting a client certificate: what an outside client of an
/// ingress gateway does.
pub async fn https_get(
    port: u16,
    server_name: &str,
    roots_pem: &str,
    client: Option<&trellis_pki::CertifiedKey>,
    path: &str,
) -> anyhow::Result<trellis_support::httpc::Response> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some(cert) => {
            let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(cert.key.0.as_bytes())?)?
        }
        None => builder.with_no_client_auth(),
    };
    request_over_tls(port, server_name, server_name, config, "GET", path, &[]).await
}

/// Polls `check` until it holds, failing after 20 s: config takes a moment to reach proxies.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The mesh root of a local mesh, read from its management server's data directory.
pub fn mesh_root(mesh: &LocalMesh) -> trellis_pki::Authority {
    let pki = mesh.dir.join("mgmt").join("pki");
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    trellis_pki::Authority::from_pem(&read("mesh-root.pem"), &read("mesh-root.key"), "").unwrap()
}

/// A workload certificate for `spiffe_id` from the mesh's own PKI (through a test intermediate).
pub fn mesh_workload_cert(mesh: &LocalMesh, spiffe_id: &str) -> trellis_pki::CertifiedKey {
    let now = std::time::SystemTime::now();
    let hour = Duration::from_secs(3600);
    let ca = mesh_root(mesh)
        .generate_intermediate("test cluster CA", hour, now)
        .unwrap();
    ca.issue_workload_cert(spiffe_id, hour, now).unwrap()
}

/// One HTTP/1.1 request over TLS to `127.0.0.1:port`, with `server_name` as SNI.
async fn request_over_tls(
    port: u16,
    server_name: &str,
    host: &str,
    config: rustls::ClientConfig,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<trellis_support::httpc::Response> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from(server_name.to_string())?, tcp)
        .await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(trellis_support::httpc::Response {
        status,
        headers: Vec::new(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Waits until every proxy runs a config with the resource at `path` (`Kind/namespace/name`), as
/// `trellis describe` reports it: `applied to N/N proxies`.
pub async fn until_delivered(mesh: &trellis_cli::up::LocalMesh, path: &str) {
    let api = mesh.api().unwrap();
    eventually(&format!("{path} delivered to every proxy"), || async {
        let described = api.get_json(&format!("/api/v1/describe/{path}")).await.unwrap();
        let summary = described["delivery"]["summary"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        summary.starts_with("applied to") && {
            let (done, all) = summary["applied to ".len()..]
                .split_once(' ')
                .and_then(|(ratio, _)| ratio.split_once('/'))
                .unwrap_or(("0", "1"));
            done == all
        }
    })
    .await;
}

/// A site's own CA and a server certificate for `host` (an hour long), written as `site.pem`
/// and `site.key` in `dir`: what a VirtualGateway's TLS listener serves from `files`.
pub struct SiteTls {
    pub ca: trellis_pki::Authority,
    pub cert_file: String,
    pub key_file: String,
}

pub fn site_tls(dir: &std::path::Path, ca_name: &str, host: &str) -> SiteTls {
    let (now, hour) = (std::time::SystemTime::now(), Duration::from_secs(3600));
    let ca = trellis_pki::Authority::generate_root(ca_name, hour, now).unwrap();
    let site = ca.issue_server_cert(&[host.to_string()], hour, now).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, contents: &str| {
        std::fs::write(dir.join(name), contents).unwrap();
        dir.join(name).display().to_string()
    };
    SiteTls {
        cert_file: write("site.pem", &site.cert_pem),
        key_file: write("site.key", &site.key.0),
        ca,
    }
}

/// Starts `trellis gateway ingress` registered with `cluster`'s agent, labelled
/// `app=ingress-gateway` (what the tests' VirtualGateways select), its Envoy admin on
/// `admin_port`, with `extra` arguments (e.g. `--namespace`). It stops when the handle drops.
pub fn spawn_ingress_gateway(
    mesh: &trellis_cli::up::LocalMesh,
    cluster: &str,
    admin_port: u16,
    extra: &[&str],
) -> tokio::process::Child {
    let registry = mesh.cluster(cluster).registry_port;
    let mut args: Vec<String> = [
        "gateway",
        "ingress",
        "--agent",
        &format!("127.0.0.1:{registry}"),
        "--labels",
        "app=ingress-gateway",
        "--admin-port",
        &admin_port.to_string(),
        "--data-dir",
        &mesh.dir.join(format!("ingress-{admin_port}")).display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    let log = mesh.dir.join("logs").join(format!("ingress-{admin_port}.log"));
    spawn_logged(&args, &log, &[])
}

/// Starts a program other than `trellis` (redis-server, Envoy), its output in `log`; it dies with
/// the returned handle.
pub fn spawn_program(program: &str, args: &[String], log: &std::path::Path) -> tokio::process::Child {
    let file = std::fs::File::create(log).unwrap();
    tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e} (scripts/setup installs it)"))
}

/// A throwaway redis-server on a free loopback port (no persistence), accepting connections when
/// this returns. `extra` adds flags (TLS); with `--port 0` give the port to wait on in `tls_port`.
pub async fn start_redis(
    dir: &std::path::Path,
    extra: &[String],
    tls_port: Option<u16>,
) -> (tokio::process::Child, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let port = tls_port.unwrap_or_else(trellis_support::process::free_port);
    let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        .map(String::from)
        .to_vec();
    if tls_port.is_none() {
        args.extend(["--port".to_string(), port.to_string()]);
    }
    args.extend(extra.iter().cloned());
    let child = spawn_program("redis-server", &args, &dir.join(format!("redis-{port}.log")));
    wait_for_port(port, Duration::from_secs(10)).await;
    (child, port)
}

/// Waits until something accepts connections on loopback `port`; fails after `limit`.
pub async fn wait_for_port(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits, when needed, so that the current minute has at least `seconds` left: a test that counts
/// requests against a per-minute limit must not see its window roll over mid-count.
pub async fn with_minute_left(seconds: u64) {
    let second = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second + seconds >= 60 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
}

/// A static Envoy cluster (bootstrap JSON) to one loopback port; `http2` for gRPC servers.
pub fn envoy_static_cluster(name: &str, port: u16, http2: bool) -> serde_json::Value {
    let mut cluster = serde_json::json!({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}
    });
    if http2 {
        cluster["typed_extension_protocol_options"] = serde_json::json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}
        }});
    }
    cluster
}

/// A static Envoy HTTP listener (bootstrap JSON) routing everything to cluster `app`, with
/// `filter` (an add-on's HTTP filter) before the router and `route_extra` merged into the route.
pub fn envoy_static_listener(
    name: &str,
    port: u16,
    filter: Option<serde_json::Value>,
    route_extra: serde_json::Value,
) -> serde_json::Value {
    let mut filters: Vec<serde_json::Value> = filter.into_iter().collect();
    filters.push(serde_json::json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}));
    let mut route = serde_json::json!({"match": {"prefix": "/"}, "route": {"cluster": "app"}});
    if let (Some(route), Some(extra)) = (route.as_object_mut(), route_extra.as_object()) {
        route.extend(extra.clone());
    }
    serde_json::json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
                "http_filters": filters
            }
        }]}]
    })
}

// === process control and relay access (e2e_issuance, e2e_relay_bounds) ===

impl MgmtProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the management server is running")
    }

    /// Starts the server again (same data dir and ports) after it exited.
    pub async fn respawn(&mut self) {
        self.child = spawn_logged(&self.args, &self.log, &[]);
        self.wait().await;
    }

    /// Sends SIGTERM; returns how long the process took to exit, or `None` if it still runs after
    /// `limit` (it is then killed).
    pub async fn sigterm_and_wait(&mut self, limit: Duration) -> Option<Duration> {
        sigterm_and_wait(&mut self.child, limit).await
    }
}

/// Sends SIGTERM to `child`; how long it took to exit, or `None` (and a kill) after `limit`.
pub async fn sigterm_and_wait(child: &mut tokio::process::Child, limit: Duration) -> Option<Duration> {
    let pid = child.id().expect("the process is running");
    let started = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(_) => Some(started.elapsed()),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    }
}

/// Sends `signal` (e.g. `libc::SIGSTOP`) to a child.
pub fn signal(child: &tokio::process::Child, signal: i32) {
    let pid = child.id().expect("the process is running");
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// How many sockets process `pid` holds open (from /proc): what a flood makes a server keep.
pub fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// A relay client as an agent (or a thief of its files) makes one: trusting `root_pem`, presenting
/// `identity` (certificate chain PEM, key PEM) when given.
pub async fn relay_client(
    mgmt: &MgmtProcess,
    root_pem: &str,
    identity: Option<(&str, &str)>,
) -> trellis_relay::RelayClient<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root_pem))
        .domain_name("trellis-mgmt.trellis");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://{}", mgmt.relay))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the relay");
    trellis_relay::RelayClient::new(channel)
}

/// `openssl verify` of a leaf-first chain (without its root) against `root_pem`: OpenSSL, like
/// Envoy's BoringSSL, enforces URI name constraints (rustls-webpki does not).
pub fn openssl_verify(dir: &std::path::Path, root_pem: &str, chain_pem: &str) -> Result<(), String> {
    let ders = trellis_pki::pem_to_der_certs(chain_pem).unwrap();
    let pem = |der: &Vec<u8>| {
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("verify-root.pem"), root_pem).unwrap();
    std::fs::write(dir.join("verify-leaf.pem"), pem(&ders[0])).unwrap();
    std::fs::write(
        dir.join("verify-untrusted.pem"),
        ders[1..].iter().map(pem).collect::<String>(),
    )
    .unwrap();
    let output = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("verify-root.pem"))
        .arg("-untrusted")
        .arg(dir.join("verify-untrusted.pem"))
        .arg(dir.join("verify-leaf.pem"))
        .output()
        .expect("this test needs the `openssl` command (Debian package openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() { Ok(()) } else { Err(text) }
}

/// An API token for `user` in `groups`, issued by `admin` (`POST /api/v1/tokens`).
pub async fn issue_token(
    admin: &trellis_cli::api_client::ApiClient,
    name: &str,
    user: &str,
    groups: &[&str],
) -> String {
    let response = admin
        .post_json(
            "/api/v1/tokens",
            &serde_json::json!({"name": name, "user": user, "groups": groups}),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    serde_json::from_str::<serde_json::Value>(&response.body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The demo's 80/20 route, labelled so that two RetryTimeoutPolicies can select it: the newer one
/// loses every route it selects to the older and is FAILED.
pub const CONFLICTING_RETRY_POLICIES: &str = r#"apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: split
    labels: {resilient: "true"}
    forwardTo:
      destinations:
      - {ref: {name: backend, namespace: demo, cluster: cluster-1}, port: {number: 80}, weight: 80}
      - {ref: {name: backend, namespace: demo, cluster: cluster-2}, port: {number: 80}, weight: 20}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: RetryTimeoutPolicy
metadata: {name: backend-timeout, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {resilient: "true"}}}]
  config: {requestTimeout: 5s}
---
apiVersion: resilience.policy.gloo.solo.io/v2
kind: RetryTimeoutPolicy
metadata: {name: backend-timeout-again, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {resilient: "true"}}}]
  config: {requestTimeout: 9s}
"#;
