//! Garbage collection of blobs no live file references.
//!
//! Owns the removal rule, decided on every node from replicated facts and the blob's own
//! arrival time: a blob on disk goes when no live file references it (`br/` keys), at least
//! the grace period has passed since it last arrived (its modification time; a re-upload
//! renews it), and, if a file did reference it, the grace period has passed since the last
//! reference was dropped (`bz/`, the deleting entry's time). So a chunk uploaded but never
//! attached goes a grace period after its upload, and a deleted file's blobs a grace period
//! after the deletion, on every node. Must never remove a blob a live file references.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::node::shared::Shared;

/// The collector (one per node): a pass every `grace / 4`, between 1 s and 10 min.
pub(crate) async fn run(shared: Arc<Shared>, cancel: tokio_util::sync::CancellationToken) {
    let grace = shared.config.blob_gc_grace;
    let every = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || pass(&s, grace, SystemTime::now())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "blob gc: removed unreferenced blobs"),
            Ok(Err(e)) => tracing::warn!(error = %e, "blob gc pass failed"),
            Err(e) => tracing::warn!(error = %e, "blob gc pass panicked"),
        }
    }
}

/// One pass at time `now`; returns how many blobs it removed.
pub(crate) fn pass(shared: &Shared, grace: Duration, now: SystemTime) -> Result<usize, String> {
    let blobs = shared.blobs.list().map_err(|e| e.to_string())?;
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let grace_ms = grace.as_millis() as u64;
    let mut removed = 0;
    for (sha, arrived) in blobs {
        if now.duration_since(arrived).unwrap_or_default() < grace {
            continue;
        }
        if shared
            .reader
            .blob_referenced(&sha)
            .map_err(|e| e.to_string())?
        {
            continue;
        }
        let released = shared
            .reader
            .blob_released(&sha)
            .map_err(|e| e.to_string())?;
        if released.is_some_and(|at| now_ms.saturating_sub(at) < grace_ms) {
            continue;
        }
        match shared.blobs.remove(&sha) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(blob = %sha, error = %e, "blob gc: cannot remove"),
        }
    }
    Ok(removed)
}
