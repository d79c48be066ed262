//! Step 1, `dns`: the workspace's addresses and each node's API and HTTPS ports, asked of the
//! given DNS server (never the system resolver), with every unusable answer explained in the
//! operator's terms.
//!
//! Must never guess a port: without SRV records and without `--port` the step fails.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;
use ops::dns_query::{self, DnsAnswer, DnsQueryError, DnsQuestion, DnsRcode, DnsRecord};

use super::{Node, Plan};

/// What an rcode means for the check, in the operator's terms.
fn explain_rcode(rcode: DnsRcode, server: SocketAddr, name: &str, what: &str) -> String {
    match rcode {
        DnsRcode::ServFail => format!(
            "{server} answered SERVFAIL for {name} {what}: its node is cut off from the cluster \
             majority or not ready yet; ask another node with --dns"
        ),
        DnsRcode::Refused => format!(
            "{server} answered REFUSED for {name} {what}: it does not serve that zone (wrong \
             --workspace, or {server} is not a Conclave node's DNS address)"
        ),
        DnsRcode::NxDomain => format!(
            "{server} answered NXDOMAIN: {name} does not exist there (wrong --workspace, or the \
             site DNS does not forward the zone to the Conclave nodes)"
        ),
        other => format!("{server} answered {other} for {name} {what}"),
    }
}

fn explain_query_error(e: &DnsQueryError) -> String {
    match e {
        DnsQueryError::Timeout { server, .. } => format!(
            "{e} (is [dns] addr set on the node, and is {server} the right address and port?)"
        ),
        _ => e.to_string(),
    }
}

/// An answer that must be NOERROR (NODATA is fine) to be usable.
fn usable(
    answer: Result<DnsAnswer, DnsQueryError>,
    server: SocketAddr,
    name: &str,
    what: &str,
) -> Result<DnsAnswer, String> {
    let answer = answer.map_err(|e| explain_query_error(&e))?;
    if answer.rcode != DnsRcode::NoError {
        return Err(explain_rcode(answer.rcode, server, name, what));
    }
    Ok(answer)
}

