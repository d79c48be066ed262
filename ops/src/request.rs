//! Sending one API request to the cluster: a single HTTP attempt, and the loop that moves
//! between servers when an attempt fails in a way that is safe to retry.
//!
//! # Failover semantics
//!
//! * A request goes to the current server (the one the last successful request went to).
//! * On a transport failure (connection refused or reset, timeout) or an HTTP 503 whose code is
//!   `unavailable`, the client moves to the next server in round-robin order and tries again,
//!   pausing with jittered, capped exponential backoff (25 ms doubling up to 500 ms, see
//!   `backoff`), until the failover deadline (default 10 s, measured from the start of the
//!   call) would be passed. It then returns the last 503 `Api` error if that was the last
//!   failure, `ClientError::Unreachable` otherwise. The first attempt always gets the full
//!   per-request timeout; later attempts get at most what is left of the deadline.
//! * Whether a *transport* failure may be retried depends on the request ([`Retry`]):
//!   - [`Retry::Always`]: reads (GET), `post_message`/`post_reply` (the server deduplicates
//!     by `(author, client_msg_id)`, so a retry returns the original message with
//!     `duplicate = true`), `login` (a retry only creates another session), and the writes
//!     whose repetition changes nothing: message edits and deletes, reaction and pin PUT /
//!     DELETE, read markers (they never move back), channel patches, `open_dm` (asking again
//!     returns the same channel) and `update_me`.
//!   - [`Retry::IfNotSent`]: every other write. Retried only when the connection was never
//!     established (nothing can have reached the server). A reset or timeout after the request
//!     was sent is returned at once as `Unreachable`, because the write may have been applied.
//! * An HTTP 503 `unavailable` is retried for every request: the API guarantees that a failed
//!   request wrote nothing. A 503 with another body (e.g. from a proxy) is retried only for
//!   [`Retry::Always`] requests.
//! * Every other non-2xx answer (4xx, 500) is returned immediately and never retried: asking
//!   another node would get the same verdict. A 3xx (a TLS node's plain port) is
//!   `ClientError::Redirected`, never followed.
//!
//! * A server certificate this client does not trust (`https://` servers) ends the call at
//!   once with `ClientError::CertificateNotTrusted`: every node's certificate comes from the
//!   same CA, so asking another node would only delay the same verdict.
//!
//! This module must never interpret response bodies beyond error envelopes, and never print.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};

use crate::backoff::Backoff;
use crate::error::{ClientError, api_error_from_reply};
use crate::servers::{ServerRing, endpoint};

/// Header carrying the Raft index of a successful write.
pub(crate) const INDEX_HEADER: &str = "x-conclave-index";
/// Header asking a read to wait until the node has applied this index.
pub(crate) const MIN_INDEX_HEADER: &str = "x-conclave-min-index";

/// A retry attempt with less time than this left is not worth starting: it would almost
/// certainly time out and hide the real error behind "timed out".
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);

/// When a transport failure may be retried on another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Retrying cannot cause a second effect.
    Always,
    /// Retry only if the request certainly never reached a server.
    IfNotSent,
}

/// One API request, kept so it can be re-sent to another server.
#[derive(Debug)]
pub(crate) struct ApiRequest<'a> {
    pub method: Method,
    pub path: &'a [&'a str],
    pub query: Vec<(&'static str, String)>,
    pub headers: Vec<(&'static str, String)>,
    pub bearer: Option<&'a str>,
    pub json_body: Option<Vec<u8>>,
    /// The `Content-Type` of `json_body` (`application/json` unless a route takes raw bytes).
    pub content_type: &'static str,
    pub retry: Retry,
    /// Hand a 2xx body to the caller unread ([`Reply::stream`]) instead of reading it whole:
    /// for bodies of any size (`GET /api/v1/admin/backup`). The timeout then bounds only the
    /// wait for the response head; the caller bounds the body's reads.
    pub stream: bool,
}

impl<'a> ApiRequest<'a> {
    pub(crate) fn new(method: Method, path: &'a [&'a str], retry: Retry) -> Self {
        ApiRequest {
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            bearer: None,
            json_body: None,
            content_type: "application/json",
            retry,
            stream: false,
        }
    }
}

