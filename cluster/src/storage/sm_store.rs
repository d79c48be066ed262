//! The state machine: applies committed entries to a sled tree, builds and installs snapshots.
//!
//! Owns the `sm` tree of the node's sled database and the snapshot file. Durability: the tree is
//! NOT fsynced per entry (sled syncs it in the background); after a crash it comes back at some
//! earlier applied index and openraft replays the rest from the log. What makes that safe is
//! that the log is only purged up to a snapshot, and the snapshot file is fsynced before
//! openraft learns it exists; on open, a tree that is behind the snapshot (or was mid-install)
//! is rebuilt from the snapshot file before any replay.
//!
//! An entry this binary must not apply (a newer binary's, see `state::StateError::
//! NeedsNewerVersion`) ends `apply` with a fatal error after the entries before it are
//! committed: openraft then stops this member, and `version_stop` tells the readiness task why.
//!
//! Must never: compute anything non-deterministic in `apply` (see `state::apply`), skip an
//! entry, or block apply on a subscriber (events go through a bounded broadcast).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError,
};
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::state::events::{Event, EventBus};
use crate::state::keys;
use crate::state::{self, Overlay, StateError};
use crate::storage::snapshot_cow::Cow;
use crate::storage::snapshot_file::{self, SnapshotFileError};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const SNAPSHOT_FORMAT: u16 = 1;

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The snapshot body: every key/value of the tree, in key order.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    format: u16,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Arc<Vec<u8>>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(
            ErrorSubject::StateMachine,
            verb,
            openraft::AnyError::new(&e),
        ),
    }
}

fn snap_err(
    meta: Option<&SnapshotMeta>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    let subject = match meta {
        Some(m) => ErrorSubject::Snapshot(Some(m.signature())),
        None => ErrorSubject::Snapshot(None),
    };
    StorageError::IO {
        source: StorageIOError::new(subject, verb, openraft::AnyError::new(&e)),
    }
}

/// Read access to the applied state for the API layer (local reads).
#[derive(Clone)]
pub struct StateReader {
    tree: sled::Tree,
}

impl StateReader {
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    #[cfg(test)]
    pub(crate) fn for_tree(tree: sled::Tree) -> Self {
        Self { tree }
    }
}

/// Why this node stopped applying at an entry it must not apply (a newer binary's entry, see
/// `state::StateError::NeedsNewerVersion`): set once by `apply`, read by the readiness task,
/// which then reports the node not ready with this reason instead of stopping the process.
pub type VersionStop = Arc<std::sync::OnceLock<String>>;

pub struct StateMachineStore {
    tree: sled::Tree,
    version_stop: VersionStop,
    dir: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    cow: Cow,
    events: EventBus,
    /// Distinguishes snapshots built at the same log id.
    build_seq: u64,
}

impl StateMachineStore {
    /// Opens the `sm` tree in `db` and the snapshot file in `dir`, restoring the snapshot into
    /// the tree when the tree is behind it or was left mid-install.
    pub fn open(db: &sled::Db, dir: &Path, events: EventBus) -> Result<Self, OpenError> {
        let tree = db.open_tree("sm")?;
        let current = read_snapshot_file(dir)?;
        let sm = Self {
            tree,
            version_stop: VersionStop::default(),
            dir: dir.to_path_buf(),
            current: Arc::new(Mutex::new(current.clone())),
            cow: Cow::default(),
            events,
            build_seq: 0,
        };
        if let Some(snap) = current {
            let applied: Option<LogId> = read_key(&sm.tree, keys::APPLIED)
                .map_err(OpenError::State)?
                .flatten();
            let installing = sm.tree.get(keys::INSTALLING)?.is_some();
            if installing || applied.map(|a| a.index) < snap.meta.last_log_id.map(|l| l.index) {
                tracing::info!(
                    snapshot = ?snap.meta.last_log_id,
                    tree_applied = ?applied,
                    installing,
                    "restoring state machine from the snapshot file before replay"
                );
                restore_tree(&sm.tree, &snap.meta, &snap.data).map_err(OpenError::State)?;
                sm.tree.flush()?;
            }
        }
        Ok(sm)
    }

