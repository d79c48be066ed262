//! Helpers of the flood tests (`login_flood`, `conn_flood`): a node's resident memory from
//! /proc, TCP connections from a chosen loopback source address, one raw HTTP/1.1 request.
//!
//! Raw sockets rather than reqwest: a flood client must pick its source address per
//! connection and must not pool, retry or follow anything.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// VmRSS of `pid` in KiB (Linux /proc); 0 when the process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A TCP connection to `to` whose source address is `from` (any 127.x.y.z works on Linux
/// without setup).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One answer: the status code and the whole text (headers and body).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

/// Sends one HTTP/1.1 request with `Connection: close` from `from` and reads the answer to the
/// end, all within `timeout`.
pub async fn request_from(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Answer> {
    let work = async {
        let mut s = connect_from(from, to).await?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
        Ok(Answer { status, text })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))?
}

/// A login request body.
pub fn login_body(user: &str, password: &str) -> String {
    serde_json::json!({ "username": user, "password": password }).to_string()
}
