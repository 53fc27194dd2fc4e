//! https for the ext-auth service's outbound HTTP: a remote key set (JWT) and an OpenID
//! provider's discovery document and keys (OIDC) served over TLS with a certificate from a test
//! CA. `trellis ext-auth --ca-file` makes them trusted; without it (system roots only) both fail
//! closed and the log names the URL and the TLS failure; httpc checks the certificate's host.
//!
//! The OIDC part stops at the login redirect (discovery and JWKS fetched over https); the code
//! exchange goes through the same client, and the full flow runs over http in extauth_oidc.rs.

use trellis_testkit::jwt_issuer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use jwt_issuer::Issuer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;
use trellis_ext_auth_server::{ExtAuthArgs, serve, wire};
use trellis_extauth::Outcome;
use trellis_pki::Authority;
use trellis_support::httpc::HttpClient;

const ISSUER: &str = "https://issuer.example";

// === PKI and an HTTPS server ===

fn authority(name: &str) -> Authority {
    Authority::generate_root(name, Duration::from_secs(3600), SystemTime::now()).unwrap()
}

/// An HTTPS server on loopback answering GETs from a path -> JSON body table; counts the
/// requests it answered (a client that refuses the certificate never gets to send one).
struct HttpsServer {
    address: SocketAddr,
    served: Arc<AtomicUsize>,
}

impl HttpsServer {
    /// Presents a certificate for `names` issued by `ca`; `routes` gets the bound address.
    async fn start(ca: &Authority, names: &[&str], routes: impl FnOnce(SocketAddr) -> HashMap<String, String>) -> Self {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = ca
            .issue_server_cert(&names, Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        let mut config = trellis_pki::server_tls_config(&cert, None, false).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let routes = Arc::new(routes(address));
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, routes, served) = (acceptor.clone(), routes.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // The request head; these GETs have no body.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or_default();
                    let (status, body) = match routes.get(path) {
                        Some(body) => ("200 OK", body.as_str()),
                        None => ("404 Not Found", "{}"),
                    };
                    served.fetch_add(1, Ordering::SeqCst);
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        HttpsServer { address, served }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// An identity provider over https: its key set at /jwks.json and, for OIDC, a discovery
/// document at /.well-known/openid-configuration naming https endpoints.
async fn identity_provider(ca: &Authority, issuer: &Issuer) -> HttpsServer {
    let jwks = issuer.jwks().to_string();
    HttpsServer::start(ca, &["127.0.0.1"], move |address| {
        let base = format!("https://{address}");
        let discovery = json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/auth"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks.json"),
        });
        HashMap::from([
            ("/jwks.json".to_string(), jwks),
            ("/.well-known/openid-configuration".to_string(), discovery.to_string()),
        ])
    })
    .await
}

// === the ext-auth service ===

/// Auth configs: `demo.jwt` (a remote key set at `idp`) and `demo.oidc` (`idp` as the issuer).
fn configs(idp: &HttpsServer) -> Value {
    let jwt = json!({"name": "jwt1", "oauth2": {"accessTokenValidation": {
        "jwt": {"remoteJwks": {"url": idp.url("/jwks.json"), "refreshInterval": "60s"}, "issuer": ISSUER, "audiences": ["api"]},
        "claimsToHeaders": [{"claim": "sub", "header": "x-user"}]
    }}});
    let oidc = json!({"name": "oidc1", "oauth2": {"oidcAuthorizationCode": {
        "clientId": "app", "clientSecret": "app-secret", "issuerUrl": idp.url("/"), "appUrl": "https://app.example",
    }}});
    json!({"configs": [
        {"id": "demo.jwt", "spec": {"configs": [jwt]}},
        {"id": "demo.oidc", "spec": {"configs": [oidc]}},
    ]})
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trellis-extauth-https-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `trellis ext-auth` as the binary declares it: a subcommand whose flags are [`ExtAuthArgs`].
#[derive(clap::Parser)]
#[command(name = "trellis")]
enum Cli {
    ExtAuth(ExtAuthArgs),
}

/// Starts `trellis ext-auth --config <configs> [--ca-file ...]` in process, from its command
/// line, and waits until it answers.
async fn start_ext_auth(dir: &Path, configs: &Value, ca_files: &[PathBuf]) -> AuthorizationClient<Channel> {
    let config_path = dir.join("configs.json");
    std::fs::write(&config_path, configs.to_string()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut argv: Vec<String> = ["trellis", "ext-auth", "--listen", &address.to_string(), "--config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(config_path.display().to_string());
    for ca_file in ca_files {
        argv.extend(["--ca-file".to_string(), ca_file.display().to_string()]);
    }
    let Cli::ExtAuth(args) = Cli::try_parse_from(&argv).unwrap();
    assert_eq!(args.ca_files, ca_files);
    tokio::spawn(async move { serve(args, listener, std::future::pending()).await.unwrap() });
    let mut client = AuthorizationClient::connect(format!("http://{address}")).await.unwrap();
    check(&mut client, "", &[]).await;
    client
}

async fn check(client: &mut AuthorizationClient<Channel>, config_id: &str, headers: &[(&str, &str)]) -> Outcome {
    let mut context_extensions = HashMap::new();
    if !config_id.is_empty() {
        context_extensions.insert("config_id".to_string(), config_id.to_string());
    }
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/page".into(),
                    host: "app.example".into(),
                    scheme: "https".into(),
                    headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    };
    wire::from_response(&client.check(request).await.expect("the service answers").into_inner())
}

fn deny_status(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Deny { status, .. } => *status,
        Outcome::Allow { .. } => panic!("expected a deny, got {outcome:?}"),
    }
}

fn location(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Deny { headers, .. } => headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no location in {outcome:?}")),
        Outcome::Allow { .. } => panic!("expected a redirect, got {outcome:?}"),
    }
}

