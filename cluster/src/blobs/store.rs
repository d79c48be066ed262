//! The content-addressed blob store on one node's disk: `<data_dir>/blobs/ab/<sha256 hex>`
//! (`ab` = the first two hex digits, so no directory grows to millions of entries).
//!
//! Owns the layout and "write a blob durably": the bytes go to a unique temp file under
//! `blobs/tmp/`, which is fsynced, renamed into place and the directory fsynced, so a blob that
//! exists under its name is complete and on disk; a crash leaves at most a temp file, which the
//! next open removes. Every write checks the SHA-256 of the bytes against the name first. Must
//! never write a blob under a name that is not the hash of its content, and never be called
//! from an async task directly (everything here blocks: use `spawn_blocking`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::storage::fsutil;

/// The largest chunk a client may upload (`files.chunk_max`), and so the largest blob a peer
/// sends or serves (thumbnails are far smaller).
pub const CHUNK_MAX: usize = 8 * 1024 * 1024;

/// A failure of the blob store or of moving a blob between nodes.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("'{0}' is not a SHA-256 (64 lowercase hex digits)")]
    BadName(String),
    #[error("the content's SHA-256 is {actual}, not {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("blob {0} is not on this node")]
    NotFound(String),
    #[error("blob {0} is on no reachable node")]
    Missing(String),
    #[error("only {acks} of {voters} voters stored the blob (a majority is needed)")]
    NoQuorum { acks: usize, voters: usize },
    #[error("blob store I/O: {0}")]
    Io(#[from] io::Error),
}

/// Whether `s` is a SHA-256 in the form blobs are named by.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One node's blob directory.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
    /// Makes temp names unique among concurrent writes of this process (two uploads of the
    /// same chunk at once must not share a temp file).
    seq: AtomicU64,
}

impl BlobStore {
    /// Opens (creating durably) `<data_dir>/blobs` and removes temp files a crash left.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("blobs");
        let tmp = root.join("tmp");
        fsutil::create_dir_all_durable(&tmp, &mut fs::DirBuilder::new())?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Self {
            root,
            seq: AtomicU64::new(0),
        })
    }

    /// The directory every blob lives under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `sha` is (or would be) stored; `BadName` unless `sha` is a SHA-256 in hex,
    /// so a path can never be built from anything else.
    pub fn path(&self, sha: &str) -> Result<PathBuf, BlobError> {
        if !is_sha256_hex(sha) {
            return Err(BlobError::BadName(sha.chars().take(80).collect()));
        }
        Ok(self.root.join(&sha[..2]).join(sha))
    }

    /// The size of blob `sha` if this node has it.
    pub fn size(&self, sha: &str) -> Option<u64> {
        let p = self.path(sha).ok()?;
        fs::metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    pub fn has(&self, sha: &str) -> bool {
        self.size(sha).is_some()
    }

    /// Stores `bytes` as blob `sha` durably, after checking that `sha` is their hash. A blob
    /// already present is left as it is but its modification time is renewed: the garbage
    /// collector measures an unreferenced chunk's grace period from its (last) arrival, and a
    /// client that re-uploads a chunk is about to reference it. Returns whether it was new.
    pub fn put(&self, sha: &str, bytes: &[u8]) -> Result<bool, BlobError> {
        let path = self.path(sha)?;
        let actual = sha256_hex(bytes);
        if actual != sha {
            return Err(BlobError::HashMismatch {
                expected: sha.to_string(),
                actual,
            });
        }
        if path.is_file() {
            if let Ok(f) = fs::File::options().write(true).open(&path) {
                let _ = f.set_modified(SystemTime::now());
            }
            return Ok(false);
        }
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other("blob path without a parent"))?;
        fsutil::create_dir_all_durable(dir, &mut fs::DirBuilder::new())?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{sha}.{}.{n}", std::process::id()));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fsutil::rename_durable(&tmp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        Ok(true)
    }

    /// The whole content of blob `sha` (at most [`CHUNK_MAX`] bytes for anything this store
    /// accepted from a client), checked against its name: a blob damaged on disk is removed
    /// and reported missing, so the fetcher gets a good copy from a peer.
    pub fn read_verified(&self, sha: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path(sha)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(sha.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        if sha256_hex(&bytes) != sha {
            tracing::error!(blob = sha, path = %path.display(), "blob content does not match its hash; removing it so it is fetched again");
            let _ = fs::remove_file(&path);
            return Err(BlobError::NotFound(sha.to_string()));
        }
        Ok(bytes)
    }

    /// Removes blob `sha` (gone already is fine) and makes the removal durable.
    pub fn remove(&self, sha: &str) -> Result<(), BlobError> {
        let path = self.path(sha)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if let Some(dir) = path.parent() {
            fsutil::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Every blob on disk with its modification time (its last arrival).
    pub fn list(&self) -> io::Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            let name = shard.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in fs::read_dir(shard.path())? {
                let blob = blob?;
                let Some(sha) = blob.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !is_sha256_hex(&sha) {
                    continue;
                }
                let mtime = blob
                    .metadata()?
                    .modified()
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((sha, mtime));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn put_read_remove_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let sha = sha256_hex(b"hello");
        assert!(store.put(&sha, b"hello").unwrap());
        assert!(!store.put(&sha, b"hello").unwrap(), "idempotent");
        assert_eq!(store.read_verified(&sha).unwrap(), b"hello");
        assert_eq!(store.size(&sha), Some(5));
        assert!(matches!(
            store.put(&sha, b"other"),
            Err(BlobError::HashMismatch { .. })
        ));
        assert!(matches!(
            store.put("../../etc/passwd", b"x"),
            Err(BlobError::BadName(_))
        ));
        assert_eq!(store.list().unwrap().len(), 1);
        // A blob damaged on disk is not served, and is removed.
        std::fs::write(store.path(&sha).unwrap(), b"hellO").unwrap();
        assert!(matches!(
            store.read_verified(&sha),
            Err(BlobError::NotFound(_))
        ));
        assert!(!store.has(&sha));
        store.put(&sha, b"hello").unwrap();
        store.remove(&sha).unwrap();
        store.remove(&sha).unwrap();
        assert!(!store.has(&sha));
        assert!(store.list().unwrap().is_empty());
    }
}
