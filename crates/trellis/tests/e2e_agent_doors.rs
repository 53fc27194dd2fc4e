//! A local process that can reach an agent's ports gets nothing it has no credential for: not a
//! workload's key over ADS/SDS (not even with everything a sidecar Envoy's admin `/config_dump`
//! shows), not another proxy's registration, not an identity outside the agent's allow-list, not
//! a gateway or add-on role, not the add-on config; and the real sidecars, gateways and add-ons
//! keep their identities and their traffic through all of it and through an agent restart.

use trellis_testkit as common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use trellis_cli::up::MeshOptions;
use trellis_support::httpc;
use trellis_xds::SECRET_TYPE;

const VICTIM: &str = "sidecar~frontend.demo";

/// How an ADS client reaches the agent: plaintext, or TLS checking the server against `ca`
/// (as `xds.trellis-agent`), presenting `identity` (chain PEM, key PEM) when given.
#[derive(Clone, Copy)]
enum Door<'a> {
    Plaintext,
    Tls {
        ca: &'a str,
        identity: Option<(&'a str, &'a str)>,
    },
}

/// Opens an ADS stream as `node_id` through `door`, optionally with `authorization` metadata as
/// Envoy's `initial_metadata` would send it, and asks for every SDS secret: the first answer or
/// the refusal (a refused connection or handshake comes back as `Unavailable`).
async fn ask_for_secrets(
    xds_port: u16,
    node_id: &str,
    door: Door<'_>,
    authorization: Option<&str>,
) -> Result<DiscoveryResponse, tonic::Status> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let endpoint = match door {
        Door::Plaintext => Endpoint::from_shared(format!("http://127.0.0.1:{xds_port}")).unwrap(),
        Door::Tls { ca, identity } => {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("xds.trellis-agent");
            if let Some((chain, key)) = identity {
                tls = tls.identity(Identity::from_pem(chain, key));
            }
            Endpoint::from_shared(format!("https://127.0.0.1:{xds_port}"))
                .unwrap()
                .tls_config(tls)
                .map_err(|e| tonic::Status::unavailable(format!("TLS config: {e:?}")))?
        }
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: node_id.into(),
            cluster: "cluster-1".into(),
            ..Default::default()
        }),
        type_url: SECRET_TYPE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    let answer = async {
        let mut stream = client.stream_aggregated_resources(request).await?.into_inner();
        match stream.message().await? {
            Some(response) => Ok(response),
            None => Err(tonic::Status::unknown("stream ended without an answer")),
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the agent answers an ADS stream within 10 s (with resources or a refusal)");
    drop(tx);
    result
}

/// Everything an Envoy's admin `/config_dump` shows, as an attacker would collect it.
#[derive(Default)]
struct Loot {
    /// Every string value, with `inline_bytes` decoded.
    texts: Vec<String>,
    /// Every `filename` and `path`.
    file_names: Vec<String>,
    /// PEM certificates found in the strings.
    certificates: Vec<String>,
    /// Data sources Envoy shows as `[redacted]`.
    redacted_keys: usize,
}

impl Loot {
    fn from_dump(dump: &str) -> Loot {
        let mut loot = Loot::default();
        loot.walk(None, &serde_json::from_str(dump).expect("/config_dump is JSON"));
        loot
    }

    fn walk(&mut self, key: Option<&str>, value: &Value) {
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| self.walk(Some(k), v)),
            Value::Array(items) => items.iter().for_each(|v| self.walk(key, v)),
            Value::String(text) => {
                let text = match key {
                    Some("inline_bytes") => {
                        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                            .expect("inline_bytes is base64");
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                    _ => text.clone(),
                };
                if matches!(key, Some("filename" | "path")) {
                    self.file_names.push(text.clone());
                }
                if text == "[redacted]" {
                    self.redacted_keys += 1;
                }
                for block in text.split_inclusive("-----END CERTIFICATE-----\n") {
                    if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
                        self.certificates.push(block[start..].to_string());
                    }
                }
                self.texts.push(text);
            }
            _ => {}
        }
    }
}

/// Whether any resource of `response` carries a PEM private key.
fn carries_private_key(response: &DiscoveryResponse) -> bool {
    response
        .resources
        .iter()
        .any(|any| String::from_utf8_lossy(&any.value).contains("PRIVATE KEY"))
}

