//! Planned leadership handover: before a leader stops (SIGTERM) or while an admin drains it,
//! it hands leadership to an up-to-date follower, so clients see a pause of a few milliseconds
//! instead of an election after the leader lease (about 600 ms) and failed requests.
//!
//! openraft 0.9 has no leader transfer. What it does have (`Engine::handle_vote_req`): a voter
//! refuses a vote while its committed vote is younger than the leader lease, and a leader's
//! own vote only ages (heartbeats refresh the followers' votes, not the leader's). So a leader
//! that has led longer than the lease grants a vote to a candidate whose log is at least as
//! long as its own, and steps down on granting it. With three voters, old leader + candidate
//! are a majority. The protocol:
//! 1. hold: the cluster port takes no new forwarded writes (a follower's forward waits for the
//!    handover and is then answered `NotLeader`, so it re-sends to the new leader), the ones
//!    accepted are proposed, no new proposal starts (the batcher waits on
//!    [`HandoverState::admit`]) and proposals in flight finish (commit). Membership changes are
//!    held by `membership_lock`;
//! 2. pick the voter whose replicated log matches the leader's last index (healthy, not
//!    draining, not below its free-space watermark) and ask it to campaign now
//!    ([`PATH_CAMPAIGN`], accepted only from the current leader of the same term);
//! 3. it calls `trigger().elect()`; the old leader grants its vote and steps down; the third
//!    voter refuses (its lease is fresh) but is not needed;
//! 4. once the target leads, the hold is released: the held commands were never proposed, so
//!    the batcher forwards them to the new leader like any follower's, which is safe even for
//!    commands that are not idempotent.
//!
//! Any failure (more than three voters, where leases block the vote; a target that is behind,
//! gone, refuses, or is an older binary answering 404; a bound that runs out) releases the
//! hold and leaves the node as it was: the caller then does what it did before (stop, and let
//! the followers elect after the lease).
//!
//! Owns the hold gate, the time this node became leader, the campaign RPC and the drain
//! watcher. Must never ask for a campaign while any proposal of this leader is in flight or
//! its log is ahead of the target's (the vote would be refused and the election cost a term),
//! and must never hold writes longer than its bound.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedRwLockReadGuard, RwLock};
use tokio_util::sync::CancellationToken;

use crate::node::shared::Shared;
use crate::storage::disk_space::StorageState;
use crate::types::NodeId;

/// Asks a follower to start an election now (see the module doc).
pub const PATH_CAMPAIGN: &str = "/raft/v1/campaign";

/// Past the lease, so the leader's vote has surely aged (the time is observed from metrics a
/// little after openraft set it, which only errs on the safe side).
const LEASE_MARGIN: Duration = Duration::from_millis(30);
const CAMPAIGN_RPC_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a draining leader waits before trying again after a failed handover.
const DRAIN_RETRY: Duration = Duration::from_secs(10);
const DRAIN_BOUND: Duration = Duration::from_secs(2);
const WATCH_TICK: Duration = Duration::from_secs(1);
/// A handover is bounded well below this; a forward never waits longer for it.
const FORWARD_WAIT_MAX: Duration = Duration::from_secs(5);

/// The body of [`PATH_CAMPAIGN`]: the leader's id and term, and the log index the target must
/// already hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CampaignRequest {
    pub from: NodeId,
    pub term: u64,
    pub last_log_index: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CampaignReply {
    /// The election was started.
    Started,
    /// Why not (the leader then falls back).
    Refused(String),
}

/// Why a handover did not happen; the caller falls back to today's behaviour.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("this node is not the leader")]
    NotLeader,
    #[error("no follower can take over: {0}")]
    NoTarget(String),
    #[error(
        "{voters} voters: a handover needs the old leader's vote plus the target's to be a majority (at most 3 voters)"
    )]
    TooManyVoters { voters: usize },
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("node {target} refused to campaign: {reason}")]
    Refused { target: NodeId, reason: String },
    #[error("campaign request to node {target} failed: {reason}")]
    Transport { target: NodeId, reason: String },
    #[error("shutting down")]
    ShuttingDown,
}

