//! A simulated sidecar: what `trellis proxy` and its Envoy do towards a real agent, without
//! Envoy. It registers its workload (`PUT /v1/proxies/<id>` with a CSR for its xDS client key),
//! refreshes that registration every 5 s as `trellis proxy` does, and keeps one delta ADS stream
//! open (what Trellis's Envoys use) over mTLS with the certificate the agent signed,
//! acknowledging every response.
//!
//! Unlike Envoy it subscribes to every type at once, the named types (EDS, RDS, SDS) with `*`
//! rather than name by name (the agent then sends all of the node's resources of each type), and
//! applies nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use trellis_model::Workload;

/// How often `trellis proxy` refreshes its registration (the agent forgets it after 30 s).
const REFRESH: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

const TYPES: [&str; 5] = [
    trellis_xds::CLUSTER_TYPE,
    trellis_xds::ENDPOINT_TYPE,
    trellis_xds::LISTENER_TYPE,
    trellis_xds::ROUTE_TYPE,
    trellis_xds::SECRET_TYPE,
];

/// One ADS response as it arrived.
pub struct Received {
    pub at: Instant,
    /// Ids of the markers its route configurations carry.
    pub found: Vec<u32>,
}

pub struct SimProxyState {
    pub node_id: String,
    /// Route weights the benchmark waits for, by id.
    pub markers: Vec<(u32, u32)>,
    pub received: Vec<Received>,
    pub failures: Vec<(Instant, String)>,
}

/// Handles one delta ADS response: records the route weights it carries that the benchmark
/// waits for; returns the ACK to send (the response's type and nonce).
pub fn on_response(state: &mut SimProxyState, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    let at = Instant::now();
    let found = if response.type_url == trellis_xds::ROUTE_TYPE {
        let weights = super::route_weights::route_weights(&response);
        state
            .markers
            .iter()
            .filter(|(_, weight)| weights.contains(weight))
            .map(|(id, _)| *id)
            .collect()
    } else {
        Vec::new()
    };
    state.received.push(Received { at, found });
    DeltaDiscoveryRequest {
        response_nonce: response.nonce,
        type_url: response.type_url,
        ..Default::default()
    }
}

