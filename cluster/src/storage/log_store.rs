//! The Raft log and vote, in append-only segment files of our own (not in sled).
//!
//! Owns durability of the log: an entry, a vote or a purge marker is on disk (fdatasync /
//! fsync) before openraft is told so. Why not sled: sled 0.34's flush ends in
//! `sync_file_range`, which neither flushes the device write cache nor file metadata, so an
//! acknowledged write could vanish on power loss. Here one `append` call (a batch of entries)
//! costs one `write` and one `fdatasync`, however many entries it carries.
//!
//! Layout: `<dir>/log/<first index, 20 digits>.seg` files of framed records
//! (`[len][crc32][bincode Entry]`), rolled at `SEGMENT_BYTES`; `<dir>/log/meta` holds the vote
//! and the last purged log id, replaced atomically; `<dir>/log/committed` is the last committed
//! id, a restart hint that is not fsynced (`commit_hint`). A torn frame at the tail of the
//! newest segment (a crash mid-write, never acknowledged) is cut off on open; a bad frame
//! anywhere else is corruption (`InvalidData`), which `recovery` answers with a quarantine.
//!
//! An entry whose commands this binary cannot decode (written by a newer binary, reached this
//! node's disk before a downgrade) is kept and read back as a placeholder (`decode_entry`), so
//! the node still starts and the state machine stops there with a message naming the version.
//!
//! A failed write or fsync is never retried as if it had worked (PostgreSQL's lesson: after a
//! failed fsync the kernel may have dropped the dirty pages, so a later fsync that succeeds
//! proves nothing about them). The store remembers each segment's last synced size; on any
//! write or sync failure it cuts the segment back to that size (best effort), marks itself
//! failed and refuses every later append, truncate, purge and vote with the same error. The
//! error goes to openraft, which stops its core (fatal); the node then restarts from what is
//! on disk (`node::run`'s supervisor).
//!
//! Must never: acknowledge an append before `sync_data` returned, or hold its lock across an
//! fsync (replication reads would stall).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, RaftLogReader, StorageIOError,
};
use serde::{Deserialize, Serialize};

use crate::command::Request;
use crate::storage::commit_hint::CommitHint;
use crate::storage::fsutil;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

/// Default segment size at which a new file is started (`[storage] log_segment_bytes`).
/// Purging deletes whole segments.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest segment size accepted (tests use small segments to get many of them).
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Decoded recent entries kept in memory for replication reads (bytes of their encoding).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u64,
    log_id: LogId,
}

struct Segment {
    id: u64,
    path: PathBuf,
    /// Opened for appending; shared so `sync_data` can run without the store lock.
    writer: Arc<File>,
    reader: File,
    size: u64,
    /// Bytes known durable (the size at the last successful sync, or at open). A failed
    /// write or sync cuts the file back to this.
    synced: u64,
}

struct Inner {
    dir: PathBuf,
    segment_bytes: u64,
    meta: Meta,
    segments: BTreeMap<u64, Segment>,
    index: BTreeMap<u64, Loc>,
    cache: BTreeMap<u64, (Entry, usize)>,
    cache_bytes: usize,
    /// Set by the first failed write or sync; every later mutation fails with it.
    failed: Option<String>,
    /// Indexes, found on open, of entries this binary must not apply (a newer binary's): the
    /// commit hint never reaches them, or openraft's re-apply at start would fail `Raft::new`
    /// instead of letting the node start and report the version stop.
    unappliable: BTreeSet<u64>,
}

/// The log store; clones share the same files (the clone handed to openraft as `LogReader`
/// reads what the writer appended).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// The committed id as of the last commit advance (a restart hint, see `commit_hint`).
    hint: Arc<CommitHint>,
    /// What the hint said when the store was opened.
    saved_committed: Option<LogId>,
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, openraft::AnyError::new(&e)),
    }
}

fn poisoned() -> io::Error {
    io::Error::other("log store lock poisoned by a panic")
}

