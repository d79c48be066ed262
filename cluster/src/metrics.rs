//! The cluster layer's Prometheus metrics: Raft (term, leadership, commit and applied index,
//! log and snapshot size), the write path (group commit) and storage (free space).
//!
//! Owns the definitions of every `conclave_raft_*`, `conclave_write_*` and `conclave_storage_*`
//! metric and their registration into the process's one `Registry` (`register`, called by the
//! `node` crate). Counters and histograms bumped on the write path live in process-wide
//! statics: a node restarted in-process after a storage failure keeps counting from where it
//! was, as Prometheus expects of a counter while the process lives. Gauges that Raft already
//! knows are read at scrape time ([`NodeCollector`]), never pushed.
//!
//! Must never use a label whose values come from users or grow with the data (names,
//! channels, ids): every label here has a small fixed set of values. Must never block or fail
//! the write path: a bump is an atomic add.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::node::raft_node::ClusterNode;
use crate::node::shared::Shared;
use crate::storage::disk_space::StorageState;

/// A label set with one fixed-vocabulary label (`outcome`, `state`).
pub type OneLabel = [(&'static str, &'static str); 1];

/// The write path's and the log store's metrics, one set per process.
struct Metrics {
    append_seconds: Histogram,
    fsync_seconds: Histogram,
    batch_commands: Histogram,
    commit_seconds: Histogram,
    commands: Family<OneLabel, Counter>,
    forwarded: Counter,
    leader_changes: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    // 100 µs to ~3.3 s: an SSD's fdatasync is well under a millisecond, a loaded HDD or a
    // network disk tens to hundreds.
    append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
    fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
    // 1 to 512 commands: the batcher's default cap is in that range.
    batch_commands: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
    // 0.5 ms to ~8 s: a commit needs a quorum's fsync and a network round trip.
    commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
    commands: Family::default(),
    forwarded: Counter::default(),
    leader_changes: Counter::default(),
});

/// Times one log fsync (`sync_data`) and records it.
pub(crate) fn observe_fsync<T>(f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    METRICS
        .fsync_seconds
        .observe(started.elapsed().as_secs_f64());
    out
}

/// Records one log append (write and fsync of a batch of entries).
pub(crate) fn observe_append(took: Duration) {
    METRICS.append_seconds.observe(took.as_secs_f64());
}

/// Records one batch the group-commit batcher proposes.
pub(crate) fn observe_batch(commands: usize) {
    METRICS.batch_commands.observe(commands as f64);
}

/// Records the outcome of a proposed batch: its commands committed (with the time from
/// proposal to commit) or failed.
pub(crate) fn observe_commit(commands: usize, took: Option<Duration>) {
    let outcome = match took {
        Some(took) => {
            METRICS.commit_seconds.observe(took.as_secs_f64());
            "committed"
        }
        None => "failed",
    };
    METRICS
        .commands
        .get_or_create(&[("outcome", outcome)])
        .inc_by(commands as u64);
}

/// Records commands this node sent to the leader because it was not the leader itself.
pub(crate) fn observe_forwarded(commands: usize) {
    METRICS.forwarded.inc_by(commands as u64);
}

/// Registers the cluster layer's metrics, and `node`'s scrape-time gauges, into `registry`.
pub fn register(registry: &mut Registry, node: Arc<ClusterNode>) {
    let m = &*METRICS;
    registry.register(
        "conclave_raft_log_append_seconds",
        "Time to write and fsync one batch of Raft log entries on this node",
        m.append_seconds.clone(),
    );
    registry.register(
        "conclave_raft_log_fsync_seconds",
        "Time of one fdatasync of the Raft log on this node",
        m.fsync_seconds.clone(),
    );
    registry.register(
        "conclave_raft_leader_changes",
        "Times this node saw a new leader (a new term's leader, not the first one after start)",
        m.leader_changes.clone(),
    );
    registry.register(
        "conclave_write_batch_commands",
        "Commands per batch this node's group commit proposed",
        m.batch_commands.clone(),
    );
    registry.register(
        "conclave_write_commit_seconds",
        "Time from proposing a batch to its commit, for batches proposed through this node",
        m.commit_seconds.clone(),
    );
    registry.register(
        "conclave_write_commands",
        "Client commands written through this node, by outcome (committed, failed)",
        m.commands.clone(),
    );
    registry.register(
        "conclave_write_forwarded_commands",
        "Client commands this node sent on to the leader (each attempt counts)",
        m.forwarded.clone(),
    );
    registry.register_collector(Box::new(NodeCollector { node }));
}

