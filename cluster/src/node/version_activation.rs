//! Version activation: once every member is known to run this binary's command version, the
//! leader commits one entry of that version carrying no command.
//!
//! Why: the version gate (`versions`) opens for good only when an entry of the new version is
//! committed (`ACTIVE_VERSION`); before that it asks every member, and a member that is down
//! counts as the oldest version. Without this task a fresh cluster whose first file post comes
//! while one node is down would refuse it, although every member has always run the new binary.
//! Committing the marker while all members are up and known turns "all members answered once"
//! into a replicated fact that survives restarts and leader changes.
//!
//! Owns nothing but that one proposal. Must never propose the marker unless every current
//! member answered with at least `COMMAND_VERSION` (an older member could not apply it and
//! would stop), and never propose anything else.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::command::{COMMAND_VERSION, Request};
use crate::node::batcher::now_ms;
use crate::node::shared::Shared;

/// Short, because the task ends for good after the first success and reads one key per tick
/// until then; a new cluster should not wait long for its version to be active.
const PERIOD: Duration = Duration::from_millis(200);

/// Until this node has applied an entry of `COMMAND_VERSION`: while leader, checks the members'
/// versions and commits the marker once they all know it.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let active = shared.reader.active_version().unwrap_or(1);
        if active >= COMMAND_VERSION {
            // Applied here means committed: the gate is open on every node for good.
            return;
        }
        if shared.raft.metrics().borrow().current_leader != Some(shared.id) {
            continue;
        }
        let members = shared.members();
        let all = || members.iter().map(|(id, info)| (id, info));
        if shared.versions.cluster_min(shared.id, all()) < COMMAND_VERSION {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = shared.versions.refresh(&shared.http, shared.id, all()) => {}
            }
            if shared.versions.cluster_min(shared.id, all()) < COMMAND_VERSION {
                continue;
            }
        }
        let marker = Request::new(COMMAND_VERSION, now_ms(), Arc::from(Vec::new()));
        let written = tokio::select! {
            _ = cancel.cancelled() => return,
            r = shared.raft.client_write(marker) => r,
        };
        match written {
            Ok(resp) => tracing::info!(
                node_id = shared.id,
                index = resp.log_id.index,
                version = COMMAND_VERSION,
                from = active,
                "every member runs command version {COMMAND_VERSION}: committed the activation marker"
            ),
            // Not leader any more, or shutting down: the next leader's task tries again.
            Err(e) => {
                tracing::debug!(node_id = shared.id, error = %e, "activation marker not committed")
            }
        }
    }
}
