//! `conclavectl check`: the setup check an operator would otherwise do by hand, one step at a
//! time, each printed as a `PASS`/`FAIL`/`SKIP` line with its timing (or, with `--json`, one
//! JSON array at the end).
//!
//! Steps, in order; after the first failure the rest are printed as `SKIP`:
//! 1. `dns`: ask the given server (never the system resolver) for the workspace's A and AAAA
//!    records and for `_conclave._tcp.<workspace>` SRV, whose targets (`nodeN.<workspace>`) are
//!    resolved through the same server to learn each address's API port. Without SRV records
//!    (a site DNS server that copies only the addresses, say) the port comes from `--port`;
//!    with neither the step fails rather than guess, since a wrong guess would only surface as
//!    a confusing `nodes` failure.
//!    The same server is asked for `_https._tcp.<workspace>` SRV: nodes that serve TLS list
//!    their HTTPS port there.
//! 2. `nodes`: `GET /readyz` on every answered address (the API port, which stays plain HTTP
//!    when a node serves TLS), in parallel, with a short timeout.
//! 3. `tls`: which nodes serve HTTPS comes from the SRV answer, else from the first ready
//!    node's `GET /api/v1/cluster` (`https_addr` per node). Each such node's certificate is
//!    verified against `--ca-file` by a TLS handshake to the address dialled (chain to the
//!    root, name = that address, not expired, not revoked as far as the chain says) and its
//!    days left are reported; one failure fails the step. `SKIP` only when the cluster
//!    serves plain HTTP; HTTPS without `--ca-file` is a failure, not a skip. Later steps then
//!    talk HTTPS.
//! 4. `login`: as `--user`, on the first ready node. The password comes from stdin
//!    (`--password-stdin`), `CONCLAVE_PASSWORD`, or a prompt on a terminal; never from the
//!    command line. Without `--user` this and the next step are `SKIP`.
//! 5. `roundtrip`: subscribe over WebSocket on node B, post through node A's REST API (A ≠ B
//!    when at least two nodes are ready) and time the message's arrival on B. The channel is
//!    `--channel` (which must exist; joined if public) or by default `conclave-check`, created
//!    as a *private* channel when missing so check messages never show up in anyone else's
//!    channel list or unread counts. The session is logged out at the end.
//!
//! This module owns the check's steps and their output lines (kept here rather than in
//! `render` because nothing else prints them). `--timeout` bounds each wait (a DNS reply, an
//! HTTP response, the test message), not the whole run. It must never print or log the
//! password or the session token, never write to the cluster beyond the login session, the
//! default channel (or joining a public `--channel`) and one message per run, and never report
//! a step as passed that did not run.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::future::join_all;
use ops::dns_query::{self, DnsAnswer, DnsQueryError, DnsQuestion, DnsRcode, DnsRecord};
use ops::{
    ChannelKind, Client, ClientError, NewChannel, SessionBuilder, SessionEvent, TrustRoot,
    verify_server_certificate,
};
use serde::Serialize;

use super::args::CheckArgs;
use super::failure::{EXIT_OK, Failure, one_line};
use super::render::sanitize;

/// The round-trip channel when `--channel` is not given.
const DEFAULT_CHANNEL: &str = "conclave-check";
/// The topic a created default channel gets, so whoever stumbles on it knows what it is.
const CHANNEL_TOPIC: &str = "Test messages from `conclavectl check`; safe to ignore.";
/// `/readyz` is a local verdict and answers at once; a node slower than this is not healthy.
const READYZ_TIMEOUT: Duration = Duration::from_secs(3);
/// Logging out is courtesy, not part of the verdict; it must not hold up the exit.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Pass,
    Fail,
    Skip,
}

/// One printed step.
#[derive(Debug, Clone, Serialize)]
struct StepResult {
    step: &'static str,
    status: Status,
    detail: String,
    /// Milliseconds the step took (for `roundtrip`: from the send until the arrival); absent
    /// for skipped steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
}

