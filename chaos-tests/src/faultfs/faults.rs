//! The faults a test injects into a [`Volume`]: the switches (disk full, reported free space,
//! fsync EIO), the bit flip in durable data, and the power cut that replays the undo journal
//! backwards (and tears the last unsynced write when asked).
//!
//! Everything here acts on the backing directory directly, with the volume's lock held, so no
//! request is served halfway through a cut. It never makes anything durable that was not.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::undo::{DirChange, Entry, SplitMix};
use super::volume::{Faults, Volume, errno};
use super::{CutReport, Flip, FlipAt, FsyncFault, Tear};

impl Volume {
    // ----- faults --------------------------------------------------------------------------

    pub(crate) fn set_disk_full(&mut self, full: bool) {
        self.faults.disk_full = full;
    }

    pub(crate) fn set_free_bytes(&mut self, free: Option<u64>) {
        self.faults.free_bytes = free;
    }

    pub(crate) fn fail_fsync(&mut self, prefix: &Path, mode: FsyncFault) {
        self.faults.fsync.push((prefix.to_path_buf(), mode));
    }

    pub(crate) fn clear_faults(&mut self) {
        self.faults = Faults::default();
    }

    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.files.values().map(|j| j.pending_bytes).sum()
    }

    /// Flips one bit of the durable image of `rel` (relative to the mount root).
    pub(crate) fn flip_bit(&mut self, rel: &Path, at: FlipAt) -> io::Result<Flip> {
        let path = self.root.join(rel);
        let meta = fs::symlink_metadata(&path)?;
        if !meta.is_file() {
            return Err(errno(libc::EISDIR));
        }
        let durable_len = self
            .files
            .get(&meta.ino())
            .map_or(meta.len(), |j| j.durable_len);
        let (offset, bit) = match at {
            FlipAt::Offset { offset, bit } => (offset, bit),
            FlipAt::Seeded(seed) => {
                let mut rng = SplitMix::new(seed);
                let offset = rng.below(durable_len);
                let bit = rng.below(8) as u8;
                eprintln!(
                    "faultfs: flip_bit seed {seed}: {} offset {offset} bit {bit}",
                    rel.display()
                );
                (offset, bit)
            }
        };
        if offset >= durable_len || bit > 7 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "bit {bit} at offset {offset} is outside the {durable_len} durable bytes of {} \
                     ({} bytes now; only fsynced data can be flipped: stop the node cleanly or \
                     flip an older, synced file)",
                    rel.display(),
                    meta.len()
                ),
            ));
        }
        let mask = 1u8 << bit;
        // The durable byte is in the oldest saved record covering it, else in the file.
        match self
            .files
            .get_mut(&meta.ino())
            .and_then(|j| j.record_covering(offset).map(|i| (j, i)))
        {
            Some((j, i)) => {
                let (start, bytes) = &mut j.saved[i];
                let k = (offset - *start) as usize;
                if let Some(b) = bytes.get_mut(k) {
                    *b ^= mask;
                }
            }
            None => {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                let mut b = [0u8; 1];
                file.read_exact_at(&mut b, offset)?;
                b[0] ^= mask;
                file.write_all_at(&b, offset)?;
            }
        }
        Ok(Flip {
            path: rel.to_path_buf(),
            offset,
            bit,
        })
    }

    // ----- power cut -------------------------------------------------------------------------

    /// Drops everything not durable: file data back to its durable image, directory
    /// operations undone newest first; then, with a tear, a prefix of the last unsynced write.
    pub(crate) fn power_cut(&mut self, tear: Tear) -> CutReport {
        let torn_write = match tear {
            Tear::None => None,
            Tear::Seeded(seed) => self.prepare_tear(seed),
        };
        let mut report = CutReport {
            files_reverted: 0,
            dir_ops_undone: 0,
            torn: None,
        };
        let journals = std::mem::take(&mut self.files);
        for (backing, j) in &journals {
            let Some(path) = self
                .inodes
                .by_backing(*backing)
                .and_then(|i| self.inodes.path(i))
            else {
                continue;
            };
            let r = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .and_then(|f| j.revert(&f));
            match r {
                Ok(()) => report.files_reverted += 1,
                Err(e) => eprintln!("faultfs: power cut: reverting {}: {e}", path.display()),
            }
        }
        let ops = std::mem::take(&mut self.dir_ops);
        for op in ops.into_iter().rev() {
            let what = self.describe(&op.change);
            match self.undo(op.change) {
                Ok(()) => {
                    eprintln!("faultfs: power cut: undid {what}");
                    report.dir_ops_undone += 1;
                }
                Err(e) => eprintln!("faultfs: power cut: undoing {what}: {e}"),
            }
        }
        let stash = self.inodes.stash_dir().to_path_buf();
        if let Err(e) = fs::remove_dir_all(&stash).and_then(|()| fs::create_dir(&stash)) {
            eprintln!("faultfs: power cut: emptying {}: {e}", stash.display());
        }
        if let Err(e) = self.inodes.rescan() {
            eprintln!(
                "faultfs: power cut: rescanning {}: {e}",
                self.root.display()
            );
        }
        if let Some((backing, start, bytes, kept)) = torn_write
            && let Some(ino) = self.inodes.by_backing(backing)
            && let (Some(path), Some(rel)) = (self.inodes.path(ino), self.inodes.rel_path(ino))
        {
            let r = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.write_all_at(&bytes, start));
            match r {
                Ok(()) => report.torn = Some((rel, kept)),
                Err(e) => eprintln!("faultfs: power cut: tearing {}: {e}", path.display()),
            }
        }
        report
    }

    /// Reads what a torn last write leaves behind: the file's unsynced bytes from the end of
    /// its durable image (or the write's start, if inside it) up to a seeded point inside the
    /// last write. Returns (backing inode, start offset, bytes, bytes of the write kept).
    fn prepare_tear(&self, seed: u64) -> Option<(u64, u64, Vec<u8>, u64)> {
        let (backing, j, (_, offset, len)) = self
            .files
            .iter()
            .filter_map(|(b, j)| j.last_write.map(|w| (*b, j, w)))
            .max_by_key(|(_, _, w)| w.0)?;
        let mut rng = SplitMix::new(seed);
        let kept = rng.below(len.max(1));
        let start = offset.min(j.durable_len);
        let path = self
            .inodes
            .by_backing(backing)
            .and_then(|i| self.inodes.path(i))?;
        let file = File::open(&path).ok()?;
        let end = (offset + kept).min(file.metadata().ok()?.len());
        let mut bytes = vec![0u8; end.saturating_sub(start) as usize];
        file.read_exact_at(&mut bytes, start).ok()?;
        eprintln!(
            "faultfs: power cut tear seed {seed}: the last unsynced write, {len} bytes at {offset} of {}, keeps {kept} (if the file survives the cut)",
            path.display()
        );
        Some((backing, start, bytes, kept))
    }

    /// "create raft/seg-1" and the like, for the log of a cut (the names a test looks for).
    fn describe(&self, change: &DirChange) -> String {
        let at = |e: &Entry| {
            self.inodes
                .rel_path(e.parent)
                .map(|p| p.join(&e.name).display().to_string())
                .unwrap_or_else(|| format!("?/{}", e.name.to_string_lossy()))
        };
        let of = |ino: u64| {
            self.inodes
                .rel_path(ino)
                .map_or_else(|| "?".to_owned(), |p| p.display().to_string())
        };
        match change {
            DirChange::Created { ino } => format!("create {}", of(*ino)),
            DirChange::Removed { at: e, .. } => format!("remove {}", at(e)),
            DirChange::Renamed { from, to, .. } => format!("rename {} -> {}", at(from), at(to)),
        }
    }

    fn undo(&mut self, change: DirChange) -> io::Result<()> {
        match change {
            DirChange::Created { ino, .. } => {
                let path = self.path(ino)?;
                if fs::symlink_metadata(&path)?.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
                self.inodes.remove(ino);
            }
            DirChange::Removed { at, ino, stash } => {
                let to = self.child(at.parent, &at.name)?;
                fs::rename(self.stash_path(&stash), &to)?;
                self.inodes.relocate(ino, at.parent, &at.name);
            }
            DirChange::Renamed {
                from,
                to,
                ino,
                victim,
            } => {
                let now = self.path(ino)?;
                fs::rename(&now, self.child(from.parent, &from.name)?)?;
                self.inodes.relocate(ino, from.parent, &from.name);
                if let Some((vino, stash)) = victim {
                    fs::rename(self.stash_path(&stash), self.child(to.parent, &to.name)?)?;
                    self.inodes.relocate(vino, to.parent, &to.name);
                }
            }
        }
        Ok(())
    }
}
