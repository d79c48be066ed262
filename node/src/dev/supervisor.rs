//! The dev cluster's process supervisor: starts each node as a child process of `conclave dev`
//! with its output in `<data-dir>/nodeN.log`, restarts a node that dies (so a developer can kill
//! one and watch the others keep serving, then watch it come back and catch up), and stops them
//! all on Ctrl-C/SIGTERM.
//!
//! Owns the child processes and what the console says about them. Must never be what a
//! production site runs: there systemd (or the Windows service manager) restarts a node, and a
//! node must never be restarted behind the operator's back in a way that hides a crash loop; here
//! a crash loop backs off and every exit is reported on the console.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Ports, emit, ready};
use crate::signals;

/// Wait before the first restart of a node that died: long enough to watch the other two elect
/// a leader and keep serving (an election takes well under a second), short enough not to bore.
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(3);
/// A node that dies within this long after a start counts as crash-looping: each such exit
/// doubles the wait before the next restart, up to `MAX_RESTART_DELAY`.
const QUICK_EXIT: Duration = Duration::from_secs(30);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// How often the supervisor looks at its children.
const POLL: Duration = Duration::from_millis(250);

/// One supervised node.
struct NodeProc {
    n: u64,
    child: Option<Child>,
    started: Instant,
    /// Exits in a row that came within `QUICK_EXIT` of their start.
    quick_exits: u32,
    /// Set while the node is down: when to start it again.
    restart_at: Option<Instant>,
    /// Set after a restart until the node answers `/readyz` with 200.
    awaiting_ready: bool,
}

/// The three node processes of `conclave dev`.
pub(super) struct Supervisor {
    exe: PathBuf,
    data_dir: PathBuf,
    configs: Vec<PathBuf>,
    ports: Ports,
    nodes: Vec<NodeProc>,
}

impl Supervisor {
    pub(super) fn new(
        exe: PathBuf,
        data_dir: PathBuf,
        configs: Vec<PathBuf>,
        ports: Ports,
    ) -> Self {
        Self {
            exe,
            data_dir,
            configs,
            ports,
            nodes: Vec::new(),
        }
    }

    pub(super) fn log_path(&self, n: u64) -> PathBuf {
        self.data_dir.join(format!("node{n}.log"))
    }

    /// The process id of node `n`, while it runs.
    pub(super) fn pid(&self, n: u64) -> Option<u32> {
        self.nodes
            .iter()
            .find(|p| p.n == n)
            .and_then(|p| p.child.as_ref())
            .map(Child::id)
    }

    /// Starts node `n`: with a join token it runs `conclave join` (joins, then runs), otherwise
    /// `conclave run`. Output is appended to the node's log, so a restart keeps what the dead
    /// process wrote last (usually the reason it died).
    pub(super) fn start(&mut self, n: u64, join_token: Option<&str>) -> anyhow::Result<()> {
        let child = self.spawn(n, join_token)?;
        match self.nodes.iter_mut().find(|p| p.n == n) {
            Some(p) => {
                p.child = Some(child);
                p.started = Instant::now();
            }
            None => self.nodes.push(NodeProc {
                n,
                child: Some(child),
                started: Instant::now(),
                quick_exits: 0,
                restart_at: None,
                awaiting_ready: false,
            }),
        }
        Ok(())
    }

