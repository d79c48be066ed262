//! `dns-bench`: the built-in DNS server of a 3-node Conclave cluster on loopback. Run
//! by hand on a release build; CI smoke-runs it at a tiny size
//! (`chaos-tests/bench/smoke.sh`) so it cannot rot:
//!
//! ```text
//! cargo build --release -p node -p chaos-tests
//! $CARGO_TARGET_DIR/release/dns-bench --duration 10s --sockets 4 --window 64 --kills 3
//! ```
//!
//! Starts a real 3-node cluster with DNS on every node (`127.a.b.N:8053`, workspace
//! `chat.bench.test`, TTL `--ttl`, the per-/24 rate limit raised out of the way), then:
//!
//! 1. **Queries per second** for the workspace A record against one node: `--sockets` UDP
//!    sockets, each keeping `--window` queries outstanding, for `--duration`. Every answer is
//!    checked (NOERROR, three A records); a query unanswered for a second counts as a timeout
//!    and is sent again. Reports answered/s, latency p50/p99/max, the node's CPU.
//! 2. **dnsperf** (Debian's `dnsperf`, if it is on the PATH and `--no-dnsperf` is not given):
//!    the same query from a queries file against the same node, its own report printed as is.
//! 3. **Removal after a crash**, `--kills` times: SIGKILL one node (round robin over the nodes),
//!    poll both survivors every 10 ms, and report when each first stopped listing it and when
//!    each first answered NOERROR without it (the target is 2 × TTL), then, until 2 × TTL after
//!    the kill, how many answers were not NOERROR and how many listed it again. The node is
//!    restarted and listed by everyone again before the next round.
//!
//! Errors are reported, never turned into panics.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use chaos_tests::bench_main;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chaos_tests::wait::poll_until;
use chaos_tests::{ClusterOptions, TestCluster};
use clap::Parser;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

const WS: &str = "chat.bench.test";
const PORT: u16 = 8053;

#[derive(Parser, Debug)]
#[command(about = "Built-in DNS benchmark of a 3-node Conclave cluster (release build)")]
struct Args {
    /// Measured window of the queries-per-second phase (e.g. 10s, 1500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = chaos_tests::duration_arg::parse)]
    duration: Duration,
    /// Warm-up before the measured window.
    #[arg(long, default_value = "2s", value_parser = chaos_tests::duration_arg::parse)]
    warmup: Duration,
    /// UDP sockets (one task each) sending to the node.
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// Queries each socket keeps outstanding (1..=256).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// The node the queries go to.
    #[arg(long, default_value_t = 1)]
    node: u64,
    /// TTL of the workspace records, seconds (the removal target is 2 × TTL).
    #[arg(long, default_value_t = 5)]
    ttl: u64,
    /// SIGKILL rounds for the removal measurement (0 to skip).
    #[arg(long, default_value_t = 3)]
    kills: usize,
    /// Skip dnsperf even if it is installed.
    #[arg(long)]
    no_dnsperf: bool,
    /// dnsperf: clients (-c) and outstanding queries (-q).
    #[arg(long, default_value_t = 4)]
    dnsperf_clients: usize,
    #[arg(long, default_value_t = 256)]
    dnsperf_outstanding: usize,
    /// Load-generator threads: 1 = a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Server binary (default: $CONCLAVE_BIN, else `conclave` in the release dir next to this binary).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Keep the data dir and node logs after the run.
    #[arg(long)]
    keep: bool,
}

fn dns_addr(cluster: &TestCluster, id: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(cluster.ip(id)), PORT)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[allow(unsafe_code)]
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes an integer and returns one.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The whole machine's busy and total ticks (`/proc/stat`, first line).
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

// ----- queries --------------------------------------------------------------------------------

/// The wire form of an A query for the workspace name with id 0 (the id is patched per send).
fn query_bytes() -> Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(WS)?, RecordType::A));
    Ok(m.to_vec()?)
}

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

async fn ask(server: SocketAddr) -> Result<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let mut q = query_bytes()?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    q[..2].copy_from_slice(&id.to_be_bytes());
    sock.send_to(&q, server).await?;
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let (n, _) = sock.recv_from(&mut buf).await?;
            let m = Message::from_vec(&buf[..n])?;
            if m.metadata.id == id {
                return Ok(m);
            }
        }
    })
    .await
    .context("no answer within 500 ms")?
}

