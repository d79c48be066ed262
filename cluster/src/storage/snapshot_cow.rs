//! Copy-on-write view of the state tree for building a snapshot while apply goes on.
//!
//! sled 0.34 has no point-in-time snapshots, and copying the whole tree inside the state machine
//! worker would stall every write for as long as the copy takes (it grows with chat history).
//! Instead, when a build starts at applied index S, every later write first records the key's
//! value as of S here; the builder walks the live tree and, for each key, prefers the recorded
//! value. The result is exactly the state at S, streamed pair by pair (`pairs`): memory grows
//! with the writes made during the build, never with the size of the tree.
//!
//! One build at a time: `begin` refuses a second one, and a snapshot install (which rewrites
//! the whole tree) waits for the running build to end (`wait_idle`) instead of recording every
//! key of the old and the new state here, which would hold the whole state in memory.
//!
//! Owns the recorded old values. Must never miss a write: every path that changes the tree
//! while a build is active (apply) calls `record` before writing; an install never runs while
//! a build is active.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};

type OldValues = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
type Pair = (Vec<u8>, Vec<u8>);

#[derive(Clone, Default)]
pub struct Cow {
    inner: Arc<(Mutex<Option<OldValues>>, Condvar)>,
}

impl Cow {
    /// Starts recording. Returns false if a build is already active.
    pub fn begin(&self) -> bool {
        match self.inner.0.lock() {
            Ok(mut g) if g.is_none() => {
                *g = Some(BTreeMap::new());
                true
            }
            _ => false,
        }
    }

    pub fn end(&self) {
        if let Ok(mut g) = self.inner.0.lock() {
            *g = None;
        }
        self.inner.1.notify_all();
    }

    /// Blocks until no build is active. Call from a blocking thread only.
    pub fn wait_idle(&self) {
        let Ok(mut g) = self.inner.0.lock() else {
            return;
        };
        while g.is_some() {
            g = match self.inner.1.wait(g) {
                Ok(g) => g,
                Err(_) => return,
            };
        }
    }

    /// Records, for each key about to be written, its current value, unless already recorded
    /// since the build began (the first record is the value as of the snapshot point).
    pub fn record<'a>(
        &self,
        tree: &sled::Tree,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), sled::Error> {
        let Ok(mut g) = self.inner.0.lock() else {
            return Ok(());
        };
        let Some(old) = g.as_mut() else {
            return Ok(());
        };
        for k in keys {
            if !old.contains_key(k) {
                old.insert(k.to_vec(), tree.get(k)?.map(|v| v.to_vec()));
            }
        }
        Ok(())
    }

    fn recorded(&self, k: &[u8]) -> Option<Option<Vec<u8>>> {
        match self.inner.0.lock() {
            Ok(g) => g.as_ref().and_then(|m| m.get(k).cloned()),
            Err(_) => None,
        }
    }

    /// Every pair as of the snapshot point, skipping `exclude`, one at a time: the live tree
    /// walked in key order, then the keys that existed at the point but were deleted since.
    pub fn pairs<'a>(
        &'a self,
        tree: &sled::Tree,
        exclude: &'a [u8],
    ) -> impl Iterator<Item = Result<Pair, sled::Error>> + 'a {
        let mut live = tree.iter();
        // Keys met in the walk that have a recorded value: only written keys, so this grows
        // with the writes made during the build, not with the tree.
        let mut seen_recorded: HashSet<Vec<u8>> = HashSet::new();
        let mut deleted: Option<std::vec::IntoIter<Pair>> = None;
        std::iter::from_fn(move || {
            if let Some(rest) = deleted.as_mut() {
                return rest.next().map(Ok);
            }
            for kv in live.by_ref() {
                // Read the live value first, then look for a recorded one: `record` runs before
                // the tree write, so if the live value we read is newer, the record is there.
                let (k, v) = match kv {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(e)),
                };
                if k.as_ref() == exclude {
                    continue;
                }
                match self.recorded(&k) {
                    Some(Some(old)) => {
                        seen_recorded.insert(k.to_vec());
                        return Some(Ok((k.to_vec(), old)));
                    }
                    // Created after the snapshot point.
                    Some(None) => {
                        seen_recorded.insert(k.to_vec());
                    }
                    None => return Some(Ok((k.to_vec(), v.to_vec()))),
                }
            }
            // Keys that existed at the snapshot point but were deleted since.
            let mut gone = Vec::new();
            if let Ok(g) = self.inner.0.lock()
                && let Some(m) = g.as_ref()
            {
                for (k, v) in m {
                    if let Some(v) = v
                        && !seen_recorded.contains(k)
                        && k.as_slice() != exclude
                    {
                        gone.push((k.clone(), v.clone()));
                    }
                }
            }
            let mut rest = gone.into_iter();
            let first = rest.next();
            deleted = Some(rest);
            first.map(Ok)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn collect_returns_the_state_at_begin() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("t").unwrap();
        t.insert("a", "1").unwrap();
        t.insert("b", "1").unwrap();
        t.insert("c", "1").unwrap();
        let cow = Cow::default();
        assert!(cow.begin());
        assert!(!cow.begin());
        // Writes after the snapshot point: change a, delete b, create d.
        for (k, v) in [
            ("a", Some("2")),
            ("b", None),
            ("d", Some("2")),
            ("a", Some("3")),
        ] {
            cow.record(&t, std::iter::once(k.as_bytes())).unwrap();
            match v {
                Some(v) => t.insert(k, v).unwrap(),
                None => t.remove(k).unwrap(),
            };
        }
        let mut got: Vec<Pair> = cow.pairs(&t, b"x").collect::<Result<_, _>>().unwrap();
        got.sort();
        let want: Vec<(Vec<u8>, Vec<u8>)> = [("a", "1"), ("b", "1"), ("c", "1")]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, want);
        cow.end();
        cow.wait_idle();
        assert!(cow.begin());
    }
}
