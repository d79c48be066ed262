//! Opening a member's storage after any kind of stop: decides what on disk is trusted.
//!
//! Order and rules (docs/architecture.md, "Storage: what is fsynced when..."):
//! 1. The Raft log (every frame's CRC is checked while its index is rebuilt) and the snapshot
//!    file (CRC and encoding). Damage to either (a bad frame that is not a torn tail, a corrupt
//!    `meta`, a corrupt snapshot) cannot be repaired locally: the log, snapshot, sled and proof
//!    are moved to quarantine, a durable heal marker is written (with the vote when it was
//!    readable), and the node starts empty with that vote, to catch up from its peers.
//! 2. sled: trusted only if a clean shutdown's proof (`proof`) is there and matches the tree.
//!    No proof (a crash, a power cut): sled's directory is deleted and the state machine is
//!    rebuilt from the snapshot file, then openraft replays the log. A proof that does not
//!    match, or a sled that fails to open or to read: sled's directory is quarantined first,
//!    then rebuilt the same way. sled damage alone needs no peers (log + snapshot are intact).
//!
//! Owns that decision. Must never start Raft on a store it could not check, nor delete a
//! damaged log, snapshot or proven tree (they are only ever moved to quarantine).

use std::collections::BTreeSet;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use crate::state::events::EventBus;
use crate::state::keys;
use crate::storage::fsutil;
use crate::storage::log_store::LogStore;
use crate::storage::proof::{self, PROOF_FILE, Proof, ProofError, STATE_DIR};
use crate::storage::quarantine::{self, HealMarker};
use crate::storage::sm_store::{self, OpenError, StateMachineStore};
use crate::types::{NodeId, SnapshotMeta, StoredMembership};

/// Storage, opened and checked.
pub struct Opened {
    pub log: LogStore,
    pub db: sled::Db,
    pub sm: StateMachineStore,
    pub events: EventBus,
    /// Set while this node heals (the marker from this open or from an earlier one).
    pub healing: Option<HealMarker>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("raft log: {0}")]
    Log(io::Error),
    #[error("snapshot: {0}")]
    Snapshot(OpenError),
    #[error("sled: {0}")]
    Sled(sled::Error),
    #[error("state machine: {0}")]
    StateMachine(OpenError),
    #[error("quarantine: {0}")]
    Quarantine(io::Error),
    #[error("heal marker: {0}")]
    Marker(io::Error),
    #[error("rebuild: {0}")]
    Rebuild(io::Error),
}

/// How to open the stores.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// sled's page cache.
    pub cache_bytes: u64,
    /// Raft log segment size.
    pub segment_bytes: u64,
}

/// Opens the log, the snapshot and sled in `dir`, healing or rebuilding as the rules above say.
pub fn open(dir: &Path, opts: StoreOptions) -> Result<Opened, RecoveryError> {
    let cache_bytes = opts.cache_bytes;
    let (log, snapshot) = match check_log_and_snapshot(dir, opts.segment_bytes)? {
        Ok(checked) => checked,
        Err((what, detail)) => (heal(dir, what, &detail, opts.segment_bytes)?, None),
    };
    let db = open_state(dir, cache_bytes)?;
    let events = EventBus::new(4096);
    // The snapshot file was verified whole just above: the store trusts that and reads it at
    // most once more, to restore the tree from it.
    let sm = StateMachineStore::open_checked(&db, dir, events.clone(), snapshot)
        .map_err(RecoveryError::StateMachine)?;
    let healing = HealMarker::read(dir).map_err(RecoveryError::Marker)?;
    if let Some(m) = &healing {
        tracing::warn!(what = %m.what, quarantined = %m.quarantined.display(), "this node is healing: it will not vote or campaign until it has caught up from its peers");
    }
    Ok(Opened {
        log,
        db,
        sm,
        events,
        healing,
    })
}

type Damage = (&'static str, String);

/// The opened log and the verified snapshot's meta, or what is damaged. Errors that are not
/// damage (permissions, I/O) stop the start: they are the operator's to fix, and quarantining
/// a readable store would be wrong.
fn check_log_and_snapshot(
    dir: &Path,
    segment_bytes: u64,
) -> Result<Result<(LogStore, Option<SnapshotMeta>), Damage>, RecoveryError> {
    let log = match LogStore::open_with(dir, segment_bytes) {
        Ok(log) => log,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let what = match LogStore::check_meta(dir) {
                Err(m) if m.kind() == io::ErrorKind::InvalidData => "meta",
                _ => "log",
            };
            return Ok(Err((what, e.to_string())));
        }
        Err(e) => return Err(RecoveryError::Log(e)),
    };
    match sm_store::check_snapshot_file(dir) {
        Ok(meta) => Ok(Ok((log, meta))),
        Err(e @ OpenError::CorruptSnapshot(_)) => Ok(Err(("snapshot", e.to_string()))),
        Err(e) => Err(RecoveryError::Snapshot(e)),
    }
}

