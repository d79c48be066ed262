//! `conclave-bench`: throughput, commit latency and failover time of a 3-node Conclave cluster
//! on loopback, driven through the ops client. Run by hand on a release build for numbers;
//! `chaos-tests/bench/smoke.sh` (CI) runs it at a tiny size on the debug build so it cannot rot:
//!
//! ```text
//! cargo build --release -p node -p chaos-tests
//! $CARGO_TARGET_DIR/release/conclave-bench --messages 20000 --levels 1,16,64 --failovers 10
//! ```
//!
//! Errors are counted and reported, never turned into panics: a run that loses its cluster
//! still prints what it measured.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use chaos_tests::bench_main;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chaos_tests::load::{Load, LoadConfig, LoadReport, percentile};
use chaos_tests::wait::poll_until;
use chaos_tests::{ClusterOptions, TestCluster};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Benchmark a 3-node Conclave cluster on loopback (release build)")]
struct Args {
    /// Messages per concurrency level.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Concurrency levels (number of concurrent posters), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    levels: Vec<usize>,
    /// Leader kills in the failover phase (0 skips it).
    #[arg(long, default_value_t = 10)]
    failovers: u32,
    /// Concurrent posters during the failover phase.
    #[arg(long, default_value_t = 16)]
    failover_posters: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 200)]
    body_len: usize,
    /// Per-request timeout of the ops client, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    request_timeout_ms: u64,
    /// Failover deadline of the ops client, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    failover_deadline_ms: u64,
    /// How long one message is retried (same client_msg_id) before it counts as unknown, ms.
    #[arg(long, default_value_t = 10_000)]
    message_deadline_ms: u64,
    /// Server binary (default: $CONCLAVE_BIN, else `conclave` in the release dir next to this binary).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Keep the data dir and node logs after the run.
    #[arg(long)]
    keep: bool,
    /// `[raft] heartbeat_interval_ms` of the nodes (default: the documented default).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// `[raft] election_timeout_min_ms` of the nodes.
    #[arg(long)]
    election_min_ms: Option<u64>,
    /// `[raft] election_timeout_max_ms` (the leader lease) of the nodes.
    #[arg(long)]
    election_max_ms: Option<u64>,
}

