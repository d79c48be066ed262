//! The list of server base URLs a client may talk to: parsing/normalizing the addresses the
//! user gave, building endpoint URLs from them, and remembering which server is "current".
//!
//! This module never performs network I/O and never decides *when* to move to another server;
//! it only knows *which* server is next (round-robin order).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use reqwest::Url;

use crate::error::ClientError;

/// Normalizes one user-supplied server address into a base URL.
///
/// `127.0.0.1:8080` becomes `http://127.0.0.1:8080`; a trailing slash is dropped so that
/// `servers()` shows the same text the user would type. `http` and `https` are accepted; a bare
/// address means `http` (the plain port), so TLS is always asked for explicitly.
pub(crate) fn normalize_server(raw: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidServer {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty address"));
    }
    // Without a scheme, "localhost:8080" would parse as scheme "localhost", so decide by "://".
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("only http:// and https:// servers are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("missing host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "a server address must not have a query or fragment",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the address are not supported"));
    }
    Ok(url)
}

/// The display form of a base URL: no trailing slash.
pub(crate) fn display_server(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// Builds `base` + path segments; segments are percent-encoded, so a channel name containing
/// `/` or `?` cannot escape into another route (the server will refuse the name instead).
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    // `path_segments_mut` only fails for cannot-be-a-base URLs, which `normalize_server` rules
    // out (http URLs with a host always have a base); falling back to `base` keeps this total.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

/// The servers of one client (and all its clones) and the index of the current one.
///
/// Shared between clones on purpose: when one clone discovers that a node is down, the others
/// start at the server that worked instead of rediscovering the failure.
#[derive(Debug)]
pub(crate) struct ServerRing {
    urls: Vec<Url>,
    names: Vec<String>,
    current: AtomicUsize,
    /// Failed attempts the failover loop retried on another server, by kind (see
    /// [`Failovers`]); shared by every clone, like `current`.
    retried_transport: AtomicU64,
    retried_unavailable: AtomicU64,
    /// The last few retried errors, oldest first (at most `RECENT_RETRIES`).
    recent: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// How many retried errors a client keeps for [`Failovers::recent`].
const RECENT_RETRIES: usize = 32;

/// Attempts a client retried on another server instead of returning an error (see
/// `Client::failovers`): what a caller never saw, counted so load tests can say exactly which
/// errors the cluster produced while the caller only noticed a slower answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failovers {
    /// Transport failures: connection refused or reset, timeouts, TLS handshakes cut short.
    pub transport: u64,
    /// HTTP 503 answers (`unavailable`: nothing was written; or a 503 from something else in
    /// front of the node, retried for idempotent requests).
    pub unavailable: u64,
    /// The last retried errors (at most 32), oldest first, as `ClientError` displays them.
    pub recent: Vec<String>,
}

impl ServerRing {
    pub(crate) fn new(servers: &[String]) -> Result<ServerRing, ClientError> {
        if servers.is_empty() {
            return Err(ClientError::InvalidServer {
                url: String::new(),
                reason: "no servers given".to_owned(),
            });
        }
        let urls = servers
            .iter()
            .map(|s| normalize_server(s))
            .collect::<Result<Vec<_>, _>>()?;
        let names = urls.iter().map(display_server).collect();
        Ok(ServerRing {
            urls,
            names,
            current: AtomicUsize::new(0),
            retried_transport: AtomicU64::new(0),
            retried_unavailable: AtomicU64::new(0),
            recent: std::sync::Mutex::default(),
        })
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.urls.len()
    }

    pub(crate) fn url(&self, idx: usize) -> &Url {
        &self.urls[idx % self.urls.len()]
    }

    pub(crate) fn name(&self, idx: usize) -> &str {
        &self.names[idx % self.names.len()]
    }

    /// Records that `idx` answered.
    pub(crate) fn mark_good(&self, idx: usize) {
        self.current.store(idx % self.urls.len(), Ordering::Relaxed);
    }

    /// Counts one failed attempt that the failover loop is about to retry.
    pub(crate) fn count_retry(&self, transport: bool, error: &ClientError) {
        let counter = if transport {
            &self.retried_transport
        } else {
            &self.retried_unavailable
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // Held only to push or copy a string; a poisoned lock still holds valid strings.
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_RETRIES {
            recent.pop_front();
        }
        recent.push_back(error.to_string());
    }

    pub(crate) fn failovers(&self) -> Failovers {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        Failovers {
            transport: self.retried_transport.load(Ordering::Relaxed),
            unavailable: self.retried_unavailable.load(Ordering::Relaxed),
            recent: recent.iter().cloned().collect(),
        }
    }

    /// Moves past `idx` after it failed. Only moves if `idx` is still current, so two
    /// concurrent calls that both saw server 0 fail advance to 1, not to 2.
    pub(crate) fn advance_past(&self, idx: usize) {
        let n = self.urls.len();
        let idx = idx % n;
        let _ =
            self.current
                .compare_exchange(idx, (idx + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<String, ClientError> {
        normalize_server(s).map(|u| display_server(&u))
    }

    #[test]
    fn bare_host_port_gets_http() {
        assert_eq!(norm("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(norm("localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(norm("  node1  ").unwrap(), "http://node1");
        assert_eq!(norm("[::1]:8080").unwrap(), "http://[::1]:8080");
    }

    #[test]
    fn explicit_http_is_kept_and_trailing_slash_dropped() {
        assert_eq!(
            norm("http://10.0.0.4:8080/").unwrap(),
            "http://10.0.0.4:8080"
        );
        assert_eq!(
            norm("http://gw.lan/conclave/").unwrap(),
            "http://gw.lan/conclave"
        );
    }

    #[test]
    fn rejects_unusable_addresses() {
        for bad in [
            "",
            "   ",
            "ftp://x",
            "wss://x:1",
            "http://",
            "http://x:99999",
            "http://x/?a=b",
            "http://u:p@x",
            "not a url:::",
        ] {
            assert!(
                matches!(
                    normalize_server(bad),
                    Err(ClientError::InvalidServer { .. })
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn https_is_kept() {
        assert_eq!(
            norm("https://127.0.0.2:8443/").unwrap(),
            "https://127.0.0.2:8443"
        );
        assert_eq!(
            norm("https://chat.corp.lan").unwrap(),
            "https://chat.corp.lan"
        );
    }

    #[test]
    fn endpoint_encodes_segments_and_keeps_prefix() {
        let base = normalize_server("127.0.0.1:8080").unwrap();
        assert_eq!(
            endpoint(&base, &["api", "v1", "channels", "a/b?c"]).as_str(),
            "http://127.0.0.1:8080/api/v1/channels/a%2Fb%3Fc"
        );
        let prefixed = normalize_server("http://gw/conclave/").unwrap();
        assert_eq!(
            endpoint(&prefixed, &["healthz"]).as_str(),
            "http://gw/conclave/healthz"
        );
    }

    #[test]
    fn ring_round_robin() {
        let ring = ServerRing::new(&["a:1".into(), "b:2".into(), "c:3".into()]).unwrap();
        assert_eq!(ring.current(), 0);
        ring.advance_past(0);
        assert_eq!(ring.current(), 1);
        // A stale failure report for server 0 must not skip server 1.
        ring.advance_past(0);
        assert_eq!(ring.current(), 1);
        ring.advance_past(1);
        ring.advance_past(2);
        assert_eq!(ring.current(), 0);
        ring.mark_good(2);
        assert_eq!(ring.name(ring.current()), "http://c:3");
    }

    #[test]
    fn ring_rejects_empty_list() {
        assert!(matches!(
            ServerRing::new(&[]),
            Err(ClientError::InvalidServer { .. })
        ));
    }
}
