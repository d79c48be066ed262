//! The error body of every failed REST call, `{"error":{"code":"...","message":"..."}}`, and
//! the codes clients act on (docs/api.md lists them all).
//!
//! The server decides which status and code an error gets (`web`); this module only says how
//! the body looks. Must never grow fields a client would need to understand an error: the code
//! is the contract, the message is for people.

use serde::{Deserialize, Serialize};

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    /// One line for people. Missing from some proxies' bodies: empty then.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// Codes a client acts on rather than only shows.
pub mod code {
    /// 503: nothing was written; retrying (on any node) is safe.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 503: the answering node (or a majority of voters) is below its free-space watermark;
    /// nothing was written. Another node may take the write; retrying is safe.
    pub const DISK_FULL: &str = "disk_full";
    /// 503: the answering node's storage failed and it is waiting to restart from what is on
    /// disk; nothing was written. Another node may take the request.
    pub const STORAGE_UNAVAILABLE: &str = "storage_unavailable";
    /// 429 on login: wait for `Retry-After`.
    pub const TOO_MANY_ATTEMPTS: &str = "too_many_attempts";
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_documented_shape() {
        let body = ErrorBody::new("channel_not_found", "channel 'ops' does not exist");
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(
            text,
            r#"{"error":{"code":"channel_not_found","message":"channel 'ops' does not exist"}}"#
        );
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), body);
        let bare: ErrorBody = serde_json::from_str(r#"{"error":{"code":"unavailable"}}"#).unwrap();
        assert_eq!(bare.error.message, "");
    }
}
