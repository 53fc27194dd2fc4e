//! A pod proves who it is to its agent with a projected service-account token for the agent's
//! audience; the agent asks its cluster's API server (TokenReview) who the token belongs to.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::injection::TOKEN_AUDIENCE;

/// The service account a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub service_account: String,
}

/// Reads tokens through one cluster's TokenReview API.
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
}

impl TokenReviewer {
    pub fn new(client: Client) -> Self {
        TokenReviewer { client }
    }

    /// Who `token` is, if the API server vouches for it for the agent's audience.
    pub async fn review(&self, token: &str) -> Result<PodIdentity, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("the cluster's API server could not review the token: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(format!(
                "the cluster's API server does not accept the token: {}",
                status.error.unwrap_or_else(|| "not authenticated".into())
            ));
        }
        if !status.audiences.unwrap_or_default().iter().any(|a| a == TOKEN_AUDIENCE) {
            return Err(format!("the token is not for the audience {TOKEN_AUDIENCE}"));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        service_account_of(&username).ok_or_else(|| format!("the token is not a service account's ({username})"))
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
fn service_account_of(username: &str) -> Option<PodIdentity> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| PodIdentity {
        namespace: namespace.into(),
        service_account: name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_account_users_are_pods() {
        assert_eq!(
            service_account_of("system:serviceaccount:bookinfo:reviews"),
            Some(PodIdentity {
                namespace: "bookinfo".into(),
                service_account: "reviews".into()
            })
        );
        assert_eq!(service_account_of("admin"), None);
        assert_eq!(service_account_of("system:serviceaccount:bookinfo"), None);
    }
}
