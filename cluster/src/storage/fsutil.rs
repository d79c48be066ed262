//! Durable file primitives shared by the log store and the snapshot store.
//!
//! Owns "write a small file atomically and durably", "replace a file by a rename durably",
//! "make a directory entry durable" and "create a directory durably", per platform (the rules
//! are in docs/architecture.md, "Durability per platform").
//! Must never be used on a hot path per client write: each call costs at least two fsyncs.
//!
//! Unix: `fsync` the file, `rename(2)`, `fsync` the directory. Windows cannot open a directory
//! for flushing, so a rename there is `MoveFileExW` with `MOVEFILE_WRITE_THROUGH`, which returns
//! only once the rename is on disk; `sync_dir` is then a no-op and every rename in the crates
//! must go through [`rename_durable`] (never a bare `fs::rename`) to stay durable on Windows.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Makes renames/creations/deletions inside `dir` durable. On Windows a directory cannot be
/// flushed: renames carry that duty there ([`rename_durable`] writes through), and a created
/// file's entry is durable once the file's own `FlushFileBuffers` (`File::sync_all`) returned,
/// which flushes the file's metadata with it on NTFS.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// Flushes the content and metadata of the existing file at `path` (written earlier, maybe by
/// another handle). Windows flushes a file only through a handle opened for writing
/// (`FlushFileBuffers` needs `GENERIC_WRITE`); Unix takes any handle.
pub fn sync_file(path: &Path) -> io::Result<()> {
    #[cfg(windows)]
    let f = OpenOptions::new().write(true).open(path)?;
    #[cfg(not(windows))]
    let f = fs::File::open(path)?;
    f.sync_all()
}

