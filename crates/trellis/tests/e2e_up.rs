//! `trellis up` as a person runs it: it reports each step as it is done (with the seconds since
//! the start), serves the demo once it says so, feeds the UI's service graph from its built-in
//! Prometheus, and Ctrl-C stops it all.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use trellis_support::process::free_port;

/// The steps `trellis up` reports, in the order it does them.
const STEPS: [&str; 9] = [
    "management server: API https://127.0.0.1:",
    "cluster-1: registered",
    "cluster-1: agent and east-west gateway started",
    "cluster-2: registered",
    "cluster-2: agent and east-west gateway started",
    "Prometheus 127.0.0.1:",
    "demo apps started",
    "demo config applied",
    "every sidecar serves",
];

/// The seconds of a progress line: `  [  1.2 s] what`.
fn seconds(line: &str) -> f64 {
    let inside = line.trim_start().trim_start_matches('[');
    inside
        .split(" s]")
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("a progress line's seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_reports_each_step_serves_the_demo_and_stops_on_ctrl_c() {
    let dir = test_dir("up");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let outbound = free_port();
    let mut up = tokio::process::Command::new(bin())
        .args(["up", "--no-addons", "--dir"])
        .arg(dir.join("mesh"))
        .args([
            "--api-port",
            &free_port().to_string(),
            "--outbound-port",
            &outbound.to_string(),
        ])
        // Its client context goes to this test's config, not the developer's.
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("TRELLIS_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("up.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut progress: Vec<String> = Vec::new();
    while !progress.last().is_some_and(|l| l.contains("every sidecar serves")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("trellis up did not finish its steps in 120 s; it said {progress:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("trellis up ended early; it said {progress:#?}"));
        if line.trim_start().starts_with('[') {
            progress.push(line);
        }
    }
    // Every step, in order, and the clock only moves forward.
    let mut at = 0;
    for step in STEPS {
        let found = progress[at..]
            .iter()
            .position(|line| line.contains(step))
            .unwrap_or_else(|| panic!("no step {step:?} after {at} in {progress:#?}"));
        at += found + 1;
    }
    let times: Vec<f64> = progress.iter().map(|l| seconds(l)).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{progress:#?}");

    // What it said is true: the demo answers through the frontend's sidecar.
    let answer = trellis_support::httpc::request(
        "GET",
        "http://backend-v2.mesh.internal/",
        Some(&format!("127.0.0.1:{outbound}")),
        &[],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("\"cluster-2\""), "{}", answer.body);

    // The UI's graph: the frontend's calls, as the built-in Prometheus scraped them through the
    // agents, read by the management server.
    let api = trellis_cli::api_client::ApiClient::from_config_file(&dir.join("mesh/mgmt/admin.conf")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for _ in 0..5 {
            let _ = trellis_support::httpc::request(
                "GET",
                "http://backend.mesh.internal/",
                Some(&format!("127.0.0.1:{outbound}")),
                &[],
                None,
                Duration::from_secs(5),
            )
            .await;
        }
        let graph = api.get_json("/api/v1/graph").await.unwrap();
        let edges = graph["edges"].as_array().cloned().unwrap_or_default();
        if edges
            .iter()
            .any(|e| e["source"] == "frontend" && e["requestsPerSecond"].as_f64() > Some(0.0))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no frontend edge in the graph after 60 s: {graph}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Ctrl-C stops it all, and it says so.
    signal(&up, libc::SIGINT);
    let mut rest = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        rest.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .expect("trellis up exits after Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}; {rest:?}");
    assert!(rest.iter().any(|l| l.contains("Stopped.")), "{rest:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
