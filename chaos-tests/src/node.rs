//! One `conclave` process under test: where the binary is, its config file, its data dir and
//! log file, starting it (`init`, `run`), and the signals the harness sends it (SIGKILL for a
//! crash, SIGTERM for a graceful stop). Dropping a [`NodeProcess`] kills and reaps the child, so
//! a panicking test leaves no process, no bound port and no zombie behind.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Name of the server binary built by `cargo build -p node`.
pub const BIN_NAME: &str = "conclave";
/// Name of the operator CLI built by `cargo build -p ops`.
pub const CTL_BIN_NAME: &str = "conclavectl";

/// Finds the server binary: `$CONCLAVE_BIN` if set, else next to the running executable or a
/// few directories up (a test runs from `target/debug/deps/`, the binary is `target/debug/conclave`).
pub fn conclave_bin() -> Result<PathBuf> {
    find_binary(BIN_NAME, "CONCLAVE_BIN", "cargo build -p node")
}

/// Finds the operator CLI the same way: `$CONCLAVECTL_BIN` if set, else next to the running
/// executable or a few directories up (`target/debug/conclavectl`).
pub fn conclavectl_bin() -> Result<PathBuf> {
    find_binary(CTL_BIN_NAME, "CONCLAVECTL_BIN", "cargo build -p ops")
}

fn find_binary(name: &str, env_var: &str, build: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{env_var}={} does not exist or is not a file", p.display());
    }
    let exe = std::env::current_exe().context("current_exe")?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "the `{name}` binary was not found next to {} or its parents; build it with \
         `{build}` (same CARGO_TARGET_DIR and profile) or set {env_var}=/path/to/{name}",
        exe.display()
    )
}

/// The `[raft]` section of a node's config. Defaults are the documented production values.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
}

impl Default for RaftOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 200,
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
        }
    }
}

/// Where one node lives: addresses and files.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub api_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// With TLS on (`ClusterOptions::tls`): the HTTPS address, written as `[tls] https_addr`;
    /// clients then use `https://` on it and `api_addr` is the plain port.
    pub https_addr: Option<SocketAddr>,
    /// More `[tls]` keys, `key = <raw TOML value>` (e.g. `node_cert_secs`).
    pub tls_fields: Vec<(String, String)>,
}

impl NodeSpec {
    pub fn new(id: u64, api_addr: SocketAddr, cluster_addr: SocketAddr, root: &Path) -> Self {
        Self {
            id,
            api_addr,
            cluster_addr,
            data_dir: root.join(format!("n{id}")),
            config_path: root.join(format!("node-{id}.toml")),
            log_path: root.join(format!("node-{id}.log")),
            https_addr: None,
            tls_fields: Vec::new(),
        }
    }

    /// Base URL for clients: `http://127.a.b.N:8080`, or `https://127.a.b.N:8443` with TLS.
    pub fn base_url(&self) -> String {
        match self.https_addr {
            Some(addr) => format!("https://{addr}"),
            None => format!("http://{}", self.api_addr),
        }
    }

