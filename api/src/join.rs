//! The join token's text format and the wire shapes of token-based join
//! (`POST /api/v1/cluster/join-tokens`, `POST /api/v1/join`, `POST /api/v1/join/complete`).
//!
//! Token format (what `conclavectl node join-token` prints):
//! `conclave-join:<root fingerprint>:<id>:<secret>`: the SHA-256 of the cluster root
//! certificate's DER as 64 lower-case hex digits without colons, a 16-hex-digit id, and a
//! 64-hex-digit secret (32 random bytes). Only the secret's SHA-256 is replicated; the joiner
//! checks the seed's root against the fingerprint before it trusts or sends anything.
//! Generating a token and hashing its secret need randomness and a hash, so they live with the
//! server (`web`); this module only writes and reads the text. Must never put a secret (token
//! secret, KEK) into an error message or `Debug` output.

use std::fmt;

use serde::{Deserialize, Serialize};

pub const TOKEN_PREFIX: &str = "conclave-join";
/// Hex digits of the token's id (8 random bytes).
pub const ID_HEX: usize = 16;
/// Hex digits of the token's secret (32 random bytes).
pub const SECRET_HEX: usize = 64;
const FINGERPRINT_HEX: usize = 64;

/// Why a token's text does not parse; the message never echoes the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidToken(pub String);

impl fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidToken {}

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

impl JoinToken {
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
}

/// `POST /api/v1/cluster/join-tokens` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// How long the token is valid; the server's default when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// `POST /api/v1/cluster/join-tokens` answer. `Debug` hides the token text (it holds the
/// secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinTokenCreated {
    /// `conclave-join:<root fingerprint hex>:<id>:<secret>`.
    pub token: String,
    pub id: String,
    /// Unix milliseconds.
    pub expires_ms: u64,
    /// The root fingerprint the token embeds, `AB:CD:...`.
    pub fingerprint: String,
}

impl fmt::Debug for JoinTokenCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenCreated")
            .field("id", &self.id)
            .field("expires_ms", &self.expires_ms)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/join` body.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinGrant {
    pub node_id: u64,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub workspace: Option<String>,
    pub root_pem: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub chain_pem: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub crl_pem: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JoinComplete {
    pub token: String,
    pub node_id: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken {
            fingerprint: "ab".repeat(32),
            id: "01".repeat(8),
            secret: "5e".repeat(32),
        }
    }

    #[test]
    fn token_round_trips_and_hides_its_secret() {
        let t = token();
        let text = t.to_text();
        assert!(text.starts_with("conclave-join:abab"));
        assert_eq!(JoinToken::parse(&format!(" {text}\n")).unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        let token = token();
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

    #[test]
    fn bodies_round_trip() {
        let created: CreateJoinToken = serde_json::from_str(r#"{"ttl_secs":600}"#).unwrap();
        assert_eq!(created.ttl_secs, Some(600));
        assert_eq!(
            serde_json::to_string(&created).unwrap(),
            r#"{"ttl_secs":600}"#
        );
        assert!(
            serde_json::from_str::<JoinComplete>(r#"{"token":"t","node_id":4,"x":1}"#).is_err()
        );
        let grant: JoinGrant =
            serde_json::from_str(r#"{"node_id":4,"workspace":null,"root_pem":"R"}"#).unwrap();
        assert_eq!((grant.node_id, grant.kek), (4, None));
    }
}