/// Where and how to open the ADS stream; the certificate and key change when the agent asks
/// for a new CSR (after it lost the registration, which it does when refreshes fail to reach it).
struct Xds {
    url: String,
    server_name: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

pub struct SimProxy {
    pub state: Arc<Mutex<SimProxyState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimProxy {
    /// Registers `workload`'s sidecar with the agent whose registration API is at `registry`
    /// (retrying until `deadline`, as `trellis proxy` retries), then runs its refreshes and its
    /// ADS stream, looking out for `markers` from the start.
    pub async fn start(
        registry: &str,
        workload: Workload,
        markers: Vec<(u32, u32)>,
        deadline: Instant,
    ) -> anyhow::Result<SimProxy> {
        let node_id = format!("sidecar~{}.{}", workload.name, workload.namespace);
        let url = format!("http://{registry}/v1/proxies/{node_id}");
        let body = serde_json::to_value(trellis_agent::ProxyRegistration::Sidecar {
            workload,
            outbound_port: 15001,
            access_log: None,
        })?;
        let (token, xds) = loop {
            match register(&url, body.clone()).await {
                Ok(registered) => break registered,
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        let state = Arc::new(Mutex::new(SimProxyState {
            node_id: node_id.clone(),
            markers,
            received: Vec::new(),
            failures: Vec::new(),
        }));
        let xds = Arc::new(Mutex::new(xds));
        let refresh = tokio::spawn(refresh_loop(url, body, token, xds.clone(), state.clone()));
        let ads = tokio::spawn(ads_loop(xds, state.clone()));
        Ok(SimProxy {
            state,
            tasks: vec![refresh, ads],
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SimProxyState> {
        self.state.lock().expect("sim proxy state")
    }
}

impl Drop for SimProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One PUT as `trellis proxy` sends it (same 2 s limit).
async fn put(url: &str, body: &serde_json::Value, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization.iter().map(|v| ("authorization", v.as_str())).collect();
    let response = trellis_support::httpc::request(
        "PUT",
        url,
        None,
        &headers,
        Some(("application/json", serde_json::to_vec(body)?)),
        Duration::from_secs(2),
    )
    .await?;
    anyhow::ensure!(
        response.status == 200,
        "PUT {url}: HTTP {}: {}",
        response.status,
        response.body
    );
    Ok(serde_json::from_str(&response.body)?)
}

fn field(answer: &serde_json::Value, key: &str) -> anyhow::Result<String> {
    answer[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the agent's answer has no {key}: {answer}"))
}

/// The first registration: a new key, its CSR; the answer's token and xDS details.
async fn register(url: &str, mut body: serde_json::Value) -> anyhow::Result<(String, Xds)> {
    let (key, csr) = trellis_pki::new_key_and_csr("trellis-proxy")?;
    body["xdsCsr"] = csr.into();
    let answer = put(url, &body, None).await?;
    let xds = Xds {
        url: format!("https://{}:{}", field(&answer, "xdsAddress")?, answer["xdsPort"]),
        server_name: field(&answer, "xdsServerName")?,
        ca_pem: field(&answer, "xdsCa")?,
        cert_pem: field(&answer, "xdsCertificate")?,
        key_pem: key.0,
    };
    Ok((field(&answer, "token")?, xds))
}

/// Refreshes every 5 s; when the agent says it holds no certificate for us (it expired the
/// registration and adopted our token again), the next refresh carries a new CSR, and the ADS
/// stream reconnects with the certificate that comes back.
async fn refresh_loop(
    url: String,
    body: serde_json::Value,
    token: String,
    xds: Arc<Mutex<Xds>>,
    state: Arc<Mutex<SimProxyState>>,
) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.tick().await;
    let mut csr_wanted = false;
    loop {
        tick.tick().await;
        let mut request = body.clone();
        let mut new_key = None;
        if csr_wanted && let Ok((key, csr)) = trellis_pki::new_key_and_csr("trellis-proxy") {
            request["xdsCsr"] = csr.into();
            new_key = Some(key.0);
        }
        match put(&url, &request, Some(&token)).await {
            Ok(answer) => {
                if let (Some(key), Some(cert)) = (new_key, answer["xdsCertificate"].as_str()) {
                    let mut xds = xds.lock().expect("xds");
                    xds.key_pem = key;
                    xds.cert_pem = cert.to_string();
                }
                csr_wanted = answer["xdsCertificateNeeded"] == true;
            }
            Err(error) => {
                let failure = (Instant::now(), format!("refresh: {error:#}"));
                state.lock().expect("sim proxy state").failures.push(failure);
            }
        }
    }
}

async fn ads_loop(xds: Arc<Mutex<Xds>>, state: Arc<Mutex<SimProxyState>>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let error = match ads_session(&xds, &state).await {
            Ok(()) => "ADS stream closed by the agent".to_string(),
            Err(error) => match error.downcast_ref::<tonic::Status>() {
                Some(status) => format!("ADS: {:?}: {}", status.code(), status.message()),
                None => format!("ADS: {error:#}"),
            },
        };
        state
            .lock()
            .expect("sim proxy state")
            .failures
            .push((Instant::now(), error));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn ads_session(xds: &Mutex<Xds>, state: &Mutex<SimProxyState>) -> anyhow::Result<()> {
    let (url, tls) = {
        let xds = xds.lock().expect("xds");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&xds.ca_pem))
            .domain_name(xds.server_name.clone())
            .identity(Identity::from_pem(&xds.cert_pem, &xds.key_pem));
        (xds.url.clone(), tls)
    };
    let channel = Endpoint::from_shared(url)?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let node_id = state.lock().expect("sim proxy state").node_id.clone();
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    for (i, type_url) in TYPES.iter().enumerate() {
        // CDS and LDS with no names are wildcard subscriptions; the named types ask for `*`.
        let wildcard = *type_url == trellis_xds::CLUSTER_TYPE || *type_url == trellis_xds::LISTENER_TYPE;
        tx.send(DeltaDiscoveryRequest {
            // Envoy names its node on the first request of a stream.
            node: (i == 0).then(|| Node {
                id: node_id.clone(),
                ..Default::default()
            }),
            type_url: type_url.to_string(),
            resource_names_subscribe: if wildcard { Vec::new() } else { vec!["*".to_string()] },
            ..Default::default()
        })
        .await?;
    }
    // The benchmark measures the agent; the client takes responses of any size.
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut incoming = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(response) = incoming.next().await.transpose()? {
        let ack = on_response(&mut state.lock().expect("sim proxy state"), response);
        tx.send(ack).await?;
    }
    Ok(())
}