/// A complete HTTP answer from one server (any status).
#[derive(Debug)]
pub(crate) struct Reply {
    pub server: String,
    pub status: u16,
    pub index: Option<u64>,
    /// The `Retry-After` header in seconds (sent with 429 `too_many_attempts`).
    pub retry_after: Option<u64>,
    /// The `Location` of a 3xx answer.
    pub location: Option<String>,
    pub body: Vec<u8>,
    /// The unread response of a 2xx answer to a streaming request ([`ApiRequest::stream`]);
    /// `body` is then empty.
    pub stream: Option<reqwest::Response>,
}

impl Reply {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error this non-2xx reply stands for.
    pub(crate) fn error(&self) -> ClientError {
        if let (300..=399, Some(location)) = (self.status, &self.location) {
            return ClientError::Redirected {
                server: self.server.clone(),
                location: location.clone(),
            };
        }
        api_error_from_reply(self.status, &self.body, self.retry_after)
    }
}

/// Timing knobs of a client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub request_timeout: Duration,
    pub failover_deadline: Duration,
    pub backoff: Backoff,
}

/// An attempt that produced no HTTP answer.
#[derive(Debug)]
pub(crate) struct TransportFailure {
    /// True when the connection was never established, so the server cannot have seen the
    /// request.
    pub never_sent: bool,
    pub description: String,
    /// Set when the TLS handshake failed on the server's certificate (see `tls`).
    pub untrusted: Option<String>,
}

impl TransportFailure {
    /// The error for a certificate failure, which is final (see `ClientError::
    /// CertificateNotTrusted`): every node presents a certificate of the same CA.
    fn certificate_error(&self, server: &str) -> Option<ClientError> {
        self.untrusted
            .as_ref()
            .map(|reason| ClientError::CertificateNotTrusted {
                server: server.to_owned(),
                reason: reason.clone(),
            })
    }
}

fn describe(err: &reqwest::Error, timeout: Duration) -> TransportFailure {
    if err.is_timeout() {
        return TransportFailure {
            never_sent: false,
            description: format!("timed out after {} ms", timeout.as_millis()),
            untrusted: None,
        };
    }
    // reqwest's own message is "error sending request for url (...)"; the useful part (e.g.
    // "Connection refused (os error 111)") is the innermost cause.
    let mut root: &dyn std::error::Error = err;
    while let Some(source) = root.source() {
        root = source;
    }
    let kind = if err.is_connect() {
        "connect failed"
    } else if err.is_body() || err.is_decode() {
        "response interrupted"
    } else {
        "request failed"
    };
    TransportFailure {
        never_sent: err.is_connect(),
        description: format!("{kind}: {root}"),
        untrusted: crate::tls::certificate_problem(err),
    }
}

