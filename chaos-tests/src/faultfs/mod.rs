//! A fault-injecting FUSE filesystem for power-loss and disk-fault tests ([`FaultFs`]).
//!
//! Every operation passes straight through to a backing directory, so reads are always what
//! the process wrote. Alongside, an undo journal records what is **not durable yet**:
//! - file data and length written since the last `fsync`/`fdatasync` of that file (or since
//!   it was created); `O_SYNC`/`O_DSYNC` writes are durable when they return;
//! - creates, mkdirs, unlinks, rmdirs and renames in a directory since the last fsync of that
//!   directory (a rename needs its source and its destination directory fsynced). A file
//!   whose directory entry is not durable disappears at a cut even if its data was fsynced
//!   (strict POSIX, which is what the log store assumes).
//!
//! [`FaultFs::power_cut`] (run after SIGKILLing the process that uses the mount) takes all of
//! that back, newest first, and can then tear the last unsynced write ([`Tear::Seeded`]: the
//! file keeps its unsynced bytes up to a seeded point inside its last write). The other faults:
//! ENOSPC ([`FaultFs::set_disk_full`]), a reported free space ([`FaultFs::set_free_bytes`]),
//! EIO from fsync ([`FaultFs::fail_fsync`]; the data stays non-durable, as Linux may drop dirty
//! pages after a failed fsync) and a flipped bit in durable data ([`FaultFs::flip_bit`]).
//!
//! Not modelled: reordering of writes that were synced, sector-level tearing of anything but
//! the last write, metadata other than names and sizes (modes, owners and times change at
//! once and survive a cut), hard links and symlinks (refused), `RENAME_EXCHANGE` (EINVAL),
//! fallocate modes other than plain growth (EOPNOTSUPP), mmap (files are direct I/O).
//!
//! The mount has zero entry/attribute TTLs and direct I/O, so the kernel never serves stale
//! pages or sizes after a cut or a flip. Mounting needs `/dev/fuse`, `fusermount3` (Debian's
//! `fuse3`) and root ([`available`]); tests call [`require`] and skip without them unless
//! `CHAOS_REQUIRE_FAULTFS=1`.

mod faults;
mod fs;
mod inodes;
mod undo;
mod volume;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use fs::{FaultFsAdapter, lock};
use volume::Volume;

/// `CHAOS_REQUIRE_FAULTFS=1`: a missing FUSE set-up is a failure, not a skip (`.ci/run`).
pub const REQUIRE_ENV: &str = "CHAOS_REQUIRE_FAULTFS";
/// The `fsname` the mounts show in `/proc/mounts`.
pub const FS_NAME: &str = "conclave-faultfs";

/// What a power cut does to the last unsynced write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// Nothing of it survives.
    None,
    /// A seeded-random prefix of it survives (with the file's unsynced bytes before it).
    Seeded(u64),
}

/// Which bit [`FaultFs::flip_bit`] flips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlipAt {
    /// Bit `bit` (0..=7) of the byte at `offset` (inside the durable data).
    Offset { offset: u64, bit: u8 },
    /// A seeded-random bit of the durable data.
    Seeded(u64),
}

/// The bit that was flipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flip {
    /// Relative to the mount root.
    pub path: PathBuf,
    pub offset: u64,
    pub bit: u8,
}

/// What a power cut took back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose data or length went back to their last fsync.
    pub files_reverted: usize,
    /// Directory operations undone.
    pub dir_ops_undone: usize,
    /// With [`Tear::Seeded`]: the torn file (relative to the mount root) and how many bytes of
    /// its last write it kept.
    pub torn: Option<(PathBuf, u64)>,
}

/// When fsync fails with EIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncFault {
    /// The next fsync of a matching path only.
    Next,
    /// Every fsync of a matching path until [`FaultFs::clear_faults`].
    Always,
}

