//! Makes a large chat history fast, through the state machine and not over HTTP: opens a
//! *stopped* node's data dir, applies synthetic committed entries (batches of `PostMessage`)
//! through `StateMachineStore`, builds a snapshot of the result, purges the log up to it and
//! writes the clean-shutdown proof, so the node starts on that state without replaying anything.
//!
//! The entries continue the node's own log under its last entry's leader id. That is only sound
//! if this node then leads (its log is the most up to date, so nodes that did not get the
//! entries cannot win an election against it with this node's vote; start it with one other
//! node first) and the others catch up from it by snapshot, which is what the snapshot tests
//! and `snapshot-bench` measure. Owns nothing at run time; must never be used on a running
//! node, nor outside tests and benchmarks.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cluster::command::{COMMAND_VERSION, Command, Request};
use cluster::storage::recovery::{self, StoreOptions};
use cluster::types::{Entry, LogId};
use openraft::EntryPayload;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};

/// What to generate.
#[derive(Debug, Clone)]
pub struct HistorySpec {
    pub channel: String,
    pub author: String,
    pub messages: u64,
    pub body_bytes: usize,
    /// Messages per log entry (what group commit packs into one entry).
    pub per_entry: usize,
}

/// What was generated.
#[derive(Debug, Clone)]
pub struct HistoryReport {
    pub last_index: u64,
    pub snapshot_bytes: u64,
    pub took: Duration,
}

/// Generates `spec` into the stopped node's `data_dir` (see the module doc).
pub async fn generate(data_dir: &Path, spec: &HistorySpec) -> Result<HistoryReport> {
    let started = Instant::now();
    let opened = recovery::open(
        data_dir,
        StoreOptions {
            cache_bytes: 64 << 20,
            segment_bytes: cluster::storage::log_store::SEGMENT_BYTES,
        },
    )
    .with_context(|| format!("open the stores in {}", data_dir.display()))?;
    if opened.healing.is_some() {
        bail!(
            "{} is healing; generate into a healthy node",
            data_dir.display()
        );
    }
    let mut log = opened.log;
    let mut sm = opened.sm;
    let last = log
        .get_log_state()
        .await?
        .last_log_id
        .context("the node's log is empty: start the cluster once first")?;
    let (applied, _) = sm.applied_state().await?;
    if applied != Some(last) {
        bail!("the node applied {applied:?} but its log ends at {last}: stop it cleanly first");
    }
    let body = "x".repeat(spec.body_bytes);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut index = last.index;
    let mut made = 0u64;
    while made < spec.messages {
        let n = (spec.messages - made).min(spec.per_entry as u64);
        let commands: Vec<Command> = (made..made + n)
            .map(|i| Command::PostMessage {
                channel: spec.channel.clone(),
                author: spec.author.clone(),
                body: body.clone(),
                client_msg_id: format!("gen-{i}"),
            })
            .collect();
        index += 1;
        let entry = Entry {
            log_id: LogId::new(last.leader_id, index),
            payload: EntryPayload::Normal(Request::new(
                COMMAND_VERSION,
                ts,
                Arc::<[Command]>::from(commands),
            )),
        };
        let responses = sm.apply([entry]).await?;
        if let Some(bad) = responses
            .iter()
            .flat_map(|r| r.outcomes.iter())
            .find(|o| o.is_err())
        {
            bail!("a generated post was refused: {bad:?}");
        }
        made += n;
    }
    let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
    let snapshot_bytes = snap.snapshot.metadata().await?.len();
    drop(snap);
    log.purge(LogId::new(last.leader_id, index)).await?;
    let tree = opened.db.open_tree("sm")?;
    cluster::storage::proof::write(data_dir, &opened.db, &tree)?;
    Ok(HistoryReport {
        last_index: index,
        snapshot_bytes,
        took: started.elapsed(),
    })
}
