//! The health view DNS answers from: a named background task probes every member about once a
//! second (`ClusterNode::cluster_status`) and publishes a [`View`] snapshot.
//!
//! Owns the rule "listed only if it answered the last probe and reports itself ready" and the
//! rule "this node serves nothing while it is not ready itself" (see docs/health.md). Must never
//! block the query path: handlers only clone an `Arc` out of a short lock.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cluster::ClusterNode;
use tokio_util::sync::CancellationToken;

use super::zone::{Member, View};

/// How often the view is refreshed. Each refresh probes all members in parallel with a 200 ms
/// budget, so a dead node leaves the answers within about one period plus that budget.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// The latest view and when it was taken.
#[derive(Clone)]
pub struct SharedView(Arc<RwLock<(Arc<View>, Instant)>>);

impl SharedView {
    pub fn new() -> Self {
        Self(Arc::new(RwLock::new((
            Arc::new(View::default()),
            Instant::now(),
        ))))
    }

    pub fn get(&self) -> (Arc<View>, Instant) {
        match self.0.read() {
            Ok(g) => (g.0.clone(), g.1),
            // Poisoned: a writer panicked. Serve a view that is not ready rather than guess.
            Err(_) => (Arc::new(View::default()), Instant::now()),
        }
    }

    pub fn set(&self, view: View) {
        self.set_at(view, Instant::now());
    }

    pub(crate) fn set_at(&self, view: View, at: Instant) {
        if let Ok(mut g) = self.0.write() {
            *g = (Arc::new(view), at);
        }
    }
}

/// Probes the cluster and builds a view. `serial` is bumped by the caller when members change.
pub async fn probe(node: &ClusterNode) -> View {
    let ready = node.status().ready;
    let members = node
        .cluster_status()
        .await
        .into_iter()
        .map(|(id, info, voter, status)| Member {
            id,
            api: info
                .api_addr
                .parse::<SocketAddr>()
                .ok()
                .map(|a| (a.ip(), a.port())),
            voter,
            healthy: status.is_ok_and(|s| s.ready),
        })
        .collect();
    View {
        ready,
        members,
        serial: 0,
    }
}

/// Refreshes `shared` every [`PROBE_PERIOD`] until `cancel` fires.
#[tracing::instrument(skip_all, fields(node_id = node.id()))]
pub async fn run(node: Arc<ClusterNode>, shared: SharedView, cancel: CancellationToken) {
    let mut serial: u32 = 1;
    let mut last: Option<View> = None;
    let mut tick = tokio::time::interval(PROBE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let mut view = tokio::select! {
            _ = cancel.cancelled() => break,
            v = probe(&node) => v,
        };
        if last
            .as_ref()
            .is_some_and(|l| l.ready != view.ready || l.members != view.members)
        {
            serial = serial.wrapping_add(1).max(1);
            tracing::info!(
                ready = view.ready,
                healthy = ?view.members.iter().filter(|m| m.healthy).map(|m| m.id).collect::<Vec<_>>(),
                serial,
                "dns view changed"
            );
        }
        view.serial = serial;
        last = Some(view.clone());
        shared.set(view);
    }
}
