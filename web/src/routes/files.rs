//! File attachments over HTTP: chunk upload (`PUT /api/v1/blobs/{sha256}`), posting a file as
//! a message (`POST /api/v1/channels/{name}/files`), downloads and thumbnails
//! (`GET /api/v1/files/{file_id}[/thumbnail]`).
//!
//! Owns the HTTP shape of files: the upload checks (size, name, chunks present, whole-file hash,
//! the type sniffed from the content), the one Raft command that commits a file with its
//! message, and the download headers that keep a browser from rendering what a user uploaded
//! (`attachment` except for the safe image list, `nosniff`, a sandboxing CSP). Chunks are
//! acknowledged only once a majority of voters has them on disk (`cluster::blobs`). Must never
//! trust the client's type or name, put blob bytes into the log, or tell a caller who may not
//! read a file's channel that the file exists.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use cluster::blobs::{BlobError, CHUNK_MAX, is_sha256_hex};
use cluster::{Applied, BlobRef, Command, FileRecord, NewFile};
use sha2::{Digest, Sha256};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{INDEX_HEADER, JsonBody};
use crate::file_checks;
use crate::files_config::ScanMode;
use crate::routes::file_range::{self, Want};
use crate::state::AppState;
use crate::validate;
use crate::wire;
use api::rest::{BlobStored, PostFileRequest, PostedMessage};

/// Most chunks one file may have (8 MiB chunks: 32 GiB, far above any sane `max_size`).
const MAX_CHUNKS: usize = 4096;
/// How much of a file's start the type sniffer and image-size reader look at.
const HEAD_BYTES: usize = 8192;
/// The policy of every downloaded file: no script, no plugin, no request, no same origin.
const FILE_CSP: &str = "sandbox; default-src 'none'";

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

fn blob_error(e: BlobError) -> ApiError {
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

/// The live file `id` if `user` may read its channel; 404 `file_not_found` otherwise (also
/// for a file that exists in a channel the caller cannot read: existence must not leak).
async fn readable_file(s: &AppState, id: &str, user: &str) -> Result<FileRecord, ApiError> {
    let rec = s
        .read_fresh(|r| r.file(id))
        .await?
        .filter(|f| f.deleted_ms.is_none())
        .ok_or(FileApiError::FileNotFound)?;
    match s.can_read_fresh(&rec.channel, user).await? {
        Some(true) => Ok(rec),
        _ => Err(FileApiError::FileNotFound.into()),
    }
}

fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// The headers of every file download: the sniffed type, `nosniff`, a sandboxing CSP and the
/// disposition (`inline` only for the safe image list).
fn download_headers(mime: &str, name: &str, len: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, header_value(mime));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FILE_CSP),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&file_checks::content_disposition(mime, name)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    h
}

#[utoipa::path(
    get,
    path = "/api/v1/files/{file_id}",
    tag = "files",
    params(("file_id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "the file's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the file's bytes, with its sniffed `Content-Type`, `X-Content-Type-Options: nosniff`, `Content-Security-Policy: sandbox; default-src 'none'`, `Content-Disposition` (`inline` for png, jpeg, gif and webp images, `attachment` otherwise), `Accept-Ranges: bytes` and `ETag` (the quoted SHA-256); also the answer to several ranges, to an ignored `Range` and to an `If-Range` that does not match", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "one `Range` (`bytes=a-b`, `bytes=a-`, `bytes=-n`): those bytes, with `Content-Range: bytes a-b/size` and the same headers", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 416, description = "`range_not_satisfiable`: the range starts at or past the end; `Content-Range: bytes */size`", body = api::error::ErrorBody),
        (status = 404, description = "`file_not_found`: no such file, deleted, or in a channel the caller cannot read", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: a part of the file is on no reachable node right now", body = api::error::ErrorBody)
    )
)]
pub async fn download(
    State(s): State<AppState>,
    Path(file_id): Path<String>,
    auth: Auth,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    // Who may read comes first: a `Range` changes which bytes go out, never who gets them.
    let rec = readable_file(&s, &file_id, &auth.user.username).await?;
    let size = rec.file.size;
    // The whole file's SHA-256 is a strong validator: the bytes behind an id never change.
    let etag = format!("\"{}\"", rec.file.sha256);
    let want = file_range::want(&request, size, &etag);
    if want == Want::Unsatisfiable {
        let mut r = ApiError::from(FileApiError::RangeNotSatisfiable(size)).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes */{size}")),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        return Ok(r);
    }
    // Every chunk here before the first byte goes out: a missing one is fetched (and its hash
    // checked) now, so the answer is either complete or an error, never a truncated file.
    for sha in &rec.file.chunks {
        s.node.ensure_blob(sha).await.map_err(blob_error)?;
    }
    let (status, pieces, len) = match want {
        Want::Part { start, end } => {
            let pieces = range_pieces(&s, &rec, start, end).await?;
            (StatusCode::PARTIAL_CONTENT, pieces, end - start + 1)
        }
        _ => {
            let whole = rec.file.chunks.iter().map(|sha| (sha.clone(), None));
            (StatusCode::OK, whole.collect(), size)
        }
    };
    let mut headers = download_headers(&rec.file.mime, &rec.file.name, len);
    headers.insert(header::ETAG, header_value(&etag));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Want::Part { start, end } = want {
        headers.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {start}-{end}/{size}")),
        );
    }
    let node = s.node.clone();
    let stream = futures::stream::iter(pieces).then(move |(sha, part)| {
        let node = node.clone();
        async move {
            let bytes = read_chunk(&node, sha).await?;
            match part {
                None => Ok(bytes),
                Some((skip, take)) if skip + take <= bytes.len() => {
                    Ok(bytes.slice(skip..skip + take))
                }
                Some(_) => Err(std::io::Error::other("a chunk is shorter than its size")),
            }
        }
    });
    Ok((status, headers, Body::from_stream(stream)).into_response())
}

