//! `conclavectl chat` end to end: the real terminal client driven through a pipe, as a script
//! or an operator would, against a real 3-node cluster whose node serving it is SIGKILLed
//! mid-conversation.
//!
//! Asserts: every line typed is acknowledged (a `✓` line per message), the client announces
//! the move to another node by itself, it exits 0 at end of input only after every ack, and
//! the channel's history holds each message exactly once, in the order typed.

use std::process::Stdio;
use std::time::Duration;

use chaos_tests::TestCluster;
use chaos_tests::node::conclavectl_bin;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CH: &str = "general";
const STEP: Duration = Duration::from_secs(30);

/// Reads stdout lines until one satisfies `pred`; returns it. Every line read is kept in `seen`.
async fn wait_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let next = tokio::time::timeout_at(deadline, lines.next_line()).await;
        match next {
            Ok(Ok(Some(line))) => {
                seen.push(line.clone());
                if pred(&line) {
                    return line;
                }
            }
            Ok(Ok(None)) => panic!(
                "chat exited while waiting for {what}; output:\n{}",
                seen.join("\n")
            ),
            Ok(Err(e)) => panic!("reading chat output: {e}"),
            Err(_) => panic!("no {what} within {STEP:?}; output:\n{}", seen.join("\n")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_chat_survives_node_kill() {
    let bin = conclavectl_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let cluster = TestCluster::start(3).await;
    let admin = cluster.client_all();
    admin
        .create_channel(CH)
        .await
        .unwrap_or_else(|e| panic!("create channel: {e}"));

    let servers: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let token_file = cluster.root().join("ctl-chat").join("token");
    let base_env = |cmd: &mut tokio::process::Command| {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONCLAVE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("CONCLAVE_TOKEN_FILE", &token_file);
    };
    let mut login = tokio::process::Command::new(&bin);
    base_env(&mut login);
    let status = login
        .args(["--server", &servers.join(","), "login", "--username"])
        .arg(chaos_tests::ADMIN_USER)
        .env("CONCLAVE_PASSWORD", chaos_tests::ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .status()
        .await
        .unwrap_or_else(|e| panic!("conclavectl login: {e}"));
    assert!(status.success(), "login failed: {status}");

    let mut chat = tokio::process::Command::new(&bin);
    base_env(&mut chat);
    let mut child = chat
        .args(["chat", "--channel", CH, "--ack-timeout", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn conclavectl chat: {e}"));
    let mut stdin = child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("no stdin pipe"));
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("no stdout pipe"));
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();

    let connected = wait_line(&mut lines, &mut seen, "a connection", |l| {
        l.starts_with("-- connected to node ")
    })
    .await;
    let node: u64 = connected
        .trim_start_matches("-- connected to node ")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the node id from {connected:?}"));

    let bodies: Vec<String> = (1..=6).map(|i| format!("chat line {i}")).collect();
    for b in &bodies[..3] {
        stdin
            .write_all(format!("{b}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write to chat: {e}"));
    }
    for i in 1..=3 {
        wait_line(&mut lines, &mut seen, &format!("ack {i}"), |l| {
            l.starts_with("✓ ")
        })
        .await;
    }

    // The node serving the client dies; lines typed now must still arrive exactly once.
    cluster.kill(node);
    for b in &bodies[3..] {
        stdin
            .write_all(format!("{b}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write to chat: {e}"));
    }
    let moved = wait_line(&mut lines, &mut seen, "a reconnection", |l| {
        l.starts_with("-- connected to node ")
    })
    .await;
    assert!(
        !moved.starts_with(&format!("-- connected to node {node} ")),
        "reconnected to the killed node: {moved}"
    );
    for i in 4..=6 {
        wait_line(&mut lines, &mut seen, &format!("ack {i}"), |l| {
            l.starts_with("✓ ")
        })
        .await;
    }
    drop(stdin);
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .unwrap_or_else(|_| panic!("chat did not exit at end of input"))
        .unwrap_or_else(|e| panic!("wait for chat: {e}"));
    assert_eq!(status.code(), Some(0), "output:\n{}", seen.join("\n"));

    // History, read through a survivor: each line once, in the order typed.
    let survivors: Vec<u64> = cluster.live_ids();
    let reader = cluster.client_over(&survivors);
    let page = reader
        .list_messages(CH, 0, 100, None)
        .await
        .unwrap_or_else(|e| panic!("read history: {e}"));
    let got: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    let want: Vec<&str> = bodies.iter().map(String::as_str).collect();
    assert_eq!(got, want, "history after the kill");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<u64>>());
}

/// The server ends the chat's session (an admin ends all of the user's sessions: the same
/// close, 4011, as an expiry): `conclavectl chat` logs in again with the password from
/// `CONCLAVE_PASSWORD`, resends what was not acknowledged, and every line typed is in the
/// channel exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_chat_logs_in_again_when_the_session_ends() {
    let bin = conclavectl_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let cluster = TestCluster::start(1).await;
    cluster
        .client_all()
        .create_channel(CH)
        .await
        .unwrap_or_else(|e| panic!("create channel: {e}"));
    crate::ws_util::create_user(&cluster, "erin").await;
    let password = crate::ws_util::USER_PASSWORD;
    let server = cluster.url(1);
    let token_file = cluster.root().join("ctl-chat-erin").join("token");
    let base_env = |cmd: &mut tokio::process::Command| {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONCLAVE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("CONCLAVE_TOKEN_FILE", &token_file)
            .env("CONCLAVE_PASSWORD", password);
    };
    let mut login = tokio::process::Command::new(&bin);
    base_env(&mut login);
    let status = login
        .args(["--server", &server, "login", "--username", "erin"])
        .stdin(Stdio::null())
        .status()
        .await
        .unwrap_or_else(|e| panic!("conclavectl login: {e}"));
    assert!(status.success(), "login failed: {status}");

    let mut chat = tokio::process::Command::new(&bin);
    base_env(&mut chat);
    let mut child = chat
        .args(["chat", "--channel", CH, "--ack-timeout", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn conclavectl chat: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    wait_line(&mut lines, &mut seen, "a connection", |l| {
        l.starts_with("-- connected to node ")
    })
    .await;
    stdin
        .write_all(b"before the end\n")
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    wait_line(&mut lines, &mut seen, "ack 1", |l| l.starts_with("✓ ")).await;

    let ended = cluster
        .client(1)
        .end_user_sessions("erin")
        .await
        .unwrap_or_else(|e| panic!("end erin's sessions: {e}"));
    assert!(ended >= 1, "ended {ended}");
    // Typed at once: it meets the closing socket or waits for the new session.
    stdin
        .write_all(b"while it ends\n")
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    wait_line(&mut lines, &mut seen, "the new session", |l| {
        l == "-- logged in again"
    })
    .await;
    stdin
        .write_all(b"after the new login\n")
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    drop(stdin);
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .unwrap_or_else(|_| panic!("chat did not exit at end of input"))
        .unwrap_or_else(|e| panic!("wait for chat: {e}"));
    // Its stdout is read to the end so every line is in `seen` for the message below.
    while let Ok(Some(l)) = lines.next_line().await {
        seen.push(l);
    }
    assert_eq!(status.code(), Some(0), "output:\n{}", seen.join("\n"));
    assert!(
        seen.iter().any(|l| l.contains("4011")),
        "the chat saw the session end with 4011:\n{}",
        seen.join("\n")
    );
    let page = cluster
        .client(1)
        .list_messages(CH, 0, 100, None)
        .await
        .unwrap_or_else(|e| panic!("read history: {e}"));
    let got: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        got,
        ["before the end", "while it ends", "after the new login"],
        "history: each line once, in order"
    );
}
