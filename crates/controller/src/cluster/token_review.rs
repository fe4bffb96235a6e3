//! ServiceAccount token checks through the API server's TokenReview, for callers that
//! authenticate with their pod's projected token instead of a virtual key.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{api::PostParams, Api, Client};

/// The audience tokens must be minted for unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "switchyard";

/// Reviews tokens for one audience.
#[derive(Clone)]
pub struct TokenReviews {
    api: Api<TokenReview>,
    audience: String,
}

impl TokenReviews {
    /// Reviews through `client`, accepting only tokens minted for `audience`.
    pub fn new(client: Client, audience: impl Into<String>) -> Self {
        TokenReviews {
            api: Api::all(client),
            audience: audience.into(),
        }
    }

    /// `Ok(Ok(username))` when the API server authenticates `token` for our audience,
    /// `Ok(Err(reason))` when it does not, `Err` when it could not be asked.
    pub async fn review(&self, token: String) -> Result<Result<String, String>, kube::Error> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = self.api.create(&PostParams::default(), &request).await?;
        let status = reviewed.status.unwrap_or_default();
        let username = status.user.and_then(|u| u.username);
        // An API server that ignores audiences (none configured) answers without them:
        // refuse rather than accept a token minted for someone else.
        let audience_ok = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience));
        Ok(match (status.authenticated, username) {
            (Some(true), Some(user)) if audience_ok => Ok(user),
            (Some(true), Some(_)) => {
                Err(format!("the token is not for audience {:?}", self.audience))
            }
            _ => Err(status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the API server did not authenticate the token".into())),
        })
    }
}
