//! A minimal DNS stub for operator checks: one question (A, AAAA or SRV) sent straight to one
//! given server over UDP, retried over TCP when the answer comes back truncated.
//!
//! Owns parsing the operator's `--dns SERVER[:PORT]` and workspace arguments and turning the
//! wire answer into plain Rust values ([`DnsAnswer`]), so callers never see hickory types. It
//! must never use the system resolver (the point is to ask *this* server), never recurse or
//! follow CNAMEs, never panic on a malformed or hostile packet, and never wait longer than the
//! deadline it was given.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// The DNS port when `--dns` gives none.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// EDNS buffer size we advertise: the DNS Flag Day 2020 value, which fits one unfragmented
/// packet on any path, so a cluster of a dozen nodes still answers without falling back to TCP.
const EDNS_PAYLOAD: u16 = 1232;
/// The first UDP attempt waits this long; each retry doubles it (UDP may simply be lost).
const FIRST_UDP_WAIT: Duration = Duration::from_millis(800);

/// The question types an operator check asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsQuestion {
    A,
    Aaaa,
    Srv,
}

impl DnsQuestion {
    fn record_type(self) -> RecordType {
        match self {
            DnsQuestion::A => RecordType::A,
            DnsQuestion::Aaaa => RecordType::AAAA,
            DnsQuestion::Srv => RecordType::SRV,
        }
    }
}

impl fmt::Display for DnsQuestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsQuestion::A => "A",
            DnsQuestion::Aaaa => "AAAA",
            DnsQuestion::Srv => "SRV",
        })
    }
}

/// The response code of an answer, with the ones a check must explain spelled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRcode {
    NoError,
    ServFail,
    NxDomain,
    Refused,
    /// Any other code (FORMERR, NOTIMP, BADVERS, ...), as its number.
    Other(u16),
}

impl fmt::Display for DnsRcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsRcode::NoError => f.write_str("NOERROR"),
            DnsRcode::ServFail => f.write_str("SERVFAIL"),
            DnsRcode::NxDomain => f.write_str("NXDOMAIN"),
            DnsRcode::Refused => f.write_str("REFUSED"),
            DnsRcode::Other(code) => write!(f, "rcode {code}"),
        }
    }
}

impl From<ResponseCode> for DnsRcode {
    fn from(code: ResponseCode) -> DnsRcode {
        match code {
            ResponseCode::NoError => DnsRcode::NoError,
            ResponseCode::ServFail => DnsRcode::ServFail,
            ResponseCode::NXDomain => DnsRcode::NxDomain,
            ResponseCode::Refused => DnsRcode::Refused,
            other => DnsRcode::Other(u16::from(other)),
        }
    }
}

/// One record of the answer section that a check cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsRecord {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        /// Lower case, without the trailing dot.
        target: String,
    },
}

/// A decoded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub rcode: DnsRcode,
    /// The AA bit: the server answered from its own zone.
    pub authoritative: bool,
    /// Answer-section records of the asked type for the asked name (others are ignored).
    pub records: Vec<DnsRecord>,
    /// The UDP answer was truncated and this one came over TCP.
    pub via_tcp: bool,
}

impl DnsAnswer {
    /// The addresses among the records.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.records
            .iter()
            .filter_map(|r| match r {
                DnsRecord::A(v4) => Some(IpAddr::V4(*v4)),
                DnsRecord::Aaaa(v6) => Some(IpAddr::V6(*v6)),
                DnsRecord::Srv { .. } => None,
            })
            .collect()
    }
}

/// Why a query got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsQueryError {
    #[error("no answer from {server} within {} ms", .after.as_millis())]
    Timeout { server: SocketAddr, after: Duration },
    /// ICMP port unreachable (UDP) or a refused TCP connection: nothing listens there.
    #[error("nothing answers DNS on {server} (connection refused)")]
    ConnectionRefused { server: SocketAddr },
    #[error("DNS exchange with {server} failed: {message}")]
    Io { server: SocketAddr, message: String },
    /// The reply did not decode, or did not answer our question.
    #[error("bad DNS reply from {server}: {message}")]
    BadReply { server: SocketAddr, message: String },
    /// The name could not be put into a query (callers validate first; kept for safety).
    #[error("cannot ask for {name:?}: {message}")]
    BadName { name: String, message: String },
}

