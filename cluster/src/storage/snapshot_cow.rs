//! Copy-on-write view of the state tree for building a snapshot while apply goes on.
//!
//! sled 0.34 has no point-in-time snapshots, and copying the whole tree inside the state machine
//! worker would stall every write for as long as the copy takes (it grows with chat history).
//! Instead, when a build starts at applied index S, every later write first records the key's
//! value as of S here; the builder walks the live tree and, for each key, prefers the recorded
//! value. The result is exactly the state at S.
//!
//! Owns the recorded old values. Must never miss a write: every path that changes the tree
//! while a build is active (apply, snapshot install) calls `record` before writing.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

type OldValues = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Clone, Default)]
pub struct Cow {
    inner: Arc<Mutex<Option<OldValues>>>,
}

impl Cow {
    /// Starts recording. Returns false if a build is already active (the caller then copies
    /// eagerly instead).
    pub fn begin(&self) -> bool {
        match self.inner.lock() {
            Ok(mut g) if g.is_none() => {
                *g = Some(BTreeMap::new());
                true
            }
            _ => false,
        }
    }

    pub fn end(&self) {
        if let Ok(mut g) = self.inner.lock() {
            *g = None;
        }
    }

    /// Records, for each key about to be written, its current value, unless already recorded
    /// since the build began (the first record is the value as of the snapshot point).
    pub fn record<'a>(
        &self,
        tree: &sled::Tree,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), sled::Error> {
        let Ok(mut g) = self.inner.lock() else {
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

    /// Walks the live tree and returns every pair as of the snapshot point, skipping `exclude`.
    pub fn collect(&self, tree: &sled::Tree, exclude: &[u8]) -> Result<Pairs, sled::Error> {
        let mut out = Vec::new();
        let mut seen_recorded: HashSet<Vec<u8>> = HashSet::new();
        for kv in tree.iter() {
            // Read the live value first, then look for a recorded one: `record` runs before the
            // tree write, so if the live value we read is newer, the record is already there.
            let (k, v) = kv?;
            if k.as_ref() == exclude {
                continue;
            }
            let recorded = match self.inner.lock() {
                Ok(g) => g.as_ref().and_then(|m| m.get(k.as_ref()).cloned()),
                Err(_) => None,
            };
            match recorded {
                Some(Some(old)) => {
                    seen_recorded.insert(k.to_vec());
                    out.push((k.to_vec(), old));
                }
                // Created after the snapshot point.
                Some(None) => {
                    seen_recorded.insert(k.to_vec());
                }
                None => out.push((k.to_vec(), v.to_vec())),
            }
        }
        // Keys that existed at the snapshot point but were deleted since.
        if let Ok(g) = self.inner.lock()
            && let Some(m) = g.as_ref()
        {
            for (k, v) in m {
                if let Some(v) = v
                    && !seen_recorded.contains(k)
                    && k.as_slice() != exclude
                {
                    out.push((k.clone(), v.clone()));
                }
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
        let mut got = cow.collect(&t, b"x").unwrap();
        got.sort();
        let want: Vec<(Vec<u8>, Vec<u8>)> = [("a", "1"), ("b", "1"), ("c", "1")]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, want);
        cow.end();
        assert!(cow.begin());
    }
}
