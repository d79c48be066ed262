//! The undo journal: everything done to the backing directory since it was last made durable,
//! recorded so that a power cut can take it back.
//!
//! Every operation is applied to the backing directory at once (reads are then trivially
//! right); what is kept here is how to undo it:
//! - per file (by backing inode, so renames do not confuse it): the durable length and the
//!   old bytes that unsynced writes or truncations overwrote inside the durable region, in
//!   order; `fsync`/`fdatasync` of the file drops its journal (the data is durable);
//! - per directory operation (create, mkdir, unlink, rmdir, rename): how to undo it and the
//!   directories whose fsync makes it durable (a rename needs both of its directories).
//!   Unlinked and replaced entries are parked in a stash directory instead of being deleted,
//!   and deleted for real when the operation becomes durable.
//!
//! It never decides *when* something is durable (the volume does, on fsync) and never keeps
//! whole-file copies: a write costs the bytes it overwrote inside the durable region.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// What is not durable yet in one file.
#[derive(Debug)]
pub(crate) struct FileJournal {
    /// Length of the file as of its last fsync (what a power cut truncates it back to).
    pub(crate) durable_len: u64,
    /// Old bytes overwritten inside `[0, durable_len)`, oldest first. Replayed newest first,
    /// so the oldest copy of a byte (the durable one) wins.
    pub(crate) saved: Vec<(u64, Vec<u8>)>,
    /// Bytes written since the last fsync.
    pub(crate) pending_bytes: u64,
    /// The most recent unsynced write: (global sequence, offset, length).
    pub(crate) last_write: Option<(u64, u64, u64)>,
}

impl FileJournal {
    pub(crate) fn new(durable_len: u64) -> Self {
        Self {
            durable_len,
            saved: Vec::new(),
            pending_bytes: 0,
            last_write: None,
        }
    }

    /// Saves what `[offset, offset + len)` holds inside the durable region before it is
    /// overwritten or truncated away. `cur_len` is the file's length now.
    pub(crate) fn save_before(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        cur_len: u64,
    ) -> io::Result<()> {
        let end = offset
            .saturating_add(len)
            .min(self.durable_len)
            .min(cur_len);
        if offset >= end {
            return Ok(());
        }
        let mut old = vec![0u8; (end - offset) as usize];
        file.read_exact_at(&mut old, offset)?;
        self.saved.push((offset, old));
        Ok(())
    }

    /// Puts the file back to its durable image: durable length, then the saved bytes.
    pub(crate) fn revert(&self, file: &File) -> io::Result<()> {
        file.set_len(self.durable_len)?;
        for (offset, bytes) in self.saved.iter().rev() {
            file.write_all_at(bytes, *offset)?;
        }
        Ok(())
    }

    /// The durable value of the byte at `offset` lives in a saved record (the oldest one
    /// covering it) rather than in the file: its index, if so.
    pub(crate) fn record_covering(&self, offset: u64) -> Option<usize> {
        self.saved
            .iter()
            .position(|(o, b)| *o <= offset && offset < o + b.len() as u64)
    }
}

/// Where a directory entry is: parent FUSE inode and name.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) parent: u64,
    pub(crate) name: OsString,
}

/// How to undo one directory operation.
#[derive(Debug)]
pub(crate) enum DirChange {
    /// `create` or `mkdir`: undone by removing the entry (a directory with its contents).
    Created { ino: u64 },
    /// `unlink` or `rmdir`: the victim waits in the stash under `stash`.
    Removed {
        at: Entry,
        ino: u64,
        stash: OsString,
    },
    /// `rename`: moved back; a replaced target waits in the stash under `victim`.
    Renamed {
        from: Entry,
        to: Entry,
        ino: u64,
        victim: Option<(u64, OsString)>,
    },
}

/// One directory operation not yet durable.
#[derive(Debug)]
pub(crate) struct DirOp {
    /// FUSE inodes of the directories still to be fsynced before it is durable.
    pub(crate) pending: Vec<u64>,
    pub(crate) change: DirChange,
}

/// Deterministic generator for seeded choices (splitmix64): the same seed gives the same
/// offset, bit or tear on every run, so a printed seed reproduces a failure.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revert_restores_the_durable_image() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789")?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let mut j = FileJournal::new(10);
        j.save_before(&file, 2, 3, 10)?;
        file.write_all_at(b"abc", 2)?;
        j.save_before(&file, 3, 10, 10)?;
        file.write_all_at(b"XXXXXXXXXX", 3)?;
        j.save_before(&file, 4, u64::MAX, 13)?;
        file.set_len(4)?;
        file.write_all_at(b"tail", 8)?;
        j.revert(&file)?;
        assert_eq!(std::fs::read(&path)?, b"0123456789");
        Ok(())
    }

    #[test]
    fn splitmix_is_deterministic() {
        let (mut a, mut b) = (SplitMix::new(7), SplitMix::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert!(a.below(10) < 10);
    }
}
