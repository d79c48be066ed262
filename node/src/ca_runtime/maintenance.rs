//! The CA's periodic `ca-maintenance` task: on the leader, CRLs are re-signed before they run
//! out and expired records pruned; on every node, the log is compacted once after the root key
//! left the CA state (older entries still hold it, sealed).
//!
//! Must never re-sign on a follower (nodes would race each other's compare-and-swap), or warn
//! on every tick about a failure that only needs a retry later.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::service::CRL_VALIDITY;
use super::{CaService, CaServiceError};
use crate::ca::{self, CaState};

/// CRLs are re-signed once less than this is left, so a leader outage of days still leaves
/// every published CRL valid.
pub const CRL_REFRESH_BEFORE: Duration = Duration::from_secs(4 * 86_400);
/// How often the maintenance task looks at the CA state (a local read; work only when due).
const MAINTENANCE_TICK: Duration = Duration::from_secs(2);
const COMPACT_WAIT: Duration = Duration::from_secs(30);
/// Pause after a failed CRL refresh before the next attempt.
const MAINTENANCE_RETRY: Duration = Duration::from_secs(60);

impl CaService {
    /// Whether this node leads the cluster right now.
    fn is_leader(&self) -> bool {
        self.node.metrics().current_leader == Some(self.node.id())
    }

    /// Re-signs CRLs that are due and prunes expired records, if anything is due.
    async fn refresh_crls(&self) -> Result<bool, CaServiceError> {
        let (_, state) = self.load()?;
        if !maintenance_due(&state, SystemTime::now()) {
            return Ok(false);
        }
        self.modify(|state, kek, now| {
            let mut next = state.clone();
            next.prune_expired(ca::x509::unix(now));
            let crls = ca::sign_crls(&next, kek, now, CRL_VALIDITY)?;
            next.record_crls(crls)?;
            Ok((next, ()))
        })
        .await?;
        Ok(true)
    }

    /// The periodic task: on the leader, keep CRLs fresh (only there, so nodes do not race each
    /// other's CAS); on every node, compact the log once after the root key left the state.
    pub fn spawn_maintenance(
        self: Arc<Self>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        cluster::spawn_named("ca-maintenance", async move {
            let mut tick = tokio::time::interval(MAINTENANCE_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen_version = 0u64;
            let mut root_was_online: Option<bool> = None;
            let mut warned_no_kek = false;
            let mut retry_at = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Ok((version, state)) = self.load() else {
                    continue;
                };
                if version != seen_version {
                    seen_version = version;
                    let online = state.root_key.is_some();
                    // Compact when the root key leaves the state, and once after start if
                    // it is gone already and the log may still hold updates from before
                    // (this node was down, or joined, when it was exported).
                    let compact = !online
                        && match root_was_online {
                            Some(was) => was,
                            None => self.node.log_may_hold_ca_updates().unwrap_or(false),
                        };
                    if compact {
                        let compacted = tokio::select! {
                            _ = cancel.cancelled() => return,
                            r = self.node.compact_log(COMPACT_WAIT) => r,
                        };
                        match compacted {
                            Ok(index) => tracing::info!(
                                index,
                                "log compacted: the root key left the CA state"
                            ),
                            Err(e) => {
                                tracing::warn!(error = %e, "log compaction after the root key export failed")
                            }
                        }
                    }
                    root_was_online = Some(online);
                }
                if !self.is_leader() || tokio::time::Instant::now() < retry_at {
                    continue;
                }
                let refreshed = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = self.refresh_crls() => r,
                };
                // After a failure, wait a while: the CRLs have days left, the log does not
                // need a warning every tick.
                if refreshed.is_err() {
                    retry_at = tokio::time::Instant::now() + MAINTENANCE_RETRY;
                }
                match refreshed {
                    Ok(true) => tracing::info!("CRLs re-signed"),
                    Ok(false) => {}
                    Err(CaServiceError::KekMissing { .. }) if warned_no_kek => {}
                    Err(e @ CaServiceError::KekMissing { .. }) => {
                        warned_no_kek = true;
                        tracing::warn!(error = %e, "this leader cannot re-sign CRLs");
                    }
                    Err(e) => tracing::warn!(error = %e, "CRL refresh failed; retrying later"),
                }
            }
        })
    }
}

/// Whether the maintenance task has work: a live issuing CA without a CRL, a CRL within
/// `CRL_REFRESH_BEFORE` of its `next_update`, or an expired record to prune.
pub fn maintenance_due(state: &CaState, now: SystemTime) -> bool {
    let now = ca::x509::unix(now);
    let soon = now.saturating_add(CRL_REFRESH_BEFORE.as_secs() as i64);
    let live_cas = std::iter::once(&state.intermediate)
        .chain(&state.previous_intermediates)
        .filter(|c| c.not_after >= now);
    for c in live_cas {
        match state.crls.get(&c.serial) {
            Some(crl) if crl.next_update > soon => {}
            _ => return true,
        }
    }
    let mut pruned = state.clone();
    pruned.prune_expired(now);
    pruned != *state
}
