//! Keeps a node whose data directory is below the free-space watermark out of leadership,
//! and samples the free space every second for the write gate, readiness and status.
//!
//! Why: a leader that can no longer be sure to store entries should not be the one that
//! accepts them, and openraft 0.9 has no leadership transfer. So a leader below the watermark
//! stops its heartbeats (`runtime_config().heartbeat(false)`): the followers' `election_gate`
//! sees a leader that reports low space and elects one of them, whose vote request deposes this
//! one. Any node below the watermark never campaigns (`election_gate` checks `low_space()`),
//! but keeps voting and replicating: the watermark is the headroom for entries the leader still
//! sends. Heartbeats are restored when space returns.
//!
//! Owns the heartbeat switch for this reason only. Must never touch it while space is fine and
//! it has not turned it off itself, and never touches elections (`election_gate` owns them).

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::node::shared::Shared;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut low_logged = false;
    let mut heartbeat_off = false;
    let mut sample_failed = false;
    let dir = shared.config.data_dir.clone();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let disk = shared.disk.clone();
        let path = dir.clone();
        let sampled = tokio::task::spawn_blocking(move || disk.sample(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match sampled {
            Err(e) if !sample_failed => {
                sample_failed = true;
                tracing::warn!(node_id = shared.id, path = %dir.display(), error = %e, "cannot read the data directory's free space");
            }
            Err(_) => {}
            Ok(_) => sample_failed = false,
        }
        let low = shared.disk.low_space();
        let state = shared.raft.metrics().borrow().state;
        let rc = shared.raft.runtime_config();
        match low {
            Some(reason) => {
                if !low_logged {
                    tracing::warn!(node_id = shared.id, path = %dir.display(), %reason, "free space below the watermark: refusing new writes, not campaigning");
                    low_logged = true;
                }
                if state == ServerState::Leader && !heartbeat_off {
                    tracing::warn!(node_id = shared.id, %reason, "leader below the free-space watermark: stopping heartbeats so another node takes over");
                    rc.heartbeat(false);
                    heartbeat_off = true;
                } else if state != ServerState::Leader && heartbeat_off {
                    // Deposed: heartbeats only matter to a leader, and this one may lead again
                    // once space returns.
                    tracing::info!(node_id = shared.id, "leadership handed over");
                    rc.heartbeat(true);
                    heartbeat_off = false;
                }
            }
            None => {
                if low_logged {
                    tracing::info!(node_id = shared.id, free_bytes = ?shared.disk.free_bytes(), "free space back above the watermark: taking writes and campaigning again");
                    low_logged = false;
                }
                if heartbeat_off {
                    rc.heartbeat(true);
                    heartbeat_off = false;
                }
            }
        }
    }
}
