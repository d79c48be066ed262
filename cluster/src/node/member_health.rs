//! This node's view of every member's health, refreshed about once a second by one named task
//! and shared by everything that hands clients a list of nodes: the DNS server's answers,
//! `GET /api/v1/cluster` and the web client's failover, so they never disagree for longer than
//! one probe.
//!
//! Owns the rule "a member is *serving* when it answered this node's last probe, said it is
//! ready, and is not draining" and its one exception, the election grace (docs/health.md).
//! Must never block a reader: the view is an `Arc` behind a watch channel, replaced whole.
//!
//! Election grace: when the leader dies, every follower is briefly "not ready" (no leader)
//! until a new one is elected, typically within a second. Dropping every node from DNS for that
//! second is how Consul's DNS goes silent during elections. So a member that was ready within
//! [`ELECTION_GRACE`], now says it is only waiting for a leader, and is on the side of the
//! cluster that this node sees as a majority (this node reached most voters in this very probe)
//! stays listed. A node cut off from the majority cannot reach most voters, so it gets no grace
//! and answers SERVFAIL as before; a dead or frozen member fails its probe and leaves at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::node::shared::Shared;
use crate::transport::rpc::NodeStatusWire;
use crate::types::{NodeId, NodeInfo};

/// How often the view is refreshed. Each refresh probes all members in parallel with a 200 ms
/// budget, so a dead member leaves the view within about one period plus that budget.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// How long a member that was ready keeps being listed while the cluster has no leader. Raft
/// elections here take about one election timeout (300–550 ms), a few rounds at worst.
pub const ELECTION_GRACE: Duration = Duration::from_secs(3);

/// One member as seen by the last probe.
#[derive(Debug, Clone)]
pub struct MemberHealth {
    pub id: NodeId,
    pub info: NodeInfo,
    pub voter: bool,
    /// The member's own status, or why probing it failed.
    pub status: Result<NodeStatusWire, String>,
    /// An admin took it out of client answers (`conclavectl node drain`).
    pub draining: bool,
    /// When this node last saw it ready (carried from view to view).
    pub last_ready: Option<Instant>,
    /// Ready, or within the election grace; and not draining (see `assess`).
    pub serving: bool,
}

impl MemberHealth {
    /// Whether clients should be sent to this member now.
    pub fn serving(&self) -> bool {
        self.serving
    }

    /// The HTTPS address the member reported in its last status, if it serves HTTPS.
    pub fn https_addr(&self) -> Option<&str> {
        self.status.as_ref().ok()?.https_addr.as_deref()
    }
}

/// One probe of the whole membership.
#[derive(Debug, Clone)]
pub struct HealthView {
    /// When the probe started. Readers treat an old view as no view (the task is stuck or the
    /// process was frozen), rather than hand out stale answers.
    pub taken: Instant,
    /// Whether this node itself is ready: it sees a leader with a quorum and is caught up.
    pub self_ready: bool,
    /// Every member of this node's current membership, sorted by id.
    pub members: Vec<MemberHealth>,
}

impl HealthView {
    /// The view before the first probe: nothing is known, so nothing is ready.
    pub fn empty() -> Self {
        Self {
            taken: Instant::now(),
            self_ready: false,
            members: Vec::new(),
        }
    }

    /// Whether the answers built from this view differ from `other`'s (ignoring timing and
    /// progress counters, which change on every probe).
    pub fn same_answers(&self, other: &HealthView) -> bool {
        let key = |v: &HealthView| {
            v.members
                .iter()
                .map(|m| (m.id, m.info.clone(), m.voter, m.serving()))
                .collect::<Vec<_>>()
        };
        self.self_ready == other.self_ready && key(self) == key(other)
    }
}

pub(crate) type HealthTx = watch::Sender<Arc<HealthView>>;

/// Probes every member now and returns the view (does not publish it).
pub(crate) async fn probe(shared: &Shared) -> HealthView {
    let taken = Instant::now();
    let draining = draining_nodes(shared);
    let previous = shared.health.borrow().clone();
    let mut members: Vec<MemberHealth> = shared
        .probe_members()
        .await
        .into_iter()
        .map(|(id, info, voter, status)| MemberHealth {
            id,
            info,
            voter,
            status,
            draining: draining.contains(&id),
            last_ready: previous
                .members
                .iter()
                .find(|p| p.id == id)
                .and_then(|p| p.last_ready),
            serving: false,
        })
        .collect();
    members.sort_by_key(|m| m.id);
    let self_ready = assess(&mut members, shared.id, taken);
    HealthView {
        taken,
        self_ready,
        members,
    }
}

/// Decides `serving` for every member (and returns whether this node itself may answer
/// clients): ready now, or waiting for a leader within [`ELECTION_GRACE`] of its last ready
/// probe while this node reaches a majority of the voters. Pure, so the rule is unit-tested.
pub(crate) fn assess(members: &mut [MemberHealth], self_id: NodeId, now: Instant) -> bool {
    let voters = members.iter().filter(|m| m.voter).count();
    let reached = members
        .iter()
        .filter(|m| m.voter && m.status.is_ok())
        .count();
    let majority = reached * 2 > voters;
    let mut self_ok = false;
    for m in members.iter_mut() {
        let (ready, electing) = match &m.status {
            Ok(s) => (s.ready, s.electing),
            Err(_) => (false, false),
        };
        if ready {
            m.last_ready = Some(now);
        }
        let recently = m
            .last_ready
            .is_some_and(|t| now.saturating_duration_since(t) <= ELECTION_GRACE);
        let up = ready || (electing && majority && recently);
        if m.id == self_id {
            self_ok = up;
        }
        m.serving = up && !m.draining;
    }
    self_ok
}

