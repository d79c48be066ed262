//! The library's single error type, [`ClientError`], and the parsing of the server's error
//! bodies into it.
//!
//! This module only *describes* failures; it never decides whether a failure is retried (that
//! is `request`'s job) and never prints anything.

use api::error::ErrorBody;
use api::error::code::TOO_MANY_ATTEMPTS;

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
    /// An `https://` server presented a certificate this client does not trust: not issued
    /// under the trusted root (or no root was given), not for the address dialled, expired,
    /// or revoked. Never retried on another node: they all present certificates of the same
    /// CA, and trying them only delays the verdict.
    #[error("certificate not trusted ({server}: {reason})")]
    CertificateNotTrusted { server: String, reason: String },
    /// The server answered with a redirect (a TLS node's plain-HTTP port sends every API
    /// request to its HTTPS port). Redirects are never followed: the request, with its token
    /// or password, has already crossed the network in the clear once, and following would
    /// hide that; the caller is told to use the HTTPS address instead.
    #[error(
        "{server} redirects to {location} (the node serves HTTPS: use its https:// address; \
         whatever this request carried was sent unencrypted)"
    )]
    Redirected { server: String, location: String },
    /// The root certificate given to trust (`--ca-file`) cannot be used.
    #[error("cannot use the CA root: {reason}")]
    InvalidTrustRoot { reason: String },
    /// A 2xx response whose body does not match the API contract.
    #[error("unexpected response: {message}")]
    Decode { message: String },
    /// The call needs a bearer token and the client has none.
    #[error("not logged in")]
    NotLoggedIn,
    /// HTTP 429 `too_many_attempts`: logins for this username are throttled (docs/api.md,
    /// "Login throttling"). `retry_after_secs` is the server's `Retry-After` header.
    #[error("too_many_attempts: {message}")]
    Throttled {
        message: String,
        retry_after_secs: Option<u64>,
    },
}

impl ClientError {
    /// The API error code (`channel_not_found`, `unavailable`, `http_502`, ...), for `Api` errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::Throttled { .. } => Some(TOO_MANY_ATTEMPTS),
            _ => None,
        }
    }

    /// The HTTP status, for `Api` and `Throttled` errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Throttled { .. } => Some(429),
            _ => None,
        }
    }

    /// How long the server asked to wait before the next attempt (`Throttled` only).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Throttled {
                retry_after_secs: Some(secs),
                ..
            } => Some(std::time::Duration::from_secs(*secs)),
            _ => None,
        }
    }

    /// True for the one server answer the API documents as "nothing was written, try again".
    pub(crate) fn is_unavailable(&self) -> bool {
        use api::error::code;
        // Each of these promises that nothing was written, and another node may answer.
        matches!(self, ClientError::Api { status: 503, code: c, .. }
            if c == code::UNAVAILABLE || c == code::DISK_FULL || c == code::STORAGE_UNAVAILABLE)
    }
}

/// How a WebSocket connection ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code of the server's close frame; `None` when the connection ended without
    /// one (reset, EOF, a read timeout on our side).
    pub code: Option<u16>,
    /// The close frame's reason, or a description of how the connection ended.
    pub reason: String,
}

impl CloseInfo {
    /// 4001 (not authenticated), 4003 (account disabled), 4011 (session expired or ended) or
    /// 4012 (password change required): reconnecting with the same token cannot help; log in
    /// again.
    pub fn is_auth_loss(&self) -> bool {
        matches!(self.code, Some(4001 | 4003 | 4011 | 4012))
    }
}

impl std::fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.reason.is_empty()) {
            (Some(code), true) => write!(f, "close {code}"),
            (Some(code), false) => write!(f, "close {code} ({})", self.reason),
            (None, true) => f.write_str("connection lost"),
            (None, false) => write!(f, "connection lost ({})", self.reason),
        }
    }
}

