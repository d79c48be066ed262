//! File attachments over HTTP, the way in: chunk upload (`PUT /api/v1/blobs/{sha256}`) and
//! posting a file as a message (`POST /api/v1/channels/{name}/files`); the way out is
//! `file_download`.
//!
//! Owns the upload checks (size, name, chunks present, whole-file hash, the type sniffed from
//! the content), the one Raft command that commits a file with its message, and the error
//! codes of every file route. Chunks are acknowledged only once a majority of voters has them
//! on disk (`cluster::blobs`). Must never trust the client's type or name or put blob bytes
//! into the log.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use cluster::blobs::{BlobError, CHUNK_MAX, is_sha256_hex};
use cluster::{Applied, BlobRef, Command, NewFile};
use sha2::{Digest, Sha256};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody};
use crate::file_checks;
use crate::files_config::ScanMode;
use crate::state::AppState;
use crate::validate;
use crate::wire;
use api::rest::{BlobStored, PostFileRequest, PostedMessage};

/// Most chunks one file may have (8 MiB chunks: 32 GiB, far above any sane `max_size`).
const MAX_CHUNKS: usize = 4096;
/// How much of a file's start the type sniffer and image-size reader look at.
const HEAD_BYTES: usize = 8192;

/// The refusals of file routes, each with its documented code (docs/api.md).
#[derive(Debug, thiserror::Error)]
pub enum FileApiError {
    #[error("{0}")]
    HashMismatch(String),
    #[error("the chunk is larger than {CHUNK_MAX} bytes")]
    ChunkTooLarge,
    #[error("the chunk is empty")]
    EmptyChunk,
    #[error("only {acks} of {voters} voters could store the chunk; a majority is needed")]
    NoQuorum { acks: usize, voters: usize },
    #[error("the file is larger than this server's limit of {0} bytes")]
    FileTooLarge(u64),
    #[error("the file is empty")]
    EmptyFile,
    #[error("{0}")]
    BadFileName(String),
    #[error("chunk {0} is on no node; upload it again")]
    MissingChunk(String),
    #[error("'{user}' is not a member of channel '{channel}'")]
    NotMember { user: String, channel: String },
    #[error("the file contains malware ({0})")]
    MalwareDetected(String),
    #[error("the malware scanner cannot be reached: {0}")]
    ScannerUnavailable(String),
    #[error("no such file")]
    FileNotFound,
    #[error("this file has no thumbnail")]
    NoThumbnail,
    #[error("{0}")]
    BlobUnavailable(String),
    /// A single `Range` that starts at or past the end of a file of this many bytes.
    #[error("the range is outside the file's {0} bytes")]
    RangeNotSatisfiable(u64),
}

impl FileApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            FileApiError::HashMismatch(_) => (StatusCode::BAD_REQUEST, "hash_mismatch"),
            FileApiError::ChunkTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "chunk_too_large"),
            FileApiError::EmptyChunk => (StatusCode::BAD_REQUEST, "empty_chunk"),
            FileApiError::NoQuorum { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_quorum"),
            FileApiError::FileTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large"),
            FileApiError::EmptyFile => (StatusCode::BAD_REQUEST, "empty_file"),
            FileApiError::BadFileName(_) => (StatusCode::BAD_REQUEST, "bad_file_name"),
            FileApiError::MissingChunk(_) => (StatusCode::CONFLICT, "missing_chunk"),
            FileApiError::NotMember { .. } => (StatusCode::FORBIDDEN, "not_member"),
            FileApiError::MalwareDetected(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "malware_detected")
            }
            FileApiError::ScannerUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "scanner_unavailable")
            }
            FileApiError::FileNotFound => (StatusCode::NOT_FOUND, "file_not_found"),
            FileApiError::NoThumbnail => (StatusCode::NOT_FOUND, "no_thumbnail"),
            FileApiError::BlobUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            FileApiError::RangeNotSatisfiable(_) => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
        }
    }
}

