//! `GET /api/v1/admin/backup` (admins): the cluster's state at one point in time, and the
//! content of every file it references, streamed as the body `conclavectl backup` encrypts on
//! the operator's machine (`u32 manifest_len | manifest | u32 secrets_len | secrets | state
//! stream | blob section`, see `api::backup`).
//!
//! Owns choosing what goes into a backup (the state, without login sessions unless asked;
//! the KEK, which opens the CA keys sealed in the state; every blob a live file of that state
//! references) and describing it exactly in the manifest. The state comes from this node's
//! snapshot file (`ClusterNode::export_snapshot`), taken after the node caught up with the
//! leader (a read-index round), so it holds every write acknowledged before the request; it
//! is an open, point-in-time file, so writes keep flowing while it streams. Must never hold
//! the state in memory (nor more than one blob), never log a secret, never send a manifest
//! that does not describe the bytes that follow it, and never end a backup successfully
//! without a blob its state references.
//!
//! # Why the snapshot is read twice
//!
//! The manifest comes first and carries the digest (length, record count, sha256) of the state
//! stream that follows, but without sessions that stream is a re-encoding of the snapshot, whose
//! digest is known only once it has been produced. Rather than spool the re-encoded stream to
//! a temporary file (as much disk as the state) or move the digest into a trailer (readers
//! could then use the manifest before it is checked), the handler encodes the stream twice
//! from the same open file: once into a hasher, for the manifest, then onto the wire. The
//! encoding is deterministic, so both passes produce the same bytes; the first pass also
//! checks the snapshot file's own checksum, so a damaged local snapshot is a 500 before
//! anything is sent, not a broken backup. The cost is one more sequential read of the file.
//! If the second pass fails anyway (the client left, a disk error), the body is cut off, which
//! the client detects (`ops::backup_file::BodyCheck`).
//!
//! # Which blobs, and why they match the state
//!
//! The first pass also collects the blobs of every live (not tombstoned) file record of the
//! snapshot, so the blob set is the snapshot's own, not the current state's. That is enough for
//! consistency: blobs are content-addressed and immutable, and the garbage collector removes
//! one only a whole `[files] gc_grace` after its last live reference was dropped
//! (`cluster::blobs::gc`), so every blob the snapshot references is still on the cluster while
//! the backup streams. Before the manifest is sent, each one this node lacks is fetched from a
//! peer (the background fetcher's `ensure_blob`); one that no node has fails the request with a
//! 503 naming it, since a backup without it would restore a file nobody can download. A blob
//! that vanishes or turns out damaged while streaming is fetched again, else the body is cut
//! off (which the client detects) rather than completed without it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom, Write};

use api::backup::{BlobsDigest, MANIFEST_FORMAT, Manifest, Secrets, StateDigest};
use api::snapshot_stream::{StreamReader, StreamWriter, Summary};
use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cluster::ClusterNode;
use cluster::blobs::BlobError;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::ca_api::CaApiError;
use crate::error::ApiError;
use crate::extract::INDEX_HEADER;
use crate::security_log::RequestMeta;
use crate::state::AppState;

/// Size of the body's chunks; also the read buffer of the snapshot file.
const CHUNK: usize = 64 * 1024;
/// How long the node may take to catch up with the leader before it exports.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Chunks waiting for a slow client: bounds the memory one backup holds (4 x 64 KiB, plus
/// the one blob being sent, at most 8 MiB).
const QUEUED_CHUNKS: usize = 4;

/// The blobs a backup carries: raw sha256 -> length, ascending (the blob section's order).
/// 40 bytes a blob, so even a million files' worth is tens of MB, far less than their state.
type BlobList = BTreeMap<[u8; 32], u64>;

