//! Built-in DNS against real processes: every node answers the workspace name with
//! exactly the healthy nodes; a SIGKILLed node leaves every survivor's answer within
//! 2 × TTL + one probe period and comes back once restarted and caught up; the zone refuses
//! out-of-zone queries and transfers, answers `nodeN`, and NXDOMAIN carries the SOA.
//! A node left without a majority answers SERVFAIL instead of stale data.
//! Queries are real DNS packets over UDP (and TCP), built with hickory-proto.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use chaos_tests::{ClusterOptions, TestCluster};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::dns_util::{self, PROBE_PERIOD, a_records, dns_addr};

const WS: &str = "chat.dns.test";
const TTL_SECS: u64 = 1;
const ASK: Duration = Duration::from_secs(1);

async fn udp(server: std::net::SocketAddr, q: &Message) -> anyhow::Result<Message> {
    dns_util::udp(server, q, ASK).await
}

async fn tcp(server: std::net::SocketAddr, q: &Message) -> anyhow::Result<Message> {
    dns_util::tcp(server, q, ASK).await
}

fn query(name: &str, qtype: RecordType) -> Message {
    dns_util::query(name, qtype)
}

/// Polls `server` until its answer for the workspace name is exactly `want`.
async fn wait_answer(
    cluster: &TestCluster,
    server: u64,
    want: &BTreeSet<IpAddr>,
    timeout: Duration,
) {
    dns_util::wait_answer(cluster, server, WS, want, timeout).await
}

/// DNS on every node's own address with a short TTL to keep the test fast, and the default
/// rate limit (200/s, burst 400), which these tests stay well under.
fn dns_options() -> ClusterOptions {
    dns_util::dns_options(WS, TTL_SECS, 200, 400)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_lists_only_healthy_nodes() {
    let cluster = TestCluster::start_with(3, dns_options()).await;
    let all: BTreeSet<IpAddr> = (1..=3).map(|id| IpAddr::V4(cluster.ip(id))).collect();
    for id in 1..=3 {
        wait_answer(&cluster, id, &all, cluster.ready_timeout()).await;
    }

    // The zone's other names, over UDP and once over TCP.
    let s1 = dns_addr(&cluster, 1);
    let m = udp(s1, &query(&format!("node2.{WS}"), RecordType::A))
        .await
        .unwrap();
    assert_eq!(a_records(&m), BTreeSet::from([IpAddr::V4(cluster.ip(2))]));
    assert!(m.metadata.authoritative);
    let m = tcp(s1, &query(WS, RecordType::A)).await.unwrap();
    assert_eq!(a_records(&m), all, "over TCP");
    let m = udp(s1, &query("example.com.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "out of zone"
    );
    let m = tcp(s1, &query(WS, RecordType::AXFR)).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "AXFR");
    assert!(m.answers.is_empty());
    let m = udp(s1, &query(&format!("nope.{WS}"), RecordType::A))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    match m.authorities.first().map(|r| &r.data) {
        Some(RData::SOA(soa)) => assert_eq!(u64::from(soa.minimum), TTL_SECS),
        other => panic!("NXDOMAIN without an SOA: {other:?}"),
    }
    let m = udp(s1, &query(&format!("_conclave._tcp.{WS}"), RecordType::SRV))
        .await
        .unwrap();
    assert_eq!(m.answers.len(), 3, "SRV per healthy node");

    // SIGKILL one node: it leaves every survivor's answer within 2 × TTL + one probe period.
    let victim = 3;
    cluster.kill(victim);
    let killed = Instant::now();
    let survivors: BTreeSet<IpAddr> = (1..=2).map(|id| IpAddr::V4(cluster.ip(id))).collect();
    let deadline = Duration::from_secs(2 * TTL_SECS) + PROBE_PERIOD;
    for id in 1..=2 {
        let left = deadline.saturating_sub(killed.elapsed());
        wait_answer(&cluster, id, &survivors, left).await;
    }
    let removal = killed.elapsed();
    eprintln!("dns: killed node removed from both survivors' answers after {removal:?}");
    assert!(removal <= deadline, "{removal:?} > {deadline:?}");

    // Restarted and caught up, it is listed again, by everyone including itself.
    cluster.restart(victim).await;
    for id in 1..=3 {
        wait_answer(&cluster, id, &all, cluster.ready_timeout()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_without_a_majority_answers_servfail() {
    let cluster = TestCluster::start_with(3, dns_options()).await;
    let all: BTreeSet<IpAddr> = (1..=3).map(|id| IpAddr::V4(cluster.ip(id))).collect();
    wait_answer(&cluster, 1, &all, cluster.ready_timeout()).await;

    // With both peers dead, node 1 has no leader and no quorum: it must not keep listing itself
    // (stale data), but fail so resolvers ask a name server on the majority side.
    cluster.kill(2);
    cluster.kill(3);
    let s1 = dns_addr(&cluster, 1);
    let cut = Instant::now();
    cluster
        .wait_until(
            "node 1 answers SERVFAIL",
            cluster.ready_timeout(),
            || async {
                match udp(s1, &query(WS, RecordType::A)).await {
                    Ok(m) if m.metadata.response_code == ResponseCode::ServFail => Ok(()),
                    Ok(m) => Err(format!("{} {:?}", m.metadata.response_code, a_records(&m))),
                    Err(e) => Err(format!("{e:#}")),
                }
            },
        )
        .await;
    eprintln!(
        "dns: node without a majority answers SERVFAIL after {:?}",
        cut.elapsed()
    );
    // Still never an open resolver.
    let m = udp(s1, &query("example.com.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    // Majority back: node 1 answers again, with every node once all are caught up.
    cluster.start_all().await;
    wait_answer(&cluster, 1, &all, cluster.ready_timeout()).await;
}
