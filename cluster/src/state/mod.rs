//! The replicated state machine's logic: the deterministic rules that turn a log entry into
//! outcomes, key-value writes and events, the key layout they write, and the read models built
//! from it.
//!
//! Layout: `apply` only dispatches a command to its domain (`chat`, `accounts`, `ca`,
//! `dns_records`, `draining`, `files`, `join`, `sessions`); `overlay` and `context` are what every domain writes
//! through; `keys` is the on-disk key space; `queries` and `views` are the read side; `events`
//! is what a node tells its local subscribers after applying. Nothing here may do I/O beyond the
//! tree it is handed, read a clock or use randomness: every node must reach the same state from
//! the same entries.

pub mod accounts;
pub mod apply;
pub mod ca;
pub mod chat;
pub mod context;
pub mod dns_records;
pub mod draining;
pub mod events;
pub mod files;
pub mod join;
pub mod keys;
pub mod overlay;
pub mod queries;
pub mod sessions;
pub mod views;

#[cfg(test)]
mod tests;

pub use apply::apply_request;
pub use overlay::Overlay;

/// Whether every blob `file` names is a SHA-256 in hex (blob names become paths on disk).
pub(crate) fn blobs_valid(file: &crate::command::NewFile) -> bool {
    crate::blobs::is_sha256_hex(&file.sha256)
        && !file.chunks.is_empty()
        && file.blobs().iter().all(|b| crate::blobs::is_sha256_hex(b))
}

/// A storage or decoding failure while applying: fatal for the node (it stops applying rather
/// than diverge from its peers).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt value at key {key}: {source}")]
    Decode {
        key: String,
        #[source]
        source: bincode::Error,
    },
    #[error("encode: {0}")]
    Encode(#[source] bincode::Error),
    /// The entry was proposed by a newer binary (`version` above [`COMMAND_VERSION`]): applying
    /// it by guesswork, or skipping it, would make this node's state differ from its peers'.
    /// The node stops applying here (nothing of the entry is written, the applied index stays
    /// before it) until its binary is upgraded.
    ///
    /// [`COMMAND_VERSION`]: crate::command::COMMAND_VERSION
    #[error(
        "log entry at index {index} needs command version {needed}; this binary speaks up to {speaks}: upgrade this node"
    )]
    NeedsNewerVersion {
        index: u64,
        needed: u16,
        speaks: u16,
    },
    /// The entry's commands could not be decoded by this binary although its version is one
    /// it speaks: a corrupt entry or a bug, not an upgrade in progress. Stops the same way.
    #[error(
        "log entry at index {index} (command version {version}) cannot be decoded by this binary, which speaks up to {speaks}: {reason}"
    )]
    Undecodable {
        index: u64,
        version: u16,
        speaks: u16,
        reason: String,
    },
}

impl StateError {
    /// An entry this binary must not apply (see [`StateError::NeedsNewerVersion`]): the node
    /// stops and waits for an upgrade instead of failing as on a storage error.
    pub fn is_version_stop(&self) -> bool {
        matches!(
            self,
            StateError::NeedsNewerVersion { .. } | StateError::Undecodable { .. }
        )
    }
}

/// What every apply test needs: a throwaway tree and "apply these commands as one entry".
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod test_apply {
    use super::{Overlay, apply_request};
    use crate::command::{COMMAND_VERSION, Command, Outcome, Request};
    use crate::state::events::Event;

    pub(crate) fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("sm").unwrap()
    }

    /// Applies `commands` as one log entry proposed at `ts_ms` and commits the batch.
    pub(crate) fn run(tree: &sled::Tree, ts_ms: u64, commands: Vec<Command>) -> Vec<Outcome> {
        apply_entry(tree, COMMAND_VERSION, ts_ms, 1, commands).0
    }

    /// Applies `commands` as one log entry of command-set `version` at log `index`, commits its
    /// writes, and returns the outcomes and the events.
    pub(crate) fn apply_entry(
        tree: &sled::Tree,
        version: u16,
        ts_ms: u64,
        index: u64,
        commands: Vec<Command>,
    ) -> (Vec<Outcome>, Vec<Event>) {
        let st = crate::storage::state_tree::StateTree::new(tree.clone());
        let mut kv = Overlay::new(&st);
        let mut events = Vec::new();
        let req = Request::new(version, ts_ms, commands.into());
        let out = apply_request(&mut kv, &req, index, &mut events).unwrap();
        st.apply(kv.into_writes()).unwrap();
        (out, events)
    }
}