// A chunk the store took from a client must never be one a backup reader refuses.
const _: () = assert!(cluster::blobs::CHUNK_MAX as u64 <= api::backup::MAX_BLOB);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BackupQuery {
    /// Include login sessions in the state (default false: every user logs in again after a
    /// restore).
    #[serde(default)]
    sessions: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/backup",
    tag = "admin",
    params(BackupQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the backup body: `u32 LE manifest_len | manifest JSON | u32 LE secrets_len | secrets JSON | state stream | blob section` (docs/api.md, \"Backup\"); it holds the KEK and every live file's content", content_type = "application/octet-stream"),
        (status = 400, description = "`invalid_request`: a bad query", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: the node cannot produce a snapshot now, or a blob a live file references is on no reachable node; or `ca_key_unavailable`: this node cannot read the KEK (ask another node)", body = api::error::ErrorBody)
    )
)]
pub async fn backup(
    State(s): State<AppState>,
    Extension(meta): Extension<RequestMeta>,
    auth: Auth,
    query: Result<Query<BackupQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    let Query(query) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let sessions = query.sessions;

    let kek = kek_text(&s).await?;
    let root_fingerprint = match &s.config.ca {
        None => String::new(),
        Some(ca) => match ca.fingerprint().await {
            Ok(f) => f.fingerprint,
            Err(CaApiError::NotInitialized | CaApiError::Unavailable(_)) => String::new(),
            Err(e) => return Err(e.into()),
        },
    };
    // Catch up with the leader first, so that a backup from a lagging follower still holds
    // every write acknowledged before the request (without a leader this is a 503, and the
    // client asks another node).
    s.node.sync_with_leader(SYNC_TIMEOUT).await?;
    let export = s.node.export_snapshot().await?;
    let (index, term) = export
        .meta
        .last_log_id
        .map_or((0, 0), |id| (id.index, id.leader_id.term));

    let mut file = export.file;
    let (file, bytes, summary, referenced) = tokio::task::spawn_blocking(move || {
        let mut referenced = Vec::new();
        let (bytes, summary) = encode(&mut file, sessions, std::io::sink(), Some(&mut referenced))?;
        Ok::<_, ApiError>((file, bytes, summary, referenced))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("backup task: {e}")))??;
    let blobs = blob_list(&s.node, referenced).await?;
    let blobs_digest = BlobsDigest {
        count: blobs.len() as u64,
        bytes: blobs.values().sum(),
    };

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        created_at_ms: crate::now_ms(),
        workspace: s.config.workspace.clone().unwrap_or_default(),
        index,
        term,
        root_fingerprint,
        served_by: s.node.id(),
        conclave_version: env!("CARGO_PKG_VERSION").to_owned(),
        includes_sessions: sessions,
        state: StateDigest {
            bytes,
            records: summary.records,
            sha256: hex::encode(summary.sha256),
        },
        blobs: blobs_digest,
    };
    let frames = api::backup::encode_frames(&manifest, &Secrets { kek })
        .map_err(|e| ApiError::Internal(format!("cannot encode the manifest: {e}")))?;

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUED_CHUNKS);
    let node_id = s.node.id();
    let node = s.node.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut out = ChunkSender {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let sent = out
            .write_all(&frames)
            .map_err(|e| ApiError::Internal(e.to_string()))
            .and_then(|()| encode(&mut file, sessions, &mut out, None))
            .and_then(|_| write_blobs(&node, &runtime, &blobs, blobs_digest, &mut out))
            .and_then(|()| out.flush().map_err(|e| ApiError::Internal(e.to_string())));
        if let Err(e) = sent {
            tracing::warn!(node_id, index, error = %e, "backup stream cut off");
            // Ends the body with an error, so the client sees an incomplete answer.
            let _ = out
                .tx
                .blocking_send(Err(std::io::Error::other("backup stream failed")));
        }
    });
    crate::security_event!(
        meta,
        "backup.served",
        index,
        sessions,
        records = summary.records,
        blobs = blobs_digest.count,
        blob_bytes = blobs_digest.bytes
    );

    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            // The body holds the KEK: no cache anywhere may keep it.
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::HeaderName::from_static(INDEX_HEADER),
                index.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// The KEK file's text, if this node has a CA service: it leaves the node only over HTTPS
/// (`JoinApi::kek_text` refuses otherwise, and then the backup holds none).
async fn kek_text(s: &AppState) -> Result<Option<String>, ApiError> {
    let Some(join) = &s.config.join else {
        return Ok(None);
    };
    if !join.serves_tls() {
        return Ok(None);
    }
    Ok(Some(join.kek_text().await?))
}

/// Whether `key` belongs to a login session (`cluster::state::keys`: `s/`, `si/`, `se/`, `su/`).
fn is_session_key(key: &[u8]) -> bool {
    cluster::state::keys::SESSION_PREFIXES
        .iter()
        .any(|p| key.starts_with(p))
}

/// Re-encodes the snapshot in `file` (from its start) into `out`, without session records
/// unless `sessions`; returns the stream's length and summary. Checks the file's own
/// checksum on the way. With `referenced`, appends the blobs of every live file record to it
/// (repeats included).
fn encode(
    file: &mut File,
    sessions: bool,
    out: impl Write,
    mut referenced: Option<&mut Vec<String>>,
) -> Result<(u64, Summary), ApiError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ApiError::Internal(format!("the snapshot file is unreadable: {e}"))
    };
    let failed = |e: std::io::Error| ApiError::Internal(format!("backup stream: {e}"));
    file.seek(SeekFrom::Start(0)).map_err(|e| unreadable(&e))?;
    let mut reader = StreamReader::new(BufReader::with_capacity(CHUNK, &mut *file))
        .map_err(|e| unreadable(&e))?;
    let meta = reader.meta().to_vec();
    let mut writer = StreamWriter::new(
        Counting {
            inner: out,
            bytes: 0,
        },
        &meta,
    )
    .map_err(failed)?;
    while let Some((key, value)) = reader.next_record().map_err(|e| unreadable(&e))? {
        if !sessions && is_session_key(&key) {
            continue;
        }
        if let Some(referenced) = referenced.as_deref_mut() {
            let blobs = cluster::state::files::live_blobs_of_record(&key, &value)
                .map_err(|e| unreadable(&e))?;
            referenced.extend(blobs);
        }
        writer.push(&key, &value).map_err(failed)?;
    }
    let (counting, summary) = writer.finish().map_err(failed)?;
    Ok((counting.bytes, summary))
}