/// The log's metadata (vote, committed, last purged); the default for a new log.
fn read_meta(meta_path: &Path) -> Result<Meta, io::Error> {
    let meta = match fs::read(meta_path) {
        Ok(bytes) => {
            let (payload, _) = fsutil::unframe(&bytes).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is corrupt", meta_path.display()),
                )
            })?;
            bincode::deserialize(payload)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Meta::default(),
        Err(e) => return Err(e),
    };
    Ok(meta)
}

/// Ids of the segment files in `dir`, ascending.
fn segment_ids(dir: &Path) -> Result<Vec<u64>, io::Error> {
    let mut ids: Vec<u64> = Vec::new();
    for de in fs::read_dir(dir)? {
        let name = de?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".seg")
            && let Ok(id) = stem.parse::<u64>()
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl LogStore {
    /// Opens (or creates) the log under `dir/log` with the default segment size.
    pub fn open(dir: &Path) -> Result<Self, io::Error> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    /// Opens (or creates) the log under `dir/log`, rebuilding the index from the segments and
    /// checking every frame's CRC (a bad frame that is not a torn tail is `InvalidData`).
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<Self, io::Error> {
        let dir = dir.join("log");
        // Durably: until the data dir is fsynced a power cut undoes the `log` entry, and with
        // it every entry and vote this node had acknowledged.
        fsutil::create_dir_all_durable(&dir, &mut fs::DirBuilder::new())?;
        let meta_path = dir.join("meta");
        let meta = read_meta(&meta_path)?;
        let ids = segment_ids(&dir)?;
        let purged_index = meta.last_purged.map(|l| l.index);
        let mut inner = Inner {
            dir: dir.clone(),
            segment_bytes: segment_bytes.max(MIN_SEGMENT_BYTES),
            meta,
            segments: BTreeMap::new(),
            index: BTreeMap::new(),
            cache: BTreeMap::new(),
            cache_bytes: 0,
            failed: None,
            unappliable: BTreeSet::new(),
        };
        let last_id = ids.last().copied();
        for id in ids {
            inner.load_segment(id, Some(id) == last_id, purged_index)?;
        }
        tracing::info!(
            entries = inner.index.len(),
            segments = inner.segments.len(),
            last_purged = ?inner.meta.last_purged.map(|l| l.index),
            "raft log opened"
        );
        let (hint, saved_committed) = CommitHint::open(&dir);
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            hint: Arc::new(hint),
            saved_committed,
        })
    }

    /// The commit hint, shared: its last index is the commit-index metric (`metrics`).
    pub fn commit_hint(&self) -> Arc<CommitHint> {
        self.hint.clone()
    }

    /// The vote in `dir/log/meta`, if that file is intact. Used before the store is
    /// quarantined: a node that forgot whom it voted for could vote twice in one term.
    pub fn readable_vote(dir: &Path) -> Option<Vote> {
        read_meta(&dir.join("log").join("meta")).ok()?.vote
    }

    /// Checks `dir/log/meta` alone: `Err(InvalidData)` if it is damaged.
    pub fn check_meta(dir: &Path) -> Result<(), io::Error> {
        read_meta(&dir.join("log").join("meta")).map(|_| ())
    }

    /// Writes a new, empty log under `dir/log` whose start is `last_purged` (the seeded
    /// snapshot's last log id) and whose vote is `vote`: what `storage::seed` leaves behind so
    /// openraft starts after the snapshot and campaigns in a term above every old one.
    /// Refuses a `log` directory that already holds anything.
    pub fn seed(dir: &Path, vote: Vote, last_purged: LogId) -> Result<(), io::Error> {
        let dir = dir.join("log");
        if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is not empty", dir.display()),
            ));
        }
        fsutil::create_dir_all_durable(&dir, &mut fs::DirBuilder::new())?;
        let meta = Meta {
            vote: Some(vote),
            committed: Some(last_purged),
            last_purged: Some(last_purged),
        };
        let payload = bincode::serialize(&meta).map_err(io::Error::other)?;
        let mut framed = Vec::with_capacity(payload.len() + 8);
        fsutil::frame(&payload, &mut framed);
        fsutil::write_atomic(&dir.join("meta"), &framed)
    }

    /// Writes `vote` (durably) into a store opened empty after a quarantine.
    pub fn restore_vote(&self, vote: Vote) -> Result<(), io::Error> {
        let mut inner = self.lock()?;
        inner.meta.vote = Some(vote);
        LogStore::save_meta(&inner)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, io::Error> {
        self.inner.lock().map_err(|_| poisoned())
    }

    /// Writes `records` (already framed) for `entries`, returning the file to fdatasync.
    /// Returns the file with the segment id and the size to record as synced once the
    /// fdatasync returns.
    fn write_batch(
        &self,
        entries: Vec<(Entry, usize)>,
        buf: Vec<u8>,
    ) -> Result<(Arc<File>, u64, u64), io::Error> {
        let mut inner = self.lock()?;
        inner.check_usable()?;
        let Some((first, _)) = entries.first() else {
            return Err(io::Error::other("empty append"));
        };
        let first_index = first.get_log_id().index;
        let need_new = match inner.segments.values().next_back() {
            None => true,
            Some(s) => s.size > 0 && s.size + buf.len() as u64 > inner.segment_bytes,
        };
        if need_new && let Err(e) = inner.new_segment(first_index) {
            inner.fail("new segment", &e);
            return Err(e);
        }
        let seg = inner
            .segments
            .values_mut()
            .next_back()
            .ok_or_else(|| io::Error::other("no active segment"))?;
        let seg_id = seg.id;
        let base = seg.size;
        // A partial write (ENOSPC half way) leaves bytes past `size`: `fail` cuts them off.
        seg.size += buf.len() as u64;
        if let Err(e) = (&*seg.writer).write_all(&buf) {
            inner.fail("write", &e);
            return Err(e);
        }
        let size = seg.size;
        let file = seg.writer.clone();
        let mut offset = base;
        for (entry, used) in entries {
            let log_id = *entry.get_log_id();
            inner.index.insert(
                log_id.index,
                Loc {
                    segment: seg_id,
                    offset,
                    len: used as u64,
                    log_id,
                },
            );
            offset += used as u64;
            inner.cache_insert(log_id.index, entry, used);
        }
        Ok((file, seg_id, size))
    }

    /// Runs after the batch's fdatasync: success moves the segment's synced size forward, a
    /// failure fails the store (the written bytes are cut back, never trusted).
    fn after_sync(&self, segment: u64, size: u64, res: io::Result<()>) -> io::Result<()> {
        let mut inner = self.lock()?;
        match res {
            Ok(()) => {
                inner.mark_synced(segment, size);
                Ok(())
            }
            Err(e) => {
                inner.fail("fdatasync", &e);
                Err(e)
            }
        }
    }

    /// Saves the meta file, failing the store if that fails (the old file stays in place:
    /// `write_atomic` only renames a fully synced temp file).
    fn save_meta_checked(inner: &mut Inner, op: &'static str) -> Result<(), io::Error> {
        inner.check_usable()?;
        LogStore::save_meta(inner).inspect_err(|e| inner.fail(op, e))
    }

    fn save_meta(inner: &Inner) -> Result<(), io::Error> {
        let payload = bincode::serialize(&inner.meta).map_err(io::Error::other)?;
        let mut framed = Vec::with_capacity(payload.len() + 8);
        fsutil::frame(&payload, &mut framed);
        fsutil::write_atomic(&inner.dir.join("meta"), &framed)
    }
}

