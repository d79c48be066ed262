//! A data directory seeded from a state stream (`storage::seed`, what `restore` and
//! `recover --force-new-cluster` write) starts as a one-voter cluster: openraft opens it, the node
//! elects itself in a term above the source's, keeps the source's records (minus the filtered
//! ones) and takes new writes at indexes after the source's. And `storage::survivor` applies a
//! stopped member's unapplied log entries offline before its state is exported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use cluster::command::{COMMAND_VERSION, Command, Request, Role};
use cluster::state::events::EventBus;
use cluster::state::keys;
use cluster::storage::log_store::LogStore;
use cluster::storage::recovery::StoreOptions;
use cluster::storage::seed::{self, SeedSpec};
use cluster::storage::sm_store::StateMachineStore;
use cluster::storage::survivor::Survivor;
use cluster::types::Entry;
use cluster::{ClusterConfig, ClusterNode, NodeInfo};
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId, ServerState};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

fn create_user(name: &str) -> Command {
    Command::CreateUser {
        username: name.to_owned(),
        password_hash: HASH.to_owned(),
        role: Role::Member,
    }
}

fn entry(term: u64, index: u64, user: &str) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 2), index),
        payload: EntryPayload::Normal(Request::new(
            COMMAND_VERSION,
            1_700_000_000_000 + index,
            vec![create_user(user)].into(),
        )),
    }
}

fn info() -> NodeInfo {
    NodeInfo {
        api_addr: "127.0.0.1:1".into(),
        cluster_addr: "127.0.0.1:2".into(),
    }
}

/// A source state: users applied through the real state machine at term 5, indexes 1..=3,
/// plus records the seed must drop (a session, a join token, a draining flag).
async fn source(dir: &Path) -> (sled::Db, LogId<u64>) {
    let db = sled::Config::new().path(dir.join("state")).open().unwrap();
    let mut sm = StateMachineStore::open(&db, dir, EventBus::new(16)).unwrap();
    sm.apply([
        entry(5, 1, "alice"),
        entry(5, 2, "bob"),
        entry(5, 3, "carol"),
    ])
    .await
    .unwrap();
    let tree = db.open_tree("sm").unwrap();
    tree.insert(keys::session("deadbeef"), b"x".as_slice())
        .unwrap();
    tree.insert(keys::join_token("abcd"), b"x".as_slice())
        .unwrap();
    tree.insert(keys::draining(2), b"x".as_slice()).unwrap();
    (db, LogId::new(CommittedLeaderId::new(5, 2), 3))
}

async fn start(dir: &Path, id: u64) -> (std::sync::Arc<ClusterNode>, CancellationToken) {
    let cancel = CancellationToken::new();
    let node = ClusterNode::start(
        ClusterConfig::with_defaults(id, dir.to_path_buf(), info()),
        cancel.clone(),
    )
    .await
    .unwrap();
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .state(ServerState::Leader, "the seeded node elects itself")
        .await
        .unwrap();
    (node, cancel)
}

#[tokio::test]
async fn a_seeded_dir_starts_a_one_voter_cluster_that_takes_writes() {
    let src = TempDir::new().unwrap();
    let (db, last) = source(src.path()).await;
    let tree = db.open_tree("sm").unwrap();
    let dst = TempDir::new().unwrap();
    let data = dst.path().join("data");
    let spec = SeedSpec {
        node_id: 7,
        info: info(),
        last_log_id: last,
        keep_sessions: false,
    };
    let records = tree
        .iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())));
    let seeded = seed::seed(&data, &spec, records).unwrap();
    assert_eq!(seeded.dropped, 3, "session, join token and draining flag");
    assert_eq!(seeded.vote.leader_id().term, 6);

    // A second seed into the same directory is refused, whatever the records.
    let again = seed::seed(&data, &spec, std::iter::empty::<Result<_, Infallible>>());
    assert!(
        matches!(again, Err(seed::SeedError::NotEmpty(_))),
        "{again:?}"
    );

    let (node, cancel) = start(&data, 7).await;
    let m = node.metrics();
    assert!(
        m.current_term > 5,
        "term {} above the source's",
        m.current_term
    );
    assert_eq!(
        node.members()
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec![7]
    );
    let r = node.reader();
    for u in ["alice", "bob", "carol"] {
        assert!(r.user(u).unwrap().is_some(), "{u} kept");
    }
    assert!(r.tree().get(keys::session("deadbeef")).unwrap().is_none());
    assert!(r.tree().get(keys::join_token("abcd")).unwrap().is_none());
    assert!(r.tree().get(keys::draining(2)).unwrap().is_none());

    let (_, index) = node.write(create_user("dave")).await.unwrap();
    assert!(
        index > 3,
        "new entries follow the source's index, got {index}"
    );
    assert!(node.reader().user("dave").unwrap().is_some());
    cancel.cancel();
    node.shutdown().await;

    // And it comes back after a restart with everything.
    let (node, cancel) = start(&data, 7).await;
    assert!(node.reader().user("dave").unwrap().is_some());
    assert!(node.reader().user("alice").unwrap().is_some());
    cancel.cancel();
    node.shutdown().await;
}

#[tokio::test]
async fn a_survivor_applies_its_unapplied_log_before_export() {
    let dir = TempDir::new().unwrap();
    {
        // As a member's log: the membership {2} at index 0, then three entries. No proof of the
        // state machine (a crash): the open rebuilds it, with nothing applied.
        let members = std::collections::BTreeMap::from([(2u64, info())]);
        let voters = std::collections::BTreeSet::from([2u64]);
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append([
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(3, 2), 0),
                payload: EntryPayload::Membership(openraft::Membership::new(vec![voters], members)),
            },
            entry(3, 1, "alice"),
            entry(3, 2, "bob"),
            entry(4, 3, "carol"),
        ])
        .await
        .unwrap();
    }
    let opts = StoreOptions {
        cache_bytes: 16 << 20,
        segment_bytes: cluster::storage::log_store::SEGMENT_BYTES,
    };
    let mut s = Survivor::open(dir.path(), opts).await.unwrap();
    assert_eq!(s.found.last_log_id.map(|l| l.index), Some(3));
    assert!(s.found.is_voter(2));
    assert!(!s.found.is_voter(1));
    let applied = s.apply_local_log().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(3));
    let users: Vec<String> = s
        .records()
        .map(Result::unwrap)
        .filter_map(|(k, _)| {
            k.strip_prefix(keys::USER_PREFIX)
                .map(|u| String::from_utf8(u.to_vec()).unwrap())
        })
        .collect();
    assert_eq!(users, vec!["alice", "bob", "carol"]);
    s.close().await.unwrap();
}
