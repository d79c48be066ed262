//! `conclavectl` end to end: the real binary, run as an operator runs it, against a real
//! 3-node cluster. Each invocation gets a token file inside the cluster's temp dir and none of
//! the `CONCLAVE_*` variables of the environment the tests run in; the tests check exit codes
//! (0 ok, 1 refused, 2 usage, 3 unreachable, 4 degraded, 5 not logged in), what goes to stdout,
//! and that every failure is exactly one `conclavectl: error: ...` line on stderr.
//! - `ctl_round_trip`: login, channel create, send (idempotent with `--id`), tail through
//!   another node, user add/list, status (text and `--json`), logout (token revoked, later
//!   commands exit 5);
//! - `ctl_errors`: refusals, a wrong password, an unreachable server, usage errors, `status` on
//!   a cluster with a killed follower (4, table still printed, back to 0 once it returns), and
//!   failover from a dead node listed first;
//! - `ctl_node_add_remove`: `node add` of an uninitialized fourth node and `node remove`.
//!
//! Needs `conclavectl` next to the test binary (`cargo build -p ops`) or `CONCLAVECTL_BIN`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chaos_tests::node::conclavectl_bin;
use chaos_tests::wait::Waiting;
use chaos_tests::{ADMIN_PASSWORD, ADMIN_USER, TestCluster};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

/// Upper bound for one `conclavectl` run. Its own failover deadline is 10 s, and `node add`
/// answers once the newcomer caught up (seconds on this small log).
const CTL_TIMEOUT: Duration = Duration::from_secs(150);
const CH: &str = "general";
const BOB_PASSWORD: &str = "bob-password-1";

/// How a test runs `conclavectl`: the binary and the token file every run uses (shared with
/// the `dns_records` scenarios).
pub(crate) struct Ctl {
    bin: PathBuf,
    token_file: PathBuf,
    /// The cluster root, passed as `CONCLAVE_CA_FILE` when the cluster serves TLS.
    ca_file: Option<PathBuf>,
}

/// One finished run.
pub(crate) struct Run {
    args: Vec<String>,
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`conclavectl {}` exited with {}\n--- stdout:\n{}--- stderr:\n{}---",
            self.args.join(" "),
            self.code
                .map_or_else(|| "a signal".to_owned(), |c| c.to_string()),
            self.stdout,
            self.stderr
        )
    }
}

impl Ctl {
    /// The binary is located first so that a missing one fails the test before any node runs.
    pub(crate) fn locate() -> PathBuf {
        conclavectl_bin().unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub(crate) fn new(bin: PathBuf, cluster: &TestCluster) -> Ctl {
        Ctl {
            bin,
            token_file: cluster.root().join("ctl").join("token"),
            ca_file: cluster.ca_file().map(Path::to_path_buf),
        }
    }

    /// The same binary without `CONCLAVE_CA_FILE`: with `same_session`, the same token file
    /// (whose login may have saved the root); else a fresh one, trusting no root at all.
    pub(crate) fn without_ca_file(&self, same_session: bool) -> Ctl {
        let token_file = if same_session {
            self.token_file.clone()
        } else {
            self.token_file.with_file_name("token-without-ca")
        };
        Ctl {
            bin: self.bin.clone(),
            token_file,
            ca_file: None,
        }
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[]).await
    }

    /// Runs `conclavectl args...` with stdin closed, the test's token file, no inherited
    /// `CONCLAVE_*` variable and `env` on top; reaps it (SIGKILL after [`CTL_TIMEOUT`]).
    pub(crate) async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONCLAVE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("CONCLAVE_TOKEN_FILE", &self.token_file);
        if let Some(ca_file) = &self.ca_file {
            cmd.env("CONCLAVE_CA_FILE", ca_file);
        }
        cmd.envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = args.join(" ");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {shown}: {e}", self.bin.display()));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = match tokio::time::timeout(CTL_TIMEOUT, child.wait()).await {
            Ok(status) => status.unwrap_or_else(|e| panic!("wait for conclavectl {shown}: {e}")),
            Err(_) => {
                // Tokio's kill() is SIGKILL followed by wait(): nothing is left behind.
                let _ = child.kill().await;
                panic!("`conclavectl {shown}` did not exit within {CTL_TIMEOUT:?}");
            }
        };
        Run {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            code: status.code(),
            stdout: stdout.await.unwrap_or_default(),
            stderr: stderr.await.unwrap_or_default(),
        }
    }

    /// `login --username admin` with the password in `CONCLAVE_PASSWORD`, through `servers`.
    pub(crate) async fn login(&self, servers: &str) -> Run {
        self.run_env(
            &["--server", servers, "login", "--username", ADMIN_USER],
            &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)],
        )
        .await
    }

    /// The saved session token (the token file is `{"token": ..., "servers": [...]}`).
    fn saved_token(&self) -> String {
        let text = std::fs::read_to_string(&self.token_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.token_file.display()));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e})", self.token_file.display()));
        v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {}", self.token_file.display()))
            .to_owned()
    }
}