fn a_set(m: &Message) -> BTreeSet<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// Some(set) for NOERROR, None for anything else.
async fn listed(server: SocketAddr) -> Option<BTreeSet<IpAddr>> {
    match ask(server).await {
        Ok(m) if m.metadata.response_code == ResponseCode::NoError => Some(a_set(&m)),
        _ => None,
    }
}

async fn wait_listed(cluster: &TestCluster, id: u64, want: &BTreeSet<IpAddr>) -> Result<()> {
    let server = dns_addr(cluster, id);
    poll_until(
        &format!("node {id} to list {want:?}"),
        cluster.ready_timeout(),
        || async {
            match listed(server).await {
                Some(s) if s == *want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

// ----- phase 1: queries per second ------------------------------------------------------------

#[derive(Default)]
struct Blast {
    sent: u64,
    answered: u64,
    wrong: u64,
    timeouts: u64,
    latencies_us: Vec<u32>,
}

/// One socket keeping `window` queries outstanding until `end`; only answers to queries sent
/// at or after `from` are counted (the warm-up is not).
async fn blaster(
    server: SocketAddr,
    window: usize,
    expect_answers: u16,
    from: Instant,
    end: Instant,
) -> Result<Blast> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(server).await?;
    let template = query_bytes()?;
    // id = generation << 8 | slot: a late answer to an earlier generation is ignored.
    let mut sent_at: Vec<Instant> = vec![Instant::now(); window];
    let mut generation: Vec<u8> = vec![0; window];
    let mut q = template.clone();
    let mut out = Blast::default();
    let send = |slot: usize, generation: u8, q: &mut Vec<u8>| {
        let id = (u16::from(generation) << 8) | slot as u16;
        q[..2].copy_from_slice(&id.to_be_bytes());
    };
    for (slot, at) in sent_at.iter_mut().enumerate() {
        send(slot, 0, &mut q);
        sock.send(&q).await?;
        *at = Instant::now();
    }
    let mut buf = vec![0u8; 1500];
    let mut last_scan = Instant::now();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let wait = (end - now).min(Duration::from_millis(100));
        let got = tokio::time::timeout(wait, sock.recv(&mut buf)).await;
        let now = Instant::now();
        if let Ok(Ok(n)) = got
            && n >= 12
        {
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let slot = usize::from(id & 0xFF);
            if slot < window && generation[slot] == (id >> 8) as u8 {
                if sent_at[slot] >= from {
                    let rcode = buf[3] & 0x0F;
                    let ancount = u16::from_be_bytes([buf[6], buf[7]]);
                    if rcode == 0 && ancount == expect_answers {
                        out.answered += 1;
                        let us = now.duration_since(sent_at[slot]).as_micros();
                        out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    } else {
                        out.wrong += 1;
                    }
                }
                generation[slot] = generation[slot].wrapping_add(1);
                send(slot, generation[slot], &mut q);
                sock.send(&q).await?;
                sent_at[slot] = Instant::now();
                out.sent += u64::from(sent_at[slot] >= from);
            }
        }
        if now.duration_since(last_scan) >= Duration::from_millis(100) {
            last_scan = now;
            for slot in 0..window {
                if now.duration_since(sent_at[slot]) > Duration::from_secs(1) {
                    out.timeouts += u64::from(sent_at[slot] >= from);
                    generation[slot] = generation[slot].wrapping_add(1);
                    send(slot, generation[slot], &mut q);
                    sock.send(&q).await?;
                    sent_at[slot] = Instant::now();
                }
            }
        }
    }
    Ok(out)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1e3
}

async fn qps(cluster: &TestCluster, args: &Args) -> Result<()> {
    let server = dns_addr(cluster, args.node);
    let pid = cluster
        .node(args.node)
        .pid()
        .context("target node not running")?;
    let window = args.window.clamp(1, 256);
    let start = Instant::now();
    let from = start + args.warmup;
    let end = from + args.duration;
    println!(
        "\n1. queries/s: {} sockets x {window} outstanding against node {} ({server}), warm-up {:.0} s, measured {:.1} s",
        args.sockets,
        args.node,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    let tasks: Vec<_> = (0..args.sockets)
        .map(|_| tokio::spawn(blaster(server, window, 3, from, end)))
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let (cpu0, m0) = (cpu_ticks(pid), machine_ticks());
    let t0 = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let (cpu1, m1) = (cpu_ticks(pid), machine_ticks());
    let window_secs = t0.elapsed().as_secs_f64();
    let mut total = Blast::default();
    for t in tasks {
        let b = t.await.context("blaster task")??;
        total.sent += b.sent;
        total.answered += b.answered;
        total.wrong += b.wrong;
        total.timeouts += b.timeouts;
        total.latencies_us.extend(b.latencies_us);
    }
    total.latencies_us.sort_unstable();
    let l = &total.latencies_us;
    println!(
        "   {:.0} answered/s ({} answered, {} wrong answers, {} timeouts, {} sent in the window)",
        total.answered as f64 / args.duration.as_secs_f64(),
        total.answered,
        total.wrong,
        total.timeouts,
        total.sent
    );
    println!(
        "   latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pct(l, 0.5),
        pct(l, 0.99),
        pct(l, 1.0)
    );
    let ticks = clock_ticks_per_sec();
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        println!(
            "   node {} CPU: {:.0}% of one core",
            args.node,
            (b - a) as f64 / ticks / window_secs * 100.0
        );
    }
    if let (Some((b0, t0)), Some((b1, t1))) = (m0, m1)
        && t1 > t0
    {
        println!(
            "   machine busy: {:.0}% of all cores",
            (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0
        );
    }
    Ok(())
}

// ----- phase 2: dnsperf -----------------------------------------------------------------------

fn dnsperf(cluster: &TestCluster, args: &Args) -> Result<()> {
    let Ok(path) = which("dnsperf") else {
        println!("\n2. dnsperf: not installed (apt-get install dnsperf), skipped");
        return Ok(());
    };
    let file = cluster.root().join("dnsperf-queries.txt");
    std::fs::write(&file, format!("{WS} A\n"))?;
    let secs = args.duration.as_secs().max(1).to_string();
    let ip = cluster.ip(args.node).to_string();
    let clients = args.dnsperf_clients.to_string();
    let outstanding = args.dnsperf_outstanding.to_string();
    let argv = [
        "-s",
        ip.as_str(),
        "-p",
        "8053",
        "-d",
        file.to_str().context("non-UTF-8 temp path")?,
        "-l",
        secs.as_str(),
        "-c",
        clients.as_str(),
        "-q",
        outstanding.as_str(),
    ];
    println!("\n2. dnsperf {} (load {})", argv.join(" "), loadavg());
    let out = std::process::Command::new(path).args(argv).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // dnsperf prints one line per lost query; count those instead.
    let lost = text.lines().filter(|l| l.contains("[Timeout]")).count();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("[Timeout]"))
    {
        println!("   | {line}");
    }
    if lost > 0 {
        println!("   | ({lost} \"[Timeout] Query timed out\" lines left out)");
    }
    if !out.status.success() {
        println!(
            "   dnsperf exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").context("no PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .context("not found")
}

// ----- phase 3: removal after SIGKILL ---------------------------------------------------------

async fn removals(cluster: &TestCluster, args: &Args) -> Result<()> {
    if args.kills == 0 {
        return Ok(());
    }
    let target = Duration::from_secs(2 * args.ttl);
    let ids = cluster.ids();
    let all: BTreeSet<IpAddr> = ids.iter().map(|id| IpAddr::V4(cluster.ip(*id))).collect();
    println!(
        "\n3. removal after SIGKILL, TTL {} s, target 2 x TTL = {:.0} s (a resolver may serve a cached answer for up to one TTL after the removal)",
        args.ttl,
        target.as_secs_f64()
    );
    let mut worst = Vec::new();
    for round in 0..args.kills {
        let victim = ids[(round + 1) % ids.len()];
        let leader = cluster.leader_id().await;
        let survivors: Vec<u64> = ids.iter().copied().filter(|id| *id != victim).collect();
        let victim_ip = IpAddr::V4(cluster.ip(victim));
        cluster.kill(victim);
        let killed = Instant::now();
        // Per survivor: first answer not listing the victim, first NOERROR without it.
        let mut gone: Vec<Option<Duration>> = vec![None; survivors.len()];
        let mut clean: Vec<Option<Duration>> = vec![None; survivors.len()];
        // Polled until both survivors answer without it and 2 x TTL has passed, so answers
        // after the removal are seen too: SERVFAIL (e.g. during the election after a leader
        // was killed) and any answer listing the victim again.
        let mut servfails = 0usize;
        let mut relisted = 0usize;
        let mut polls = 0usize;
        while (clean.iter().any(Option::is_none) || killed.elapsed() < target)
            && killed.elapsed() < Duration::from_secs(60)
        {
            for (k, id) in survivors.iter().enumerate() {
                let answer = listed(dns_addr(cluster, *id)).await;
                let at = killed.elapsed();
                polls += 1;
                match answer {
                    Some(set) if !set.contains(&victim_ip) => {
                        gone[k].get_or_insert(at);
                        clean[k].get_or_insert(at);
                    }
                    Some(_) => relisted += usize::from(clean[k].is_some()),
                    None => {
                        servfails += 1;
                        gone[k].get_or_insert(at);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let show = |v: &[Option<Duration>]| {
            v.iter()
                .zip(&survivors)
                .map(|(d, id)| match d {
                    Some(d) => format!("node {id} {:.2} s", d.as_secs_f64()),
                    None => format!("node {id} never"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let max = clean.iter().flatten().max().copied();
        println!(
            "   round {}: killed node {victim}{}; not listed: {}; NOERROR without it: {}; \
             until {:.0} s: {polls} answers, {servfails} not NOERROR, {relisted} listing it again -> {}",
            round + 1,
            if leader == Some(victim) {
                " (the leader)"
            } else {
                ""
            },
            show(&gone),
            show(&clean),
            killed.elapsed().as_secs_f64(),
            match max {
                Some(m) if m <= target => format!("{:.2} s, within 2 x TTL", m.as_secs_f64()),
                Some(m) => format!("{:.2} s, OVER 2 x TTL", m.as_secs_f64()),
                None => "not removed".into(),
            }
        );
        worst.extend(max);
        cluster.try_restart(victim).await?;
        for id in &ids {
            wait_listed(cluster, *id, &all).await?;
        }
    }
    if let Some(m) = worst.iter().max() {
        println!(
            "   worst removal {:.2} s over {} rounds (target {:.0} s)",
            m.as_secs_f64(),
            worst.len(),
            target.as_secs_f64()
        );
    }
    if worst.len() < args.kills {
        bail!("a killed node was not removed from every survivor's answers within 60 s");
    }
    Ok(())
}

// ----- main -----------------------------------------------------------------------------------

async fn run(args: Args) -> Result<()> {
    let binary = chaos_tests::node::release_binary(args.binary.as_deref())?;
    println!(
        "dns-bench: {} (nproc {}, load {})",
        binary.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let opts = ClusterOptions::default().binary(binary).top_level(
        "dns",
        &format!(
            "{{ addr = \"{{node_ip}}:{PORT}\", workspace = \"{WS}\", ttl_secs = {}, \
             rate_limit_qps = 100000000, rate_limit_burst = 100000000 }}",
            args.ttl
        ),
    );
    let mut cluster = TestCluster::try_start_with(3, opts).await?;
    let all: BTreeSet<IpAddr> = cluster
        .ids()
        .iter()
        .map(|id| IpAddr::V4(cluster.ip(*id)))
        .collect();
    let result = async {
        for id in cluster.ids() {
            wait_listed(&cluster, id, &all).await?;
        }
        println!(
            "3 nodes up, every node lists all three (load {})",
            loadavg()
        );
        qps(&cluster, &args).await?;
        if !args.no_dnsperf {
            dnsperf(&cluster, &args)?;
        }
        removals(&cluster, &args).await?;
        println!("\nload at the end: {}", loadavg());
        Ok(())
    }
    .await;
    if args.keep {
        println!(
            "kept data dir and logs: {}",
            cluster.keep_data_dir().display()
        );
    }
    result
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args.threads;
    bench_main::run("dns-bench", threads, run(args))
}
