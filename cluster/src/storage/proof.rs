//! The proof that the state machine's sled tree is exactly the state at one applied log id.
//!
//! sled is a cache of the state machine, not a durable record: it is never fsynced on the
//! write path, and sled 0.34's own flush may end in `sync_file_range`, which is no durability
//! point. So a tree is trusted on open only if a clean shutdown left `<data_dir>/state.proof`:
//! the applied log id and a SHA-256 digest of every key/value of the `sm` tree (length-prefixed,
//! in key order), written after sled's flush *and* an fsync of every file of sled's directory
//! and the directory itself. Without a proof (a crash, a power cut) the tree is rebuilt from the
//! snapshot file and the Raft log, which are fsynced; with a proof that does not match, the tree
//! is damaged and quarantined first.
//!
//! The proof is consumed on open (`take`: read, then removed durably before Raft starts), so it
//! can never vouch for a tree that was written to after the proof: the next crash finds no
//! proof. The digest check on top catches a tree that changed at rest (a flipped bit, a file
//! sled lost).
//!
//! Owns `state.proof`. Must never be written while the state machine can still apply (only
//! from `ClusterNode::shutdown`, after Raft stopped), nor when any fsync failed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::keys;
use crate::storage::fsutil;
use crate::types::LogId;

/// The file name, under the node's data dir.
pub const PROOF_FILE: &str = "state.proof";
/// sled's directory, under the node's data dir.
pub const STATE_DIR: &str = "state";
const FORMAT: u16 = 1;

/// What a clean shutdown vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub format: u16,
    /// The tree's applied log id (`keys::APPLIED`) at shutdown.
    pub applied: Option<LogId>,
    /// SHA-256 of every pair of the `sm` tree, see [`digest`].
    pub digest: [u8; 32],
    /// How many pairs the digest covers.
    pub pairs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("{0} is corrupt")]
    Corrupt(PathBuf),
    #[error("the tree's applied log id does not decode: {0}")]
    Applied(bincode::Error),
}

/// SHA-256 over `[key len u64 LE][key][value len u64 LE][value]` of every pair, in key order,
/// and the number of pairs. Lengths are part of the input so that moving a byte from a key to
/// its value changes the digest.
pub fn digest(tree: &sled::Tree) -> Result<([u8; 32], u64), sled::Error> {
    let mut h = Sha256::new();
    let mut pairs = 0u64;
    for kv in tree.iter() {
        let (k, v) = kv?;
        h.update((k.len() as u64).to_le_bytes());
        h.update(&k);
        h.update((v.len() as u64).to_le_bytes());
        h.update(&v);
        pairs += 1;
    }
    Ok((h.finalize().into(), pairs))
}

/// The applied log id the tree records.
pub fn applied_in(tree: &sled::Tree) -> Result<Option<LogId>, ProofError> {
    match tree.get(keys::APPLIED)? {
        Some(v) => bincode::deserialize::<Option<LogId>>(&v).map_err(ProofError::Applied),
        None => Ok(None),
    }
}

/// The proof `tree` would have now.
pub fn compute(tree: &sled::Tree) -> Result<Proof, ProofError> {
    let (digest, pairs) = digest(tree)?;
    Ok(Proof {
        format: FORMAT,
        applied: applied_in(tree)?,
        digest,
        pairs,
    })
}

/// Makes sled's files durable and writes the proof. Call only after Raft stopped applying.
pub fn write(data_dir: &Path, db: &sled::Db, tree: &sled::Tree) -> Result<Proof, ProofError> {
    db.flush()?;
    sync_dir_tree(&data_dir.join(STATE_DIR))?;
    let proof = compute(tree)?;
    let payload = bincode::serialize(&proof).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(payload.len() + 8);
    fsutil::frame(&payload, &mut framed);
    fsutil::write_atomic(&data_dir.join(PROOF_FILE), &framed)?;
    Ok(proof)
}

/// Reads the proof and removes it durably, so it vouches for this one open only. `Ok(None)`:
/// there was none (a crash, or a node that never shut down cleanly).
pub fn take(data_dir: &Path) -> Result<Option<Proof>, ProofError> {
    let path = data_dir.join(PROOF_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    fs::remove_file(&path)?;
    fsutil::sync_dir(data_dir)?;
    let (payload, _) = fsutil::unframe(&bytes).ok_or_else(|| ProofError::Corrupt(path.clone()))?;
    let proof: Proof =
        bincode::deserialize(payload).map_err(|_| ProofError::Corrupt(path.clone()))?;
    if proof.format != FORMAT {
        return Err(ProofError::Corrupt(path));
    }
    Ok(Some(proof))
}

/// fsyncs every file under `dir` and every directory (their entries), deepest first.
fn sync_dir_tree(dir: &Path) -> io::Result<()> {
    for de in fs::read_dir(dir)? {
        let de = de?;
        let path = de.path();
        if de.file_type()?.is_dir() {
            sync_dir_tree(&path)?;
        } else {
            fsutil::sync_file(&path)?;
        }
    }
    fsutil::sync_dir(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> (sled::Db, sled::Tree) {
        let db = sled::Config::new()
            .path(dir.join(STATE_DIR))
            .open()
            .unwrap();
        let t = db.open_tree("sm").unwrap();
        (db, t)
    }

    #[test]
    fn proof_round_trip_is_consumed_and_detects_change() {
        let dir = tempfile::tempdir().unwrap();
        let (db, t) = tree(dir.path());
        t.insert("a", "1").unwrap();
        t.insert("b", "2").unwrap();
        let written = write(dir.path(), &db, &t).unwrap();
        assert_eq!(written.pairs, 2);
        assert_eq!(compute(&t).unwrap(), written);
        let taken = take(dir.path()).unwrap().unwrap();
        assert_eq!(taken, written);
        // Consumed: a second open after a crash finds none.
        assert!(take(dir.path()).unwrap().is_none());
        // Moving a byte from key to value changes the digest.
        t.clear().unwrap();
        t.insert("a1", "").unwrap();
        t.insert("b", "2").unwrap();
        assert_ne!(compute(&t).unwrap().digest, written.digest);
    }

    #[test]
    fn a_damaged_proof_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (db, t) = tree(dir.path());
        t.insert("a", "1").unwrap();
        write(dir.path(), &db, &t).unwrap();
        let path = dir.path().join(PROOF_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x10;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(take(dir.path()), Err(ProofError::Corrupt(_))));
    }

    /// Cost of the digest, which a clean shutdown and the next open each pay once: run with
    /// `cargo test -p cluster --release proof::tests::digest_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn digest_cost() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, t) = tree(dir.path());
        let value = vec![7u8; 200];
        let n = 500_000u64;
        for i in 0..n {
            t.insert(i.to_be_bytes(), value.as_slice()).unwrap();
        }
        let mb = (n * (8 + 200)) as f64 / 1e6;
        let start = std::time::Instant::now();
        digest(&t).unwrap();
        let took = start.elapsed();
        eprintln!(
            "digest of {n} pairs ({mb:.0} MB): {took:?}, {:.1} ms/MB",
            took.as_secs_f64() * 1e3 / mb
        );
    }
}
