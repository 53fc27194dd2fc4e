//! The agent's registration API as another host sees it. On the TLS port (`--registry-tls-addr`)
//! a client that checks the agent's CA registers a sidecar and gets its token, its xDS CA and
//! certificate; a client that trusts anything else gets no handshake, and plain HTTP gets
//! nothing. The plain port (`--registry-addr`, here on every address) answers another host's
//! reads, and refuses (403 `tls-required`) whatever carries or returns a credential, while
//! this host still registers there.

use trellis_testkit as common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use trellis_agent::agent_endpoint::AgentEndpoint;
use trellis_support::httpc;
use trellis_support::process::free_port;
use trellis_testkit::kube::host_address;

fn sidecar(name: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"kind": "sidecar", "workload": {"name": name, "namespace": "demo",
        "service": "backend", "serviceAccount": "backend", "address": "127.0.0.1", "ports": []},
        "outboundPort": 15001}),
    )
    .unwrap()
}

async fn put(endpoint: &AgentEndpoint, name: &str) -> anyhow::Result<httpc::Response> {
    endpoint
        .request(
            "PUT",
            &format!("/v1/proxies/sidecar~{name}.demo"),
            &[],
            Some(("application/json", sidecar(name))),
            Duration::from_secs(5),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_registers_over_tls_only() {
    let dir = test_dir("agent-registration-tls");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir.join("mgmt"), &[]).await;
    let (token, root) = mgmt.register("c1", None).await;
    std::fs::write(dir.join("root.pem"), root).unwrap();
    let (plain_port, tls_port) = (free_port(), free_port());
    let plain_addr = format!("0.0.0.0:{plain_port}");
    let tls_addr = format!("0.0.0.0:{tls_port}");
    let root_file = dir.join("root.pem").display().to_string();
    let agent = AgentProcess::start(
        &dir,
        "agent",
        "c1",
        &mgmt,
        &[
            "--root-ca",
            &root_file,
            "--registry-addr",
            &plain_addr,
            "--registry-tls-addr",
            &tls_addr,
            "--allow-namespace",
            "demo",
        ],
        Some(&token),
    );
    agent.wait_log("agent started", Duration::from_secs(20)).await;
    let host = host_address();
    let ca_file = agent.data_dir.join("xds-ca.pem");
    let ca_pem = std::fs::read_to_string(&ca_file).unwrap();

    // Over TLS, checked with the agent's CA, from another host's address (reaching the agent by
    // an address its certificate does not name: the name checked is registry.trellis-agent).
    let tls = AgentEndpoint::new(&format!("{host}:{tls_port}"), Some(&ca_file)).unwrap();
    let answer = put(&tls, "remote").await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer: Value = serde_json::from_str(&answer.body).unwrap();
    assert!(answer["token"].as_str().is_some_and(|t| !t.is_empty()), "{answer}");
    assert_eq!(
        answer["xdsCa"],
        ca_pem.as_str(),
        "the xDS CA comes from the server just checked"
    );

    // A client trusting another CA (an impostor's, here a fresh one) gets no handshake.
    let other = trellis_pki::Authority::generate_root(
        "trellis agent xDS CA",
        Duration::from_secs(3600),
        std::time::SystemTime::now(),
    )
    .unwrap();
    std::fs::write(dir.join("other-ca.pem"), &other.cert_pem).unwrap();
    let impostor_trust = AgentEndpoint::new(&format!("{host}:{tls_port}"), Some(&dir.join("other-ca.pem"))).unwrap();
    let refused = put(&impostor_trust, "remote-2").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("invalid peer certificate")),
        "{refused:?}"
    );
    // The system's roots do not vouch for the agent either.
    let system = httpc::get(&format!("https://{host}:{tls_port}/v1/status"), Duration::from_secs(5)).await;
    assert!(system.is_err(), "{system:?}");
    // Plain HTTP on the TLS port is not answered.
    let clear = httpc::get(&format!("http://{host}:{tls_port}/v1/status"), Duration::from_secs(5)).await;
    assert!(
        clear.is_err() || clear.as_ref().is_ok_and(|r| r.status >= 400),
        "{clear:?}"
    );

    // The plain port from another host: reads, and nothing with a credential.
    let remote_plain = AgentEndpoint::local(&format!("{host}:{plain_port}"));
    let metrics = remote_plain
        .request("GET", "/metrics", &[], None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    let registration = put(&remote_plain, "remote-3").await.unwrap();
    assert_eq!(registration.status, 403, "{}", registration.body);
    assert!(registration.body.contains("tls-required"), "{}", registration.body);
    let config = remote_plain
        .request(
            "GET",
            "/v1/addons/ext-auth",
            &[("authorization", "Bearer anything")],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(config.status, 403, "{}", config.body);
    // This host still registers on the plain port.
    let local = put(&AgentEndpoint::local(&format!("127.0.0.1:{plain_port}")), "local")
        .await
        .unwrap();
    assert_eq!(local.status, 200, "{}", local.body);
    drop(agent);
}
