//! `passThroughAuth.grpc`: the CheckRequest forwarded as it is to another ext_authz v3 server,
//! over one lazily connected, reused channel.

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::{Channel, Endpoint};
use trellis_extauth::{Outcome, PassThroughGrpc};

use super::wire;

pub struct PassThrough {
    settings: PassThroughGrpc,
    client: AuthorizationClient<Channel>,
}

impl PassThrough {
    pub fn new(settings: &PassThroughGrpc) -> anyhow::Result<PassThrough> {
        let endpoint = Endpoint::from_shared(format!("http://{}", settings.address))?
            .connect_timeout(settings.connection_timeout)
            .timeout(settings.connection_timeout);
        Ok(PassThrough {
            settings: settings.clone(),
            client: AuthorizationClient::new(endpoint.connect_lazy()),
        })
    }

    /// The other server's decision; when it cannot be asked, a deny (or an allow with
    /// `failureModeAllow`), since the request was meant to be checked.
    pub async fn check(&self, request: &CheckRequest) -> Outcome {
        match self.client.clone().check(request.clone()).await {
            Ok(response) => wire::from_response(response.get_ref()),
            Err(status) => {
                tracing::warn!(
                    address = %self.settings.address,
                    code = ?status.code(),
                    message = status.message(),
                    failure_mode_allow = self.settings.failure_mode_allow,
                    "passthrough auth server did not answer"
                );
                if self.settings.failure_mode_allow {
                    Outcome::allow()
                } else {
                    // "Could not decide", not "no": a booleanExpr's `!` must not turn it into
                    // an allow.
                    Outcome::deny(503)
                }
            }
        }
    }
}
