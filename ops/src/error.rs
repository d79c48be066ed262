//! The library's single error type, [`ClientError`], and the parsing of the server's error
//! bodies into it.
//!
//! This module only *describes* failures; it never decides whether a failure is retried (that
//! is `failover`'s job) and never prints anything.

use serde::Deserialize;

/// Everything that can go wrong when talking to a Conclave cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-2xx status. `code` comes from the `{"error":{...}}` body;
    /// when the body is not that shape (a proxy, a crash page) it is `http_<status>`.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// No server produced an answer before the failover deadline, or the only server that could
    /// be asked failed in a way that makes a retry unsafe.
    #[error("cannot reach the cluster (tried {}): {last_error}", .servers.join(", "))]
    Unreachable {
        servers: Vec<String>,
        last_error: String,
    },
    /// A server address given to [`crate::Client::new`] is not a usable base URL.
    #[error("invalid server address '{url}': {reason}")]
    InvalidServer { url: String, reason: String },
    /// A 2xx response whose body does not match the API contract.
    #[error("unexpected response: {message}")]
    Decode { message: String },
    /// The call needs a bearer token and the client has none.
    #[error("not logged in")]
    NotLoggedIn,
}

impl ClientError {
    /// The API error code (`channel_not_found`, `unavailable`, `http_502`, ...), for `Api` errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for `Api` errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for the one server answer the API documents as "nothing was written, try again".
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Api { status: 503, code, .. } if code == "unavailable")
    }
}

/// How much of a non-JSON error body is kept in the message: enough to recognise a proxy's
/// error page, not so much that one line of CLI output becomes a screenful of HTML.
const MAX_RAW_BODY_CHARS: usize = 200;

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// Turns a non-2xx response into `ClientError::Api`.
///
/// Bodies that are not the documented `{"error":{"code","message"}}` shape still produce an
/// `Api` error (code `http_<status>`) because the status alone is meaningful to callers, e.g.
/// a 502 from something standing between the client and the node.
pub(crate) fn api_error_from_body(status: u16, body: &[u8]) -> ClientError {
    if let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body) {
        return ClientError::Api {
            status,
            code: envelope.error.code,
            message: envelope.error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no error body")
            .to_owned()
    } else {
        // Collapse newlines so the message stays on one line wherever it is printed.
        let one_line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut truncated: String = one_line.chars().take(MAX_RAW_BODY_CHARS).collect();
        if one_line.chars().count() > MAX_RAW_BODY_CHARS {
            truncated.push_str("...");
        }
        truncated
    };
    ClientError::Api {
        status,
        code: format!("http_{status}"),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_error_body() {
        let body = br#"{"error": {"code": "channel_not_found", "message": "channel 'ops' does not exist"}}"#;
        let err = api_error_from_body(404, body);
        assert_eq!(
            err,
            ClientError::Api {
                status: 404,
                code: "channel_not_found".into(),
                message: "channel 'ops' does not exist".into(),
            }
        );
        assert_eq!(err.code(), Some("channel_not_found"));
        assert_eq!(err.status(), Some(404));
        assert_eq!(
            err.to_string(),
            "channel_not_found: channel 'ops' does not exist"
        );
    }

    #[test]
    fn tolerates_extra_fields_and_missing_message() {
        let body = br#"{"error":{"code":"unavailable","retry_after_ms":50},"node_id":2}"#;
        let err = api_error_from_body(503, body);
        assert_eq!(err.code(), Some("unavailable"));
        assert!(err.is_unavailable());
    }

    #[test]
    fn non_json_body_becomes_http_status_code() {
        let err = api_error_from_body(502, b"<html>\n<b>Bad Gateway</b>\n</html>\n");
        assert_eq!(
            err,
            ClientError::Api {
                status: 502,
                code: "http_502".into(),
                message: "<html> <b>Bad Gateway</b> </html>".into(),
            }
        );
        assert!(!err.is_unavailable());
    }

    #[test]
    fn empty_body_uses_reason_phrase() {
        let err = api_error_from_body(503, b"");
        assert_eq!(err.code(), Some("http_503"));
        assert_eq!(err.to_string(), "http_503: Service Unavailable");
        // Only the documented code promises that nothing was written.
        assert!(!err.is_unavailable());
    }

    #[test]
    fn long_body_is_truncated() {
        let body = "x".repeat(1000);
        let ClientError::Api { message, .. } = api_error_from_body(500, body.as_bytes()) else {
            panic!("expected Api error");
        };
        assert_eq!(message.chars().count(), MAX_RAW_BODY_CHARS + 3);
    }

    #[test]
    fn unreachable_lists_servers() {
        let err = ClientError::Unreachable {
            servers: vec!["http://a:1".into(), "http://b:2".into()],
            last_error: "connection refused".into(),
        };
        assert_eq!(
            err.to_string(),
            "cannot reach the cluster (tried http://a:1, http://b:2): connection refused"
        );
        assert_eq!(err.code(), None);
        assert_eq!(err.status(), None);
    }
}
