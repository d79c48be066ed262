//! A log entry this binary must not apply stops the state machine there, with the real storage
//! (segment log + sled): an entry of a newer command version, and an entry whose commands this
//! binary cannot decode at all (an unknown `Command` variant, as a newer binary writes it).
//! Neither is applied nor skipped: the applied index stays just before it, nothing of it is
//! written, the error names the version needed, and all of that holds after a reopen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;

use cluster::command::{COMMAND_VERSION, Command, Request, Role};
use cluster::state::events::EventBus;
use cluster::storage::fsutil;
use cluster::storage::log_store::LogStore;
use cluster::storage::sm_store::StateMachineStore;
use cluster::types::Entry;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader};
use tempfile::TempDir;

const TS: u64 = 1_700_000_000_000;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn create_user(name: &str) -> Command {
    Command::CreateUser {
        username: name.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role: Role::Member,
    }
}

fn entry(index: u64, version: u16, user: &str) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request::new(
            version,
            TS + index,
            vec![create_user(user)].into(),
        )),
    }
}

struct Store {
    log: LogStore,
    sm: StateMachineStore,
    _db: sled::Db,
}

fn open(dir: &Path) -> Store {
    let log = LogStore::open(dir).unwrap();
    let db = sled::Config::new().path(dir.join("state")).open().unwrap();
    let sm = StateMachineStore::open(&db, dir, EventBus::new(16)).unwrap();
    Store { log, sm, _db: db }
}

fn has_user(store: &Store, name: &str) -> bool {
    store.sm.reader().user(name).unwrap().is_some()
}

/// Applies every entry of the log from `from` on, as openraft would after a restart.
async fn apply_from(store: &mut Store, from: u64) -> Result<(), String> {
    let entries = store.log.try_get_log_entries(from..).await.unwrap();
    store
        .sm
        .apply(entries)
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

async fn applied(store: &mut Store) -> Option<u64> {
    store.sm.applied_state().await.unwrap().0.map(|l| l.index)
}

/// Checks the stop: the error names the entry and the version, the entry before it is
/// applied, it and everything after it are not, and the node's stop reason is set.
async fn assert_stopped_at(store: &mut Store, err: &str, index: u64, needed: u16) {
    let expected = format!(
        "log entry at index {index} needs command version {needed}; this binary speaks up to {COMMAND_VERSION}: upgrade this node"
    );
    assert!(err.contains(&expected), "error {err:?} lacks {expected:?}");
    assert_eq!(applied(store).await, Some(index - 1), "applied index");
    assert!(
        has_user(store, "before"),
        "the entry before the stop was applied"
    );
    assert!(
        !has_user(store, "stopper"),
        "nothing of the refused entry is written"
    );
    assert!(
        !has_user(store, "after"),
        "nothing after the refused entry is applied"
    );
}

#[tokio::test]
async fn entry_of_a_newer_version_stops_apply_and_stays_stopped_after_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path());
        store
            .log
            .blocking_append([
                entry(1, COMMAND_VERSION, "before"),
                entry(2, COMMAND_VERSION + 1, "stopper"),
                entry(3, COMMAND_VERSION, "after"),
            ])
            .await
            .unwrap();
        let err = apply_from(&mut store, 1).await.unwrap_err();
        assert_stopped_at(&mut store, &err, 2, COMMAND_VERSION + 1).await;
        let reason = store.sm.version_stop().get().cloned().unwrap_or_default();
        assert!(
            reason.contains("upgrade this node"),
            "stop reason {reason:?}"
        );
    }
    // After a restart openraft replays from the applied index: the same stop, nothing skipped.
    let mut store = open(dir.path());
    assert_eq!(applied(&mut store).await, Some(1));
    let err = apply_from(&mut store, 2).await.unwrap_err();
    assert_stopped_at(&mut store, &err, 2, COMMAND_VERSION + 1).await;
}

/// An entry as a newer binary encodes it: the `Request` prefix (`version`, `ts_ms`) this binary
/// knows, then one command of a variant it has never heard of.
fn future_entry_bytes(index: u64, version: u16) -> Vec<u8> {
    let unknown_variant: u32 = 999;
    bincode::serialize(&(
        log_id(index),
        1u32, // EntryPayload::Normal
        version,
        TS + index,
        1u64, // one command
        unknown_variant,
        "fields of a command this binary does not know",
    ))
    .unwrap()
}

