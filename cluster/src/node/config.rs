//! `ClusterConfig`: what the cluster layer needs to start a member, with the defaults the
//! `node` crate's config file falls back to.
//!
//! Owns the names and defaults of the Raft timings, batch limits and storage cache. Must never
//! validate against openraft's rules itself: `ClusterNode::start` hands the timings to
//! `openraft::Config::validate`, the one place that knows them.

use std::path::PathBuf;
use std::sync::Arc;

use crate::types::{NodeId, NodeInfo};

/// Everything the cluster layer needs to start a member. Timeouts are in milliseconds; see
/// `docs/configuration.md` for the reasons behind the defaults.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Advertised addresses (what peers and clients dial).
    pub info: NodeInfo,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub install_snapshot_timeout_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    pub max_payload_entries: u64,
    pub batch_max_commands: usize,
    pub batch_max_bytes: usize,
    pub batch_max_in_flight: usize,
    pub write_timeout_ms: u64,
    pub ready_max_apply_lag: u64,
    pub sled_cache_bytes: u64,
    /// Free space of the data directory below which this node refuses new writes, is not
    /// ready and gives up leadership (`[storage] min_free_bytes`); 0 turns it off.
    pub min_free_bytes: u64,
    /// Raft log segment size (`[storage] log_segment_bytes`): a new file starts past it, and
    /// purging deletes whole segments.
    pub log_segment_bytes: u64,
    /// Source address for connections to peers (the cluster port's IP), if not unspecified.
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Mutual TLS for the cluster port and peer calls (`peer_tls`); `None` keeps plain HTTP.
    /// The same `Arc` must be handed to `rpc_server::serve_cluster_port`.
    pub peer_tls: Option<Arc<crate::transport::peer_tls::PeerTls>>,
    /// The advertised HTTPS client address, reported in this node's status (not replicated:
    /// it is a property of how the process runs, like readiness).
    pub https_addr: Option<String>,
    /// The operator set `insecure_plaintext = true`: this node listens on a non-loopback
    /// address without TLS. Reported in this node's status so `GET /api/v1/cluster` and
    /// `conclavectl status` show it (not replicated, like `https_addr`).
    pub insecure_plaintext: bool,
    /// How long a blob no live file references is kept (`[files] gc_grace`): from its upload
    /// for a chunk never attached, from the deletion for a deleted file's blobs.
    pub blob_gc_grace: std::time::Duration,
}

impl ClusterConfig {
    pub fn with_defaults(node_id: NodeId, data_dir: PathBuf, info: NodeInfo) -> Self {
        Self {
            node_id,
            data_dir,
            info,
            // LAN timings (docs/configuration.md): the lease (election_timeout_max_ms) is four
            // heartbeats; `election_gate`'s pre-vote keeps a short lease from deposing a live
            // leader. election_timeout_min_ms only has to satisfy openraft's validation: its
            // own randomised timer is off.
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 200,
            install_snapshot_timeout_ms: 300_000,
            snapshot_logs_since_last: 20000,
            max_in_snapshot_log_to_keep: 1000,
            max_payload_entries: 64,
            batch_max_commands: 512,
            batch_max_bytes: 1024 * 1024,
            batch_max_in_flight: 1,
            write_timeout_ms: 5000,
            ready_max_apply_lag: 1000,
            // sled 0.34 uses about 1.5x its cache capacity; with 32 MiB a snapshot install
            // stays well under the 128 MiB growth bound (docs/architecture.md, "Snapshots").
            sled_cache_bytes: 32 * 1024 * 1024,
            min_free_bytes: 1024 * 1024 * 1024,
            log_segment_bytes: crate::storage::log_store::SEGMENT_BYTES,
            peer_source_ip: None,
            peer_tls: None,
            https_addr: None,
            insecure_plaintext: false,
            blob_gc_grace: std::time::Duration::from_secs(24 * 3600),
        }
    }
}
