//! Quarantine of damaged stores and the durable heal marker.
//!
//! Owns `<data_dir>/quarantine/<unix-ms>-<what>/` (damaged files moved aside, kept for an
//! operator to inspect: never read again by the node) and `<data_dir>/HEALING`, a small JSON
//! file that says this node lost durable state and must not help elect a leader until it has
//! caught up from its peers (see `node::heal_gate`). The marker carries the vote (when it was
//! readable) and the member ids last known, so the node keeps its promises and its cluster
//! port's member set while its own log is empty.
//!
//! Must never delete anything: moving aside is the only operation on damaged data, and every
//! move and the marker are durable (directory fsyncs) before the node starts empty.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::fsutil;
use crate::types::{NodeId, Vote};

pub const QUARANTINE_DIR: &str = "quarantine";
pub const HEAL_MARKER: &str = "HEALING";

/// Moves each existing path of `paths` into a new `<data_dir>/quarantine/<unix-ms>-<what>/`
/// and returns that directory. Durable when it returns.
pub fn quarantine(data_dir: &Path, what: &str, paths: &[PathBuf]) -> io::Result<PathBuf> {
    let dir = plan(data_dir, what);
    move_into(data_dir, &dir, paths)?;
    Ok(dir)
}

/// A fresh `<data_dir>/quarantine/<unix-ms>-<what>` path (not created yet), so a heal marker
/// can name it before anything is moved.
pub fn plan(data_dir: &Path, what: &str) -> PathBuf {
    let root = data_dir.join(QUARANTINE_DIR);
    let ms = unix_ms();
    let mut dir = root.join(format!("{ms}-{what}"));
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = root.join(format!("{ms}-{what}-{n}"));
    }
    dir
}

/// Moves each existing path of `paths` into `dir` (from [`plan`]), durably.
pub fn move_into(data_dir: &Path, dir: &Path, paths: &[PathBuf]) -> io::Result<()> {
    let root = data_dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&root)?;
    fs::create_dir_all(dir)?;
    for p in paths {
        if !p.exists() {
            continue;
        }
        let Some(name) = p.file_name() else {
            continue;
        };
        fsutil::rename_durable(p, &dir.join(name))?;
    }
    fsutil::sync_dir(dir)?;
    fsutil::sync_dir(&root)?;
    fsutil::sync_dir(data_dir)?;
    tracing::warn!(path = %dir.display(), "damaged storage moved to quarantine (kept for inspection)");
    Ok(())
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// `<data_dir>/HEALING`: this node lost durable state and is catching up from its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealMarker {
    /// What was damaged: `log`, `meta`, `snapshot`.
    pub what: String,
    /// Why, as detected (the error text).
    pub detail: String,
    /// Where the damaged store went.
    pub quarantined: PathBuf,
    /// The vote restored into the new store, if the old one was readable.
    pub vote: Option<Vote>,
    /// Member ids last known (the cluster port's peer-TLS member set until the log has one).
    pub members: BTreeSet<NodeId>,
}

impl HealMarker {
    /// The marker in `data_dir`, if any. A marker that exists but does not parse still means
    /// "healing" (the safe reading), with unknown details.
    pub fn read(data_dir: &Path) -> io::Result<Option<HealMarker>> {
        let path = data_dir.join(HEAL_MARKER);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "heal marker unreadable; still healing");
                HealMarker {
                    what: "unknown".into(),
                    detail: format!("unreadable heal marker: {e}"),
                    quarantined: data_dir.join(QUARANTINE_DIR),
                    vote: None,
                    members: BTreeSet::new(),
                }
            }))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the marker atomically and durably.
    pub fn write(&self, data_dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        fsutil::write_atomic(&data_dir.join(HEAL_MARKER), &bytes)
    }

    /// Removes the marker durably (the node has caught up).
    pub fn remove(data_dir: &Path) -> io::Result<()> {
        match fs::remove_file(data_dir.join(HEAL_MARKER)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        fsutil::sync_dir(data_dir)
    }

    /// The readiness reason while healing.
    pub fn reason(&self) -> String {
        format!(
            "healing: corrupted {} quarantined in {}; catching up from peers",
            self.what,
            self.quarantined.display()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_moves_and_marker_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("log")).unwrap();
        fs::write(d.join("log").join("x.seg"), b"abc").unwrap();
        fs::write(d.join("snapshot.bin"), b"s").unwrap();
        let q = quarantine(
            d,
            "log",
            &[d.join("log"), d.join("snapshot.bin"), d.join("absent")],
        )
        .unwrap();
        assert!(!d.join("log").exists() && !d.join("snapshot.bin").exists());
        assert_eq!(fs::read(q.join("log").join("x.seg")).unwrap(), b"abc");
        assert!(q.starts_with(d.join(QUARANTINE_DIR)));

        assert!(HealMarker::read(d).unwrap().is_none());
        let m = HealMarker {
            what: "log".into(),
            detail: "bad crc".into(),
            quarantined: q,
            vote: None,
            members: [1, 2, 3].into_iter().collect(),
        };
        m.write(d).unwrap();
        assert_eq!(HealMarker::read(d).unwrap(), Some(m));
        fs::write(d.join(HEAL_MARKER), b"garbage").unwrap();
        assert_eq!(HealMarker::read(d).unwrap().unwrap().what, "unknown");
        HealMarker::remove(d).unwrap();
        assert!(HealMarker::read(d).unwrap().is_none());
    }
}
