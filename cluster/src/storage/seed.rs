//! Seeding a data directory from a state stream (issue 14's interface D): what `conclave
//! restore` and `conclave recover --force-new-cluster` leave behind so that `conclave run`
//! starts a one-voter cluster of this node, which others then join with tokens as usual.
//!
//! What a seeded directory holds: `snapshot.bin` with the state at the source's last log id
//! (same index and term) and membership = {this node}; an empty Raft log whose purged id is
//! that log id (so openraft starts right after the snapshot); and a vote for this node one term
//! above the source's (so its first election is in a term no old member ever used). Nothing
//! else: no sled tree (recovery rebuilds it from the snapshot, as after any crash), no proof, no
//! commit hint beyond the snapshot, no heal marker.
//!
//! Records that must not survive into the new cluster are dropped while streaming (see
//! [`Keep`]): old membership and applied id (replaced), sessions unless kept, join tokens,
//! draining flags of old members, login throttling. No per-member DNS records exist in the
//! state (names `nodeN` are reserved and answered from the membership), so none need dropping.
//!
//! Owns the layout of a fresh data dir. Must never touch a directory that already holds a log,
//! a snapshot or a sled tree (it refuses), nor hold the whole state in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use openraft::{Membership, Vote};

use crate::state::keys;
use crate::storage::log_store::LogStore;
use crate::storage::proof::{PROOF_FILE, STATE_DIR};
use crate::storage::quarantine::HealMarker;
use crate::storage::snapshot_file::{self, SnapshotFileError};
use crate::types::{LogId, NodeId, NodeInfo, SnapshotMeta, StoredMembership};

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedSpec {
    /// This node: the only voter of the new membership.
    pub node_id: NodeId,
    /// Its addresses, from its config.
    pub info: NodeInfo,
    /// The source state's last log id; the snapshot keeps its index and term, so log indexes
    /// (and every `index` a client saw) keep growing from where the source was.
    pub last_log_id: LogId,
    /// Keep sessions (off for a restore by default: a backup file must not hand out logins).
    pub keep_sessions: bool,
}

/// What was seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// Records written into the snapshot.
    pub records: u64,
    /// Records of the source dropped by the filter.
    pub dropped: u64,
    pub last_log_id: LogId,
    /// The vote the new log starts with.
    pub vote: Vote<NodeId>,
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The directory already holds a node's storage.
    #[error(
        "{0} already holds a node's storage (a log, snapshot or state); refusing to overwrite it"
    )]
    NotEmpty(PathBuf),
    /// The data directory could not be created owner-only.
    #[error("data directory: {0}")]
    Dir(#[from] crate::storage::private_dir::PrivateDirError),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("encode: {0}")]
    Encode(#[from] bincode::Error),
    /// Writing `snapshot.bin` failed, or the source failed while it was written.
    #[error("{0}")]
    Snapshot(#[from] SnapshotFileError),
}

/// What happens to one record of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Keep,
    Drop,
    /// Written with the new cluster's value (applied id, membership).
    Replace,
}

/// The filter: which source records go into the new cluster.
pub fn keep(key: &[u8], keep_sessions: bool) -> Keep {
    if key == keys::APPLIED || key == keys::MEMBERSHIP {
        return Keep::Replace;
    }
    if key == keys::INSTALLING {
        return Keep::Drop;
    }
    // Sessions: record, info, expiry index, per-user index (the same set a backup leaves out).
    if !keep_sessions && keys::SESSION_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return Keep::Drop;
    }
    // Join tokens were issued for the old membership; draining flags name old members; login
    // throttling is transient and would lock users out of a cluster they just got back.
    const DROPPED: [&[u8]; 3] = [keys::JOIN_TOKEN_PREFIX, keys::DRAIN_PREFIX, b"lf/"];
    if DROPPED.iter().any(|p| key.starts_with(p)) {
        return Keep::Drop;
    }
    Keep::Keep
}

/// The membership of a seeded node: itself, alone, as voter.
pub fn single_voter(spec: &SeedSpec) -> StoredMembership {
    let voters = BTreeSet::from([spec.node_id]);
    let nodes = BTreeMap::from([(spec.node_id, spec.info.clone())]);
    StoredMembership::new(Some(spec.last_log_id), Membership::new(vec![voters], nodes))
}

