//! `search-e2e-bench`: does the search index keep up with the write path on a running cluster
//! (issue 15)? `search-bench` times tantivy in-process; this times the whole way a message
//! takes to become searchable: post -> Raft commit -> apply on each node -> the node's feeder
//! (which re-reads the message from sled) -> the index commit -> `GET /api/v1/search` finds it.
//!
//! Starts a 3-node cluster on loopback, posts `--messages` messages as fast as the write path
//! takes them (`--posters` concurrent posters spread over the nodes, each message carrying a
//! unique word), and reports the post throughput. Meanwhile a sample of the messages (every
//! `messages / samples`-th acknowledged one) is searched for on every node until found: ack ->
//! searchable per node, p50/p99/max. After the last acknowledgement, the last acknowledged
//! message is searched for on every node: the indexing lag at the end of the burst (how far
//! the index was behind when posting stopped). Exits non-zero if any node does not find a
//! message within `--deadline`, or if posts failed.
//!
//! ```text
//! cargo build --release -p node                   # the server under test
//! cargo build -p chaos-tests --bin search-e2e-bench
//! CONCLAVE_BIN=$CARGO_TARGET_DIR/release/conclave $CARGO_TARGET_DIR/debug/search-e2e-bench
//! $CARGO_TARGET_DIR/debug/search-e2e-bench --smoke   # a few hundred messages, for CI
//! ```
//!
//! A sample is polled every `--poll-ms` (a deadline bounds it; the poll period is the
//! resolution of the figures, not a sleep standing in for the measurement). At most
//! `--max-probes` samples are polled at once so the probes' own queries stay a small part of
//! the load; a sample that finds the limit reached is skipped and counted.
#![allow(clippy::print_stdout)] // a benchmark's report is its stdout

use chaos_tests::bench_main;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chaos_tests::duration_arg::parse as parse_duration;
use chaos_tests::load::{percentile, post_until_acked};
use chaos_tests::{ClusterOptions, TestCluster};
use clap::Parser;
use ops::SearchParams;
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
#[command(about = "End-to-end search indexing lag on a 3-node cluster: post, then search")]
struct Args {
    /// Messages to post.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Concurrent posters, spread over the three nodes.
    #[arg(long, default_value_t = 64)]
    posters: usize,
    /// Messages sampled for ack -> searchable during the run.
    #[arg(long, default_value_t = 200)]
    samples: u64,
    /// Samples polled at once at most (the rest are skipped and counted).
    #[arg(long, default_value_t = 16)]
    max_probes: usize,
    /// Poll period of a sample, milliseconds (the resolution of the lag figures).
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Message body size in bytes (the unique word, then common words).
    #[arg(long, default_value_t = 200)]
    body_len: usize,
    /// How long a node may take to make a message searchable before the run fails.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    deadline: Duration,
    /// A few hundred messages: a seconds-long run that keeps the bench working.
    #[arg(long)]
    smoke: bool,
    /// Server binary (default: $CONCLAVE_BIN, else the release build).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Keep the data dir and node logs after the run.
    #[arg(long)]
    keep: bool,
    /// Background posts with `wrk` (bench/post.lua, 200-byte messages to channel `w`), this
    /// many connections spread over the nodes, for as long as the posters run: a debug build
    /// of this bench cannot post at the write path's peak by itself (0: off).
    #[arg(long, default_value_t = 0)]
    wrk_connections: u64,
}

const CHANNEL: &str = "search-e2e";
/// Common words after the unique one, so bodies look like chat and share terms.
const FILLER: &[&str] = &[
    "the", "build", "is", "green", "again", "after", "we", "moved", "the", "cache", "and",
    "deploy", "went", "out", "at", "noon", "so", "please", "check", "your", "branch",
];

/// The word only message `n` contains (letters and digits only: one token for the index).
fn token(n: u64) -> String {
    format!("zq{n}e2e")
}

