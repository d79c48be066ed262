//! `fault-bench`: how long a fault stalls a 3-node Conclave cluster on loopback (issue 16).
//!
//! Posters each stay on one node, as real clients do (a 2 s client timeout, each message
//! retried with the same `client_msg_id` until acknowledged). For every fault kind and
//! repetition it measures the longest stretch with no acknowledgement anywhere in the cluster
//! (from the last ack before the fault until the node that resumed last has acked again), the
//! worst such stretch on a node the fault did not hit, and how many elections the fault cost
//! (term increase). At the end every acknowledged message must be on every node exactly once.
//! Run by hand on a release build; `--smoke` is a seconds-long run for CI:
//!
//! ```text
//! cargo build --release -p node -p chaos-tests
//! $CARGO_TARGET_DIR/release/fault-bench --reps 5
//! cargo build -p node -p chaos-tests --bins && $CARGO_TARGET_DIR/debug/fault-bench --smoke
//! ```
//!
//! Partitions and one-way cuts use iptables (root); without it those faults are skipped and
//! said so. Errors are reported per repetition, never turned into panics.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use chaos_tests::bench_main;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chaos_tests::checks::{self, NodeView};
use chaos_tests::load::{Ack, Load, LoadConfig, percentile};
use chaos_tests::partition::Partition;
use chaos_tests::wait::poll_until;
use chaos_tests::{ClusterOptions, TestCluster};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Fault {
    /// SIGKILL the leader, restart it after `--hold-ms`.
    LeaderKill,
    /// SIGKILL a follower, restart it after `--hold-ms`.
    FollowerKill,
    /// SIGSTOP the leader for `--hold-ms`, then SIGCONT.
    LeaderStop,
    /// Cut the leader off from both followers, both ways, for `--hold-ms`.
    LeaderPartition,
    /// One-way: the leader can send but receives nothing from the followers.
    LeaderDeaf,
    /// One-way: the leader receives but nothing it sends reaches the followers.
    LeaderMute,
    /// SIGTERM every node at once, then start them all.
    FullRestart,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::LeaderKill => "leader-kill",
            Fault::FollowerKill => "follower-kill",
            Fault::LeaderStop => "leader-stop",
            Fault::LeaderPartition => "leader-partition",
            Fault::LeaderDeaf => "leader-deaf",
            Fault::LeaderMute => "leader-mute",
            Fault::FullRestart => "full-restart",
        }
    }

    fn needs_iptables(self) -> bool {
        matches!(
            self,
            Fault::LeaderPartition | Fault::LeaderDeaf | Fault::LeaderMute
        )
    }
}

const ALL_FAULTS: [Fault; 7] = [
    Fault::LeaderKill,
    Fault::FollowerKill,
    Fault::LeaderStop,
    Fault::LeaderPartition,
    Fault::LeaderDeaf,
    Fault::LeaderMute,
    Fault::FullRestart,
];

#[derive(Parser, Debug)]
#[command(about = "Longest cluster-wide acknowledgement gap per fault kind, node-pinned posters")]
struct Args {
    /// Fault kinds, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Repetitions of each fault kind.
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// Posters pinned to each node.
    #[arg(long, default_value_t = 4)]
    posters_per_node: usize,
    /// How long a kill, pause or cut lasts before it is healed, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    hold_ms: u64,
    /// Per-request timeout of each client, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    client_timeout_ms: u64,
    /// How long one message is retried (same client_msg_id) before it counts as unknown, ms.
    #[arg(long, default_value_t = 60_000)]
    message_deadline_ms: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 200)]
    body_len: usize,
    /// Seconds-long run for CI: 1 repetition, 1 poster per node, 1 s faults, and (unless
    /// `--faults` is given) only leader-stop and leader-deaf. Uses the debug server binary.
    #[arg(long)]
    smoke: bool,
    /// Server binary (default: $CONCLAVE_BIN, else the release build; with --smoke the build
    /// next to this binary).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Keep the data dir and node logs after the run.
    #[arg(long)]
    keep: bool,
}

