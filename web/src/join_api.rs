//! The join token's text format, the wire shapes of `POST /api/v1/join`, and the `JoinApi`
//! seam through which the join routes reach the certificate authority.
//!
//! Token format (what `conclavectl node join-token` prints):
//! `conclave-join:<root fingerprint>:<id>:<secret>`: the SHA-256 of the cluster root
//! certificate's DER as 64 lower-case hex digits without colons, a 16-hex-digit id, and a
//! 64-hex-digit secret (32 random bytes). Only the secret's SHA-256 is replicated; the joiner
//! checks the seed's root against the fingerprint before it trusts or sends anything.
//!
//! Why a trait: `web` sits below `node` and must not read the KEK file or know the TLS
//! configuration; the node passes an `Option<Arc<dyn JoinApi>>` through `ApiConfig::join`. Must never put a secret (token
//! secret, KEK) into a log line, an error message, or `Debug` output.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ca_api::CaApiError;

pub const TOKEN_PREFIX: &str = "conclave-join";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
const FINGERPRINT_HEX: usize = 64;

/// Why a token's text does not parse; the message never echoes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidToken(pub String);

/// A parsed join token. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the root certificate's DER, lower-case hex without colons.
    pub fingerprint: String,
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("fingerprint", &self.fingerprint)
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Normalises a fingerprint as `ca fingerprint` prints it (`AB:CD:..`) to the token's form.
pub fn fingerprint_hex(fp: &str) -> String {
    fp.trim().replace(':', "").to_ascii_lowercase()
}

/// `AB:CD:..` for messages, from either form.
pub fn fingerprint_colons(fp: &str) -> String {
    let hex = fingerprint_hex(fp).to_ascii_uppercase();
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

impl JoinToken {
    /// A new token for the root with this fingerprint (any form), with a random id and secret.
    pub fn generate(fingerprint: &str) -> Self {
        use rand::RngCore;
        let mut id = [0u8; ID_HEX / 2];
        let mut secret = [0u8; SECRET_HEX / 2];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = Self {
            fingerprint: fingerprint_hex(fingerprint),
            id: hex::encode(id),
            secret: hex::encode(secret),
        };
        secret.fill(0);
        token
    }

    /// Parses the text form; the message says what is wrong without echoing the secret.
    pub fn parse(text: &str) -> Result<Self, InvalidToken> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let [prefix, fingerprint, id, secret] = parts.as_slice() else {
            return Err(InvalidToken(format!(
                "a join token looks like {TOKEN_PREFIX}:<fingerprint>:<id>:<secret> (four fields separated by ':')"
            )));
        };
        if *prefix != TOKEN_PREFIX {
            return Err(InvalidToken(format!(
                "a join token starts with '{TOKEN_PREFIX}:'"
            )));
        }
        if !lower_hex(fingerprint, FINGERPRINT_HEX) {
            return Err(InvalidToken(
                "the token's CA fingerprint must be 64 lower-case hex digits".into(),
            ));
        }
        if !lower_hex(id, ID_HEX) {
            return Err(InvalidToken(
                "the token's id must be 16 lower-case hex digits".into(),
            ));
        }
        if !lower_hex(secret, SECRET_HEX) {
            return Err(InvalidToken(
                "the token's secret must be 64 lower-case hex digits".into(),
            ));
        }
        Ok(Self {
            fingerprint: (*fingerprint).to_owned(),
            id: (*id).to_owned(),
            secret: (*secret).to_owned(),
        })
    }

    /// The text form (contains the secret: show it to the admin once, never log it).
    pub fn to_text(&self) -> String {
        format!(
            "{TOKEN_PREFIX}:{}:{}:{}",
            self.fingerprint, self.id, self.secret
        )
    }

    /// What is replicated instead of the secret.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }
}

/// `POST /api/v1/cluster/join-tokens` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinTokenCreated {
    pub token: String,
    pub id: String,
    pub expires_ms: u64,
    /// The root fingerprint the token embeds, `AB:CD:..`.
    pub fingerprint: String,
}

/// `POST /api/v1/join` body.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    /// The joiner's id; the seed picks the next free one when absent.
    #[serde(default)]
    pub node_id: Option<u64>,
    pub api_addr: String,
    pub cluster_addr: String,
    #[serde(default)]
    pub https_addr: Option<String>,
    /// The joiner's certificate request. Only accepted over HTTPS (with the KEK returned).
    #[serde(default)]
    pub csr_pem: Option<String>,
}

/// `POST /api/v1/join` answer. `kek` is only ever present over HTTPS.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinGrant {
    pub node_id: u64,
    pub workspace: Option<String>,
    pub root_pem: String,
    #[serde(default)]
    pub chain_pem: Option<String>,
    #[serde(default)]
    pub crl_pem: Option<String>,
    #[serde(default)]
    pub kek: Option<String>,
}

impl fmt::Debug for JoinGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinGrant")
            .field("node_id", &self.node_id)
            .field("workspace", &self.workspace)
            .field("kek", &self.kek.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/join/complete` body: the same token (proving the caller is the joiner) and
/// the node id it was used for.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinComplete {
    pub token: String,
    pub node_id: u64,
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_hides_its_secret() {
        let fp = "AB:".repeat(31) + "CD";
        let t = JoinToken::generate(&fp);
        assert_eq!(t.fingerprint, "ab".repeat(31) + "cd");
        let text = t.to_text();
        assert!(text.starts_with("conclave-join:abab"));
        assert_eq!(JoinToken::parse(&format!(" {text}\n")).unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
        assert_eq!(t.secret_hash().len(), 64);
        assert_ne!(JoinToken::generate(&fp).secret, t.secret);
        assert_eq!(fingerprint_colons(&t.fingerprint), fp);
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        let token = JoinToken::generate(&"00".repeat(32));
        let good = token.to_text();
        let bad = [
            "",
            "garbage",
            &good.replace("conclave-join", "other-join"),
            &good[..good.len() - 1],
            &good.to_uppercase(),
            &format!("{good}:x"),
        ];
        for b in bad {
            let e = JoinToken::parse(b).unwrap_err();
            assert!(!e.0.contains(&token.secret[..16]), "{e}");
        }
    }
}
