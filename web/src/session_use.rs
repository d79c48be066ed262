//! Session lifetimes on this node: the local record of when each session was last used, the
//! task that replicates it coarsely (`TouchSessions`), and the deadline rule every
//! authentication and every WebSocket applies.
//!
//! Last use is tracked in memory and sent through Raft at most once per touch interval per
//! session, and only for sessions used since their last replicated touch: replicating every
//! request would put a log entry behind each one. The state machine's idle window is the idle
//! timeout plus the touch interval, so a session used on any node within its idle timeout is
//! never purged; a session therefore ends between `idle` and `idle + touch interval` after its
//! last use (docs/security.md). Must never hold a token (only token hashes) and never block a
//! request on Raft: touches are written by the background task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::{ClusterNode, Command, SessionEnd, SessionInfo, SessionRecord};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Most sessions touched in one log entry (a busy node sends several entries per interval).
const TOUCH_BATCH: usize = 500;

#[derive(Debug, Clone, Copy)]
struct Use {
    /// Last authenticated request or WebSocket frame seen on this node.
    local_ms: u64,
    /// The last use this node has replicated.
    sent_ms: u64,
}

/// Per-node memory of session use. A `std` mutex: held only to read or update one map entry,
/// never across an `.await`.
#[derive(Default)]
pub struct SessionUse {
    uses: Mutex<HashMap<String, Use>>,
}

impl SessionUse {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Use>> {
        self.uses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a use of the session `token_hash` at `now_ms`.
    pub fn record(&self, token_hash: &str, now_ms: u64) {
        let mut uses = self.lock();
        match uses.get_mut(token_hash) {
            Some(u) => u.local_ms = u.local_ms.max(now_ms),
            None => {
                uses.insert(
                    token_hash.to_owned(),
                    Use {
                        local_ms: now_ms,
                        sent_ms: 0,
                    },
                );
            }
        }
    }

    /// The last use seen on this node, if any.
    pub fn local_last_use(&self, token_hash: &str) -> Option<u64> {
        self.lock().get(token_hash).map(|u| u.local_ms)
    }

    /// Takes the touches due: sessions used since their last replicated touch.
    fn due(&self, now_ms: u64, forget_after_ms: u64) -> Vec<(String, u64)> {
        let mut uses = self.lock();
        // Sessions whose use was replicated and that have not been used since long enough are
        // forgotten: the replicated value says the same, and the map stays bounded.
        uses.retain(|_, u| {
            u.local_ms > u.sent_ms || now_ms.saturating_sub(u.local_ms) < forget_after_ms
        });
        uses.iter()
            .filter(|(_, u)| u.local_ms > u.sent_ms)
            .map(|(th, u)| (th.clone(), u.local_ms))
            .collect()
    }

    fn mark_sent(&self, touches: &[(String, u64)]) {
        let mut uses = self.lock();
        for (th, at) in touches {
            if let Some(u) = uses.get_mut(th) {
                u.sent_ms = u.sent_ms.max(*at);
            }
        }
    }

    /// Replicates due touches every `interval` until `cancel`. A failed write (no leader) is
    /// retried at the next tick: the uses stay due.
    pub fn spawn_flusher(
        self: &Arc<Self>,
        node: Arc<ClusterNode>,
        interval: Duration,
        cancel: CancellationToken,
    ) {
        let this = self.clone();
        cluster::spawn_named("session-touch", async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let forget = (interval.as_millis() as u64).saturating_mul(2);
                let due = this.due(crate::now_ms(), forget);
                if due.is_empty() || !node.cluster_supports(6).await {
                    continue;
                }
                for chunk in due.chunks(TOUCH_BATCH) {
                    let cmd = Command::TouchSessions {
                        touches: chunk.to_vec(),
                    };
                    match node.write(cmd).await {
                        Ok(_) => this.mark_sent(chunk),
                        Err(e) => {
                            tracing::debug!(error = %e, "replicating session use failed; retrying next tick");
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// When a session ends and why, from the replicated record and info plus this node's own
/// record of its use.
pub fn deadline(
    rec: &SessionRecord,
    info: Option<&SessionInfo>,
    local_last_use: Option<u64>,
) -> (u64, SessionEnd) {
    let absolute = rec.expires_at_ms;
    let Some(info) = info.filter(|i| i.idle_ms > 0) else {
        return (absolute, SessionEnd::Absolute);
    };
    let last = local_last_use.map_or(info.last_used_ms, |l| l.max(info.last_used_ms));
    let idle = last.saturating_add(info.idle_ms);
    if idle < absolute {
        (idle, SessionEnd::Idle)
    } else {
        (absolute, SessionEnd::Absolute)
    }
}

/// The public id of a session: a one-way function of its token hash, so listing sessions
/// reveals nothing that authenticates, and sessions from before version 6 have one too.
pub fn public_id(token_hash: &str) -> String {
    let d = Sha256::digest(format!("conclave-session-id:{token_hash}").as_bytes());
    hex::encode(&d[..8])
}

/// The reason as logged and shown.
pub fn end_text(e: SessionEnd) -> &'static str {
    match e {
        SessionEnd::Absolute => "absolute",
        SessionEnd::Idle => "idle",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(expires: u64) -> SessionRecord {
        SessionRecord {
            token_hash: "t".into(),
            username: "u".into(),
            created_at_ms: 0,
            expires_at_ms: expires,
        }
    }

    #[test]
    fn deadline_uses_the_later_of_local_and_replicated_use() {
        let info = SessionInfo {
            idle_ms: 100,
            last_used_ms: 50,
            ..Default::default()
        };
        assert_eq!(
            deadline(&rec(1_000), Some(&info), None),
            (150, SessionEnd::Idle)
        );
        assert_eq!(
            deadline(&rec(1_000), Some(&info), Some(400)),
            (500, SessionEnd::Idle)
        );
        assert_eq!(
            deadline(&rec(1_000), Some(&info), Some(10)),
            (150, SessionEnd::Idle)
        );
        assert_eq!(
            deadline(&rec(120), Some(&info), Some(400)),
            (120, SessionEnd::Absolute)
        );
        assert_eq!(
            deadline(&rec(120), None, Some(400)),
            (120, SessionEnd::Absolute)
        );
    }

    #[test]
    fn only_sessions_used_since_their_last_touch_are_due() {
        let u = SessionUse::default();
        u.record("a", 10);
        u.record("b", 20);
        let due = u.due(30, 1_000);
        assert_eq!(due.len(), 2);
        u.mark_sent(&due);
        assert!(u.due(40, 1_000).is_empty());
        u.record("a", 50);
        assert_eq!(u.due(60, 1_000), vec![("a".to_string(), 50)]);
        // Replicated and unused for long enough: forgotten.
        u.mark_sent(&[("a".to_string(), 50)]);
        assert!(u.due(5_000, 1_000).is_empty());
        assert_eq!(u.local_last_use("b"), None);
    }

    #[test]
    fn public_ids_are_short_stable_and_distinct() {
        assert_eq!(public_id("abc"), public_id("abc"));
        assert_ne!(public_id("abc"), public_id("abd"));
        assert_eq!(public_id("abc").len(), 16);
    }
}
