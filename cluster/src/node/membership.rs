//! Membership changes: adding a node (learner, caught up, then voter) and removing one, each
//! refused when it is unsafe, one at a time, on the leader.
//!
//! Owns the safety checks that openraft leaves to its caller: the newcomer answers and runs a
//! command version the cluster can use, a learner has every entry before it votes, a removal
//! leaves a reachable majority, and a removed node is told to stop campaigning. Must never run
//! on a follower (a follower forwards the request to the leader) and never run two changes at
//! once (`Shared::membership_lock`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;

use crate::error::ClusterError;
use crate::node::raft_node::ClusterNode;
use crate::node::shared::Shared;
use crate::transport::network::TransportError;
use crate::transport::rpc::{self, MembershipError, MembershipReply, MembershipRequest};
use crate::types::{NodeId, NodeInfo};

type Membership = openraft::Membership<NodeId, NodeInfo>;

impl ClusterNode {
    /// Adds a running, uninitialized node: learner first, caught up, then voter. Forwarded to the
    /// leader when called on a follower.
    pub async fn add_node(&self, id: NodeId, info: NodeInfo) -> Result<(), ClusterError> {
        self.membership(MembershipRequest::Add { id, info }).await
    }

    /// Removes a node from the voters and the membership, refusing unsafe removals.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClusterError> {
        self.membership(MembershipRequest::Remove { id }).await
    }

    async fn membership(&self, req: MembershipRequest) -> Result<(), ClusterError> {
        let leader = self.metrics().current_leader;
        let reply = match leader {
            Some(l) if l == self.shared.id => membership_on_leader(&self.shared, req).await,
            Some(l) => {
                let info = self
                    .shared
                    .node_info(l)
                    .ok_or_else(|| ClusterError::Unavailable("leader address unknown".into()))?;
                self.shared
                    .http
                    .post_bin::<_, MembershipReply>(
                        &info.cluster_addr,
                        rpc::PATH_MEMBERSHIP,
                        &req,
                        Duration::from_secs(90),
                    )
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?
            }
            None => return Err(ClusterError::Unavailable("no leader".into())),
        };
        reply.map_err(ClusterError::from)
    }
}

/// Runs on the leader. Changes are applied one at a time; each is refused if unsafe.
pub(crate) async fn membership_on_leader(
    shared: &Arc<Shared>,
    req: MembershipRequest,
) -> MembershipReply {
    let Ok(_guard) = shared.membership_lock.try_lock() else {
        return Err(MembershipError::InProgress);
    };
    let membership = settled_membership(shared, &req)?;
    match req {
        MembershipRequest::Add { id, info } => add_voter(shared, &membership, id, info).await,
        MembershipRequest::Remove { id } => remove_member(shared, &membership, id).await,
    }
}

/// The current membership, if this node leads and no other change is in flight (a joint
/// config, an uncommitted membership entry, or a learner left over from an unfinished add that
/// `req` does not finish).
fn settled_membership(
    shared: &Shared,
    req: &MembershipRequest,
) -> Result<Membership, MembershipError> {
    let m = shared.raft.metrics().borrow().clone();
    if m.current_leader != Some(shared.id) {
        return Err(MembershipError::NotLeader {
            leader: m.current_leader,
        });
    }
    let membership = m.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        return Err(MembershipError::InProgress);
    }
    // Also refuse while the latest membership is not yet committed (another change in flight).
    if m.membership_config.log_id().map(|l| l.index) > m.last_applied.map(|l| l.index) {
        return Err(MembershipError::InProgress);
    }
    // A learner left over from an add that did not finish is a pending change too.
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    let finishes_pending = match req {
        MembershipRequest::Add { id, .. } | MembershipRequest::Remove { id } => learners == [*id],
    };
    if !learners.is_empty() && !finishes_pending {
        return Err(MembershipError::InProgress);
    }
    Ok(membership)
}