/// Quarantines everything but the node's identity (TLS material, config) and starts an empty
/// log holding the old vote. Everything goes, not only the damaged file: the state machine and
/// snapshot may be ahead of what is left of the log, and an empty node that catches up by
/// snapshot is the one recovery path openraft and this project already test (a wiped follower).
fn heal(
    dir: &Path,
    what: &'static str,
    detail: &str,
    segment_bytes: u64,
) -> Result<LogStore, RecoveryError> {
    tracing::error!(what, detail, dir = %dir.display(), "corrupted storage detected: quarantining it and healing from peers");
    let vote = LogStore::readable_vote(dir);
    let members = members_hint(dir);
    let moved: Vec<PathBuf> = vec![
        dir.join("log"),
        sm_store::snapshot_path(dir),
        dir.join(STATE_DIR),
        dir.join(PROOF_FILE),
    ];
    let quarantined = quarantine::plan(dir, what);
    let marker = HealMarker {
        what: what.into(),
        detail: detail.into(),
        quarantined: quarantined.clone(),
        vote,
        members,
    };
    // The marker is durable before anything is moved: a crash in between restarts into a
    // store (partly moved or empty) that is still marked healing, never into one that may vote.
    marker.write(dir).map_err(RecoveryError::Marker)?;
    quarantine::move_into(dir, &quarantined, &moved).map_err(RecoveryError::Quarantine)?;
    let log = LogStore::open_with(dir, segment_bytes).map_err(RecoveryError::Log)?;
    if let Some(v) = vote {
        log.restore_vote(v).map_err(RecoveryError::Log)?;
    }
    Ok(log)
}

/// Member ids to admit on the cluster port while the log is empty: from the snapshot file if
/// it reads, else from sled's tree if that opens. A hint only (an empty set admits any node
/// with a cluster certificate, see `peer_tls::identity::admits`).
fn members_hint(dir: &Path) -> BTreeSet<NodeId> {
    let ids = |m: &StoredMembership| -> BTreeSet<NodeId> {
        m.membership().nodes().map(|(id, _)| *id).collect()
    };
    if let Ok(Some(m)) = sm_store::check_snapshot_file(dir) {
        return ids(&m.last_membership);
    }
    let from_sled = catch_unwind(AssertUnwindSafe(|| -> Option<BTreeSet<NodeId>> {
        let db = sled::Config::new().path(dir.join(STATE_DIR)).open().ok()?;
        let v = db.open_tree("sm").ok()?.get(keys::MEMBERSHIP).ok()??;
        let m: StoredMembership = bincode::deserialize(&v).ok()?;
        Some(ids(&m))
    }));
    from_sled.ok().flatten().unwrap_or_default()
}

/// What the proof check found.
enum Verdict {
    Trusted(sled::Db),
    Damaged(String),
}

/// Opens sled under the rules above and returns a database the state machine may use.
fn open_state(dir: &Path, cache_bytes: u64) -> Result<sled::Db, RecoveryError> {
    let state_dir = dir.join(STATE_DIR);
    let verdict = match proof::take(dir) {
        Ok(Some(p)) => Some(verify(&state_dir, cache_bytes, &p)),
        Ok(None) => None,
        Err(ProofError::Corrupt(path)) => Some(Verdict::Damaged(format!(
            "proof file {} is corrupt",
            path.display()
        ))),
        Err(e) => return Err(RecoveryError::Rebuild(io::Error::other(e.to_string()))),
    };
    match verdict {
        Some(Verdict::Trusted(db)) => return Ok(db),
        Some(Verdict::Damaged(why)) => {
            tracing::error!(dir = %state_dir.display(), why, "the state machine store (sled) does not match its proof: quarantining it and rebuilding from the snapshot and the log");
            quarantine::quarantine(dir, "state", std::slice::from_ref(&state_dir))
                .map_err(RecoveryError::Quarantine)?;
        }
        None if state_dir.exists() => {
            // A crash: sled may hold anything between the last sync and the last apply, and
            // possibly torn pages; nothing proves it, so it goes. Cost: a replay from the
            // snapshot plus at most `snapshot_logs_since_last` entries.
            tracing::info!(dir = %state_dir.display(), "no proof of the state machine store (the node did not shut down cleanly): rebuilding it from the snapshot and the log");
            std::fs::remove_dir_all(&state_dir).map_err(RecoveryError::Rebuild)?;
            fsutil::sync_dir(dir).map_err(RecoveryError::Rebuild)?;
        }
        None => {}
    }
    open_sled(&state_dir, cache_bytes).map_err(RecoveryError::Sled)
}

fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        // No periodic sync: sled is a cache here (see `proof`); it is made durable only at a
        // clean shutdown, right before the proof is written.
        .flush_every_ms(None)
        .open()
}