/// Shared handover state of one node (in `Shared`).
pub(crate) struct HandoverState {
    /// Read-held by every proposal of the batcher for its whole run; write-held by a handover,
    /// which thereby waits for the proposals in flight and keeps new ones from starting.
    gate: Arc<RwLock<()>>,
    /// Set for the whole of a handover: the cluster port takes no new forwarded writes.
    handing_over: AtomicBool,
    /// Forwarded writes accepted and not yet answered ([`HandoverState::admit_forward`]).
    forwards: AtomicUsize,
    /// Woken when `handing_over` is cleared and when `forwards` drops to zero, so neither
    /// waiter polls. Waiters register (`enable`) before they re-check the atomic: no lost wake-up.
    changed: Notify,
    /// The term this node leads and when it was first seen leading it.
    leader_since: Mutex<Option<(u64, Instant)>>,
}

impl HandoverState {
    pub(crate) fn new() -> Self {
        Self {
            gate: Arc::new(RwLock::new(())),
            handing_over: AtomicBool::new(false),
            forwards: AtomicUsize::new(0),
            changed: Notify::new(),
            leader_since: Mutex::new(None),
        }
    }

    /// Called by the cluster port before it queues a follower's forwarded writes. While a
    /// handover is under way it waits for its end and returns None (the caller answers
    /// `NotLeader`, which the follower re-sends, to the new leader). Why: a held forwarded
    /// write would be forwarded again, to the new leader, while the follower's own batcher
    /// waits for it with a proposal slot: with every slot of the new leader waiting like that,
    /// the new leader's batcher cannot take it (a cycle broken only by the write timeout).
    pub(crate) async fn admit_forward(&self) -> Option<ForwardTicket<'_>> {
        // Counted first, checked second; `hand_over` sets the flag first and then waits for
        // the count (both SeqCst): either it waits for this forward or this sees the flag.
        self.forwards.fetch_add(1, Ordering::SeqCst);
        let ticket = ForwardTicket(self);
        if !self.handing_over.load(Ordering::SeqCst) {
            return Some(ticket);
        }
        drop(ticket);
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT_MAX;
        let _ = self
            .wait_until(deadline, || !self.handing_over.load(Ordering::SeqCst))
            .await;
        None
    }

    /// Waits until `done()` holds, woken through `changed`; false if `deadline` came first.
    async fn wait_until(&self, deadline: tokio::time::Instant, done: impl Fn() -> bool) -> bool {
        loop {
            let woken = self.changed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if done() {
                return true;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return done();
            }
        }
    }

    /// Waits while a handover holds writes; the batcher keeps the guard until its proposal
    /// ended. Immediate when no handover is under way.
    pub(crate) async fn admit(&self) -> OwnedRwLockReadGuard<()> {
        self.gate.clone().read_owned().await
    }

    fn note_metrics(&self, state: ServerState, term: u64) {
        let Ok(mut since) = self.leader_since.lock() else {
            return;
        };
        match (state, *since) {
            (ServerState::Leader, Some((t, _))) if t == term => {}
            (ServerState::Leader, _) => *since = Some((term, Instant::now())),
            _ => *since = None,
        }
    }

    fn leader_since(&self, term: u64) -> Option<Instant> {
        self.leader_since
            .lock()
            .ok()
            .and_then(|s| *s)
            .filter(|(t, _)| *t == term)
            .map(|(_, at)| at)
    }
}

/// One accepted forwarded request (see [`HandoverState::admit_forward`]).
pub(crate) struct ForwardTicket<'a>(&'a HandoverState);

impl Drop for ForwardTicket<'_> {
    fn drop(&mut self) {
        if self.0.forwards.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// Clears `handing_over` however the handover ends.
struct HandingOver<'a>(&'a HandoverState);

impl<'a> HandingOver<'a> {
    fn start(h: &'a HandoverState) -> Self {
        h.handing_over.store(true, Ordering::SeqCst);
        Self(h)
    }
}