/// Reads a child's pipe to the end in the background.
fn drain<R>(pipe: Option<R>) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Exit code 0 and nothing on stderr; returns stdout.
pub(crate) fn expect_ok<'a>(cluster: &TestCluster, run: &'a Run) -> &'a str {
    if run.code != Some(0) || !run.stderr.is_empty() {
        cluster.fail(&format!("expected exit 0 and an empty stderr:\n{run}"));
    }
    &run.stdout
}

/// Exit code `code`, nothing on stdout and exactly one stderr line starting with `prefix`;
/// returns that line.
pub(crate) fn expect_failure<'a>(
    cluster: &TestCluster,
    run: &'a Run,
    code: i32,
    prefix: &str,
) -> &'a str {
    let lines: Vec<&str> = run.stderr.lines().collect();
    let ok = run.code == Some(code)
        && run.stdout.is_empty()
        && run.stderr.ends_with('\n')
        && lines.len() == 1
        && lines[0].starts_with(prefix);
    if !ok {
        cluster.fail(&format!(
            "expected exit {code}, an empty stdout and one stderr line starting with {prefix:?}:\n{run}"
        ));
    }
    lines[0]
}

/// A `tail` line: `#seq [HH:MM:SS] author: body`.
fn check_message_line(line: &str, seq: u64, author: &str, body: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("tail line {line:?}: {why}"));
    let Some((head, rest)) = line.split_once("] ") else {
        return bad("no `] `");
    };
    let Some(clock) = head.strip_prefix(&format!("#{seq} [")) else {
        return bad(&format!("does not start with `#{seq} [`"));
    };
    let digits_ok = clock
        .split(':')
        .map(|part| part.len() == 2 && part.chars().all(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>();
    if digits_ok != [true, true, true] {
        return bad(&format!("clock {clock:?} is not HH:MM:SS"));
    }
    if rest != format!("{author}: {body}") {
        return bad(&format!("expected `{author}: {body}` after the clock"));
    }
    Ok(())
}

/// One row of the `status` table.
#[derive(Debug)]
pub(crate) struct StatusRow {
    pub(crate) id: u64,
    /// Marked `*` as the leader the answering node sees.
    pub(crate) leader_mark: bool,
    pub(crate) role: String,
    pub(crate) voter: bool,
    pub(crate) healthy: bool,
    pub(crate) ready: bool,
    pub(crate) draining: bool,
    pub(crate) api_addr: String,
}

/// The rows of `status` text output (header `ID ROLE VOTER TERM APPLIED HEALTHY READY
/// DRAINING API_ADDR`, then one row per node, then `leader: ...` and the verdict).
pub(crate) fn status_rows(text: &str) -> Result<Vec<StatusRow>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty output")?
        .split_whitespace()
        .collect();
    let want = [
        "ID", "ROLE", "VOTER", "TERM", "APPLIED", "HEALTHY", "READY", "DRAINING", "API_ADDR",
    ];
    if header != want {
        return Err(format!("header {header:?}, expected {want:?}"));
    }
    let yes = |cell: &str| match cell {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("{other:?} is neither yes nor no")),
    };
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        if line.starts_with("leader: ") {
            break;
        }
        let cells: Vec<&str> = line.split_whitespace().collect();
        let [
            id,
            role,
            voter,
            _term,
            _applied,
            healthy,
            ready,
            draining,
            api_addr,
        ] = cells[..]
        else {
            return Err(format!("row {line:?} does not have 9 cells"));
        };
        let leader_mark = id.starts_with('*');
        rows.push(StatusRow {
            id: id
                .trim_start_matches('*')
                .parse()
                .map_err(|e| format!("id in {line:?}: {e}"))?,
            leader_mark,
            role: role.to_owned(),
            voter: yes(voter)?,
            healthy: yes(healthy)?,
            ready: yes(ready)?,
            draining: yes(draining)?,
            api_addr: api_addr.to_owned(),
        });
    }
    Ok(rows)
}