/// Creates `dir` and any missing parents with `builder`'s options, and makes every new
/// directory entry durable (an fsync of the parent of each directory it created): a `mkdir`
/// is undone by a power cut until its parent directory is synced, and the files later made
/// durable inside a lost directory would be lost with it.
pub fn create_dir_all_durable(dir: &Path, builder: &mut fs::DirBuilder) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    builder.recursive(true).create(dir)?;
    // Outermost first: each parent is already durable when its child's entry is synced.
    for created in missing.iter().rev() {
        match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` so that after a crash either the old or the new content is
/// there, never a mix: write a temp file, fsync it, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    path.parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    rename_durable(&tmp, path)
}

/// Renames `from` over `to` (replacing it) and makes the rename durable: on Unix `rename(2)`
/// then an fsync of `to`'s directory (a lost removal of `from`'s old entry only leaves a stray
/// temp file, which every caller tolerates); on Windows
/// `MoveFileExW(MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)`. The caller has flushed
/// `from`'s content (`File::sync_all`) first.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    let dir = parent_or_dot(to);
    #[cfg(windows)]
    {
        let _ = dir;
        windows::move_write_through(from, to)
    }
    #[cfg(not(windows))]
    {
        fs::rename(from, to)?;
        sync_dir(dir)
    }
}

fn parent_or_dot(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod windows {
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;

    use windows_sys::Win32::Foundation::ERROR_ACCESS_DENIED;
    use windows_sys::Win32::Storage::FileSystem::{
        DELETE, FILE_GENERIC_WRITE, FILE_RENAME_INFO, FILE_SHARE_DELETE, FILE_SHARE_READ,
        FILE_SHARE_WRITE, FileRenameInfoEx, MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH,
        MoveFileExW, SetFileInformationByHandle,
    };

    fn wide(path: &Path) -> Vec<u16> {
        path.as_os_str().encode_wide().chain(Some(0)).collect()
    }

    /// `MoveFileExW` with write-through: it returns only after the rename is flushed, the one
    /// way to make a rename durable where a directory cannot be fsynced.
    ///
    /// Windows refuses (access denied) to replace a file that is open, even with
    /// FILE_SHARE_DELETE: the current `snapshot.bin` is open while it streams to a follower or
    /// is held by openraft, and a new snapshot must still replace it. Then the rename is done
    /// with POSIX semantics (the old file lives on, nameless, for its open handles), through a
    /// handle on `from`, which is flushed afterwards: `FlushFileBuffers` commits the file's
    /// metadata, its new name included.
    pub fn move_write_through(from: &Path, to: &Path) -> io::Result<()> {
        let (from_w, to_w) = (wide(from), wide(to));
        // SAFETY: both are NUL-terminated UTF-16 buffers that outlive the call.
        let ok = unsafe {
            MoveFileExW(
                from_w.as_ptr(),
                to_w.as_ptr(),
                MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
            )
        };
        if ok != 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) && from.is_file() && to.is_file()
        {
            return posix_replace(from, to);
        }
        Err(err)
    }

    const FILE_RENAME_FLAG_REPLACE_IF_EXISTS: u32 = 0x1;
    const FILE_RENAME_FLAG_POSIX_SEMANTICS: u32 = 0x2;

    fn posix_replace(from: &Path, to: &Path) -> io::Result<()> {
        use std::os::windows::fs::OpenOptionsExt;
        use std::os::windows::io::AsRawHandle;
        let file = std::fs::OpenOptions::new()
            .access_mode(DELETE | FILE_GENERIC_WRITE)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
            .open(from)?;
        // FILE_RENAME_INFO ends in a variable-length name; u64 elements for its alignment.
        let target = std::path::absolute(to)?;
        let name: Vec<u16> = target.as_os_str().encode_wide().collect();
        let name_at = std::mem::offset_of!(FILE_RENAME_INFO, FileName);
        let size = name_at + (name.len() + 1) * 2;
        let mut buf = vec![0u64; size.div_ceil(8)];
        let info = buf.as_mut_ptr().cast::<FILE_RENAME_INFO>();
        // SAFETY: `buf` is zeroed, aligned for FILE_RENAME_INFO and `size` bytes long, which
        // holds the header and the name with its NUL.
        let ok = unsafe {
            (*info).Anonymous.Flags =
                FILE_RENAME_FLAG_REPLACE_IF_EXISTS | FILE_RENAME_FLAG_POSIX_SEMANTICS;
            (*info).FileNameLength = (name.len() * 2) as u32;
            std::ptr::copy_nonoverlapping(
                name.as_ptr(),
                buf.as_mut_ptr().cast::<u8>().add(name_at).cast::<u16>(),
                name.len(),
            );
            SetFileInformationByHandle(
                file.as_raw_handle(),
                FileRenameInfoEx,
                buf.as_ptr().cast(),
                size as u32,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        file.sync_all()
    }
}

/// Frames `payload` as `[len u32 LE][crc32 u32 LE][payload]`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Parses one frame at the start of `buf`. `None` means a torn or corrupt frame.
pub fn unframe(buf: &[u8]) -> Option<(&[u8], usize)> {
    let header: [u8; 8] = buf.get(..8)?.try_into().ok()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = buf.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, 8 + len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_durable_creates_nested_and_accepts_existing() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a").join("b").join("c");
        create_dir_all_durable(&deep, &mut fs::DirBuilder::new()).unwrap();
        assert!(deep.is_dir());
        create_dir_all_durable(&deep, &mut fs::DirBuilder::new()).unwrap();
        // A file in the way is an error, not silently accepted.
        let file = root.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(create_dir_all_durable(&file.join("d"), &mut fs::DirBuilder::new()).is_err());
    }

    #[test]
    fn write_atomic_and_rename_durable_replace_an_existing_file() {
        // On Windows this is MoveFileExW: a plain rename there fails when the target exists.
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("meta");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let other = root.path().join("other");
        fs::write(&other, b"three").unwrap();
        rename_durable(&other, &path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert!(!other.exists());
        // Only the target is left: no temp file.
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    /// Replacing a file that is open for reading: Windows refuses a plain MoveFileExW then (a
    /// snapshot streaming to a follower while a new one is installed); the reader keeps the
    /// old content.
    #[test]
    #[cfg_attr(
        windows,
        ignore = "Wine 8 lacks FileRenameInfoEx (POSIX-semantics rename, Windows 10 1709+); run with --ignored on real Windows"
    )]
    fn write_atomic_replaces_a_file_that_is_open() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("snapshot.bin");
        write_atomic(&path, b"old").unwrap();
        let reader = fs::File::open(&path).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &reader, &mut old).unwrap();
        assert_eq!(old, "old");
    }
}
