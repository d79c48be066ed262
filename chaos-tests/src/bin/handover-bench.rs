//! `handover-bench`: what a planned leader stop costs the clients (issue 16, item 2). Starts a
//! 3-node cluster on loopback and, `--handovers` times: starts posters pinned to the two
//! followers, SIGTERMs the leader (which hands leadership to a follower before it stops),
//! waits for the process to exit and for fresh acknowledgements, stops the posters, restarts
//! the old leader and waits until every node is ready. Per handover it reports the write
//! pause (the longest gap between consecutive acknowledgements around the SIGTERM, and the
//! longest latency of a request sent in that window), the failed requests and the attempts the
//! clients had to retry; then p50/p99/max over all handovers. For comparison it also reports
//! the longest gap in an equally long window of the same load before the SIGTERM.
//!
//! ```text
//! cargo build --release -p node -p chaos-tests --bins
//! $CARGO_TARGET_DIR/release/handover-bench --handovers 20
//! $CARGO_TARGET_DIR/release/handover-bench --smoke      # a few seconds, for CI
//! ```
#![allow(clippy::print_stdout)]

use chaos_tests::bench_main;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chaos_tests::load::{Ack, percentile};
use chaos_tests::{ClusterOptions, Load, LoadConfig, TestCluster};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Write pause and failed requests during planned leader handovers (SIGTERM)")]
struct Args {
    /// Leader stops (each followed by a restart of that node).
    #[arg(long, default_value_t = 10)]
    handovers: u32,
    /// Posters, spread over the two followers (each pinned to one node, as real clients are).
    #[arg(long, default_value_t = 8)]
    posters: u64,
    /// Acknowledgements to wait for before each SIGTERM and after it.
    #[arg(long, default_value_t = 200)]
    acks: usize,
    /// One handover with few acknowledgements: a seconds-long run that keeps the bench working.
    #[arg(long)]
    smoke: bool,
    /// The `conclave` binary (default: the build next to this one, or CONCLAVE_BIN).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Keep the cluster's directory (data dirs and node logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// Acknowledgements before the SIGTERM that count into the window (the gap that straddles the
/// SIGTERM starts at the last of them).
const WINDOW_BEFORE: Duration = Duration::from_millis(100);
/// After the old process exited, the window goes on this long (held writes answered late).
const WINDOW_AFTER: Duration = Duration::from_millis(200);

struct One {
    old: u64,
    new: u64,
    /// Longest gap between consecutive acknowledgements in the window.
    pause: Duration,
    /// Longest latency of a request sent in the window.
    max_latency: Duration,
    /// Longest gap in an equally long window of the same load before the SIGTERM.
    baseline_gap: Duration,
    /// SIGTERM to process exit.
    exit: Duration,
    failed: usize,
    retried: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Longest gap between consecutive acknowledgements (all posters together) with `acked_at`
/// in `[from, to]`, counting from the last ack before `from`.
fn longest_gap(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = acks.iter().map(|a| a.acked_at).collect();
    times.sort();
    let start = times.iter().rev().find(|t| **t < from).copied();
    let mut prev = start;
    let mut gap = Duration::ZERO;
    for t in times.iter().filter(|t| **t >= from && **t <= to) {
        if let Some(p) = prev {
            gap = gap.max(t.duration_since(p));
        }
        prev = Some(*t);
    }
    gap
}

async fn wait_acks(cluster: &TestCluster, load: &Load, since: Instant, n: usize) -> Result<()> {
    chaos_tests::wait::poll_until("acknowledgements", cluster.ready_timeout(), || async {
        let got = load.acks_after(since).len();
        if got >= n {
            Ok(())
        } else {
            Err(format!("{got} of {n} acknowledged"))
        }
    })
    .await
}

async fn handover(cluster: &TestCluster, args: &Args, round: u32, acks: usize) -> Result<One> {
    let old = cluster.try_wait_for_leader(&[]).await?;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    let clients = (0..args.posters)
        .map(|i| cluster.client(followers[(i as usize) % followers.len()]))
        .collect();
    let mut cfg = LoadConfig::new("handover", &format!("h{round}"));
    cfg.body_len = 200;
    let load = Load::start(clients, cfg);
    let started = Instant::now();
    wait_acks(cluster, &load, started, acks).await?;
    let t0 = Instant::now();
    cluster
        .try_terminate(old)
        .await
        .with_context(|| format!("SIGTERM of leader {old}"))?;
    let exited = Instant::now();
    let new = cluster.try_wait_for_leader(&[old]).await?;
    wait_acks(cluster, &load, exited, acks).await?;
    let report = load.stop().await;
    if !report.panics.is_empty() {
        bail!("posters panicked: {:?}", report.panics);
    }
    let (from, to) = (t0 - WINDOW_BEFORE, exited + WINDOW_AFTER);
    let window = to.duration_since(from);
    let pause = longest_gap(&report.acks, from, to);
    let baseline_gap = if t0.duration_since(started) > window {
        longest_gap(
            &report.acks,
            t0 - window - WINDOW_BEFORE,
            t0 - WINDOW_BEFORE,
        )
    } else {
        Duration::ZERO
    };
    let max_latency = report
        .acks
        .iter()
        .filter(|a| a.sent_at >= from && a.sent_at <= to)
        .map(Ack::latency)
        .max()
        .unwrap_or_default();
    for f in &report.failed {
        eprintln!("  failed {}: {}", f.client_msg_id, f.error);
    }
    cluster
        .node(old)
        .spawn()
        .context("restart the old leader")?;
    cluster.try_wait_all_ready().await?;
    Ok(One {
        old,
        new,
        pause,
        max_latency,
        baseline_gap,
        exit: exited.duration_since(t0),
        failed: report.failed.len(),
        retried: report.failed_attempts,
    })
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let p = |q| percentile(&v, q).unwrap_or(f64::NAN);
    println!(
        "{name:<22} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        p(50.0),
        p(99.0),
        p(100.0)
    );
}

async fn run(args: Args) -> Result<()> {
    let (handovers, acks) = match args.smoke {
        true => (1, 20),
        false => (args.handovers, args.acks),
    };
    let mut opts = ClusterOptions::default();
    if let Some(b) = &args.binary {
        opts = opts.binary(b.clone());
    }
    let mut cluster = TestCluster::try_start_with(3, opts).await?;
    if args.keep {
        println!("cluster dir (kept): {}", cluster.keep_data_dir().display());
    }
    cluster
        .client_all()
        .create_channel("handover")
        .await
        .map_err(|e| anyhow::anyhow!("create channel: {e}"))?;
    println!(
        "{:>3} {:>4} {:>4} {:>10} {:>13} {:>13} {:>9} {:>6} {:>7}",
        "#", "old", "new", "pause_ms", "max_lat_ms", "baseline_ms", "exit_ms", "failed", "retried"
    );
    let mut all = Vec::new();
    for round in 0..handovers {
        let one = handover(&cluster, &args, round, acks).await?;
        println!(
            "{:>3} {:>4} {:>4} {:>10.1} {:>13.1} {:>13.1} {:>9.0} {:>6} {:>7}",
            round + 1,
            one.old,
            one.new,
            ms(one.pause),
            ms(one.max_latency),
            ms(one.baseline_gap),
            ms(one.exit),
            one.failed,
            one.retried
        );
        all.push(one);
    }
    println!(
        "handovers: {}, posters: {} (on the followers)",
        all.len(),
        args.posters
    );
    summary("write pause", all.iter().map(|o| ms(o.pause)).collect());
    summary(
        "max request latency",
        all.iter().map(|o| ms(o.max_latency)).collect(),
    );
    summary(
        "baseline gap",
        all.iter().map(|o| ms(o.baseline_gap)).collect(),
    );
    let failed: usize = all.iter().map(|o| o.failed).sum();
    let retried: u64 = all.iter().map(|o| o.retried).sum();
    println!("failed requests: {failed}, retried attempts: {retried}");
    cluster.stop_all().await;
    if failed > 0 {
        bail!("{failed} requests failed during the handovers");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    bench_main::run("handover-bench", 2, run(args))
}
