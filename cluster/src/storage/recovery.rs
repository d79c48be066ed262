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
use crate::types::{NodeId, StoredMembership};

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

/// Opens the log, the snapshot and sled in `dir`, healing or rebuilding as the rules above say.
pub fn open(dir: &Path, cache_bytes: u64) -> Result<Opened, RecoveryError> {
    let log = match check_log_and_snapshot(dir)? {
        Ok(log) => log,
        Err((what, detail)) => heal(dir, what, &detail)?,
    };
    let db = open_state(dir, cache_bytes)?;
    let events = EventBus::new(4096);
    let sm =
        StateMachineStore::open(&db, dir, events.clone()).map_err(RecoveryError::StateMachine)?;
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

/// The opened log, or what is damaged. Errors that are not damage (permissions, I/O) stop the
/// start: they are the operator's to fix, and quarantining a readable store would be wrong.
fn check_log_and_snapshot(dir: &Path) -> Result<Result<LogStore, Damage>, RecoveryError> {
    let log = match LogStore::open(dir) {
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
        Ok(_) => Ok(Ok(log)),
        Err(e @ OpenError::CorruptSnapshot(_)) => Ok(Err(("snapshot", e.to_string()))),
        Err(e) => Err(RecoveryError::Snapshot(e)),
    }
}

/// Quarantines everything but the node's identity (TLS material, config) and starts an empty
/// log holding the old vote. Everything goes, not only the damaged file: the state machine and
/// snapshot may be ahead of what is left of the log, and an empty node that catches up by
/// snapshot is the one recovery path openraft and this project already test (a wiped follower).
fn heal(dir: &Path, what: &'static str, detail: &str) -> Result<LogStore, RecoveryError> {
    tracing::error!(what, detail, dir = %dir.display(), "corrupted storage detected: quarantining it and healing from peers");
    let vote = LogStore::readable_vote(dir);
    let members = members_hint(dir);
    let moved: Vec<PathBuf> = vec![
        dir.join("log"),
        sm_store::snapshot_path(dir),
        dir.join(STATE_DIR),
        dir.join(PROOF_FILE),
    ];
    let quarantined =
        quarantine::quarantine(dir, what, &moved).map_err(RecoveryError::Quarantine)?;
    let marker = HealMarker {
        what: what.into(),
        detail: detail.into(),
        quarantined,
        vote,
        members,
    };
    // The marker is durable before the empty store exists: a crash in between restarts into
    // an empty store that is still marked healing, never into one that may vote.
    marker.write(dir).map_err(RecoveryError::Marker)?;
    let log = LogStore::open(dir).map_err(RecoveryError::Log)?;
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
        return ids(&m);
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
