//! Apply rules of join tokens (command version 5): single-use, expiring credentials that let a
//! new machine join the cluster without an admin password (`conclave join`).
//!
//! Owns the invariants every node must agree on: a token is stored once under its id with the
//! SHA-256 of its secret (never the secret), expires at the `expires_ms` its proposer computed
//! (judged against the entry's `ts_ms`, never a clock), and is consumed at most once, by a node
//! id that is not already a member. Every refusal leaves the state untouched. Also prunes tokens
//! long past their expiry when a new one is created, so the key space stays small.
//!
//! Must never read the clock, use randomness, or see a token's secret: the proposer hashes it.

use crate::command::{
    Applied, ApplyError, JoinTokenRecord, JoinTokenRefusal, JoinTokenUse, Outcome,
};
use crate::state::StateError;
use crate::state::context::Ctx;
use crate::state::keys;
use crate::types::{NodeId, StoredMembership};

/// Expired tokens (used or not) are kept this long for the record, then pruned.
pub const KEEP_EXPIRED_MS: u64 = 7 * 86_400_000;
/// Token ids are short hex strings; anything else is refused before it becomes a key.
const MAX_ID_LEN: usize = 64;

fn refuse(r: JoinTokenRefusal) -> Result<Outcome, StateError> {
    Ok(Err(ApplyError::JoinToken(r)))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn create(
    cx: &mut Ctx<'_, '_>,
    id: &str,
    secret_hash: &str,
    expires_ms: u64,
    by: &str,
) -> Result<Outcome, StateError> {
    if !is_hex(id) || id.len() > MAX_ID_LEN {
        return refuse(JoinTokenRefusal::Invalid(
            "a join token id is 1 to 64 lower-case hex digits".into(),
        ));
    }
    if secret_hash.len() != 64 || !is_hex(secret_hash) {
        return refuse(JoinTokenRefusal::Invalid(
            "a join token's secret hash is 64 lower-case hex digits (SHA-256)".into(),
        ));
    }
    if expires_ms <= cx.ts {
        return refuse(JoinTokenRefusal::Invalid(
            "the join token would be expired already".into(),
        ));
    }
    let key = keys::join_token(id);
    if cx.kv.exists(&key)? {
        return refuse(JoinTokenRefusal::Exists { id: id.to_owned() });
    }
    prune(cx)?;
    let record = JoinTokenRecord {
        id: id.to_owned(),
        secret_hash: secret_hash.to_owned(),
        created_ms: cx.ts,
        expires_ms,
        by: by.to_owned(),
        used: None,
    };
    cx.kv.put(key, &record)?;
    Ok(Ok(Applied::JoinTokenCreated {
        id: id.to_owned(),
        expires_ms,
    }))
}

/// Drops tokens that expired more than `KEEP_EXPIRED_MS` before this entry.
fn prune(cx: &mut Ctx<'_, '_>) -> Result<(), StateError> {
    for key in cx.kv.keys_with_prefix(keys::JOIN_TOKEN_PREFIX)? {
        if let Some(t) = cx.kv.get::<JoinTokenRecord>(&key)?
            && t.expires_ms.saturating_add(KEEP_EXPIRED_MS) < cx.ts
        {
            cx.kv.remove(key);
        }
    }
    Ok(())
}

pub fn use_token(
    cx: &mut Ctx<'_, '_>,
    id: &str,
    secret_hash: &str,
    node_id: NodeId,
    (api_addr, cluster_addr): (&str, &str),
) -> Result<Outcome, StateError> {
    let key = keys::join_token(id);
    let Some(mut token) = cx.kv.get::<JoinTokenRecord>(&key)? else {
        return refuse(JoinTokenRefusal::Unknown { id: id.to_owned() });
    };
    // The secret first: without it, nothing about the token's state is revealed.
    if token.secret_hash != secret_hash {
        return refuse(JoinTokenRefusal::WrongSecret { id: id.to_owned() });
    }
    if let Some(u) = &token.used {
        return refuse(JoinTokenRefusal::Used {
            id: id.to_owned(),
            node_id: u.node_id,
        });
    }
    if cx.ts >= token.expires_ms {
        return refuse(JoinTokenRefusal::Expired {
            id: id.to_owned(),
            expires_ms: token.expires_ms,
        });
    }
    if node_id == 0 {
        return refuse(JoinTokenRefusal::Invalid(
            "node id must be at least 1".into(),
        ));
    }
    // The membership as of this entry: every node reaches the same verdict even if an add
    // raced with the join.
    let membership: StoredMembership = cx.kv.get(keys::MEMBERSHIP)?.unwrap_or_default();
    if membership.membership().get_node(&node_id).is_some() {
        return refuse(JoinTokenRefusal::AlreadyMember { node_id });
    }
    token.used = Some(JoinTokenUse {
        node_id,
        at_ms: cx.ts,
        api_addr: api_addr.to_owned(),
        cluster_addr: cluster_addr.to_owned(),
    });
    cx.kv.put(key, &token)?;
    Ok(Ok(Applied::JoinTokenUsed {
        id: id.to_owned(),
        node_id,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::test_apply::{run, tree};
    use crate::storage::sm_store::StateReader;

    const HASH: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    const OTHER: &str = "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9";

    fn create_cmd(id: &str, expires_ms: u64) -> Command {
        Command::CreateJoinToken {
            id: id.into(),
            secret_hash: HASH.into(),
            expires_ms,
            by: "admin".into(),
        }
    }

    fn use_cmd(id: &str, hash: &str, node_id: u64) -> Command {
        Command::UseJoinToken {
            id: id.into(),
            secret_hash: hash.into(),
            node_id,
            api_addr: "127.0.0.4:8080".into(),
            cluster_addr: "127.0.0.4:9080".into(),
        }
    }

    fn refusal(o: &Outcome) -> JoinTokenRefusal {
        match o {
            Err(ApplyError::JoinToken(r)) => r.clone(),
            other => panic!("expected a join token refusal, got {other:?}"),
        }
    }

    /// Everything stored, to prove a refusal changed nothing.
    fn dump(t: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        t.iter()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .filter(|(k, _)| k.as_slice() != keys::LAST_TS)
            .collect()
    }

    fn stored(t: &sled::Tree, id: &str) -> Option<JoinTokenRecord> {
        StateReader::for_tree(t.clone()).join_token(id).unwrap()
    }

    #[test]
    fn a_token_is_used_once() {
        let t = tree();
        let out = run(&t, 1_000, vec![create_cmd("ab12", 61_000)]);
        assert_eq!(
            out[0],
            Ok(Applied::JoinTokenCreated {
                id: "ab12".into(),
                expires_ms: 61_000
            })
        );
        let out = run(&t, 2_000, vec![use_cmd("ab12", HASH, 4)]);
        assert_eq!(
            out[0],
            Ok(Applied::JoinTokenUsed {
                id: "ab12".into(),
                node_id: 4
            })
        );
        let rec = stored(&t, "ab12").unwrap();
        let used = rec.used.unwrap();
        assert_eq!((used.node_id, used.at_ms), (4, 2_000));
        assert_eq!(used.cluster_addr, "127.0.0.4:9080");
        // A second use, even for another node, is refused and changes nothing.
        let before = dump(&t);
        let out = run(&t, 3_000, vec![use_cmd("ab12", HASH, 5)]);
        assert_eq!(
            refusal(&out[0]),
            JoinTokenRefusal::Used {
                id: "ab12".into(),
                node_id: 4
            }
        );
        assert_eq!(dump(&t), before);
    }

    #[test]
    fn two_uses_in_one_entry_let_exactly_one_win() {
        let t = tree();
        run(&t, 1_000, vec![create_cmd("ab12", 61_000)]);
        let out = run(
            &t,
            2_000,
            vec![use_cmd("ab12", HASH, 4), use_cmd("ab12", HASH, 5)],
        );
        assert!(out[0].is_ok(), "{out:?}");
        assert!(matches!(refusal(&out[1]), JoinTokenRefusal::Used { .. }));
    }

    #[test]
    fn unknown_wrong_secret_and_expired_are_refused_without_writing() {
        let t = tree();
        run(&t, 1_000, vec![create_cmd("ab12", 5_000)]);
        let before = dump(&t);
        let out = run(
            &t,
            2_000,
            vec![use_cmd("ffff", HASH, 4), use_cmd("ab12", OTHER, 4)],
        );
        assert_eq!(
            refusal(&out[0]),
            JoinTokenRefusal::Unknown { id: "ffff".into() }
        );
        assert_eq!(
            refusal(&out[1]),
            JoinTokenRefusal::WrongSecret { id: "ab12".into() }
        );
        assert_eq!(dump(&t), before);
        // Expiry is judged against the entry's timestamp: exactly at expires_ms is too late.
        let out = run(&t, 5_000, vec![use_cmd("ab12", HASH, 4)]);
        assert_eq!(
            refusal(&out[0]),
            JoinTokenRefusal::Expired {
                id: "ab12".into(),
                expires_ms: 5_000
            }
        );
        assert_eq!(dump(&t), before);
        assert!(stored(&t, "ab12").unwrap().used.is_none());
    }

    #[test]
    fn a_member_id_cannot_join_again() {
        let t = tree();
        run(&t, 1_000, vec![create_cmd("ab12", 61_000)]);
        let membership = StoredMembership::new(
            None,
            openraft::Membership::new(
                vec![std::collections::BTreeSet::from([1u64])],
                std::collections::BTreeMap::from([(1u64, crate::types::NodeInfo::default())]),
            ),
        );
        t.insert(keys::MEMBERSHIP, bincode::serialize(&membership).unwrap())
            .unwrap();
        let before = dump(&t);
        let out = run(&t, 2_000, vec![use_cmd("ab12", HASH, 1)]);
        assert_eq!(
            refusal(&out[0]),
            JoinTokenRefusal::AlreadyMember { node_id: 1 }
        );
        assert_eq!(dump(&t), before);
        // The token is still usable by a new node.
        let out = run(&t, 2_000, vec![use_cmd("ab12", HASH, 4)]);
        assert!(out[0].is_ok(), "{out:?}");
    }

    #[test]
    fn bad_creations_are_refused_and_old_tokens_pruned() {
        let t = tree();
        let out = run(
            &t,
            10_000,
            vec![
                create_cmd("AB/x", 20_000),
                create_cmd("ab", 10_000),
                Command::CreateJoinToken {
                    id: "cd".into(),
                    secret_hash: "short".into(),
                    expires_ms: 20_000,
                    by: "admin".into(),
                },
                create_cmd("ab", 20_000),
                create_cmd("ab", 30_000),
            ],
        );
        assert!(matches!(refusal(&out[0]), JoinTokenRefusal::Invalid(_)));
        assert!(matches!(refusal(&out[1]), JoinTokenRefusal::Invalid(_)));
        assert!(matches!(refusal(&out[2]), JoinTokenRefusal::Invalid(_)));
        assert!(out[3].is_ok());
        assert_eq!(
            refusal(&out[4]),
            JoinTokenRefusal::Exists { id: "ab".into() }
        );
        // Long after "ab" expired, creating another token prunes it.
        let later = 20_000 + KEEP_EXPIRED_MS + 1;
        run(&t, later, vec![create_cmd("cd", later + 1_000)]);
        assert!(stored(&t, "ab").is_none());
        assert!(stored(&t, "cd").is_some());
    }
}
