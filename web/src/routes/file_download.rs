//! File downloads and thumbnails (`GET /api/v1/files/{file_id}[/thumbnail]`), whole or one
//! byte range.
//!
//! Owns the download headers that keep a browser from rendering what a user uploaded
//! (`attachment` except for the safe image list, `nosniff`, a sandboxing CSP), the `ETag`
//! and range answers, and streaming a file chunk by chunk. Must never tell a caller who may
//! not read a file's channel that the file exists, send a byte whose chunk failed its hash
//! check, or hold more than one chunk of a file in memory.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cluster::FileRecord;
use futures::StreamExt as _;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::file_checks;
use crate::routes::file_range::{self, Want};
use crate::routes::files::{FileApiError, blob_error};
use crate::state::AppState;

/// The policy of every downloaded file: no script, no plugin, no request, no same origin.
const FILE_CSP: &str = "sandbox; default-src 'none'";

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
