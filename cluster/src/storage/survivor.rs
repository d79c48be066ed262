//! The offline side of `conclave recover --force-new-cluster`: opens a stopped member's
//! storage, says what it holds (membership, last log id, applied id, vote), applies every entry
//! of its local log beyond the applied index (entries the lost majority may have committed),
//! and hands out the resulting state as a stream of records for `seed`.
//!
//! Owns that reading and applying. Must never run while the node itself runs (the caller
//! checks first: `recovery::open` would otherwise rebuild a tree the live node is using), never
//! write to the log, and never change the data directory beyond what any start does (sled is a
//! cache that the next start rebuilds or trusts by its proof).

use std::path::Path;

use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader};

use crate::storage::recovery::{self, RecoveryError, StoreOptions};
use crate::types::{LogId, NodeId, StorageError, StoredMembership, Vote};

/// Entries applied per call: bounds memory whatever the log's length.
const APPLY_CHUNK: u64 = 512;

/// A stopped member's storage, opened offline.
pub struct Survivor {
    opened: recovery::Opened,
    /// What [`Survivor::open`] found, before anything was applied.
    pub found: Found,
}

/// What the member's storage holds.
#[derive(Debug, Clone)]
pub struct Found {
    /// The last log id of its log (or of its snapshot when the log is empty after it).
    pub last_log_id: Option<LogId>,
    /// The state machine's applied id.
    pub applied: Option<LogId>,
    pub vote: Option<Vote>,
    /// The last membership it knows: the newest membership entry of its log, else the applied one.
    pub membership: StoredMembership,
}

impl Found {
    /// Whether `id` is a voter of the last membership.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.membership.membership().voter_ids().any(|v| v == id)
    }

    /// The highest term this member has seen (its vote or its last entry).
    pub fn term(&self) -> u64 {
        let v = self.vote.map(|v| v.leader_id().term).unwrap_or(0);
        let l = self.last_log_id.map(|l| l.leader_id.term).unwrap_or(0);
        v.max(l)
    }
}

/// Why the survivor's storage could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SurvivorError {
    #[error("{0}")]
    Open(#[from] RecoveryError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The node was healing from corruption: its state is incomplete and cannot seed a cluster.
    #[error(
        "this node was healing from damaged storage ({0}) and holds no complete state; it cannot be the survivor"
    )]
    Healing(String),
    /// sled's lock is held: the node (or another tool) has the store open.
    #[error("the state store is locked ({0}): is the node still running? stop it first")]
    Locked(sled::Error),
    /// The node never joined a cluster.
    #[error("this data directory holds no cluster (no membership, nothing applied)")]
    Empty,
}

impl Survivor {
    /// Opens the storage of a stopped node (the same checks as any start).
    pub async fn open(dir: &Path, opts: StoreOptions) -> Result<Self, SurvivorError> {
        let dir = dir.to_path_buf();
        let state = dir.join(crate::storage::proof::STATE_DIR);
        if state.join("db").exists() {
            // Before `recovery::open`, which would quarantine a tree it cannot open: a tree
            // locked by a live process is not damaged. sled locks its file while open.
            let probe = dir.clone();
            tokio::task::spawn_blocking(move || {
                sled::Config::new()
                    .path(probe.join(crate::storage::proof::STATE_DIR))
                    .cache_capacity(1 << 20)
                    .open()
                    .map(drop)
            })
            .await
            .map_err(|e| RecoveryError::Rebuild(std::io::Error::other(e)))?
            .map_err(SurvivorError::Locked)?;
        }
        let mut opened = tokio::task::spawn_blocking(move || recovery::open(&dir, opts))
            .await
            .map_err(|e| RecoveryError::Rebuild(std::io::Error::other(e)))??;
        if let Some(m) = &opened.healing {
            return Err(SurvivorError::Healing(m.what.clone()));
        }
        let state = opened.log.get_log_state().await?;
        let vote = opened.log.read_vote().await?;
        let (applied, mut membership) = opened.sm.applied_state().await?;
        // The effective membership is the newest one in the log, applied or not.
        let from = applied.map(|a| a.index + 1).unwrap_or(0);
        if let Some(last) = state.last_log_id {
            let mut reader = opened.log.get_log_reader().await;
            let mut start = from;
            while start <= last.index {
                let end = (start + APPLY_CHUNK).min(last.index + 1);
                for e in reader.try_get_log_entries(start..end).await? {
                    if let EntryPayload::Membership(m) = &e.payload {
                        membership = StoredMembership::new(Some(e.log_id), m.clone());
                    }
                }
                start = end;
            }
        }
        if applied.is_none() && membership.membership().nodes().next().is_none() {
            return Err(SurvivorError::Empty);
        }
        Ok(Self {
            opened,
            found: Found {
                last_log_id: state.last_log_id,
                applied,
                vote,
                membership,
            },
        })
    }

    /// Applies every entry of the local log beyond the applied index; returns the new applied
    /// id (the last log id). An entry this binary must not apply stops it with an error.
    pub async fn apply_local_log(&mut self) -> Result<Option<LogId>, SurvivorError> {
        let Some(last) = self.found.last_log_id else {
            return Ok(self.found.applied);
        };
        let mut start = self.found.applied.map(|a| a.index + 1).unwrap_or(0);
        let mut reader = self.opened.log.get_log_reader().await;
        while start <= last.index {
            let end = (start + APPLY_CHUNK).min(last.index + 1);
            // `get_log_entries` fails on a hole: one would silently skip a committed entry.
            let entries = reader.get_log_entries(start..end).await?;
            self.opened.sm.apply(entries).await?;
            start = end;
        }
        let (applied, _) = self.opened.sm.applied_state().await?;
        tracing::info!(applied = ?applied, "local log applied offline");
        Ok(applied)
    }

    /// The applied state, record by record in key order, straight from the tree.
    pub fn records(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), sled::Error>> + use<> {
        // Offline, nothing applies meanwhile: the raw tree.
        let tree = self.opened.sm.reader().tree().raw().clone();
        tree.iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    /// Flushes sled and releases the files, so the directory can be moved.
    pub async fn close(self) -> Result<(), SurvivorError> {
        let db = self.opened.db.clone();
        drop(self.opened);
        tokio::task::spawn_blocking(move || db.flush().map(drop))
            .await
            .map_err(|e| RecoveryError::Rebuild(std::io::Error::other(e)))?
            .map_err(RecoveryError::Sled)?;
        Ok(())
    }
}
