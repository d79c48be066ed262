//! `conclave healthcheck`: the container image's health check (a `FROM scratch` image has no
//! curl). Owns one question: does this node's own `/readyz` say ready? It asks the node's plain
//! `api_addr`, which serves `/readyz` with or without TLS, so no certificate is involved.
//! Must never start a node, write anything, or wait longer than its timeout: Docker runs it
//! every few seconds and kills it if it hangs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::Config;

/// How long one probe may take in all (connect and answer). Docker's own timeout is longer, so
/// a hung node shows as "unhealthy" with our message rather than as a killed check.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Why the node is not healthy; printed as the check's one line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Nothing answered in time, or the connection failed.
    #[error("{url}: no answer: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The node answered but is not ready (no leader, catching up, draining).
    #[error("{url}: not ready (HTTP {status}): {body}")]
    NotReady {
        url: String,
        status: u16,
        body: String,
    },
}

/// The address to probe: the listen address itself, except that an unspecified one (0.0.0.0,
/// [::]) cannot be dialled, so it becomes loopback of the same family (the node listens there
/// too).
pub fn probe_addr(api_addr: SocketAddr) -> SocketAddr {
    let ip = match api_addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, api_addr.port())
}

/// One GET of `/readyz` on this node's plain port; Ok iff it answered 200.
pub async fn check(cfg: &Config) -> Result<(), HealthError> {
    let url = format!("http://{}/readyz", probe_addr(cfg.api_addr));
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        // The plain port redirects everything but the probes to HTTPS; /readyz is never
        // redirected, and following one would hide a misconfiguration.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(HealthError::Client)?;
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|source| HealthError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The body names the reason (`{"ready":false,"reason":"no leader",...}`); a body that does
    // not arrive in time is not worth failing differently for.
    let body = response.text().await.unwrap_or_default();
    Err(HealthError::NotReady {
        url,
        status: status.as_u16(),
        body: body.trim().chars().take(200).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_probed_on_loopback() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("10.53.0.11:8080", "10.53.0.11:8080"),
            ("127.0.0.2:80", "127.0.0.2:80"),
        ];
        for (listen, probe) in cases {
            let listen: SocketAddr = listen.parse().unwrap();
            assert_eq!(probe_addr(listen).to_string(), probe, "listen {listen}");
        }
    }
}
