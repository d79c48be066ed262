//! The server's half of token-based join: making a token (randomness) and hashing its secret
//! (what is replicated instead of it), and the `JoinApi` seam through which the join routes
//! reach the node. The token's text format and the join bodies are `api::join`'s.
//!
//! Why a trait: `web` sits below `node` and must not read the KEK file or know the TLS
//! configuration; the node passes an `Option<Arc<dyn JoinApi>>` through `ApiConfig::join`.
//! Must never put a secret (token secret, KEK) into a log line, an error message, or `Debug`
//! output.

use std::fmt;
use std::sync::Arc;

use api::fingerprint;
use api::join::{ID_HEX, JoinToken, SECRET_HEX};
use sha2::{Digest, Sha256};

use crate::ca_api::CaApiError;

/// A new token for the root with this fingerprint (either form), with a random id and
/// secret. Here rather than in `api`, which draws no random numbers.
pub fn generate_token(fingerprint: &str) -> JoinToken {
    use rand::RngCore;
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = JoinToken {
        fingerprint: fingerprint::to_hex(fingerprint),
        id: hex::encode(id),
        secret: hex::encode(secret),
    };
    secret.fill(0);
    token
}

/// What is replicated instead of the token's secret.
pub fn secret_hash(token: &JoinToken) -> String {
    hex::encode(Sha256::digest(token.secret.as_bytes()))
}

/// What the join routes need from the node besides the CA (which they reach through
/// `ApiConfig::ca`): whether this node serves HTTPS, and the KEK.
#[async_trait::async_trait]
pub trait JoinApi: Send + Sync {
    /// Whether this node serves the client API over HTTPS only (its plain port redirects):
    /// then, and only then, may `POST /api/v1/join` hand out the KEK and a node certificate.
    fn serves_tls(&self) -> bool;
    /// The KEK file's text. Only called when `serves_tls`.
    async fn kek_text(&self) -> Result<String, CaApiError>;
}

impl fmt::Debug for dyn JoinApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinApi")
    }
}

pub type SharedJoin = Arc<dyn JoinApi>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let fp = "AB:".repeat(31) + "CD";
        let t = generate_token(&fp);
        assert_eq!(t.fingerprint, "ab".repeat(31) + "cd");
        assert_eq!(JoinToken::parse(&t.to_text()).unwrap(), t);
        assert_eq!(secret_hash(&t).len(), 64);
        assert_ne!(generate_token(&fp).secret, t.secret);
        assert_eq!(fingerprint::colons(&t.fingerprint), fp);
    }
}
