//! The snapshot catch-up scenario shared by the acceptance test and `snapshot-bench`: a 3-node
//! cluster whose leader holds a large history (made by `history_gen`), a follower that first
//! catches up by snapshot, then the third follower wiped and restarted, which must catch up by
//! snapshot too; measured: time, MB/s, and the peak RSS growth of the sender (the leader) and
//! the receiver (the wiped follower), from `/proc` (Linux only, like every test of this crate).
//!
//! Owns the measurement. Must never run against anything but a `TestCluster`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::history_gen::{self, HistorySpec};
use crate::{ADMIN_USER, TestCluster};

/// The channel the history is generated into.
pub const BIG_CHANNEL: &str = "history";

/// What one run measured.
#[derive(Debug, Clone)]
pub struct CatchUpReport {
    pub messages: u64,
    pub snapshot_bytes: u64,
    pub generate: Duration,
    /// From the wiped follower's start to it having applied the leader's last index.
    pub catch_up: Duration,
    /// Peak RSS growth of the leader during the catch-up (VmHWM after, reset before, minus
    /// VmRSS before), bytes.
    pub sender_growth: u64,
    /// Peak RSS of the wiped follower over its whole life minus its RSS once it served
    /// `/healthz` (an empty node's baseline, taken before any snapshot data arrived; see
    /// `run`), bytes.
    pub receiver_growth: u64,
    pub receiver_baseline: u64,
    pub leader: u64,
    pub wiped: u64,
    /// The leader's term before the wiped follower started.
    pub term_before: u64,
    /// The leader and its term once the follower has caught up (issue 16: a catch-up must not
    /// cause an election).
    pub leader_after: Option<u64>,
    pub term_after: u64,
}

impl CatchUpReport {
    pub fn mb_per_s(&self) -> f64 {
        self.snapshot_bytes as f64 / 1e6 / self.catch_up.as_secs_f64().max(1e-9)
    }
}

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `VmHWM`).
pub fn proc_status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("bad line {line:?}"))?;
    Ok(kb * 1024)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS (`clear_refs` 5, Linux >= 4.0).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("reset VmHWM of {pid}"))
}

fn pid_of(cluster: &TestCluster, id: u64) -> Result<u32> {
    cluster
        .node(id)
        .pid()
        .ok_or_else(|| anyhow!("node {id} is not running"))
}

/// `last_applied` of node `id` in its own `/api/v1/cluster` view.
pub async fn last_applied(cluster: &TestCluster, id: u64) -> Result<u64> {
    let v = cluster.cluster_json(id).await?;
    v["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"].as_u64() == Some(id)))
        .and_then(|n| n["last_applied"].as_u64())
        .ok_or_else(|| anyhow!("node {id} reports no last_applied for itself: {v}"))
}

async fn wait_applied(cluster: &TestCluster, id: u64, index: u64, timeout: Duration) -> Result<()> {
    crate::wait::poll_until(
        &format!("node {id} to apply index {index}"),
        timeout,
        || async {
            match last_applied(cluster, id).await {
                Ok(a) if a >= index => Ok(()),
                Ok(a) => Err(format!("applied {a}")),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await
}

async fn wait_healthz(cluster: &TestCluster, id: u64, timeout: Duration) -> Result<()> {
    let url = format!("{}/healthz", cluster.url(id));
    crate::wait::poll_until(&format!("node {id} /healthz"), timeout, || async {
        match cluster.http().get(&url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("status {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// Runs the scenario on a running 3-node `cluster` whose channel `BIG_CHANNEL` exists: stops
/// it, generates `messages` posts of `body_bytes` into the leader, starts the leader with one
/// follower (which catches up first), then wipes the third node, and measures its catch-up.
/// `timeout` bounds each wait.
pub async fn run(
    cluster: &TestCluster,
    messages: u64,
    body_bytes: usize,
    timeout: Duration,
) -> Result<CatchUpReport> {
    let leader = cluster
        .try_wait_for_leader(&[])
        .await
        .context("a leader before the history is generated")?;
    let mut others: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    let wiped = others.pop().ok_or_else(|| anyhow!("need 3 nodes"))?;
    let first = others.pop().ok_or_else(|| anyhow!("need 3 nodes"))?;
    cluster.stop_all().await;

    let spec = HistorySpec {
        channel: BIG_CHANNEL.into(),
        author: ADMIN_USER.into(),
        messages,
        body_bytes,
        per_entry: 512,
    };
    let generated = history_gen::generate(&cluster.node(leader).spec.data_dir, &spec).await?;
    eprintln!(
        "generated {messages} messages into node {leader}: index {}, snapshot {} MB, {:?}",
        generated.last_index,
        generated.snapshot_bytes / 1_000_000,
        generated.took
    );

    // The leader and one follower only: the follower cannot win an election without the
    // leader's vote (the leader's log is ahead), so the generated history is kept.
    cluster.spawn(leader);
    cluster.spawn(first);
    let led = cluster.try_wait_for_leader(&[wiped]).await?;
    if led != leader {
        bail!("node {led} leads, not node {leader} which holds the generated history");
    }
    wait_applied(cluster, first, generated.last_index, timeout).await?;
    eprintln!("node {first} caught up");
    let (term_before, _) = term_and_leader(cluster, leader).await?;

    let data_dir = cluster.node(wiped).spec.data_dir.clone();
    wipe(&data_dir)?;
    let leader_pid = pid_of(cluster, leader)?;
    let sender_before = proc_status_bytes(leader_pid, "VmRSS")?;
    reset_peak_rss(leader_pid)?;
    let started = Instant::now();
    cluster.spawn(wiped);
    let wiped_pid = pid_of(cluster, wiped)?;
    // An empty node's RSS once it serves: taken before the snapshot's data can have arrived in
    // any quantity (the leader finds it within its 1 s backoff, and a transfer takes longer
    // than this wait). If it were taken late, the growth would be understated only by what
    // arrived before; the check below makes sure little had.
    wait_healthz(cluster, wiped, timeout).await?;
    let receiver_baseline = proc_status_bytes(wiped_pid, "VmRSS")?;
    wait_applied(cluster, wiped, generated.last_index, timeout).await?;
    let catch_up = started.elapsed();
    let receiver_peak = proc_status_bytes(wiped_pid, "VmHWM")?;
    let sender_peak = proc_status_bytes(leader_pid, "VmHWM")?;
    let (term_after, leader_after) = term_and_leader(cluster, leader).await?;
    Ok(CatchUpReport {
        messages,
        snapshot_bytes: generated.snapshot_bytes,
        generate: generated.took,
        catch_up,
        sender_growth: sender_peak.saturating_sub(sender_before),
        receiver_growth: receiver_peak.saturating_sub(receiver_baseline),
        receiver_baseline,
        leader,
        wiped,
        term_before,
        leader_after,
        term_after,
    })
}

/// Node `id`'s own term and the leader it follows (`GET /api/v1/cluster`).
pub async fn term_and_leader(cluster: &TestCluster, id: u64) -> Result<(u64, Option<u64>)> {
    let v = cluster.cluster_json(id).await?;
    let term = v["term"]
        .as_u64()
        .ok_or_else(|| anyhow!("node {id}: no term in {v}"))?;
    Ok((term, v["leader_id"].as_u64()))
}

/// Empties a stopped node's data dir (it starts as a new, uninitialized member that its
/// cluster still lists, so the leader sends it everything).
fn wipe(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("wipe {}", dir.display()))?;
    Ok(())
}
