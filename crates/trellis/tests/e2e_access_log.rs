//! AccessLogPolicy through real Envoy: the selected sidecar writes JSON entries for the requests
//! the policy's filters match, with the headers it names; unselected sidecars write nothing; and
//! once the policy is deleted, new requests are not logged.

use trellis_testkit as common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use trellis_cli::up::LocalMesh;

/// Logs the frontend's (cluster-1) requests that fail, with the caller's `x-tenant`.
const POLICY: &str = "apiVersion: observability.policy.gloo.solo.io/v2
kind: AccessLogPolicy
metadata: {name: frontend-errors, namespace: demo}
spec:
  applyToWorkloads:
  - selector: {cluster: cluster-1, namespace: demo, labels: {app: frontend}}
  config:
    filters:
    - statusCodeMatcher: {value: 400, comparator: GE}
    includedRequestHeaders: [x-tenant]
";

/// Envoy writes its access log files out once a second.
const FLUSH: Duration = Duration::from_millis(2500);

/// A sidecar's access log: `access.log` in its data directory (`trellis proxy`'s default).
fn log_file(mesh: &LocalMesh, app: &str) -> PathBuf {
    mesh.dir.join(format!("sidecar-{app}")).join("access.log")
}

/// The entries of an access log file, each a JSON object; none when the file does not exist.
fn entries(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// One request from the frontend's sidecar, as the frontend app would send it, with `x-tenant`.
async fn call(mesh: &LocalMesh, url: &str, tenant: &str) -> u16 {
    let proxy = format!("127.0.0.1:{}", mesh.app("frontend").outbound_port);
    trellis_support::httpc::request(
        "GET",
        url,
        Some(&proxy),
        &[("x-tenant", tenant)],
        None,
        Duration::from_secs(5),
    )
    .await
    .map(|r| r.status)
    .unwrap_or(0)
}

/// Whether the active outbound listener of an Envoy carries an access log.
async fn outbound_logs(admin_port: u16) -> bool {
    let url = format!("http://127.0.0.1:{admin_port}/config_dump?resource=dynamic_listeners");
    let Ok(response) = trellis_support::httpc::get(&url, Duration::from_secs(2)).await else {
        return false;
    };
    let dump: Value = serde_json::from_str(&response.body).unwrap_or_default();
    dump["configs"].as_array().into_iter().flatten().any(|listener| {
        listener["name"] == "outbound"
            && listener["active_state"]
                .to_string()
                .contains("envoy.access_loggers.file")
    })
}

async fn until_outbound_logs(mesh: &LocalMesh, wanted: bool) {
    let admin = mesh.app("frontend").admin_port;
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbound_logs(admin).await != wanted {
        assert!(
            Instant::now() < deadline,
            "the frontend's outbound listener {} an access log after 30 s",
            if wanted { "still has no" } else { "still has" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// backend-v2's app answers 503 to every request (`every` = 1) or to none (0).
async fn backend_v2_fails(mesh: &LocalMesh, every: u32) {
    let app = mesh.app("backend-v2").app_port;
    let url = format!("http://127.0.0.1:{app}/__demo/fail-every/{every}");
    trellis_support::httpc::request("PUT", &url, None, &[], None, Duration::from_secs(2))
        .await
        .expect("the demo app answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_policy_logs_the_selected_workloads_matching_requests() {
    let mesh = demo_mesh("access-log").await;
    let started = Instant::now();
    let response = mesh.apply("access-log.yaml", POLICY).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    until_outbound_logs(&mesh, true).await;

    // The status says what it applies to, and warns of nothing.
    let described = mesh
        .api()
        .unwrap()
        .get("/api/v1/describe/AccessLogPolicy/demo/frontend-errors")
        .await
        .unwrap();
    let described: Value = serde_json::from_str(&described.body).unwrap();
    let status = &described["resource"]["status"];
    assert_eq!(status["state"], "ACCEPTED", "{described}");
    assert_eq!(status["message"], "applies to 1 workload(s)", "{described}");

    let v2 = "http://backend-v2.mesh.internal/";
    assert_eq!(call(&mesh, v2, "ok-tenant").await, 200);
    backend_v2_fails(&mesh, 1).await;
    assert_eq!(call(&mesh, v2, "acme").await, 503);
    backend_v2_fails(&mesh, 0).await;

    let frontend = log_file(&mesh, "frontend");
    let deadline = Instant::now() + Duration::from_secs(10);
    while entries(&frontend).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no entry in {} after 10 s",
            frontend.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(FLUSH).await;
    let logged = entries(&frontend);
    assert_eq!(logged.len(), 1, "only the failed request is logged: {logged:#?}");
    let entry = &logged[0];
    assert_eq!(entry["response_code"], 503, "{entry}");
    assert_eq!(entry["request_headers"]["x-tenant"], "acme", "{entry}");
    assert_eq!(entry["policy"], "demo/frontend-errors", "{entry}");
    assert_eq!(entry["listener"], "outbound", "{entry}");
    assert_eq!(entry["method"], "GET", "{entry}");
    assert_eq!(entry["authority"], "backend-v2.mesh.internal", "{entry}");
    assert!(
        entry["upstream_cluster"]
            .as_str()
            .is_some_and(|c| c.contains("backend-v2")),
        "{entry}"
    );
    assert!(entry["x_request_id"].is_string(), "{entry}");

    // backend-v2's sidecar answered the 503 itself but is not selected: no entry there, nor on
    // backend-v1's.
    for app in ["backend-v2", "backend-v1"] {
        let unselected = entries(&log_file(&mesh, app));
        assert!(
            unselected.is_empty(),
            "{app} is not selected but logged {unselected:#?}"
        );
    }

    // Deleted, the policy logs nothing more, on connections opened since.
    let response = mesh
        .api()
        .unwrap()
        .request(
            "POST",
            "/api/v1/delete?source=access-log.yaml",
            Some(("application/yaml", POLICY.as_bytes().to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    until_outbound_logs(&mesh, false).await;
    backend_v2_fails(&mesh, 1).await;
    assert_eq!(call(&mesh, v2, "after-delete").await, 503);
    backend_v2_fails(&mesh, 0).await;
    assert_eq!(call(&mesh, "http://nowhere.mesh.internal/", "after-delete").await, 404);
    tokio::time::sleep(FLUSH).await;
    let after = entries(&frontend);
    assert_eq!(after.len(), 1, "requests after the delete were logged: {after:#?}");
    println!(
        "access log: 1 of 2 requests logged with its header, none after the delete ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    finish(mesh).await;
}