impl StepResult {
    fn done(step: &'static str, result: Result<String, String>, took: Duration) -> StepResult {
        let (status, detail) = match result {
            Ok(detail) => (Status::Pass, detail),
            Err(detail) => (Status::Fail, detail),
        };
        StepResult {
            step,
            status,
            detail: one_line(&detail),
            ms: Some(millis(took)),
        }
    }

    fn skip(step: &'static str, why: impl Into<String>) -> StepResult {
        StepResult {
            step,
            status: Status::Skip,
            detail: one_line(&why.into()),
            ms: None,
        }
    }

    /// `PASS  dns        chat.corp.lan -> ... via 10.0.0.11:53  4 ms`
    fn line(&self) -> String {
        let status = match self.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        let mut line = format!("{status}  {:<9}  {}", self.step, self.detail);
        if let Some(ms) = self.ms {
            line.push_str(&format!("  {ms} ms"));
        }
        line.push('\n');
        line
    }
}

/// One address from the DNS answer.
#[derive(Debug, Clone)]
struct Node {
    /// The API port (plain HTTP: the client API, or redirects and health when TLS is on).
    addr: SocketAddr,
    /// The HTTPS address when the node serves TLS (same IP as `addr`: the certificate must
    /// name the address the operator's DNS gave out).
    https: Option<SocketAddr>,
    /// From `/readyz`, once the `nodes` step has asked.
    id: Option<u64>,
}

impl Node {
    /// Where the client API is: HTTPS when the node serves it.
    fn url(&self) -> String {
        match self.https {
            Some(https) => format!("https://{https}"),
            None => self.plain_url(),
        }
    }

    fn plain_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `host:port` of [`Node::url`], as a chat session reports the node it is on.
    fn wire_addr(&self) -> String {
        self.https.unwrap_or(self.addr).to_string()
    }

    /// `node N (address)`, with the HTTPS address once the `tls` step has found one.
    fn label(&self) -> String {
        match self.id {
            Some(id) => format!("node {id} ({})", self.wire_addr()),
            None => self.wire_addr(),
        }
    }
}

/// The validated command line.
struct Plan {
    workspace: String,
    dns: SocketAddr,
    /// User and password, when the login and round trip are to run.
    credentials: Option<(String, String)>,
    channel: String,
    channel_given: bool,
    port: Option<u16>,
    timeout: Duration,
    /// `--ca-file`: the root HTTPS nodes must chain to.
    root: Option<TrustRoot>,
}

/// Runs the check; `Ok(0)` only when every step passed or was skipped for a stated reason
/// (tls on a plain-HTTP cluster, login and round trip without `--user`).
pub(crate) async fn run(
    args: CheckArgs,
    root: Option<TrustRoot>,
    json: bool,
) -> Result<u8, Failure> {
    let mut plan = validate(args)?;
    plan.root = root;
    let mut out = Output {
        json,
        steps: Vec::new(),
    };
    let verdict = run_steps(&plan, &mut out).await;
    out.finish()?;
    match verdict {
        Ok(()) => Ok(EXIT_OK),
        Err(failed) => Err(Failure::local(format_args!(
            "check failed at step {}: {}",
            failed.step, failed.detail
        ))),
    }
}

