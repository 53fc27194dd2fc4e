//! The gRPC service Envoy's ext_authz filter calls.

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::runtime::{CONFIG_ID, Runtime};
use super::wire;

pub struct ExtAuthService {
    /// The latest good runtime; replaced whole when a new document arrives.
    runtime: watch::Receiver<Arc<Runtime>>,
    metrics: CheckMetrics,
}

impl ExtAuthService {
    pub fn new(runtime: watch::Receiver<Arc<Runtime>>, metrics: CheckMetrics) -> ExtAuthService {
        ExtAuthService { runtime, metrics }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    config_id: String,
    /// `allow` or `deny`.
    outcome: String,
    status: u16,
}

/// `trellis_ext_auth_checks_total{config_id,outcome,status}` and the check duration.
#[derive(Clone)]
pub struct CheckMetrics {
    checks: Family<CheckLabels, Counter>,
    duration: Histogram,
}

impl CheckMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = CheckMetrics {
            checks: Family::default(),
            duration: Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
        };
        registry.register(
            "trellis_ext_auth_checks",
            "Checks answered, by config id, outcome and HTTP status",
            metrics.checks.clone(),
        );
        registry.register(
            "trellis_ext_auth_check_duration_seconds",
            "Time to answer a check",
            metrics.duration.clone(),
        );
        metrics
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthService {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let input = wire::to_input(&request);
        let runtime = self.runtime.borrow().clone();
        let config_id = input
            .context_extensions
            .get(CONFIG_ID)
            .map(String::as_str)
            .unwrap_or("");
        let span = tracing::info_span!(
            "ext_auth_check",
            config_id,
            outcome = tracing::field::Empty,
            status = tracing::field::Empty
        );
        let started = std::time::Instant::now();
        let outcome = runtime.check(&input, &request).instrument(span.clone()).await;
        self.metrics.duration.observe(started.elapsed().as_secs_f64());
        let (name, status) = match &outcome {
            trellis_extauth::Outcome::Allow { .. } => ("allow", 200),
            trellis_extauth::Outcome::Deny { status, .. } => ("deny", *status),
        };
        self.metrics
            .checks
            .get_or_create(&CheckLabels {
                config_id: config_id.to_string(),
                outcome: name.to_string(),
                status,
            })
            .inc();
        match &outcome {
            trellis_extauth::Outcome::Allow { .. } => span.record("outcome", "allow"),
            trellis_extauth::Outcome::Deny { status, .. } => span.record("outcome", "deny").record("status", status),
        };
        span.in_scope(|| tracing::debug!("checked"));
        let remove = runtime.headers_to_remove(config_id, &outcome);
        Ok(Response::new(wire::to_response_removing(outcome, remove)))
    }
}