pub(crate) fn blob_error(e: BlobError) -> ApiError {
    match e {
        BlobError::BadName(n) => {
            ApiError::InvalidRequest(format!("'{n}' is not a lowercase hex SHA-256"))
        }
        e @ BlobError::HashMismatch { .. } => FileApiError::HashMismatch(e.to_string()).into(),
        BlobError::NoQuorum { acks, voters } => FileApiError::NoQuorum { acks, voters }.into(),
        BlobError::Missing(sha) | BlobError::NotFound(sha) => {
            FileApiError::BlobUnavailable(format!("blob {sha} is on no reachable node")).into()
        }
        e @ BlobError::Io(_) => ApiError::Internal(e.to_string()),
    }
}

/// The `PUT /api/v1/blobs/{sha256}` route, with a body limit of one chunk instead of the
/// API's JSON limit.
pub fn put_blob_route() -> MethodRouter<AppState> {
    axum::routing::put(put_blob).layer(DefaultBodyLimit::max(CHUNK_MAX))
}

#[utoipa::path(
    put,
    path = "/api/v1/blobs/{sha256}",
    tag = "files",
    params(("sha256" = String, Path, pattern = "^[0-9a-f]{64}$", description = "the chunk's SHA-256, lowercase hex")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the chunk's bytes, 1 byte to 8 MiB"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "a majority of voters has the chunk on disk (a chunk already present is fine)", body = api::rest::BlobStored),
        (status = 400, description = "`hash_mismatch`, `empty_chunk` or `invalid_request` (not a SHA-256)", body = api::error::ErrorBody),
        (status = 413, description = "`chunk_too_large`: over 8 MiB", body = api::error::ErrorBody),
        (status = 503, description = "`no_quorum`: fewer than a majority of voters stored it; retry", body = api::error::ErrorBody)
    )
)]
pub async fn put_blob(
    State(s): State<AppState>,
    Path(sha256): Path<String>,
    _auth: Auth,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    if !is_sha256_hex(&sha256) {
        return Err(blob_error(BlobError::BadName(sha256)));
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > CHUNK_MAX as u64) {
        return Err(FileApiError::ChunkTooLarge.into());
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::from(FileApiError::ChunkTooLarge)
        } else {
            ApiError::InvalidRequest(e.body_text())
        }
    })?;
    if body.is_empty() {
        return Err(FileApiError::EmptyChunk.into());
    }
    let size = body.len() as u64;
    let actual = hex::encode(Sha256::digest(&body));
    if actual != sha256 {
        return Err(FileApiError::HashMismatch(format!(
            "the body's SHA-256 is {actual}, not {sha256}"
        ))
        .into());
    }
    if let Some(why) = s.node.disk_low() {
        return Err(ApiError::DiskFull(why));
    }
    let acks = s
        .node
        .put_blob_replicated(&sha256, body)
        .await
        .map_err(blob_error)?;
    tracing::debug!(blob = %sha256, size, acks = acks.acks, voters = acks.voters, "chunk stored on a majority");
    Ok((StatusCode::CREATED, Json(BlobStored { sha256, size })).into_response())
}

/// A temp file that is removed when dropped (the assembled upload).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the assembled file turned out to be.
struct Assembled {
    sha256: String,
    size: u64,
    head: Vec<u8>,
}

/// Concatenates `chunks` into `dest`, hashing as it goes; stops as soon as the file grows past
/// `max`. Blocking: run in `spawn_blocking`.
fn assemble(
    store: &cluster::blobs::BlobStore,
    chunks: &[String],
    dest: &FsPath,
    max: u64,
) -> Result<Assembled, ApiError> {
    let mut out = std::fs::File::create(dest).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    for sha in chunks {
        let bytes = store.read_verified(sha).map_err(|e| match e {
            BlobError::NotFound(s) => ApiError::from(FileApiError::MissingChunk(s)),
            other => blob_error(other),
        })?;
        size += bytes.len() as u64;
        if size > max {
            return Err(FileApiError::HashMismatch(format!(
                "the chunks hold more than the {max} bytes announced"
            ))
            .into());
        }
        if head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - head.len()).min(bytes.len());
            head.extend_from_slice(&bytes[..take]);
        }
        hasher.update(&bytes);
        out.write_all(&bytes)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    Ok(Assembled {
        sha256: hex::encode(hasher.finalize()),
        size,
        head,
    })
}