    pub fn reader(&self) -> StateReader {
        StateReader {
            tree: self.tree.clone(),
        }
    }

    /// Set when `apply` stopped at an entry this binary must not apply.
    pub fn version_stop(&self) -> VersionStop {
        self.version_stop.clone()
    }

    /// Commits the writes of the entries applied so far in this call (up to and including
    /// `last`) as one batch, then hands their events to subscribers.
    fn commit(
        &self,
        mut kv: Overlay<'_>,
        last: Option<LogId>,
        events: Vec<Event>,
    ) -> Result<(), StorageError> {
        if let Some(last) = last {
            kv.put(keys::APPLIED.to_vec(), &Some(last))
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            // A snapshot build may be walking the tree right now: the old value of every key
            // this batch touches must be recorded first, or the snapshot would contain writes
            // of entries after its point, and a node restored from it would apply them twice
            // (duplicated messages with new seqs after a crash rebuilt it from the snapshot).
            self.cow
                .record(&self.tree, kv.pending_keys())
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            let batch = kv.into_batch();
            self.tree
                .apply_batch(batch)
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        self.events.publish(events);
        Ok(())
    }
}

/// The snapshot file in `dir`, checked (every record, its digest and count); `None` if there
/// is none.
fn read_snapshot_file(dir: &Path) -> Result<Option<StoredSnapshot>, OpenError> {
    let path = snapshot_file::path(dir);
    let corrupt = |e: SnapshotFileError| match e {
        SnapshotFileError::Io(e) => OpenError::Io(e),
        _ => OpenError::CorruptSnapshot(path.clone()),
    };
    let Some((meta, mut reader)) = snapshot_file::open(dir).map_err(corrupt)? else {
        return Ok(None);
    };
    let mut pairs = Vec::new();
    while let Some(kv) = reader
        .next_record()
        .map_err(|_| OpenError::CorruptSnapshot(path.clone()))?
    {
        pairs.push(kv);
    }
    let data = bincode::serialize(&SnapshotBody {
        format: SNAPSHOT_FORMAT,
        pairs,
    })
    .map_err(|_| OpenError::CorruptSnapshot(path.clone()))?;
    Ok(Some(StoredSnapshot {
        meta,
        data: Arc::new(data),
    }))
}

/// Verifies the snapshot file in `dir` (CRC, encoding) without opening the state machine, and
/// returns the membership it records. `Err(CorruptSnapshot)` is damage to heal from peers.
pub fn check_snapshot_file(dir: &Path) -> Result<Option<StoredMembership>, OpenError> {
    Ok(read_snapshot_file(dir)?.map(|s| s.meta.last_membership))
}

/// The snapshot file's path under a data dir (for quarantine).
pub fn snapshot_path(dir: &Path) -> PathBuf {
    snapshot_file::path(dir)
}

/// Why the state machine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot file {0} is corrupt")]
    CorruptSnapshot(PathBuf),
    #[error("state: {0}")]
    State(StateError),
}

fn read_key<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StateError> {
    Overlay::new(tree).get(key)
}

