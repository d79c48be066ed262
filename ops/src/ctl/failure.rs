//! Exit codes of `conclavectl` and the single stderr line that explains a failure.
//!
//! Every way the program can end unsuccessfully is turned into a [`Failure`] here; no other
//! module chooses exit codes or writes error lines. It must never print a Rust debug dump.

use std::io::Write as _;

use ops::{ClientError, WsError};

/// Success.
pub(crate) const EXIT_OK: u8 = 0;
/// The server refused the request (any API error), or a local operation failed.
pub(crate) const EXIT_REFUSED: u8 = 1;
/// Usage error (also what clap uses for a bad command line).
pub(crate) const EXIT_USAGE: u8 = 2;
/// No server could be reached.
pub(crate) const EXIT_UNREACHABLE: u8 = 3;
/// `status` found the cluster degraded.
pub(crate) const EXIT_DEGRADED: u8 = 4;
/// Not logged in, token rejected, or token file unreadable.
pub(crate) const EXIT_NOT_LOGGED_IN: u8 = 5;

/// Why the program stops: an exit code and at most one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: u8,
    pub line: Option<String>,
}

impl Failure {
    fn with_line(code: u8, message: impl std::fmt::Display) -> Failure {
        Failure {
            code,
            line: Some(format!("conclavectl: error: {message}")),
        }
    }

    pub(crate) fn usage(message: impl std::fmt::Display) -> Failure {
        Failure::with_line(EXIT_USAGE, message)
    }

    pub(crate) fn local(message: impl std::fmt::Display) -> Failure {
        Failure::with_line(EXIT_REFUSED, message)
    }

    /// The cluster did not answer in time (exit 3), with a line saying what is missing.
    pub(crate) fn unreachable(message: impl std::fmt::Display) -> Failure {
        Failure::with_line(EXIT_UNREACHABLE, message)
    }

    pub(crate) fn not_logged_in(reason: impl std::fmt::Display) -> Failure {
        Failure::with_line(
            EXIT_NOT_LOGGED_IN,
            format_args!("not logged in ({reason}); run `conclavectl login`"),
        )
    }

    /// A server whose certificate does not chain to the root we trust: the remedy is always
    /// the same, so the line says it.
    pub(crate) fn untrusted(code: u8, server: &str, reason: &str) -> Failure {
        Failure::with_line(
            code,
            format_args!(
                "certificate not trusted ({server}: {reason}): pass --ca-file with the cluster \
                 root (conclave init printed its fingerprint; `conclavectl ca root` fetches it \
                 over the plain port)"
            ),
        )
    }

    /// Stdout was closed by the reader (`conclavectl tail g | head`): the user got what they
    /// wanted, so stop quietly instead of reporting an error.
    pub(crate) fn stdout_closed() -> Failure {
        Failure {
            code: EXIT_OK,
            line: None,
        }
    }