/// One chunk of a download as `(sha256, part)`: `None` for all of it, `(skip, take)` for a
/// slice.
type Piece = (String, Option<(usize, usize)>);

/// The chunk slices that make bytes `start..=end` of `rec`'s file, from the sizes of the
/// chunks on disk (every chunk is present: the caller ensured them).
///
/// A chunk is still read whole and its hash checked before its slice goes out (at most
/// `CHUNK_MAX` bytes in memory, as for a whole download): a range answer must never carry bytes
/// the store has not verified, and seeking into an unverified file would allow exactly that.
/// Chunks before the range are skipped by their size alone, never read.
async fn range_pieces(
    s: &AppState,
    rec: &FileRecord,
    start: u64,
    end: u64,
) -> Result<Vec<Piece>, ApiError> {
    let store = s.node.blobs().clone();
    let chunks = rec.file.chunks.clone();
    let sized = tokio::task::spawn_blocking(move || {
        chunks
            .into_iter()
            .map(|sha| {
                let size = store.size(&sha);
                size.map(|n| (sha, n))
            })
            .collect::<Option<Vec<_>>>()
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .ok_or_else(|| FileApiError::BlobUnavailable("a chunk vanished before the download".into()))?;
    let total: u64 = sized.iter().map(|(_, n)| n).sum();
    if total != rec.file.size {
        return Err(ApiError::Internal(format!(
            "file {}: its chunks hold {total} bytes, not {}",
            rec.file.id, rec.file.size
        )));
    }
    let pieces = file_range::pieces(&sized, start, end)
        .ok_or_else(|| ApiError::Internal("a range past the file's chunks".into()))?;
    Ok(pieces
        .into_iter()
        .map(|p| (p.sha256, Some((p.skip, p.take))))
        .collect())
}

/// Chunk `sha`, hash checked; a damaged one, or one collected since the caller ensured it, is
/// fetched again once.
async fn read_chunk(node: &cluster::ClusterNode, sha: String) -> std::io::Result<Bytes> {
    let store = node.blobs().clone();
    let s2 = sha.clone();
    let first = tokio::task::spawn_blocking(move || store.read_verified(&s2))
        .await
        .map_err(std::io::Error::other)?;
    match first {
        Ok(b) => Ok(Bytes::from(b)),
        Err(_) => {
            node.ensure_blob(&sha)
                .await
                .map_err(std::io::Error::other)?;
            let store = node.blobs().clone();
            tokio::task::spawn_blocking(move || store.read_verified(&sha))
                .await
                .map_err(std::io::Error::other)?
                .map(Bytes::from)
                .map_err(std::io::Error::other)
        }
    }
}

use futures::StreamExt as _;

#[utoipa::path(
    get,
    path = "/api/v1/files/{file_id}/thumbnail",
    tag = "files",
    params(("file_id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "the file's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a PNG or JPEG thumbnail, longest side at most 320 px", content_type = "image/png", body = Vec<u8>),
        (status = 404, description = "`file_not_found` (as for the file) or `no_thumbnail`", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: the thumbnail is on no reachable node right now", body = api::error::ErrorBody)
    )
)]
pub async fn thumbnail(
    State(s): State<AppState>,
    Path(file_id): Path<String>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let rec = readable_file(&s, &file_id, &auth.user.username).await?;
    let Some(thumb) = rec.file.thumbnail else {
        return Err(FileApiError::NoThumbnail.into());
    };
    s.node
        .ensure_blob(&thumb.sha256)
        .await
        .map_err(blob_error)?;
    let store = s.node.blobs().clone();
    let sha = thumb.sha256.clone();
    let bytes = tokio::task::spawn_blocking(move || store.read_verified(&sha))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(blob_error)?;
    let mime = if file_checks::inline_ok(&thumb.mime) {
        thumb.mime.as_str()
    } else {
        "application/octet-stream"
    };
    let headers = download_headers(
        mime,
        &format!("thumbnail-{}", rec.file.name),
        bytes.len() as u64,
    );
    Ok((StatusCode::OK, headers, bytes).into_response())
}
