//! Readiness of this node: sees a leader, belongs to a quorum that currently has one, and has
//! applied (nearly) everything committed. Feeds `/readyz` and the cluster status.
//!
//! Owns the periodic probe of the leader. A follower cannot tell from its own metrics whether
//! its leader still has a quorum (a leader cut off with one follower keeps heartbeating it), so
//! it asks the leader, whose `millis_since_quorum_ack` says exactly that.
//! Must never block: the verdict is recomputed in the background and read without waiting.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::node::shared::Shared;
use crate::types::RaftMetrics;

const PROBE_EVERY: Duration = Duration::from_millis(200);

/// A verdict older than this is not trusted (see `Shared::current_readiness`). One evaluation
/// takes at most one tick plus the 500 ms leader probe, so a live node never gets near it.
pub const MAX_VERDICT_AGE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// Why not ready; `None` when ready.
    pub reason: Option<String>,
    /// Not ready only because there is no usable leader right now (an election, or the leader
    /// just died or lost its quorum). Lets the member-health view ride out an election instead
    /// of dropping every node from DNS for it (see `member_health`).
    pub electing: bool,
}

impl Readiness {
    fn no(reason: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason: Some(reason.into()),
            electing: false,
        }
    }
    fn electing(reason: impl Into<String>) -> Self {
        Self {
            electing: true,
            ..Self::no(reason)
        }
    }
    fn yes() -> Self {
        Self {
            ready: true,
            reason: None,
            electing: false,
        }
    }
}

/// A leader has a quorum if a majority acknowledged it within the election timeout; a lone
/// voter always has one.
pub(crate) fn leader_has_quorum(m: &RaftMetrics, election_max_ms: u64) -> bool {
    if m.state != ServerState::Leader {
        return false;
    }
    if m.membership_config.membership().voter_ids().count() <= 1 {
        return true;
    }
    m.millis_since_quorum_ack
        .is_some_and(|ms| ms <= election_max_ms)
}

pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Stopped at an entry this binary must not apply: Raft is stopped for good, but the
        // process stays up, not ready, saying why (DNS and clients then avoid it). Exiting
        // instead would only have a supervisor restart it into the same stop, over and over.
        if let Some(reason) = shared.version_stop.get() {
            if let Ok(mut r) = shared.readiness.lock() {
                let verdict = Readiness::no(reason.clone());
                if r.0 != verdict {
                    tracing::warn!(node_id = shared.id, reason = %reason, "not ready until this node's binary is upgraded");
                }
                *r = (verdict, std::time::Instant::now());
            }
            continue;
        }
        let failed = match &shared.raft.metrics().borrow().running_state {
            // `Stopped` is our own shutdown, not a failure.
            Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        };
        if let Some(error) = failed
            && !cancel.is_cancelled()
        {
            tracing::error!(node_id = shared.id, %error, "raft stopped on a fatal error");
            shared.fatal.cancel();
            break;
        }
        let verdict = evaluate(&shared).await;
        if let Ok(mut r) = shared.readiness.lock() {
            if r.0 != verdict {
                tracing::info!(node_id = shared.id, ready = verdict.ready, reason = ?verdict.reason, "readiness changed");
            }
            *r = (verdict, std::time::Instant::now());
        }
    }
}

async fn evaluate(shared: &Shared) -> Readiness {
    if let Some(reason) = shared.heal.reason() {
        return Readiness::no(reason);
    }
    // It does not change by itself with the next heartbeat, and the operator must act.
    if let Some(why) = shared.disk.low_space() {
        return Readiness::no(why);
    }
    // Its tree is partly the old state, partly the snapshot's, until the install ends.
    if shared
        .snapshot_installing
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return Readiness::no("installing a snapshot from the leader");
    }
    let m = shared.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if membership.get_node(&shared.id).is_none() {
        return Readiness::no("not a member of a cluster yet");
    }
    if !membership.voter_ids().any(|v| v == shared.id) {
        return Readiness::no("learner: still catching up");
    }
    let max_lag = shared.config.ready_max_apply_lag;
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    match m.state {
        ServerState::Leader => {
            if !leader_has_quorum(&m, shared.config.election_timeout_max_ms) {
                return Readiness::electing("leader without a quorum");
            }
            let last = m.last_log_index.unwrap_or(0);
            if last.saturating_sub(applied) > max_lag {
                return Readiness::no(format!("applying: {applied} of {last}"));
            }
            Readiness::yes()
        }
        ServerState::Follower => {
            let Some(leader) = m.current_leader else {
                return Readiness::electing("no leader");
            };
            let Some(info) = membership.get_node(&leader) else {
                return Readiness::no("leader address unknown");
            };
            let timeout = Duration::from_millis(shared.config.election_timeout_max_ms.min(500));
            match shared.http.status(&info.cluster_addr, timeout).await {
                Err(_) => Readiness::electing(format!("leader {leader} not reachable")),
                Ok(st) if st.state != "leader" || !st.quorum_ok => {
                    Readiness::electing(format!("leader {leader} has no quorum"))
                }
                Ok(st) => {
                    let leader_applied = st.last_applied.unwrap_or(0);
                    if leader_applied.saturating_sub(applied) > max_lag {
                        return Readiness::no(format!(
                            "catching up: {applied} of {leader_applied}"
                        ));
                    }
                    Readiness::yes()
                }
            }
        }
        ServerState::Candidate => Readiness::electing("election in progress"),
        ServerState::Learner => Readiness::no("learner"),
        ServerState::Shutdown => Readiness::no("shut down"),
    }
}