async fn add_voter(
    shared: &Shared,
    membership: &Membership,
    id: NodeId,
    info: NodeInfo,
) -> MembershipReply {
    if membership.voter_ids().any(|v| v == id) {
        if membership.get_node(&id) == Some(&info) {
            return Ok(());
        }
        return Err(MembershipError::Invalid(format!(
            "node {id} is already a voter with other addresses"
        )));
    }
    check_newcomer(shared, id, &info).await?;
    tracing::info!(node_id = shared.id, new_node = id, %info, "adding learner");
    let info_addr = info.cluster_addr.clone();
    shared
        .raft
        .add_learner(id, info, false)
        .await
        .map_err(map_change_err)?;
    wait_caught_up(shared, id).await?;
    tracing::info!(
        node_id = shared.id,
        new_node = id,
        "promoting learner to voter"
    );
    shared
        .raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(map_change_err)?;
    // Return once the new voter also calls itself ready (its health check runs every
    // 200 ms), so an operator's next `status` does not show a fresh member as degraded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        let st = shared
            .http
            .status(&info_addr, Duration::from_millis(500))
            .await;
        if st.is_ok_and(|st| st.ready) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Checks the newcomer answers before touching the membership: a typo in an address would
/// otherwise leave a learner that never catches up.
async fn check_newcomer(shared: &Shared, id: NodeId, info: &NodeInfo) -> MembershipReply {
    let probe = shared
        .http
        .status(&info.cluster_addr, Duration::from_secs(2))
        .await;
    match probe {
        Err(e) => {
            return Err(MembershipError::Invalid(format!(
                "node {id} is not reachable at {}: {e}",
                info.cluster_addr
            )));
        }
        Ok(st) if st.id != id => {
            return Err(MembershipError::Invalid(format!(
                "the node at {} says it is node {}, not {id}",
                info.cluster_addr, st.id
            )));
        }
        Ok(_) => {}
    }
    // A binary older than what the cluster already committed could not decode the log.
    let active = shared.reader.active_version().unwrap_or(1);
    match shared
        .http
        .version(&info.cluster_addr, Duration::from_secs(2))
        .await
    {
        Ok(v) if v.command_version >= active => Ok(()),
        Ok(v) => Err(MembershipError::Invalid(format!(
            "node {id} runs command version {}, but the cluster is at {active}: upgrade it first",
            v.command_version
        ))),
        Err(e) => Err(MembershipError::Invalid(format!(
            "node {id} did not say which version it runs ({}); upgrade it first",
            e.short()
        ))),
    }
}

/// openraft's own "blocking" add returns at once while the log is shorter than its
/// replication lag threshold; wait for real catch-up instead: the learner must have every
/// entry the leader had when it was added.
async fn wait_caught_up(shared: &Shared, id: NodeId) -> MembershipReply {
    let target = shared.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let caught_up = shared
        .raft
        .wait(Some(Duration::from_secs(60)))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .is_some_and(|l| l.index >= target)
            },
            "learner caught up",
        )
        .await;
    if caught_up.is_err() {
        return Err(MembershipError::Unavailable(format!(
            "node {id} did not catch up within 60 s; it stays a learner (retry the add, or remove it)"
        )));
    }
    Ok(())
}

async fn remove_member(shared: &Shared, membership: &Membership, id: NodeId) -> MembershipReply {
    if membership.get_node(&id).is_none() {
        return Err(MembershipError::NotFound(format!(
            "node {id} is not a member"
        )));
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
    if voters.contains(&id) && remaining.is_empty() {
        return Err(MembershipError::Unsafe(
            "refusing to remove the last voter".into(),
        ));
    }
    if voters.contains(&id) {
        check_majority_remains(shared, membership, id, &remaining).await?;
    }
    tracing::info!(node_id = shared.id, removed_node = id, "removing node");
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    shared
        .raft
        .change_membership(change, false)
        .await
        .map_err(map_change_err)?;
    // A removed node never hears of its removal through Raft; tell it, best effort, so it
    // stops campaigning (0.9 has no pre-vote, its elections would disturb the cluster).
    if let Some(info) = membership.get_node(&id) {
        let r: Result<(), TransportError> = shared
            .http
            .post_bin(
                &info.cluster_addr,
                rpc::PATH_REMOVED,
                &shared.id,
                Duration::from_secs(1),
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(removed_node = id, error = %e, "could not tell the removed node to stop; stop it by hand");
        }
    }
    Ok(())
}

/// The new configuration must have a reachable majority right now, or the cluster would stop
/// accepting writes the moment the change commits.
async fn check_majority_remains(
    shared: &Shared,
    membership: &Membership,
    id: NodeId,
    remaining: &BTreeSet<NodeId>,
) -> MembershipReply {
    let mut reachable = 0usize;
    for v in remaining {
        if *v == shared.id {
            reachable += 1;
            continue;
        }
        if let Some(info) = membership.get_node(v) {
            let ok = shared
                .http
                .status(&info.cluster_addr, Duration::from_millis(500))
                .await
                .is_ok();
            if ok {
                reachable += 1;
            }
        }
    }
    if reachable < remaining.len() / 2 + 1 {
        return Err(MembershipError::Unsafe(format!(
            "removing node {id} would leave {reachable} reachable of {} voters, not a majority",
            remaining.len()
        )));
    }
    Ok(())
}

fn map_change_err(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, NodeInfo>>,
) -> MembershipError {
    use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => MembershipError::InProgress,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            MembershipError::Invalid(c.to_string())
        }
        other => MembershipError::Unavailable(other.to_string()),
    }
}
