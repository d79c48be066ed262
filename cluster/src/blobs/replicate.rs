//! Storing a chunk on a majority of voters before a client is told it is safe.
//!
//! Owns the acknowledgement rule of chunk uploads: the chunk is written durably here, pushed to
//! every other voter of the current membership in parallel over the cluster port (mutual TLS),
//! and acknowledged once a majority of the voters (this node included, when it is one) has it
//! on disk. Pushes still under way then carry on in the background, so a healthy cluster ends
//! up with a copy everywhere. Must never count a copy a peer has not confirmed as durable.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::store::BlobError;
use crate::node::raft_node::ClusterNode;
use crate::node::shared::Shared;
use crate::types::NodeId;

/// How long one push to a peer may take (8 MiB over a slow LAN link, with margin).
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How many voters hold a chunk, of how many, once the majority was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acks {
    pub acks: usize,
    pub voters: usize,
}

impl ClusterNode {
    /// Stores `bytes` as blob `sha` here (checking the hash) and on a majority of voters.
    pub async fn put_blob_replicated(
        &self,
        sha: &str,
        bytes: bytes::Bytes,
    ) -> Result<Acks, BlobError> {
        put_replicated(&self.shared, sha, bytes).await
    }

    /// Why this node refuses new data right now (free space below the watermark), if it does.
    pub fn disk_low(&self) -> Option<String> {
        self.shared.disk.low_space()
    }
}

pub(crate) async fn put_replicated(
    shared: &Arc<Shared>,
    sha: &str,
    bytes: bytes::Bytes,
) -> Result<Acks, BlobError> {
    let store = shared.blobs.clone();
    let (s, b) = (sha.to_string(), bytes.clone());
    tokio::task::spawn_blocking(move || store.put(&s, &b))
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
    let membership = shared.raft.metrics().borrow().membership_config.clone();
    let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
    let need = voters.len() / 2 + 1;
    let mut acks = usize::from(voters.contains(&shared.id));
    let mut pushes: FuturesUnordered<_> = membership
        .membership()
        .nodes()
        .filter(|(id, _)| **id != shared.id)
        .map(|(id, info)| {
            let (http, addr, sha, body, id) = (
                shared.http.clone(),
                info.cluster_addr.clone(),
                sha.to_string(),
                bytes.clone(),
                *id,
            );
            let voter = voters.contains(&id);
            async move {
                let r = http.put_blob(&addr, &sha, body, PUSH_TIMEOUT).await;
                if let Err(e) = &r {
                    tracing::warn!(peer = id, blob = %sha, error = %e.short(), "could not push a blob to a peer");
                }
                (voter, r.is_ok())
            }
        })
        .collect();
    while acks < need {
        match pushes.next().await {
            Some((voter, ok)) => acks += usize::from(voter && ok),
            None => break,
        }
    }
    if acks < need {
        return Err(BlobError::NoQuorum {
            acks,
            voters: voters.len(),
        });
    }
    if !pushes.is_empty() {
        // The rest finish in the background: more copies, fewer fetches later.
        crate::node::spawn_named("blob-push", async move {
            while pushes.next().await.is_some() {}
        });
    }
    Ok(Acks {
        acks,
        voters: voters.len(),
    })
}