/// A mounted fault-injecting filesystem. Dropping it unmounts (`fusermount3 -u -z`).
pub struct FaultFs {
    volume: Arc<Mutex<Volume>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl std::fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultFs")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl FaultFs {
    /// Mounts a fault filesystem over `backing` (an existing directory, whose contents count
    /// as durable) at `mountpoint` (an existing directory).
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<FaultFs> {
        available().map_err(anyhow::Error::msg)?;
        let volume = Volume::new(backing)
            .with_context(|| format!("faultfs: open backing dir {}", backing.display()))?;
        let volume = Arc::new(Mutex::new(volume));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName(FS_NAME.to_owned()),
            fuser::MountOption::Subtype("faultfs".to_owned()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::RW,
        ];
        config.n_threads = Some(1);
        let adapter = FaultFsAdapter {
            volume: Arc::clone(&volume),
        };
        let session = fuser::spawn_mount2(adapter, mountpoint, &config).with_context(|| {
            format!(
                "faultfs: mount {} over {}",
                mountpoint.display(),
                backing.display()
            )
        })?;
        Ok(FaultFs {
            volume,
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops everything not durable (see the module doc). Kill the process using the mount
    /// first (SIGKILL), so nothing reaches the filesystem after the cut.
    pub fn power_cut(&self, tear: Tear) -> CutReport {
        let report = lock(&self.volume).power_cut(tear);
        eprintln!(
            "faultfs: power cut on {}: {report:?}",
            self.mountpoint.display()
        );
        report
    }

    /// Flips one bit of `rel`'s durable data (what a cut would leave), in place.
    pub fn flip_bit(&self, rel: &Path, at: FlipAt) -> Result<Flip> {
        let flip = lock(&self.volume)
            .flip_bit(rel, at)
            .with_context(|| format!("faultfs: flip a bit of {}", rel.display()))?;
        eprintln!("faultfs: flipped {flip:?}");
        Ok(flip)
    }

    /// ENOSPC on writes, creates, mkdirs and growth from now on (or not).
    pub fn set_disk_full(&self, full: bool) {
        lock(&self.volume).set_disk_full(full);
    }

    /// What `statfs` reports as free and available (`None`: the backing filesystem's).
    pub fn set_free_bytes(&self, free: Option<u64>) {
        lock(&self.volume).set_free_bytes(free);
    }

    /// EIO from fsync/fdatasync of files (and fsync of directories) whose path relative to
    /// the mount root starts with `rel_prefix` (component-wise; `""` matches everything).
    pub fn fail_fsync(&self, rel_prefix: &Path, mode: FsyncFault) {
        lock(&self.volume).fail_fsync(rel_prefix, mode);
    }

    /// Disk full off, fsync faults off, free space from the backing filesystem.
    pub fn clear_faults(&self) {
        lock(&self.volume).clear_faults();
    }

    /// Bytes written through the mount that are not durable yet.
    pub fn unsynced_bytes(&self) -> u64 {
        lock(&self.volume).unsynced_bytes()
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open (it should have been killed) must not
        // keep the mount, and the test, from finishing.
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.mountpoint)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "faultfs: fusermount3 -u -z {}: {}",
                self.mountpoint.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("faultfs: fusermount3: {e}"),
        }
        // The session's thread ends when the kernel closes the connection.
        drop(self.session.take());
    }
}

/// Can this process mount a [`FaultFs`]? `Err` says what is missing.
pub fn available() -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        return Err("fusermount3 is not installed (Debian package fuse3)".into());
    }
    match std::fs::metadata("/proc/self") {
        Ok(m) if m.uid() == 0 => Ok(()),
        Ok(m) => Err(format!("not root (uid {})", m.uid())),
        Err(e) => Err(format!("cannot tell the user id from /proc/self: {e}")),
    }
}

/// True if a [`FaultFs`] can be mounted here; false (printing why) if not; panics if not and
/// `CHAOS_REQUIRE_FAULTFS=1`.
pub fn require() -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") => {
            panic!("{REQUIRE_ENV}=1 but the fault filesystem is not available: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIP: the fault filesystem is not available: {why} (set {REQUIRE_ENV}=1 to make this a failure)"
            );
            false
        }
    }
}

/// Checks `path` is a mount of this filesystem (in `/proc/self/mounts`).
pub fn is_mounted(path: &Path) -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("read /proc/self/mounts")?;
    let want = path.to_string_lossy();
    Ok(mounts.lines().any(|l| {
        let mut parts = l.split_whitespace();
        parts.next() == Some(FS_NAME) && parts.next() == Some(&*want)
    }))
}
