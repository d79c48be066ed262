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
//! This module owns the order of the steps and what the steps share (the plan, the nodes); each
//! step lives in its own file, and `report` owns their output lines (kept apart from `render`
//! because nothing else prints them). `--timeout` bounds each wait (a DNS reply, an
//! HTTP response, the test message), not the whole run. It must never print or log the
//! password or the session token, never write to the cluster beyond the login session, the
//! default channel (or joining a public `--channel`) and one message per run, and never report
//! a step as passed that did not run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ops::TrustRoot;

use super::args::CheckArgs;
use super::failure::{EXIT_OK, Failure};

mod dns;
mod login;
mod nodes;
mod plan;
mod report;
mod roundtrip;
mod tls;

use dns::dns_step;
use login::login_step;
use nodes::nodes_step;
use plan::validate;
use report::{Output, Status, StepResult, fail};
use roundtrip::roundtrip_step;
use tls::{learn_https, tls_step};

/// The round-trip channel when `--channel` is not given.
const DEFAULT_CHANNEL: &str = "conclave-check";
/// `/readyz` is a local verdict and answers at once; a node slower than this is not healthy.
const READYZ_TIMEOUT: Duration = Duration::from_secs(3);
/// Logging out is courtesy, not part of the verdict; it must not hold up the exit.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(3);

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
    let mut out = Output::new(json);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
