//! `conclave run` under a `Type=notify` service manager, played by this test: a real node
//! process with `NOTIFY_SOCKET` pointing at a datagram socket the test binds. `READY=1` must
//! arrive only when the node serves (its `/readyz` already answers 200 at that moment), and
//! `STOPPING=1` when it gets SIGTERM, before it exits cleanly.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the node if the test fails midway; the temp dir removes itself.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(unsafe_code)]
fn sigterm(child: &Child) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /readyz` over a plain HTTP/1.0 connection: the status code.
fn readyz(api: SocketAddr) -> u16 {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// The next datagram, or None when none came within the socket's read timeout.
fn next(socket: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 1024];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("notify socket: {e}"),
    }
}

#[test]
fn ready_only_when_serving_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cluster: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.path().join("conclave.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = 1\ndata_dir = {:?}\napi_addr = \"{api}\"\ncluster_addr = \"{cluster}\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["init", "--config"])
        .arg(&cfg)
        .env("CONCLAVE_ADMIN_PASSWORD", "notify-test-password-1")
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "init: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut node = Node(
        Command::new(env!("CARGO_BIN_EXE_conclave"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // READY=1, and at that moment /readyz already says ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before_ready = Vec::new();
    let ready = loop {
        assert!(
            Instant::now() < deadline,
            "no READY=1 within 60 s; got {before_ready:?}"
        );
        if let Some(status) = node.0.try_wait().unwrap() {
            panic!("the node exited with {status} before READY=1; got {before_ready:?}");
        }
        match next(&socket) {
            Some(m) if m.lines().any(|l| l == "READY=1") => break m,
            Some(m) => before_ready.push(m),
            None => {}
        }
    };
    assert_eq!(readyz(api), 200, "READY=1 sent while /readyz is not ready");
    assert!(ready.contains("STATUS=serving"), "{ready:?}");
    assert!(
        before_ready.iter().all(|m| m.starts_with("STATUS=")),
        "only STATUS lines before READY=1: {before_ready:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    sigterm(&node.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no STOPPING=1 within 20 s of SIGTERM; got {after:?}"
        );
        match next(&socket) {
            Some(m) if m.lines().any(|l| l == "STOPPING=1") => break,
            Some(m) => after.push(m),
            None => {}
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
}
