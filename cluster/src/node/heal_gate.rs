//! The heal gate: a node that lost durable state (its store was quarantined, see
//! `storage::quarantine`) must not help elect a leader until it has caught up again.
//!
//! Why: it may have acknowledged entries it no longer has. Granting a vote to a candidate that
//! lacks them, or winning an election itself, could then lose committed entries. So while the
//! heal marker exists the node neither campaigns (`election_gate` checks `healing()`) nor
//! grants votes (the cluster port's vote route answers 503). It records the commit
//! index of the first AppendEntries it accepts from a leader that has committed in its own term
//! (such a leader's commit index covers every entry committed before its term, which a new
//! leader's may not yet); once this node has applied that index, the marker is removed durably
//! and the node votes and campaigns again. Until then readiness says "healing: ...".
//!
//! Owns that rule and the marker's removal. Must never open the gate before the marker is gone
//! from disk (a crash in between would restart a node that votes with a store it lost).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::shared::Shared;
use crate::storage::quarantine::HealMarker;
use crate::types::{LogId, NodeId, Vote};

const CHECK_EVERY: Duration = Duration::from_millis(200);

#[derive(Default)]
struct GateState {
    marker: Option<HealMarker>,
    target: Option<u64>,
}

/// Whether this node is healing, and until which index.
pub(crate) struct HealGate {
    data_dir: PathBuf,
    state: Mutex<GateState>,
}

/// The catch-up target an accepted AppendEntries sets: its leader's commit index, if that
/// leader has committed an entry of its own term (`leader_commit`'s term is the vote's).
pub(crate) fn target_from(vote: &Vote, leader_commit: Option<&LogId>) -> Option<u64> {
    let commit = leader_commit?;
    (commit.leader_id.term == vote.leader_id.term).then_some(commit.index)
}

/// The gate opens once a target is known and applied has reached it.
pub(crate) fn caught_up(target: Option<u64>, applied: Option<u64>) -> bool {
    match target {
        Some(t) => applied.unwrap_or(0) >= t,
        None => false,
    }
}

impl HealGate {
    pub(crate) fn new(data_dir: PathBuf, marker: Option<HealMarker>) -> Arc<Self> {
        Arc::new(Self {
            data_dir,
            state: Mutex::new(GateState {
                marker,
                target: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn healing(&self) -> bool {
        self.lock().marker.is_some()
    }

    /// The readiness reason while healing.
    pub(crate) fn reason(&self) -> Option<String> {
        self.lock().marker.as_ref().map(HealMarker::reason)
    }

    /// Member ids the marker remembers (the cluster port's member set while the log is empty).
    pub(crate) fn members_hint(&self) -> BTreeSet<NodeId> {
        self.lock()
            .marker
            .as_ref()
            .map(|m| m.members.clone())
            .unwrap_or_default()
    }

    /// Called for every AppendEntries this node accepted (not one refused for a stale vote).
    pub(crate) fn note_append(&self, vote: &Vote, leader_commit: Option<&LogId>) {
        let mut st = self.lock();
        if st.marker.is_none() || st.target.is_some() {
            return;
        }
        if let Some(t) = target_from(vote, leader_commit) {
            tracing::info!(target = t, leader = ?vote.leader_id.voted_for(), "healing: catching up to the leader's commit index");
            st.target = Some(t);
        }
    }

    /// Removes the marker (durably) if caught up; true when the gate is open.
    fn try_finish(&self, applied: Option<u64>) -> bool {
        let mut st = self.lock();
        if st.marker.is_none() {
            return true;
        }
        if !caught_up(st.target, applied) {
            return false;
        }
        if let Err(e) = HealMarker::remove(&self.data_dir) {
            tracing::error!(error = %e, path = %self.data_dir.display(), "cannot remove the heal marker; staying out of elections");
            return false;
        }
        tracing::info!(applied = ?applied, target = ?st.target, "healed: caught up from peers; voting and campaigning again");
        st.marker = None;
        true
    }
}

/// Opens the gate once caught up (`election_gate` reads `healing()`).
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    if !shared.heal.healing() {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let applied = shared.raft.metrics().borrow().last_applied.map(|l| l.index);
        if shared.heal.try_finish(applied) {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn target_needs_a_commit_of_the_leaders_own_term() {
        let vote = Vote::new_committed(5, 1);
        assert_eq!(target_from(&vote, Some(&log_id(5, 40))), Some(40));
        // A new leader that has not committed in its term may lag the true commit index.
        assert_eq!(target_from(&vote, Some(&log_id(4, 40))), None);
        assert_eq!(target_from(&vote, None), None);
    }

    #[test]
    fn gate_opens_only_when_applied_reaches_the_target() {
        assert!(!caught_up(None, Some(100)));
        assert!(!caught_up(Some(40), None));
        assert!(!caught_up(Some(40), Some(39)));
        assert!(caught_up(Some(40), Some(40)));
        assert!(caught_up(Some(0), None));
    }

    #[test]
    fn the_first_target_sticks_and_finishing_removes_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let marker = HealMarker {
            what: "log".into(),
            detail: "test".into(),
            quarantined: dir.path().join("quarantine/x"),
            vote: None,
            members: [1, 2].into_iter().collect(),
        };
        marker.write(dir.path()).unwrap();
        let gate = HealGate::new(dir.path().to_path_buf(), Some(marker));
        assert!(gate.healing());
        assert!(gate.reason().unwrap().starts_with("healing: corrupted log"));
        assert!(!gate.try_finish(Some(1000)), "no target seen yet");
        let vote = Vote::new_committed(3, 2);
        gate.note_append(&vote, Some(&log_id(3, 50)));
        gate.note_append(&vote, Some(&log_id(3, 10)));
        assert!(!gate.try_finish(Some(49)));
        assert!(gate.healing());
        assert!(gate.try_finish(Some(50)));
        assert!(!gate.healing());
        assert!(HealMarker::read(dir.path()).unwrap().is_none());
    }
}
