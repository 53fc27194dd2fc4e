//! Kubernetes-style service names and RouteTables with `workloadSelectors`, through real Envoys.
//!
//! As in a Kubernetes cluster, `<svc>.<ns>.svc.cluster.local` and `<svc>.<ns>` reach the
//! cluster's own service with no VirtualDestination. A RouteTable on such a name with
//! `workloadSelectors` changes the routing of the selected client workloads only (Gloo Mesh 2.x:
//! https://docs.solo.io/gloo-mesh-enterprise/latest/reference/api/route_table/), policies that
//! select its routes (a FaultInjectionPolicy delay) hold for those clients only, and deleting
//! the table brings the default back.

use trellis_testkit as common;

use std::time::{Duration, Instant};

use common::*;
use trellis_cli::up::{AppSpec, LocalMesh};

const SERVICE_NAME: &str = "http://backend.demo.svc.cluster.local:80/";

/// Sends the frontend (`app: frontend`) to the backend's v2 subset in cluster-2 and injects a
/// 503 on `/fault`; every other client keeps the default routing.
const FRONTEND_TO_V2: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: backend-for-frontend
  namespace: demo
spec:
  hosts:
  - backend.demo.svc.cluster.local
  workloadSelectors:
  - selector:
      labels:
        app: frontend
  http:
  - name: fault
    matchers:
    - uri: {prefix: /fault}
    directResponse:
      status: 503
      body: injected
  - name: v2
    labels:
      route: backend-for-frontend
    forwardTo:
      destinations:
      - ref:
          name: backend
          namespace: demo
          cluster: cluster-2
        kind: SERVICE
        port:
          number: 80
        subset:
          version: v2
";

/// An 800 ms delay on the selected table's v2 route, the Gloo way: a policy selecting it by label.
const DELAY_V2: &str = "\
apiVersion: resilience.policy.gloo.solo.io/v2
kind: FaultInjectionPolicy
metadata: {name: slow-v2, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {route: backend-for-frontend}}}]
  config: {delay: {fixedDelay: 800ms, percentage: 100}}
";

/// What a delayed request takes at least: Envoy's delay timer may fire a millisecond early.
const SLOW: Duration = Duration::from_millis(700);

/// How long one request from `app`'s sidecar to the backend's service name takes.
async fn took(mesh: &LocalMesh, app: &str) -> Duration {
    let started = Instant::now();
    let response = mesh.call_from(app, SERVICE_NAME).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    started.elapsed()
}

/// (status, version, cluster) of one answer to `url` from `app`'s sidecar.
async fn answer(mesh: &LocalMesh, app: &str, url: &str) -> (u16, String, String) {
    let Ok(response) = mesh.call_from(app, url).await else {
        return (0, String::new(), String::new());
    };
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_string();
    (response.status, field("version"), field("cluster"))
}

fn local_v1() -> (u16, String, String) {
    (200, "v1".to_string(), "cluster-1".to_string())
}

fn remote_v2() -> (u16, String, String) {
    (200, "v2".to_string(), "cluster-2".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_route_table_reroutes_only_the_selected_clients_of_a_kubernetes_service_name() {
    let mut mesh = demo_mesh("workload-selectors").await;
    // A second client in cluster-1 that the route table does not select.
    let spec = AppSpec::new("reviewer", "demo", "reviewer", "v1", "cluster-1");
    mesh.start_app(&bin(), spec).unwrap();
    mesh.wait_for_traffic(Duration::from_secs(30)).await.unwrap();

    // (a) The cluster's own service by its Kubernetes names, with no VirtualDestination for
    // them: cluster-1's clients reach cluster-1's backend (v1), never cluster-2's.
    for app in ["frontend", "reviewer"] {
        eventually("the service name answering", || async {
            answer(&mesh, app, SERVICE_NAME).await.0 == 200
        })
        .await;
        for _ in 0..10 {
            assert_eq!(answer(&mesh, app, SERVICE_NAME).await, local_v1(), "from {app}");
            assert_eq!(
                answer(&mesh, app, "http://backend.demo/").await,
                local_v1(),
                "from {app}"
            );
        }
    }
    // An unknown name in the same shape is not routed.
    assert_eq!(
        answer(&mesh, "frontend", "http://nothing.demo.svc.cluster.local/")
            .await
            .0,
        404
    );

    // (b) The route table selects the frontend: it goes to v2 in cluster-2 and gets the
    // injected 503; the reviewer keeps the default.
    let response = mesh.apply("backend-for-frontend.yaml", FRONTEND_TO_V2).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("the frontend reaching v2", || async {
        answer(&mesh, "frontend", SERVICE_NAME).await == remote_v2()
    })
    .await;
    for _ in 0..10 {
        assert_eq!(answer(&mesh, "frontend", SERVICE_NAME).await, remote_v2());
        assert_eq!(answer(&mesh, "frontend", "http://backend.demo/").await, remote_v2());
        assert_eq!(
            answer(&mesh, "reviewer", SERVICE_NAME).await,
            local_v1(),
            "not selected"
        );
    }
    let fault = mesh
        .call_from("frontend", "http://backend.demo.svc.cluster.local/fault")
        .await
        .unwrap();
    assert_eq!((fault.status, fault.body.as_str()), (503, "injected"));
    let untouched = mesh
        .call_from("reviewer", "http://backend.demo.svc.cluster.local/fault")
        .await
        .unwrap();
    assert_eq!(untouched.status, 200, "{}", untouched.body);
    // Applied, not skipped: the table's status is ACCEPTED.
    let table = mesh
        .api()
        .unwrap()
        .get_json("/api/v1/resources/RouteTable/demo/backend-for-frontend")
        .await
        .unwrap();
    assert_eq!(table["status"]["state"], "ACCEPTED", "{table:#}");

    // A policy on the selected route delays the frontend only.
    let response = mesh.apply("slow-v2.yaml", DELAY_V2).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    // Three slow answers in a row: one alone may be slow for other reasons on a busy machine.
    eventually("the delay on the frontend's route", || async {
        for _ in 0..3 {
            if took(&mesh, "frontend").await < SLOW {
                return false;
            }
        }
        true
    })
    .await;
    for _ in 0..3 {
        assert!(took(&mesh, "frontend").await >= SLOW);
        assert!(
            took(&mesh, "reviewer").await < Duration::from_millis(400),
            "not selected"
        );
    }

    // (c) Deleting the table restores the default routing.
    let deleted = mesh
        .api()
        .unwrap()
        .request(
            "POST",
            "/api/v1/delete?source=backend-for-frontend.yaml",
            Some(("application/yaml", FRONTEND_TO_V2.as_bytes().to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    eventually("the frontend back on v1", || async {
        answer(&mesh, "frontend", SERVICE_NAME).await == local_v1()
    })
    .await;
    for _ in 0..10 {
        assert_eq!(answer(&mesh, "frontend", SERVICE_NAME).await, local_v1());
    }
    assert!(
        took(&mesh, "frontend").await < Duration::from_millis(400),
        "the delay went with the table"
    );
    finish(mesh).await;
}
