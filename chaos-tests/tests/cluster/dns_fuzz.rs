//! A fuzz test of the DNS query path against a real node (built-in DNS): thousands of random and
//! mutated packets over UDP and some over TCP, from a seeded generator (the seed is printed;
//! `DNS_FUZZ_SEED=<n>` replays a run, `DNS_FUZZ_SEED=random` draws a new one; by default a
//! fixed seed, so CI is deterministic).
//!
//! Packets: random bytes; valid queries with flipped bits, cut short, with wrong section counts,
//! compression pointers that loop or point outside the message, names with too many or too
//! long labels, EDNS garbage; every qtype 0..=1024 and a spread of the rest, qclasses 0..=255,
//! every opcode, QR=1. Over TCP: mutated messages, length prefixes that lie, connections that
//! send half a message and stall, pipelined queries.
//!
//! Checked on every UDP response: it parses, it is a response, it is at most 512 bytes unless
//! the query carried EDNS (then at most its advertised size), a non-QUERY opcode or a response
//! sent as a query gets an error (FORMERR/NOTIMP/REFUSED) or nothing, and NOERROR with records
//! only ever comes for names inside the zone (never an open resolver). Between batches and at
//! the end the node must answer a valid query exactly as before, over UDP and TCP, and at the
//! end the process must still be running with no panic in its log. The rate limit is set out of
//! the way for that; a second test floods a node with a low limit and checks what the flood gets
//! back (the amplification bound).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chaos_tests::TestCluster;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::dns_util::{a_records, addrs, dns_addr, dns_options, query, tcp, udp};

const WS: &str = "chat.fuzz.test";
/// Packets sent at once, each from its own socket.
const BATCH: usize = 200;
/// Random and mutated UDP batches (plus the sweeps).
const RANDOM_BATCHES: usize = 15;
/// How long to wait for the answers of a batch; later ones count as dropped.
const BATCH_WAIT: Duration = Duration::from_millis(300);

/// SplitMix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

// ----- raw packet building --------------------------------------------------------------------

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn name(n: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in n.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// RD set, opcode QUERY.
const RD: u16 = 0x0100;

/// An OPT pseudo-record: root owner, type 41, class = payload size, TTL = ext-rcode/version/DO.
fn opt(payload: u16, version: u8, rdata: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8];
    r.extend_from_slice(&41u16.to_be_bytes());
    r.extend_from_slice(&payload.to_be_bytes());
    r.extend_from_slice(&[0, version, 0x80, 0]);
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// A well-formed query for `qname`, optionally with an OPT record of `payload` bytes.
fn valid(id: u16, qname: &str, qtype: u16, qclass: u16, edns: Option<u16>) -> Vec<u8> {
    let mut p = header(id, RD, [1, 0, 0, u16::from(edns.is_some())]);
    p.extend_from_slice(&name(qname));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&qclass.to_be_bytes());
    if let Some(size) = edns {
        p.extend_from_slice(&opt(size, 0, &[]));
    }
    p
}

fn with_id(mut p: Vec<u8>, id: u16) -> Vec<u8> {
    if p.len() >= 2 {
        p[..2].copy_from_slice(&id.to_be_bytes());
    }
    p
}

/// Names worth mutating: the zone's own, one that does not exist, one outside the zone.
fn base_query(rng: &mut Rng, id: u16) -> Vec<u8> {
    let names = [
        WS.to_owned(),
        format!("node1.{WS}"),
        format!("_conclave._tcp.{WS}"),
        format!("nope.{WS}"),
        "example.com".to_owned(),
        "fuzz.test".to_owned(),
    ];
    let qtypes = [1, 28, 33, 2, 6, 255, 252, 251, 16, 15];
    let edns = match rng.below(3) {
        0 => None,
        1 => Some(512),
        _ => Some(rng.pick(&[0, 1, 511, 1232, 4096, 65535])),
    };
    valid(
        id,
        &names[rng.below(names.len())],
        rng.pick(&qtypes),
        1,
        edns,
    )
}

