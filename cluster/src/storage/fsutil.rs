//! Durable file primitives shared by the log store and the snapshot store.
//!
//! Owns "write a small file atomically and durably", "make a directory entry durable" and
//! "create a directory durably".
//! Must never be used on a hot path per client write: each call costs at least two fsyncs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Makes renames/creations/deletions inside `dir` durable. On Windows a directory cannot be
/// opened as a file; NTFS journals metadata, so there is nothing to do there.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
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
    let dir = path
        .parent()
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
    fs::rename(&tmp, path)?;
    sync_dir(dir)
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
}
