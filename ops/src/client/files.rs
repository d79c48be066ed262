//! The file endpoints of [`Client`] (`PUT /api/v1/blobs/{sha256}`, `POST
//! /api/v1/channels/{name}/files`, `GET /api/v1/files/{file_id}`; docs/api.md "Files").
//!
//! A chunk upload is always retried on another node: chunks are content-addressed, so sending
//! one twice changes nothing. So is the file post (deduplicated by `client_msg_id`). Because
//! the failover ring moves to the node that answered, an upload interrupted by a node's death
//! goes on with the next unacknowledged chunk on another node. Must never print, and never
//! hold a download whole.

use std::time::Duration;

use reqwest::Method;
use sha2::Digest;

use super::{Client, decode, json};
use crate::error::ClientError;
use crate::request::{ApiRequest, Retry};
use api::rest::{BlobStored, PostFileRequest, PostOutcome, PostedMessage};

/// The largest chunk a server accepts.
pub const CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// One chunk is pushed to a majority of nodes before it is acknowledged.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);
/// A file post assembles and hashes the whole file on the server first.
const POST_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the silence between two pieces of a download.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A file being downloaded.
#[derive(Debug)]
pub struct FileDownload {
    /// The node that is sending it.
    pub server: String,
    /// `Content-Length`, if the server sent one (of the part, for a range answer).
    pub len: Option<u64>,
    pub content_type: Option<String>,
    /// Where the body starts in the file: the offset asked for when the server answered 206,
    /// 0 when it sent the whole file (200) whatever was asked.
    pub offset: u64,
    /// The whole file's SHA-256, from the `ETag` header (lowercase hex), if the server sent it.
    pub sha256: Option<String>,
    response: reqwest::Response,
}

impl FileDownload {
    /// The next piece, `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        let interrupted = |e: String| ClientError::Unreachable {
            servers: vec![self.server.clone()],
            last_error: format!("{}: the download stopped: {e}", self.server),
        };
        match tokio::time::timeout(READ_TIMEOUT, self.response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(interrupted(e.to_string())),
            Err(_) => Err(interrupted(format!(
                "nothing received for {} s",
                READ_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl Client {
    /// Uploads one chunk (at most [`CHUNK_BYTES`]); returns once a majority of voters has it.
    pub async fn put_chunk(&self, bytes: &[u8]) -> Result<BlobStored, ClientError> {
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let path = ["api", "v1", "blobs", sha.as_str()];
        let mut req = ApiRequest::new(Method::PUT, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.json_body = Some(bytes.to_vec());
        req.content_type = "application/octet-stream";
        let mut timing = self.timing;
        timing.request_timeout = timing.request_timeout.max(CHUNK_TIMEOUT);
        let reply =
            crate::request::send_with_failover(&self.http, &self.ring, timing, &req).await?;
        decode(&reply)
    }

    /// Posts a file whose chunks were uploaded with [`Client::put_chunk`] as a message.
    pub async fn post_file(
        &self,
        channel: &str,
        file: &PostFileRequest,
    ) -> Result<PostOutcome, ClientError> {
        let path = ["api", "v1", "channels", channel, "files"];
        let mut req = ApiRequest::new(Method::POST, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.json_body = Some(json(file)?);
        let mut timing = self.timing;
        timing.request_timeout = timing.request_timeout.max(POST_TIMEOUT);
        let reply =
            crate::request::send_with_failover(&self.http, &self.ring, timing, &req).await?;
        let posted: PostedMessage = decode(&reply)?;
        Ok(PostOutcome {
            message: posted.message,
            duplicate: posted.duplicate.unwrap_or(reply.status == 200),
            index: reply.index,
        })
    }

    /// Starts downloading file `file_id` from byte `from` (failing over like any read until a
    /// node answers). `from > 0` asks for `Range: bytes=from-`; check
    /// [`FileDownload::offset`]: a server may send the whole file instead. A `from` at or past
    /// the end is a 416 `range_not_satisfiable` error.
    pub async fn download_file(
        &self,
        file_id: &str,
        from: u64,
    ) -> Result<FileDownload, ClientError> {
        let path = ["api", "v1", "files", file_id];
        let mut req = ApiRequest::new(Method::GET, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.stream = true;
        if from > 0 {
            req.headers.push(("range", format!("bytes={from}-")));
        }
        let reply =
            crate::request::send_with_failover(&self.http, &self.ring, self.timing, &req).await?;
        let server = reply.server.clone();
        let response = reply.stream.ok_or_else(|| ClientError::Decode {
            message: format!("{server}: a file answer without a body"),
        })?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // A file id names fixed bytes, so its `ETag` is the SHA-256 and never changes.
        let sha256 = header(reqwest::header::ETAG)
            .map(|t| t.trim_matches('"').to_ascii_lowercase())
            .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()));
        let offset = if response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            // Only a range starting where we asked is usable; anything else is refused
            // rather than spliced at the wrong place.
            let range = header(reqwest::header::CONTENT_RANGE).unwrap_or_default();
            let start = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse::<u64>().ok());
            if start != Some(from) {
                return Err(ClientError::Decode {
                    message: format!(
                        "{server}: asked for bytes from {from}, got Content-Range '{range}'"
                    ),
                });
            }
            from
        } else {
            0
        };
        Ok(FileDownload {
            server,
            len: response.content_length(),
            content_type,
            offset,
            sha256,
            response,
        })
    }
}