/// One packet from the mutation mix, and what kind it is (for the summary).
fn mutated(rng: &mut Rng, id: u16) -> (&'static str, Vec<u8>) {
    let mut p = base_query(rng, id);
    let kind = match rng.below(12) {
        0 => {
            let n = rng.below(700);
            p = with_id(rng.bytes(n), id);
            "random bytes"
        }
        1 | 2 => {
            for _ in 0..=rng.below(8) {
                let bit = rng.below(p.len() * 8);
                p[bit / 8] ^= 1 << (bit % 8);
            }
            "flipped bits"
        }
        3 => {
            let n = rng.below(p.len());
            p.truncate(n);
            "truncated"
        }
        4 => {
            let section = rng.below(4);
            let r = rng.u16();
            let v = rng.pick(&[0, 2, 3, 255, 65535, r]);
            p[4 + 2 * section..6 + 2 * section].copy_from_slice(&v.to_be_bytes());
            "wrong counts"
        }
        5 => {
            let mut q = header(id, RD, [1, 0, 0, 0]);
            match rng.below(6) {
                // The name is a pointer to itself.
                0 => q.extend_from_slice(&[0xC0, 12]),
                // A label, then a pointer back to the start of the name.
                1 => q.extend_from_slice(&[1, b'a', 0xC0, 12]),
                // Two pointers pointing at each other.
                2 => q.extend_from_slice(&[0xC0, 14, 0xC0, 12]),
                // Pointing past the end, or into the header.
                3 => q.extend_from_slice(&[0xFF, 0xFF]),
                4 => q.extend_from_slice(&[0xC0, 0]),
                // A long chain of pointers, each to the one before.
                _ => {
                    q.extend_from_slice(&[1, b'x', 0]);
                    for k in 0..120u16 {
                        let target = 12 + if k == 0 { 0 } else { 3 + 2 * (k - 1) };
                        q.extend_from_slice(&(0xC000 | target).to_be_bytes());
                    }
                }
            }
            q.extend_from_slice(&[0, 1, 0, 1]);
            p = q;
            "compression pointers"
        }
        6 => {
            let mut q = header(id, RD, [1, 0, 0, 0]);
            match rng.below(4) {
                // 127 one-byte labels: 255 bytes, the most a name may have.
                0 => (0..127).for_each(|_| q.extend_from_slice(&[1, b'a'])),
                // 200 labels: 401 bytes, too long.
                1 => (0..200).for_each(|_| q.extend_from_slice(&[1, b'a'])),
                // Four 63-byte labels: 257 bytes, too long.
                2 => (0..4).for_each(|_| {
                    q.push(63);
                    q.extend_from_slice(&[b'b'; 63]);
                }),
                // Reserved label types (0b01, 0b10).
                _ => q.extend_from_slice(&[rng.pick(&[0x40, 0x80, 0x7F, 0xBF]), b'z', b'z']),
            }
            q.push(0);
            q.extend_from_slice(&[0, 1, 0, 1]);
            q.extend_from_slice(&name(WS));
            p = q;
            "huge or bad labels"
        }
        7 | 8 => {
            p = valid(id, WS, 1, 1, None);
            p[10..12].copy_from_slice(&1u16.to_be_bytes());
            match rng.below(7) {
                0 => {
                    let n = rng.below(60);
                    let r = rng.bytes(n);
                    p.extend_from_slice(&opt(rng.u16(), 0, &r));
                }
                1 => {
                    // rdlength that lies.
                    let mut o = opt(1232, 0, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
                    let at = o.len() - 14;
                    o[at..at + 2].copy_from_slice(&rng.u16().to_be_bytes());
                    p.extend_from_slice(&o);
                }
                2 => p.extend_from_slice(&opt(1232, rng.below(256) as u8, &[])),
                3 => {
                    // Two OPT records.
                    p[10..12].copy_from_slice(&2u16.to_be_bytes());
                    p.extend_from_slice(&opt(1232, 0, &[]));
                    p.extend_from_slice(&opt(4096, 0, &[]));
                }
                4 => {
                    // An OPT with a name that is not the root.
                    let mut o = opt(1232, 0, &[]);
                    o.remove(0);
                    let mut owner = name(WS);
                    owner.extend_from_slice(&o);
                    p.extend_from_slice(&owner);
                }
                5 => {
                    // Options whose lengths run past the record: ECS, cookie, padding.
                    let r = rng.u16();
                    let code = rng.pick(&[8u16, 10, 12, 15, r]);
                    let mut r = code.to_be_bytes().to_vec();
                    r.extend_from_slice(&rng.u16().to_be_bytes());
                    let n = rng.below(20);
                    r.extend(rng.bytes(n));
                    p.extend_from_slice(&opt(1232, 0, &r));
                }
                _ => {
                    // An OPT in the answer section of a query.
                    p[6..8].copy_from_slice(&1u16.to_be_bytes());
                    p[10..12].copy_from_slice(&0u16.to_be_bytes());
                    p.extend_from_slice(&opt(1232, 0, &[]));
                }
            }
            "EDNS garbage"
        }
        9 => {
            // Random flags (AA, TC, RA, Z, AD, CD, rcode) on a normal query.
            let flags = (rng.u16() & 0x07FF) | RD;
            p[2..4].copy_from_slice(&flags.to_be_bytes());
            "odd header flags"
        }
        10 => {
            // Trailing garbage after a complete message.
            let n = 1 + rng.below(100);
            p.extend(rng.bytes(n));
            "trailing bytes"
        }
        _ => {
            // A query with records in the answer and authority sections.
            p[6..8].copy_from_slice(&1u16.to_be_bytes());
            p.extend_from_slice(&name(WS));
            p.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 9, 9]);
            "records in a query"
        }
    };
    (kind, p)
}