/// SRV records as (port, target); empty for anything but a NOERROR answer.
fn srv_targets(answer: Result<DnsAnswer, DnsQueryError>) -> Vec<(u16, String)> {
    match answer {
        Ok(answer) if answer.rcode == DnsRcode::NoError => answer
            .records
            .iter()
            .filter_map(|r| match r {
                DnsRecord::Srv { port, target, .. } => Some((*port, target.clone())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Resolves SRV targets through `server` into (address, port) pairs.
async fn resolve_targets(
    server: SocketAddr,
    targets: &[(u16, String)],
    timeout: Duration,
) -> Vec<(IpAddr, u16)> {
    let lookups = targets.iter().map(|(port, target)| async move {
        let (a, aaaa) = tokio::join!(
            dns_query::query(server, target, DnsQuestion::A, timeout),
            dns_query::query(server, target, DnsQuestion::Aaaa, timeout),
        );
        let mut ips: Vec<IpAddr> = Vec::new();
        for answer in [a, aaaa].into_iter().flatten() {
            ips.extend(answer.addresses());
        }
        ips.into_iter().map(|ip| (ip, *port)).collect::<Vec<_>>()
    });
    join_all(lookups).await.into_iter().flatten().collect()
}

/// The nodes, the HTTPS ports `_https._tcp` SRV gave per address (empty when the server has
/// none), and the step line.
pub(super) async fn dns_step(
    plan: &Plan,
) -> Result<(Vec<Node>, Vec<(IpAddr, u16)>, String), String> {
    let server = plan.dns;
    let ws = plan.workspace.as_str();
    let srv_name = format!("_conclave._tcp.{ws}");
    let https_name = format!("_https._tcp.{ws}");
    let (a, aaaa, srv, https_srv) = tokio::join!(
        dns_query::query(server, ws, DnsQuestion::A, plan.timeout),
        dns_query::query(server, ws, DnsQuestion::Aaaa, plan.timeout),
        dns_query::query(server, &srv_name, DnsQuestion::Srv, plan.timeout),
        dns_query::query(server, &https_name, DnsQuestion::Srv, plan.timeout),
    );
    let a = usable(a, server, ws, "A")?;
    let aaaa = usable(aaaa, server, ws, "AAAA")?;
    let mut addresses = a.addresses();
    addresses.extend(aaaa.addresses());
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(format!(
            "{server} lists no address for {ws}: no node is healthy right now (see \
             `conclavectl status`)"
        ));
    }

    // SRV gives each node's API port by name (`nodeN.<ws>`); resolving the targets through
    // the same server turns that into a port per answered address.
    // SERVFAIL here after a good A answer means the node just lost its majority; NXDOMAIN,
    // REFUSED and timeouts mean a server that does not carry SRV, and `--port` decides.
    if let Ok(answer) = &srv
        && answer.rcode == DnsRcode::ServFail
    {
        return Err(explain_rcode(answer.rcode, server, &srv_name, "SRV"));
    }
    let srv_records = srv_targets(srv);
    let srv_ports = resolve_targets(server, &srv_records, plan.timeout).await;
    let https_ports = resolve_targets(server, &srv_targets(https_srv), plan.timeout).await;

    let from_srv = !srv_records.is_empty();
    let nodes = with_api_ports(plan, &addresses, &srv_ports).map_err(|missing| {
        let why = if from_srv {
            format!(
                "no SRV record of {srv_name} points at {}",
                missing.join(", ")
            )
        } else {
            format!("{server} has no SRV records for {srv_name}")
        };
        format!("{why}, so the API port is unknown; pass --port with the nodes' API port")
    })?;
    let detail = step_line(plan, &addresses, &nodes, from_srv, a.authoritative);
    Ok((nodes, https_ports, detail))
}

/// One node per answered address, its API port from SRV (else `--port`); `Err` lists the
/// addresses left without a port.
fn with_api_ports(
    plan: &Plan,
    addresses: &[IpAddr],
    srv_ports: &[(IpAddr, u16)],
) -> Result<Vec<Node>, Vec<String>> {
    let mut nodes = Vec::new();
    let mut missing = Vec::new();
    for ip in addresses {
        let port = srv_ports
            .iter()
            .find(|(srv_ip, _)| srv_ip == ip)
            .map(|(_, port)| *port)
            .or(plan.port);
        match port {
            Some(port) => nodes.push(Node {
                addr: SocketAddr::new(*ip, port),
                https: None,
                id: None,
            }),
            None => missing.push(ip.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(nodes)
    } else {
        Err(missing)
    }
}

/// `chat.lan -> 10.0.0.1, 10.0.0.2 (2 nodes, API port 8080 from SRV) via 10.0.0.1:53`
fn step_line(
    plan: &Plan,
    addresses: &[IpAddr],
    nodes: &[Node],
    from_srv: bool,
    authoritative: bool,
) -> String {
    let mut ports: Vec<u16> = nodes.iter().map(|n| n.addr.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    let source = if from_srv { "from SRV" } else { "from --port" };
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            one.to_owned()
        } else {
            many.to_owned()
        }
    };
    let listed: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    format!(
        "{} -> {} ({} {}, API {} {} {source}) via {}{}",
        plan.workspace,
        listed.join(", "),
        nodes.len(),
        plural(nodes.len(), "node", "nodes"),
        plural(ports.len(), "port", "ports"),
        ports.join(", "),
        plan.dns,
        if authoritative {
            ""
        } else {
            " (non-authoritative)"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcodes_are_explained() {
        let server: SocketAddr = ([10, 0, 0, 11], 53).into();
        let servfail = explain_rcode(DnsRcode::ServFail, server, "chat.lan", "A");
        assert!(
            servfail.contains("cut off from the cluster majority"),
            "{servfail}"
        );
        let refused = explain_rcode(DnsRcode::Refused, server, "chat.lan", "A");
        assert!(refused.contains("REFUSED") && refused.contains("--workspace"));
        assert!(explain_rcode(DnsRcode::NxDomain, server, "chat.lan", "A").contains("NXDOMAIN"));
    }
}