/// Sends `req` once to server `idx` and reads the whole answer.
pub(crate) async fn send_once(
    http: &reqwest::Client,
    ring: &ServerRing,
    idx: usize,
    req: &ApiRequest<'_>,
    timeout: Duration,
) -> Result<Reply, TransportFailure> {
    let mut url = endpoint(ring.url(idx), req.path);
    if !req.query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(req.query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    let mut builder = http.request(req.method.clone(), url);
    if !req.stream {
        // reqwest's timeout spans the whole body, which a stream must not be cut by.
        builder = builder.timeout(timeout);
    }
    for (name, value) in &req.headers {
        builder = builder.header(*name, value.as_str());
    }
    if let Some(token) = req.bearer {
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(body) = &req.json_body {
        builder = builder
            .header(CONTENT_TYPE, req.content_type)
            .body(body.clone());
    }
    let response = match tokio::time::timeout(timeout, builder.send()).await {
        Ok(sent) => sent.map_err(|e| describe(&e, timeout))?,
        // Only a streaming request gets here: reqwest's own timeout fires first otherwise.
        Err(_) => {
            return Err(TransportFailure {
                never_sent: false,
                description: format!("timed out after {} ms", timeout.as_millis()),
                untrusted: None,
            });
        }
    };
    let status = response.status().as_u16();
    let index = parse_u64_header(response.headers(), INDEX_HEADER);
    // Only the delay-seconds form: the server never sends an HTTP date here.
    let retry_after = parse_u64_header(response.headers(), RETRY_AFTER);
    let location = response
        .status()
        .is_redirection()
        .then(|| {
            response
                .headers()
                .get(LOCATION)?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .flatten();
    if req.stream && response.status().is_success() {
        return Ok(Reply {
            server: ring.name(idx).to_owned(),
            status,
            index,
            retry_after,
            location,
            body: Vec::new(),
            stream: Some(response),
        });
    }
    let body = response.bytes().await.map_err(|e| describe(&e, timeout))?;
    Ok(Reply {
        server: ring.name(idx).to_owned(),
        status,
        index,
        retry_after,
        location,
        body: body.to_vec(),
        stream: None,
    })
}

fn parse_u64_header(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Sends `req` with failover (see the module doc). Returns only 2xx replies; every other
/// outcome is a `ClientError`.
pub(crate) async fn send_with_failover(
    http: &reqwest::Client,
    ring: &ServerRing,
    timing: Timing,
    req: &ApiRequest<'_>,
) -> Result<Reply, ClientError> {
    let deadline = Instant::now() + timing.failover_deadline;
    let mut tried: Vec<String> = Vec::new();
    let mut retry: u32 = 0;
    loop {
        let idx = ring.current();
        let name = ring.name(idx).to_owned();
        if !tried.contains(&name) {
            tried.push(name.clone());
        }
        let timeout = if retry == 0 {
            timing.request_timeout
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            timing.request_timeout.min(left.max(MIN_ATTEMPT_TIMEOUT))
        };

        let (failure, transport_failure) = match send_once(http, ring, idx, req, timeout).await {
            Ok(reply) if reply.is_success() => {
                ring.mark_good(idx);
                return Ok(reply);
            }
            Ok(reply) => {
                let err = reply.error();
                let retryable =
                    err.is_unavailable() || (req.retry == Retry::Always && reply.status == 503);
                if !retryable {
                    // The node answered and gave a verdict; it is a fine server to keep using.
                    ring.mark_good(idx);
                    return Err(err);
                }
                (err, false)
            }
            Err(transport) => {
                if let Some(err) = transport.certificate_error(&name) {
                    return Err(err);
                }
                if !transport.never_sent && req.retry == Retry::IfNotSent {
                    return Err(ClientError::Unreachable {
                        servers: tried,
                        last_error: format!(
                            "{name}: {} (not retried: the request may have been applied)",
                            transport.description
                        ),
                    });
                }
                (
                    ClientError::Unreachable {
                        servers: tried.clone(),
                        last_error: format!("{name}: {}", transport.description),
                    },
                    true,
                )
            }
        };

        ring.advance_past(idx);
        let delay = timing.backoff.delay(retry, rand::random::<f64>());
        if Instant::now() + delay + MIN_ATTEMPT_TIMEOUT > deadline {
            return Err(failure);
        }
        ring.count_retry(transport_failure, &failure);
        tokio::time::sleep(delay).await;
        retry = retry.saturating_add(1);
    }
}

/// Sends `req` once to the current server, without failover, and returns whatever it answered.
/// For probes (`/healthz`, `/readyz`) whose point is to ask one particular node.
pub(crate) async fn send_to_current(
    http: &reqwest::Client,
    ring: &ServerRing,
    timing: Timing,
    req: &ApiRequest<'_>,
) -> Result<Reply, ClientError> {
    let idx = ring.current();
    send_once(http, ring, idx, req, timing.request_timeout)
        .await
        .map_err(|t| {
            t.certificate_error(ring.name(idx))
                .unwrap_or_else(|| ClientError::Unreachable {
                    servers: vec![ring.name(idx).to_owned()],
                    last_error: format!("{}: {}", ring.name(idx), t.description),
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn index_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_u64_header(&h, INDEX_HEADER), None);
        h.insert(INDEX_HEADER, HeaderValue::from_static("120"));
        assert_eq!(parse_u64_header(&h, INDEX_HEADER), Some(120));
        h.insert(INDEX_HEADER, HeaderValue::from_static("soon"));
        assert_eq!(parse_u64_header(&h, INDEX_HEADER), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 4 "));
        assert_eq!(parse_u64_header(&h, RETRY_AFTER), Some(4));
    }
}