// ----- checking responses ---------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    sent: usize,
    answered: usize,
    by_rcode: BTreeMap<String, usize>,
    by_kind: BTreeMap<&'static str, (usize, usize)>,
    problems: usize,
    problems_by_kind: BTreeMap<&'static str, usize>,
    violations: Vec<String>,
}

impl Tally {
    fn violation(&mut self, kind: &'static str, query: &[u8], what: String) {
        self.problems += 1;
        let of_kind = self.problems_by_kind.entry(kind).or_default();
        *of_kind += 1;
        // The first few of every kind, so one noisy kind does not hide the others.
        if *of_kind <= 3 {
            let hex: String = query.iter().take(80).map(|b| format!("{b:02x}")).collect();
            self.violations.push(format!(
                "[{kind}] {what}; query ({} bytes): {hex}",
                query.len()
            ));
        }
    }

    /// Checks one response (`udp`: the 512-byte / EDNS bound applies).
    fn check(&mut self, kind: &'static str, query: &[u8], resp: Option<&[u8]>, udp: bool) {
        self.sent += 1;
        let e = self.by_kind.entry(kind).or_default();
        e.0 += 1;
        let Some(resp) = resp else { return };
        e.1 += 1;
        self.answered += 1;
        let m = match Message::from_vec(resp) {
            Ok(m) => m,
            Err(err) => {
                return self.violation(kind, query, format!("unparseable response: {err}"));
            }
        };
        *self
            .by_rcode
            .entry(m.metadata.response_code.to_string())
            .or_default() += 1;
        if m.metadata.message_type != MessageType::Response {
            self.violation(kind, query, "the reply is not a response (QR=0)".into());
        }
        if query.len() >= 2 && m.metadata.id != u16::from_be_bytes([query[0], query[1]]) {
            self.violation(
                kind,
                query,
                format!("reply id {} ≠ query id", m.metadata.id),
            );
        }
        // What the query was, as far as it can be read.
        let parsed = Message::from_vec(query).ok();
        if udp {
            let limit = parsed
                .as_ref()
                .and_then(|q| q.edns.as_ref())
                .map_or(512, |e| usize::from(e.max_payload()).max(512));
            if resp.len() > limit {
                self.violation(
                    kind,
                    query,
                    format!("{}-byte UDP reply, limit {limit}", resp.len()),
                );
            }
        }
        let rc = m.metadata.response_code;
        let error_or_nothing = matches!(
            rc,
            ResponseCode::FormErr | ResponseCode::NotImp | ResponseCode::Refused
        ) && m.answers.is_empty();
        if query.len() >= 3 {
            let qr = query[2] & 0x80 != 0;
            let opcode = (query[2] >> 3) & 0x0F;
            if qr && !error_or_nothing {
                self.violation(kind, query, format!("QR=1 packet answered {rc}"));
            }
            if opcode != 0 && !error_or_nothing {
                self.violation(kind, query, format!("opcode {opcode} answered {rc}"));
            }
        }
        if parsed
            .as_ref()
            .is_some_and(|q| q.metadata.op_code != OpCode::Query)
            && !error_or_nothing
        {
            self.violation(kind, query, format!("non-QUERY opcode answered {rc}"));
        }
        let in_zone = |n: &str| {
            let n = n.to_ascii_lowercase();
            let n = n.trim_end_matches('.');
            n == WS || n.ends_with(&format!(".{WS}"))
        };
        for r in m.answers.iter().chain(&m.authorities) {
            if !in_zone(&r.name.to_ascii()) {
                self.violation(
                    kind,
                    query,
                    format!("{rc} with an out-of-zone record {}", r.name),
                );
            }
        }
        if let Some(q) = m.queries.first()
            && !in_zone(&q.name().to_ascii())
            && rc == ResponseCode::NoError
        {
            self.violation(
                kind,
                query,
                format!("NOERROR for the out-of-zone name {}", q.name()),
            );
        }
        if rc == ResponseCode::NoError && !m.answers.is_empty() {
            let qclass = m.queries.first().map(|q| u16::from(q.query_class()));
            if !matches!(qclass, Some(1 | 255)) {
                self.violation(
                    kind,
                    query,
                    format!(
                        "NOERROR for class {qclass:?} with {} record(s), first: {} (the zone \
                         is IN)",
                        m.answers.len(),
                        m.answers[0]
                    ),
                );
            }
        }
    }
}

