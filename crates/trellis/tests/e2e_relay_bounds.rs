//! What the relay lets anyone who can reach it hold, and how `trellis mgmt` and `trellis agent`
//! stop: a flood of half-open handshakes and of certificate-less connections stays bounded and is
//! closed, while a real agent still registers; SIGTERM ends both processes within the grace period
//! even with an agent connected.

use trellis_testkit as common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The relay's per-address handshake limit (`trellis_relay::listener::RelayLimits::default`).
const HANDSHAKES_PER_IP: usize = 8;
/// Its handshake timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `trellis_support::process::SHUTDOWN_GRACE` plus time to start exiting.
const EXIT_LIMIT: Duration = Duration::from_secs(7);

async fn connect_from(source: &str, relay: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let relay: SocketAddr = relay.parse().unwrap();
    socket.connect(relay).await.unwrap()
}

/// True once the server closed `stream` (EOF or reset); false while it is still open.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        // The server sent something (an alert): read on until it closes.
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_are_bounded_and_closed_while_a_real_agent_joins() {
    let dir = test_dir("relay-bounds-flood");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir, &[]).await;
    let (token, root) = mgmt.register("c1", None).await;
    let root_file = dir.join("relay-root.pem");
    std::fs::write(&root_file, &root).unwrap();
    let baseline = open_sockets(mgmt.pid());

    // 200 connections from one host that never send a ClientHello.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(connect_from("127.0.0.2", &mgmt.relay).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = open_sockets(mgmt.pid()).saturating_sub(baseline);
    assert!(
        held <= HANDSHAKES_PER_IP + 2,
        "the server holds {held} sockets for 200 half-open connections (limit {HANDSHAKES_PER_IP})"
    );
    assert!(
        mgmt.metric("trellis_mgmt_relay_refused_total{reason=\"handshake_limit\"}")
            .await
            >= (200 - HANDSHAKES_PER_IP) as u64
    );

    // Meanwhile a real agent, from another address, registers and connects.
    let started = Instant::now();
    let agent = AgentProcess::start(
        &dir,
        "agent",
        "c1",
        &mgmt,
        &["--root-ca", &root_file.display().to_string()],
        Some(&token),
    );
    mgmt.wait_connected("c1", true, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < HANDSHAKE_TIMEOUT,
        "the agent waited for the flood to time out"
    );

    // Every flood connection is closed: over the limit at once, the rest at the handshake timeout.
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    let mut open = flood.len();
    while open > 0 {
        assert!(
            Instant::now() < deadline,
            "{open} half-open connections still open after the handshake timeout"
        );
        let mut still_open = 0;
        for stream in &mut flood {
            if !closed_by_server(stream).await {
                still_open += 1;
            }
        }
        open = still_open;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        mgmt.metric("trellis_mgmt_relay_refused_total{reason=\"handshake_timeout\"}")
            .await
            >= 1
    );
    assert_eq!(mgmt.cluster_status("c1").await["connected"], true);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_client_certificate_are_bounded_per_host() {
    let dir = test_dir("relay-bounds-registration");
    let _ = std::fs::remove_dir_all(&dir);
    let mgmt = MgmtProcess::start(&dir, &[]).await;
    let (token, root) = mgmt.register("c1", None).await;
    let root_file = dir.join("relay-root.pem");
    std::fs::write(&root_file, &root).unwrap();

    // Ten completed TLS handshakes without a client certificate, held open, from one host.
    let mut config = trellis_pki::client_tls_config(None, &root, true).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("trellis-mgmt.trellis").unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        let tcp = connect_from("127.0.0.3", &mgmt.relay).await;
        held.push(connector.connect(name.clone(), tcp).await.unwrap());
    }
    // The server closes those over the per-host limit right after their handshake.
    let refused = "trellis_mgmt_relay_refused_total{reason=\"registration_limit\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while mgmt.metric(refused).await < 6 {
        assert!(Instant::now() < deadline, "no registration_limit refusals counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another host's agent still registers.
    let _agent = AgentProcess::start(
        &dir,
        "agent",
        "c1",
        &mgmt,
        &["--root-ca", &root_file.display().to_string()],
        Some(&token),
    );
    mgmt.wait_connected("c1", true, Duration::from_secs(20)).await;
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_mgmt_and_agent_within_the_grace_period_with_an_agent_connected() {
    let dir = test_dir("relay-bounds-sigterm");
    let _ = std::fs::remove_dir_all(&dir);
    let mut mgmt = MgmtProcess::start(&dir, &[]).await;
    let (token, root) = mgmt.register("c1", None).await;
    let root_file = dir.join("relay-root.pem");
    std::fs::write(&root_file, &root).unwrap();
    let mut agent = AgentProcess::start(
        &dir,
        "agent",
        "c1",
        &mgmt,
        &["--root-ca", &root_file.display().to_string()],
        Some(&token),
    );
    mgmt.wait_connected("c1", true, Duration::from_secs(20)).await;

    // An agent that never closes its side (here: frozen) must not keep the server alive: tonic's
    // graceful shutdown would wait for its stream forever.
    signal(&agent.child, libc::SIGSTOP);
    let took = mgmt.sigterm_and_wait(EXIT_LIMIT).await;
    let log = std::fs::read_to_string(&mgmt.log).unwrap_or_default();
    let took = took.unwrap_or_else(|| panic!("trellis mgmt still ran {EXIT_LIMIT:?} after SIGTERM:\n{log}"));
    eprintln!("trellis mgmt exited {took:?} after SIGTERM, its agent frozen");
    signal(&agent.child, libc::SIGCONT);

    // A live agent is told the server is going away, and keeps running (and serving its config).
    mgmt.respawn().await;
    mgmt.wait_connected("c1", true, Duration::from_secs(20)).await;
    let took = mgmt
        .sigterm_and_wait(EXIT_LIMIT)
        .await
        .unwrap_or_else(|| panic!("trellis mgmt still ran {EXIT_LIMIT:?} after SIGTERM"));
    eprintln!("trellis mgmt exited {took:?} after SIGTERM");
    let log = std::fs::read_to_string(&mgmt.log).unwrap_or_default();
    assert!(log.contains("management server stopped"), "{log}");
    agent
        .wait_log("the management server is shutting down", Duration::from_secs(10))
        .await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited with the server"
    );

    let took = sigterm_and_wait(&mut agent.child, EXIT_LIMIT)
        .await
        .unwrap_or_else(|| panic!("trellis agent still ran {EXIT_LIMIT:?} after SIGTERM"));
    eprintln!("trellis agent exited {took:?} after SIGTERM");
    assert!(agent.log_text().contains("agent stopped"), "{}", agent.log_text());
    let _ = std::fs::remove_dir_all(&dir);
}
