//! `snapshot-bench`: what a snapshot catch-up costs over a large history (issue 14). Run by
//! hand on a release build; a seconds-long run of the same scenario is in the acceptance suite
//! (`snapshot::snapshot_catch_up_in_bounded_memory`), which keeps this from rotting:
//!
//! ```text
//! cargo build --release -p node -p chaos-tests
//! $CARGO_TARGET_DIR/release/snapshot-bench --messages 5000000
//! ```
//!
//! Starts a 3-node cluster, writes `--messages` posts into the leader's stores through the
//! state machine (`chaos_tests::history_gen`, not over HTTP), lets one follower catch up, wipes
//! the third and measures its catch-up by snapshot: time, MB/s, and the peak RSS growth of the
//! sender (leader) and the receiver, from `/proc` (Linux only). The cluster's temp dir (about
//! 3x the snapshot size) is removed at the end.
#![allow(clippy::print_stdout)]

use chaos_tests::bench_main;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chaos_tests::snapshot_catchup::{self, BIG_CHANNEL};
use chaos_tests::{ClusterOptions, TestCluster};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Snapshot catch-up of a wiped follower over a large history")]
struct Args {
    /// Messages in the history.
    #[arg(long, default_value_t = 5_000_000)]
    messages: u64,
    /// Body of each message, bytes (with the per-message overhead, 5 M messages are ~2 GB).
    #[arg(long, default_value_t = 300)]
    body_bytes: usize,
    /// Bound on each wait (generation excluded).
    #[arg(long, default_value = "30m", value_parser = chaos_tests::duration_arg::parse)]
    timeout: Duration,
    /// The `conclave` binary (default: the build next to this one, or CONCLAVE_BIN).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Keep the cluster's directory (data dirs and node logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

const MIB: f64 = 1024.0 * 1024.0;

async fn run(args: Args) -> Result<()> {
    let mut opts = ClusterOptions::default().request_timeout(Duration::from_secs(60));
    if let Some(b) = args.binary {
        opts = opts.binary(b);
    }
    let mut cluster = TestCluster::try_start_with(3, opts).await?;
    if args.keep {
        println!("cluster dir (kept): {}", cluster.keep_data_dir().display());
    }
    cluster
        .client_all()
        .create_channel(BIG_CHANNEL)
        .await
        .map_err(|e| anyhow::anyhow!("create channel: {e}"))?;
    let r = snapshot_catchup::run(&cluster, args.messages, args.body_bytes, args.timeout).await?;
    println!("messages:            {}", r.messages);
    println!(
        "snapshot:            {:.1} MB",
        r.snapshot_bytes as f64 / 1e6
    );
    println!("generate (in-proc):  {:.1} s", r.generate.as_secs_f64());
    println!(
        "catch-up (node {}):   {:.1} s, {:.1} MB/s",
        r.wiped,
        r.catch_up.as_secs_f64(),
        r.mb_per_s()
    );
    println!(
        "sender (node {}) peak RSS growth:   {:.1} MiB",
        r.leader,
        r.sender_growth as f64 / MIB
    );
    println!(
        "receiver (node {}) peak RSS growth: {:.1} MiB (baseline {:.1} MiB)",
        r.wiped,
        r.receiver_growth as f64 / MIB,
        r.receiver_baseline as f64 / MIB
    );
    println!(
        "leader:              node {} term {} before, {:?} term {} after",
        r.leader, r.term_before, r.leader_after, r.term_after
    );
    cluster.stop_all().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    bench_main::run("snapshot-bench", 2, run(args))
}
