//! `GET /api/v1/admin/backup` for [`Client`]: the backup body as a stream of chunks.
//!
//! The request fails over like any read until a node answers with 2xx; from then on the body
//! comes from that node only (a backup is one node's point-in-time snapshot, and cannot be
//! resumed elsewhere). Owns the wait bounds of a long download. Must never hold the body
//! whole: it may be gigabytes.

use std::time::Duration;

use reqwest::Method;

use super::Client;
use crate::error::ClientError;
use crate::request::{ApiRequest, Retry};

/// Bound on the wait for the response head: the node may first build a snapshot and then
/// read it once to compute the manifest's digest, which for a large state takes minutes.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Bound on the silence between two chunks of the body.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A backup body being received.
#[derive(Debug)]
pub struct BackupDownload {
    /// The node that is sending it.
    pub server: String,
    response: reqwest::Response,
}

impl BackupDownload {
    /// The next chunk, `None` at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        let interrupted = |e: String| ClientError::Unreachable {
            servers: vec![self.server.clone()],
            last_error: format!("{}: the backup stopped: {e}", self.server),
        };
        match tokio::time::timeout(CHUNK_TIMEOUT, self.response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(interrupted(e.to_string())),
            Err(_) => Err(interrupted(format!(
                "nothing received for {} s",
                CHUNK_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl Client {
    /// Starts a backup download (admin). `sessions`: include login sessions in the state.
    pub async fn backup(&self, sessions: bool) -> Result<BackupDownload, ClientError> {
        let path = ["api", "v1", "admin", "backup"];
        let mut req = ApiRequest::new(Method::GET, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.query.push(("sessions", sessions.to_string()));
        req.stream = true;
        // The first attempt waits up to HEAD_TIMEOUT; failing over to other nodes still ends
        // at the usual deadline, so a cluster that is down is reported as soon as usual.
        let mut timing = self.timing;
        timing.request_timeout = HEAD_TIMEOUT;
        let reply =
            crate::request::send_with_failover(&self.http, &self.ring, timing, &req).await?;
        let server = reply.server.clone();
        let response = reply.stream.ok_or_else(|| ClientError::Decode {
            message: format!("{server}: a backup answer without a body"),
        })?;
        Ok(BackupDownload { server, response })
    }
}