/// Everything that can go wrong on a WebSocket connection or session (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A server address that cannot be turned into a `ws://` URL.
    #[error("invalid server address '{url}': {reason}")]
    InvalidServer { url: String, reason: String },
    /// A `wss://` server presented a certificate this client does not trust (see
    /// [`ClientError::CertificateNotTrusted`]).
    #[error("certificate not trusted ({url}: {reason})")]
    CertificateNotTrusted { url: String, reason: String },
    /// The TCP connection or the upgrade handshake failed without an HTTP answer.
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server answered the upgrade with an HTTP error (e.g. 403 `forbidden_origin`).
    #[error("{url} refused the WebSocket upgrade with HTTP {status}: {code}: {message}")]
    Rejected {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The connection ended (see [`CloseInfo::code`]).
    #[error("{0}")]
    Closed(CloseInfo),
    /// The server closed with 4001 or 4003: the token is not (or no longer) accepted. Terminal
    /// for a session: log in again.
    #[error("authentication lost: {0}")]
    AuthLost(CloseInfo),
    /// Nothing arrived within the time the caller allowed.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(std::time::Duration),
    /// A send was refused with `nack` (any code but `unavailable`, which is retried).
    #[error("{code}: {message}")]
    Nacked { code: String, message: String },
    /// The server sent something the protocol does not allow at this point.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Sending or receiving failed below the protocol (I/O error on an open socket).
    #[error("transport error: {0}")]
    Transport(String),
    /// No node could be connected to before the deadline.
    #[error("cannot reach the cluster (tried {}): {last_error}", .tried.join(", "))]
    Unreachable {
        tried: Vec<String>,
        last_error: String,
    },
    /// The session has no token to authenticate with.
    #[error("not logged in")]
    NotLoggedIn,
    /// The session ended (closed by the caller, or after a terminal error) before this could
    /// complete.
    #[error("the session has ended")]
    SessionEnded,
}

impl WsError {
    /// The close code, for `Closed` and `AuthLost`.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            WsError::Closed(info) | WsError::AuthLost(info) => info.code,
            _ => None,
        }
    }
}

/// How much of a non-JSON error body is kept in the message: enough to recognise a proxy's
/// error page, not so much that one line of CLI output becomes a screenful of HTML.
const MAX_RAW_BODY_CHARS: usize = 200;

/// Turns a non-2xx response into a `ClientError`: `Throttled` for a 429 `too_many_attempts`
/// (carrying the `Retry-After` seconds), `Api` for everything else.
pub(crate) fn api_error_from_reply(
    status: u16,
    body: &[u8],
    retry_after_secs: Option<u64>,
) -> ClientError {
    match api_error_from_body(status, body) {
        ClientError::Api { code, message, .. } if status == 429 && code == TOO_MANY_ATTEMPTS => {
            ClientError::Throttled {
                message,
                retry_after_secs,
            }
        }
        other => other,
    }
}

/// Turns a non-2xx response into `ClientError::Api`.
///
/// Bodies that are not the documented `{"error":{"code","message"}}` shape still produce an
/// `Api` error (code `http_<status>`) because the status alone is meaningful to callers, e.g.
/// a 502 from something standing between the client and the node.
pub(crate) fn api_error_from_body(status: u16, body: &[u8]) -> ClientError {
    if let Ok(envelope) = serde_json::from_slice::<ErrorBody>(body) {
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
    fn throttled_login_keeps_retry_after() {
        let body = br#"{"error":{"code":"too_many_attempts","message":"try again in 4 s"}}"#;
        let err = api_error_from_reply(429, body, Some(4));
        assert_eq!(err.code(), Some("too_many_attempts"));
        assert_eq!(err.status(), Some(429));
        assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(4)));
        assert_eq!(err.to_string(), "too_many_attempts: try again in 4 s");
        // Any other 429 (a proxy's) stays a plain Api error.
        let err = api_error_from_reply(429, b"slow down", Some(1));
        assert_eq!(err.code(), Some("http_429"));
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
