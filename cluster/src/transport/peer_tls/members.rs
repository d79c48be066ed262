//! Keeps `PeerTls`'s admitted member set equal to this node's Raft membership (voters and
//! learners, every config of a joint membership), read from Raft's metrics.
//!
//! Owns only that copy. Must never widen the set beyond what Raft reports: the cluster port
//! admits exactly these nodes (plus anyone while the set is empty, see `identity::admits`).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::PeerTls;
use crate::types::{NodeId, Raft, RaftMetrics};

/// The node ids of the membership in `m` (the latest one this node has seen in its log, as
/// openraft uses it: a removal takes effect here as soon as the leader appends it).
pub(crate) fn member_ids(m: &RaftMetrics) -> BTreeSet<NodeId> {
    m.membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect()
}

/// Mirrors the membership into `tls` until `cancel` fires or Raft stops. While the membership
/// is empty, `fallback` is admitted instead (a healing node's last known members, see
/// `node::heal_gate`; empty otherwise).
#[tracing::instrument(skip_all, fields(node_id = tls.node_id()))]
pub(crate) async fn run(
    raft: Raft,
    tls: Arc<PeerTls>,
    fallback: BTreeSet<NodeId>,
    cancel: CancellationToken,
) {
    let mut metrics = raft.metrics();
    loop {
        // `set_members` compares first: metrics change on every heartbeat, members rarely.
        let ids = member_ids(&metrics.borrow_and_update());
        tls.set_members(if ids.is_empty() {
            fallback.clone()
        } else {
            ids
        });
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = metrics.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
}
