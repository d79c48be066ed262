//! Prompt elections after a leader dies: a lease-aware trigger on top of openraft's timer.
//!
//! Why: openraft 0.9 makes a follower of a known leader wait `leader_lease + election_timeout`
//! (550 ms + 300..550 ms with our defaults) before it campaigns, and every voter refuses votes
//! until its lease (550 ms since the last heartbeat) has run out. Failover therefore took about
//! a second. Votes cannot be granted before the lease expires anyway, so the earliest useful
//! moment to campaign is just after it: this task watches for the leader's heartbeats to stop,
//! and once the lease has expired on every follower it lets exactly one node campaign: the one
//! whose log is longest (ties: lowest id), found by asking the other voters' status. The others
//! would refuse a shorter log, and two candidates at once would split the vote. If the chosen
//! node does not win quickly, anyone may try (and openraft's own timer still runs underneath).
//!
//! Owns: the last time this node heard from a leader, and the decision to call
//! `trigger().elect()`. Must never campaign while heartbeats arrive (that would depose a
//! healthy leader: openraft 0.9 has no pre-vote).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::node::shared::Shared;
use crate::transport::rpc::NodeStatusWire;
use crate::types::NodeId;

const TICK: Duration = Duration::from_millis(20);
/// Margin after the lease so the other followers' leases (heartbeats arrive at slightly
/// different times) have expired too.
const LEASE_MARGIN: Duration = Duration::from_millis(25);
/// How long a node defers to a better candidate before trying itself.
const DEFER: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let lease = Duration::from_millis(shared.config.election_timeout_max_ms);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_trigger: Option<Instant> = None;
    let mut deferring_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let m = shared.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        // Below the free-space watermark (`disk_guard`) or healing (`heal_gate`) this node must
        // not lead; an explicit `trigger().elect()` would bypass openraft's `elect(false)`.
        if m.state == ServerState::Leader
            || voters.len() < 2
            || !voters.contains(&shared.id)
            || shared.disk.low_space().is_some()
            || shared.heal.healing()
        {
            deferring_since = None;
            continue;
        }
        let silent_for = shared
            .last_leader_contact
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if silent_for < lease + LEASE_MARGIN {
            deferring_since = None;
            continue;
        }
        if last_trigger.is_some_and(|t| t.elapsed() < DEFER) {
            continue;
        }
        // Ask the other voters where their logs end (and whether a leader exists after all).
        let mine = m.last_log_index.unwrap_or(0);
        let probes = voters.iter().filter(|v| **v != shared.id).filter_map(|v| {
            let info = membership.get_node(v)?.clone();
            let http = shared.http.clone();
            Some(async move { http.status(&info.cluster_addr, PROBE_TIMEOUT).await.ok() })
        });
        let peers: Vec<NodeStatusWire> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        // A pre-vote of sorts: if we cannot reach a majority, an election cannot succeed and would
        // only inflate terms that later disturb the healthy side.
        if peers.len() + 1 < voters.len() / 2 + 1 {
            continue;
        }
        // A leader below its free-space watermark has stopped its heartbeats to hand over
        // leadership (`disk_guard`): it does not count.
        if peers.iter().any(|p| {
            p.state == "leader"
                && p.term >= m.current_term
                && p.storage.as_ref().is_none_or(|s| {
                    s.state != crate::storage::disk_space::StorageState::LowSpace.as_str()
                })
        }) {
            // A leader exists; its heartbeats will reach us (or we are the one cut off).
            continue;
        }
        let better = peers.iter().any(|p| {
            (p.last_log_index.unwrap_or(0), std::cmp::Reverse(p.id))
                > (mine, std::cmp::Reverse(shared.id))
        });
        if better {
            let since = *deferring_since.get_or_insert_with(Instant::now);
            if since.elapsed() < DEFER {
                continue;
            }
        }
        tracing::info!(
            node_id = shared.id,
            term = m.current_term,
            silent_ms = silent_for.as_millis() as u64,
            last_log_index = mine,
            "leader silent past its lease; starting an election"
        );
        if shared.raft.trigger().elect().await.is_err() {
            break;
        }
        last_trigger = Some(Instant::now());
        deferring_since = None;
    }
}