// === captured logs ===

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged at warn and above so far, by every test of this binary.
fn logs() -> String {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// The captured log lines that mention `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    logs()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

// === tests ===

#[tokio::test]
async fn ca_file_makes_https_key_sets_and_oidc_providers_trusted() {
    logs();
    let ca = authority("extauth-https test CA");
    let issuer = Issuer::new("k1");
    let idp = identity_provider(&ca, &issuer).await;
    // One CA alone and a bundle (another CA, then ours): the flag is repeatable, bundles work.
    let dir = test_dir("trusted");
    let other = dir.join("other.pem");
    std::fs::write(&other, authority("unrelated CA").root_pem()).unwrap();
    let bundle = dir.join("bundle.pem");
    std::fs::write(
        &bundle,
        format!("{}{}", authority("another CA").root_pem(), ca.root_pem()),
    )
    .unwrap();
    let mut client = start_ext_auth(&dir, &configs(&idp), &[other, bundle]).await;

    let token = format!("Bearer {}", issuer.token(ISSUER, 300));
    assert_eq!(
        check(&mut client, "demo.jwt", &[("authorization", &token)]).await,
        Outcome::Allow {
            upstream_headers: vec![("x-user".into(), "alice".into())]
        }
    );
    let forged = format!("Bearer {}", Issuer::new("k1").token(ISSUER, 300));
    assert_eq!(
        deny_status(&check(&mut client, "demo.jwt", &[("authorization", &forged)]).await),
        401
    );

    // OIDC: discovery and the provider's keys come over https, then the browser is sent to the
    // provider's (https) authorization endpoint.
    let login = check(&mut client, "demo.oidc", &[]).await;
    assert_eq!(deny_status(&login), 302, "{login:?}");
    assert!(
        location(&login).starts_with(&idp.url("/auth?response_type=code&client_id=app")),
        "{login:?}"
    );
    // JWKS (key set), discovery, JWKS (provider's keys).
    assert_eq!(idp.served(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn without_the_ca_https_fails_closed_and_the_log_says_why() {
    logs();
    let ca = authority("extauth-https untrusted CA");
    let issuer = Issuer::new("k1");
    let idp = identity_provider(&ca, &issuer).await;
    let dir = test_dir("untrusted");
    let mut client = start_ext_auth(&dir, &configs(&idp), &[]).await;

    // The key set cannot be fetched: the token is refused as undecided (503), as with an
    // unreachable issuer.
    let token = format!("Bearer {}", issuer.token(ISSUER, 300));
    let outcome = check(&mut client, "demo.jwt", &[("authorization", &token)]).await;
    assert_eq!(deny_status(&outcome), 503, "{outcome:?}");
    // The provider cannot be reached: 503, no login started.
    assert_eq!(deny_status(&check(&mut client, "demo.oidc", &[]).await), 503);
    // Nothing was sent, over TLS or in clear.
    assert_eq!(idp.served(), 0);

    for url in [idp.url("/jwks.json"), idp.url("/.well-known/openid-configuration")] {
        let lines = log_lines(&format!("GET {url}: TLS handshake"));
        assert!(
            lines.iter().any(|l| l.contains("unknown issuer")),
            "no TLS unknown-issuer error for {url} in:\n{}",
            logs()
        );
    }
    let error = trellis_support::httpc::get(&idp.url("/jwks.json"), Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("TLS handshake") && error.contains("UnknownIssuer"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn httpc_checks_that_the_certificate_names_the_host() {
    let ca = authority("extauth-https names CA");
    let routes = |_| HashMap::from([("/jwks.json".to_string(), "{\"keys\": []}".to_string())]);
    let right = HttpsServer::start(&ca, &["127.0.0.1"], routes).await;
    let wrong = HttpsServer::start(&ca, &["other.example"], routes).await;
    let client = HttpClient::with_ca_pem(&ca.root_pem()).unwrap();
    let timeout = Duration::from_secs(5);

    let response = client.get(&right.url("/jwks.json"), timeout).await.unwrap();
    assert_eq!((response.status, response.body.as_str()), (200, "{\"keys\": []}"));

    let error = client
        .get(&wrong.url("/jwks.json"), timeout)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("GET {}: TLS handshake", wrong.url("/jwks.json")))
            && error.contains("does not name the URL's host"),
        "{error}"
    );
    assert_eq!(wrong.served(), 0);
}

#[tokio::test]
async fn a_ca_file_without_certificates_stops_the_service() {
    let dir = test_dir("bad-ca");
    let config = dir.join("configs.json");
    std::fs::write(&config, "{\"configs\": []}").unwrap();
    let bad = dir.join("bad.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let argv = [
        "trellis",
        "ext-auth",
        "--config",
        config.to_str().unwrap(),
        "--ca-file",
        bad.to_str().unwrap(),
    ];
    let Cli::ExtAuth(args) = Cli::try_parse_from(argv).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = serve(args, listener, std::future::pending()).await.unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("--ca-file") && error.contains("no PEM CERTIFICATE"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