/// What inspecting the assembled file adds to it: a thumbnail (bytes and type) and the
/// image's size.
#[derive(Default)]
struct Inspection {
    thumbnail: Option<(Vec<u8>, &'static str)>,
    width: Option<u32>,
    height: Option<u32>,
}

/// Malware scan and thumbnail of the assembled file at `path` (sniffed as `mime`).
///
/// The scan runs first: a file refused as malware must not cost a thumbnail blob. In `scan`
/// mode a scanner that cannot be reached lets the upload through with a warning (the site chose
/// availability); in `block` mode it refuses the upload, and nothing is written either way. A
/// thumbnail that cannot be made (decode limits, a damaged image) is not an error: the file is
/// kept and shown as a file card.
async fn inspect(s: &AppState, path: &FsPath, mime: &str) -> Result<Inspection, ApiError> {
    use crate::files_inspect::{self, ScanVerdict};
    if s.config.files.scan != ScanMode::Off {
        match files_inspect::scan_file(&s.config.files.clamd_socket, path).await {
            Ok(ScanVerdict::Clean) => {}
            Ok(ScanVerdict::Infected(name)) => {
                tracing::warn!(signature = %name, "upload refused: the malware scanner found a signature");
                return Err(FileApiError::MalwareDetected(name).into());
            }
            Err(e) if s.config.files.scan == ScanMode::Block => {
                tracing::warn!(error = %e, "upload refused: the malware scanner is unavailable (scan = block)");
                return Err(FileApiError::ScannerUnavailable(e.to_string()).into());
            }
            Err(e) => {
                tracing::warn!(error = %e, "malware scan skipped: the scanner is unavailable (scan = scan)")
            }
        }
    }
    let (p, m) = (path.to_owned(), mime.to_owned());
    let mut out = Inspection::default();
    match tokio::task::spawn_blocking(move || files_inspect::make_thumbnail(&p, &m)).await {
        Ok(Ok(Some(t))) => {
            out.width = Some(t.width);
            out.height = Some(t.height);
            out.thumbnail = Some((t.bytes, t.mime));
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::info!(error = %e, "no thumbnail for this image"),
        Err(e) => tracing::warn!(error = %e, "thumbnail task failed"),
    }
    Ok(out)
}

#[utoipa::path(
    post,
    path = "/api/v1/channels/{name}/files",
    tag = "files",
    params(("name" = String, Path, description = "the channel name (`dm:alice:bob` for a direct message)")),
    request_body = api::rest::PostFileRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the new message carrying the file", body = api::rest::PostedMessage),
        (status = 200, description = "a retry: the original message with this `client_msg_id`; nothing new was written", body = api::rest::PostedMessage),
        (status = 400, description = "`empty_file`, `bad_file_name`, `hash_mismatch` or `invalid_request`", body = api::error::ErrorBody),
        (status = 403, description = "`not_member`", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`", body = api::error::ErrorBody),
        (status = 409, description = "`missing_chunk` (on no node: upload it again) or `archived`", body = api::error::ErrorBody),
        (status = 413, description = "`file_too_large`", body = api::error::ErrorBody),
        (status = 422, description = "`malware_detected`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`, `disk_full` or `scanner_unavailable`; nothing was written, retrying is safe", body = api::error::ErrorBody)
    )
)]
pub async fn post_file(
    State(s): State<AppState>,
    Path(channel): Path<String>,
    auth: Auth,
    JsonBody(req): JsonBody<PostFileRequest>,
) -> Result<Response, ApiError> {
    validate::client_msg_id(&req.client_msg_id)?;
    if req.body.len() > validate::MAX_BODY_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "the caption is {} bytes; the limit is {}",
            req.body.len(),
            validate::MAX_BODY_BYTES
        )));
    }
    if req.size == 0 {
        return Err(FileApiError::EmptyFile.into());
    }
    let max = s.config.files.max_size;
    if req.size > max {
        return Err(FileApiError::FileTooLarge(max).into());
    }
    let name = file_checks::sanitize_name(&req.name)
        .map_err(|e| ApiError::from(FileApiError::BadFileName(e.to_string())))?;
    if !is_sha256_hex(&req.sha256) {
        return Err(ApiError::InvalidRequest(
            "sha256 must be 64 lowercase hex digits".into(),
        ));
    }
    if req.chunks.is_empty() || req.chunks.len() > MAX_CHUNKS {
        return Err(ApiError::InvalidRequest(format!(
            "a file has 1 to {MAX_CHUNKS} chunks"
        )));
    }
    if let Some(bad) = req.chunks.iter().find(|c| !is_sha256_hex(c)) {
        return Err(ApiError::InvalidRequest(format!(
            "chunk '{}' is not a lowercase hex SHA-256",
            bad.chars().take(80).collect::<String>()
        )));
    }
    require_poster(&s, &channel, &auth.user.username).await?;
    for sha in &req.chunks {
        s.node.ensure_blob(sha).await.map_err(|e| match e {
            BlobError::Missing(c) | BlobError::NotFound(c) => {
                ApiError::from(FileApiError::MissingChunk(c))
            }
            other => blob_error(other),
        })?;
    }
    let tmp = TempFile(
        s.node
            .blobs()
            .root()
            .join("tmp")
            .join(format!("upload-{}", random_hex(16))),
    );
    let (store, chunks, dest) = (s.node.blobs().clone(), req.chunks.clone(), tmp.0.clone());
    let assembled = tokio::task::spawn_blocking(move || assemble(&store, &chunks, &dest, max))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    if assembled.size != req.size || assembled.sha256 != req.sha256 {
        return Err(FileApiError::HashMismatch(format!(
            "the chunks make {} bytes with SHA-256 {}, not {} bytes with {}",
            assembled.size, assembled.sha256, req.size, req.sha256
        ))
        .into());
    }
    let mime = file_checks::sniff(&assembled.head);
    let mut inspection = inspect(&s, &tmp.0, mime).await?;
    drop(tmp);
    if inspection.width.is_none()
        && let Some((w, h)) = file_checks::image_size(mime, &assembled.head)
    {
        inspection.width = Some(w);
        inspection.height = Some(h);
    }
    let thumbnail = match inspection.thumbnail.take() {
        Some((bytes, thumb_mime)) => {
            let sha = hex::encode(Sha256::digest(&bytes));
            let size = bytes.len() as u64;
            s.node
                .put_blob_replicated(&sha, Bytes::from(bytes))
                .await
                .map_err(blob_error)?;
            Some(BlobRef {
                sha256: sha,
                size,
                mime: thumb_mime.to_string(),
            })
        }
        None => None,
    };
    let file = NewFile {
        id: random_hex(16),
        name,
        size: assembled.size,
        sha256: assembled.sha256,
        mime: mime.to_string(),
        chunks: req.chunks,
        width: inspection.width,
        height: inspection.height,
        thumbnail,
    };
    let (applied, index) = s
        .write_applied(Command::PostMessageWithFiles {
            channel,
            author: auth.user.username.clone(),
            body: req.body,
            client_msg_id: req.client_msg_id,
            thread_root: req.thread_root,
            files: vec![file],
        })
        .await?;
    let Applied::MessageChanged {
        channel,
        seq,
        duplicate,
    } = applied
    else {
        return Err(ApiError::Internal(
            "unexpected outcome of a file post".into(),
        ));
    };
    let view = s
        .node
        .reader()
        .message_view(&channel, seq)?
        .ok_or_else(|| ApiError::MessageNotFound(format!("message {seq} vanished")))?;
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        [(INDEX_HEADER, index.to_string())],
        Json(PostedMessage {
            message: wire::message(&view),
            duplicate: Some(duplicate),
        }),
    )
        .into_response())
}

/// Refuses unless `user` may post in `channel` (a member), never on a stale view: 404
/// `channel_not_found`, 403 `not_member`.
async fn require_poster(s: &AppState, channel: &str, user: &str) -> Result<(), ApiError> {
    let member = s
        .read_fresh(|r| Ok(r.is_member(channel, user)?.then_some(())))
        .await?;
    if member.is_some() {
        return Ok(());
    }
    if !s.node.reader().channel_exists(channel)? {
        return Err(ApiError::ChannelNotFound(channel.to_string()));
    }
    Err(FileApiError::NotMember {
        user: user.to_string(),
        channel: channel.to_string(),
    }
    .into())
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}
