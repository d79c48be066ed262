//! The election gate: the only thing that makes this node campaign.
//!
//! Why: openraft 0.9 has no pre-vote. Its own election timer lets a node that was cut off (or
//! busy installing a snapshot) raise its term again and again; when it comes back, its answer
//! to the leader's next AppendEntries carries the higher term and deposes a healthy leader.
//! So openraft's timer is off for good (`Config::enable_elect = false`, see `raft_node`) and
//! this task calls `trigger().elect()` itself, only when all of these hold:
//!
//! - this node is a voter, not the leader, not healing (`heal_gate`), not below its free-space
//!   watermark (`disk_guard`) and not installing a snapshot;
//! - it has heard from no leader for the lease (`election_timeout_max_ms`, which is also
//!   openraft's leader lease: a voter refuses votes for that long after a leader's contact);
//! - a **pre-vote** passes: it asks every other voter for its status (one JSON round trip on the
//!   cluster port). A peer grants when it has not heard from a leader for the lease either
//!   (`NodeStatusWire::leader_contact_ms`) and its log is not longer than ours; any live leader
//!   at our term or above vetoes. The grants plus this node must be a majority of every
//!   configuration (joint ones too).
//!
//! Among the nodes that pass, the one with the longest log (ties: lowest id) goes first: the
//! others defer for a while (a shorter log would be refused anyway, and two candidates at once
//! split the vote). A candidate that loses tries again after a randomised pause, with a new
//! pre-vote; so does a node whose pre-vote failed, every tick.
//!
//! A peer without `leader_contact_ms` (an older binary) neither grants nor vetoes unless it
//! reports itself leader: the safe side, since its lease is unknown. In a cluster of mostly
//! older nodes those still elect with their own timers, so a rolling upgrade keeps failover.
//! The pre-vote is advisory, like Raft's: the real vote (openraft's, with its lease and log
//! checks) still decides; the pre-vote only keeps hopeless campaigns from raising terms.
//!
//! A single-voter cluster needs no pre-vote: the node elects itself as soon as it is not the
//! leader (openraft restores a leader's role at startup only when its vote was committed).
//!
//! Owns `trigger().elect()` and `last_leader_contact` while leading or installing a snapshot.
//! Must never campaign while a majority still hears a leader, and never turns openraft's own
//! timer back on.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::node::shared::Shared;
use crate::storage::disk_space::StorageState;
use crate::transport::rpc::NodeStatusWire;
use crate::types::NodeId;

/// How often the gate looks. Bounds how late after the lease an election starts.
const TICK: Duration = Duration::from_millis(10);
/// A peer's lease is stamped by openraft after it processed the append, a little later than
/// our arrival time: a peer grants only this much past the lease, so its real vote is not
/// refused for a lease a few ms short.
const PEER_SLACK_MS: u64 = 5;

/// What the pre-vote says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PreVote {
    /// A majority of every configuration would grant: campaign.
    Granted,
    /// Granted, but this peer has a longer log (or the same and a lower id) and no leader
    /// either: let it go first.
    Defer(NodeId),
    /// This peer is a live leader at our term or above.
    LeaderAlive(NodeId),
    /// Too few peers answered and grant.
    NoQuorum,
}

/// This node's side of a pre-vote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub id: NodeId,
    pub term: u64,
    pub last_log_index: u64,
    pub lease_ms: u64,
}

fn low_space(p: &NodeStatusWire) -> bool {
    p.storage
        .as_ref()
        .is_some_and(|s| s.state == StorageState::LowSpace.as_str())
}

fn grants(me: &Candidate, p: &NodeStatusWire) -> bool {
    p.state != "leader"
        && p.leader_contact_ms
            .is_some_and(|ms| ms >= me.lease_ms + PEER_SLACK_MS)
        && p.last_log_index.unwrap_or(0) <= me.last_log_index
}

/// Decides a pre-vote from the statuses of the peers that answered (`configs`: the voter sets
/// of the membership, two while it is joint).
pub(crate) fn pre_vote(
    me: &Candidate,
    configs: &[BTreeSet<NodeId>],
    peers: &[NodeStatusWire],
) -> PreVote {
    // A leader below its free-space watermark has stopped its heartbeats to hand over
    // leadership (`disk_guard`): it does not count.
    if let Some(l) = peers
        .iter()
        .find(|p| p.state == "leader" && p.term >= me.term && !low_space(p))
    {
        return PreVote::LeaderAlive(l.id);
    }
    let mut yes: BTreeSet<NodeId> = peers
        .iter()
        .filter(|p| grants(me, p))
        .map(|p| p.id)
        .collect();
    yes.insert(me.id);
    let majority = |c: &BTreeSet<NodeId>| c.intersection(&yes).count() > c.len() / 2;
    if configs.is_empty() || !configs.iter().all(majority) {
        return PreVote::NoQuorum;
    }
    let better = peers
        .iter()
        .filter(|p| p.leader_contact_ms.is_none_or(|ms| ms >= me.lease_ms))
        .filter(|p| {
            (p.last_log_index.unwrap_or(0), std::cmp::Reverse(p.id))
                > (me.last_log_index, std::cmp::Reverse(me.id))
        })
        .max_by_key(|p| (p.last_log_index.unwrap_or(0), std::cmp::Reverse(p.id)));
    match better {
        Some(p) => PreVote::Defer(p.id),
        None => PreVote::Granted,
    }
}