/// Usage errors, all found before anything is sent.
fn validate(args: CheckArgs) -> Result<Plan, Failure> {
    let dns = dns_query::parse_dns_server(&args.dns).map_err(Failure::usage)?;
    let workspace = dns_query::normalize_domain(&args.workspace).map_err(Failure::usage)?;
    if let Some(channel) = &args.channel
        && (channel.is_empty() || channel.chars().any(char::is_control))
    {
        return Err(Failure::usage("--channel needs a channel name"));
    }
    if args.port == Some(0) {
        return Err(Failure::usage("--port must be from 1 to 65535"));
    }
    if args.password_stdin && args.user.is_none() {
        return Err(Failure::usage(
            "--password-stdin needs --user (the password is only used to log in)",
        ));
    }
    let credentials = match args.user {
        Some(user) if user.is_empty() => return Err(Failure::usage("--user needs a user name")),
        Some(user) => {
            let password = obtain_password(&user, args.password_stdin)?;
            Some((user, password))
        }
        None => None,
    };
    Ok(Plan {
        workspace,
        dns,
        credentials,
        channel_given: args.channel.is_some(),
        channel: args.channel.unwrap_or_else(|| DEFAULT_CHANNEL.to_owned()),
        port: args.port,
        timeout: Duration::from_secs(args.timeout),
        root: None,
    })
}

/// `--password-stdin`: the first line of stdin; else `CONCLAVE_PASSWORD`; else a prompt when
/// stdin is a terminal. Never a command-line argument: those show up in `ps` and shell history.
fn obtain_password(user: &str, from_stdin: bool) -> Result<String, Failure> {
    if !from_stdin && let Ok(password) = std::env::var("CONCLAVE_PASSWORD") {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if !from_stdin && !terminal {
        return Err(Failure::usage(format_args!(
            "no password for {user}: set CONCLAVE_PASSWORD or pass --password-stdin"
        )));
    }
    if terminal {
        let _ = write!(
            std::io::stderr().lock(),
            "password for {user} (input is visible): "
        );
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    let n = stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format_args!("cannot read the password from stdin: {e}")))?;
    if n == 0 {
        return Err(Failure::usage(format_args!(
            "no password for {user} on stdin (expected one line)"
        )));
    }
    // Only the line ending goes; other whitespace may be part of the password.
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Prints each step as it finishes (text), or collects them for one JSON array (`--json`).
struct Output {
    json: bool,
    steps: Vec<StepResult>,
}

impl Output {
    fn record(&mut self, step: StepResult) {
        if !self.json {
            // Streamed, so an operator watching a slow step sees how far the check got. A
            // closed stdout is noticed (and reported) by `finish`.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout
                .write_all(step.line().as_bytes())
                .and_then(|()| stdout.flush());
        }
        self.steps.push(step);
    }

    fn finish(&self) -> Result<(), Failure> {
        let text = if self.json {
            let json = serde_json::to_string_pretty(&self.steps)
                .map_err(|e| Failure::local(format_args!("cannot encode result: {e}")))?;
            format!("{json}\n")
        } else {
            String::new()
        };
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::stdout_closed()),
            Err(e) => Err(Failure::local(format_args!("cannot write to stdout: {e}"))),
        }
    }
}

/// Records `failed` and every step that now cannot run as SKIP; returns `failed`.
fn fail(
    out: &mut Output,
    failed: StepResult,
    remaining: impl Iterator<Item = &'static str>,
) -> StepResult {
    out.record(failed.clone());
    for step in remaining {
        out.record(StepResult::skip(
            step,
            format!("not run: step {} failed", failed.step),
        ));
    }
    failed
}

