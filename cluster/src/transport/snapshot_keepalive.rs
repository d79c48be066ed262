//! Keeps a follower from campaigning while its leader streams it a snapshot.
//!
//! openraft 0.9 sends a follower no heartbeat while a snapshot transfer to it is in flight
//! (its replication stream is busy with the chunks); the answer to the last chunk even waits
//! for the whole install. `election_gate` never campaigns while the install runs, but between
//! chunks, and for the peers' pre-votes, the follower must still count as hearing its leader.
//! So each chunk received from a leader counts as that leader's heartbeat: it is noted as
//! leader contact (for `election_gate` and this node's pre-vote answer) and, until the transfer has been quiet for a few election timeouts,
//! the follower feeds its own Raft an empty AppendEntries carrying that leader's vote every
//! heartbeat interval (no previous log id, no entries, no commit index: it changes nothing but
//! the vote's time, exactly what a heartbeat of that leader would do).
//!
//! Owns that keep-alive task (one at a time per node). Must never act for a vote lower than
//! the node's own (openraft refuses it anyway) nor outlive a transfer that stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::raft::AppendEntriesRequest;

use crate::node::shared::Shared;
use crate::types::{TypeConfig, Vote};

/// The keep-alive state of one node.
#[derive(Default)]
pub(crate) struct SnapshotKeepalive {
    running: AtomicBool,
    /// The vote of the leader streaming to us and until when to stand in for its heartbeats.
    /// A `std` mutex: held to copy two values, never across `.await`.
    until: std::sync::Mutex<Option<(Vote, Instant)>>,
}

/// Notes that a snapshot chunk from the leader with `vote` arrived (or is being installed), and
/// makes sure the keep-alive runs for a while.
pub(crate) fn note_chunk(s: &Arc<Shared>, vote: Vote) {
    // A stale leader's chunk is refused by openraft; it must not pass for contact either.
    if vote < s.raft.metrics().borrow().vote {
        return;
    }
    s.note_leader_contact(Instant::now());
    let quiet = Duration::from_millis(s.config.election_timeout_max_ms * 4);
    if let Ok(mut u) = s.snapshot_keepalive.until.lock() {
        *u = Some((vote, Instant::now() + quiet));
    }
    if s.snapshot_keepalive
        .running
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let s = s.clone();
    crate::node::spawn_named("snapshot-keepalive", async move {
        let every = Duration::from_millis(s.config.heartbeat_interval_ms.max(10));
        loop {
            let current = s.snapshot_keepalive.until.lock().ok().and_then(|u| *u);
            let Some((vote, until)) = current else { break };
            if Instant::now() >= until || s.cancel.is_cancelled() {
                break;
            }
            s.note_leader_contact(Instant::now());
            let beat = AppendEntriesRequest::<TypeConfig> {
                vote,
                prev_log_id: None,
                entries: Vec::new(),
                leader_commit: None,
            };
            if let Err(e) = s.raft.append_entries(beat).await {
                tracing::debug!(error = %e, "snapshot keep-alive heartbeat refused");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = s.cancel.cancelled() => break,
            }
        }
        s.snapshot_keepalive.running.store(false, Ordering::Release);
    });
}