/// Sends every packet from its own socket at once and collects what comes back in time.
async fn udp_batch(server: SocketAddr, packets: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    let mut socks = Vec::with_capacity(packets.len());
    for p in packets {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // An empty datagram is a valid thing to send, too.
        s.send_to(p, server).await.unwrap();
        socks.push(s);
    }
    let deadline = tokio::time::Instant::now() + BATCH_WAIT;
    futures::future::join_all(socks.iter().map(|s| async move {
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout_at(deadline, s.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }))
    .await
}

/// One message over its own TCP connection; the reply, if one comes within a second.
async fn tcp_one(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(server).await.unwrap();
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    s.write_all(&framed).await.ok()?;
    tokio::time::timeout(Duration::from_secs(1), async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf)
    })
    .await
    .ok()
    .flatten()
}

/// The node answers the workspace name over UDP exactly as it did at the start.
async fn still_answers(cluster: &TestCluster, server: SocketAddr, want: &BTreeSet<IpAddr>) {
    cluster
        .wait_until(
            "the node to answer a valid query as before",
            Duration::from_secs(5),
            || async {
                match udp(
                    server,
                    &query(WS, RecordType::A),
                    Duration::from_millis(500),
                )
                .await
                {
                    Ok(m)
                        if m.metadata.response_code == ResponseCode::NoError
                            && a_records(&m) == *want =>
                    {
                        Ok(())
                    }
                    Ok(m) => Err(format!("{} {:?}", m.metadata.response_code, a_records(&m))),
                    Err(e) => Err(format!("{e:#}")),
                }
            },
        )
        .await;
    assert!(cluster.is_running(1), "the node exited");
}

