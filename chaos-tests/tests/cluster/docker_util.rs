//! The shape every 3-host Docker scenario shares ([`Scenario`]): the cluster of the shipped
//! image (`chaos_tests::docker`), a channel, REST posters whose servers come from the nodes' DNS
//! on port 53 (HTTPS on 443, trusting only the root), one WebSocket session that starts on the
//! node the fault will hit, and at the end the invariant checks the process-based chaos tests
//! use (nothing acknowledged lost or duplicated, the same order everywhere, nothing unsent),
//! then removal of everything and a check that nothing of the test is left in Docker.

use std::time::{Duration, Instant};

use chaos_tests::checks::{self, Msg};
use chaos_tests::docker::{self, DockerCluster, DockerEnv};
use chaos_tests::load::post_until_acked;
use chaos_tests::{Load, LoadConfig};

/// REST posters (each a failover client over every address DNS gave).
const POSTERS: usize = 3;
/// How long DNS may take to drop or re-list a node: the health probe runs every second and a
/// view is at most 3 s old (docs/health.md); the rest is slack for a loaded 2-core machine.
pub const DNS_CHANGE: Duration = Duration::from_secs(30);
/// How long a WebSocket send may take to be acknowledged across a fault and the failover.
const WS_ACK: Duration = Duration::from_secs(90);
/// Acks the load must gather in each phase (before, during, after a fault).
pub const PROGRESS: usize = 15;

pub struct Scenario {
    pub cluster: DockerCluster,
    pub channel: String,
    load: Option<Load>,
    ws: Option<ops::ChatSession>,
    ws_acked: Vec<Msg>,
    ws_sent: Vec<String>,
    ws_batches: u32,
}

impl Scenario {
    /// Brings the cluster up, checks every node's DNS lists all three, and starts the posters.
    /// `None` (after printing why) when Docker or the static binaries are missing.
    pub async fn start(test: &str) -> Option<Scenario> {
        let env = DockerEnv::detect(test)?;
        let started = Instant::now();
        let cluster = DockerCluster::start(&env).await;
        eprintln!(
            "{test}: 3 containers up (init + 2 joins) in {:.1?}, network {} ({})",
            started.elapsed(),
            cluster.network().name,
            cluster.network().cidr()
        );
        let channel = "docker".to_owned();
        cluster.or_fail(cluster.create_channel(&channel).await);
        for id in cluster.ids() {
            cluster.or_fail(cluster.wait_dns(id, &[1, 2, 3], DNS_CHANGE).await);
        }
        let clients = cluster.or_fail(cluster.clients_by_dns(1, POSTERS).await);
        let load = Load::start(clients, LoadConfig::new(&channel, test));
        let s = Scenario {
            cluster,
            channel,
            load: Some(load),
            ws: None,
            ws_acked: Vec::new(),
            ws_sent: Vec::new(),
            ws_batches: 0,
        };
        s.wait_progress(Instant::now(), "posts before the fault")
            .await;
        Some(s)
    }

    fn load(&self) -> &Load {
        match &self.load {
            Some(l) => l,
            None => self.cluster.fail("the load already stopped"),
        }
    }

    /// Waits until the posters got [`PROGRESS`] acks sent after `since`.
    pub async fn wait_progress(&self, since: Instant, what: &str) {
        let r = chaos_tests::wait::poll_until(what, Duration::from_secs(90), || async {
            let n = self.load().acks_after(since).len();
            if n >= PROGRESS {
                Ok(())
            } else {
                Err(format!(
                    "{n} acks since, {} retried attempts",
                    self.load().failed_attempts()
                ))
            }
        })
        .await;
        self.cluster.or_fail(r);
    }

    /// Opens the WebSocket session on node `first` (then the others), subscribed to the
    /// channel, with a short read timeout so a frozen or cut node is noticed quickly.
    pub async fn open_ws(&mut self, first: u64) {
        let mut order = vec![first];
        order.extend(self.cluster.ids().into_iter().filter(|id| *id != first));
        let session = self
            .cluster
            .session_builder(&order)
            .subscribe_after(&self.channel, 0)
            .read_timeout(Duration::from_secs(5))
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .connect()
            .await
            .unwrap_or_else(|e| self.cluster.fail(&format!("WebSocket session: {e}")));
        let on = session.current_node().map(|n| n.node_id);
        assert_eq!(on, Some(first), "the session starts on its first server");
        self.ws = Some(session);
    }

    /// The node the WebSocket session is on now.
    pub fn ws_node(&self) -> Option<u64> {
        self.ws.as_ref()?.current_node().map(|n| n.node_id)
    }