/// Cuts the log back to `loc` on disk: later segments go, the segment holding `loc` is cut at
/// its offset, and both the file and the directory are synced.
fn truncate_files(inner: &mut Inner, loc: Loc) -> Result<(), io::Error> {
    let later: Vec<u64> = inner
        .segments
        .range(loc.segment + 1..)
        .map(|(id, _)| *id)
        .collect();
    for id in later {
        if let Some(seg) = inner.segments.remove(&id) {
            fs::remove_file(&seg.path)?;
        }
    }
    if let Some(seg) = inner.segments.get_mut(&loc.segment) {
        seg.writer.set_len(loc.offset)?;
        seg.size = loc.offset;
        // Durable only once the sync returns; until then a failure cuts back to the old
        // synced size, which is no larger than the file's length now.
        seg.synced = seg.synced.min(loc.offset);
        sync_all(&seg.writer)?;
    }
    fsutil::sync_dir(&inner.dir)
}

/// `File::sync_data`, with a test hook that makes the next calls fail.
fn sync_data(file: &File) -> io::Result<()> {
    #[cfg(test)]
    if test_faults::take() {
        return Err(io::Error::other("injected fdatasync failure"));
    }
    file.sync_data()
}

/// `File::sync_all`, with the same test hook as [`sync_data`].
fn sync_all(file: &File) -> io::Result<()> {
    #[cfg(test)]
    if test_faults::take() {
        return Err(io::Error::other("injected fsync failure"));
    }
    file.sync_all()
}

