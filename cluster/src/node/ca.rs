//! The certificate authority's side of `ClusterNode`: reading the replicated CA blob, proposing
//! a compare-and-swap update, and compacting this node's log after a secret left the state.
//!
//! Owns the read path of `keys::CA_STATE` and the "snapshot, then purge" sequence. Must never
//! decode the blob (it is the `node` crate's `CaState`), and must never wait without a deadline.

use std::time::Duration;

use crate::command::{Applied, Command};
use crate::error::ClusterError;
use crate::node::raft_node::ClusterNode;
use crate::state::ca::StoredCa;
use crate::state::keys;
use crate::state::{Overlay, StateError};
use crate::storage::sm_store::StateReader;

impl StateReader {
    /// The CA state as this node has applied it: `(version, blob)`, `None` before `init`.
    pub fn ca_state(&self) -> Result<Option<StoredCa>, StateError> {
        Overlay::new(self.tree()).get::<StoredCa>(keys::CA_STATE)
    }

    /// Log index of the entry that last changed the CA state.
    pub fn ca_index(&self) -> Result<Option<u64>, StateError> {
        Overlay::new(self.tree()).get::<u64>(keys::CA_INDEX)
    }
}

impl ClusterNode {
    /// The CA state as this node has applied it (see `StateReader::ca_state`).
    pub fn ca_state(&self) -> Result<Option<StoredCa>, ClusterError> {
        self.reader()
            .ca_state()
            .map_err(|e| ClusterError::Storage(format!("reading the CA state: {e}")))
    }

    /// Whether this node's log may still hold CA updates: the last one is above the purged
    /// index. Over-approximates (later updates may all be harmless), which only costs one
    /// extra compaction.
    pub fn log_may_hold_ca_updates(&self) -> Result<bool, ClusterError> {
        let last = self
            .reader()
            .ca_index()
            .map_err(|e| ClusterError::Storage(format!("reading the CA index: {e}")))?;
        let purged = self.metrics().purged.map(|l| l.index);
        Ok(match (last, purged) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(last), Some(purged)) => last > purged,
        })
    }

    /// Proposes `state` as the CA state built from version `expect` and waits until this node
    /// applied it, so a read right after sees it. Returns the new version; a version that moved
    /// on meanwhile is `ClusterError::Rejected(ApplyError::Conflict)`.
    pub async fn ca_update(
        &self,
        expect: u64,
        state: Vec<u8>,
        timeout: Duration,
    ) -> Result<u64, ClusterError> {
        let (applied, index) = self.write(Command::CaUpdate { expect, state }).await?;
        self.wait_applied(index, timeout).await?;
        match applied {
            Applied::CaUpdated { version } => Ok(version),
            other => Err(ClusterError::Internal(format!(
                "unexpected outcome of a CA update: {other:?}"
            ))),
        }
    }

    /// Builds a snapshot of everything applied so far and then purges this node's log up to it,
    /// so entries holding data that was since removed from the state (the sealed root key after
    /// `export-root-key`) leave the log as soon as the log store can drop them. Best effort and
    /// local to this node: the log store deletes whole segments only, and openraft delays a
    /// purge while a replication stream still reads the entries (see docs/security.md).
    /// Returns the index the snapshot covers.
    pub async fn compact_log(&self, timeout: Duration) -> Result<u64, ClusterError> {
        let fatal = |e: openraft::error::Fatal<crate::types::NodeId>| {
            ClusterError::Unavailable(format!("raft stopped: {e}"))
        };
        let target = self.metrics().last_applied.map(|l| l.index).unwrap_or(0);
        self.raft().trigger().snapshot().await.map_err(fatal)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut metrics = self.raft().metrics();
        loop {
            let covered = metrics.borrow().snapshot.map(|s| s.index).unwrap_or(0);
            if covered >= target {
                self.raft()
                    .trigger()
                    .purge_log(covered)
                    .await
                    .map_err(fatal)?;
                return Ok(covered);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ClusterError::ShuttingDown),
                Err(_) => {
                    return Err(ClusterError::Unavailable(format!(
                        "no snapshot covering index {target} within {timeout:?}"
                    )));
                }
            }
        }
    }
}