/// Parses `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address (port 53 if absent).
///
/// A host name is refused on purpose: resolving it would go through the very system resolver
/// whose setup the check is meant to test.
pub fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_DNS_PORT));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<Ipv6Addr>()
    {
        return Ok(SocketAddr::new(IpAddr::V6(ip), DEFAULT_DNS_PORT));
    }
    if let Some((_, port)) = s.rsplit_once(':')
        && port.parse::<u16>().is_err()
    {
        return Err(format!(
            "--dns {s:?}: the port must be a number from 0 to 65535"
        ));
    }
    Err(format!(
        "--dns {s:?} is not an IP address with an optional port (like 10.0.0.11, \
         10.0.0.11:53 or [fd00::11]:53); give the DNS server's address, not its name"
    ))
}

/// Checks that `s` is a usable domain name (letters, digits and hyphens in dot-separated
/// labels of 1 to 63 characters, at most 253 in all, an optional trailing dot) and returns it
/// in lower case without the trailing dot.
pub fn normalize_domain(s: &str) -> Result<String, String> {
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    let bad = |why: &str| Err(format!("workspace {s:?} is not a domain name: {why}"));
    if trimmed.is_empty() {
        return bad("it is empty");
    }
    if trimmed.len() > 253 {
        return bad("longer than 253 characters");
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return bad("it has an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only letters, digits, hyphens and dots are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with a hyphen");
        }
    }
    if trimmed.parse::<IpAddr>().is_ok() {
        return bad("that is an IP address (the DNS server goes in --dns)");
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// Asks `server` one question about `name`, over UDP and then over TCP if the reply is
/// truncated. UDP is retried (with a doubling wait) until `timeout` has passed in all.
pub async fn query(
    server: SocketAddr,
    name: &str,
    question: DnsQuestion,
    timeout: Duration,
) -> Result<DnsAnswer, DnsQueryError> {
    let deadline = Instant::now() + timeout;
    let qname = fqdn(name)?;
    let id: u16 = rand::random();
    let request = build_query(id, &qname, question.record_type());
    let bytes = request.to_vec().map_err(|e| DnsQueryError::BadName {
        name: name.to_owned(),
        message: e.to_string(),
    })?;
    let reply = udp_exchange(server, id, &bytes, deadline, timeout).await?;
    if !reply.metadata.truncation {
        return decode(server, &reply, &qname, question, false);
    }
    let reply = tcp_exchange(server, id, &bytes, deadline, timeout).await?;
    decode(server, &reply, &qname, question, true)
}

fn fqdn(name: &str) -> Result<Name, DnsQueryError> {
    let mut n = Name::from_ascii(name).map_err(|e| DnsQueryError::BadName {
        name: name.to_owned(),
        message: e.to_string(),
    })?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

fn build_query(id: u16, name: &Name, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = id;
    // We ask an authoritative server directly: recursion is neither wanted nor offered.
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    m.set_edns(edns);
    m
}

/// Whether `reply` answers our query (same id, a response, our question echoed if any).
fn is_reply_to(reply: &Message, id: u16) -> bool {
    reply.metadata.id == id && reply.metadata.message_type == MessageType::Response
}

async fn udp_exchange(
    server: SocketAddr,
    id: u16,
    bytes: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<Message, DnsQueryError> {
    let io = |e: std::io::Error| io_error(server, e);
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
    // Connected, so the kernel drops datagrams from anyone else and reports ICMP
    // "port unreachable" as ECONNREFUSED instead of a silent timeout.
    sock.connect(server).await.map_err(io)?;
    let mut wait = FIRST_UDP_WAIT;
    let mut buf = vec![0u8; 65_535];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(DnsQueryError::Timeout {
                server,
                after: timeout,
            });
        }
        sock.send(bytes).await.map_err(io)?;
        let attempt_end = (now + wait).min(deadline);
        wait = wait.saturating_mul(2);
        // Read until this attempt's time is up; stray or garbled datagrams are skipped, since
        // a spoofed packet must not be able to make the check fail or pass.
        loop {
            match tokio::time::timeout_at(attempt_end, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(io(e)),
                Ok(Ok(n)) => {
                    let Some(packet) = buf.get(..n) else { continue };
                    if let Ok(reply) = Message::from_vec(packet)
                        && is_reply_to(&reply, id)
                    {
                        return Ok(reply);
                    }
                }
            }
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    id: u16,
    bytes: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<Message, DnsQueryError> {
    let timed_out = || DnsQueryError::Timeout {
        server,
        after: timeout,
    };
    let io = |e: std::io::Error| io_error(server, e);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server).await.map_err(io)?;
        let len = u16::try_from(bytes.len()).map_err(|_| DnsQueryError::BadName {
            name: String::new(),
            message: "query too long for TCP".into(),
        })?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await.map_err(io)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(io)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.map_err(io)?;
        let reply = Message::from_vec(&buf).map_err(|e| DnsQueryError::BadReply {
            server,
            message: e.to_string(),
        })?;
        if !is_reply_to(&reply, id) {
            return Err(DnsQueryError::BadReply {
                server,
                message: "the TCP reply does not answer the query (wrong id)".into(),
            });
        }
        Ok(reply)
    };
    tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| timed_out())?
}

fn io_error(server: SocketAddr, e: std::io::Error) -> DnsQueryError {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        DnsQueryError::ConnectionRefused { server }
    } else {
        DnsQueryError::Io {
            server,
            message: e.to_string(),
        }
    }
}