/// The default seed (see `dns_query_path_survives_fuzzing`).
const FIXED_SEED: u64 = 1_796_009_326_068_242_716;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_query_path_survives_fuzzing() {
    // A fixed seed by default, so CI runs the same packets every time and a red run is a
    // change, not luck: it is the seed whose packets once found a question echoed as a dangling
    // compression pointer. `DNS_FUZZ_SEED=<n>` replays a run; `DNS_FUZZ_SEED=random` explores.
    let seed = match std::env::var("DNS_FUZZ_SEED").ok().as_deref() {
        Some("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        Some(s) => s.parse().unwrap_or(FIXED_SEED),
        None => FIXED_SEED,
    };
    eprintln!("dns fuzz: seed {seed} (replay with DNS_FUZZ_SEED={seed})");
    let mut rng = Rng(seed);
    let started = Instant::now();

    // Rate limit far above what the test sends, so every packet reaches the query path.
    let cluster = TestCluster::start_with(1, dns_options(WS, 5, 1_000_000, 1_000_000)).await;
    let server = dns_addr(&cluster, 1);
    let want = addrs(&cluster, &[1]);
    still_answers(&cluster, server, &want).await;
    let baseline_tcp = tcp(server, &query(WS, RecordType::A), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(a_records(&baseline_tcp), want);

    let mut tally = Tally::default();
    let mut id: u16 = rng.u16();
    let mut next_id = || {
        id = id.wrapping_add(1);
        id
    };

    // Sweeps: qtypes, qclasses, opcodes, QR=1.
    let mut sweep: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let qtypes = (0..=1024u16)
        .chain((1025..=65535).step_by(97))
        .chain([65535]);
    for t in qtypes {
        sweep.push(("every qtype", valid(next_id(), WS, t, 1, None)));
    }
    for c in (0..=255u16).chain([65535, 0xFE00 | rng.u16() & 0xFF]) {
        sweep.push(("every qclass", valid(next_id(), WS, 1, c, None)));
    }
    for op in 1..=15u16 {
        for name in [WS, "example.com"] {
            let mut p = valid(next_id(), name, 1, 1, Some(1232));
            p[2..4].copy_from_slice(&(RD | (op << 11)).to_be_bytes());
            sweep.push(("opcode != QUERY", p));
        }
    }
    for name in [WS, "example.com"] {
        let mut p = valid(next_id(), name, 1, 1, None);
        p[2] |= 0x80;
        sweep.push(("QR=1", p.clone()));
        // A "response" with an answer, as a reflection attack would send.
        p[6..8].copy_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&name_bytes_answer());
        sweep.push(("QR=1", p));
    }
    for chunk in sweep.chunks(BATCH) {
        let packets: Vec<Vec<u8>> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let replies = udp_batch(server, &packets).await;
        for ((kind, p), r) in chunk.iter().zip(&replies) {
            tally.check(kind, p, r.as_deref(), true);
        }
    }
    still_answers(&cluster, server, &want).await;

    // Random and mutated packets, in batches, the node checked after each.
    for _ in 0..RANDOM_BATCHES {
        let batch: Vec<(&'static str, Vec<u8>)> =
            (0..BATCH).map(|_| mutated(&mut rng, next_id())).collect();
        let packets: Vec<Vec<u8>> = batch.iter().map(|(_, p)| p.clone()).collect();
        let replies = udp_batch(server, &packets).await;
        for ((kind, p), r) in batch.iter().zip(&replies) {
            tally.check(kind, p, r.as_deref(), true);
        }
        still_answers(&cluster, server, &want).await;
    }

    // TCP: mutated messages, each on its own connection, 50 at a time.
    let tcp_batch: Vec<(&'static str, Vec<u8>)> =
        (0..200).map(|_| mutated(&mut rng, next_id())).collect();
    for chunk in tcp_batch.chunks(50) {
        let replies =
            futures::future::join_all(chunk.iter().map(|(_, p)| tcp_one(server, p))).await;
        for ((kind, p), r) in chunk.iter().zip(&replies) {
            tally.check(kind, p, r.as_deref(), false);
        }
    }

    // TCP framing abuse. Connections that send half a message and stall stay open meanwhile.
    let good = valid(next_id(), WS, 1, 1, None);
    let mut stalled = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(server).await.unwrap();
        let mut framed = (good.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&good[..good.len() / 2]);
        s.write_all(&framed).await.unwrap();
        stalled.push(s);
    }
    // A prefix promising more than is sent, then the write side closed.
    for (claim, sent) in [(400u16, good.len()), (65535, 1000), (0, 0), (3, good.len())] {
        let mut s = TcpStream::connect(server).await.unwrap();
        s.write_all(&claim.to_be_bytes()).await.unwrap();
        let body: Vec<u8> = good.iter().copied().cycle().take(sent).collect();
        let _ = s.write_all(&body).await;
        let _ = s.shutdown().await;
        // Whatever comes back must be a well-formed response; mostly the server just closes.
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
        if buf.len() >= 2 {
            let n = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            let reply = buf.get(2..2 + n);
            tally.check("lying length prefix", &good, reply, false);
        }
    }
    // Three queries in one write: three answers, in any order.
    let mut s = TcpStream::connect(server).await.unwrap();
    let ids: Vec<u16> = (0..3).map(|_| next_id()).collect();
    let mut framed = Vec::new();
    for id in &ids {
        let q = valid(*id, WS, 1, 1, None);
        framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
        framed.extend_from_slice(&q);
    }
    s.write_all(&framed).await.unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let reply = tokio::time::timeout(Duration::from_secs(2), async {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await?;
            std::io::Result::Ok(buf)
        })
        .await
        .expect("pipelined TCP answer in time")
        .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(a_records(&m), want);
        got.insert(m.metadata.id);
    }
    assert_eq!(got, ids.iter().copied().collect(), "pipelined answers");
    // While the stalled connections hang on, fresh clients are still served on both transports.
    still_answers(&cluster, server, &want).await;
    let m = tcp(server, &query(WS, RecordType::A), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(a_records(&m), want, "TCP with stalled connections open");
    drop(stalled);

    eprintln!(
        "dns fuzz: {} packets, {} answered, {:.1} s; rcodes {:?}",
        tally.sent,
        tally.answered,
        started.elapsed().as_secs_f64(),
        tally.by_rcode
    );
    for (kind, (sent, answered)) in &tally.by_kind {
        eprintln!("dns fuzz: - {kind}: {sent} sent, {answered} answered");
    }
    if !tally.violations.is_empty() {
        cluster.fail(&format!(
            "seed {seed}: {} problem(s) {:?}, the first of each kind:\n{}",
            tally.problems,
            tally.problems_by_kind,
            tally.violations.join("\n")
        ));
    }

    // The end: same answers as at the start, over both transports, and no crash or panic.
    still_answers(&cluster, server, &want).await;
    let m = tcp(server, &query(WS, RecordType::A), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(a_records(&m), a_records(&baseline_tcp));
    assert!(cluster.node(1).exit_status().is_none(), "the node crashed");
    let log = std::fs::read_to_string(&cluster.node(1).spec.log_path).unwrap();
    assert!(
        !log.contains("panicked"),
        "the node logged a panic:\n{}",
        cluster.log_tail(1)
    );
}

/// An A record for the workspace name, as the answer section of a forged "response".
fn name_bytes_answer() -> Vec<u8> {
    let mut r = name(WS);
    r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 6, 6, 6]);
    r
}

/// The amplification bound with the rate limit in force (a low one, so a burst from one /24
/// crosses it): beyond the bucket a source gets nothing or an empty TC=1 reply no bigger than
/// its query, never the full answer; TCP (which cannot be spoofed) is still served; and once the
/// bucket refills, UDP is answered in full again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rate_limit_bounds_what_a_udp_flood_gets_back() {
    const QPS: u32 = 20;
    const BURST: u32 = 20;
    let cluster = TestCluster::start_with(1, dns_options(WS, 5, QPS, BURST)).await;
    let server = dns_addr(&cluster, 1);
    let want = addrs(&cluster, &[1]);
    still_answers(&cluster, server, &want).await;

    // ANY with a 4096-byte EDNS buffer: the query an amplifier would use.
    let packets: Vec<Vec<u8>> = (0..1000u16)
        .map(|i| valid(i, WS, 255, 1, Some(4096)))
        .collect();
    let start = Instant::now();
    let replies = udp_batch(server, &packets).await;
    let elapsed = start.elapsed();
    let (mut full, mut slipped, mut dropped) = (0u64, 0u64, 0u64);
    let (mut bytes_in, mut bytes_out) = (0usize, 0usize);
    let mut tally = Tally::default();
    for (q, r) in packets.iter().zip(&replies) {
        bytes_in += q.len();
        tally.check("flood", q, r.as_deref(), true);
        let Some(r) = r else {
            dropped += 1;
            continue;
        };
        bytes_out += r.len();
        let m = Message::from_vec(r).unwrap();
        if m.metadata.truncation {
            assert!(m.answers.is_empty(), "a slipped reply carries records");
            assert!(
                r.len() <= q.len() + 11,
                "a slipped reply ({} bytes) is bigger than its query ({} bytes) plus an OPT",
                r.len(),
                q.len()
            );
            slipped += 1;
        } else {
            full += 1;
        }
    }
    assert!(
        tally.violations.is_empty(),
        "{:?}",
        tally.violations.first()
    );
    // Tokens: the burst plus what refilled while the flood was being answered.
    let allowed = u64::from(BURST) + (f64::from(QPS) * elapsed.as_secs_f64()).ceil() as u64 + 1;
    eprintln!(
        "dns rate limit: 1000 queries in {elapsed:?}: {full} full answers (at most {allowed} \
         allowed), {slipped} TC=1, {dropped} dropped; {bytes_in} bytes in, {bytes_out} out"
    );
    assert!(full <= allowed, "{full} full answers > {allowed}");
    assert!(slipped > 0 && dropped > 0, "over the limit: slip and drop");

    // TCP is not rate limited, and UDP recovers once the bucket refills.
    let m = tcp(server, &query(WS, RecordType::A), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(a_records(&m), want, "TCP during the flood");
    still_answers(&cluster, server, &want).await;
}
