//! The view DNS answers from: a named task turns every member-health view the cluster publishes
//! (`cluster::node::member_health`, about once a second) plus the static records into a zone [`View`].
//!
//! Owns the mapping "listed only if the member is serving (answered the last probe, ready, not
//! draining)" and "this node serves nothing while it is not ready itself" (docs/health.md); the
//! probing itself is the cluster's, shared with `/api/v1/cluster`. Must never block the query
//! path: handlers only clone an `Arc` out of a short lock.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use cluster::state::dns_records::DnsRecord;
use cluster::{ClusterNode, HealthView};
use hickory_server::proto::rr::Name;
use tokio_util::sync::CancellationToken;

use super::zone::{Member, Statics, View};

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

    #[cfg(test)]
    pub fn set(&self, view: View) {
        self.set_at(view, Instant::now());
    }

    pub(crate) fn set_at(&self, view: View, at: Instant) {
        if let Ok(mut g) = self.0.write() {
            *g = (Arc::new(view), at);
        }
    }
}

/// Builds the zone's view from one member-health view and the static records.
pub fn build(hv: &HealthView, statics: Arc<Statics>, serial: u32) -> View {
    View {
        ready: hv.self_ready,
        members: hv
            .members
            .iter()
            .map(|m| Member {
                id: m.id,
                api: m
                    .info
                    .api_addr
                    .parse::<SocketAddr>()
                    .ok()
                    .map(|a| (a.ip(), a.port())),
                voter: m.voter,
                healthy: m.serving(),
                https_port: m
                    .https_addr()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, port)| port.parse().ok()),
            })
            .collect(),
        serial,
        statics,
    }
}

/// Rebuilds `shared` from every member-health view the cluster publishes (about once a second)
/// until `cancel` fires, recompiling the static records only when they changed.
#[tracing::instrument(skip_all, fields(node_id = node.id()))]
pub async fn run(
    node: Arc<ClusterNode>,
    apex: Name,
    shared: SharedView,
    cancel: CancellationToken,
) {
    let mut health = node.health_watch();
    let mut serial: u32 = 1;
    let mut last: Option<View> = None;
    let mut records: Vec<DnsRecord> = Vec::new();
    let mut statics = Arc::new(Statics::default());
    loop {
        let hv = health.borrow_and_update().clone();
        match node.dns_records() {
            Ok(now) if now != records => {
                statics = Arc::new(Statics::compile(&apex, &now));
                tracing::info!(records = statics.len(), "static dns records loaded");
                records = now;
            }
            Ok(_) => {}
            // Keep serving the records we have: the next view retries.
            Err(error) => tracing::warn!(%error, "cannot read static dns records"),
        }
        let mut view = build(&hv, statics.clone(), serial);
        if last.as_ref().is_some_and(|l| {
            l.ready != view.ready || l.members != view.members || l.statics != view.statics
        }) {
            serial = serial.wrapping_add(1).max(1);
            view.serial = serial;
            tracing::info!(
                ready = view.ready,
                healthy = ?view.members.iter().filter(|m| m.healthy).map(|m| m.id).collect::<Vec<_>>(),
                serial,
                "dns view changed"
            );
        }
        last = Some(view.clone());
        shared.set_at(view, hv.taken);
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = health.changed() => if changed.is_err() { break },
        }
    }
}
