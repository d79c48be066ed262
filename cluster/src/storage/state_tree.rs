//! `StateTree`: the state machine's sled tree with an apply gate, so that readers never see a
//! log entry half applied.
//!
//! Why not sled's own `apply_batch`: it is atomic for readers (sled runs a batch under its global
//! write lock, and every `get` and iterator step takes the read side), but it also pins sled's
//! log, which seals the current IO buffer before and after the batch (`pin_log`, sled 0.34): two
//! synchronous device writes (`pwrite` + `sync_file_range`) through sled's thread pool, whose
//! every hand-off wakes all its idle threads, per applied entry on every node. Measured at one
//! writer through a follower: a quarter of the nodes' CPU per post and 0.3 ms of its latency
//! (docs/benchmarks.md, "Single writer and the CPU cost of one Raft round"). The writes of one
//! entry are applied key by key here instead, under this gate's write side; every read through
//! this type takes the read side for one `get` or one iterator step, which is exactly the
//! isolation `apply_batch` gave: a read sees an entry's writes all or none, and a scan may see
//! entries land between its steps (as before).
//!
//! On disk, an entry's writes are no longer atomic in sled: nothing relies on that. sled is
//! trusted after a stop only with a clean shutdown's proof (the tree is flushed first); after a
//! crash or power cut it is deleted and rebuilt from the snapshot and the log (`recovery`), and
//! a failed write stops Raft, which rebuilds it the same way at the next start.
//!
//! Owns the gate. Must never hold it across anything but sled calls (no await, no callback into
//! a reader), or take the read side while holding the write side.

use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The state tree and its apply gate; clones share both.
#[derive(Clone)]
pub struct StateTree {
    tree: sled::Tree,
    gate: Arc<RwLock<()>>,
}

/// Read side of a gate. A panic while holding the write side poisons the lock; the tree is then
/// possibly half written, but that panic has already stopped the state machine (Raft's apply
/// task ended), so readers keep reading what is there, as they would have after a failed batch.
fn read(gate: &RwLock<()>) -> RwLockReadGuard<'_, ()> {
    gate.read().unwrap_or_else(|e| e.into_inner())
}

fn write(gate: &RwLock<()>) -> RwLockWriteGuard<'_, ()> {
    gate.write().unwrap_or_else(|e| e.into_inner())
}

impl StateTree {
    pub fn new(tree: sled::Tree) -> Self {
        Self {
            tree,
            gate: Arc::new(RwLock::new(())),
        }
    }

    /// The tree without the gate: for whole-tree work that has its own consistency rule
    /// (snapshot builds with `snapshot_cow`, installs behind the INSTALLING marker, proofs
    /// written after apply stopped). The apply path itself reads through the gate (`Overlay`),
    /// uncontended: it is the only writer.
    pub fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    #[cfg(test)]
    pub(crate) fn gate(&self) -> &RwLock<()> {
        &self.gate
    }

    /// Applies one entry's writes (`None` removes), invisible to gated readers until all are in.
    pub fn apply(&self, writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> sled::Result<()> {
        let _w = write(&self.gate);
        for (k, v) in writes {
            match v {
                Some(v) => self.tree.insert(k, v)?,
                None => self.tree.remove(k)?,
            };
        }
        Ok(())
    }

    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<sled::IVec>> {
        let _r = read(&self.gate);
        self.tree.get(key)
    }

    pub fn contains_key<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<bool> {
        let _r = read(&self.gate);
        self.tree.contains_key(key)
    }

    pub fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Iter {
        Iter {
            inner: self.tree.scan_prefix(prefix),
            gate: self.gate.clone(),
        }
    }

    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        Iter {
            inner: self.tree.range(range),
            gate: self.gate.clone(),
        }
    }
}

/// A sled iterator whose every step takes the gate's read side.
pub struct Iter {
    inner: sled::Iter,
    gate: Arc<RwLock<()>>,
}

impl Iter {
    pub fn keys(self) -> impl DoubleEndedIterator<Item = sled::Result<sled::IVec>> {
        self.map(|r| r.map(|(k, _)| k))
    }
}

impl Iterator for Iter {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        let _r = read(&self.gate);
        self.inner.next()
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        let _r = read(&self.gate);
        self.inner.next_back()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn tree() -> StateTree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        StateTree::new(db.open_tree("sm").unwrap())
    }

    /// A reader polling two keys that every apply writes together never sees them differ,
    /// though each apply writes them one after the other.
    #[test]
    fn readers_see_an_entry_whole_or_not_at_all() {
        let t = tree();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0u32..2_000 {
                    let v = i.to_be_bytes().to_vec();
                    let writes = BTreeMap::from([
                        (b"a".to_vec(), Some(v.clone())),
                        (b"b".to_vec(), Some(v)),
                    ]);
                    t.apply(writes).unwrap();
                }
                done.store(true, Ordering::SeqCst);
            });
            let mut checked = 0u32;
            while !done.load(Ordering::SeqCst) {
                // A scan's steps may straddle applies, but never see one half done: `a` is
                // written before `b`, so a later step can only find `b` as new or newer.
                let pair: Vec<_> = t.range(b"a".as_slice()..=b"b".as_slice()).collect();
                if pair.len() == 2 {
                    let (a, b) = (&pair[0].as_ref().unwrap().1, &pair[1].as_ref().unwrap().1);
                    assert!(b >= a, "key b behind key a: {b:?} < {a:?}");
                    checked += 1;
                }
                // Two reads under one read guard: the same entry for both.
                let _r = read(t.gate());
                let a = t.raw().get(b"a").unwrap();
                let b = t.raw().get(b"b").unwrap();
                assert_eq!(a, b, "an entry seen half applied");
            }
            assert!(checked > 0, "the reader never saw a pair");
        });
        assert_eq!(t.get(b"a").unwrap(), t.get(b"b").unwrap());
        t.apply(BTreeMap::from([(b"a".to_vec(), None)])).unwrap();
        assert!(!t.contains_key(b"a").unwrap());
        assert_eq!(t.scan_prefix(b"b").keys().count(), 1);
    }
}
