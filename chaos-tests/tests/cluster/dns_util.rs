//! Helpers for the DNS scenarios (`dns_faults`, `dns_fuzz`): the cluster config with DNS on
//! every node's own address, real queries over UDP and TCP built with hickory-proto, and
//! polling a node until its answer for the workspace name is what the test wants.
//!
//! Everything here talks to the nodes from 127.0.0.1, so the tests' own iptables partitions
//! (keyed on the nodes' addresses) never cut the test off from a node's DNS.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use chaos_tests::{ClusterOptions, TestCluster};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// DNS port on every node's own address.
pub const PORT: u16 = 8053;
/// The node refreshes its health view this often (`dns::health::PROBE_PERIOD`).
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// A node never serves a view older than this (`dns::handler::MAX_VIEW_AGE`).
pub const MAX_VIEW_AGE: Duration = Duration::from_secs(3);

/// `[dns]` on every node: `{node_ip}:PORT`, workspace `ws`, TTL `ttl_secs`, and the per-/24
/// rate limit (every query of a test comes from 127.0.0.1, one /24).
pub fn dns_options(ws: &str, ttl_secs: u64, rate_qps: u32, rate_burst: u32) -> ClusterOptions {
    ClusterOptions::default().top_level(
        "dns",
        &format!(
            "{{ addr = \"{{node_ip}}:{PORT}\", workspace = \"{ws}\", ttl_secs = {ttl_secs}, \
             rate_limit_qps = {rate_qps}, rate_limit_burst = {rate_burst} }}"
        ),
    )
}

pub fn dns_addr(cluster: &TestCluster, id: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(cluster.ip(id)), PORT)
}

/// The addresses of `ids`, as the workspace name's A records list them.
pub fn addrs(cluster: &TestCluster, ids: &[u64]) -> BTreeSet<IpAddr> {
    ids.iter().map(|id| IpAddr::V4(cluster.ip(*id))).collect()
}

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

/// A recursive-desired query with a fresh id.
pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

/// One UDP query; waits `timeout` for the answer with the query's id.
pub async fn udp(server: SocketAddr, q: &Message, timeout: Duration) -> anyhow::Result<Message> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(&q.to_vec()?, server).await?;
    let mut buf = vec![0u8; 65535];
    let m = tokio::time::timeout(timeout, async {
        loop {
            let (n, _) = sock.recv_from(&mut buf).await?;
            let m = Message::from_vec(&buf[..n])?;
            if m.metadata.id == q.metadata.id {
                return anyhow::Ok(m);
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))??;
    Ok(m)
}

/// One query over a fresh TCP connection (2-byte length prefix, RFC 1035 4.2.2).
pub async fn tcp(server: SocketAddr, q: &Message, timeout: Duration) -> anyhow::Result<Message> {
    tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect(server).await?;
        let body = q.to_vec()?;
        let mut framed = (body.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        s.write_all(&framed).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await?;
        anyhow::Ok(Message::from_vec(&buf)?)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no TCP answer within {timeout:?}"))?
}

pub fn a_records(m: &Message) -> BTreeSet<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// What a node answered for the workspace name's A records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these addresses (possibly none).
    Listed(BTreeSet<IpAddr>),
    /// Another response code.
    Rcode(ResponseCode),
    /// No answer (timeout, refused connection, unparseable reply).
    Silent(String),
}

impl Answer {
    pub fn lists(&self, want: &BTreeSet<IpAddr>) -> bool {
        matches!(self, Answer::Listed(got) if got == want)
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Listed(set) => {
                let ips: Vec<String> = set.iter().map(IpAddr::to_string).collect();
                write!(f, "NOERROR [{}]", ips.join(", "))
            }
            Answer::Rcode(rc) => write!(f, "{rc}"),
            Answer::Silent(why) => write!(f, "no answer ({why})"),
        }
    }
}

/// Asks `server` for the A records of `ws` over UDP.
pub async fn ask(server: SocketAddr, ws: &str, timeout: Duration) -> Answer {
    match udp(server, &query(ws, RecordType::A), timeout).await {
        Ok(m) if m.metadata.response_code == ResponseCode::NoError => Answer::Listed(a_records(&m)),
        Ok(m) => Answer::Rcode(m.metadata.response_code),
        Err(e) => Answer::Silent(format!("{e:#}")),
    }
}

/// Polls node `id` until its answer for `ws` is exactly `want`.
pub async fn wait_answer(
    cluster: &TestCluster,
    id: u64,
    ws: &str,
    want: &BTreeSet<IpAddr>,
    timeout: Duration,
) {
    let server = dns_addr(cluster, id);
    cluster
        .wait_until(
            &format!("node {id}'s DNS to list {want:?}"),
            timeout,
            || async {
                match ask(server, ws, Duration::from_millis(500)).await {
                    a if a.lists(want) => Ok(()),
                    a => Err(a.to_string()),
                }
            },
        )
        .await
}

/// Polls node `id` until it answers SERVFAIL for `ws`.
pub async fn wait_servfail(cluster: &TestCluster, id: u64, ws: &str, timeout: Duration) {
    let server = dns_addr(cluster, id);
    cluster
        .wait_until(
            &format!("node {id}'s DNS to answer SERVFAIL"),
            timeout,
            || async {
                match ask(server, ws, Duration::from_millis(500)).await {
                    Answer::Rcode(ResponseCode::ServFail) => Ok(()),
                    a => Err(a.to_string()),
                }
            },
        )
        .await
}