/// The replicated drain flags. A storage error reads as "none draining": a node that cannot
/// read its own state fails its other checks anyway, and DNS must not drop every node for it.
pub(crate) fn draining_nodes(shared: &Shared) -> std::collections::BTreeSet<NodeId> {
    shared.reader.draining_nodes().unwrap_or_else(|error| {
        tracing::warn!(node_id = shared.id, %error, "cannot read draining flags");
        Default::default()
    })
}

/// Refreshes the view every [`PROBE_PERIOD`] until `cancel` fires.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PROBE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Ok(mut t) = shared.health_tick.lock() {
            *t = Instant::now();
        }
        let view = tokio::select! {
            _ = cancel.cancelled() => break,
            v = probe(&shared) => v,
        };
        publish(&shared, view);
    }
}

/// Replaces the published view, logging when the answers it implies change.
pub(crate) fn publish(shared: &Shared, view: HealthView) {
    let changed = !shared.health.borrow().same_answers(&view);
    if changed {
        tracing::info!(
            node_id = shared.id,
            self_ready = view.self_ready,
            serving = ?view.members.iter().filter(|m| m.serving()).map(|m| m.id).collect::<Vec<_>>(),
            draining = ?view.members.iter().filter(|m| m.draining).map(|m| m.id).collect::<Vec<_>>(),
            "member health changed"
        );
    }
    shared.health.send_replace(Arc::new(view));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, ready: Option<bool>, draining: bool) -> MemberHealth {
        let mut m = raw_member(id, ready, draining);
        assess(std::slice::from_mut(&mut m), id, Instant::now());
        m
    }

    fn raw_member(id: NodeId, ready: Option<bool>, draining: bool) -> MemberHealth {
        MemberHealth {
            id,
            info: NodeInfo {
                api_addr: format!("10.0.0.{id}:8080"),
                cluster_addr: format!("10.0.0.{id}:9080"),
            },
            voter: true,
            status: match ready {
                None => Err("unreachable".into()),
                Some(ready) => Ok(NodeStatusWire {
                    id,
                    state: "follower".into(),
                    term: 1,
                    leader_id: Some(1),
                    last_log_index: Some(1),
                    last_applied: Some(1),
                    voter: true,
                    quorum_ok: false,
                    ready,
                    reason: None,
                    electing: false,
                    members: vec![1, 2, 3],
                    https_addr: None,
                    insecure_plaintext: false,
                    storage: None,
                    leader_contact_ms: Some(10),
                }),
            },
            draining,
            last_ready: None,
            serving: false,
        }
    }

    fn electing(m: &mut MemberHealth) {
        if let Ok(s) = &mut m.status {
            s.ready = false;
            s.electing = true;
        }
    }

    #[test]
    fn an_election_does_not_empty_the_view_but_a_cut_off_does() {
        let t0 = Instant::now();
        let mut ms: Vec<MemberHealth> = (1..=3)
            .map(|id| raw_member(id, Some(true), false))
            .collect();
        assert!(assess(&mut ms, 1, t0));
        // The leader (3) dies; 1 and 2 wait for a new one and still reach each other.
        ms[2].status = Err("unreachable".into());
        electing(&mut ms[0]);
        electing(&mut ms[1]);
        let t1 = t0 + Duration::from_secs(1);
        assert!(
            assess(&mut ms, 1, t1),
            "self keeps answering during the election"
        );
        assert_eq!(
            ms.iter().map(|m| m.serving).collect::<Vec<_>>(),
            [true, true, false]
        );
        // An election that never ends is not an election: after the grace, nobody is listed.
        let t2 = t0 + ELECTION_GRACE + Duration::from_millis(1);
        assert!(!assess(&mut ms, 1, t2));
        assert!(ms.iter().all(|m| !m.serving));
        // Cut off: node 1 reaches no other voter, so no grace even right after being ready.
        let mut ms: Vec<MemberHealth> = (1..=3)
            .map(|id| raw_member(id, Some(true), false))
            .collect();
        assert!(assess(&mut ms, 1, t0));
        electing(&mut ms[0]);
        ms[1].status = Err("unreachable".into());
        ms[2].status = Err("unreachable".into());
        assert!(!assess(&mut ms, 1, t1));
        assert!(ms.iter().all(|m| !m.serving));
        // Not ready for another reason (catching up) gets no grace either.
        let mut ms: Vec<MemberHealth> = (1..=3)
            .map(|id| raw_member(id, Some(true), false))
            .collect();
        assess(&mut ms, 1, t0);
        if let Ok(s) = &mut ms[1].status {
            s.ready = false;
        }
        assess(&mut ms, 1, t1);
        assert_eq!(
            ms.iter().map(|m| m.serving).collect::<Vec<_>>(),
            [true, false, true]
        );
    }

    #[test]
    fn serving_needs_an_answer_readiness_and_no_drain() {
        assert!(member(1, Some(true), false).serving());
        assert!(!member(1, Some(false), false).serving());
        assert!(!member(1, None, false).serving());
        assert!(!member(1, Some(true), true).serving());
    }

    #[test]
    fn same_answers_ignores_progress_but_not_serving() {
        let a = HealthView {
            taken: Instant::now(),
            self_ready: true,
            members: vec![member(1, Some(true), false), member(2, Some(true), false)],
        };
        let mut b = a.clone();
        if let Ok(s) = &mut b.members[0].status {
            s.last_applied = Some(99);
        }
        assert!(a.same_answers(&b));
        b.members[1].draining = true;
        assess(&mut b.members, 1, Instant::now());
        assert!(!a.same_answers(&b));
    }
}
