//! Apply rule of the certificate authority's state (command version 4): a versioned opaque blob
//! replaced by compare-and-swap.
//!
//! Owns the one invariant every node must agree on: the stored CA state only moves from version
//! `v` to `v + 1`, and only by a proposal that was built from version `v`. The blob itself (the
//! `node` crate's `CaState`, with private keys sealed under a key-encryption key that never
//! enters the log) is opaque here: this crate must never decode it, sign, read a clock, or know
//! anything about certificates. Signing is randomised, so it happens on the proposing node; the
//! CAS is what keeps two nodes that signed from the same state from overwriting each other.

use crate::command::{Applied, ApplyError, Outcome};
use crate::state::context::Ctx;
use crate::state::keys;
use crate::state::{Overlay, StateError};

/// The CA state as stored: its version (1 for the first) and the blob.
pub type StoredCa = (u64, Vec<u8>);

/// The stored CA state, if any (read through the batch's pending writes).
pub fn current(kv: &Overlay<'_>) -> Result<Option<StoredCa>, StateError> {
    kv.get::<StoredCa>(keys::CA_STATE)
}

pub fn ca_update(cx: &mut Ctx<'_, '_>, expect: u64, state: &[u8]) -> Result<Outcome, StateError> {
    let have = current(cx.kv)?.map(|(v, _)| v).unwrap_or(0);
    if have != expect {
        return Ok(Err(ApplyError::Conflict(format!(
            "the CA state changed meanwhile (version {have}, the update was built on {expect}); retry"
        ))));
    }
    if state.is_empty() {
        return Ok(Err(ApplyError::Invalid(
            "an empty CA state cannot be stored".into(),
        )));
    }
    // `expect` came from a stored version, so it is at most the number of CA updates ever
    // applied; it cannot reach u64::MAX. Saturating keeps apply panic-free regardless.
    let version = expect.saturating_add(1);
    cx.kv.put(keys::CA_STATE.to_vec(), &(version, state))?;
    cx.kv.put(keys::CA_INDEX.to_vec(), &cx.index)?;
    Ok(Ok(Applied::CaUpdated { version }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::test_apply::{run, tree};
    use crate::storage::sm_store::StateReader;

    fn update(expect: u64, state: &[u8]) -> Command {
        Command::CaUpdate {
            expect,
            state: state.to_vec(),
        }
    }

    #[test]
    fn first_update_needs_expect_zero_and_stores_version_one() {
        let t = tree();
        assert_eq!(StateReader::for_tree(t.clone()).ca_state().unwrap(), None);
        let out = run(&t, 1, vec![update(1, b"a"), update(0, b"first")]);
        assert!(matches!(out[0], Err(ApplyError::Conflict(_))), "{out:?}");
        assert_eq!(out[1], Ok(Applied::CaUpdated { version: 1 }));
        assert_eq!(
            StateReader::for_tree(t.clone()).ca_state().unwrap(),
            Some((1, b"first".to_vec()))
        );
        assert_eq!(
            StateReader::for_tree(t.clone()).ca_index().unwrap(),
            Some(1)
        );
    }

    #[test]
    fn concurrent_updates_from_one_version_let_exactly_one_win() {
        let t = tree();
        run(&t, 1, vec![update(0, b"v1")]);
        // Two nodes signed from version 1 at once; both proposals land in one entry.
        let out = run(
            &t,
            1,
            vec![update(1, b"from node a"), update(1, b"from node b")],
        );
        assert_eq!(out[0], Ok(Applied::CaUpdated { version: 2 }));
        assert!(matches!(out[1], Err(ApplyError::Conflict(_))), "{out:?}");
        // A second `expect: 0` (a second `init`) never replaces an existing CA.
        let out = run(&t, 1, vec![update(0, b"another ca"), update(2, b"v3")]);
        assert!(matches!(out[0], Err(ApplyError::Conflict(_))));
        assert_eq!(out[1], Ok(Applied::CaUpdated { version: 3 }));
        assert_eq!(
            StateReader::for_tree(t.clone()).ca_state().unwrap(),
            Some((3, b"v3".to_vec()))
        );
    }

    #[test]
    fn empty_blob_is_refused_without_writing() {
        let t = tree();
        let out = run(&t, 1, vec![update(0, b"")]);
        assert!(matches!(out[0], Err(ApplyError::Invalid(_))));
        assert!(t.get(keys::CA_STATE).unwrap().is_none());
    }
}