fn restore_tree(tree: &sled::Tree, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StateError> {
    let body: SnapshotBody = bincode::deserialize(data).map_err(|source| StateError::Decode {
        key: "<snapshot>".into(),
        source,
    })?;
    // Marker first: if we crash while the tree is half old, half new, open() sees it and restores
    // again from the (already durable) snapshot file.
    tree.insert(keys::INSTALLING, b"1".as_slice())?;
    tree.flush()?;
    for k in tree.iter().keys() {
        let k = k?;
        if k.as_ref() != keys::INSTALLING {
            tree.remove(k)?;
        }
    }
    let mut batch = sled::Batch::default();
    for (k, v) in body.pairs {
        batch.insert(k, v);
    }
    batch.insert(
        keys::APPLIED,
        bincode::serialize(&meta.last_log_id).map_err(StateError::Encode)?,
    );
    batch.insert(
        keys::MEMBERSHIP,
        bincode::serialize(&meta.last_membership).map_err(StateError::Encode)?,
    );
    batch.remove(keys::INSTALLING);
    tree.apply_batch(batch)?;
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied: Option<LogId> = read_key(&self.tree, keys::APPLIED)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
            .flatten();
        let membership: StoredMembership = read_key(&self.tree, keys::MEMBERSHIP)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // All entries of one call go into one sled batch: one atomic write, applied index included.
        let mut kv = Overlay::new(&self.tree);
        let mut responses = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        let mut last = None;
        for entry in entries {
            match &entry.payload {
                EntryPayload::Blank => responses.push(Response::default()),
                EntryPayload::Normal(req) => {
                    match state::apply_request(&mut kv, req, entry.log_id.index, &mut events) {
                        Ok(outcomes) => responses.push(Response { outcomes }),
                        Err(e) if e.is_version_stop() => {
                            // The entries before it are applied and recorded; this one is not
                            // (apply_request refused before writing anything), so the applied
                            // index stays just before it, after a restart too.
                            self.commit(kv, last, events)?;
                            tracing::error!(
                                index = entry.log_id.index,
                                needed_version = req.version,
                                speaks_up_to = crate::command::COMMAND_VERSION,
                                undecodable = req.undecodable.as_deref(),
                                "{e}"
                            );
                            let _ = self.version_stop.set(e.to_string());
                            return Err(sm_err(ErrorVerb::Write, e));
                        }
                        Err(e) => return Err(sm_err(ErrorVerb::Write, e)),
                    }
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    // Operator flags of removed nodes go with them (see `state::draining`).
                    crate::state::draining::forget_removed_members(&mut kv, &stored)
                        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                    kv.put(keys::MEMBERSHIP.to_vec(), &stored)
                        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                    responses.push(Response::default());
                }
            }
            last = Some(entry.log_id);
        }
        self.commit(kv, last, events)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.build_seq += 1;
        // Called from the state machine worker between two applies: this is the snapshot point.
        // From here on apply records old values (see `snapshot_cow.rs`), so the builder can walk
        // the tree off the apply path and still see exactly this state.
        let source = if self.cow.begin() {
            Source::Cow {
                tree: self.tree.clone(),
                cow: self.cow.clone(),
            }
        } else {
            // A build is still running (openraft does not normally start two); copy eagerly.
            // A view that never began recording is simply the live tree, walked now.
            Source::Copied(Cow::default().collect(&self.tree, keys::INSTALLING))
        };
        SnapshotBuilder {
            // Applied log id and membership as of the snapshot point, read here for the same
            // reason as above.
            point: self.applied_state().await,
            source: Some(source),
            dir: self.dir.clone(),
            current: self.current.clone(),
            build_seq: self.build_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        tracing::info!(snapshot = ?meta.last_log_id, bytes = data.len(), "installing snapshot from leader");
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Arc::new(data),
        };
        let dir = self.dir.clone();
        let tree = self.tree.clone();
        let to_write = stored.clone();
        let cow = self.cow.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            persist_snapshot(&dir, &to_write)?;
            record_install(&cow, &tree, &to_write.data)
                .map_err(|e| snap_err(Some(&to_write.meta), ErrorVerb::Write, e))?;
            restore_tree(&tree, &to_write.meta, &to_write.data)
                .map_err(|e| snap_err(Some(&to_write.meta), ErrorVerb::Write, e))?;
            tree.flush()
                .map_err(|e| snap_err(Some(&to_write.meta), ErrorVerb::Write, e))?;
            Ok(())
        })
        .await
        .map_err(|e| snap_err(Some(meta), ErrorVerb::Write, e))??;
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(stored);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let cur = self
            .current
            .lock()
            .map_err(|_| {
                snap_err(
                    None,
                    ErrorVerb::Read,
                    std::io::Error::other("snapshot lock poisoned"),
                )
            })?
            .clone();
        Ok(cur.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data.as_ref().clone())),
        }))
    }
}

/// An install rewrites the whole tree: if a build is running, every key it touches (old and
/// new) must be recorded first.
fn record_install(cow: &Cow, tree: &sled::Tree, data: &[u8]) -> Result<(), StateError> {
    let body: SnapshotBody = bincode::deserialize(data).map_err(|source| StateError::Decode {
        key: "<snapshot>".into(),
        source,
    })?;
    let existing: Vec<Vec<u8>> = tree
        .iter()
        .keys()
        .map(|k| k.map(|k| k.to_vec()))
        .collect::<Result<_, _>>()?;
    cow.record(tree, existing.iter().map(|k| k.as_slice()))?;
    cow.record(tree, body.pairs.iter().map(|(k, _)| k.as_slice()))?;
    cow.record(
        tree,
        [keys::APPLIED, keys::MEMBERSHIP, keys::INSTALLING].into_iter(),
    )?;
    Ok(())
}