/// Refuses a directory that already holds storage; an identity (`tls/`) may be there.
fn check_empty(dir: &Path) -> Result<(), SeedError> {
    let taken = ["log", STATE_DIR, PROOF_FILE]
        .iter()
        .map(|n| dir.join(n))
        .chain([snapshot_file::path(dir)])
        .any(|p| p.exists());
    let healing = HealMarker::read(dir).ok().flatten().is_some();
    if taken || healing {
        return Err(SeedError::NotEmpty(dir.to_path_buf()));
    }
    Ok(())
}

/// Writes `dir` as a one-voter data directory holding `records` (filtered, see [`keep`]).
/// The snapshot is written first and the log last, so an interrupted seed leaves no `log/`
/// and a second attempt (after removing the half-written dir) starts clean.
pub fn seed<E>(
    dir: &Path,
    spec: &SeedSpec,
    records: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
) -> Result<Seeded, SeedError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    crate::storage::private_dir::ensure_private_dir(dir)?;
    check_empty(dir)?;
    let membership = single_voter(spec);
    let applied = bincode::serialize(&Some(spec.last_log_id))?;
    let members = bincode::serialize(&membership)?;
    let meta = SnapshotMeta {
        last_log_id: Some(spec.last_log_id),
        last_membership: membership,
        snapshot_id: format!(
            "seed-{}-{}",
            spec.last_log_id.leader_id.term, spec.last_log_id.index
        ),
    };
    // A Cell, not a captured counter: the iterator is consumed inside `write_snapshot`.
    let dropped = std::cell::Cell::new(0u64);
    let keep_sessions = spec.keep_sessions;
    let filtered = records.filter_map(|r| match r {
        Err(e) => Some(Err(e)),
        Ok((k, v)) => match keep(&k, keep_sessions) {
            Keep::Keep => Some(Ok((k, v))),
            Keep::Replace if k == keys::APPLIED => Some(Ok((k, applied.clone()))),
            Keep::Replace => Some(Ok((k, members.clone()))),
            Keep::Drop => {
                dropped.set(dropped.get() + 1);
                None
            }
        },
    });
    let summary = snapshot_file::write(dir, &meta, filtered)?;
    let records = summary.records;
    // A term above every term of the old cluster: the first election here can never meet a
    // vote or a log entry of an old member in the same term.
    let vote = Vote::new(spec.last_log_id.leader_id.term + 1, spec.node_id);
    LogStore::seed(dir, vote, spec.last_log_id)?;
    tracing::info!(
        dir = %dir.display(),
        node_id = spec.node_id,
        index = spec.last_log_id.index,
        term = spec.last_log_id.leader_id.term,
        records,
        "data directory seeded as a one-voter cluster"
    );
    Ok(Seeded {
        records,
        dropped: dropped.get(),
        last_log_id: spec.last_log_id,
        vote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every session key family goes unless kept; the rest of the filter does not depend on it.
    #[test]
    fn the_filter_drops_what_names_the_old_cluster() {
        let sessions: [&[u8]; 4] = [
            b"s/abc",
            b"si/abc",
            b"se/\0\0\0\0\0\0\0\x01/abc",
            b"su/bob/abc",
        ];
        for k in sessions {
            assert_eq!(keep(k, false), Keep::Drop, "{k:?}");
            assert_eq!(keep(k, true), Keep::Keep, "{k:?}");
        }
        for k in [
            keys::join_token("ab").as_slice(),
            keys::draining(3).as_slice(),
            keys::login_throttle("bob").as_slice(),
            keys::INSTALLING,
        ] {
            assert_eq!(keep(k, true), Keep::Drop, "{k:?}");
        }
        assert_eq!(keep(keys::APPLIED, false), Keep::Replace);
        assert_eq!(keep(keys::MEMBERSHIP, true), Keep::Replace);
        for k in [
            keys::user("bob").as_slice(),
            keys::message("general", 1).as_slice(),
            keys::CA_STATE,
            keys::dns_record("wiki", "A", b"x").as_slice(),
            // Not a session: `s/` must match as a whole prefix.
            b"sx/1".as_slice(),
        ] {
            assert_eq!(keep(k, false), Keep::Keep, "{k:?}");
        }
    }
}
