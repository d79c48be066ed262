//! Getting blobs this node lacks from its peers, on demand and in the background.
//!
//! Owns "make this node hold every blob of every live file": `ensure_blob` asks each member in
//! turn for a blob over the cluster port and stores it only if its hash matches its name; the
//! background fetcher follows the added-files index (`state::keys::file_index`) from where it
//! stopped, and walks it all again at startup and now and then (a node restored from a
//! snapshot, or whose blob directory was wiped, learns of its files without new entries).
//! Must never store a peer's bytes whose hash differs from the name asked for.

use std::sync::Arc;
use std::time::Duration;

use super::store::{BlobError, CHUNK_MAX};
use crate::node::raft_node::ClusterNode;
use crate::node::shared::Shared;

/// How long one fetch from one peer may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the fetcher looks for newly added files.
const POLL: Duration = Duration::from_millis(500);
/// How often it walks every file again from the start.
const FULL_SCAN: Duration = Duration::from_secs(30);

impl ClusterNode {
    /// Makes sure blob `sha` is on this node, fetching it from a peer if it is not.
    pub async fn ensure_blob(&self, sha: &str) -> Result<(), BlobError> {
        ensure_blob(&self.shared, sha).await
    }

    /// This node's blob store.
    pub fn blobs(&self) -> &Arc<super::BlobStore> {
        &self.shared.blobs
    }
}

pub(crate) async fn ensure_blob(shared: &Arc<Shared>, sha: &str) -> Result<(), BlobError> {
    shared.blobs.path(sha)?;
    if shared.blobs.has(sha) {
        return Ok(());
    }
    for (id, info) in shared.members() {
        if id == shared.id {
            continue;
        }
        let got = shared
            .http
            .get_blob(&info.cluster_addr, sha, CHUNK_MAX, FETCH_TIMEOUT)
            .await;
        let bytes = match got {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(peer = id, blob = sha, error = %e.short(), "blob fetch failed");
                continue;
            }
        };
        let store = shared.blobs.clone();
        let s = sha.to_string();
        match tokio::task::spawn_blocking(move || store.put(&s, &bytes)).await {
            Ok(Ok(_)) => {
                tracing::info!(peer = id, blob = sha, "fetched a missing blob from a peer");
                return Ok(());
            }
            Ok(Err(e @ BlobError::HashMismatch { .. })) => {
                tracing::error!(peer = id, blob = sha, error = %e, "a peer served a blob whose hash does not match; ignored");
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(BlobError::Io(std::io::Error::other(e))),
        }
    }
    Err(BlobError::Missing(sha.to_string()))
}

/// The background fetcher (one per node).
pub(crate) async fn run(shared: Arc<Shared>, cancel: tokio_util::sync::CancellationToken) {
    let mut cursor = 0u64;
    let mut last_full = tokio::time::Instant::now();
    loop {
        if last_full.elapsed() >= FULL_SCAN {
            cursor = 0;
            last_full = tokio::time::Instant::now();
        }
        cursor = pass(&shared, cursor).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Fetches what the files added at `from` or later need; returns where the next pass starts.
/// A blob no peer could give is tried again on the next full scan.
async fn pass(shared: &Arc<Shared>, from: u64) -> u64 {
    let mut cursor = from;
    loop {
        let batch = match shared.reader.files_added_from(cursor, 256) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "blob fetcher: cannot read the file index");
                return cursor;
            }
        };
        let Some(&(last, _)) = batch.last() else {
            return cursor;
        };
        for (_, rec) in &batch {
            if rec.deleted_ms.is_some() {
                continue;
            }
            for sha in rec.file.blobs() {
                if shared.blobs.has(sha) {
                    continue;
                }
                if let Err(e) = ensure_blob(shared, sha).await {
                    tracing::warn!(file = %rec.file.id, blob = sha, error = %e, "blob fetcher: cannot get a blob of a live file yet");
                }
            }
        }
        if batch.len() < 256 {
            return last + 1;
        }
        // Files of one entry share its index: resume at that index (re-checking a few).
        cursor = if last == cursor { last + 1 } else { last };
    }
}