fn persist_snapshot(dir: &Path, snap: &StoredSnapshot) -> Result<(), StorageError> {
    let body: SnapshotBody = bincode::deserialize(&snap.data)
        .map_err(|e| snap_err(Some(&snap.meta), ErrorVerb::Write, e))?;
    snapshot_file::write(
        dir,
        &snap.meta,
        body.pairs.into_iter().map(Ok::<_, std::io::Error>),
    )
    .map_err(|e| snap_err(Some(&snap.meta), ErrorVerb::Write, e))?;
    Ok(())
}

enum Source {
    Cow { tree: sled::Tree, cow: Cow },
    Copied(Result<Pairs, sled::Error>),
}

pub struct SnapshotBuilder {
    point: Result<(Option<LogId>, StoredMembership), StorageError>,
    source: Option<Source>,
    dir: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    build_seq: u64,
}

impl Drop for SnapshotBuilder {
    /// A builder dropped without building must stop the recording, or apply would keep
    /// collecting old values forever.
    fn drop(&mut self) {
        if let Some(Source::Cow { cow, .. }) = self.source.take() {
            cow.end();
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let pairs = match self.source.take() {
            Some(Source::Cow { tree, cow }) => {
                let walked = tokio::task::spawn_blocking(move || {
                    let r = cow.collect(&tree, keys::INSTALLING);
                    cow.end();
                    r
                })
                .await
                .map_err(|e| snap_err(None, ErrorVerb::Read, e))?;
                walked.map_err(|e| snap_err(None, ErrorVerb::Read, e))?
            }
            Some(Source::Copied(pairs)) => pairs.map_err(|e| snap_err(None, ErrorVerb::Read, e))?,
            None => {
                return Err(snap_err(
                    None,
                    ErrorVerb::Read,
                    std::io::Error::other("snapshot builder used twice"),
                ));
            }
        };
        let (last_applied, last_membership) = self.point.clone()?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.build_seq),
            None => format!("none-{}", self.build_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let body = SnapshotBody {
            format: SNAPSHOT_FORMAT,
            pairs,
        };
        let data =
            bincode::serialize(&body).map_err(|e| snap_err(Some(&meta), ErrorVerb::Write, e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Arc::new(data),
        };
        let dir = self.dir.clone();
        let to_write = stored.clone();
        // The file is durable before openraft hears of the snapshot (it purges the log next).
        tokio::task::spawn_blocking(move || persist_snapshot(&dir, &to_write))
            .await
            .map_err(|e| snap_err(Some(&meta), ErrorVerb::Write, e))??;
        tracing::info!(snapshot = ?meta.last_log_id, bytes = stored.data.len(), "snapshot built");
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(stored.clone());
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data.as_ref().clone())),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// The snapshot is the state at its point even when entries are applied while it is being
    /// built: a restored node replays the entries after the point, so anything of theirs in
    /// the snapshot would be applied twice.
    #[tokio::test]
    async fn a_snapshot_holds_nothing_applied_after_its_point() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("state"))
            .open()
            .unwrap();
        let mut sm = StateMachineStore::open(&db, dir.path(), EventBus::new(16)).unwrap();
        sm.apply((1..=3).map(blank)).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        // Applied after the snapshot point, before the builder walks the tree.
        sm.apply((4..=5).map(blank)).await.unwrap();
        let snap = builder.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(3));
        let body: SnapshotBody = bincode::deserialize(snap.snapshot.get_ref()).unwrap();
        let applied = body
            .pairs
            .iter()
            .find(|(k, _)| k.as_slice() == keys::APPLIED)
            .map(|(_, v)| bincode::deserialize::<Option<LogId>>(v).unwrap());
        assert_eq!(applied.flatten().map(|l| l.index), Some(3));
    }
}