/// The blobs named by `referenced` with their lengths, fetching from peers each one this
/// node lacks; a 503 naming the first that no reachable node has.
async fn blob_list(node: &ClusterNode, referenced: Vec<String>) -> Result<BlobList, ApiError> {
    // Unique, in the section's order, each with its hex name for the store.
    let mut unique = BTreeMap::new();
    for sha in referenced {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(&sha, &mut raw).map_err(|_| {
            ApiError::Internal(format!("a file record names blob '{sha}', not a SHA-256"))
        })?;
        unique.entry(raw).or_insert(sha);
    }
    // Sizes come from the disk (blocking), in one task for all of them.
    let store = node.blobs().clone();
    let (mut list, absent) = tokio::task::spawn_blocking(move || {
        let mut list = BlobList::new();
        let mut absent = Vec::new();
        for (raw, sha) in unique {
            match store.size(&sha) {
                Some(len) => {
                    list.insert(raw, len);
                }
                None => absent.push((raw, sha)),
            }
        }
        (list, absent)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("backup task: {e}")))?;
    for (raw, sha) in absent {
        node.ensure_blob(&sha)
            .await
            .map_err(|e| missing_blob(&sha, &e))?;
        let store = node.blobs().clone();
        let len = tokio::task::spawn_blocking(move || store.size(&sha))
            .await
            .map_err(|e| ApiError::Internal(format!("backup task: {e}")))?
            .ok_or_else(|| ApiError::Internal("a fetched blob is gone again".into()))?;
        list.insert(raw, len);
    }
    Ok(list)
}

fn missing_blob(sha: &str, e: &BlobError) -> ApiError {
    ApiError::Unavailable(format!(
        "blob {sha} of a live file cannot be had ({e}); a backup without it would be incomplete"
    ))
}

/// Writes the blob section: every blob of `blobs`, read from this node's store (checked
/// against its name; one gone or damaged since the list was made is fetched from a peer
/// again), then the end record. Runs on a blocking thread; `runtime` runs the fetches.
fn write_blobs(
    node: &ClusterNode,
    runtime: &tokio::runtime::Handle,
    blobs: &BlobList,
    digest: BlobsDigest,
    out: &mut impl Write,
) -> Result<(), ApiError> {
    let failed = |e: std::io::Error| ApiError::Internal(format!("backup stream: {e}"));
    for (raw, len) in blobs {
        let sha = hex::encode(raw);
        let bytes = match node.blobs().read_verified(&sha) {
            Ok(b) => b,
            Err(BlobError::NotFound(_)) => {
                runtime
                    .block_on(node.ensure_blob(&sha))
                    .map_err(|e| missing_blob(&sha, &e))?;
                node.blobs()
                    .read_verified(&sha)
                    .map_err(|e| missing_blob(&sha, &e))?
            }
            Err(e) => return Err(missing_blob(&sha, &e)),
        };
        if bytes.len() as u64 != *len {
            // Only if the copy measured for the manifest was damaged on disk: the manifest
            // is already sent, so the body has to be cut off.
            return Err(ApiError::Internal(format!(
                "blob {sha} has {} bytes, the manifest said {len}",
                bytes.len()
            )));
        }
        out.write_all(&api::backup::encode_blob_header(raw, *len))
            .map_err(failed)?;
        // In CHUNK-sized writes, so the queued body chunks stay small.
        for piece in bytes.chunks(CHUNK) {
            out.write_all(piece).map_err(failed)?;
        }
    }
    out.write_all(&api::backup::encode_blob_end(digest))
        .map_err(failed)
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hands the bytes written to it to the response body in [`CHUNK`]-sized pieces, blocking
/// while the client is slow (the queue is bounded), failing once the client is gone.
struct ChunkSender {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_are_recognised() {
        for k in [&b"s/abc"[..], b"si/abc", b"se/\0\0/abc", b"su/alice/abc"] {
            assert!(is_session_key(k), "{k:?}");
        }
        for k in [
            &b"u/alice"[..],
            b"m/general/\0",
            b"sx/",
            b"c/s",
            b"meta/applied",
        ] {
            assert!(!is_session_key(k), "{k:?}");
        }
    }
}