    /// Writes the line (if any) to stderr and returns the exit code.
    pub(crate) fn report(&self) -> u8 {
        if let Some(line) = &self.line {
            // A failure to write to stderr cannot be reported anywhere; the exit code remains.
            let _ = writeln!(std::io::stderr().lock(), "{}", one_line(line));
        }
        self.code
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Failure {
        let code = exit_code(&err);
        match &err {
            ClientError::NotLoggedIn => Failure::not_logged_in("no session token"),
            ClientError::CertificateNotTrusted { server, reason } => {
                Failure::untrusted(code, server, reason)
            }
            // A rejected token: "<code>: <message>" plus the remedy.
            ClientError::Api { .. } if code == EXIT_NOT_LOGGED_IN => {
                Failure::with_line(code, format_args!("{err}; run `conclavectl login`"))
            }
            _ => Failure::with_line(code, &err),
        }
    }
}

impl From<WsError> for Failure {
    fn from(err: WsError) -> Failure {
        match &err {
            WsError::AuthLost(info) => {
                Failure::not_logged_in(format_args!("the server ended the session: {info}"))
            }
            WsError::NotLoggedIn => Failure::not_logged_in("no session token"),
            WsError::CertificateNotTrusted { url, reason } => {
                Failure::untrusted(EXIT_UNREACHABLE, url, reason)
            }
            WsError::Unreachable { .. } | WsError::Connect { .. } | WsError::Timeout(_) => {
                Failure::with_line(EXIT_UNREACHABLE, &err)
            }
            WsError::InvalidServer { .. } => Failure::with_line(EXIT_USAGE, &err),
            _ => Failure::with_line(EXIT_REFUSED, &err),
        }
    }
}

/// The exit code for a library error.
pub(crate) fn exit_code(err: &ClientError) -> u8 {
    match err {
        // A rejected token means the saved session is over: same remedy as having none.
        ClientError::Api {
            status: 401, code, ..
        } if code == "unauthorized" => EXIT_NOT_LOGGED_IN,
        ClientError::Api { .. } | ClientError::Decode { .. } | ClientError::Throttled { .. } => {
            EXIT_REFUSED
        }
        // Nothing trustworthy answered: as far as this client can tell the cluster is not there.
        ClientError::Unreachable { .. } | ClientError::CertificateNotTrusted { .. } => {
            EXIT_UNREACHABLE
        }
        // A plain-HTTP address for a node that serves HTTPS: the command line needs fixing.
        ClientError::InvalidServer { .. }
        | ClientError::InvalidTrustRoot { .. }
        | ClientError::Redirected { .. } => EXIT_USAGE,
        ClientError::NotLoggedIn => EXIT_NOT_LOGGED_IN,
    }
}

/// Error messages come partly from servers; control characters (newlines, terminal escapes)
/// are replaced so the promise of exactly one plain line holds.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> ClientError {
        ClientError::Api {
            status,
            code: code.into(),
            message: "msg".into(),
        }
    }

    #[test]
    fn exit_code_mapping() {
        assert_eq!(exit_code(&api(404, "channel_not_found")), EXIT_REFUSED);
        assert_eq!(exit_code(&api(403, "forbidden")), EXIT_REFUSED);
        assert_eq!(exit_code(&api(401, "invalid_credentials")), EXIT_REFUSED);
        assert_eq!(exit_code(&api(503, "unavailable")), EXIT_REFUSED);
        assert_eq!(exit_code(&api(401, "unauthorized")), EXIT_NOT_LOGGED_IN);
        assert_eq!(
            exit_code(&ClientError::Unreachable {
                servers: vec![],
                last_error: String::new()
            }),
            EXIT_UNREACHABLE
        );
        assert_eq!(
            exit_code(&ClientError::InvalidServer {
                url: "x".into(),
                reason: "y".into()
            }),
            EXIT_USAGE
        );
        assert_eq!(
            exit_code(&ClientError::Decode {
                message: String::new()
            }),
            EXIT_REFUSED
        );
        assert_eq!(exit_code(&ClientError::NotLoggedIn), EXIT_NOT_LOGGED_IN);
    }

    #[test]
    fn refused_line_format() {
        let f = Failure::from(api(404, "channel_not_found"));
        assert_eq!(f.code, EXIT_REFUSED);
        assert_eq!(
            f.line.as_deref(),
            Some("conclavectl: error: channel_not_found: msg")
        );
    }

    #[test]
    fn unreachable_line_format() {
        let f = Failure::from(ClientError::Unreachable {
            servers: vec!["http://a:1".into(), "http://b:2".into()],
            last_error: "http://b:2: connect failed: refused".into(),
        });
        assert_eq!(f.code, EXIT_UNREACHABLE);
        assert_eq!(
            f.line.as_deref(),
            Some(
                "conclavectl: error: cannot reach the cluster (tried http://a:1, http://b:2): \
                 http://b:2: connect failed: refused"
            )
        );
    }

    #[test]
    fn not_logged_in_mentions_login() {
        for f in [
            Failure::from(ClientError::NotLoggedIn),
            Failure::from(api(401, "unauthorized")),
            Failure::not_logged_in("no token file"),
        ] {
            assert_eq!(f.code, EXIT_NOT_LOGGED_IN);
            assert!(
                f.line
                    .unwrap_or_default()
                    .contains("run `conclavectl login`")
            );
        }
    }

    #[test]
    fn websocket_failures() {
        let f = Failure::from(WsError::AuthLost(ops::CloseInfo {
            code: Some(4003),
            reason: "account disabled".into(),
        }));
        assert_eq!(f.code, EXIT_NOT_LOGGED_IN);
        assert!(
            f.line
                .unwrap_or_default()
                .contains("close 4003 (account disabled)")
        );
        let f = Failure::from(WsError::Unreachable {
            tried: vec!["http://a:1".into()],
            last_error: "refused".into(),
        });
        assert_eq!(f.code, EXIT_UNREACHABLE);
        let throttled = ClientError::Throttled {
            message: "try again in 4 s".into(),
            retry_after_secs: Some(4),
        };
        assert_eq!(exit_code(&throttled), EXIT_REFUSED);
        assert_eq!(
            Failure::from(throttled).line.as_deref(),
            Some("conclavectl: error: too_many_attempts: try again in 4 s")
        );
    }

    #[test]
    fn lines_are_single_line() {
        assert_eq!(one_line("a\nb\x1b[31mc"), "a b [31mc");
    }
}