fn body(n: u64, len: usize) -> String {
    let mut b = token(n);
    for w in FILLER.iter().cycle() {
        if b.len() + 1 + w.len() > len {
            break;
        }
        b.push(' ');
        b.push_str(w);
    }
    b
}

/// A node's answer for one searched message: when it first found it, or why it did not.
type Found = Result<Instant, String>;

/// Polls `GET /api/v1/search` on one node until message `n` is among the results.
async fn until_found(client: &ops::Client, n: u64, poll: Duration, deadline: Instant) -> Found {
    let params = SearchParams {
        q: token(n),
        channel: Some(CHANNEL.to_owned()),
        limit: Some(5),
        ..SearchParams::default()
    };
    loop {
        let last = match client.search(&params).await {
            Ok(page) if !page.results.is_empty() => return Ok(Instant::now()),
            Ok(_) => "no result yet".to_owned(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls every node for message `n`, acknowledged at `acked`: per node, ack -> searchable.
async fn probe(
    nodes: &[(u64, ops::Client)],
    n: u64,
    acked: Instant,
    poll: Duration,
    deadline: Instant,
) -> Vec<(u64, Result<Duration, String>)> {
    let polls = nodes.iter().map(|(id, c)| async move {
        let got = until_found(c, n, poll, deadline).await;
        (*id, got.map(|t| t.saturating_duration_since(acked)))
    });
    futures::future::join_all(polls).await
}

#[derive(Default)]
struct Record {
    /// (message, when acknowledged), in acknowledgement order.
    acks: Mutex<Vec<(u64, Instant)>>,
    /// ack -> searchable of the samples, per node id (1..=3 at index id - 1).
    lags: Mutex<[Vec<f64>; 3]>,
    /// Samples a node never found before the deadline: (node, message, last answer).
    missed: Mutex<Vec<(u64, u64, String)>>,
    failed: AtomicU64,
    skipped: AtomicU64,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Held only to push or copy a record, never across an `.await`.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn record_probe(rec: &Record, n: u64, got: Vec<(u64, Result<Duration, String>)>) {
    for (id, r) in got {
        match r {
            Ok(d) => {
                if let Some(v) = lock(&rec.lags).get_mut((id as usize).saturating_sub(1)) {
                    v.push(d.as_secs_f64() * 1e3);
                }
            }
            Err(e) => lock(&rec.missed).push((id, n, e)),
        }
    }
}

struct Run {
    messages: u64,
    every: u64,
    body_len: usize,
    poll: Duration,
    deadline: Duration,
}

async fn poster(
    client: ops::Client,
    nodes: Arc<Vec<(u64, ops::Client)>>,
    run: Arc<Run>,
    rec: Arc<Record>,
    probes: Arc<Semaphore>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut spawned = Vec::new();
    loop {
        let n = rec.next.fetch_add(1, Ordering::Relaxed);
        if n >= run.messages {
            return spawned;
        }
        let id = format!("e2e-{n}");
        let sent = Instant::now();
        match post_until_acked(
            &client,
            CHANNEL,
            &body(n, run.body_len),
            &id,
            sent + Duration::from_secs(30),
        )
        .await
        {
            Ok(_) => {
                let acked = Instant::now();
                lock(&rec.acks).push((n, acked));
                if n.is_multiple_of(run.every) {
                    match probes.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (nodes, run, rec) = (nodes.clone(), run.clone(), rec.clone());
                            spawned.push(tokio::spawn(async move {
                                let got =
                                    probe(&nodes, n, acked, run.poll, acked + run.deadline).await;
                                drop(permit);
                                record_probe(&rec, n, got);
                            }));
                        }
                        Err(_) => {
                            rec.skipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Err((e, _)) => {
                rec.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("post {id} failed: {e}");
            }
        }
    }
}

/// `wrk` posting to one node until interrupted.
struct Wrk {
    node: u64,
    child: tokio::process::Child,
}

/// Starts `wrk` against every node, `connections` spread over them.
async fn start_wrk(cluster: &TestCluster, connections: u64) -> Result<Vec<Wrk>> {
    cluster.ensure_channel("w").await?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/post.lua");
    let ids = cluster.live_ids();
    let per = (connections / ids.len().max(1) as u64).max(1);
    let mut out = Vec::new();
    for id in ids {
        let child = tokio::process::Command::new("wrk")
            .args(["-t1", &format!("-c{per}"), "-d3600s", "-s"])
            .arg(&script)
            .arg(cluster.url(id))
            .env("TOKEN", cluster.admin_token())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("start wrk (Debian package `wrk`): {e}"))?;
        out.push(Wrk { node: id, child });
    }
    Ok(out)
}

/// Stops every `wrk` (SIGINT: it prints its summary) and returns (posts, non-2xx) in all.
async fn stop_wrk(wrks: Vec<Wrk>) -> Result<(u64, u64)> {
    for w in &wrks {
        // SIGINT, not a kill: wrk prints its summary on it. The child is not reaped yet.
        if let Some(pid) = w.child.id() {
            chaos_tests::node::send_signal(pid, libc::SIGINT)?;
        }
    }
    let (mut posts, mut bad) = (0, 0);
    for w in wrks {
        let out = w.child.wait_with_output().await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let num = |line: &str, at: usize| {
            line.split_whitespace()
                .nth(at)
                .and_then(|v| v.parse::<u64>().ok())
        };
        let got = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| num(l, 0));
        let Some(got) = got else {
            bail!(
                "wrk against node {} printed no summary: {text} {}",
                w.node,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        posts += got;
        bad += text
            .lines()
            .find(|l| l.contains("Non-2xx"))
            .and_then(|l| num(l, 4))
            .unwrap_or(0);
    }
    Ok((posts, bad))
}

fn summary(label: &str, sorted: &[f64]) {
    let p = |q| percentile(sorted, q).map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    println!(
        "{label:<28} samples {:>4}   p50 {:>6} ms   p99 {:>6} ms   max {:>6} ms",
        sorted.len(),
        p(50.0),
        p(99.0),
        p(100.0)
    );
}

async fn run(mut args: Args) -> Result<()> {
    if args.smoke {
        args.messages = 300;
        args.posters = 8;
        args.samples = 20;
        args.deadline = Duration::from_secs(60);
    }
    let bin = chaos_tests::node::release_binary(args.binary.as_deref())?;
    if bin.to_string_lossy().contains("/debug/") {
        println!(
            "warning: {} looks like a debug build; numbers will be low",
            bin.display()
        );
    }
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let opts = ClusterOptions::default()
        .binary(bin.clone())
        .env("RUST_LOG", &rust_log);
    let mut cluster = TestCluster::try_start_with(3, opts).await?;
    println!(
        "cluster of 3 from {} (data {}); {} messages, {} posters, a sample every {} messages",
        bin.display(),
        cluster.root().display(),
        args.messages,
        args.posters,
        (args.messages / args.samples.max(1)).max(1)
    );
    cluster.ensure_channel(CHANNEL).await?;
    let ids = cluster.live_ids();
    // One client pinned to each node: a search must be answered by that node's own index.
    let nodes: Arc<Vec<(u64, ops::Client)>> = Arc::new(
        ids.iter()
            .map(|id| Ok((*id, cluster.try_client(&[*id])?)))
            .collect::<Result<_>>()?,
    );
    let run = Arc::new(Run {
        messages: args.messages,
        every: (args.messages / args.samples.max(1)).max(1),
        body_len: args.body_len,
        poll: Duration::from_millis(args.poll_ms.max(1)),
        deadline: args.deadline,
    });
    let rec = Arc::new(Record::default());
    let probes = Arc::new(Semaphore::new(args.max_probes.max(1)));

    let started = Instant::now();
    let wrks = match args.wrk_connections {
        0 => Vec::new(),
        c => start_wrk(&cluster, c).await?,
    };
    let mut posters = Vec::new();
    for i in 0..args.posters {
        // Posters spread over the nodes, each failing over to the others in turn.
        let mut order = ids.clone();
        order.rotate_left(i % ids.len().max(1));
        let client = cluster.try_client(&order)?;
        posters.push(tokio::spawn(poster(
            client,
            nodes.clone(),
            run.clone(),
            rec.clone(),
            probes.clone(),
        )));
    }
    let mut sample_tasks = Vec::new();
    for p in posters {
        sample_tasks.extend(p.await?);
    }
    // Stopped before anything is reported, so the end-of-burst lag below is measured with
    // the write load over.
    let wrk = match wrks.is_empty() {
        true => None,
        false => Some((stop_wrk(wrks).await?, started.elapsed())),
    };
    let acks = std::mem::take(&mut *lock(&rec.acks));
    let failed = rec.failed.load(Ordering::Relaxed);
    let Some(&(last, last_ack)) = acks.last() else {
        bail!("no message was acknowledged ({failed} failed)");
    };
    let took = last_ack.duration_since(started);
    println!(
        "posted {} messages in {:.1} s: {:.0} msgs/s ({} failed)",
        acks.len(),
        took.as_secs_f64(),
        acks.len() as f64 / took.as_secs_f64().max(1e-9),
        failed
    );
    let mut wrk_bad = 0;
    if let Some(((posts, bad), secs)) = wrk {
        let secs = secs.as_secs_f64().max(1e-9);
        println!(
            "background wrk ({} connections): {posts} posts in {secs:.1} s: {:.0} msgs/s ({bad} not 2xx); write path in all {:.0} msgs/s",
            args.wrk_connections,
            posts as f64 / secs,
            (posts + acks.len() as u64) as f64 / secs
        );
        wrk_bad = bad;
    }

    // The end of the burst: the last acknowledged message on every node.
    let end = probe(
        &nodes,
        last,
        last_ack,
        run.poll,
        Instant::now() + args.deadline,
    )
    .await;
    let mut missing = Vec::new();
    for (id, r) in &end {
        match r {
            Ok(d) => println!(
                "node {id}: last message searchable {:.0} ms after the last acknowledgement",
                d.as_secs_f64() * 1e3
            ),
            Err(e) => {
                println!(
                    "node {id}: last message NOT searchable after {:?}: {e}",
                    args.deadline
                );
                missing.push(*id);
            }
        }
    }
    for t in sample_tasks {
        t.await?;
    }
    let lags = std::mem::take(&mut *lock(&rec.lags));
    let mut all = Vec::new();
    for (i, mut v) in lags.into_iter().enumerate() {
        v.sort_by(f64::total_cmp);
        summary(&format!("node {} ack -> searchable", i + 1), &v);
        all.extend(v);
    }
    all.sort_by(f64::total_cmp);
    summary("all nodes ack -> searchable", &all);
    let missed = std::mem::take(&mut *lock(&rec.missed));
    println!(
        "samples skipped (probe limit {} reached): {}; samples a node never found: {}",
        args.max_probes,
        rec.skipped.load(Ordering::Relaxed),
        missed.len()
    );
    for (id, n, e) in missed.iter().take(10) {
        println!("  node {id} never found message {n}: {e}");
    }
    if args.keep {
        println!(
            "kept data dir and logs: {}",
            cluster.keep_data_dir().display()
        );
    }
    cluster.stop_all().await;
    if !missing.is_empty() || !missed.is_empty() {
        bail!(
            "nodes {missing:?} never found the last message, {} samples never found",
            missed.len()
        );
    }
    if failed > 0 || wrk_bad > 0 {
        bail!("{failed} posts failed, {wrk_bad} wrk posts answered other than 2xx");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    bench_main::run("search-e2e-bench", 2, run(args))
}
