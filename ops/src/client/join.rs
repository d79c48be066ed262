//! The join-token endpoint of [`Client`] (`POST /api/v1/cluster/join-tokens`, docs/api.md).
//!
//! Creating a token is not idempotent (a retry after the request reached the server could make
//! a second, unused token, which simply expires), so it is retried only if never sent. The
//! answer carries the token's secret: callers show it once and must never log it.

use api::join::{CreateJoinToken, JoinTokenCreated};
use reqwest::Method;

use super::{Client, decode};
use crate::error::ClientError;

impl Client {
    /// Creates a single-use join token valid for `ttl_secs` (admin).
    pub async fn create_join_token(&self, ttl_secs: u64) -> Result<JoinTokenCreated, ClientError> {
        let reply = self
            .write(
                &["api", "v1", "cluster", "join-tokens"],
                Method::POST,
                Some(&CreateJoinToken {
                    ttl_secs: Some(ttl_secs),
                }),
            )
            .await?;
        decode(&reply)
    }
}