    fn spawn(&self, n: u64, join_token: Option<&str>) -> anyhow::Result<Child> {
        let cfg = self
            .configs
            .get((n - 1) as usize)
            .with_context(|| format!("no config for node {n}"))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(n))
            .with_context(|| format!("open {}", self.log_path(n).display()))?;
        let _ = writeln!(
            log,
            "---- conclave dev: starting node {n} ({}) ----",
            if join_token.is_some() { "join" } else { "run" }
        );
        let mut cmd = Command::new(&self.exe);
        match join_token {
            Some(token) => cmd
                .arg("join")
                .arg("--config")
                .arg(cfg)
                .arg("--seed")
                .arg(self.ports.api(1))
                // `--no-tls`: node 1 answers in plain HTTP, on loopback only.
                .args(self.ports.https.is_none().then_some("--insecure"))
                .env("CONCLAVE_JOIN_TOKEN", token),
            None => cmd.arg("run").arg("--config").arg(cfg),
        };
        cmd.stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start node {n}"))
    }

    /// Keeps the nodes running until Ctrl-C/SIGTERM: a node that exits is reported, restarted
    /// after a delay (doubling while it keeps dying quickly), and reported again once ready.
    pub(super) async fn supervise(&mut self, http: &reqwest::Client) {
        let shutdown = signals::shutdown_requested();
        tokio::pin!(shutdown);
        loop {
            self.reap();
            self.restart_due();
            self.announce_ready(http).await;
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Notices nodes that exited and schedules their restart.
    fn reap(&mut self) {
        let mut exited: Vec<(u64, ExitStatus, Duration)> = Vec::new();
        for p in &mut self.nodes {
            let Some(child) = p.child.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            p.child = None;
            p.awaiting_ready = false;
            let lived = p.started.elapsed();
            p.quick_exits = if lived < QUICK_EXIT {
                p.quick_exits.saturating_add(1)
            } else {
                0
            };
            let delay = restart_delay(p.quick_exits);
            p.restart_at = Some(Instant::now() + delay);
            exited.push((p.n, status, delay));
        }
        for (n, status, delay) in exited {
            let others: Vec<String> = self
                .nodes
                .iter()
                .filter(|p| p.n != n && p.child.is_some())
                .map(|p| p.n.to_string())
                .collect();
            let serving = match others.len() {
                0 => "no other node is running".to_string(),
                _ => format!("nodes {} keep serving", others.join(" and ")),
            };
            emit(&format!(
                "node {n} exited ({}); {serving}. Restarting it in {} s (log: {}).\n",
                describe(status),
                delay.as_secs(),
                self.log_path(n).display()
            ));
        }
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .nodes
            .iter()
            .filter(|p| p.restart_at.is_some_and(|t| t <= now))
            .map(|p| p.n)
            .collect();
        for n in due {
            match self.start(n, None) {
                Ok(()) => {
                    if let Some(p) = self.nodes.iter_mut().find(|p| p.n == n) {
                        p.restart_at = None;
                        p.awaiting_ready = true;
                    }
                    emit(&format!(
                        "node {n} restarted (pid {}); waiting until it is ready.\n",
                        self.pid(n).unwrap_or_default()
                    ));
                }
                Err(e) => {
                    if let Some(p) = self.nodes.iter_mut().find(|p| p.n == n) {
                        p.quick_exits = p.quick_exits.saturating_add(1);
                        p.restart_at = Some(Instant::now() + restart_delay(p.quick_exits));
                    }
                    emit(&format!("node {n} could not be restarted: {e:#}\n"));
                }
            }
        }
    }

    async fn announce_ready(&mut self, http: &reqwest::Client) {
        let waiting: Vec<u64> = self
            .nodes
            .iter()
            .filter(|p| p.awaiting_ready && p.child.is_some())
            .map(|p| p.n)
            .collect();
        for n in waiting {
            if ready(http, n, self.ports).await {
                if let Some(p) = self.nodes.iter_mut().find(|p| p.n == n) {
                    p.awaiting_ready = false;
                }
                emit(&format!(
                    "node {n} is back: ready and serving ({}).\n",
                    self.ports.url(n)
                ));
            }
        }
    }

    /// SIGTERM each node (graceful), then wait; SIGKILL what still runs after 10 s.
    pub(super) fn stop(&mut self) {
        for p in &mut self.nodes {
            p.restart_at = None;
            if let Some(c) = p.child.as_mut() {
                terminate(c);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in &mut self.nodes {
            let Some(c) = p.child.as_mut() else {
                continue;
            };
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        tracing::warn!(node_id = p.n, "node did not stop in time; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
            p.child = None;
        }
        self.nodes.clear();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn restart_delay(quick_exits: u32) -> Duration {
    let factor = 1u32 << quick_exits.saturating_sub(1).min(5);
    (FIRST_RESTART_DELAY * factor).min(MAX_RESTART_DELAY)
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

#[cfg(unix)]
fn terminate(c: &mut Child) {
    let Ok(pid) = i32::try_from(c.id()) else {
        let _ = c.kill();
        return;
    };
    // kill(2) via libc is the only way to send SIGTERM without an extra crate.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc != 0 {
        let _ = c.kill();
    }
}

#[cfg(not(unix))]
fn terminate(c: &mut Child) {
    let _ = c.kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_while_crash_looping_and_is_capped() {
        assert_eq!(restart_delay(0), Duration::from_secs(3));
        assert_eq!(restart_delay(1), Duration::from_secs(3));
        assert_eq!(restart_delay(2), Duration::from_secs(6));
        assert_eq!(restart_delay(3), Duration::from_secs(12));
        assert_eq!(restart_delay(10), MAX_RESTART_DELAY);
    }
}