/// Opens sled and compares its tree with `proof`. A sled error or panic is damage too (sled
/// 0.34 can refuse to open after an abrupt stop, sled issue 1533).
fn verify(state_dir: &Path, cache_bytes: u64, proof: &Proof) -> Verdict {
    let started = std::time::Instant::now();
    let checked = catch_unwind(AssertUnwindSafe(|| -> Result<Verdict, String> {
        let db = open_sled(state_dir, cache_bytes).map_err(|e| format!("sled: {e}"))?;
        let tree = db.open_tree("sm").map_err(|e| format!("sled: {e}"))?;
        let now = proof::compute(&tree).map_err(|e| e.to_string())?;
        if now == *proof {
            Ok(Verdict::Trusted(db))
        } else {
            Ok(Verdict::Damaged(format!(
                "proof says applied {:?}, {} pairs; the tree has applied {:?}, {} pairs{}",
                proof.applied,
                proof.pairs,
                now.applied,
                now.pairs,
                if now.digest == proof.digest {
                    ""
                } else {
                    ", digest differs"
                }
            )))
        }
    }));
    let verdict = match checked {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => Verdict::Damaged(e),
        Err(_) => Verdict::Damaged("sled panicked while opening or reading".into()),
    };
    if let Verdict::Trusted(_) = verdict {
        tracing::info!(applied = ?proof.applied, pairs = proof.pairs, ms = started.elapsed().as_millis() as u64, "state machine store matches its proof: trusted");
    }
    verdict
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::quarantine::QUARANTINE_DIR;
    use crate::types::{Entry, LogId, Vote};
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, EntryPayload};

    const OPTS: StoreOptions = StoreOptions {
        cache_bytes: 1 << 20,
        segment_bytes: 1 << 20,
    };

    fn quarantined(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir.join(QUARANTINE_DIR))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn put(o: &Opened, k: &str, v: &str) {
        o.db.open_tree("sm").unwrap().insert(k, v).unwrap();
    }

    fn get(o: &Opened, k: &str) -> Option<Vec<u8>> {
        o.db.open_tree("sm")
            .unwrap()
            .get(k)
            .unwrap()
            .map(|v| v.to_vec())
    }

    fn shut_down_cleanly(o: Opened, dir: &Path) {
        let tree = o.db.open_tree("sm").unwrap();
        proof::write(dir, &o.db, &tree).unwrap();
    }

    #[test]
    fn a_proven_tree_is_trusted_once() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(dir.path(), OPTS).unwrap();
        put(&o, "k", "v");
        shut_down_cleanly(o, dir.path());
        let o = open(dir.path(), OPTS).unwrap();
        assert_eq!(get(&o, "k").as_deref(), Some(b"v".as_slice()));
        assert!(o.healing.is_none());
        assert!(
            !dir.path().join(PROOF_FILE).exists(),
            "the proof is consumed"
        );
        drop(o);
        // A crash now (no proof): the tree is rebuilt (no snapshot here: empty).
        let o = open(dir.path(), OPTS).unwrap();
        assert_eq!(get(&o, "k"), None);
        assert!(quarantined(dir.path()).is_empty(), "a crash is not damage");
    }

    #[test]
    fn a_tree_that_differs_from_its_proof_is_quarantined_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(dir.path(), OPTS).unwrap();
        put(&o, "k", "v");
        let tree = o.db.open_tree("sm").unwrap();
        proof::write(dir.path(), &o.db, &tree).unwrap();
        // Changed at rest after the proof (what a flipped bit sled did not notice looks like).
        tree.insert("k", "w").unwrap();
        o.db.flush().unwrap();
        drop((tree, o));
        let o = open(dir.path(), OPTS).unwrap();
        assert_eq!(get(&o, "k"), None);
        let q = quarantined(dir.path());
        assert!(q.len() == 1 && q[0].ends_with("-state"), "{q:?}");
        assert!(
            o.healing.is_none(),
            "log and snapshot are intact: no peers needed"
        );
    }

    #[tokio::test]
    async fn a_corrupt_log_is_quarantined_and_the_vote_kept() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new_committed(7, 2);
        {
            let mut o = open(dir.path(), OPTS).unwrap();
            o.log.save_vote(&vote).await.unwrap();
            o.log
                .blocking_append((1..=3).map(|i| Entry {
                    log_id: LogId::new(CommittedLeaderId::new(7, 2), i),
                    payload: EntryPayload::Blank,
                }))
                .await
                .unwrap();
        }
        let seg = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[12] ^= 0x04;
        std::fs::write(&seg, &bytes).unwrap();

        let mut o = open(dir.path(), OPTS).unwrap();
        let marker = o.healing.clone().unwrap();
        assert_eq!(marker.what, "log");
        assert_eq!(marker.vote, Some(vote));
        assert!(marker.quarantined.join("log").is_dir());
        assert_eq!(o.log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(o.log.get_log_state().await.unwrap().last_log_id, None);
        drop(o);
        // Still healing after a restart before the catch-up finished.
        let o = open(dir.path(), OPTS).unwrap();
        assert_eq!(o.healing.map(|m| m.what).as_deref(), Some("log"));
    }

    #[test]
    fn a_corrupt_snapshot_file_heals() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), OPTS).unwrap());
        std::fs::write(sm_store::snapshot_path(dir.path()), b"not a snapshot").unwrap();
        let o = open(dir.path(), OPTS).unwrap();
        assert_eq!(o.healing.map(|m| m.what).as_deref(), Some("snapshot"));
        assert!(!sm_store::snapshot_path(dir.path()).exists());
    }
}