/// A request to an agent's registration API as an outsider would send it.
async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> httpc::Response {
    let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
    httpc::request(method, url, None, headers, body, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

fn sidecar_body(namespace: &str, service_account: &str, service: &str) -> Value {
    json!({
        "kind": "sidecar",
        "outboundPort": 15999,
        "workload": {
            "name": "rogue", "namespace": namespace, "service": service,
            "serviceAccount": service_account, "address": "127.0.0.1",
            "labels": {"app": service, "version": "v1"},
            "ports": [{"name": "http", "port": 80, "protocol": "HTTP", "appPort": 1, "inboundPort": 2}]
        }
    })
}

fn gateway_body(host: &str) -> Value {
    json!({"kind": "eastWestGateway", "listenAddress": "127.0.0.1", "port": 15443,
           "publicAddress": {"host": host, "port": 15443}})
}

fn addon_body() -> Value {
    json!({"kind": "addOn", "serves": "ext-auth", "namespace": "gloo-mesh",
           "name": "ext-auth-service", "address": "127.0.0.1", "port": 1})
}

async fn proxies(agent: &str) -> Value {
    let response = call("GET", &format!("{agent}/v1/proxies"), &[], None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    serde_json::from_str::<Value>(&response.body).unwrap()["proxies"].clone()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn flag_value(args: &[String], flag: &str) -> String {
    let at = args.iter().position(|a| a == flag).expect("flag present");
    args[at + 1].clone()
}

/// Waits until the agent at `agent` reports the frontend's Envoy connected to its ADS (after
/// the agent restarted, Envoy must reconnect).
async fn frontend_back_on_ads(agent: &str) {
    eventually("the frontend's Envoy back on the restarted agent's ADS", || async {
        httpc::get(&format!("{agent}/v1/status"), Duration::from_secs(2))
            .await
            .is_ok_and(|r| {
                serde_json::from_str::<Value>(&r.body).unwrap()["connectedProxies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["nodeId"] == VICTIM)
            })
    })
    .await;
}

/// SPIFFE IDs of the certificates an Envoy holds, from its admin /certs page.
async fn envoy_identities(admin_port: u16) -> Vec<String> {
    let url = format!("http://127.0.0.1:{admin_port}/certs");
    let body = httpc::get(&url, Duration::from_secs(2)).await.unwrap().body;
    let certs: Value = serde_json::from_str(&body).unwrap();
    let mut ids = Vec::new();
    for cert in certs["certificates"].as_array().into_iter().flatten() {
        for chain in cert["cert_chain"].as_array().into_iter().flatten() {
            for san in chain["subject_alt_names"].as_array().into_iter().flatten() {
                if let Some(uri) = san["uri"].as_str() {
                    ids.push(uri.to_string());
                }
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_attacker_gets_nothing_from_the_agent_and_the_mesh_keeps_working() {
    let mut mesh = demo_mesh_with_addons("agent-doors").await;

    let agent1 = format!("http://127.0.0.1:{}", mesh.cluster("cluster-1").registry_port);
    let agent2 = format!("http://127.0.0.1:{}", mesh.cluster("cluster-2").registry_port);
    let xds_port: u16 = flag_value(&mesh.cluster("cluster-1").agent.args, "--xds-addr")
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let victim_before = proxies(&agent1).await[VICTIM].clone();
    assert!(victim_before.is_object(), "the frontend is registered");

    // The legitimate sidecar's credentials: the registration token in an owner-only file that
    // Envoy never sees, the xDS client key in an owner-only file in an owner-only directory.
    let sidecar_dir = mesh.dir.join("sidecar-frontend");
    let tls_dir = sidecar_dir.join("xds-tls");
    assert_eq!(mode(&sidecar_dir.join("agent-token")), 0o600);
    assert_eq!(mode(&tls_dir), 0o700);
    assert_eq!(mode(&tls_dir.join("client.key")), 0o600);
    let real_token = std::fs::read_to_string(sidecar_dir.join("agent-token"))
        .unwrap()
        .trim()
        .to_string();
    let bootstrap_text = std::fs::read_to_string(sidecar_dir.join("bootstrap.json")).unwrap();
    assert!(!bootstrap_text.contains(&real_token), "the bootstrap holds no token");
    assert!(!bootstrap_text.contains("initial_metadata"), "{bootstrap_text}");

    // The attacker registers a workload of its own where the policy allows (namespace demo),
    // with a CSR for a key of its own: it gets a token, the agent's xDS CA and a certificate.
    let (mallory_key, mallory_csr) = trellis_pki::new_key_and_csr("mallory").unwrap();
    let mallory_url = format!("{agent1}/v1/proxies/sidecar~mallory.demo");
    let mut body = sidecar_body("demo", "mallory", "mallory");
    body["xdsCsr"] = mallory_csr.clone().into();
    let response = call("PUT", &mallory_url, &[], Some(body)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = serde_json::from_str::<Value>(&response.body).unwrap();
    let mallory_token = answer["token"]
        .as_str()
        .expect("a first registration is issued a token")
        .to_string();
    let mallory_cert = answer["xdsCertificate"].as_str().expect("a certificate").to_string();
    let xds_ca = answer["xdsCa"].as_str().expect("the xDS CA").to_string();
    let mallory_auth = format!("Bearer {mallory_token}");
    let random_auth = format!("Bearer {}", trellis_pki::random_token());
    let mallory_door = Door::Tls {
        ca: &xds_ca,
        identity: Some((&mallory_cert, &mallory_key.0)),
    };

    // (a) The attacker reads the victim Envoy's admin /config_dump (loopback, no authentication)
    // and takes everything in it.
    let frontend_admin = mesh.app("frontend").admin_port;
    let dump = httpc::get(
        &format!("http://127.0.0.1:{frontend_admin}/config_dump?include_eds"),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
    .body;
    let loot = Loot::from_dump(&dump);
    // What it shows: the xDS TLS by file name, the loaded client secret with its key redacted,
    // the certificates (public). What it does not show: the token, any private key.
    assert!(
        loot.file_names
            .iter()
            .any(|f| f.ends_with("xds-tls/client-secret.json")),
        "{:?}",
        loot.file_names
    );
    let xds_secret = serde_json::from_str::<Value>(&dump).unwrap()["configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["dynamic_active_secrets"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == "xds_client_certificate")
        .expect("the xDS client certificate is a loaded secret");
    assert_eq!(
        xds_secret["secret"]["tls_certificate"]["private_key"]["inline_bytes"], "W3JlZGFjdGVkXQ==",
        "Envoy shows the xDS key as [redacted]"
    );
    assert!(loot.redacted_keys > 0);
    assert!(!loot.certificates.is_empty(), "the dump shows certificates");
    for text in loot.texts.iter().chain([&dump]) {
        assert!(!text.contains(&real_token), "the token is in /config_dump");
        assert!(!text.contains("PRIVATE KEY"), "a private key is in /config_dump");
    }
    // With it, ADS/SDS as the victim's node: plaintext, TLS without a certificate, every
    // certificate of the dump with the attacker's key, every string of the dump as a bearer
    // token, and the attacker's own certificate: all refused, nothing served.
    let mut attempts: Vec<(String, Door, Option<String>)> = vec![
        ("plaintext".into(), Door::Plaintext, None),
        (
            "TLS without a client certificate".into(),
            Door::Tls {
                ca: &xds_ca,
                identity: None,
            },
            None,
        ),
        ("the attacker's own certificate".into(), mallory_door, None),
        (
            "the attacker's own certificate and token".into(),
            mallory_door,
            Some(mallory_auth.clone()),
        ),
        ("a made-up token".into(), mallory_door, Some(random_auth.clone())),
    ];
    for (i, certificate) in loot.certificates.iter().enumerate() {
        attempts.push((
            format!("dumped certificate {i} with the attacker's key"),
            Door::Tls {
                ca: &xds_ca,
                identity: Some((certificate, &mallory_key.0)),
            },
            None,
        ));
    }
    let strings: std::collections::BTreeSet<&String> = loot
        .texts
        .iter()
        .filter(|t| (8..200).contains(&t.len()) && !t.contains(char::is_whitespace))
        .collect();
    for text in strings {
        attempts.push((
            format!("dumped string {text:?} as a token"),
            mallory_door,
            Some(format!("Bearer {text}")),
        ));
    }
    let refused_before = scrape(
        mesh.cluster("cluster-1").registry_port,
        "trellis_xds_streams_refused_total",
    )
    .await;
    for (what, door, authorization) in &attempts {
        match ask_for_secrets(xds_port, VICTIM, *door, authorization.as_deref()).await {
            // Refused by the TLS handshake, or by the agent after it: either way, nothing.
            Err(_) => {}
            Ok(response) => panic!(
                "the victim's secrets were served with {what} (private key included: {})",
                carries_private_key(&response)
            ),
        }
    }
    // The attacker's certificate gets through TLS and is refused for naming another node.
    match ask_for_secrets(xds_port, VICTIM, mallory_door, None).await {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
            assert!(status.message().contains("another node"), "{status:?}");
        }
        Ok(_) => panic!("the attacker's certificate opened the victim's node"),
    }
    // Nor does the token-less attacker get a certificate for the victim's id.
    let mut rogue_csr = sidecar_body("demo", "frontend", "frontend");
    rogue_csr["xdsCsr"] = mallory_csr.clone().into();
    for headers in [vec![], vec![("authorization", mallory_auth.as_str())]] {
        let response = call(
            "PUT",
            &format!("{agent1}/v1/proxies/{VICTIM}"),
            &headers,
            Some(rogue_csr.clone()),
        )
        .await;
        assert!(matches!(response.status, 401 | 403), "{}", response.body);
        assert!(!response.body.contains("BEGIN CERTIFICATE"), "{}", response.body);
    }
    // The check is the credential, not the request: with the victim's own key and certificate
    // (only its owner can read the key) the same request gets the workload key.
    let owner_cert = std::fs::read_to_string(tls_dir.join("client.pem")).unwrap();
    let owner_key = std::fs::read_to_string(tls_dir.join("client.key")).unwrap();
    let owner_door = Door::Tls {
        ca: &xds_ca,
        identity: Some((&owner_cert, &owner_key)),
    };
    let served = ask_for_secrets(xds_port, VICTIM, owner_door, None)
        .await
        .expect("the owner's certificate is served");
    assert!(carries_private_key(&served), "control: SDS carries the key");
    let refused_after = scrape(
        mesh.cluster("cluster-1").registry_port,
        "trellis_xds_streams_refused_total",
    )
    .await;
    assert!(
        refused_after >= refused_before + 3,
        "certificate refusals counted: {refused_before} -> {refused_after}"
    );
    // Mallory's own node has no snapshot until its (fake) sidecar is built; being let in is the
    // point, so only the refusal would be an error here.
    let own = tokio::time::timeout(
        Duration::from_secs(2),
        ask_for_secrets(xds_port, "sidecar~mallory.demo", mallory_door, None),
    )
    .await;
    if let Ok(Err(status)) = own {
        panic!("the attacker's own node was refused: {status:?}");
    }

    // (b) Registering over the victim's id: refused, and its registration is unchanged.
    let victim_url = format!("{agent1}/v1/proxies/{VICTIM}");
    let rogue = sidecar_body("demo", "frontend", "backend");
    for (headers, status) in [
        (vec![], 401),
        (vec![("authorization", mallory_auth.as_str())], 403),
        (vec![("authorization", random_auth.as_str())], 403),
    ] {
        let response = call("PUT", &victim_url, &headers, Some(rogue.clone())).await;
        assert_eq!(response.status, status, "{headers:?}: {}", response.body);
        assert!(!response.body.contains("token\""), "{}", response.body);
    }
    assert_eq!(proxies(&agent1).await[VICTIM], victim_before);

    // (c) New ids claiming identities outside the allow-list: refused, never listed.
    for (id, namespace, service_account) in [
        ("sidecar~spy.kube-system", "kube-system", "default"),
        ("sidecar~gw.trellis", "trellis", "ingress-gateway"),
        ("sidecar~pay.payments", "payments", "api"),
    ] {
        let body = sidecar_body(namespace, service_account, "spy");
        let response = call("PUT", &format!("{agent1}/v1/proxies/{id}"), &[], Some(body)).await;
        assert_eq!(response.status, 403, "{id}: {}", response.body);
        assert!(response.body.contains("--allow-namespace"), "{}", response.body);
        assert!(proxies(&agent1).await.get(id).is_none(), "{id} was registered");
    }

    // (d) Fake east-west gateway (its address would win the tie-break), fake add-on, fake
    // ingress, and a squat on the real gateway's id: refused without the role secret.
    let real_gateway = format!("east-west~127.0.0.1-{}", mesh.cluster("cluster-2").gateway_port);
    let wrong_secret = [("x-trellis-role-secret", "guessed-but-long-enough-secret")];
    for (agent, id, body) in [
        (&agent2, "east-west~evil".to_string(), gateway_body("10.0.0.1")),
        (&agent2, real_gateway.clone(), gateway_body("10.0.0.1")),
        (&agent1, "addon~ext-auth-service.gloo-mesh~1".to_string(), addon_body()),
        (
            &agent1,
            "ingress~evil".to_string(),
            json!({"kind": "ingressGateway", "listenAddress": "127.0.0.1", "labels": {"app": "ingress-gateway"},
                   "namespace": "trellis", "serviceAccount": "ingress-gateway"}),
        ),
    ] {
        let url = format!("{agent}/v1/proxies/{id}");
        for headers in [&[][..], &wrong_secret[..]] {
            let response = call("PUT", &url, headers, Some(body.clone())).await;
            assert_eq!(response.status, 403, "{id}: {}", response.body);
        }
    }
    let listed = proxies(&agent2).await;
    assert!(listed.get("east-west~evil").is_none());
    assert_eq!(
        listed[&real_gateway]["publicAddress"]["host"], "127.0.0.1",
        "the real gateway keeps its registration"
    );

    // (e) Deleting the victim: refused without its credential.
    for (headers, status) in [(vec![], 401), (vec![("authorization", mallory_auth.as_str())], 403)] {
        let response = call("DELETE", &victim_url, &headers, None).await;
        assert_eq!(response.status, status, "{headers:?}: {}", response.body);
    }
    assert_eq!(proxies(&agent1).await[VICTIM], victim_before);

    // (f) The add-on config (OIDC client secrets live there): only for a registered add-on.
    for headers in [
        vec![],
        vec![("authorization", mallory_auth.as_str())],
        vec![("authorization", random_auth.as_str())],
    ] {
        let response = call("GET", &format!("{agent1}/v1/addons/ext-auth"), &headers, None).await;
        assert_eq!(response.status, 401, "{headers:?}: {}", response.body);
        assert!(!response.body.contains("configs"), "{}", response.body);
    }
    // ... while the real ext-auth, which registered with the role secret, loads it.
    let addons = proxies(&agent1).await;
    assert!(
        addons
            .as_object()
            .unwrap()
            .keys()
            .any(|id| id.starts_with("addon~ext-auth-service.gloo-mesh~")),
        "the real ext-auth is registered: {addons}"
    );
    let ext_auth_log = mesh.dir.join("logs").join("ext-auth-cluster-1.log");
    eventually("the real ext-auth loading its config", || async {
        std::fs::read_to_string(&ext_auth_log).is_ok_and(|log| log.contains("loaded config from the agent"))
    })
    .await;

    // Bounded bodies, plain ids.
    let huge = json!({"kind": "sidecar", "pad": "x".repeat(100 * 1024)});
    let response = call("PUT", &format!("{agent1}/v1/proxies/sidecar~big.demo"), &[], Some(huge)).await;
    assert_eq!(response.status, 413, "{}", response.body);
    let response = call(
        "PUT",
        &format!("{agent1}/v1/proxies/sidecar~a%2Fb.demo"),
        &[],
        Some(sidecar_body("demo", "x", "x")),
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.body);

    // The owner of a registration may delete it, and its certificate, still within its
    // validity dates, opens nothing after that.
    let response = call("DELETE", &mallory_url, &[("authorization", &mallory_auth)], None).await;
    assert_eq!(response.status, 204, "{}", response.body);
    match ask_for_secrets(xds_port, "sidecar~mallory.demo", mallory_door, None).await {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}"),
        Ok(_) => panic!("a deleted registration's certificate opened its node"),
    }

    // Through all of it the real sidecar kept its identity, and traffic flows, across clusters too.
    assert!(
        envoy_identities(frontend_admin)
            .await
            .contains(&"spiffe://trellis.local/ns/demo/sa/frontend".to_string()),
        "{:?}",
        envoy_identities(frontend_admin).await
    );
    let (v1, v2) = versions(&mesh, 30).await;
    assert!(v1 > 0 && v2 > 0, "{v1} v1 / {v2} v2");
    let remote = mesh
        .call_from_frontend("http://backend-v2.mesh.internal/")
        .await
        .unwrap();
    assert_eq!(remote.status, 200, "{}", remote.body);

    // An agent restart: the credentials come back from its data directory (owner-only, hashes
    // only), so the victim's id cannot be taken in the window before its proxy refreshes, and
    // the running Envoys reconnect with their certificates (same CA, same binding) without
    // restarting.
    let registrations = mesh.dir.join("agent-cluster-1").join("registrations.json");
    assert_eq!(mode(&registrations), 0o600);
    assert!(!std::fs::read_to_string(&registrations).unwrap().contains(&real_token));
    mesh.cluster_mut("cluster-1").agent.kill().await;
    mesh.cluster_mut("cluster-1").agent.start().unwrap();
    let mut squat = None;
    for _ in 0..100 {
        match httpc::request(
            "PUT",
            &victim_url,
            None,
            &[],
            Some(("application/json", serde_json::to_vec(&rogue).unwrap())),
            Duration::from_secs(2),
        )
        .await
        {
            Ok(response) => {
                squat = Some(response);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let squat = squat.expect("the restarted agent answers");
    assert_eq!(squat.status, 401, "right after a restart: {}", squat.body);
    eventually("the frontend re-registered with the restarted agent", || async {
        httpc::get(&format!("{agent1}/v1/proxies"), Duration::from_secs(2))
            .await
            .is_ok_and(|r| serde_json::from_str::<Value>(&r.body).unwrap()["proxies"][VICTIM] == victim_before)
    })
    .await;
    frontend_back_on_ads(&agent1).await;
    assert_eq!(
        std::fs::read_to_string(sidecar_dir.join("agent-token")).unwrap().trim(),
        real_token,
        "the sidecar kept its credential"
    );
    assert_eq!(
        std::fs::read_to_string(tls_dir.join("client.pem")).unwrap(),
        owner_cert,
        "and its certificate"
    );
    // And config still reaches it: all traffic to v2 now.
    mesh.apply("route-table.yaml", &route_table(0, 100)).await.unwrap();
    until_all(&mesh, "v2", 10, Duration::from_secs(30)).await;

    // No token or key ever reached a log.
    for entry in std::fs::read_dir(mesh.dir.join("logs")).unwrap() {
        let path = entry.unwrap().path();
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        for token in [&real_token, &mallory_token] {
            assert!(!log.contains(token.as_str()), "{} logs a token", path.display());
        }
        assert!(!log.contains("PRIVATE KEY"), "{} logs a key", path.display());
    }
    finish(mesh).await;
}

/// Serial numbers (lowercase hex, no leading zeros) of the certificates an Envoy holds.
async fn envoy_serials(admin_port: u16) -> Vec<String> {
    let url = format!("http://127.0.0.1:{admin_port}/certs");
    let body = httpc::get(&url, Duration::from_secs(2)).await.unwrap().body;
    let certs: Value = serde_json::from_str(&body).unwrap();
    certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| {
            c["serial_number"]
                .as_str()
                .map(|s| s.trim_start_matches('0').to_lowercase())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_client_certificates_are_renewed_and_envoy_reconnects_with_the_renewed_one() {
    // 30 s certificates: renewed about every 20 s, so within a minute the sidecar's first
    // certificate has expired and is no longer among the two the agent honours.
    let mut options = MeshOptions::free();
    options
        .agent_flags
        .extend(["--xds-client-cert-ttl".to_string(), "30s".to_string()]);
    let mut mesh = demo_mesh_with("xds-renewal", options).await;
    let cert_file = mesh.dir.join("sidecar-frontend").join("xds-tls").join("client.pem");
    let first = std::fs::read_to_string(&cert_file).unwrap();
    let serial = |pem: &str| trellis_pki::inspect_pem(pem).unwrap().serial_hex;
    let admin = mesh.app("frontend").admin_port;
    assert!(
        envoy_serials(admin).await.contains(&serial(&first)),
        "Envoy holds the first certificate"
    );

    // Two renewals, each picked up by Envoy from the rewritten file (no restart).
    let mut seen = vec![serial(&first)];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "renewed only {} times in 90 s",
            seen.len() - 1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let current = serial(&std::fs::read_to_string(&cert_file).unwrap());
        if !seen.contains(&current) {
            seen.push(current);
        }
    }
    let latest = serial(&std::fs::read_to_string(&cert_file).unwrap());
    eventually("Envoy loading the renewed certificate", || async {
        envoy_serials(admin).await.contains(&latest)
    })
    .await;
    let info = trellis_pki::inspect_pem(&first).unwrap();
    assert!(
        std::time::SystemTime::now() > info.not_after,
        "the first certificate has expired"
    );

    // An agent restart makes every Envoy reconnect: the frontend's can only do so with a
    // renewed certificate, and config still reaches it.
    mesh.cluster_mut("cluster-1").agent.kill().await;
    mesh.cluster_mut("cluster-1").agent.start().unwrap();
    let agent1 = format!("http://127.0.0.1:{}", mesh.cluster("cluster-1").registry_port);
    frontend_back_on_ads(&agent1).await;
    mesh.apply("route-table.yaml", &route_table(0, 100)).await.unwrap();
    until_all(&mesh, "v2", 10, Duration::from_secs(30)).await;
    finish(mesh).await;
}
