//! The volume: every filesystem operation, done on the backing directory at once and recorded
//! in the undo journal; fsync and fsyncdir decide what becomes durable.
//!
//! It owns the inode table, the open handles, the journal and the fault switches (the faults
//! themselves and the power cut are in `faults.rs`); the FUSE adapter (`fs.rs`) only translates
//! requests into calls here. It never fsyncs the backing directory: the backing disk is not the
//! simulated one, durability is what the journal says.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::FsyncFault;
use super::inodes::{Inodes, ROOT, STASH, STASH_NAME};
use super::undo::{DirChange, DirOp, Entry, FileJournal};

pub(super) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// An open file or directory.
#[derive(Debug)]
enum Handle {
    File {
        file: File,
        backing: u64,
        append: bool,
        /// O_SYNC / O_DSYNC: every write is durable when it returns.
        sync: bool,
    },
    /// A directory listing, taken at `opendir` (so offsets stay valid while it changes).
    Dir {
        entries: Vec<(u64, fuser::FileType, OsString)>,
    },
}

/// A directory entry as `readdir` returns it.
pub(crate) struct DirEntry {
    pub(crate) ino: u64,
    pub(crate) kind: fuser::FileType,
    pub(crate) name: OsString,
}

/// Faults switched on by the test.
#[derive(Debug, Default)]
pub(super) struct Faults {
    pub(super) disk_full: bool,
    pub(super) free_bytes: Option<u64>,
    pub(super) fsync: Vec<(PathBuf, FsyncFault)>,
}

#[derive(Debug)]
pub(crate) struct Volume {
    pub(super) root: PathBuf,
    pub(super) inodes: Inodes,
    handles: HashMap<u64, Handle>,
    pub(super) next_fh: u64,
    pub(super) files: HashMap<u64, FileJournal>,
    pub(super) dir_ops: Vec<DirOp>,
    pub(super) seq: u64,
    pub(super) stash_seq: u64,
    pub(super) faults: Faults,
}

pub(crate) fn kind_of(meta: &Metadata) -> fuser::FileType {
    fuser::FileType::from_std(meta.file_type()).unwrap_or(fuser::FileType::RegularFile)
}

impl Volume {
    /// A volume over `root` (which must exist); everything in it now counts as durable.
    pub(crate) fn new(root: &Path) -> io::Result<Self> {
        let meta = fs::metadata(root)?;
        if !meta.is_dir() {
            return Err(errno(libc::ENOTDIR));
        }
        let stash = root.join(STASH_NAME);
        if stash.exists() {
            fs::remove_dir_all(&stash)?;
        }
        fs::create_dir(&stash)?;
        Ok(Self {
            root: root.to_path_buf(),
            inodes: Inodes::new(root, meta.ino()),
            handles: HashMap::new(),
            next_fh: 1,
            files: HashMap::new(),
            dir_ops: Vec::new(),
            seq: 0,
            stash_seq: 0,
            faults: Faults::default(),
        })
    }

    pub(super) fn path(&self, ino: u64) -> io::Result<PathBuf> {
        self.inodes.path(ino).ok_or_else(|| errno(libc::ENOENT))
    }

    pub(super) fn child(&self, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        if parent == ROOT && name == STASH_NAME {
            // The stash is not part of the filesystem the node sees.
            return Err(errno(libc::EPERM));
        }
        self.inodes
            .child_path(parent, name)
            .ok_or_else(|| errno(libc::ENOENT))
    }