/// Runs `status` until it exits 0 (every node healthy and ready) and lists `voters` as its
/// voters; returns that run's stdout. Any exit code but 0 or 4 fails at once.
async fn wait_status_healthy(
    cluster: &TestCluster,
    ctl: &Ctl,
    args: &[&str],
    voters: &[u64],
) -> String {
    let what = format!(
        "`conclavectl {}` to exit 0 with voters {voters:?}",
        args.join(" ")
    );
    cluster
        .wait_until(&what, cluster.ready_timeout(), || async {
            let run = ctl.run(args).await;
            match run.code {
                Some(0) | Some(4) => {}
                _ => return Err(Waiting::Abort(run.to_string())),
            }
            let rows = status_rows(&run.stdout)
                .map_err(|e| Waiting::Abort(format!("unparsable status ({e}):\n{run}")))?;
            let mut listed: Vec<u64> = rows.iter().filter(|r| r.voter).map(|r| r.id).collect();
            listed.sort_unstable();
            if run.code == Some(0) && listed == voters {
                Ok(run.stdout)
            } else {
                Err(Waiting::NotYet(run.to_string()))
            }
        })
        .await
}

/// An address on 127.0.0.1 nothing listens on: bind a free port, note it, close it.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    drop(listener);
    format!("http://{addr}")
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `GET /api/v1/me` with `token` on node `id`: the HTTP status and error code.
async fn me_with(cluster: &TestCluster, id: u64, token: &str) -> Result<(u16, String), String> {
    let resp = cluster
        .http()
        .get(format!("{}/api/v1/me", cluster.url(id)))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("node {id}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok((status, code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_round_trip() {
    let bin = Ctl::locate();
    let cluster = TestCluster::start(3).await;
    let ctl = Ctl::new(bin, &cluster);
    let (u1, u2, u3) = (cluster.url(1), cluster.url(2), cluster.url(3));

    // login through node 2: the token and the server list are saved, owner-only.
    let run = ctl.login(&u2).await;
    let out = expect_ok(&cluster, &run);
    assert_eq!(out, "logged in as admin\n", "{run}");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(&ctl.token_file).expect("token file after login"),
    )
    .expect("token file is JSON");
    assert_eq!(saved["servers"], serde_json::json!([u2]), "saved servers");
    #[cfg(unix)]
    assert_eq!(mode_of(&ctl.token_file), 0o600, "token file mode");
    let token = ctl.saved_token();
    assert!(
        !run.stdout.contains(&token) && !run.stderr.contains(&token),
        "login printed the token:\n{run}"
    );

    // channel create (through the saved server, node 2).
    let run = ctl.run(&["channel", "create", CH]).await;
    assert_eq!(
        expect_ok(&cluster, &run),
        "created channel general\n",
        "{run}"
    );

    // send through node 3: the words are joined, the first message is #1.
    let run = ctl
        .run(&["--server", &u3, "send", CH, "hello", "world"])
        .await;
    assert_eq!(expect_ok(&cluster, &run), "#1 sent\n", "{run}");

    // send with a fixed id, twice: the second is the original, marked duplicate.
    let run = ctl.run(&["send", CH, "--id", "fixed-1", "again"]).await;
    assert_eq!(expect_ok(&cluster, &run), "#2 sent\n", "{run}");
    let run = ctl.run(&["send", CH, "--id", "fixed-1", "again"]).await;
    assert_eq!(
        expect_ok(&cluster, &run),
        "#2 already sent (duplicate)\n",
        "{run}"
    );

    // tail through node 1. It reads node 1's local state without a min index, so node 1 may
    // not list the newest message yet: wait for both, but every answer must exit 0 and show
    // correct lines only.
    let expected = [(1, "hello world"), (2, "again")];
    let tail = cluster
        .wait_until(
            "`tail general` through node 1 to list both messages",
            cluster.ready_timeout(),
            || async {
                let run = ctl.run(&["--server", &u1, "tail", CH]).await;
                if run.code != Some(0) || !run.stderr.is_empty() {
                    return Err(Waiting::Abort(run.to_string()));
                }
                let lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
                if lines.len() > expected.len() {
                    return Err(Waiting::Abort(format!("more lines than messages:\n{run}")));
                }
                for (line, (seq, body)) in lines.iter().zip(expected) {
                    check_message_line(line, seq, ADMIN_USER, body)
                        .map_err(|e| Waiting::Abort(format!("{e}\n{run}")))?;
                }
                if lines.len() < expected.len() {
                    return Err(Waiting::NotYet(run.to_string()));
                }
                Ok(lines)
            },
        )
        .await;
    assert_eq!(tail.len(), 2, "{tail:?}");

    // user add / user list.
    let run = ctl
        .run(&["user", "add", "bob", "--password", BOB_PASSWORD])
        .await;
    assert_eq!(
        expect_ok(&cluster, &run),
        "created user bob (member)\n",
        "{run}"
    );
    let run = ctl.run(&["user", "list"]).await;
    let out = expect_ok(&cluster, &run);
    let users: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        users.first().map(Vec::as_slice),
        Some(&["USERNAME", "ROLE", "DISABLED"][..]),
        "{run}"
    );
    assert!(
        users.contains(&vec!["bob", "member", "no"]),
        "user list lacks bob:\n{run}"
    );
    assert!(
        users.contains(&vec!["admin", "admin", "no"]),
        "user list lacks admin:\n{run}"
    );

    // status: 3 healthy voters, exactly one marked leader, and the verdict.
    let run = ctl.run(&["status"]).await;
    let out = expect_ok(&cluster, &run);
    let rows = status_rows(out).unwrap_or_else(|e| panic!("{e}:\n{run}"));
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{run}"
    );
    assert!(
        rows.iter()
            .all(|r| r.voter && r.healthy && r.ready && !r.draining),
        "{rows:?}\n{run}"
    );
    let leaders: Vec<&StatusRow> = rows.iter().filter(|r| r.leader_mark).collect();
    assert!(
        leaders.len() == 1 && leaders[0].role == "leader",
        "one row marked * with role leader expected:\n{run}"
    );
    for r in &rows {
        assert_eq!(r.api_addr, cluster.api_addr(r.id).to_string(), "{run}");
    }
    assert!(
        out.contains(&format!("leader: node {} (*)", leaders[0].id)),
        "{run}"
    );
    assert!(out.ends_with("cluster healthy\n"), "{run}");

    // --json status: the cluster object.
    let run = ctl.run(&["--json", "status"]).await;
    let out = expect_ok(&cluster, &run);
    let v: Value = serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("--json status is not JSON ({e}):\n{run}"));
    let nodes = v["nodes"].as_array().expect("nodes array");
    assert_eq!(nodes.len(), 3, "{run}");
    let leader = v["leader_id"].as_u64();
    assert!(
        matches!(leader, Some(1..=3)),
        "leader_id {leader:?}:\n{run}"
    );
    assert!(
        nodes
            .iter()
            .all(|n| n["voter"] == true && n["healthy"] == true && n["ready"] == true),
        "{run}"
    );

    // logout: the token file is gone, the token is refused on every node, and a command that
    // needs a session exits 5 with one line.
    let run = ctl.run(&["logout"]).await;
    assert_eq!(expect_ok(&cluster, &run), "logged out\n", "{run}");
    assert!(
        !ctl.token_file.exists(),
        "{} still exists after logout",
        ctl.token_file.display()
    );
    // The revocation is a Raft write: a follower refuses the token once it applied it, which
    // the logout answer does not wait for (a read is served from local state).
    for id in [1, 2, 3] {
        cluster
            .wait_until(
                &format!("node {id} to refuse the token logout revoked"),
                cluster.ready_timeout(),
                || async {
                    match me_with(&cluster, id, &token).await {
                        Ok((401, code)) if code == "unauthorized" => Ok(()),
                        Ok((200, _)) => Err(Waiting::NotYet("200: still accepted".into())),
                        Ok((status, code)) => Err(Waiting::Abort(format!("{status} {code}"))),
                        Err(e) => Err(Waiting::NotYet(e)),
                    }
                },
            )
            .await;
    }
    let run = ctl.run(&["channel", "list"]).await;
    let line = expect_failure(&cluster, &run, 5, "conclavectl: error: not logged in");
    assert!(line.contains("conclavectl login"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_errors() {
    let bin = Ctl::locate();
    let cluster = TestCluster::start(3).await;
    let ctl = Ctl::new(bin, &cluster);
    let all = cluster
        .ids()
        .iter()
        .map(|id| cluster.url(*id))
        .collect::<Vec<_>>()
        .join(",");
    expect_ok(&cluster, &ctl.login(&all).await);
    let run = ctl.run(&["channel", "create", CH]).await;
    expect_ok(&cluster, &run);

    // A refusal by the server: exit 1, one line `<code>: <message>`.
    let run = ctl.run(&["send", "nope", "hi"]).await;
    expect_failure(&cluster, &run, 1, "conclavectl: error: channel_not_found");

    // A wrong password: exit 1, one line; the saved session is left as it was.
    let before = std::fs::read(&ctl.token_file).expect("token file");
    let run = ctl
        .run(&[
            "login",
            "--username",
            ADMIN_USER,
            "--password",
            "not-the-admin-password",
        ])
        .await;
    expect_failure(&cluster, &run, 1, "conclavectl: error: invalid_credentials");
    let after = std::fs::read(&ctl.token_file).expect("token file after a failed login");
    assert!(before == after, "a failed login changed the token file");
    let run = ctl.run(&["channel", "list"]).await;
    assert!(
        expect_ok(&cluster, &run).contains(&format!("\n{CH} ")),
        "channel list after a failed login:\n{run}"
    );

    // Usage errors: exit 2 (clap's message; it may span lines), nothing on stdout.
    for args in [
        &["frobnicate"][..],
        &["node", "add", "x"][..],
        &["send", CH][..],
        &["tail", CH, "--limit", "0"][..],
    ] {
        let run = ctl.run(args).await;
        assert!(
            run.code == Some(2) && run.stdout.is_empty() && run.stderr.starts_with("error: "),
            "usage error expected:\n{run}"
        );
    }
    let run = ctl
        .run(&["--server", "ftp://example.invalid", "status"])
        .await;
    expect_failure(
        &cluster,
        &run,
        2,
        "conclavectl: error: invalid server address 'ftp://example.invalid'",
    );

    // Nothing listening: exit 3 once the failover deadline passed, one line.
    let dead = refused_url();
    // (Both at once: each takes the whole failover deadline.)
    let status_args = ["--server", &dead, "status"];
    let send_args = ["--server", &dead, "send", CH, "lost"];
    let (status, send) = tokio::join!(ctl.run(&status_args), ctl.run(&send_args));
    for run in [status, send] {
        let line = expect_failure(
            &cluster,
            &run,
            3,
            "conclavectl: error: cannot reach the cluster",
        );
        assert!(line.contains(&dead), "{run}");
    }

    // A follower is SIGKILLed: `status` through the leader exits 4 and still prints the whole
    // table, with the dead node unhealthy and a verdict saying why.
    let leader = cluster.wait_for_leader(&[]).await;
    let victim = cluster.a_follower().await;
    cluster.kill(victim);
    let (lu, vu) = (cluster.url(leader), cluster.url(victim));
    let run = ctl.run(&["--server", &lu, "status"]).await;
    if run.code != Some(4) || !run.stderr.is_empty() {
        cluster.fail(&format!(
            "status with node {victim} killed: expected exit 4, no stderr:\n{run}"
        ));
    }
    let rows = status_rows(&run.stdout).unwrap_or_else(|e| panic!("{e}:\n{run}"));
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{run}"
    );
    for r in &rows {
        let alive = r.id != victim;
        assert_eq!((r.healthy, r.ready), (alive, alive), "row {r:?}:\n{run}");
        assert_eq!(r.leader_mark, r.id == leader, "row {r:?}:\n{run}");
    }
    assert!(
        run.stdout
            .contains(&format!("cluster DEGRADED: node {victim} unhealthy")),
        "{run}"
    );
    // The same with --json: the cluster object, and still exit 4.
    let run = ctl.run(&["--server", &lu, "--json", "status"]).await;
    assert_eq!(run.code, Some(4), "{run}");
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--json status is not JSON ({e}):\n{run}"));
    let unhealthy: Vec<u64> = v["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .filter(|n| n["healthy"] == false)
        .filter_map(|n| n["id"].as_u64())
        .collect();
    assert_eq!(unhealthy, vec![victim], "{run}");

    // Failover: the dead node listed first, a live one second; the post is acknowledged once.
    let run = ctl
        .run(&[
            "--server",
            &format!("{vu},{lu}"),
            "send",
            CH,
            "--id",
            "failover-1",
            "after",
            "failover",
        ])
        .await;
    assert_eq!(expect_ok(&cluster, &run), "#1 sent\n", "{run}");
    let run = ctl
        .run(&["--server", &vu, "--server", &lu, "tail", CH])
        .await;
    let out = expect_ok(&cluster, &run).to_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{run}");
    check_message_line(lines[0], 1, ADMIN_USER, "after failover")
        .unwrap_or_else(|e| panic!("{e}\n{run}"));

    // The follower comes back: `status` exits 0 again.
    cluster.spawn(victim);
    cluster.wait_ready(victim).await;
    wait_status_healthy(&cluster, &ctl, &["--server", &lu, "status"], &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_node_add_remove() {
    let bin = Ctl::locate();
    let mut cluster = TestCluster::start(3).await;
    cluster.spawn_extra(4);
    let ctl = Ctl::new(bin, &cluster);
    let all = [1, 2, 3]
        .iter()
        .map(|id| cluster.url(*id))
        .collect::<Vec<_>>()
        .join(",");
    expect_ok(&cluster, &ctl.login(&all).await);

    // Node 4 runs uninitialized; wait until it answers before adding it.
    let health = format!("{}/healthz", cluster.url(4));
    cluster
        .wait_until(
            "node 4 to answer /healthz",
            cluster.ready_timeout(),
            || async {
                if let Some(status) = cluster.node(4).exit_status() {
                    return Err(Waiting::Abort(format!("node 4 exited ({status})")));
                }
                match cluster.http().get(&health).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => Ok(()),
                    Ok(r) => Err(Waiting::NotYet(format!("HTTP {}", r.status()))),
                    Err(e) => Err(Waiting::NotYet(e.to_string())),
                }
            },
        )
        .await;

    let (api4, raft4) = (
        cluster.api_addr(4).to_string(),
        cluster.cluster_addr(4).to_string(),
    );
    let run = ctl
        .run(&[
            "node",
            "add",
            "4",
            "--api-addr",
            &api4,
            "--cluster-addr",
            &raft4,
        ])
        .await;
    let out = expect_ok(&cluster, &run);
    let table = out
        .strip_prefix("added node 4\n")
        .unwrap_or_else(|| panic!("`node add` output does not start with `added node 4`:\n{run}"));
    let rows = status_rows(table).unwrap_or_else(|e| panic!("{e}:\n{run}"));
    assert_eq!(
        rows.iter()
            .filter(|r| r.voter)
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "{run}"
    );
    assert!(
        rows.iter().any(|r| r.id == 4 && r.api_addr == api4),
        "{run}"
    );

    // `status` (through the saved servers) settles on four healthy, ready voters.
    let out = wait_status_healthy(&cluster, &ctl, &["status"], &[1, 2, 3, 4]).await;
    assert!(out.ends_with("cluster healthy\n"), "{out}");

    // node remove 4: answered with the three remaining voters; node 4 then stops by itself.
    let run = ctl.run(&["node", "remove", "4"]).await;
    let out = expect_ok(&cluster, &run);
    let table = out.strip_prefix("removed node 4\n").unwrap_or_else(|| {
        panic!("`node remove` output does not start with `removed node 4`:\n{run}")
    });
    let rows = status_rows(table).unwrap_or_else(|e| panic!("{e}:\n{run}"));
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{run}"
    );
    cluster
        .wait_until(
            "node 4 to stop after its removal",
            cluster.ready_timeout(),
            || async {
                cluster
                    .node(4)
                    .exit_status()
                    .ok_or_else(|| "node 4 still runs".to_owned())
            },
        )
        .await;
    wait_status_healthy(&cluster, &ctl, &["status"], &[1, 2, 3]).await;

    // Removing it again is refused by the server: exit 1, one line.
    let run = ctl.run(&["node", "remove", "4"]).await;
    expect_failure(&cluster, &run, 1, "conclavectl: error: ");
}