/// Runs the steps in order; `Err` carries the failed step (later ones are recorded as SKIP).
async fn run_steps(plan: &Plan, out: &mut Output) -> Result<(), StepResult> {
    let mut remaining = ["nodes", "tls", "login", "roundtrip"].into_iter();
    let started = Instant::now();
    let result = dns_step(plan).await;
    let (mut nodes, https_ports) = match result {
        Ok((nodes, https_ports, detail)) => {
            out.record(StepResult::done("dns", Ok(detail), started.elapsed()));
            (nodes, https_ports)
        }
        Err(why) => {
            let failed = StepResult::done("dns", Err(why), started.elapsed());
            return Err(fail(out, failed, remaining));
        }
    };
    remaining.next();

    let started = Instant::now();
    let result = nodes_step(plan, &mut nodes).await;
    let step = StepResult::done("nodes", result, started.elapsed());
    if step.status == Status::Fail {
        return Err(fail(out, step, remaining));
    }
    out.record(step);
    remaining.next();

    let started = Instant::now();
    let step = match learn_https(plan, &mut nodes, &https_ports).await {
        Ok(()) => tls_step(plan, &nodes, started).await,
        Err(why) => StepResult::done("tls", Err(why), started.elapsed()),
    };
    if step.status == Status::Fail {
        return Err(fail(out, step, remaining));
    }
    out.record(step);
    remaining.next();

    let Some((user, password)) = &plan.credentials else {
        out.record(StepResult::skip("login", "no --user given"));
        out.record(StepResult::skip("roundtrip", "no --user given"));
        return Ok(());
    };
    let started = Instant::now();
    // The nodes step guarantees at least one node, all of them ready.
    let Some(first) = nodes.first() else {
        let failed = StepResult::done("login", Err("no ready node".into()), started.elapsed());
        return Err(fail(out, failed, remaining));
    };
    let client = match login_step(plan, first, user, password).await {
        Ok((client, detail)) => {
            out.record(StepResult::done("login", Ok(detail), started.elapsed()));
            client
        }
        Err(why) => {
            let failed = StepResult::done("login", Err(why), started.elapsed());
            return Err(fail(out, failed, remaining));
        }
    };
    remaining.next();

    let step = roundtrip_step(plan, &client, user, &nodes).await;
    // Courtesy: the check's session should not outlive it. A failure here changes nothing
    // about the verdict (the token expires on its own).
    let mut client = client;
    let _ = tokio::time::timeout(LOGOUT_TIMEOUT, client.logout()).await;
    if step.status == Status::Fail {
        return Err(fail(out, step, remaining));
    }
    out.record(step);
    Ok(())
}

// ---- dns ----

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
async fn dns_step(plan: &Plan) -> Result<(Vec<Node>, Vec<(IpAddr, u16)>, String), String> {
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
    let srv_records: Vec<(u16, String)> = match srv {
        Ok(answer) if answer.rcode == DnsRcode::NoError => answer
            .records
            .iter()
            .filter_map(|r| match r {
                DnsRecord::Srv { port, target, .. } => Some((*port, target.clone())),
                _ => None,
            })
            .collect(),
        // SERVFAIL here after a good A answer means the node just lost its majority.
        Ok(answer) if answer.rcode == DnsRcode::ServFail => {
            return Err(explain_rcode(answer.rcode, server, &srv_name, "SRV"));
        }
        // NXDOMAIN/REFUSED/timeouts: a server that does not carry SRV; `--port` decides.
        Ok(_) | Err(_) => Vec::new(),
    };
    let lookups = srv_records.iter().map(|(port, target)| async move {
        let (a, aaaa) = tokio::join!(
            dns_query::query(server, target, DnsQuestion::A, plan.timeout),
            dns_query::query(server, target, DnsQuestion::Aaaa, plan.timeout),
        );
        let mut ips: Vec<IpAddr> = Vec::new();
        for answer in [a, aaaa].into_iter().flatten() {
            ips.extend(answer.addresses());
        }
        ips.into_iter().map(|ip| (ip, *port)).collect::<Vec<_>>()
    });
    let srv_ports: Vec<(IpAddr, u16)> = join_all(lookups).await.into_iter().flatten().collect();
    let https_ports = resolve_targets(server, &srv_targets(https_srv), plan.timeout).await;

    let mut nodes = Vec::new();
    let mut missing = Vec::new();
    for ip in &addresses {
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
    if !missing.is_empty() {
        let why = if srv_records.is_empty() {
            format!("{server} has no SRV records for {srv_name}")
        } else {
            format!(
                "no SRV record of {srv_name} points at {}",
                missing.join(", ")
            )
        };
        return Err(format!(
            "{why}, so the API port is unknown; pass --port with the nodes' API port"
        ));
    }

    let mut ports: Vec<u16> = nodes.iter().map(|n| n.addr.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    let source = if srv_records.is_empty() {
        "from --port"
    } else {
        "from SRV"
    };
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            one.to_owned()
        } else {
            many.to_owned()
        }
    };
    let listed: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    let detail = format!(
        "{ws} -> {} ({} {}, API {} {} {source}) via {server}{}",
        listed.join(", "),
        nodes.len(),
        plural(nodes.len(), "node", "nodes"),
        plural(ports.len(), "port", "ports"),
        ports.join(", "),
        if a.authoritative {
            ""
        } else {
            " (non-authoritative)"
        },
    );
    Ok((nodes, https_ports, detail))
}