/// Failure injection for this module's unit tests (the chaos tests use a real FUSE
/// filesystem instead). A process-wide counter, since the sync runs on a blocking thread;
/// the one test that arms it holds `LOCK` so no other test of this module sees a failure.
#[cfg(test)]
mod test_faults {
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub static FAIL_NEXT_SYNCS: AtomicUsize = AtomicUsize::new(0);
    pub static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    pub fn take() -> bool {
        FAIL_NEXT_SYNCS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

impl Inner {
    /// Indexes one segment file into the index and cache. A torn record at the end of the last
    /// segment is an unacknowledged write cut by a crash and is cut off; anywhere else it is
    /// corruption.
    fn load_segment(
        &mut self,
        id: u64,
        is_last: bool,
        purged_index: Option<u64>,
    ) -> Result<(), io::Error> {
        let path = segment_path(&self.dir, id);
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let mut pos = 0usize;
        while pos < bytes.len() {
            // An empty frame is never written (every entry encodes to bytes), and zeros read
            // as one (length 0, CRC 0): treat it as a bad frame.
            let frame = fsutil::unframe(&bytes[pos..]).filter(|(p, _)| !p.is_empty());
            let Some((payload, used)) = frame else {
                let last_index = self.index.keys().next_back().copied();
                if is_last && classify_bad_frame(&bytes, pos, last_index) == BadFrame::TornTail {
                    tracing::warn!(segment = %path.display(), offset = pos, "cutting torn tail of the raft log (an unacknowledged write interrupted by a crash)");
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(pos as u64)?;
                    f.sync_all()?;
                    bytes.truncate(pos);
                    break;
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "raft log segment {} is corrupt at offset {pos}",
                        path.display()
                    ),
                ));
            };
            let entry: Entry = decode_entry(payload).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            let log_id = *entry.get_log_id();
            if purged_index.is_some_and(|p| log_id.index <= p) {
                pos += used;
                continue;
            }
            // Later records win. openraft truncates (durably) before it overwrites, so in normal
            // operation indexes only grow; a gap is reported but not fatal here, because
            // openraft checks log continuity itself when it reads.
            if let Some(prev) = self.index.keys().next_back().copied()
                && log_id.index > prev + 1
            {
                tracing::warn!(prev, next = log_id.index, segment = %path.display(), "gap in the raft log");
            }
            if matches!(&entry.payload, EntryPayload::Normal(req) if req.needs_newer_binary()) {
                self.unappliable.insert(log_id.index);
            } else {
                self.unappliable.remove(&log_id.index);
            }
            self.index.insert(
                log_id.index,
                Loc {
                    segment: id,
                    offset: pos as u64,
                    len: used as u64,
                    log_id,
                },
            );
            self.cache_insert(log_id.index, entry, used);
            pos += used;
        }
        let writer = OpenOptions::new().append(true).open(&path)?;
        let reader = File::open(&path)?;
        self.segments.insert(
            id,
            Segment {
                id,
                path,
                writer: Arc::new(writer),
                reader,
                size: bytes.len() as u64,
                synced: bytes.len() as u64,
            },
        );
        Ok(())
    }