    /// Sends `n` messages on the WebSocket session and waits until each is acknowledged
    /// (re-sent by the session across reconnects, answered once).
    pub async fn ws_batch(&mut self, n: usize) {
        self.ws_batches += 1;
        let Some(ws) = &self.ws else {
            self.cluster.fail("no WebSocket session open")
        };
        let batch = self.ws_batches;
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let id = format!("ws-{batch}-{i}");
                self.ws_sent.push(id.clone());
                ws.send_with_id(&self.channel, &format!("{id} over wss"), None, id)
            })
            .collect();
        for h in handles {
            let id = h.client_msg_id().to_owned();
            match h.wait_timeout(WS_ACK).await {
                Ok(ack) => self.ws_acked.push(Msg {
                    seq: ack.seq,
                    author: chaos_tests::ADMIN_USER.to_owned(),
                    body: format!("{id} over wss"),
                    ts_ms: ack.ts_ms,
                    client_msg_id: ack.client_msg_id,
                }),
                Err(e) => self.cluster.fail(&format!("WebSocket send {id}: {e}")),
            }
        }
    }

    /// After the leader `lost` was taken away at `at` (`how`: "killed", "disconnected"): the
    /// others elect a leader, their DNS stops listing `lost`, the posters go on through them,
    /// and the WebSocket session that was on `lost` moves off it and is acknowledged again.
    pub async fn leader_lost(&mut self, lost: u64, at: Instant, how: &str) {
        let c = &self.cluster;
        let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != lost).collect();
        let new = c.or_fail(c.wait_for_leader(&others, &[lost]).await);
        eprintln!(
            "leader {lost} {how}; node {new} leads after {:.1?}",
            at.elapsed()
        );
        for id in &others {
            c.or_fail(c.wait_dns(*id, &others, DNS_CHANGE).await);
        }
        eprintln!(
            "DNS lists only nodes {others:?} {:.1?} after node {lost} was {how}",
            at.elapsed()
        );
        self.wait_progress(at, &format!("posts through nodes {others:?}"))
            .await;
        self.ws_batch(20).await;
        let on = self.ws_node();
        assert!(
            on.is_some() && on != Some(lost),
            "the WebSocket session should have left node {lost} ({how}), is on {on:?}"
        );
    }

    /// After node `id` came back at `at`: it is ready again and the posters keep going.
    pub async fn back(&self, id: u64, at: Instant, what: &str) {
        self.cluster.or_fail(self.cluster.wait_ready(id).await);
        self.wait_progress(at, what).await;
    }

    /// Stops the load, settles what the clients did not learn, waits until all three nodes
    /// agree, runs the checks, then removes everything and checks nothing is left in Docker.
    pub async fn finish(mut self) {
        let cluster = &self.cluster;
        for id in cluster.ids() {
            cluster.or_fail(cluster.wait_ready(id).await);
            cluster.or_fail(cluster.wait_dns(id, &[1, 2, 3], DNS_CHANGE).await);
        }
        let report = match self.load.take() {
            Some(l) => l.stop().await,
            None => cluster.fail("no load"),
        };
        assert!(
            report.panics.is_empty(),
            "posters panicked: {:?}",
            report.panics
        );
        let mut acked = report.acked_msgs();
        let client = cluster.admin_client();
        for f in &report.failed {
            let deadline = Instant::now() + Duration::from_secs(60);
            match post_until_acked(&client, &self.channel, &f.body, &f.client_msg_id, deadline)
                .await
            {
                Ok((out, _)) => acked.push(Msg::from(&out.message)),
                Err((e, _)) => cluster.fail(&format!("settling {}: {e}", f.client_msg_id)),
            }
        }
        acked.extend(self.ws_acked.iter().cloned());
        let mut sent = report.sent_ids();
        sent.extend(self.ws_sent.iter().cloned());
        let min_index = report.acks.iter().filter_map(|a| a.index).max();
        let max_seq = acked.iter().map(|m| m.seq).max().unwrap_or(0);
        let views = cluster.or_fail(
            cluster
                .wait_converged(&self.channel, &[1, 2, 3], min_index, max_seq)
                .await,
        );
        cluster.check(checks::all_core(&acked, &views));
        cluster.check(checks::nothing_unsent_written(&sent, &views));
        cluster.check(checks::acknowledged_in_send_order(&report.per_poster()));
        eprintln!(
            "{} REST acks ({} unknown, settled; {} failed attempts retried), {} WebSocket acks; \
             {} messages identical on all 3 nodes",
            report.acks.len(),
            report.failed.len(),
            report.failed_attempts,
            self.ws_acked.len(),
            views[0].messages.len()
        );
        if let Some(ws) = self.ws.take() {
            ws.close().await;
        }
        let suffix = self.cluster.suffix().to_owned();
        drop(self);
        docker::assert_nothing_left(&suffix);
    }
}