    fn new_fh(&mut self, handle: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, handle);
        fh
    }

    fn stash_name(&mut self) -> OsString {
        self.stash_seq += 1;
        OsString::from(format!("{}", self.stash_seq))
    }

    pub(super) fn stash_path(&self, name: &OsStr) -> PathBuf {
        self.inodes.stash_dir().join(name)
    }

    // ----- lookups and attributes ---------------------------------------------------------

    pub(crate) fn lookup(&mut self, parent: u64, name: &OsStr) -> io::Result<(u64, Metadata)> {
        let path = self.child(parent, name).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                errno(libc::ENOENT)
            } else {
                e
            }
        })?;
        let meta = fs::symlink_metadata(&path)?;
        let ino = self.inodes.register(parent, name, meta.ino());
        Ok((ino, meta))
    }

    pub(crate) fn getattr(&self, ino: u64, fh: Option<u64>) -> io::Result<Metadata> {
        if let Some(Handle::File { file, .. }) = fh.and_then(|fh| self.handles.get(&fh)) {
            return file.metadata();
        }
        fs::symlink_metadata(self.path(ino)?)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setattr(
        &mut self,
        ino: u64,
        fh: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> io::Result<Metadata> {
        let path = self.path(ino)?;
        if let Some(mode) = mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid)?;
        }
        if let Some(size) = size {
            let own = match fh.and_then(|fh| self.handles.get(&fh)) {
                Some(Handle::File { file, .. }) => file.try_clone()?,
                _ => OpenOptions::new().read(true).write(true).open(&path)?,
            };
            self.truncate(&own, size)?;
        }
        if atime.is_some() || mtime.is_some() {
            let mut times = FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(t);
            }
            if let Some(t) = mtime {
                times = times.set_modified(t);
            }
            File::open(&path)?.set_times(times)?;
        }
        self.getattr(ino, fh)
    }

    // ----- file data ---------------------------------------------------------------------

    fn journal(&mut self, backing: u64, cur_len: u64) -> &mut FileJournal {
        self.files
            .entry(backing)
            .or_insert_with(|| FileJournal::new(cur_len))
    }

    fn truncate(&mut self, file: &File, size: u64) -> io::Result<()> {
        let meta = file.metadata()?;
        let cur = meta.len();
        if size > cur && self.faults.disk_full {
            return Err(errno(libc::ENOSPC));
        }
        let j = self.journal(meta.ino(), cur);
        if size < cur {
            j.save_before(file, size, cur - size, cur)?;
        }
        file.set_len(size)
    }

    fn open_backing(path: &Path, flags: i32) -> io::Result<File> {
        // Always readable: the journal reads what a write is about to overwrite.
        let mut opts = OpenOptions::new();
        opts.read(true);
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            opts.write(true);
        }
        opts.open(path)
    }

    fn file_handle(&mut self, file: File, flags: i32) -> io::Result<u64> {
        let backing = file.metadata()?.ino();
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            self.truncate(&file, 0)?;
        }
        Ok(self.new_fh(Handle::File {
            file,
            backing,
            append: flags & libc::O_APPEND != 0,
            sync: flags & libc::O_DSYNC != 0,
        }))
    }

    pub(crate) fn open(&mut self, ino: u64, flags: i32) -> io::Result<u64> {
        let path = self.path(ino)?;
        let file = Self::open_backing(&path, flags)?;
        self.file_handle(file, flags)
    }

    pub(crate) fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> io::Result<(u64, Metadata, u64)> {
        let path = self.child(parent, name)?;
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if flags & libc::O_EXCL != 0 {
                return Err(errno(libc::EEXIST));
            }
            let ino = self.inodes.register(parent, name, meta.ino());
            let fh = self.open(ino, flags)?;
            return Ok((ino, self.getattr(ino, Some(fh))?, fh));
        }
        if self.faults.disk_full {
            return Err(errno(libc::ENOSPC));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&path)?;
        file.set_permissions(fs::Permissions::from_mode(mode & !umask & 0o7777))?;
        let meta = file.metadata()?;
        let ino = self.inodes.register(parent, name, meta.ino());
        self.dir_ops.push(DirOp {
            pending: vec![parent],
            change: DirChange::Created { ino },
        });
        let fh = self.file_handle(file, flags & !libc::O_TRUNC)?;
        Ok((ino, meta, fh))
    }

    pub(crate) fn read(&self, fh: u64, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let Some(Handle::File { file, .. }) = self.handles.get(&fh) else {
            return Err(errno(libc::EBADF));
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    pub(crate) fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> io::Result<u32> {
        if self.faults.disk_full {
            return Err(errno(libc::ENOSPC));
        }
        let Some(Handle::File {
            file,
            backing,
            append,
            sync,
            ..
        }) = self.handles.get(&fh)
        else {
            return Err(errno(libc::EBADF));
        };
        let (file, backing, append, sync) = (file.try_clone()?, *backing, *append, *sync);
        let cur = file.metadata()?.len();
        let offset = if append { cur } else { offset };
        self.seq += 1;
        let seq = self.seq;
        let len = data.len() as u64;
        let j = self.journal(backing, cur);
        j.save_before(&file, offset, len, cur)?;
        file.write_all_at(data, offset)?;
        j.pending_bytes += len;
        j.last_write = Some((seq, offset, len));
        if sync {
            self.files.remove(&backing);
        }
        u32::try_from(data.len()).map_err(|_| errno(libc::EFBIG))
    }

    pub(crate) fn release(&mut self, fh: u64) {
        self.handles.remove(&fh);
    }

    /// Does an fsync fault rule match `ino`? (`Next` rules fire once.)
    fn fsync_fault(&mut self, ino: u64) -> bool {
        let Some(rel) = self.inodes.rel_path(ino) else {
            return false;
        };
        let Some(i) = self
            .faults
            .fsync
            .iter()
            .position(|(prefix, _)| rel.starts_with(prefix))
        else {
            return false;
        };
        if self.faults.fsync[i].1 == FsyncFault::Next {
            self.faults.fsync.remove(i);
        }
        eprintln!("faultfs: fsync of {} fails with EIO", rel.display());
        true
    }

    /// fsync/fdatasync of a file: its data and length become durable (both: fdatasync also
    /// syncs the length, the metadata needed to read the data back). Its directory entry
    /// does not (that takes an fsync of the directory).
    pub(crate) fn fsync(&mut self, ino: u64, fh: u64) -> io::Result<()> {
        if self.fsync_fault(ino) {
            // The data stays non-durable: Linux may drop dirty pages after a failed fsync.
            return Err(errno(libc::EIO));
        }
        let backing = match self.handles.get(&fh) {
            Some(Handle::File { backing, .. }) => Some(*backing),
            _ => self.inodes.backing_ino(ino),
        };
        if let Some(b) = backing {
            self.files.remove(&b);
        }
        Ok(())
    }

    pub(crate) fn fallocate(
        &mut self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> io::Result<()> {
        if mode != 0 {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let Some(Handle::File { file, .. }) = self.handles.get(&fh) else {
            return Err(errno(libc::EBADF));
        };
        let file = file.try_clone()?;
        let end = offset.saturating_add(length);
        if end > file.metadata()?.len() {
            // Growth only (mode 0 never changes existing bytes): an unsynced size change.
            self.truncate(&file, end)?;
        }
        Ok(())
    }

    // ----- directories -------------------------------------------------------------------

    pub(crate) fn opendir(&mut self, ino: u64) -> io::Result<u64> {
        let path = self.path(ino)?;
        // ".." only needs a plausible inode: the kernel resolves ".." itself.
        let mut entries = vec![
            (ino, fuser::FileType::Directory, OsString::from(".")),
            (ROOT, fuser::FileType::Directory, OsString::from("..")),
        ];
        for entry in fs::read_dir(&path)? {
            let entry = entry?;
            let name = entry.file_name();
            if ino == ROOT && name == STASH_NAME {
                continue;
            }
            let meta = entry.metadata()?;
            let child = self.inodes.register(ino, &name, meta.ino());
            entries.push((child, kind_of(&meta), name));
        }
        Ok(self.new_fh(Handle::Dir { entries }))
    }

    pub(crate) fn readdir(&self, fh: u64, offset: u64) -> io::Result<Vec<DirEntry>> {
        let Some(Handle::Dir { entries }) = self.handles.get(&fh) else {
            return Err(errno(libc::EBADF));
        };
        Ok(entries
            .iter()
            .skip(offset as usize)
            .map(|(ino, kind, name)| DirEntry {
                ino: *ino,
                kind: *kind,
                name: name.clone(),
            })
            .collect())
    }

    /// fsync of a directory: every entry operation in it becomes durable (a rename once both
    /// of its directories have been fsynced).
    pub(crate) fn fsyncdir(&mut self, ino: u64) -> io::Result<()> {
        if self.fsync_fault(ino) {
            return Err(errno(libc::EIO));
        }
        self.commit_dir(ino);
        Ok(())
    }

    /// Every operation in directory `ino` is durable now. When that removes a directory for
    /// good, what was pending inside it is durable too (it can never come back).
    fn commit_dir(&mut self, ino: u64) {
        let mut work = vec![ino];
        while let Some(dir) = work.pop() {
            let ops = std::mem::take(&mut self.dir_ops);
            for mut op in ops {
                op.pending.retain(|d| *d != dir);
                if op.pending.is_empty() {
                    work.extend(self.finalize(op.change));
                } else {
                    self.dir_ops.push(op);
                }
            }
        }
    }

    /// A directory operation became durable: what it removed is gone for good. Returns the
    /// inode of a directory that went for good.
    fn finalize(&mut self, change: DirChange) -> Option<u64> {
        let gone = match change {
            DirChange::Created { .. } => None,
            DirChange::Removed { ino, stash, .. } => Some((ino, stash)),
            DirChange::Renamed { victim, .. } => victim,
        };
        if let Some((ino, stash)) = gone {
            let path = self.stash_path(&stash);
            let mut was_dir = false;
            let r = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    was_dir = true;
                    fs::remove_dir_all(&path)
                }
                Ok(_) => fs::remove_file(&path),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                eprintln!("faultfs: dropping {}: {e}", path.display());
            }
            if let Some(b) = self.inodes.backing_ino(ino) {
                self.files.remove(&b);
            }
            self.inodes.remove(ino);
            return was_dir.then_some(ino);
        }
        None
    }

    pub(crate) fn mkdir(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<(u64, Metadata)> {
        if self.faults.disk_full {
            return Err(errno(libc::ENOSPC));
        }
        let path = self.child(parent, name)?;
        fs::create_dir(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & !umask & 0o7777))?;
        let meta = fs::symlink_metadata(&path)?;
        let ino = self.inodes.register(parent, name, meta.ino());
        self.dir_ops.push(DirOp {
            pending: vec![parent],
            change: DirChange::Created { ino },
        });
        Ok((ino, meta))
    }

    /// unlink and rmdir: the victim moves to the stash until the removal is durable.
    pub(crate) fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> io::Result<()> {
        let path = self.child(parent, name)?;
        let meta = fs::symlink_metadata(&path)?;
        if dir {
            if !meta.is_dir() {
                return Err(errno(libc::ENOTDIR));
            }
            if fs::read_dir(&path)?.next().is_some() {
                return Err(errno(libc::ENOTEMPTY));
            }
        } else if meta.is_dir() {
            return Err(errno(libc::EISDIR));
        }
        let ino = self.inodes.register(parent, name, meta.ino());
        let stash = self.stash_name();
        fs::rename(&path, self.stash_path(&stash))?;
        self.inodes.relocate(ino, STASH, &stash);
        self.dir_ops.push(DirOp {
            pending: vec![parent],
            change: DirChange::Removed {
                at: Entry {
                    parent,
                    name: name.to_os_string(),
                },
                ino,
                stash,
            },
        });
        Ok(())
    }

    pub(crate) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        if flags & !(libc::RENAME_NOREPLACE) != 0 {
            // RENAME_EXCHANGE / RENAME_WHITEOUT are not modelled; the node uses neither.
            return Err(errno(libc::EINVAL));
        }
        let from = self.child(parent, name)?;
        let to = self.child(newparent, newname)?;
        let meta = fs::symlink_metadata(&from)?;
        let ino = self.inodes.register(parent, name, meta.ino());
        let mut victim = None;
        if let Ok(vmeta) = fs::symlink_metadata(&to) {
            if vmeta.ino() == meta.ino() {
                return Ok(());
            }
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(errno(libc::EEXIST));
            }
            match (meta.is_dir(), vmeta.is_dir()) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if fs::read_dir(&to)?.next().is_some() => {
                    return Err(errno(libc::ENOTEMPTY));
                }
                _ => {}
            }
            let vino = self.inodes.register(newparent, newname, vmeta.ino());
            let stash = self.stash_name();
            fs::rename(&to, self.stash_path(&stash))?;
            self.inodes.relocate(vino, STASH, &stash);
            victim = Some((vino, stash));
        }
        if let Err(e) = fs::rename(&from, &to) {
            if let Some((vino, stash)) = &victim {
                // Put the target back: the rename did not happen.
                if fs::rename(self.stash_path(stash), &to).is_ok() {
                    self.inodes.relocate(*vino, newparent, newname);
                }
            }
            return Err(e);
        }
        self.inodes.relocate(ino, newparent, newname);
        let mut pending = vec![parent];
        if newparent != parent {
            pending.push(newparent);
        }
        self.dir_ops.push(DirOp {
            pending,
            change: DirChange::Renamed {
                from: Entry {
                    parent,
                    name: name.to_os_string(),
                },
                to: Entry {
                    parent: newparent,
                    name: newname.to_os_string(),
                },
                ino,
                victim,
            },
        });
        Ok(())
    }

    /// (total, free, available) bytes as `statfs` reports them.
    pub(crate) fn statfs(&self) -> io::Result<(u64, u64, u64)> {
        let stats = fs2::statvfs(&self.root)?;
        let total = stats.total_space();
        match self.faults.free_bytes {
            Some(free) => Ok((total.max(free), free, free)),
            None => Ok((total, stats.free_space(), stats.available_space())),
        }
    }
}