    fn new_segment(&mut self, id: u64) -> Result<(), io::Error> {
        let path = segment_path(&self.dir, id);
        let writer = OpenOptions::new().create(true).append(true).open(&path)?;
        writer.sync_all()?;
        fsutil::sync_dir(&self.dir)?;
        let reader = File::open(&path)?;
        let size = writer.metadata()?.len();
        self.segments.insert(
            id,
            Segment {
                id,
                path,
                writer: Arc::new(writer),
                reader,
                size,
                synced: size,
            },
        );
        Ok(())
    }

    /// Refuses a mutation once a write or sync has failed (see the module doc).
    fn check_usable(&self) -> Result<(), io::Error> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "raft log store stopped after a failed write: {why}"
            ))),
        }
    }

    /// Marks the store failed after `e` and cuts every segment back to its last synced size
    /// (best effort: the file may be unwritable, and a restart cuts a torn tail anyway). The
    /// in-memory index past that point is dropped so no reader serves an entry that may not
    /// be on disk.
    fn fail(&mut self, op: &'static str, e: &io::Error) {
        if self.failed.is_none() {
            tracing::error!(op, error = %e, dir = %self.dir.display(), "raft log write failed; refusing further writes until the node restarts from disk");
            self.failed = Some(format!("{op}: {e}"));
        }
        let mut cut_from = None;
        for seg in self.segments.values_mut() {
            if seg.size > seg.synced {
                if let Err(err) = seg.writer.set_len(seg.synced) {
                    tracing::warn!(segment = %seg.path.display(), error = %err, "cannot cut the unsynced tail of a raft log segment; the restart will");
                }
                let first_lost = cut_from.get_or_insert((seg.id, seg.synced));
                if seg.id < first_lost.0 {
                    *first_lost = (seg.id, seg.synced);
                }
                seg.size = seg.synced;
            }
        }
        if let Some((seg_id, offset)) = cut_from {
            let lost: Vec<u64> = self
                .index
                .iter()
                .filter(|(_, l)| l.segment > seg_id || (l.segment == seg_id && l.offset >= offset))
                .map(|(i, _)| *i)
                .collect();
            for i in lost {
                self.index.remove(&i);
                if let Some((_, s)) = self.cache.remove(&i) {
                    self.cache_bytes -= s;
                }
            }
        }
    }

    /// Records that `segment` is durable up to `size` (a sync of that file returned).
    fn mark_synced(&mut self, segment: u64, size: u64) {
        if let Some(seg) = self.segments.get_mut(&segment) {
            seg.synced = seg.synced.max(size.min(seg.size));
        }
    }

    fn cache_insert(&mut self, index: u64, entry: Entry, size: usize) {
        if let Some((_, old)) = self.cache.insert(index, (entry, size)) {
            self.cache_bytes -= old;
        }
        self.cache_bytes += size;
        while self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_first() {
                Some((_, (_, s))) => self.cache_bytes -= s,
                None => break,
            }
        }
    }

    fn read_entry(&mut self, index: u64) -> Result<Option<Entry>, io::Error> {
        if let Some((e, _)) = self.cache.get(&index) {
            return Ok(Some(e.clone()));
        }
        let Some(loc) = self.index.get(&index).copied() else {
            return Ok(None);
        };
        let seg = self
            .segments
            .get_mut(&loc.segment)
            .ok_or_else(|| io::Error::other(format!("segment {} missing", loc.segment)))?;
        let mut buf = vec![0u8; loc.len as usize];
        seg.reader.seek(SeekFrom::Start(loc.offset))?;
        seg.reader.read_exact(&mut buf)?;
        let (payload, _) = fsutil::unframe(&buf).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("entry {index} is corrupt on disk"),
            )
        })?;
        let entry: Entry =
            decode_entry(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some(entry))
    }
}

