//! Apply rules of members' draining flags (command version 3): an admin takes a member out of
//! DNS answers and client lists without removing it from the cluster.
//!
//! Owns the invariant every node must agree on: only members can be draining, and the flag goes
//! with the member when a membership change removes it. Must never read the clock or look at
//! anything but the entry and the membership as of that entry.

use crate::command::{Applied, ApplyError, Outcome};
use crate::state::StateError;
use crate::state::context::Ctx;
use crate::state::keys;
use crate::state::overlay::Overlay;
use crate::types::{NodeId, StoredMembership};

pub fn set_draining(
    cx: &mut Ctx<'_, '_>,
    node_id: NodeId,
    draining: bool,
) -> Result<Outcome, StateError> {
    // The membership as of this entry, from the same tree: every node reaches the same verdict,
    // even if a removal raced with the drain request.
    let membership: StoredMembership = cx.kv.get(keys::MEMBERSHIP)?.unwrap_or_default();
    if membership.membership().get_node(&node_id).is_none() {
        return Ok(Err(ApplyError::NotFound(format!(
            "node {node_id} is not a member"
        ))));
    }
    let key = keys::draining(node_id);
    if draining {
        cx.kv.put(key, &true)?;
    } else {
        cx.kv.remove(key);
    }
    Ok(Ok(Applied::DrainChanged { node_id, draining }))
}

/// Drops the draining flags of nodes that are no longer in `membership`. Called when a
/// membership entry is applied, so a node removed while draining and later re-added with the
/// same id starts out serving (clearing at removal, rather than ignoring flags of non-members
/// at read time, keeps the stored state equal to what queries report).
pub fn forget_removed_members(
    kv: &mut Overlay<'_>,
    membership: &StoredMembership,
) -> Result<(), StateError> {
    for k in kv.keys_with_prefix(keys::DRAIN_PREFIX)? {
        let id = k
            .get(keys::DRAIN_PREFIX.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        let member = id.is_some_and(|id| membership.membership().get_node(&id).is_some());
        if !member {
            kv.remove(k);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::command::Command;
    use crate::state::test_apply::{run, tree};
    use crate::storage::sm_store::StateReader;
    use crate::types::NodeInfo;

    /// Applies a membership entry the way the state machine store does.
    fn set_members(tree: &sled::Tree, ids: &[u64]) {
        let nodes: BTreeMap<u64, NodeInfo> =
            ids.iter().map(|id| (*id, NodeInfo::default())).collect();
        let config = BTreeSet::from_iter(ids.iter().copied());
        let stored = StoredMembership::new(None, openraft::Membership::new(vec![config], nodes));
        let st = crate::storage::state_tree::StateTree::new(tree.clone());
        let mut kv = Overlay::new(&st);
        forget_removed_members(&mut kv, &stored).unwrap();
        kv.put(keys::MEMBERSHIP.to_vec(), &stored).unwrap();
        st.apply(kv.into_writes()).unwrap();
    }

    fn reader(t: &sled::Tree) -> StateReader {
        StateReader::for_tree(t.clone())
    }

    #[test]
    fn draining_is_set_cleared_and_only_for_members() {
        let t = tree();
        set_members(&t, &[1, 2, 3]);
        let drain = |id, draining| Command::SetDraining {
            node_id: id,
            draining,
        };
        let out = run(&t, 1, vec![drain(2, true), drain(3, true), drain(9, true)]);
        assert!(out[0].is_ok() && out[1].is_ok());
        assert!(matches!(out[2], Err(ApplyError::NotFound(_))));
        assert_eq!(reader(&t).draining_nodes().unwrap(), BTreeSet::from([2, 3]));
        // Clearing twice is fine: the flag is a set, not a toggle.
        let out = run(&t, 1, vec![drain(3, false), drain(3, false)]);
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(reader(&t).draining_nodes().unwrap(), BTreeSet::from([2]));
        // Node 2 is removed, then added again with the same id: it is not draining.
        set_members(&t, &[1, 3]);
        assert!(reader(&t).draining_nodes().unwrap().is_empty());
        set_members(&t, &[1, 2, 3]);
        assert!(reader(&t).draining_nodes().unwrap().is_empty());
    }
}