fn decode(
    server: SocketAddr,
    reply: &Message,
    qname: &Name,
    question: DnsQuestion,
    via_tcp: bool,
) -> Result<DnsAnswer, DnsQueryError> {
    if let Some(q) = reply.queries.first()
        && (q.name().to_lowercase() != *qname || q.query_type() != question.record_type())
    {
        return Err(DnsQueryError::BadReply {
            server,
            message: format!(
                "it answers {} {} instead of {qname} {question}",
                q.name(),
                q.query_type()
            ),
        });
    }
    let records = reply
        .answers
        .iter()
        .filter(|r| r.name.to_lowercase() == *qname)
        .filter_map(|r| match (&r.data, question) {
            (RData::A(a), DnsQuestion::A) => Some(DnsRecord::A(a.0)),
            (RData::AAAA(a), DnsQuestion::Aaaa) => Some(DnsRecord::Aaaa(a.0)),
            (RData::SRV(srv), DnsQuestion::Srv) => Some(DnsRecord::Srv {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv
                    .target
                    .to_lowercase()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_owned(),
            }),
            _ => None,
        })
        .collect();
    Ok(DnsAnswer {
        rcode: reply.metadata.response_code.into(),
        authoritative: reply.metadata.authoritative,
        records,
        via_tcp,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, SRV};

    #[test]
    fn dns_server_forms() {
        assert_eq!(
            parse_dns_server("10.0.0.11").unwrap(),
            "10.0.0.11:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("127.0.0.1:8053").unwrap(),
            "127.0.0.1:8053".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("fd00::11").unwrap(),
            "[fd00::11]:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("[fd00::11]").unwrap(),
            "[fd00::11]:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("[fd00::11]:5353").unwrap(),
            "[fd00::11]:5353".parse().unwrap()
        );
        assert!(
            parse_dns_server("ns1.corp.lan")
                .unwrap_err()
                .contains("not its name")
        );
        assert!(
            parse_dns_server("10.0.0.1:99999")
                .unwrap_err()
                .contains("port")
        );
        assert!(parse_dns_server("").is_err());
    }

    #[test]
    fn domain_names() {
        assert_eq!(normalize_domain("Chat.Corp.LAN.").unwrap(), "chat.corp.lan");
        assert_eq!(normalize_domain("localhost").unwrap(), "localhost");
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "-a.b",
            "a-.b",
            "a b",
            "chat_x.lan",
            "10.0.0.1",
            "http://chat.lan",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_domain(&format!("{}.lan", "a".repeat(64))).is_err());
    }

    fn reply_for(q: &Message) -> Message {
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.add_queries(q.queries.clone());
        r
    }

    #[test]
    fn decodes_only_matching_records() {
        let name = fqdn("chat.test").unwrap();
        let q = build_query(7, &name, RecordType::A);
        let mut r = reply_for(&q);
        r.metadata.authoritative = true;
        r.add_answer(Record::from_rdata(
            name.clone(),
            5,
            RData::A(A::new(10, 0, 0, 1)),
        ));
        // A record for another name must not be taken as one of ours.
        r.add_answer(Record::from_rdata(
            fqdn("evil.test").unwrap(),
            5,
            RData::A(A::new(10, 6, 6, 6)),
        ));
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let bytes = r.to_vec().unwrap();
        let back = Message::from_vec(&bytes).unwrap();
        assert!(is_reply_to(&back, 7));
        assert!(!is_reply_to(&back, 8));
        let a = decode(server, &back, &name, DnsQuestion::A, false).unwrap();
        assert_eq!(a.rcode, DnsRcode::NoError);
        assert!(a.authoritative);
        assert_eq!(a.addresses(), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);

        let srv_name = fqdn("_conclave._tcp.chat.test").unwrap();
        let q = build_query(9, &srv_name, RecordType::SRV);
        let mut r = reply_for(&q);
        r.add_answer(Record::from_rdata(
            srv_name.clone(),
            5,
            RData::SRV(SRV::new(10, 10, 8080, fqdn("Node1.chat.test").unwrap())),
        ));
        let a = decode(server, &r, &srv_name, DnsQuestion::Srv, false).unwrap();
        assert_eq!(
            a.records,
            vec![DnsRecord::Srv {
                priority: 10,
                weight: 10,
                port: 8080,
                target: "node1.chat.test".into()
            }]
        );
        // An answer to another question is an error, not an empty answer.
        assert!(decode(server, &r, &name, DnsQuestion::A, false).is_err());
    }

    #[test]
    fn rcodes() {
        assert_eq!(DnsRcode::from(ResponseCode::Refused), DnsRcode::Refused);
        assert_eq!(
            DnsRcode::from(ResponseCode::ServFail).to_string(),
            "SERVFAIL"
        );
        assert_eq!(DnsRcode::from(ResponseCode::FormErr), DnsRcode::Other(1));
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        // A bound socket that never answers.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = silent.local_addr().unwrap();
        let err = query(
            server,
            "chat.test",
            DnsQuestion::A,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DnsQueryError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn truncated_udp_answer_is_retried_over_tcp() {
        // A UDP port whose TCP twin is free too: other tests may hold thousands of TCP
        // ports on loopback, so the first pick can be taken.
        let mut pair = None;
        for _ in 0..100 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                pair = Some((udp, tcp));
                break;
            }
        }
        let (udp, tcp) = pair.unwrap();
        let server = udp.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let (n, from) = udp.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = reply_for(&q);
            r.metadata.truncation = true;
            udp.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut body).await.unwrap();
            let q = Message::from_vec(&body).unwrap();
            let mut r = reply_for(&q);
            r.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                5,
                RData::A(A::new(10, 0, 0, 2)),
            ));
            let out = r.to_vec().unwrap();
            s.write_all(&(out.len() as u16).to_be_bytes())
                .await
                .unwrap();
            s.write_all(&out).await.unwrap();
        });
        let a = query(server, "chat.test", DnsQuestion::A, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(a.via_tcp);
        assert_eq!(a.addresses(), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))]);
        fake.await.unwrap();
    }
}