impl Drop for HandingOver<'_> {
    fn drop(&mut self) {
        self.0.handing_over.store(false, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Hands leadership to an up-to-date follower within `bound`, holding this node's writes
/// meanwhile. Returns the new leader. On error nothing changed (or an election is under way
/// that the cluster finishes on its own); writes are released either way.
pub(crate) async fn hand_over(shared: &Shared, bound: Duration) -> Result<NodeId, HandoverError> {
    let deadline = tokio::time::Instant::now() + bound;
    let m = shared.raft.metrics().borrow().clone();
    if m.state != ServerState::Leader {
        return Err(HandoverError::NotLeader);
    }
    let term = m.current_term;
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    if voters.len() < 2 {
        return Err(HandoverError::NoTarget(
            "this node is the only voter".into(),
        ));
    }
    if voters.len() > 3 {
        return Err(HandoverError::TooManyVoters {
            voters: voters.len(),
        });
    }
    // openraft refuses the vote while this leader's own vote is younger than the lease.
    let lease = Duration::from_millis(shared.config.election_timeout_max_ms);
    let since = shared
        .handover
        .leader_since(term)
        .unwrap_or_else(Instant::now);
    let aged = tokio::time::Instant::from_std(since + lease + LEASE_MARGIN);
    if aged > deadline {
        return Err(HandoverError::Timeout(
            "this leader is younger than its lease",
        ));
    }
    tokio::time::sleep_until(aged).await;

    let _membership = tokio::time::timeout_at(deadline, shared.membership_lock.lock())
        .await
        .map_err(|_| HandoverError::Timeout("a membership change is under way"))?;
    let held_at = Instant::now();
    let _handing_over = HandingOver::start(&shared.handover);
    // Forwarded writes already accepted are proposed here, as leader (see `admit_forward`).
    let forwards_done = shared
        .handover
        .wait_until(deadline, || {
            shared.handover.forwards.load(Ordering::SeqCst) == 0
        })
        .await;
    if !forwards_done {
        return Err(HandoverError::Timeout("forwarded writes did not finish"));
    }
    let _hold = tokio::time::timeout_at(deadline, shared.handover.gate.clone().write_owned())
        .await
        .map_err(|_| HandoverError::Timeout("proposals in flight did not finish"))?;
    let result = campaign_while_held(shared, term, deadline).await;
    let held_ms = held_at.elapsed().as_secs_f64() * 1e3;
    match &result {
        Ok(target) => tracing::info!(
            node_id = shared.id,
            term,
            target,
            held_ms,
            "leadership handed over; held writes go to the new leader"
        ),
        Err(e) => tracing::warn!(
            node_id = shared.id,
            term,
            held_ms,
            error = %e,
            "leadership handover failed; writes released"
        ),
    }
    result
}

/// Steps 2 and 3 of the protocol, with writes held.
async fn campaign_while_held(
    shared: &Shared,
    term: u64,
    deadline: tokio::time::Instant,
) -> Result<NodeId, HandoverError> {
    let mut metrics = shared.raft.metrics();
    let (target, last) = loop {
        let m = metrics.borrow_and_update().clone();
        if m.state != ServerState::Leader || m.current_term != term {
            return Err(HandoverError::NotLeader);
        }
        let last = m.last_log_index.unwrap_or(0);
        let candidates = eligible_targets(shared, &m);
        if candidates.is_empty() {
            return Err(HandoverError::NoTarget(
                "no voter is reachable, healthy and not draining".into(),
            ));
        }
        // The most up-to-date candidate (ties: lowest id).
        let best = candidates
            .iter()
            .map(|(id, matched)| (*matched, std::cmp::Reverse(*id)))
            .max()
            .map(|(matched, std::cmp::Reverse(id))| (id, matched));
        if let Some((id, matched)) = best
            && matched >= last
        {
            break (id, last);
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return Err(HandoverError::ShuttingDown),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(HandoverError::Timeout("no follower caught up with the leader's log"));
            }
            changed = metrics.changed() => if changed.is_err() {
                return Err(HandoverError::ShuttingDown);
            },
        }
    };
    let info = shared
        .node_info(target)
        .ok_or_else(|| HandoverError::NoTarget(format!("no address for node {target}")))?;
    let req = CampaignRequest {
        from: shared.id,
        term,
        last_log_index: last,
    };
    // From now on this node may be a follower: its election trigger must count the lease from
    // here, not from the last leader it heard before it led (it would campaign at once and
    // depose the new leader with a shorter log and a higher term).
    if let Ok(mut t) = shared.last_leader_contact.lock() {
        *t = std::time::Instant::now();
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let reply: CampaignReply = shared
        .http
        .post_bin(
            &info.cluster_addr,
            PATH_CAMPAIGN,
            &req,
            left.min(CAMPAIGN_RPC_TIMEOUT),
        )
        .await
        .map_err(|e| HandoverError::Transport {
            target,
            reason: e.short(),
        })?;
    if let CampaignReply::Refused(reason) = reply {
        return Err(HandoverError::Refused { target, reason });
    }
    // Held until the target leads: released earlier, the batcher would propose here (this
    // node may still be leader for a moment) and make its log longer than the candidate's.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    shared
        .raft
        .wait(Some(left))
        .metrics(
            |m| m.current_leader == Some(target) && m.current_term > term,
            "the handover target leads",
        )
        .await
        .map_err(|_| HandoverError::Timeout("the target did not become leader"))?;
    Ok(target)
}

/// Voters other than this node that may lead, with the log index each is known to hold.
fn eligible_targets(shared: &Shared, m: &crate::types::RaftMetrics) -> Vec<(NodeId, u64)> {
    let view = shared.health.borrow().clone();
    let replication = m.replication.clone().unwrap_or_default();
    m.membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != shared.id)
        .filter(|id| {
            // Unknown to the health view (not probed yet) counts as fine: the target checks
            // itself and refuses when it cannot lead.
            view.members.iter().find(|h| h.id == *id).is_none_or(|h| {
                !h.draining
                    && h.status.as_ref().is_ok_and(|st| {
                        st.storage
                            .as_ref()
                            .is_none_or(|s| s.state != StorageState::LowSpace.as_str())
                    })
            })
        })
        .map(|id| {
            let matched = replication
                .get(&id)
                .and_then(|l| l.as_ref())
                .map(|l| l.index)
                .unwrap_or(0);
            (id, matched)
        })
        .collect()
}

/// The target's side of [`PATH_CAMPAIGN`]. `peer` is the sender's node id from its mutual TLS
/// certificate (None on a plain-HTTP lab cluster).
pub(crate) async fn on_campaign(
    shared: &Shared,
    req: CampaignRequest,
    peer: Option<NodeId>,
) -> CampaignReply {
    let refuse = |why: String| {
        tracing::info!(node_id = shared.id, from = req.from, term = req.term, reason = %why, "refusing to campaign for a handover");
        CampaignReply::Refused(why)
    };
    if let Some(p) = peer
        && p != req.from
    {
        return refuse(format!(
            "the sender's certificate is node {p}'s, not node {}'s",
            req.from
        ));
    }
    let m = shared.raft.metrics().borrow().clone();
    if m.current_leader != Some(req.from) || m.current_term != req.term {
        return refuse(format!(
            "node {} is not the leader of term {} here (leader {:?}, term {})",
            req.from, req.term, m.current_leader, m.current_term
        ));
    }
    if m.state != ServerState::Follower
        || !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == shared.id)
    {
        return refuse("this node is not a voting follower".into());
    }
    if m.last_log_index.unwrap_or(0) < req.last_log_index {
        return refuse(format!(
            "log ends at {:?}, the leader's at {}",
            m.last_log_index, req.last_log_index
        ));
    }
    // `trigger().elect()` bypasses openraft's `elect(false)`, which these two own.
    if let Some(why) = shared.disk.low_space() {
        return refuse(format!("below the free-space watermark: {why}"));
    }
    if shared.heal.healing() {
        return refuse("healing from quarantined storage".into());
    }
    tracing::info!(
        node_id = shared.id,
        term = m.current_term,
        from = req.from,
        "the leader hands over leadership: campaigning"
    );
    match shared.raft.trigger().elect().await {
        Ok(()) => CampaignReply::Started,
        Err(e) => refuse(format!("raft stopped: {e}")),
    }
}

