//! `Overlay`: the state tree as one log entry sees it while it is being applied, with the
//! entry's own pending writes layered over the tree.
//!
//! Owns read-your-own-writes within an entry (a later command in an entry sees an earlier
//! one's writes) and handing the writes over as one set. Must never write to the tree itself:
//! the state machine store applies the set together with the applied index (`StateTree::apply`,
//! which readers see whole or not at all).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::StateError;
use crate::storage::state_tree::StateTree;

/// Reads through to the tree, with the writes of the current batch layered on top so later
/// commands in one entry see earlier ones.
pub struct Overlay<'a> {
    tree: &'a StateTree,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a StateTree) -> Self {
        Self {
            tree,
            pending: BTreeMap::new(),
        }
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(bytes) => {
                bincode::deserialize(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Decode {
                        key: String::from_utf8_lossy(key).into_owned(),
                        source,
                    })
            }
        }
    }

    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StateError> {
        let bytes = bincode::serialize(value).map_err(StateError::Encode)?;
        self.pending.insert(key, Some(bytes));
        Ok(())
    }

    pub fn exists(&self, key: &[u8]) -> Result<bool, StateError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.is_some());
        }
        Ok(self.tree.contains_key(key)?)
    }

    /// Keys under `prefix`, as the tree plus this batch's pending writes would have them.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Result<BTreeSet<Vec<u8>>, StateError> {
        let mut out = BTreeSet::new();
        for k in self.tree.scan_prefix(prefix).keys() {
            out.insert(k?.to_vec());
        }
        for (k, v) in self.pending.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(_) => out.insert(k.clone()),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// The first `limit` keys under `prefix` in byte order, as `keys_with_prefix` would list
    /// them, reading only as much of the tree as needed (for indexes scanned from the front).
    pub fn first_keys_with_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StateError> {
        let mut out = BTreeSet::new();
        for k in self.tree.scan_prefix(prefix).keys() {
            let k = k?.to_vec();
            if matches!(self.pending.get(&k), Some(None)) {
                continue;
            }
            out.insert(k);
            if out.len() >= limit {
                break;
            }
        }
        for (k, v) in self.pending.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if v.is_some() {
                out.insert(k.clone());
            }
        }
        Ok(out.into_iter().take(limit).collect())
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    /// Keys this batch will write or delete.
    pub fn pending_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.pending.keys().map(|k| k.as_slice())
    }

    /// The pending writes (`None` deletes), for `StateTree::apply`.
    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.pending
    }
}
