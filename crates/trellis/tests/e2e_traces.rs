//! Traces reach a real Jaeger over OTLP/gRPC: the demo mesh's sidecars trace requests with
//! Envoy's OpenTelemetry tracer (the client's and the server's sidecar in one trace, joined by
//! the W3C `traceparent` the client's sends), and the management server and agents export their
//! own spans, an apply's trace running from the API through translation and the relay push into
//! both agents, and on to their Envoys' ACKs. With sampling at 0 no proxy span arrives, while the daemons' spans still do.
//!
//! Jaeger comes from scripts/setup (built once from its Go module into a cache outside the tree).

use trellis_testkit as common;

use std::time::Duration;

use common::jaeger::{Jaeger, Trace};
use common::*;
use trellis_cli::up::{LocalMesh, MeshOptions, MeshTracing};

/// The sidecars' service names: `<service>.<namespace>`.
const CLIENT: &str = "frontend.demo";
const SERVER: &str = "backend.demo";
const MGMT: &str = "trellis-mgmt";
const AGENT: &str = "trellis-agent";
/// Envoy flushes its spans every 5 s; Trellis' exporter every half second.
const ARRIVAL: Duration = Duration::from_secs(45);

async fn traced_demo_mesh(name: &str, sampling_percent: f64) -> (Jaeger, LocalMesh) {
    let jaeger = Jaeger::start(&test_dir(&format!("{name}-jaeger"))).await;
    let mut options = MeshOptions::free();
    options.tracing = Some(MeshTracing {
        endpoint: jaeger.otlp.clone(),
        sampling_percent,
    });
    let mesh = demo_mesh_with(name, options).await;
    (jaeger, mesh)
}

async fn requests_through_the_frontend_sidecar(mesh: &LocalMesh, n: usize) {
    for i in 0..n {
        let response = mesh
            .call_from_frontend("http://backend.mesh.internal/")
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status, 200, "request {i}: {}", response.body);
    }
}

/// The trace id of the caller of an apply.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn wait_for_trace_id(jaeger: &Jaeger, trace_id: &str, what: &str, wanted: impl Fn(&Trace) -> bool) -> Trace {
    let deadline = std::time::Instant::now() + ARRIVAL;
    loop {
        let trace = jaeger.trace(trace_id).await;
        if let Some(trace) = trace.as_ref().filter(|t| wanted(t)) {
            return trace.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: trace {trace_id} is not complete after {ARRIVAL:?}: {:?}",
            trace.map(|t| t
                .spans
                .iter()
                .map(|s| format!("{}:{}", s.service, s.operation))
                .collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn both_sidecars(trace: &Trace) -> bool {
    let services = trace.services();
    services.contains(CLIENT) && services.contains(SERVER)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_and_the_control_plane_send_their_spans_to_jaeger_in_shared_traces() {
    let (jaeger, mesh) = traced_demo_mesh("traces", 100.0).await;
    requests_through_the_frontend_sidecar(&mesh, 10).await;

    // (a) One request, two sidecars, one trace: the server's span is a child of the client's.
    let trace = jaeger
        .wait_for_trace(SERVER, "a request traced by both sidecars", ARRIVAL, both_sidecars)
        .await;
    assert!(trace.spans.iter().all(|s| s.trace_id == trace.trace_id));
    let server = trace.spans.iter().find(|s| s.service == SERVER).unwrap();
    let parent = server
        .parents
        .iter()
        .find_map(|id| trace.span(id))
        .unwrap_or_else(|| panic!("the server's span has no parent in the trace: {trace:?}"));
    assert_eq!(parent.service, CLIENT, "{trace:?}");
    // Every request of ours is such a trace, once each Envoy has flushed (every 5 s).
    let deadline = std::time::Instant::now() + ARRIVAL;
    let joined = loop {
        let traces = jaeger.traces(SERVER, 500).await;
        let joined = traces.iter().filter(|t| both_sidecars(t)).count();
        if joined >= 10 {
            break joined;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{joined} of {} traces hold both sidecars' spans",
            traces.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // (b) An apply, its translation and pushes, and both agents taking the config: one trace,
    // the caller's (a deploy pipeline that traces hands its traceparent to the API).
    let response = mesh
        .api()
        .unwrap()
        .request_with_headers(
            "POST",
            "/api/v1/apply?source=route-table-50-50.yaml",
            &[("traceparent", &format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01"))],
            Some(("application/yaml", route_table(50, 50).into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let apply = wait_for_trace_id(&jaeger, CALLER_TRACE, "an apply carried through to both agents", |t| {
        let clusters: std::collections::BTreeSet<&str> = t
            .spans
            .iter()
            .filter(|s| s.service == AGENT && s.operation == "receive_config")
            .flat_map(|s| &s.process_tags)
            .filter(|(key, _)| key == trellis_support::span_export::CLUSTER_ATTRIBUTE)
            .map(|(_, value)| value.as_str())
            .collect();
        ["apply", "translate", "push_config"]
            .iter()
            .all(|operation| t.has(MGMT, operation))
            && ["build_snapshots", "xds_push", "xds_ack"]
                .iter()
                .all(|operation| t.has(AGENT, operation))
            && clusters == ["cluster-1", "cluster-2"].into()
    })
    .await;
    // The pushes hang off the translation, the translation off the apply.
    let parent_of = |operation: &str| {
        let span = apply.spans.iter().find(|s| s.operation == operation).unwrap();
        span.parents
            .iter()
            .find_map(|id| apply.span(id))
            .map(|p| p.operation.clone())
    };
    assert_eq!(parent_of("apply"), None, "the caller's span is not in Jaeger");
    assert_eq!(parent_of("translate").as_deref(), Some("apply"));
    assert_eq!(parent_of("push_config").as_deref(), Some("translate"));
    assert_eq!(parent_of("receive_config").as_deref(), Some("push_config"));
    // Then each agent's xDS pushes to its Envoys, and the Envoys' ACKs of them.
    assert_eq!(parent_of("build_snapshots").as_deref(), Some("receive_config"));
    assert_eq!(parent_of("xds_push").as_deref(), Some("build_snapshots"));
    assert_eq!(parent_of("xds_ack").as_deref(), Some("xds_push"));
    eprintln!(
        "{joined} traces with both sidecars; the apply's trace holds {} spans from {:?}",
        apply.spans.len(),
        apply.services()
    );
    finish(mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_sampling_zero_percent_send_no_spans() {
    let (jaeger, mesh) = traced_demo_mesh("traces-unsampled", 0.0).await;
    requests_through_the_frontend_sidecar(&mesh, 20).await;
    // The daemons' spans arrive over the same path: silence from the proxies is their sampling.
    jaeger
        .wait_for_trace(AGENT, "the agents' spans", ARRIVAL, |t| t.has(AGENT, "receive_config"))
        .await;
    // Past two of Envoy's 5 s flushes after the last request.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let services = jaeger.services().await;
    assert!(services.iter().any(|s| s == AGENT), "{services:?}");
    assert!(
        !services.iter().any(|s| s == CLIENT || s == SERVER),
        "proxy spans arrived at 0% sampling: {services:?}"
    );
    finish(mesh).await;
}
