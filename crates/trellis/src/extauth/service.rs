//! The gRPC service Envoy's ext_authz filter calls.

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::runtime::{CONFIG_ID, Runtime};
use super::wire;

pub struct ExtAuthService {
    /// The latest good runtime; replaced whole when a new document arrives.
    runtime: watch::Receiver<Arc<Runtime>>,
}

impl ExtAuthService {
    pub fn new(runtime: watch::Receiver<Arc<Runtime>>) -> ExtAuthService {
        ExtAuthService { runtime }
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
        let outcome = runtime.check(&input, &request).instrument(span.clone()).await;
        match &outcome {
            trellis_extauth::Outcome::Allow { .. } => span.record("outcome", "allow"),
            trellis_extauth::Outcome::Deny { status, .. } => span.record("outcome", "deny").record("status", status),
        };
        span.in_scope(|| tracing::debug!("checked"));
        Ok(Response::new(wire::to_response(outcome)))
    }
}