/// After a handover: lets the held and queued writes leave (forwarded to the new leader)
/// before the caller stops the batcher. Returns when the queue is empty and nothing is in
/// flight, or after `bound`.
pub(crate) async fn drain_writes(shared: &Shared, bound: Duration) {
    let started = tokio::time::Instant::now();
    let deadline = started + bound;
    loop {
        let queued = shared.batch_tx.max_capacity() - shared.batch_tx.capacity();
        let idle = shared.handover.gate.try_write().is_ok();
        if queued == 0 && idle {
            tracing::info!(
                node_id = shared.id,
                ms = started.elapsed().as_millis() as u64,
                "held writes drained"
            );
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                node_id = shared.id,
                queued,
                in_flight = !idle,
                "writes still in flight after the handover; stopping anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Records when this node became leader (the lease check above needs it) and hands over
/// leadership while an admin drains this node.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut metrics = shared.raft.metrics();
    let mut tick = tokio::time::interval(WATCH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_try: Option<Instant> = None;
    loop {
        let check_drain = tokio::select! {
            _ = cancel.cancelled() => break,
            changed = metrics.changed() => {
                if changed.is_err() {
                    break;
                }
                false
            }
            _ = tick.tick() => true,
        };
        let (state, term) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_term)
        };
        shared.handover.note_metrics(state, term);
        if !check_drain
            || state != ServerState::Leader
            || last_try.is_some_and(|t| t.elapsed() < DRAIN_RETRY)
            || !crate::node::member_health::draining_nodes(&shared).contains(&shared.id)
        {
            continue;
        }
        last_try = Some(Instant::now());
        tracing::info!(
            node_id = shared.id,
            term,
            "this leader is draining: handing over leadership"
        );
        let bound = DRAIN_BOUND + Duration::from_millis(shared.config.election_timeout_max_ms);
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = hand_over(&shared, bound) => if r.is_ok() {
                last_try = None;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_wire_round_trips() -> Result<(), bincode::Error> {
        let req = CampaignRequest {
            from: 1,
            term: 7,
            last_log_index: 42,
        };
        let bytes = crate::transport::rpc::encode(&req)?;
        let back: CampaignRequest = crate::transport::rpc::decode_limited(&bytes)?;
        assert_eq!(back, req);
        let reply = CampaignReply::Refused("x".into());
        let bytes = crate::transport::rpc::encode(&reply)?;
        let back: CampaignReply = crate::transport::rpc::decode_limited(&bytes)?;
        assert_eq!(back, reply);
        Ok(())
    }

    #[test]
    fn leader_since_is_kept_per_term() {
        let h = HandoverState::new();
        assert!(h.leader_since(3).is_none());
        h.note_metrics(ServerState::Leader, 3);
        let first = h.leader_since(3);
        assert!(first.is_some());
        h.note_metrics(ServerState::Leader, 3);
        assert_eq!(h.leader_since(3), first);
        assert!(h.leader_since(4).is_none());
        h.note_metrics(ServerState::Follower, 4);
        assert!(h.leader_since(3).is_none());
    }

    #[tokio::test]
    async fn forwards_are_refused_during_a_handover_and_counted_otherwise() {
        let h = HandoverState::new();
        let ticket = h.admit_forward().await;
        assert!(ticket.is_some());
        assert_eq!(h.forwards.load(Ordering::SeqCst), 1);
        drop(ticket);
        assert_eq!(h.forwards.load(Ordering::SeqCst), 0);
        let during = HandingOver::start(&h);
        let waiting = h.admit_forward();
        tokio::pin!(waiting);
        // Still waiting for the handover to end.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiting)
                .await
                .is_err()
        );
        drop(during);
        assert!(waiting.await.is_none());
        assert_eq!(h.forwards.load(Ordering::SeqCst), 0);
    }
}
