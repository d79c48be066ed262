//! The join-token endpoint of [`Client`] (`POST /api/v1/cluster/join-tokens`, docs/api.md).
//!
//! Creating a token is not idempotent (a retry after the request reached the server could make
//! a second, unused token, which simply expires), so it is retried only if never sent. The
//! answer carries the token's secret: callers show it once and must never log it.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{Client, decode};
use crate::error::ClientError;

/// A new join token. `Debug` hides the token text (it holds the secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenCreated {
    /// `conclave-join:<root fingerprint hex>:<id>:<secret>`.
    pub token: String,
    pub id: String,
    /// Unix milliseconds.
    pub expires_ms: u64,
    /// The root fingerprint the token embeds, `AB:CD:...`.
    pub fingerprint: String,
}

impl std::fmt::Debug for JoinTokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokenCreated")
            .field("id", &self.id)
            .field("expires_ms", &self.expires_ms)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct CreateRequest {
    ttl_secs: u64,
}

impl Client {
    /// Creates a single-use join token valid for `ttl_secs` (admin).
    pub async fn create_join_token(&self, ttl_secs: u64) -> Result<JoinTokenCreated, ClientError> {
        let reply = self
            .write(
                &["api", "v1", "cluster", "join-tokens"],
                Method::POST,
                Some(&CreateRequest { ttl_secs }),
            )
            .await?;
        decode(&reply)
    }
}
