//! Step 3, `tls`: which nodes serve HTTPS (from `_https._tcp` SRV, else from the first ready
//! node's cluster view) and whether each one's certificate verifies against `--ca-file` for
//! the address dialled, with its days left.
//!
//! Must never send anything secret before the certificate is verified, or skip the step for a
//! cluster that serves HTTPS: without `--ca-file` that is a failure, not a skip.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use futures::future::join_all;
use ops::{Client, ClientError, verify_server_certificate};

use super::super::render::sanitize;
use super::{Node, Plan, READYZ_TIMEOUT, StepResult};

/// Fills in each node's HTTPS address: from `_https._tcp` SRV when the DNS server has it, else
/// from the first ready node's cluster view (`https_addr` per node id, dialled on the address
/// DNS gave out). Nodes without one serve plain HTTP.
pub(super) async fn learn_https(
    plan: &Plan,
    nodes: &mut [Node],
    https_ports: &[(IpAddr, u16)],
) -> Result<(), String> {
    if !https_ports.is_empty() {
        for node in nodes.iter_mut() {
            let ip = node.addr.ip();
            node.https = https_ports
                .iter()
                .find(|(srv_ip, _)| *srv_ip == ip)
                .map(|(_, port)| SocketAddr::new(ip, *port));
        }
        return Ok(());
    }
    let Some(first) = nodes.first() else {
        return Ok(());
    };
    // The plain port redirects the API to HTTPS when the node serves TLS: ask again there,
    // trusting only `--ca-file`. Nothing secret goes to the plain port.
    let budget = plan.timeout.min(READYZ_TIMEOUT);
    let ask = |server: String| async move {
        Client::new_trusting(vec![server], plan.root.clone())?
            .with_request_timeout(budget)
            .with_failover_deadline(budget)
            .cluster()
            .await
    };
    let answer = match ask(first.plain_url()).await {
        Err(ClientError::Redirected { location, .. }) => match https_base(&location) {
            Some(base) => ask(base).await,
            None => {
                return Err(format!(
                    "{} redirects to {} instead of answering",
                    first.label(),
                    sanitize(&location)
                ));
            }
        },
        other => other,
    };
    let view = match answer {
        Ok(view) => view,
        Err(e @ ClientError::CertificateNotTrusted { .. }) => {
            return Err(format!(
                "{} serves HTTPS with a certificate not trusted: {}",
                first.label(),
                sanitize(&untrusted_hint(&e, plan.root.is_some()))
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot read the cluster view from {}: {}",
                first.label(),
                sanitize(&e.to_string())
            ));
        }
    };
    for node in nodes.iter_mut() {
        let advertised = view
            .nodes
            .iter()
            .find(|n| Some(n.id) == node.id)
            .and_then(|n| n.https_addr.as_deref());
        let port = advertised
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok());
        node.https = port.map(|port| SocketAddr::new(node.addr.ip(), port));
    }
    Ok(())
}

/// `https://host:port` of an `https://` redirect target.
fn https_base(location: &str) -> Option<String> {
    let rest = location.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then(|| format!("https://{authority}"))
}

/// The remedy for an untrusted certificate, depending on whether a root was given at all.
fn untrusted_hint(e: &ClientError, have_root: bool) -> String {
    if have_root {
        format!("{e}; is --ca-file this cluster's root?")
    } else {
        format!("{e}; pass --ca-file with the cluster root (`conclavectl ca root` fetches it)")
    }
}

/// Verifies every HTTPS node's certificate against `--ca-file`; `SKIP` when no node serves
/// HTTPS (nothing to verify is said, not passed).
pub(super) async fn tls_step(plan: &Plan, nodes: &[Node], started: Instant) -> StepResult {
    let https: Vec<&Node> = nodes.iter().filter(|n| n.https.is_some()).collect();
    if https.is_empty() {
        return StepResult::skip("tls", "cluster serves plain HTTP");
    }
    let Some(root) = &plan.root else {
        return StepResult::done(
            "tls",
            Err(format!(
                "{} of {} nodes serve HTTPS, but no --ca-file was given to verify them against \
                 (`conclavectl ca root --server http://NODE:PORT` fetches the root; compare its \
                 fingerprint with the one `conclave init` printed)",
                https.len(),
                nodes.len()
            )),
            started.elapsed(),
        );
    };
    let budget = plan.timeout.min(READYZ_TIMEOUT);
    let checks = https.iter().map(|node| async move {
        let addr = node.https.unwrap_or(node.addr);
        let host = addr.ip().to_string();
        (
            node,
            verify_server_certificate(addr, &host, root, budget).await,
        )
    });
    let now = unix_now();
    let mut good = Vec::new();
    let mut problems = Vec::new();
    for (node, verdict) in join_all(checks).await {
        let label = node.label();
        match verdict {
            Ok(cert) => {
                let days = cert.days_left(now);
                good.push(format!("{label} ({days} days left)"));
            }
            Err(e @ ClientError::CertificateNotTrusted { .. }) => {
                problems.push(format!("{label}: {}", sanitize(&untrusted_hint(&e, true))));
            }
            Err(e) => problems.push(format!("{label}: {}", sanitize(&e.to_string()))),
        }
    }
    let plain = nodes.len() - https.len();
    let mut detail = format!("{}/{} verified", good.len(), https.len());
    if plain > 0 {
        problems.push(format!("{plain} node(s) serve plain HTTP only"));
    }
    if !good.is_empty() {
        detail.push_str(&format!(": {}", good.join(", ")));
    }
    let result = if problems.is_empty() {
        Ok(detail)
    } else {
        Err(format!("{detail}; {}", problems.join("; ")))
    };
    StepResult::done("tls", result, started.elapsed())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{DEFAULT_CHANNEL, Status};
    use super::*;

    #[test]
    fn redirect_targets() {
        assert_eq!(
            https_base("https://10.0.0.1:8443/api/v1/cluster").as_deref(),
            Some("https://10.0.0.1:8443")
        );
        assert_eq!(https_base("http://10.0.0.1:8443/x"), None);
        assert_eq!(https_base("https:///x"), None);
    }

    #[tokio::test]
    async fn tls_is_skipped_only_for_plain_http() {
        let plan = Plan {
            workspace: "chat.lan".into(),
            dns: ([127, 0, 0, 1], 53).into(),
            credentials: None,
            channel: DEFAULT_CHANNEL.into(),
            channel_given: false,
            port: None,
            timeout: Duration::from_secs(1),
            root: None,
        };
        let plain = Node {
            addr: ([127, 0, 0, 1], 8080).into(),
            https: None,
            id: Some(1),
        };
        let step = tls_step(&plan, std::slice::from_ref(&plain), Instant::now()).await;
        assert_eq!(step.line(), "SKIP  tls        cluster serves plain HTTP\n");
        let secure = Node {
            https: Some(([127, 0, 0, 1], 8443).into()),
            ..plain
        };
        let step = tls_step(&plan, &[secure], Instant::now()).await;
        assert_eq!(step.status, Status::Fail);
        assert!(step.detail.contains("no --ca-file"), "{}", step.detail);
    }
}
