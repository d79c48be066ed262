//! Exporting the state as one snapshot file (`ClusterNode::export_snapshot`), for backups.
//!
//! Owns "a snapshot at least as new as what this node has applied, opened for reading". Must
//! never build a snapshot of its own outside openraft (the snapshot point has to be openraft's,
//! between two applies) nor hand out a path: the caller gets an open file, which stays readable
//! when a newer snapshot replaces `snapshot.bin` meanwhile (a rename does not touch an open
//! file's contents).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::time::Duration;

use crate::error::ClusterError;
use crate::node::raft_node::ClusterNode;
use crate::storage::snapshot_file;
use crate::types::SnapshotMeta;

/// How long an export waits for the snapshot it triggered. A build streams the tree to disk
/// (hundreds of MB/s on a server disk), so this is minutes of history to spare.
const EXPORT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// An open snapshot file: a state stream (`api::snapshot_stream`) whose meta is
/// `bincode(SnapshotMeta)`, positioned at its start.
pub struct SnapshotExport {
    pub meta: SnapshotMeta,
    pub file: File,
    pub len: u64,
}

impl ClusterNode {
    /// A snapshot holding at least everything this node had applied when called: the current
    /// one if it is new enough, else one built now (triggered through openraft, waited for).
    pub async fn export_snapshot(&self) -> Result<SnapshotExport, ClusterError> {
        let raft = self.raft();
        let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
        let Some(applied) = applied else {
            return Err(ClusterError::Unavailable(
                "this node has applied nothing yet".into(),
            ));
        };
        let new_enough =
            move |m: &crate::types::RaftMetrics| m.snapshot.is_some_and(|s| s.index >= applied);
        if !new_enough(&raft.metrics().borrow()) {
            raft.trigger()
                .snapshot()
                .await
                .map_err(|e| ClusterError::Unavailable(format!("snapshot: {e}")))?;
            raft.wait(Some(EXPORT_BUILD_TIMEOUT))
                .metrics(new_enough, "a snapshot for export")
                .await
                .map_err(|e| ClusterError::Unavailable(format!("snapshot build: {e}")))?;
        }
        let dir = self.data_dir().to_path_buf();
        let opened =
            tokio::task::spawn_blocking(move || -> Result<SnapshotExport, ClusterError> {
                let storage = |e: &dyn std::fmt::Display| ClusterError::Storage(e.to_string());
                let (meta, reader) = snapshot_file::open(&dir)
                    .map_err(|e| storage(&e))?
                    .ok_or_else(|| ClusterError::Storage("the snapshot file is missing".into()))?;
                // The reader's file is `snapshot.bin` itself (or, for a previous release's file, an
                // unlinked stream converted from it): hand out that same open file.
                let mut file = reader.into_inner().into_inner();
                file.seek(SeekFrom::Start(0)).map_err(|e| storage(&e))?;
                let len = file.metadata().map_err(|e| storage(&e))?.len();
                Ok(SnapshotExport { meta, file, len })
            })
            .await
            .map_err(|e| ClusterError::Internal(format!("export task: {e}")))??;
        if opened.meta.last_log_id.map(|l| l.index) < Some(applied) {
            return Err(ClusterError::Storage(format!(
                "the snapshot file is older ({:?}) than the applied index {applied}",
                opened.meta.last_log_id
            )));
        }
        tracing::info!(snapshot = ?opened.meta.last_log_id, bytes = opened.len, "snapshot exported");
        Ok(opened)
    }
}