/// One repetition's measurements.
struct Sample {
    /// Longest stretch with no acknowledgement on any node.
    gap: Duration,
    /// Longest stretch without an acknowledgement on a node the fault did not hit
    /// (for a whole-cluster restart: on any node).
    node_gap: Duration,
    /// Term increase from before the fault until the cluster settled (elections it caused).
    elections: u64,
    leader_changed: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

/// The longest interval between consecutive ack times in `[from, to]`, starting from the last
/// ack at or before `from` (or `from` itself if there is none).
fn longest_gap(mut times: Vec<Instant>, from: Instant, to: Instant) -> Duration {
    times.sort_unstable();
    let mut prev = times
        .iter()
        .copied()
        .filter(|t| *t <= from)
        .max()
        .unwrap_or(from);
    let mut worst = Duration::ZERO;
    for t in times.into_iter().filter(|t| *t > from && *t <= to) {
        worst = worst.max(t.duration_since(prev));
        prev = t;
    }
    worst.max(to.saturating_duration_since(prev))
}

async fn term_of(cluster: &TestCluster, id: u64) -> Result<u64> {
    let v = cluster.cluster_json(id).await?;
    v["term"]
        .as_u64()
        .ok_or_else(|| anyhow!("no term in node {id}'s cluster status"))
}

/// Waits until every node has acknowledged something after `t`; returns, per node, the time of
/// its first such ack.
async fn acks_on_every_node(
    cluster: &TestCluster,
    load: &Load,
    t: Instant,
    what: &str,
) -> Result<Vec<(u64, Instant)>> {
    poll_until(what, Duration::from_secs(60), || async {
        let acks = load.acks_after(t);
        let mut firsts = Vec::new();
        let mut missing = Vec::new();
        for id in cluster.ids() {
            let url = cluster.url(id);
            match acks
                .iter()
                .filter(|a| a.server == url)
                .map(|a| a.acked_at)
                .min()
            {
                Some(first) => firsts.push((id, first)),
                None => missing.push(id),
            }
        }
        if missing.is_empty() {
            Ok(firsts)
        } else {
            Err(format!("no ack yet through nodes {missing:?}"))
        }
    })
    .await
}

async fn one_rep(
    cluster: &TestCluster,
    load: &Load,
    fault: Fault,
    hold: Duration,
) -> Result<Sample> {
    cluster.try_wait_all_ready().await?;
    let leader = cluster.try_wait_for_leader(&[]).await?;
    let term_before = term_of(cluster, leader).await?;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    let follower_ips: Vec<_> = followers.iter().map(|f| cluster.ip(*f)).collect();
    acks_on_every_node(
        cluster,
        load,
        Instant::now(),
        "acks on every node before the fault",
    )
    .await?;

    let fault_at = Instant::now();
    let hit: Vec<u64> = match fault {
        Fault::LeaderKill | Fault::FollowerKill => {
            let victim = if fault == Fault::LeaderKill {
                leader
            } else {
                followers[0]
            };
            cluster.node(victim).kill()?;
            // The fault's length is the experiment's input, not a wait for a state.
            tokio::time::sleep(hold).await;
            cluster.node(victim).spawn()?;
            vec![victim]
        }
        Fault::LeaderStop => {
            cluster.node(leader).freeze()?;
            tokio::time::sleep(hold).await;
            cluster.node(leader).thaw()?;
            vec![leader]
        }
        Fault::LeaderPartition | Fault::LeaderDeaf | Fault::LeaderMute => {
            let mut cuts = Vec::new();
            match fault {
                Fault::LeaderPartition => {
                    cuts.push(Partition::isolate(cluster.ip(leader), &follower_ips)?)
                }
                Fault::LeaderDeaf => {
                    for f in &followers {
                        cuts.push(Partition::one_way(cluster.ip(*f), &[cluster.ip(leader)])?);
                    }
                }
                _ => cuts.push(Partition::one_way(cluster.ip(leader), &follower_ips)?),
            }
            tokio::time::sleep(hold).await;
            drop(cuts);
            vec![leader]
        }
        Fault::FullRestart => {
            let ids = cluster.ids();
            let stops = futures::future::join_all(
                ids.iter()
                    .map(|id| cluster.node(*id).terminate(Duration::from_secs(20))),
            )
            .await;
            for (id, r) in ids.iter().zip(stops) {
                r.with_context(|| format!("SIGTERM node {id}"))?;
            }
            for id in &ids {
                cluster.node(*id).spawn()?;
            }
            Vec::new()
        }
    };
    let healed_at = Instant::now();
    let firsts =
        acks_on_every_node(cluster, load, healed_at, "acks on every node after healing").await?;
    let end = firsts.iter().map(|(_, t)| *t).max().unwrap_or(healed_at);
    let acks: Vec<Ack> = load.acks_after(fault_at - Duration::from_secs(30));
    let gap = longest_gap(acks.iter().map(|a| a.acked_at).collect(), fault_at, end);
    let mut node_gap = Duration::ZERO;
    for id in cluster.ids().into_iter().filter(|i| !hit.contains(i)) {
        let url = cluster.url(id);
        let (_, resumed) = firsts
            .iter()
            .find(|(n, _)| *n == id)
            .copied()
            .unwrap_or((id, end));
        let times = acks
            .iter()
            .filter(|a| a.server == url)
            .map(|a| a.acked_at)
            .collect();
        node_gap = node_gap.max(longest_gap(times, fault_at, resumed.max(healed_at)));
    }
    cluster.try_wait_all_ready().await?;
    let leader_after = cluster.try_wait_for_leader(&[]).await?;
    let term_after = term_of(cluster, leader_after).await?;
    Ok(Sample {
        gap,
        node_gap,
        elections: term_after.saturating_sub(term_before),
        leader_changed: leader_after != leader,
    })
}

/// Waits until every node shows the same last seq of `channel`, then reads their views.
async fn converged_views(
    cluster: &TestCluster,
    channel: &str,
    min_index: Option<u64>,
) -> Result<Vec<NodeView>> {
    let ids = cluster.ids();
    poll_until(
        "every node to agree on the channel",
        Duration::from_secs(60),
        || async {
            let mut seqs = Vec::new();
            for id in &ids {
                let s = cluster
                    .try_last_seq(*id, channel, min_index)
                    .await
                    .map_err(|e| e.to_string())?;
                seqs.push(s);
            }
            if seqs.windows(2).all(|w| w[0] == w[1]) {
                Ok(())
            } else {
                Err(format!("last seqs {seqs:?}"))
            }
        },
    )
    .await?;
    let mut views = Vec::new();
    for id in ids {
        views.push(NodeView {
            node_id: id,
            messages: cluster.try_messages(id, channel, min_index).await?,
        });
    }
    Ok(views)
}

async fn run(mut args: Args) -> Result<()> {
    if args.smoke {
        args.reps = 1;
        args.posters_per_node = 1;
        args.hold_ms = 1000;
        if args.faults.is_empty() {
            args.faults = vec![Fault::LeaderStop, Fault::LeaderDeaf];
        }
    }
    if args.faults.is_empty() {
        args.faults = ALL_FAULTS.to_vec();
    }
    let bin = match (&args.binary, args.smoke) {
        (Some(b), _) => b.clone(),
        (None, true) => chaos_tests::node::conclave_bin()?,
        (None, false) => chaos_tests::node::release_binary(None)?,
    };
    let iptables = Partition::available();
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let timeout = Duration::from_millis(args.client_timeout_ms);
    let opts = ClusterOptions::default()
        .binary(bin.clone())
        .env("RUST_LOG", &rust_log)
        .request_timeout(timeout)
        .failover_deadline(timeout);
    let mut cluster = TestCluster::try_start_with(3, opts).await?;
    let (a, b) = cluster.block();
    println!(
        "cluster of 3 on 127.{a}.{b}.1-3 from {}, {} posters per node (each pinned to its node), \
         client timeout {} ms, faults held {} ms, {} reps",
        bin.display(),
        args.posters_per_node,
        args.client_timeout_ms,
        args.hold_ms,
        args.reps
    );
    let channel = "fault-bench";
    cluster.ensure_channel(channel).await?;
    let mut clients = Vec::new();
    for id in cluster.ids() {
        for _ in 0..args.posters_per_node {
            clients.push(cluster.try_client(&[id])?);
        }
    }
    let mut cfg = LoadConfig::new(channel, "fb");
    cfg.body_len = args.body_len;
    cfg.per_message_deadline = Duration::from_millis(args.message_deadline_ms);
    let load = Load::start(clients, cfg);

    let hold = Duration::from_millis(args.hold_ms);
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for &fault in &args.faults {
        if fault.needs_iptables()
            && let Err(why) = &iptables
        {
            println!("{}: skipped ({why})", fault.name());
            continue;
        }
        let mut samples = Vec::new();
        for rep in 1..=args.reps {
            match one_rep(&cluster, &load, fault, hold).await {
                Ok(s) => {
                    println!(
                        "  {} rep {rep}: cluster gap {:.0} ms, worst unhit node gap {:.0} ms, \
                         elections {}, leader changed {}",
                        fault.name(),
                        ms(s.gap),
                        ms(s.node_gap),
                        s.elections,
                        s.leader_changed
                    );
                    samples.push(s);
                }
                Err(e) => {
                    let msg = format!("{} rep {rep}: {e:#}", fault.name());
                    println!("  FAILED {}", msg.lines().next().unwrap_or(""));
                    failures.push(msg);
                }
            }
        }
        rows.push((fault, samples));
    }

    let report = load.stop().await;
    println!(
        "\n{:<17} {:>4} {:>10} {:>10} {:>13} {:>13} {:>9} {:>8}",
        "fault",
        "reps",
        "gap p50 ms",
        "gap max ms",
        "node gap p50",
        "node gap max",
        "elections",
        "leader Δ"
    );
    for (fault, samples) in &rows {
        let mut gaps: Vec<f64> = samples.iter().map(|s| ms(s.gap)).collect();
        gaps.sort_by(f64::total_cmp);
        let mut node_gaps: Vec<f64> = samples.iter().map(|s| ms(s.node_gap)).collect();
        node_gaps.sort_by(f64::total_cmp);
        println!(
            "{:<17} {:>4} {:>10} {:>10} {:>13} {:>13} {:>9} {:>8}",
            fault.name(),
            samples.len(),
            fmt_ms(percentile(&gaps, 50.0)),
            fmt_ms(gaps.last().copied()),
            fmt_ms(percentile(&node_gaps, 50.0)),
            fmt_ms(node_gaps.last().copied()),
            samples.iter().map(|s| s.elections).sum::<u64>(),
            samples.iter().filter(|s| s.leader_changed).count()
        );
    }
    let unknown = report.failed.iter().filter(|f| !f.refused).count();
    let refused = report.failed.len() - unknown;
    println!(
        "load: {} acked, {} failed attempts (retried), {unknown} unknown, {refused} refused, \
         {} panics",
        report.acks.len(),
        report.failed_attempts,
        report.panics.len()
    );
    if refused > 0 || !report.panics.is_empty() {
        failures.push(format!(
            "{refused} messages refused, {} poster panics",
            report.panics.len()
        ));
    }

    let min_index = report.acks.iter().filter_map(|a| a.index).max();
    match converged_views(&cluster, channel, min_index).await {
        Ok(views) => {
            let sent: HashSet<String> = report.sent_ids();
            let verdicts = [
                checks::all_core(&report.acked_msgs(), &views),
                checks::acknowledged_in_send_order(&report.per_poster()),
                checks::nothing_unsent_written(&sent, &views),
            ];
            let errors: Vec<String> = verdicts.into_iter().filter_map(Result::err).collect();
            if errors.is_empty() {
                println!(
                    "checks: every acknowledged message is on all 3 nodes exactly once, in one order"
                );
            } else {
                failures.push(format!("invariant checks: {}", errors.join("\n")));
            }
        }
        Err(e) => failures.push(format!("reading the channel back: {e:#}")),
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
    bench_main::run("fault-bench", threads, run(args))
}