/// Node 1's view of the term and leader (to count elections across a phase).
async fn term_and_leader(cluster: &TestCluster) -> Option<(u64, Option<u64>)> {
    let v = cluster.cluster_json(1).await.ok()?;
    Some((v["term"].as_u64()?, v["leader_id"].as_u64()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// One failover client per poster, first server rotated so posters spread over the nodes.
fn spread_clients(cluster: &TestCluster, posters: usize) -> Result<Vec<ops::Client>> {
    let ids = cluster.live_ids();
    (0..posters)
        .map(|i| {
            let mut order = ids.clone();
            order.rotate_left(i % ids.len().max(1));
            cluster.try_client(&order)
        })
        .collect()
}

fn load_config(args: &Args, channel: &str, prefix: &str) -> LoadConfig {
    let mut cfg = LoadConfig::new(channel, prefix);
    cfg.body_len = args.body_len;
    cfg.per_message_deadline = Duration::from_millis(args.message_deadline_ms);
    cfg
}

async fn throughput(cluster: &TestCluster, args: &Args) -> Result<()> {
    println!(
        "\n{:>7} {:>9} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "posters",
        "messages",
        "seconds",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "unknown",
        "refused"
    );
    // A level that measured nothing fails the run (after the other levels ran), so a smoke run
    // of this bench catches a broken write path instead of printing an empty table.
    let mut empty = Vec::new();
    for &posters in &args.levels {
        let channel = format!("bench-c{posters}");
        if let Err(e) = cluster.ensure_channel(&channel).await {
            println!("{posters:>7} could not create channel: {e:#}");
            empty.push(posters);
            continue;
        }
        let mut cfg = load_config(args, &channel, &format!("c{posters}"));
        cfg.total = Some(args.messages);
        let report = Load::start(spread_clients(cluster, posters.max(1))?, cfg)
            .join()
            .await;
        print_row(posters, &report);
        if report.acks.is_empty() {
            empty.push(posters);
        }
    }
    if !empty.is_empty() {
        bail!("no message acknowledged at posters {empty:?}");
    }
    Ok(())
}

fn print_row(posters: usize, r: &LoadReport) {
    let secs = r.elapsed.as_secs_f64();
    let lat = r.latencies_ms();
    println!(
        "{:>7} {:>9} {:>8.2} {:>11.1} {:>8} {:>8} {:>8} {:>8} {:>8}",
        posters,
        r.acks.len(),
        secs,
        r.acks.len() as f64 / secs.max(1e-9),
        fmt_ms(percentile(&lat, 50.0)),
        fmt_ms(percentile(&lat, 99.0)),
        r.failed_attempts,
        r.failed.iter().filter(|f| !f.refused).count(),
        r.failed.iter().filter(|f| f.refused).count()
    );
    if let Some(f) = r.failed.first() {
        let kind = if f.refused { "refused" } else { "unknown" };
        println!(
            "        first failed message: {} {kind} ({})",
            f.client_msg_id, f.error
        );
    }
}

/// Kills the leader, returns the time until a post sent through a survivor is acknowledged.
async fn one_failover(cluster: &TestCluster, load: &Load, round: u32) -> Result<(u64, Duration)> {
    cluster.try_wait_all_ready().await?;
    let leader = cluster.try_wait_for_leader(&[]).await?;
    let leader_url = cluster.url(leader);
    // Make sure load is flowing before the kill, so the sample measures the failover only.
    let warm = Instant::now();
    poll_until("load before the kill", Duration::from_secs(30), || async {
        if load.acks_after(warm).len() >= 10 {
            Ok(())
        } else {
            Err("fewer than 10 acks".to_owned())
        }
    })
    .await?;
    cluster.node(leader).kill()?;
    let killed_at = Instant::now();
    let first = poll_until(
        &format!("an ack through a survivor after killing node {leader} (round {round})"),
        Duration::from_secs(60),
        || async {
            load.acks_after(killed_at)
                .iter()
                .filter(|a| a.server != leader_url)
                .map(|a| a.acked_at)
                .min()
                .ok_or_else(|| "none yet".to_owned())
        },
    )
    .await;
    // Bring the node back whatever happened, so the next round starts from 3 nodes.
    let restarted = cluster.try_restart(leader).await;
    let first = first?;
    restarted.context("restart the killed leader")?;
    Ok((leader, first.duration_since(killed_at)))
}

async fn failover(cluster: &TestCluster, args: &Args) -> Result<()> {
    let channel = "bench-failover";
    cluster.ensure_channel(channel).await?;
    let clients = spread_clients(cluster, args.failover_posters)?;
    let load = Load::start(clients, load_config(args, channel, "fo"));
    println!(
        "\nfailover: {} posters, {} leader kills",
        args.failover_posters, args.failovers
    );
    let mut samples = Vec::new();
    let mut errors = 0u32;
    for round in 1..=args.failovers {
        match one_failover(cluster, &load, round).await {
            Ok((leader, d)) => {
                println!(
                    "  round {round:>2}: killed leader {leader}, next ack via a survivor after {:.1} ms",
                    ms(d)
                );
                samples.push(ms(d));
            }
            Err(e) => {
                errors += 1;
                let first_line = format!("{e:#}");
                println!(
                    "  round {round:>2}: FAILED: {}",
                    first_line.lines().next().unwrap_or("")
                );
            }
        }
    }
    let report = load.stop().await;
    samples.sort_by(f64::total_cmp);
    println!(
        "failover ms: samples {} p50 {} p99 {} max {}; failed rounds {errors}",
        samples.len(),
        fmt_ms(percentile(&samples, 50.0)),
        fmt_ms(percentile(&samples, 99.0)),
        fmt_ms(samples.last().copied())
    );
    println!(
        "load during failovers: {} acked, {} failed attempts, {} unknown, {} refused, panics {}",
        report.acks.len(),
        report.failed_attempts,
        report.failed.iter().filter(|f| !f.refused).count(),
        report.failed.iter().filter(|f| f.refused).count(),
        report.panics.len()
    );
    for f in report.failed.iter().take(5) {
        let kind = if f.refused { "refused" } else { "unknown" };
        println!("  {kind}: {} ({})", f.client_msg_id, f.error);
    }
    if errors > 0 {
        bail!("{errors} of {} failover rounds failed", args.failovers);
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let bin = chaos_tests::node::release_binary(args.binary.as_deref())?;
    if bin.to_string_lossy().contains("/debug/") {
        println!(
            "warning: {} looks like a debug build; numbers will be low",
            bin.display()
        );
    }
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let mut opts = ClusterOptions::default();
    if let Some(v) = args.heartbeat_ms {
        opts.raft.heartbeat_interval_ms = v;
    }
    if let Some(v) = args.election_min_ms {
        opts.raft.election_timeout_min_ms = v;
    }
    if let Some(v) = args.election_max_ms {
        opts.raft.election_timeout_max_ms = v;
    }
    println!(
        "raft: heartbeat {} ms, election timeout {}-{} ms",
        opts.raft.heartbeat_interval_ms,
        opts.raft.election_timeout_min_ms,
        opts.raft.election_timeout_max_ms
    );
    let opts = opts
        .binary(bin.clone())
        .env("RUST_LOG", &rust_log)
        .request_timeout(Duration::from_millis(args.request_timeout_ms))
        .failover_deadline(Duration::from_millis(args.failover_deadline_ms));
    let started = Instant::now();
    let mut cluster = TestCluster::try_start_with(3, opts).await?;
    let (a, b) = cluster.block();
    println!(
        "cluster of 3 on 127.{a}.{b}.1-3 from {} up in {:.1} s (data {})",
        bin.display(),
        started.elapsed().as_secs_f64(),
        cluster.root().display()
    );
    let mut failures = Vec::new();
    let before = term_and_leader(&cluster).await;
    if let Err(e) = throughput(&cluster, &args).await {
        failures.push(format!("throughput phase: {e:#}"));
    }
    // Every election raises the term: a spurious leader change under load shows here.
    let after = term_and_leader(&cluster).await;
    println!(
        "term and leader (node 1's view) before / after the throughput phase: {before:?} / {after:?}; elections during load: {}",
        match (before, after) {
            (Some((a, _)), Some((b, _))) => b.saturating_sub(a).to_string(),
            _ => "unknown".to_owned(),
        }
    );
    if args.failovers > 0
        && let Err(e) = failover(&cluster, &args).await
    {
        failures.push(format!("failover phase: {e:#}"));
    }
    if args.keep {
        println!(
            "kept data dir and logs: {}",
            cluster.keep_data_dir().display()
        );
    }
    if failures.is_empty() {
        return Ok(());
    }
    bail!("{}", failures.join("\n"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = bench_main::cores();
    bench_main::run("conclave-bench", threads, run(args))
}
