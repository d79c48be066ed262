//! The last committed log id this node saw, kept as a restart hint in `<dir>/log/committed`.
//!
//! Why: sled is rebuilt from the snapshot after every crash (see `recovery`), and openraft
//! re-applies the log at start only up to the committed id the log store reports. Without a
//! saved id a restarted node starts with the state of its last snapshot and waits for a leader
//! before anything newer is applied; a node whose certificate must be renewed from local CA
//! state at start (after a long power-off) would find that state missing.
//!
//! Owns that file. It is written in place on every commit advance (one small `write`, no fsync:
//! it is a hint, and an fsync per commit would double the write path's disk flushes). After a
//! power cut it may be older than the truth, missing, or torn (the frame's CRC then fails and it
//! is ignored); all three only mean a longer wait for the leader. Must never claim more than the
//! log proves: `LogStore::read_committed` accepts it only if the local log holds that exact log
//! id (or has purged past it into the snapshot).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::fsutil;
use crate::types::LogId;

const FILE: &str = "committed";

pub struct CommitHint {
    path: PathBuf,
    /// Opened on the first save; `None` after a write error (the hint is then not kept).
    file: Mutex<Option<File>>,
    /// The last committed index saved (0 before the first), for the commit-index metric;
    /// kept even when the file is not.
    last_index: AtomicU64,
}

impl CommitHint {
    /// Reads the hint in `log_dir` (None when missing or damaged) and prepares saving.
    pub fn open(log_dir: &Path) -> (Self, Option<LogId>) {
        let path = log_dir.join(FILE);
        let saved = read(&path);
        (
            Self {
                path,
                file: Mutex::new(None),
                last_index: AtomicU64::new(saved.map_or(0, |c| c.index)),
            },
            saved,
        )
    }

    /// Overwrites the hint. Errors are logged once and end the hint, never the write path.
    pub fn save(&self, committed: LogId) {
        self.last_index.store(committed.index, Ordering::Relaxed);
        let Ok(payload) = bincode::serialize(&committed) else {
            return;
        };
        let mut framed = Vec::with_capacity(payload.len() + 8);
        fsutil::frame(&payload, &mut framed);
        let Ok(mut slot) = self.file.lock() else {
            return;
        };
        if slot.is_none() {
            // The directory entry is not fsynced either: a lost file is a lost hint.
            match OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
            {
                Ok(f) => *slot = Some(f),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot keep the commit hint; a restart waits for the leader before re-applying the log");
                    return;
                }
            }
        }
        let Some(f) = slot.as_mut() else {
            return;
        };
        // Every encoding of a `LogId` has the same length, so writing at offset 0 replaces
        // the whole record.
        let written = f
            .seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&framed));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the commit hint; no longer keeping it");
            *slot = None;
        }
    }
}

impl CommitHint {
    /// The last committed index this node learned (0 before the first).
    pub fn last_index(&self) -> u64 {
        self.last_index.load(Ordering::Relaxed)
    }
}

fn read(path: &Path) -> Option<LogId> {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the commit hint; ignoring it");
            return None;
        }
    }
    let Some((payload, _)) = fsutil::unframe(&bytes) else {
        tracing::info!(path = %path.display(), "commit hint torn or damaged; ignoring it");
        return None;
    };
    bincode::deserialize(payload).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn saved_hint_reads_back_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let (hint, none) = CommitHint::open(dir.path());
        assert_eq!(none, None);
        hint.save(id(1, 5));
        hint.save(id(2, 70_000));
        let (_, got) = CommitHint::open(dir.path());
        assert_eq!(got, Some(id(2, 70_000)));
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(CommitHint::open(dir.path()).1, None);
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(CommitHint::open(dir.path()).1, None);
    }
}
