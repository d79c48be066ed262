//! Tests of the state machine's rules through `apply_request`, the way the log applies them:
//! sequences, idempotent posts, timestamps, chat permissions and the account rules that span
//! several commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::chat::{self, channel_view};
use super::events::EventKind;
use super::test_apply::{apply_entry, run, tree};
use super::{Overlay, keys};
use crate::command::{Applied, ApplyError, COMMAND_VERSION, ChannelKind, Command, Outcome, Role};

fn setup(tree: &sled::Tree) {
    run(
        tree,
        10,
        vec![
            Command::CreateUser {
                username: "alice".into(),
                password_hash: "h".into(),
                role: Role::Admin,
            },
            Command::CreateChannel {
                name: "general".into(),
                creator: "alice".into(),
            },
        ],
    );
}

fn post(id: &str, body: &str) -> Command {
    Command::PostMessage {
        channel: "general".into(),
        author: "alice".into(),
        body: body.into(),
        client_msg_id: id.into(),
    }
}

#[test]
fn sequences_are_gap_free_within_one_batch_and_across_batches() {
    let t = tree();
    setup(&t);
    let out = run(&t, 20, vec![post("a", "1"), post("b", "2")]);
    let out2 = run(&t, 30, vec![post("c", "3")]);
    let seqs: Vec<u64> = out
        .iter()
        .chain(out2.iter())
        .map(|o| match o {
            Ok(Applied::Message { message, .. }) => message.seq,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

#[test]
fn retried_post_returns_original_and_writes_nothing() {
    let t = tree();
    setup(&t);
    run(&t, 20, vec![post("a", "first")]);
    let out = run(&t, 25, vec![post("a", "changed body"), post("a", "again")]);
    for o in out {
        match o {
            Ok(Applied::Message { message, duplicate }) => {
                assert!(duplicate);
                assert_eq!(message.seq, 1);
                assert_eq!(message.body, "first");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let st = crate::storage::state_tree::StateTree::new(t.clone());
    let ch = channel_view(&Overlay::new(&st), "general")
        .unwrap()
        .unwrap();
    assert_eq!(ch.last_seq, 1);
}

#[test]
fn timestamps_never_go_backwards() {
    let t = tree();
    setup(&t);
    let out = run(&t, 5, vec![post("a", "x")]);
    match &out[0] {
        Ok(Applied::Message { message, .. }) => assert_eq!(message.ts_ms, 10),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn rules_refuse_without_writing() {
    let t = tree();
    setup(&t);
    let before: Vec<_> = t.iter().collect();
    let out = run(
        &t,
        20,
        vec![
            Command::CreateUser {
                username: "alice".into(),
                password_hash: "h2".into(),
                role: Role::Member,
            },
            Command::CreateChannel {
                name: "general".into(),
                creator: "alice".into(),
            },
            Command::PostMessage {
                channel: "nope".into(),
                author: "alice".into(),
                body: "x".into(),
                client_msg_id: "z".into(),
            },
            Command::JoinChannel {
                name: "general".into(),
                username: "ghost".into(),
            },
        ],
    );
    assert_eq!(out[0], Err(ApplyError::UserExists("alice".into())));
    assert_eq!(out[1], Err(ApplyError::ChannelExists("general".into())));
    assert_eq!(out[2], Err(ApplyError::ChannelNotFound("nope".into())));
    assert_eq!(out[3], Err(ApplyError::UnknownUser("ghost".into())));
    // Only the clock key may have moved.
    let after: Vec<_> = t
        .iter()
        .filter(|kv| {
            kv.as_ref()
                .map(|(k, _)| &k[..] != keys::LAST_TS)
                .unwrap_or(true)
        })
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|kv| {
            kv.as_ref()
                .map(|(k, _)| &k[..] != keys::LAST_TS)
                .unwrap_or(true)
        })
        .collect();
    assert_eq!(before.len(), after.len());
}

#[test]
fn non_member_cannot_post() {
    let t = tree();
    setup(&t);
    run(
        &t,
        20,
        vec![Command::CreateUser {
            username: "bob".into(),
            password_hash: "h".into(),
            role: Role::Member,
        }],
    );
    let out = run(
        &t,
        21,
        vec![Command::PostMessage {
            channel: "general".into(),
            author: "bob".into(),
            body: "hi".into(),
            client_msg_id: "1".into(),
        }],
    );
    assert!(matches!(out[0], Err(ApplyError::NotMember { .. })));
}

fn user(name: &str, role: Role) -> Command {
    Command::CreateUser {
        username: name.into(),
        password_hash: "h".into(),
        role,
    }
}

fn reader(t: &sled::Tree) -> crate::storage::sm_store::StateReader {
    crate::storage::sm_store::StateReader::for_tree(t.clone())
}

fn post2(author: &str, id: &str, body: &str, root: Option<u64>) -> Command {
    Command::PostMessageV2 {
        channel: "general".into(),
        author: author.into(),
        body: body.into(),
        client_msg_id: id.into(),
        thread_root: root,
    }
}

#[test]
fn dm_is_idempotent_and_closed() {
    let t = tree();
    setup(&t);
    run(
        &t,
        11,
        vec![user("bob", Role::Member), user("carol", Role::Member)],
    );
    let name = chat::dm_name(&["bob".into(), "alice".into()]);
    assert_eq!(name, "dm:alice:bob");
    let dm = |creator: &str| Command::CreateChannelV2 {
        name: name.clone(),
        creator: creator.into(),
        kind: ChannelKind::Direct,
        title: String::new(),
        topic: String::new(),
        members: vec!["alice".into(), "bob".into()],
    };
    let out = run(&t, 12, vec![dm("alice"), dm("bob")]);
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
    let out = run(
        &t,
        13,
        vec![Command::AddMember {
            channel: name.clone(),
            username: "carol".into(),
            by: "alice".into(),
        }],
    );
    assert!(matches!(out[0], Err(ApplyError::Forbidden(_))));
    let r = reader(&t);
    assert_eq!(r.can_read(&name, "carol").unwrap(), Some(false));
    assert_eq!(r.can_read(&name, "bob").unwrap(), Some(true));
    assert!(
        r.channels_for("carol")
            .unwrap()
            .iter()
            .all(|c| c.channel.name != name)
    );
}

#[test]
fn edits_deletes_reactions_threads_and_events() {
    let t = tree();
    setup(&t);
    run(&t, 11, vec![user("bob", Role::Member)]);
    run(
        &t,
        12,
        vec![Command::AddMember {
            channel: "general".into(),
            username: "bob".into(),
            by: "bob".into(),
        }],
    );
    run(&t, 13, vec![post2("alice", "a1", "hi @bob", None)]);
    run(&t, 14, vec![post2("bob", "b1", "reply", Some(1))]);
    let out = run(
        &t,
        15,
        vec![
            Command::EditMessage {
                channel: "general".into(),
                seq: 1,
                by: "bob".into(),
                body: "hijack".into(),
            },
            Command::EditMessage {
                channel: "general".into(),
                seq: 1,
                by: "alice".into(),
                body: "hello @bob".into(),
            },
            Command::SetReaction {
                channel: "general".into(),
                seq: 1,
                user: "bob".into(),
                emoji: "👍".into(),
                add: true,
            },
            Command::DeleteMessage {
                channel: "general".into(),
                seq: 2,
                by: "alice".into(),
            },
        ],
    );
    assert!(matches!(out[0], Err(ApplyError::Forbidden(_))));
    assert!(out[1].is_ok() && out[2].is_ok());
    // alice is an admin: she may delete bob's reply.
    assert!(out[3].is_ok(), "{:?}", out[3]);
    let r = reader(&t);
    let m1 = r.message_view("general", 1).unwrap().unwrap();
    assert_eq!(m1.body, "hello @bob");
    assert!(m1.edited_at_ms.is_some());
    assert_eq!(m1.reply_count, 1);
    assert_eq!(m1.reactions["👍"].len(), 1);
    let m2 = r.message_view("general", 2).unwrap().unwrap();
    assert!(m2.deleted && m2.body.is_empty());
    assert_eq!(m2.thread_root, Some(1));
    // Every change got the next ev: members alice, bob, post, reply, edit, reaction, delete.
    let evs = r.events_after("general", 0, 100).unwrap();
    let numbers: Vec<u64> = evs.iter().map(|(e, _)| *e).collect();
    assert_eq!(numbers, (1..=7).collect::<Vec<_>>());
    // Bob was mentioned once; reading up to seq 1 clears it.
    assert_eq!(
        r.read_state("bob", "general").unwrap().mentions,
        0,
        "bob posted seq 2, which marks it read"
    );
    assert_eq!(r.read_state("alice", "general").unwrap().unread, 1);
}

#[test]
fn read_markers_only_move_forward_and_clear_mentions() {
    let t = tree();
    setup(&t);
    run(&t, 11, vec![user("bob", Role::Member)]);
    run(
        &t,
        12,
        vec![Command::AddMember {
            channel: "general".into(),
            username: "bob".into(),
            by: "bob".into(),
        }],
    );
    run(
        &t,
        13,
        vec![
            post2("alice", "a1", "@bob one", None),
            post2("alice", "a2", "@channel two", None),
        ],
    );
    let r = reader(&t);
    let rs = r.read_state("bob", "general").unwrap();
    assert_eq!((rs.unread, rs.mentions), (2, 2));
    let mark = |seq| Command::MarkRead {
        channel: "general".into(),
        username: "bob".into(),
        seq,
    };
    run(&t, 14, vec![mark(1)]);
    let rs = r.read_state("bob", "general").unwrap();
    assert_eq!((rs.last_read, rs.unread, rs.mentions), (1, 1, 1));
    run(&t, 15, vec![mark(0)]);
    assert_eq!(r.read_state("bob", "general").unwrap().last_read, 1);
}

#[test]
fn login_throttle_backs_off_and_resets() {
    let t = tree();
    setup(&t);
    let attempt = || Command::LoginAttempt {
        username: "alice".into(),
    };
    let allowed = |o: &Outcome| matches!(o, Ok(Applied::LoginAttempt { allowed: true, .. }));
    for i in 0..5 {
        assert!(allowed(&run(&t, 100 + i, vec![attempt()])[0]));
    }
    // Sixth at once: refused, retry after the 1 s base backoff.
    let out = run(&t, 105, vec![attempt()]);
    assert!(matches!(
        out[0],
        Ok(Applied::LoginAttempt { allowed: false, retry_after_ms }) if retry_after_ms == 999
    ));
    assert!(allowed(&run(&t, 1104, vec![attempt()])[0]));
    // Next one needs 2 s.
    assert!(!allowed(&run(&t, 2000, vec![attempt()])[0]));
    run(
        &t,
        3200,
        vec![Command::CreateSession {
            token_hash: "x".into(),
            username: "alice".into(),
            ttl_ms: 1000,
        }],
    );
    assert!(allowed(&run(&t, 3201, vec![attempt()])[0]));
    // Unknown users leave nothing behind.
    run(
        &t,
        3300,
        vec![Command::LoginAttempt {
            username: "ghost".into(),
        }],
    );
    assert!(t.get(keys::login_throttle("ghost")).unwrap().is_none());
}

#[test]
fn disabling_revokes_sessions_and_only_admins_may() {
    let t = tree();
    setup(&t);
    run(&t, 11, vec![user("bob", Role::Member)]);
    run(
        &t,
        12,
        vec![Command::CreateSession {
            token_hash: "bobtoken".into(),
            username: "bob".into(),
            ttl_ms: 10_000,
        }],
    );
    let disable = |by: &str| Command::UpdateUser {
        username: "bob".into(),
        by: by.into(),
        disabled: Some(true),
        role: None,
        display_name: None,
    };
    let out = run(&t, 13, vec![disable("bob")]);
    assert!(matches!(out[0], Err(ApplyError::Forbidden(_))));
    let (_, events) = apply_entry(&t, COMMAND_VERSION, 14, 9, vec![disable("alice")]);
    assert!(events.iter().any(
        |e| matches!(&e.kind, EventKind::SessionRevoked { token_hash } if token_hash == "bobtoken")
    ));
    assert!(reader(&t).session("bobtoken").unwrap().is_none());
    assert_eq!(reader(&t).active_version().unwrap(), COMMAND_VERSION);
}

/// Version 7: a member mutes and unmutes a channel for themselves; a non-member cannot; the
/// setting shows in their channel list only, and setting it twice changes nothing.
#[test]
fn members_mute_channels_for_themselves() {
    let t = tree();
    setup(&t);
    run(
        &t,
        11,
        vec![Command::CreateUser {
            username: "bob".into(),
            password_hash: "h".into(),
            role: Role::Member,
        }],
    );
    let mute = |user: &str, channel: &str, muted| Command::SetChannelMuted {
        channel: channel.into(),
        username: user.into(),
        muted,
    };
    let r = reader(&t);
    let out = run(&t, 12, vec![mute("alice", "general", true)]);
    assert!(
        matches!(&out[0], Ok(Applied::MuteSet { muted: true, .. })),
        "{out:?}"
    );
    assert!(r.is_muted("alice", "general").unwrap());
    let listed = |user: &str| {
        r.channels_for(user)
            .unwrap()
            .into_iter()
            .find(|c| c.channel.name == "general")
            .map(|c| c.muted)
    };
    assert_eq!(listed("alice"), Some(true));
    // Bob sees the public channel, not alice's setting; and he may not mute it unjoined.
    assert_eq!(listed("bob"), Some(false));
    let out = run(&t, 13, vec![mute("bob", "general", true)]);
    assert!(
        matches!(&out[0], Err(ApplyError::NotMember { .. })),
        "{out:?}"
    );
    assert!(!r.is_muted("bob", "general").unwrap());
    let out = run(&t, 14, vec![mute("alice", "nowhere", true)]);
    assert!(
        matches!(&out[0], Err(ApplyError::ChannelNotFound(_))),
        "{out:?}"
    );
    // Again: no change; then unmuted.
    let out = run(&t, 15, vec![mute("alice", "general", true)]);
    assert!(matches!(&out[0], Ok(Applied::MuteSet { muted: true, .. })));
    run(&t, 16, vec![mute("alice", "general", false)]);
    assert!(!r.is_muted("alice", "general").unwrap());
    assert_eq!(listed("alice"), Some(false));
}