    /// The plain-HTTP base URL (`http://<api_addr>`): the client API without TLS, or the
    /// redirect/trust-page port with it.
    pub fn plain_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The cluster root once `init` or `provision` wrote it: `<data_dir>/tls/ca.pem`.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.pem")
    }

    /// Renders the node's TOML config. `top_level` entries are `key = <raw TOML value>` lines
    /// written before the `[raft]` table (e.g. `("session_ttl_secs", "1")`); `{node_ip}` in a
    /// value becomes this node's own address, for per-node listeners such as `dns.addr`.
    pub fn render_config(&self, raft: &RaftOptions, top_level: &[(String, String)]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "node_id = {}", self.id);
        let _ = writeln!(
            s,
            "data_dir = {}",
            toml_string(&self.data_dir.to_string_lossy())
        );
        let _ = writeln!(s, "api_addr = \"{}\"", self.api_addr);
        let _ = writeln!(s, "cluster_addr = \"{}\"", self.cluster_addr);
        let ip = self.api_addr.ip().to_string();
        for (k, v) in top_level {
            let _ = writeln!(s, "{k} = {}", v.replace("{node_ip}", &ip));
        }
        if let Some(https) = self.https_addr {
            // An inline table keeps every table-less key above `[raft]` in one place.
            let mut fields = vec![format!("https_addr = \"{https}\"")];
            fields.extend(self.tls_fields.iter().map(|(k, v)| format!("{k} = {v}")));
            let _ = writeln!(s, "tls = {{ {} }}", fields.join(", "));
        }
        let _ = writeln!(s, "\n[raft]");
        let _ = writeln!(s, "heartbeat_interval_ms = {}", raft.heartbeat_interval_ms);
        let _ = writeln!(
            s,
            "election_timeout_min_ms = {}",
            raft.election_timeout_min_ms
        );
        let _ = writeln!(
            s,
            "election_timeout_max_ms = {}",
            raft.election_timeout_max_ms
        );
        let _ = writeln!(
            s,
            "snapshot_logs_since_last = {}",
            raft.snapshot_logs_since_last
        );
        let _ = writeln!(
            s,
            "max_in_snapshot_log_to_keep = {}",
            raft.max_in_snapshot_log_to_keep
        );
        s
    }

    pub fn write_config(&self, raft: &RaftOptions, top_level: &[(String, String)]) -> Result<()> {
        fs::write(&self.config_path, self.render_config(raft, top_level))
            .with_context(|| format!("write {}", self.config_path.display()))
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A node's process (if running) plus how to start it again.
///
/// The child sits behind a `std::sync::Mutex` so that every harness method can take `&self`
/// (tests hold `&TestCluster` inside polling closures while killing nodes); the lock is only
/// held for non-blocking calls (`try_wait`, `kill(2)`, spawning), never across an `.await`.
#[derive(Debug)]
pub struct NodeProcess {
    pub spec: NodeSpec,
    bin: PathBuf,
    env: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
}

impl NodeProcess {
    pub fn new(spec: NodeSpec, bin: PathBuf, env: Vec<(String, String)>) -> Self {
        Self {
            spec,
            bin,
            env,
            child: Mutex::new(None),
        }
    }

    /// The server binary this node starts with.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// Starts this node with another server binary from its next start on (a rolling
    /// upgrade replaces the binary of a stopped node; data dir and config stay).
    pub fn set_binary(&mut self, bin: PathBuf) {
        self.bin = bin;
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        // A poisoned lock only means another thread panicked mid-test; the Option is still valid.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_file(&self) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)
            .with_context(|| format!("open {}", self.spec.log_path.display()))
    }

    /// Appends a harness line to the node's log so the tail shows what the test did when.
    pub fn mark(&self, what: &str) {
        if let Ok(mut f) = self.log_file() {
            let _ = writeln!(
                f,
                "===== chaos harness: node {}: {what} =====",
                self.spec.id
            );
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        // The server reads every `CONCLAVE_*` variable as a config override (and rejects
        // unknown ones): a node gets only the overrides the test asked for, never whatever
        // the developer's shell or the harness itself (CONCLAVE_BIN, ...) has set.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONCLAVE_") {
                cmd.env_remove(key);
            }
        }
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
        cmd.env("RUST_LOG", rust_log).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `conclave init`: creates a one-voter cluster in this node's data dir. Returns its stdout.
    pub async fn init(
        &self,
        admin_user: &str,
        admin_password: &str,
        timeout: Duration,
    ) -> Result<String> {
        self.mark("conclave init");
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.arg("init")
            .arg("--config")
            .arg(&self.spec.config_path)
            .arg("--admin-user")
            .arg(admin_user)
            .arg("--admin-password")
            .arg(admin_password);
        self.run_once("init", String::new(), cmd, timeout).await
    }

    /// `conclave provision --config C --seed SEED --ca-file ROOT` with the admin credentials
    /// in its environment: generates this node's key, has the cluster sign its certificate and
    /// writes `<data_dir>/tls/` (the file layout TLS expects). Output goes to the node's log.
    pub async fn provision(
        &self,
        seed: &str,
        ca_file: &Path,
        admin: (&str, &str),
        timeout: Duration,
    ) -> Result<()> {
        self.mark(&format!("conclave provision --seed {seed}"));
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.arg("provision")
            .arg("--config")
            .arg(&self.spec.config_path)
            .arg("--seed")
            .arg(seed)
            .arg("--ca-file")
            .arg(ca_file)
            .env("CONCLAVE_ADMIN_USER", admin.0)
            .env("CONCLAVE_ADMIN_PASSWORD", admin.1);
        self.run_once("provision", format!(" --seed {seed}"), cmd, timeout)
            .await
            .map(|_| ())
    }

    /// Runs a one-shot `conclave <what>` for this node to completion (bounded by `timeout`),
    /// appends its output to the node's log, and returns its stdout; a failure carries the
    /// tail of its stderr.
    async fn run_once(
        &self,
        what: &str,
        extra_args: String,
        mut cmd: tokio::process::Command,
        timeout: Duration,
    ) -> Result<String> {
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .with_context(|| {
                format!(
                    "`conclave {what}` on node {} did not exit within {timeout:?}",
                    self.spec.id
                )
            })?
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Ok(mut f) = self.log_file() {
            let _ = f.write_all(stderr.as_bytes());
            let _ = f.write_all(stdout.as_bytes());
        }
        if !out.status.success() {
            bail!(
                "`{} {what} --config {}{extra_args}` failed with {}:\nstdout: {}\nstderr (tail): {}",
                self.bin.display(),
                self.spec.config_path.display(),
                out.status,
                stdout.trim(),
                tail(&stderr, 20)
            );
        }
        Ok(stdout)
    }

    /// `conclave run` in the background, stdout and stderr appended to the node's log file.
    pub fn spawn(&self) -> Result<()> {
        let mut guard = self.child();
        if let Some(child) = guard.as_mut()
            && child.try_wait()?.is_none()
        {
            bail!(
                "node {} is already running (pid {})",
                self.spec.id,
                child.id()
            );
        }
        self.mark("conclave run");
        let log = self.log_file()?;
        let child = self
            .command()
            .arg("run")
            .arg("--config")
            .arg(&self.spec.config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {} run", self.bin.display()))?;
        *guard = Some(child);
        Ok(())
    }

    /// Starts `conclave join --config C --seed SEED` as this node's process, with the token in
    /// its environment (`CONCLAVE_JOIN_TOKEN`): it joins, then keeps running like `run`.
    /// Output goes to the node's log; does not wait.
    pub fn spawn_join(&self, seed: &str, token: &str) -> Result<()> {
        self.spawn_join_with(seed, token, &[])
    }

    /// [`NodeProcess::spawn_join`] with more arguments (`--insecure` to join a plain-HTTP seed).
    pub fn spawn_join_with(&self, seed: &str, token: &str, args: &[&str]) -> Result<()> {
        let mut guard = self.child();
        if let Some(child) = guard.as_mut()
            && child.try_wait()?.is_none()
        {
            bail!(
                "node {} is already running (pid {})",
                self.spec.id,
                child.id()
            );
        }
        self.mark(&format!("conclave join --seed {seed} {}", args.join(" ")));
        let log = self.log_file()?;
        let child = self
            .command()
            .arg("join")
            .arg("--config")
            .arg(&self.spec.config_path)
            .arg("--seed")
            .arg(seed)
            .args(args)
            .env("CONCLAVE_JOIN_TOKEN", token)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {} join", self.bin.display()))?;
        *guard = Some(child);
        Ok(())
    }

    /// True while the child exists and has not exited.
    pub fn is_running(&self) -> bool {
        match self.child().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Exit status if the process was started and has exited (crash detection for diagnostics).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// SIGKILL (a crash: no shutdown code runs) and reap. No-op if not running.
    pub fn kill(&self) -> Result<()> {
        let taken = self.child().take();
        if let Some(mut child) = taken {
            self.mark("SIGKILL");
            // std's Child::kill sends SIGKILL on Unix; ignore "already exited".
            let _ = child.kill();
            child.wait().context("wait after SIGKILL")?;
        }
        Ok(())
    }

    /// SIGSTOP: freezes the process (a paused VM, a stalled host) without killing it. Sockets
    /// stay bound, nothing is answered. Dropping the node still SIGKILLs and reaps it, which
    /// works on a stopped process too, so a panicking test leaves nothing frozen behind.
    pub fn freeze(&self) -> Result<()> {
        self.signal("SIGSTOP", libc::SIGSTOP)
    }

    /// SIGCONT: resumes a process frozen by [`NodeProcess::freeze`].
    pub fn thaw(&self) -> Result<()> {
        self.signal("SIGCONT", libc::SIGCONT)
    }

    fn signal(&self, name: &str, signal: libc::c_int) -> Result<()> {
        let mut guard = self.child();
        let Some(child) = guard.as_mut() else {
            bail!("node {} is not running", self.spec.id);
        };
        if let Some(status) = child.try_wait()? {
            bail!("node {} has exited ({status}) before {name}", self.spec.id);
        }
        self.mark(name);
        send_signal(child.id(), signal)
    }

    /// SIGTERM (graceful stop), then waits up to `timeout` for the exit. A node that does not
    /// exit in time is SIGKILLed and reported as an error: graceful shutdown must finish.
    pub async fn terminate(&self, timeout: Duration) -> Result<ExitStatus> {
        {
            let mut guard = self.child();
            let Some(child) = guard.as_mut() else {
                bail!("node {} is not running", self.spec.id);
            };
            if let Some(status) = child.try_wait()? {
                guard.take();
                bail!(
                    "node {} had already exited ({status}) before SIGTERM",
                    self.spec.id
                );
            }
            self.mark("SIGTERM");
            send_signal(child.id(), libc::SIGTERM)?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut guard = self.child();
                let status = match guard.as_mut() {
                    Some(child) => child.try_wait()?,
                    None => bail!("node {} was reaped by someone else", self.spec.id),
                };
                if let Some(status) = status {
                    guard.take();
                    return Ok(status);
                }
            }
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "node {} did not exit within {timeout:?} of SIGTERM (SIGKILLed it)",
                    self.spec.id
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Last `lines` lines of the node's log file.
    /// The node's whole log file so far (empty when it cannot be read).
    pub fn log_text(&self) -> String {
        fs::read(&self.spec.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        match fs::read(&self.spec.log_path) {
            Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
            Err(e) => format!("(cannot read {}: {e})", self.spec.log_path.display()),
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// `kill(2)`: the only way to send SIGTERM (std only offers SIGKILL).
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The pid is our own
    // un-reaped child (the caller holds the lock that guards reaping), so it cannot have been
    // recycled for an unrelated process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        bail!(
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The last `lines` lines of `text`, without ANSI colour escapes (the server colours its log
/// even when it goes to a file; escapes make panic messages unreadable).
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    strip_ansi(&all[all.len().saturating_sub(lines)..].join("\n"))
}

/// Removes `ESC [ ... <letter>` sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The release `conclave` binary for the benchmarks: `explicit` (a `--binary` option), else
/// `CONCLAVE_BIN`, else the release build next to the running binary or under
/// `CARGO_TARGET_DIR` or `./target`. A debug bench still prefers the release server.
pub fn release_binary(explicit: Option<&std::path::Path>) -> Result<PathBuf> {
    if let Some(b) = explicit {
        return Ok(b.to_path_buf());
    }
    if let Some(b) = std::env::var_os("CONCLAVE_BIN") {
        return Ok(PathBuf::from(b));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("conclave"));
        if let Some(target) = dir.parent() {
            candidates.insert(0, target.join("release").join("conclave"));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release").join("conclave"));
    }
    candidates.push(PathBuf::from("target/release/conclave"));
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "no conclave binary in {candidates:?}: `cargo build --release -p node` or set CONCLAVE_BIN"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_every_documented_field_and_extras_before_raft() {
        let root = Path::new("/tmp/x \"y\"");
        let spec = NodeSpec::new(
            2,
            "127.100.1.2:8080".parse().unwrap_or_else(|e| panic!("{e}")),
            "127.100.1.2:9080".parse().unwrap_or_else(|e| panic!("{e}")),
            root,
        );
        let toml = spec.render_config(
            &RaftOptions::default(),
            &[("session_ttl_secs".into(), "1".into())],
        );
        assert!(toml.contains("node_id = 2\n"));
        assert!(toml.contains("data_dir = \"/tmp/x \\\"y\\\"/n2\"\n"));
        assert!(toml.contains("api_addr = \"127.100.1.2:8080\"\n"));
        assert!(toml.contains("cluster_addr = \"127.100.1.2:9080\"\n"));
        let ttl = toml.find("session_ttl_secs = 1").unwrap_or(usize::MAX);
        let raft = toml.find("[raft]").unwrap_or(0);
        assert!(ttl < raft, "top-level keys must precede [raft]:\n{toml}");
        assert!(toml.contains("snapshot_logs_since_last = 5000\n"));
        assert!(toml.contains("max_in_snapshot_log_to_keep = 1000\n"));
    }

    #[test]
    fn tls_section_and_https_url() {
        let mut spec = NodeSpec::new(
            3,
            "127.100.1.3:8080".parse().unwrap_or_else(|e| panic!("{e}")),
            "127.100.1.3:9080".parse().unwrap_or_else(|e| panic!("{e}")),
            Path::new("/tmp/r"),
        );
        assert!(
            !spec
                .render_config(&RaftOptions::default(), &[])
                .contains("tls")
        );
        assert_eq!(spec.base_url(), "http://127.100.1.3:8080");
        spec.https_addr = Some("127.100.1.3:8443".parse().unwrap_or_else(|e| panic!("{e}")));
        spec.tls_fields.push(("node_cert_secs".into(), "60".into()));
        let toml = spec.render_config(&RaftOptions::default(), &[]);
        assert!(
            toml.contains("tls = { https_addr = \"127.100.1.3:8443\", node_cert_secs = 60 }\n"),
            "{toml}"
        );
        assert_eq!(spec.base_url(), "https://127.100.1.3:8443");
        assert_eq!(spec.plain_url(), "http://127.100.1.3:8080");
        assert_eq!(spec.ca_pem_path(), Path::new("/tmp/r/n3/tls/ca.pem"));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(
            tail("\u{1b}[2mnode\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x", 1),
            "node  INFO x"
        );
    }
}