// ---- nodes ----

/// Asks every node's `/readyz`; fills in node ids and drops nothing (every node must be ready).
async fn nodes_step(plan: &Plan, nodes: &mut [Node]) -> Result<String, String> {
    let budget = plan.timeout.min(READYZ_TIMEOUT);
    let probes = nodes.iter().map(|node| async move {
        let client = Client::new(vec![node.plain_url()])
            .map_err(|e| e.to_string())?
            .with_request_timeout(budget);
        client.readyz().await.map_err(|e| match e {
            ClientError::Unreachable { last_error, .. } => last_error,
            other => other.to_string(),
        })
    });
    let verdicts = join_all(probes).await;
    let mut ready = Vec::new();
    let mut problems = Vec::new();
    for (node, verdict) in nodes.iter_mut().zip(verdicts) {
        match verdict {
            Ok(r) => {
                node.id = r.node_id;
                if r.ready {
                    ready.push(node.label());
                } else {
                    let reason = r.reason.as_deref().unwrap_or("no reason given");
                    problems.push(format!("{} not ready: {}", node.label(), sanitize(reason)));
                }
            }
            Err(e) => problems.push(format!("{} unreachable: {}", node.label(), sanitize(&e))),
        }
    }
    let total = nodes.len();
    if problems.is_empty() {
        Ok(format!(
            "{}/{total} ready: {}",
            ready.len(),
            ready.join(", ")
        ))
    } else {
        Err(format!(
            "{}/{total} ready; {}",
            ready.len(),
            problems.join("; ")
        ))
    }
}

// ---- tls ----