/// Counts leader changes as this node sees them: a leader (with its term) other than the last
/// one seen. The first leader seen after a start is not a change.
pub(crate) async fn watch_leader(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut rx = shared.raft.metrics();
    let mut last: Option<(u64, u64)> = None;
    loop {
        let seen = {
            let m = rx.borrow_and_update();
            m.current_leader.map(|l| (m.current_term, l))
        };
        if let Some(now) = seen {
            if last.is_some_and(|l| l != now) {
                METRICS.leader_changes.inc();
            }
            last = Some(now);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// The gauges of one running node, read at scrape time from Raft's metrics, the log store and
/// the free-space sample.
pub struct NodeCollector {
    node: Arc<ClusterNode>,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeCollector({})", self.node.id())
    }
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    let g = ConstGauge::new(value);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// Bytes of the files directly under `dir` (the log's segments and metadata); 0 if unreadable.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let shared = &self.node.shared;
        let m = self.node.metrics();
        let voters = m.membership_config.membership().voter_ids().count();
        let is_leader = m.state == openraft::ServerState::Leader;
        let quorum =
            crate::node::readiness::leader_has_quorum(&m, shared.config.election_timeout_max_ms);
        let applied = m.last_applied.map_or(0, |l| l.index);
        // A leader's own commit index is what it last told the log store; a follower's is
        // what the leader told it. Neither can be behind what was applied.
        let committed = self.node.commit_index().max(applied);
        let last_log = m.last_log_index.unwrap_or(0);
        let purged = m.purged.map_or(0, |l| l.index);
        let dir = &shared.config.data_dir;

        gauge(
            &mut enc,
            "conclave_raft_term",
            "Current Raft term",
            m.current_term,
        )?;
        gauge(
            &mut enc,
            "conclave_raft_is_leader",
            "1 if this node is the Raft leader",
            u64::from(is_leader),
        )?;
        gauge(
            &mut enc,
            "conclave_raft_has_leader",
            "1 if this node knows a current leader",
            u64::from(m.current_leader.is_some()),
        )?;
        gauge(
            &mut enc,
            "conclave_raft_leader_quorum_ok",
            "1 if this node leads and a majority of voters acknowledged it within the election timeout",
            u64::from(quorum),
        )?;
        gauge(
            &mut enc,
            "conclave_raft_voters",
            "Voters in the membership this node knows",
            voters as u64,
        )?;
        gauge(
            &mut enc,
            "conclave_raft_commit_index",
            "Highest log index this node knows to be committed",
            committed,
        )?;
        gauge(
            &mut enc,
            "conclave_raft_applied_index",
            "Highest log index this node applied to its state",
            applied,
        )?;
        gauge(
            &mut enc,
            "conclave_raft_applied_lag_entries",
            "Committed entries this node has not applied yet",
            committed.saturating_sub(applied),
        )?;
        gauge(
            &mut enc,
            "conclave_raft_last_log_index",
            "Highest index in this node's Raft log",
            last_log,
        )?;
        gauge(
            &mut enc,
            "conclave_raft_log_entries",
            "Entries in this node's Raft log (not yet purged into a snapshot)",
            last_log.saturating_sub(purged),
        )?;
        gauge(
            &mut enc,
            "conclave_raft_log_size_bytes",
            "Bytes of this node's Raft log files",
            dir_bytes(&dir.join("log")),
        )?;
        gauge(
            &mut enc,
            "conclave_raft_snapshot_index",
            "Last log index the latest snapshot covers (0: none)",
            m.snapshot.map_or(0, |l| l.index),
        )?;
        if let Ok(meta) = std::fs::metadata(crate::storage::sm_store::snapshot_path(dir)) {
            gauge(
                &mut enc,
                "conclave_raft_snapshot_size_bytes",
                "Bytes of the latest snapshot file",
                meta.len(),
            )?;
            if let Ok(at) = meta.modified() {
                let age = SystemTime::now()
                    .duration_since(at)
                    .unwrap_or_default()
                    .as_secs_f64();
                gauge(
                    &mut enc,
                    "conclave_raft_snapshot_age_seconds",
                    "Seconds since the latest snapshot file was written",
                    age,
                )?;
            }
        }
        if let Some(free) = shared.disk.free_bytes() {
            gauge(
                &mut enc,
                "conclave_storage_free_bytes",
                "Free bytes of the data directory's file system (last sample)",
                free,
            )?;
        }
        gauge(
            &mut enc,
            "conclave_storage_min_free_bytes",
            "The free-space watermark ([storage] min_free_bytes; 0: off)",
            shared.disk.min_free_bytes(),
        )?;
        let (state, _) = shared.disk.state();
        let mut family = enc.encode_descriptor(
            "conclave_storage_state",
            "1 for the data directory's current state (ok, low_space, failed), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for s in [
            StorageState::Ok,
            StorageState::LowSpace,
            StorageState::Failed,
        ] {
            let g = ConstGauge::new(u64::from(s == state));
            g.encode(family.encode_family(&[("state", s.as_str())])?)?;
        }
        gauge(
            &mut enc,
            "conclave_node_ready",
            "1 if this node answers /readyz with ready",
            u64::from(self.node.readiness().ready),
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The statics encode in the Prometheus text format with the names the alert rules and
    /// the dashboard use (a renamed metric would silently break both).
    #[test]
    fn write_path_metrics_encode_with_their_documented_names() {
        observe_batch(3);
        observe_commit(3, Some(Duration::from_millis(2)));
        observe_commit(1, None);
        observe_forwarded(2);
        observe_append(Duration::from_micros(300));
        let _: () = observe_fsync(|| ());
        let m = &*METRICS;
        let mut registry = Registry::default();
        registry.register("conclave_write_commands", "h", m.commands.clone());
        registry.register(
            "conclave_raft_leader_changes",
            "h",
            m.leader_changes.clone(),
        );
        registry.register(
            "conclave_write_commit_seconds",
            "h",
            m.commit_seconds.clone(),
        );
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("# TYPE conclave_write_commands_total counter"),
            "{out}"
        );
        assert!(
            out.contains("conclave_write_commands_total{outcome=\"committed\"}"),
            "{out}"
        );
        assert!(
            out.contains("conclave_write_commands_total{outcome=\"failed\"}"),
            "{out}"
        );
        assert!(out.contains("conclave_raft_leader_changes_total "), "{out}");
        assert!(
            out.contains("conclave_write_commit_seconds_bucket{le=\"+Inf\"}"),
            "{out}"
        );
        assert!(!out.contains("# EOF"), "{out}");
    }
}
