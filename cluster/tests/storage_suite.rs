//! openraft's own conformance suite against Conclave's storage (segment log + sled state
//! machine), plus crash-shaped checks the suite does not cover: reopen after appends, a torn
//! tail, and a vote that must survive a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cluster::state::events::EventBus;
use cluster::storage::log_store::LogStore;
use cluster::storage::sm_store::StateMachineStore;
use cluster::types::{Entry, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader, StorageError, Vote};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TempDir::new().unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("state"))
            .open()
            .unwrap();
        let sm = StateMachineStore::open(&db, dir.path(), EventBus::new(16)).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

#[tokio::test]
async fn log_and_vote_survive_reopen_and_purge() {
    let dir = TempDir::new().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.blocking_append((1..=10).map(|i| blank(1, i)))
            .await
            .unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 4))
            .await
            .unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 9))
            .await
            .unwrap();
        log.blocking_append([blank(2, 9)]).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(4));
    assert_eq!(
        state.last_log_id,
        Some(LogId::new(CommittedLeaderId::new(2, 1), 9))
    );
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    let idx: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(idx, (5..=9).collect::<Vec<_>>());
}

#[tokio::test]
async fn torn_tail_is_cut_and_earlier_entries_kept() {
    let dir = TempDir::new().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=3).map(|i| blank(1, i)))
            .await
            .unwrap();
    }
    // Simulate a crash in the middle of writing a fourth record.
    let seg = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&seg, &bytes).unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    log.blocking_append([blank(1, 4)]).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        log.get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map(|l| l.index),
        Some(4)
    );
}

fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap()
}

async fn three_entries() -> TempDir {
    let dir = TempDir::new().unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    log.blocking_append((1..=3).map(|i| blank(1, i)))
        .await
        .unwrap();
    dir
}

fn open_err(dir: &std::path::Path) -> std::io::Error {
    match LogStore::open(dir) {
        Ok(_) => panic!("the damaged log opened"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn flipped_bit_before_valid_records_is_corruption_not_a_torn_tail() {
    let dir = three_entries().await;
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[10] ^= 0xff; // inside the first record's payload; records 2 and 3 are intact
    std::fs::write(&seg, &bytes).unwrap();
    // Cutting here would drop acknowledged entries 1..=3: the store refuses to open instead
    // (the node then quarantines it and heals from its peers).
    let e = open_err(dir.path());
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

#[tokio::test]
async fn flipped_bit_in_the_last_complete_record_is_corruption() {
    let dir = three_entries().await;
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01; // the last record is complete (a crash keeps a prefix): durable bytes changed
    std::fs::write(&seg, &bytes).unwrap();
    assert_eq!(open_err(dir.path()).kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn flipped_bit_in_a_length_field_is_corruption() {
    let dir = three_entries().await;
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[1] ^= 0x40; // the first record's length now runs past the end of the file
    std::fs::write(&seg, &bytes).unwrap();
    assert_eq!(open_err(dir.path()).kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn zeros_after_the_last_record_are_a_torn_tail() {
    let dir = three_entries().await;
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 100]);
    std::fs::write(&seg, &bytes).unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
}

#[tokio::test]
async fn a_torn_prefix_of_a_batch_is_a_torn_tail() {
    let dir = three_entries().await;
    let seg = only_segment(dir.path());
    let whole = std::fs::read(&seg).unwrap();
    // Entries 4 and 5 written as one batch, torn inside entry 5: 4 survives, 5 is cut.
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((4..=5).map(|i| blank(1, i)))
            .await
            .unwrap();
    }
    let with_batch = std::fs::read(&seg).unwrap();
    let record = (with_batch.len() - whole.len()) / 2;
    for keep in [1, 7, 8, record - 1] {
        std::fs::write(&seg, &with_batch[..whole.len() + record + keep]).unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(
            state.last_log_id.map(|l| l.index),
            Some(4),
            "torn after {keep} bytes"
        );
    }
}

fn posting(index: u64, commands: Vec<cluster::command::Command>) -> Entry {
    let req = cluster::command::Request::new(
        cluster::command::COMMAND_VERSION,
        1_000 + index,
        commands.into(),
    );
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(req),
    }
}

fn post(id: &str) -> cluster::command::Command {
    cluster::command::Command::PostMessage {
        channel: "general".into(),
        author: "alice".into(),
        body: format!("body {id}"),
        client_msg_id: id.into(),
    }
}

/// A snapshot holds exactly the state at its point, however much is applied while it is built
/// (the copy-on-write view). A snapshot that saw later writes mixed states: after a power cut
/// a node rebuilt from it plus the log took a replayed post for a duplicate and lost it.
#[tokio::test]
async fn a_snapshot_is_the_state_at_its_point_while_apply_goes_on() {
    use cluster::command::{Command, Role};
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    let (_dir, _log, mut sm) = Builder.build().await.unwrap();
    let setup = vec![
        Command::CreateUser {
            username: "alice".into(),
            password_hash: "h".into(),
            role: Role::Admin,
        },
        Command::CreateChannel {
            name: "general".into(),
            creator: "alice".into(),
        },
    ];
    sm.apply([posting(1, setup), posting(2, vec![post("a")])])
        .await
        .unwrap();
    let mut builder = sm.get_snapshot_builder().await;
    // Applied after the snapshot point, before the builder walks the tree.
    sm.apply([posting(3, vec![post("b"), post("c")])])
        .await
        .unwrap();
    let snap = builder.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(2));

    let (_dir2, _log2, mut fresh) = Builder.build().await.unwrap();
    fresh
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(
        fresh.reader().last_seq("general").unwrap(),
        Some(1),
        "the snapshot at index 2 holds one post"
    );
    // Replaying the log after it gives the live state: every post once, in order.
    fresh
        .apply([posting(3, vec![post("b"), post("c")])])
        .await
        .unwrap();
    assert_eq!(fresh.reader().last_seq("general").unwrap(), Some(3));
    assert_eq!(
        fresh.reader().last_seq("general").unwrap(),
        sm.reader().last_seq("general").unwrap()
    );
}