/// Fills in each node's HTTPS address: from `_https._tcp` SRV when the DNS server has it, else
/// from the first ready node's cluster view (`https_addr` per node id, dialled on the address
/// DNS gave out). Nodes without one serve plain HTTP.
async fn learn_https(
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
async fn tls_step(plan: &Plan, nodes: &[Node], started: Instant) -> StepResult {
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

// ---- login ----

async fn login_step(
    plan: &Plan,
    node: &Node,
    user: &str,
    password: &str,
) -> Result<(Client, String), String> {
    let mut client = Client::new_trusting(vec![node.url()], plan.root.clone())
        .map_err(|e| e.to_string())?
        .with_request_timeout(plan.timeout)
        .with_failover_deadline(plan.timeout);
    match client.login(user, password).await {
        Ok(login) => Ok((
            client,
            format!(
                "logged in as {} ({}) on {}",
                sanitize(&login.username),
                login.role,
                node.label()
            ),
        )),
        // The server does not say which (nor whether the account is disabled): that would
        // tell an attacker which user names exist.
        Err(ClientError::Api {
            status: 401, code, ..
        }) if code == "invalid_credentials" => Err(format!(
            "{} refused the login: wrong user name or password for {} (or the account is disabled)",
            node.label(),
            sanitize(user)
        )),
        Err(e @ ClientError::Throttled { .. }) => {
            Err(format!("{} refused the login: {e}", node.label()))
        }
        Err(ClientError::Unreachable { last_error, .. }) => Err(format!(
            "{} did not answer the login: {}",
            node.label(),
            sanitize(&last_error)
        )),
        Err(e) => Err(format!("{}: {}", node.label(), sanitize(&e.to_string()))),
    }
}

// ---- roundtrip ----

/// Makes sure `user` can post to and read the round-trip channel (see the module docs for
/// what is created or joined); `Ok` says what was done, for the step line.
async fn prepare_channel(client: &Client, plan: &Plan, user: &str) -> Result<&'static str, String> {
    let name = plan.channel.as_str();
    let not_member = || {
        format!(
            "channel {name} is private and {user} is not a member; pass --channel with a \
             channel {user} can post to"
        )
    };
    let channel = match client.get_channel(name).await {
        Ok(channel) => channel,
        Err(e) if e.code() == Some("forbidden") => return Err(not_member()),
        Err(e) if e.code() == Some("channel_not_found") && plan.channel_given => {
            return Err(format!(
                "channel {name} does not exist (create it, or leave out --channel to use a \
                 private {DEFAULT_CHANNEL} channel)"
            ));
        }
        Err(e) if e.code() == Some("channel_not_found") => {
            let new = NewChannel::private(name).with_topic(CHANNEL_TOPIC);
            return match client.create_channel_with(&new).await {
                Ok(_) => Ok(" (created it, private)"),
                // Someone else's private channel of that name, invisible to us.
                Err(e) if e.code() == Some("channel_exists") => Err(not_member()),
                Err(e) => Err(format!("cannot create channel {name}: {e}")),
            };
        }
        Err(e) => return Err(format!("cannot look up channel {name}: {e}")),
    };
    if channel.archived {
        return Err(format!(
            "channel {name} is archived; pass --channel with another channel"
        ));
    }
    if channel.members.iter().any(|m| m == user) {
        return Ok("");
    }
    if channel.kind != ChannelKind::Public {
        return Err(not_member());
    }
    client
        .join_channel(name)
        .await
        .map(|_| " (joined it)")
        .map_err(|e| format!("cannot join channel {name}: {e}"))
}

async fn roundtrip_step(plan: &Plan, client: &Client, user: &str, nodes: &[Node]) -> StepResult {
    let started = Instant::now();
    match roundtrip(plan, client, user, nodes).await {
        Ok((detail, delivery)) => StepResult::done("roundtrip", Ok(detail), delivery),
        Err(why) => StepResult::done("roundtrip", Err(why), started.elapsed()),
    }
}

/// Returns the step detail and the time from the send until the message arrived on B.
async fn roundtrip(
    plan: &Plan,
    client: &Client,
    user: &str,
    nodes: &[Node],
) -> Result<(String, Duration), String> {
    let (Some(a), Some(b)) = (nodes.first(), nodes.get(1).or(nodes.first())) else {
        return Err("no ready node".into());
    };
    let channel = plan.channel.as_str();
    let prepared = prepare_channel(client, plan, user).await?;
    let token = client.token().ok_or("no session token after login")?;

    // The receiving session is pinned to B by being given only B; it could still fail over
    // to another node named in `hello`, which is checked after the message arrives.
    let mut session = SessionBuilder::new(vec![b.url()], token)
        .trust_root(plan.root.clone())
        .subscribe(channel)
        .connect_deadline(plan.timeout)
        .connect()
        .await
        .map_err(|e| {
            format!(
                "WebSocket to {} failed: {}",
                b.label(),
                sanitize(&e.to_string())
            )
        })?;
    let result = send_and_receive(plan, client, &mut session, a, b, channel).await;
    session.close().await;
    let (received_on, delivery) = result?;
    let same = if a.addr == b.addr {
        " (only one node is ready, so sent and received on the same node)"
    } else {
        ""
    };
    Ok((
        format!(
            "#{channel}{prepared}: sent through {}, received on {received_on}{same}",
            a.label()
        ),
        delivery,
    ))
}

async fn send_and_receive(
    plan: &Plan,
    client: &Client,
    session: &mut ops::ChatSession,
    a: &Node,
    b: &Node,
    channel: &str,
) -> Result<(String, Duration), String> {
    // Subscribed first: a message posted before the subscription is live would only come in a
    // replay, which this "from now" subscription does not ask for.
    let subscribed = session
        .wait_for(plan.timeout, |event| match event {
            SessionEvent::Subscribed { channel: ch, .. } if ch == channel => Some(Ok(())),
            SessionEvent::ServerError {
                code,
                message,
                channel: Some(ch),
            } if ch == channel => Some(Err(format!(
                "{} refused the subscription to {channel}: {code}: {}",
                b.label(),
                sanitize(message)
            ))),
            _ => None,
        })
        .await
        .map_err(|e| {
            format!(
                "no subscription to {channel} on {}: {}",
                b.label(),
                sanitize(&e.to_string())
            )
        })?;
    subscribed?;

    let id = ops::new_client_msg_id();
    let body = format!("conclavectl check {id}");
    let poster = Client::new_trusting(vec![a.url()], plan.root.clone())
        .map_err(|e| e.to_string())?
        .with_token(client.token().unwrap_or_default())
        .with_request_timeout(plan.timeout)
        .with_failover_deadline(plan.timeout);
    let sent = Instant::now();
    poster
        .post_message(channel, &body, &id)
        .await
        .map_err(|e| {
            format!(
                "posting through {} failed: {}",
                a.label(),
                sanitize(&e.to_string())
            )
        })?;
    session
        .wait_message(channel, |m| m.body == body, plan.timeout)
        .await
        .map_err(|e| match e {
            ops::WsError::Timeout(_) => format!(
                "the message posted through {} did not arrive on {} within {} s",
                a.label(),
                b.label(),
                plan.timeout.as_secs()
            ),
            other => format!(
                "waiting on {} for the message: {}",
                b.label(),
                sanitize(&other.to_string())
            ),
        })?;
    let delivery = sent.elapsed();
    let Some(node) = session.current_node() else {
        return Err(format!("the WebSocket to {} dropped", b.label()));
    };
    let b_addr = b.wire_addr();
    if node.addr != b_addr {
        return Err(format!(
            "the WebSocket moved from {} to node {} ({}) before the message arrived",
            b.label(),
            node.node_id,
            sanitize(&node.addr)
        ));
    }
    Ok((format!("node {} ({b_addr})", node.node_id), delivery))
}

// ---- helpers ----

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_aligned_and_skips_have_no_time() {
        let pass = StepResult::done("dns", Ok("a -> b".into()), Duration::from_millis(4));
        assert_eq!(pass.line(), "PASS  dns        a -> b  4 ms\n");
        let skip = StepResult::skip("tls", "cluster serves plain HTTP");
        assert_eq!(skip.line(), "SKIP  tls        cluster serves plain HTTP\n");
        let fail = StepResult::done("roundtrip", Err("x\ny".into()), Duration::ZERO);
        assert_eq!(fail.line(), "FAIL  roundtrip  x y  0 ms\n");
        let json = serde_json::to_value([&pass, &skip]).unwrap_or_default();
        assert_eq!(json[0]["status"], "pass");
        assert_eq!(json[0]["ms"], 4);
        assert!(json[1].get("ms").is_none());
    }

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

    #[test]
    fn urls_bracket_ipv6() {
        let mut node = Node {
            addr: "[fd00::1]:8080"
                .parse()
                .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
            https: None,
            id: Some(2),
        };
        assert_eq!(node.url(), "http://[fd00::1]:8080");
        assert_eq!(node.label(), "node 2 ([fd00::1]:8080)");
        node.https = "[fd00::1]:8443".parse().ok();
        assert_eq!(node.url(), "https://[fd00::1]:8443");
        assert_eq!(node.plain_url(), "http://[fd00::1]:8080");
        assert_eq!(node.wire_addr(), "[fd00::1]:8443");
    }

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