/// Appends one framed record to the log's newest segment, as `append` would have written it.
fn append_raw(dir: &Path, payload: &[u8]) {
    let log_dir = dir.join("log");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let mut framed = Vec::new();
    fsutil::frame(payload, &mut framed);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segments.last().unwrap())
        .unwrap();
    f.write_all(&framed).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn undecodable_entry_is_kept_and_stops_apply_naming_its_version() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path());
        store
            .log
            .blocking_append([entry(1, COMMAND_VERSION, "before")])
            .await
            .unwrap();
    }
    // The bytes really are undecodable here.
    let bytes = future_entry_bytes(2, COMMAND_VERSION + 1);
    assert!(bincode::deserialize::<Entry>(&bytes).is_err());
    append_raw(dir.path(), &bytes);

    // The log still opens (the node can start and say why it stopped).
    let mut store = open(dir.path());
    let entries = store.log.try_get_log_entries(1..).await.unwrap();
    assert_eq!(entries.len(), 2);
    let EntryPayload::Normal(placeholder) = &entries[1].payload else {
        panic!(
            "entry 2 should read back as a placeholder: {:?}",
            entries[1]
        );
    };
    assert_eq!(placeholder.version, COMMAND_VERSION + 1);
    assert!(placeholder.undecodable.is_some());
    // A placeholder can never be encoded again (sent to a peer or re-appended without its
    // commands).
    assert!(bincode::serialize(&entries[1]).is_err());

    let err = apply_from(&mut store, 1).await.unwrap_err();
    assert_stopped_at(&mut store, &err, 2, COMMAND_VERSION + 1).await;
    drop(store);
    let mut store = open(dir.path());
    assert_eq!(applied(&mut store).await, Some(1));
    let err = apply_from(&mut store, 2).await.unwrap_err();
    assert_stopped_at(&mut store, &err, 2, COMMAND_VERSION + 1).await;
}

/// A version this binary speaks with a command it cannot decode is not an upgrade but a
/// corrupt entry or a bug: the same stop, with a message that says so.
#[tokio::test]
async fn undecodable_entry_of_a_known_version_stops_too() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path());
        store
            .log
            .blocking_append([entry(1, COMMAND_VERSION, "before")])
            .await
            .unwrap();
    }
    append_raw(dir.path(), &future_entry_bytes(2, COMMAND_VERSION));
    let mut store = open(dir.path());
    let err = apply_from(&mut store, 1).await.unwrap_err();
    assert!(
        err.contains(&format!(
            "log entry at index 2 (command version {COMMAND_VERSION}) cannot be decoded by this binary"
        )),
        "{err}"
    );
    assert_eq!(applied(&mut store).await, Some(1));
    assert!(has_user(&store, "before"));
}

// ---- a running member (in-process, one voter): it stays up, not ready, and a restart ----
// ---- stops it at the same entry again instead of failing to start                      ----

async fn start_member(dir: &Path) -> std::sync::Arc<cluster::ClusterNode> {
    let info = cluster::NodeInfo {
        api_addr: "127.0.0.1:1".into(),
        cluster_addr: "127.0.0.1:2".into(),
    };
    let cfg = cluster::ClusterConfig::with_defaults(1, dir.to_path_buf(), info);
    cluster::ClusterNode::start(cfg, tokio_util::sync::CancellationToken::new())
        .await
        .expect("a member holding an entry it cannot apply still starts")
}

/// Waits until the member reports the version stop as its readiness reason.
async fn wait_version_stop(node: &cluster::ClusterNode) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = node.readiness();
        if let Some(reason) = r.reason.as_deref().filter(|_| !r.ready)
            && reason.contains("needs command version")
        {
            return reason.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no version stop reported; readiness {r:?}, metrics {:?}",
            node.metrics()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_member_stops_not_ready_and_stays_so_across_restart() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let stop_index;
    {
        let node = start_member(&data).await;
        node.initialize().await.unwrap();
        node.raft()
            .wait(Some(std::time::Duration::from_secs(10)))
            .state(openraft::ServerState::Leader, "leader")
            .await
            .unwrap();
        node.write(create_user("before")).await.unwrap();
        // What a newer binary would propose; this binary's own write path never does (gate).
        let newer = Request::new(COMMAND_VERSION + 1, TS, vec![create_user("stopper")].into());
        assert!(node.raft().client_write(newer).await.is_err());
        let reason = wait_version_stop(&node).await;
        assert!(reason.ends_with("upgrade this node"), "{reason}");
        stop_index = node.metrics().last_log_index.unwrap();
        assert_eq!(
            node.metrics().last_applied.map(|l| l.index),
            Some(stop_index - 1),
            "applied up to the entry before the stop"
        );
        assert!(
            !node.fatal().is_cancelled(),
            "a version stop must not make the process exit (a restart would stop again)"
        );
        assert!(node.reader().user("stopper").unwrap().is_none());
        node.shutdown().await;
    }
    let node = start_member(&data).await;
    let reason = wait_version_stop(&node).await;
    assert!(
        reason.contains(&format!(
            "log entry at index {stop_index} needs command version"
        )),
        "{reason}"
    );
    assert!(!node.fatal().is_cancelled());
    assert!(node.reader().user("before").unwrap().is_some());
    assert!(node.reader().user("stopper").unwrap().is_none());
    node.shutdown().await;
}

/// `Request`'s hand-written `Serialize` (needed to refuse placeholders) writes exactly what the
/// derived one wrote before, which is what older binaries decode.
#[test]
fn request_encoding_is_unchanged() {
    #[derive(serde::Serialize)]
    struct AsDerivedBefore {
        version: u16,
        ts_ms: u64,
        commands: std::sync::Arc<[Command]>,
    }
    let commands: std::sync::Arc<[Command]> = vec![create_user("a"), create_user("b")].into();
    let req = Request::new(5, TS, commands.clone());
    let before = AsDerivedBefore {
        version: 5,
        ts_ms: TS,
        commands,
    };
    assert_eq!(
        bincode::serialize(&req).unwrap(),
        bincode::serialize(&before).unwrap()
    );
}