/// What a frame that fails its length or CRC check at the end of the newest segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadFrame {
    /// A write cut short by a crash: never acknowledged (an append is acknowledged only after
    /// its fdatasync), so cutting it off loses nothing anyone was promised.
    TornTail,
    /// Damage to bytes that were once durable: cutting here could drop acknowledged entries.
    Corrupt,
}

/// Tells a torn tail from corruption for the bad frame at `pos` of a segment (`bytes`), whose
/// last good entry before it has index `last_index`.
///
/// A crash tears only the *last* write, and keeps a prefix of it (or, on some filesystems,
/// zeros where the data did not reach the disk): the bad frame is then incomplete (its header
/// or payload runs past the end of the file) or all zeros, and no valid frame follows it. A
/// frame that is complete but fails its CRC, or any valid frame after the bad one, means bytes
/// that were durable changed: corruption. When in doubt this says `Corrupt`, which costs a
/// resync from peers; the other mistake would silently drop acknowledged entries.
pub(crate) fn classify_bad_frame(bytes: &[u8], pos: usize, last_index: Option<u64>) -> BadFrame {
    let rest = bytes.get(pos..).unwrap_or_default();
    if valid_frame_after(bytes, pos, last_index) {
        return BadFrame::Corrupt;
    }
    if rest.iter().all(|b| *b == 0) {
        return BadFrame::TornTail;
    }
    let Some(header) = rest.get(..8) else {
        return BadFrame::TornTail;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if 8usize.saturating_add(len) > rest.len() {
        BadFrame::TornTail
    } else {
        BadFrame::Corrupt
    }
}

/// Whether a valid frame holding a later entry than `last_index` starts anywhere after `pos`.
/// Cheap filters first (a plausible length, a log id that reads and comes later) so that a
/// scan of a large segment computes few CRCs.
fn valid_frame_after(bytes: &[u8], pos: usize, last_index: Option<u64>) -> bool {
    let mut off = pos + 1;
    while off + 8 < bytes.len() {
        let h = &bytes[off..off + 8];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let end = off + 8 + len;
        if len > 0 && end <= bytes.len() {
            let payload = &bytes[off + 8..end];
            let later = match bincode::deserialize::<LogId>(payload) {
                Ok(id) => last_index.is_none_or(|l| id.index > l),
                Err(_) => false,
            };
            if later && fsutil::unframe(&bytes[off..]).is_some() && decode_entry(payload).is_ok() {
                return true;
            }
        }
        off += 1;
    }
    false
}

/// The leading fields of an encoded [`Entry`] whose payload is a `Request`: its log id, the
/// `EntryPayload` variant and the request's `version` and `ts_ms`, which come before its
/// commands (bincode encodes by position, so the prefix reads the same for every version).
#[derive(Deserialize)]
struct EntryHead {
    log_id: LogId,
    payload: PayloadHead,
}

/// `EntryPayload`'s first two variants, in its order.
#[derive(Deserialize)]
enum PayloadHead {
    Blank,
    Normal(RequestHead),
}

#[derive(Deserialize)]
struct RequestHead {
    version: u16,
    ts_ms: u64,
}

/// Decodes one stored entry. An entry whose commands this binary cannot decode (a newer
/// binary's command: bincode knows variants only by position) becomes a placeholder that
/// keeps its log id, version and time and says why in `Request::undecodable`: the log stays
/// readable (the node starts, votes and reports why it stopped), while the state machine
/// refuses to apply the placeholder and it can never be encoded again. Anything else that
/// does not decode is corruption, as before.
pub(crate) fn decode_entry(payload: &[u8]) -> Result<Entry, bincode::Error> {
    let full = match bincode::deserialize::<Entry>(payload) {
        Ok(entry) => return Ok(entry),
        Err(e) => e,
    };
    // `bincode::deserialize` accepts trailing bytes: the head reads just the prefix.
    match bincode::deserialize::<EntryHead>(payload) {
        Ok(EntryHead {
            log_id,
            payload: PayloadHead::Normal(head),
        }) => {
            let mut req = Request::new(head.version, head.ts_ms, Vec::new().into());
            req.undecodable = Some(full.to_string().into());
            Ok(Entry {
                log_id,
                payload: EntryPayload::Normal(req),
            })
        }
        _ => Err(full),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut inner = self
            .lock()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let indexes: Vec<u64> = inner.index.range(range).map(|(i, _)| *i).collect();
        let mut out = Vec::with_capacity(indexes.len());
        for i in indexes {
            match inner.read_entry(i) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(e) => {
                    return Err(io_err(
                        ErrorSubject::Log(inner.index[&i].log_id),
                        ErrorVerb::Read,
                        e,
                    ));
                }
            }
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self
            .lock()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_purged_log_id = inner.meta.last_purged;
        let last_log_id = inner
            .index
            .values()
            .next_back()
            .map(|l| l.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let this = self.clone();
        let vote = *vote;
        // A vote must be durable before we answer the candidate: two votes in one term after a
        // crash would allow two leaders.
        tokio::task::spawn_blocking(move || {
            let mut inner = this.lock()?;
            let before = inner.meta.vote.replace(vote);
            // On failure the vote in memory stays what is on disk.
            LogStore::save_meta_checked(&mut inner, "save vote").inspect_err(|_| {
                inner.meta.vote = before;
            })
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?
        .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.hint.save(c);
        }
        Ok(())
    }

    /// The saved hint, if the local log proves it: the log holds that exact id, or purged past
    /// it (the snapshot then covers it). openraft re-applies the log up to this id at start.
    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let Some(saved) = self.saved_committed else {
            return Ok(None);
        };
        let inner = self
            .lock()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let held = inner.index.get(&saved.index).map(|l| l.log_id);
        let purged_past = inner
            .meta
            .last_purged
            .is_some_and(|p| p.index >= saved.index);
        if held != Some(saved) && !(held.is_none() && purged_past) {
            tracing::info!(hint = ?saved, held = ?held, "commit hint not proven by the local log; ignoring it");
            return Ok(None);
        }
        // Stop short of an entry this binary must not apply: the state machine stops there
        // when the leader commits it, with the node up and saying why (`version_stop`).
        match inner.unappliable.range(..=saved.index).next() {
            None => Ok(Some(saved)),
            Some(&stop) => Ok(stop
                .checked_sub(1)
                .and_then(|i| inner.index.get(&i))
                .map(|l| l.log_id)),
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let inner = self
            .lock()
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))?;
        Ok(inner.meta.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut buf = Vec::new();
        let mut items = Vec::new();
        for entry in entries {
            let payload = bincode::serialize(&entry)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            let before = buf.len();
            fsutil::frame(&payload, &mut buf);
            items.push((entry, buf.len() - before));
        }
        if items.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let this = self.clone();
        // Write under the lock, fdatasync outside it: readers (replication) never wait on the disk.
        let res = tokio::task::spawn_blocking(move || -> Result<(), io::Error> {
            let started = std::time::Instant::now();
            let (file, segment, size) = this.write_batch(items, buf)?;
            let synced = crate::metrics::observe_fsync(|| sync_data(&file));
            crate::metrics::observe_append(started.elapsed());
            this.after_sync(segment, size, synced)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(io::Error::other(msg)));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || -> Result<(), io::Error> {
            let mut inner = this.lock()?;
            inner.check_usable()?;
            let Some(loc) = inner.index.get(&log_id.index).copied() else {
                return Ok(());
            };
            let res = truncate_files(&mut inner, loc);
            // Whatever happened on disk, entries from `log_id` on are no longer served: after
            // a failure the restart re-reads the files and openraft truncates again.
            let _ = inner.index.split_off(&log_id.index);
            let removed = inner.cache.split_off(&log_id.index);
            inner.cache_bytes -= removed.values().map(|(_, s)| *s).sum::<usize>();
            res.inspect_err(|e| inner.fail("truncate", e))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || -> Result<(), io::Error> {
            let mut inner = this.lock()?;
            if inner
                .meta
                .last_purged
                .is_some_and(|p| p.index >= log_id.index)
            {
                return Ok(());
            }
            // The marker is durable before any file goes, so a crash in between only leaves
            // entries that open() skips.
            let before = inner.meta.last_purged.replace(log_id);
            if let Err(e) = LogStore::save_meta_checked(&mut inner, "purge") {
                inner.meta.last_purged = before;
                return Err(e);
            }
            let keep = inner.index.split_off(&(log_id.index + 1));
            inner.index = keep;
            let keep = inner.cache.split_off(&(log_id.index + 1));
            inner.cache = keep;
            inner.cache_bytes = inner.cache.values().map(|(_, s)| *s).sum();
            // A segment can go when the next one starts at or before the first live index.
            let ids: Vec<u64> = inner.segments.keys().copied().collect();
            let mut removed_any = false;
            for pair in ids.windows(2) {
                if pair[1] <= log_id.index + 1
                    && let Some(seg) = inner.segments.remove(&pair[0])
                {
                    fs::remove_file(&seg.path)?;
                    removed_any = true;
                }
            }
            if removed_any {
                fsutil::sync_dir(&inner.dir)?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::Ordering;

    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, LogId};

    use super::*;

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn segment_len(dir: &Path) -> u64 {
        let seg = fs::read_dir(dir.join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        fs::metadata(seg).unwrap().len()
    }

    /// A failed fdatasync is not retried: the batch is cut off the file, the store refuses
    /// every later append, truncate and vote, and a reopen (the in-process restart) sees
    /// exactly what was synced before.
    #[tokio::test]
    async fn failed_fsync_cuts_back_and_stops_the_store() {
        let _only_me = test_faults::LOCK.lock().await;
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=3).map(blank)).await.unwrap();
        let synced = segment_len(dir.path());
        test_faults::FAIL_NEXT_SYNCS.store(1, Ordering::SeqCst);
        assert!(log.blocking_append([blank(4)]).await.is_err());
        assert_eq!(segment_len(dir.path()), synced, "unsynced batch cut back");
        // The failure is sticky even though the next sync would work.
        assert!(log.blocking_append([blank(4)]).await.is_err());
        assert!(log.save_vote(&Vote::new(5, 1)).await.is_err());
        let cut = LogId::new(CommittedLeaderId::new(1, 1), 2);
        assert!(log.truncate(cut).await.is_err());
        // Nothing past the synced size is served.
        let served = log.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(served.len(), 3);
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), None);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
        log.blocking_append([blank(4)]).await.unwrap();
    }

    /// A failed sync inside truncate stops the store too, and the vote it refused to save is
    /// not reported as saved.
    #[tokio::test]
    async fn failed_truncate_sync_stops_the_store() {
        let _only_me = test_faults::LOCK.lock().await;
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=5).map(blank)).await.unwrap();
        test_faults::FAIL_NEXT_SYNCS.store(1, Ordering::SeqCst);
        let cut = LogId::new(CommittedLeaderId::new(1, 1), 4);
        assert!(log.truncate(cut).await.is_err());
        assert!(log.blocking_append([blank(4)]).await.is_err());
        assert!(log.save_vote(&Vote::new(2, 1)).await.is_err());
        assert_eq!(log.read_vote().await.unwrap(), None);
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        let last = log.get_log_state().await.unwrap().last_log_id;
        // Either the cut reached the disk or not; nothing past index 5 and nothing torn.
        assert!(
            last.is_some_and(|l| l.index == 3 || l.index == 5),
            "{last:?}"
        );
    }
}