/// A random duration in `[0, max)`, from std's per-instance random hasher keys (no extra
/// dependency for one number per lost election).
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(r % u64::try_from(max.as_millis()).unwrap_or(1).max(1))
}

pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let lease = Duration::from_millis(shared.config.election_timeout_max_ms);
    let probe_timeout = (lease / 2).clamp(Duration::from_millis(20), Duration::from_millis(100));
    // A better candidate gets this long to win before the others try too.
    let defer = lease / 2;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After a campaign: no new one before this (randomised, so two losers do not collide again).
    let mut quiet_until: Option<Instant> = None;
    let mut deferring_since: Option<Instant> = None;
    // The last reason the pre-vote failed, logged when it changes (not every tick).
    let mut last_refusal: Option<PreVote> = None;
    let mut last_vote = shared.raft.metrics().borrow().vote;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let m = shared.raft.metrics().borrow().clone();
        if m.vote != last_vote {
            // This node granted a vote (or learned a newer term): as in Raft, that restarts its
            // wait, so the candidate it voted for gets a lease to establish itself before this
            // node, whose pre-vote would still see no leader, campaigns against it.
            if m.vote.leader_id().voted_for() != Some(shared.id) {
                shared.note_leader_contact(Instant::now());
            }
            last_vote = m.vote;
        }
        if m.state == ServerState::Leader {
            // Once deposed, wait a lease like any follower before campaigning.
            shared.note_leader_contact(Instant::now());
            deferring_since = None;
            last_refusal = None;
            continue;
        }
        if shared.snapshot_installing.load(Ordering::Acquire) {
            // The leader is busy streaming to us and sends no heartbeats; after the install it
            // gets a full lease to resume them.
            shared.note_leader_contact(Instant::now());
            deferring_since = None;
            continue;
        }
        let membership = m.membership_config.membership().clone();
        let configs = membership.get_joint_config().clone();
        if !membership.voter_ids().any(|v| v == shared.id)
            || shared.disk.low_space().is_some()
            || shared.heal.healing()
        {
            deferring_since = None;
            continue;
        }
        if quiet_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let single = configs
            .iter()
            .all(|c| c.len() == 1 && c.contains(&shared.id));
        if single {
            if m.state != ServerState::Candidate || quiet_until.is_some() {
                tracing::info!(
                    node_id = shared.id,
                    term = m.current_term,
                    "the only voter and not leading: electing itself"
                );
                if shared.raft.trigger().elect().await.is_err() {
                    break;
                }
                quiet_until = Some(Instant::now() + lease);
            }
            continue;
        }
        let silent_for = shared.leader_silence();
        if silent_for < lease {
            deferring_since = None;
            last_refusal = None;
            continue;
        }
        let me = Candidate {
            id: shared.id,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            lease_ms: shared.config.election_timeout_max_ms,
        };
        let probes = membership
            .voter_ids()
            .filter(|v| *v != shared.id)
            .filter_map(|v| {
                let info = membership.get_node(&v)?.clone();
                let http = shared.http.clone();
                Some(async move { http.status(&info.cluster_addr, probe_timeout).await.ok() })
            })
            .collect::<Vec<_>>();
        let peers: Vec<NodeStatusWire> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .filter(|p| p.voter)
            .collect();
        match pre_vote(&me, &configs, &peers) {
            PreVote::Granted => {}
            PreVote::Defer(better) => {
                let since = *deferring_since.get_or_insert_with(Instant::now);
                if since.elapsed() < defer {
                    tracing::debug!(
                        node_id = shared.id,
                        better,
                        "deferring to a peer with a longer log"
                    );
                    continue;
                }
            }
            refused => {
                if last_refusal.as_ref() != Some(&refused) {
                    tracing::info!(
                        node_id = shared.id,
                        term = m.current_term,
                        silent_ms = u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX),
                        answered = peers.len(),
                        pre_vote = ?refused,
                        "no leader heard for the lease, but the pre-vote failed: not campaigning"
                    );
                    last_refusal = Some(refused);
                }
                deferring_since = None;
                continue;
            }
        }
        tracing::info!(
            node_id = shared.id,
            term = m.current_term,
            silent_ms = u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX),
            last_log_index = me.last_log_index,
            granted_by = ?peers.iter().filter(|p| grants(&me, p)).map(|p| p.id).collect::<Vec<_>>(),
            "leader silent past its lease and the pre-vote passed: starting an election"
        );
        if shared.raft.trigger().elect().await.is_err() {
            break;
        }
        // A won election takes one round trip; a lost one is retried after a pause.
        quiet_until = Some(Instant::now() + lease / 2 + jitter(lease / 2));
        deferring_since = None;
        last_refusal = None;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LEASE: u64 = 200;

    fn me(last: u64) -> Candidate {
        Candidate {
            id: 1,
            term: 3,
            last_log_index: last,
            lease_ms: LEASE,
        }
    }

    fn peer(id: NodeId, state: &str, term: u64, last: u64, contact: Option<u64>) -> NodeStatusWire {
        NodeStatusWire {
            id,
            state: state.into(),
            term,
            leader_id: None,
            last_log_index: Some(last),
            last_applied: Some(last),
            voter: true,
            quorum_ok: false,
            ready: false,
            reason: None,
            electing: false,
            members: vec![1, 2, 3],
            https_addr: None,
            insecure_plaintext: false,
            storage: None,
            leader_contact_ms: contact,
        }
    }

    fn three() -> Vec<BTreeSet<NodeId>> {
        vec![[1, 2, 3].into_iter().collect()]
    }

    #[test]
    fn a_peer_that_still_hears_the_leader_refuses() {
        // The partitioned node's case: the others hear the leader (here: one answers).
        let peers = [peer(2, "follower", 3, 10, Some(40))];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::NoQuorum);
        // Nobody answers at all.
        assert_eq!(pre_vote(&me(10), &three(), &[]), PreVote::NoQuorum);
    }

    #[test]
    fn a_live_leader_vetoes_unless_it_is_low_on_space() {
        let mut l = peer(2, "leader", 3, 10, Some(0));
        let peers = [l.clone(), peer(3, "follower", 3, 10, Some(500))];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::LeaderAlive(2));
        l.storage = Some(crate::transport::rpc::StorageStatusWire {
            free_bytes: Some(1),
            min_free_bytes: 10,
            state: StorageState::LowSpace.as_str().into(),
            reason: None,
        });
        let peers = [l, peer(3, "follower", 3, 10, Some(500))];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::Granted);
    }

    #[test]
    fn grants_need_the_lease_expired_and_a_log_no_longer() {
        let peers = [peer(2, "follower", 3, 10, Some(LEASE + PEER_SLACK_MS))];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::Granted);
        let peers = [peer(2, "follower", 3, 10, Some(LEASE))];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::NoQuorum);
        // Its log is longer: it would refuse us, and it should go first.
        let peers = [peer(2, "follower", 3, 11, Some(500))];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::NoQuorum);
        let peers = [
            peer(2, "follower", 3, 11, Some(500)),
            peer(3, "follower", 3, 9, Some(500)),
        ];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::Defer(2));
    }

    #[test]
    fn equal_logs_defer_to_the_lowest_id() {
        let mut m = me(10);
        m.id = 3;
        let peers = [
            peer(1, "follower", 3, 10, Some(500)),
            peer(2, "candidate", 4, 10, Some(500)),
        ];
        assert_eq!(pre_vote(&m, &three(), &peers), PreVote::Defer(1));
        assert_eq!(
            pre_vote(&me(10), &three(), &[peer(2, "follower", 3, 10, Some(500))]),
            PreVote::Granted
        );
    }

    #[test]
    fn an_older_peer_without_the_field_neither_grants_nor_vetoes() {
        let peers = [peer(2, "follower", 3, 1, None)];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::NoQuorum);
        let peers = [
            peer(2, "follower", 3, 1, None),
            peer(3, "follower", 3, 1, Some(300)),
        ];
        assert_eq!(pre_vote(&me(10), &three(), &peers), PreVote::Granted);
    }

    #[test]
    fn a_joint_configuration_needs_a_majority_of_each() {
        let joint = vec![
            [1, 2, 3].into_iter().collect(),
            [1, 4, 5].into_iter().collect(),
        ];
        let peers = [peer(2, "follower", 3, 10, Some(500))];
        assert_eq!(pre_vote(&me(10), &joint, &peers), PreVote::NoQuorum);
        let peers = [
            peer(2, "follower", 3, 10, Some(500)),
            peer(4, "follower", 3, 10, Some(500)),
        ];
        assert_eq!(pre_vote(&me(10), &joint, &peers), PreVote::Granted);
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(50)) < Duration::from_millis(50));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
