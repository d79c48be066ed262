//! How a test talks to a [`DockerCluster`], the way a LAN client does: its addresses, DNS
//! queries to the nodes' port 53, HTTPS clients and WebSocket sessions on 443 that trust only
//! the cluster root, `/readyz` on the plain port, the leader, a channel's history per node, and
//! failing a test with every node's log. Must never reach a node any other way (no `docker
//! exec`): what the test sees is what a user's device would see.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, bail};

use super::cluster::{DockerCluster, NodeInfo, READY_TIMEOUT, WORKSPACE, logs_of};
use super::network::TestNetwork;
use crate::checks::{Msg, NodeView};
use crate::wait::poll_until;

impl DockerCluster {
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &NodeInfo {
        match self.nodes.iter().find(|n| n.id == id) {
            Some(n) => n,
            None => panic!("no node {id} in this cluster"),
        }
    }

    pub fn ip(&self, id: u64) -> Ipv4Addr {
        self.node(id).ip
    }

    pub fn network(&self) -> &TestNetwork {
        &self.net
    }

    pub fn image_tag(&self) -> &str {
        &self.image.tag
    }

    /// The client API over HTTPS (443), as DNS hands the node out.
    pub fn https_url(&self, id: u64) -> String {
        format!("https://{}:443", self.ip(id))
    }

    /// The plain port (80): `/readyz`, the trust page, the root.
    pub fn plain_url(&self, id: u64) -> String {
        format!("http://{}:80", self.ip(id))
    }

    pub fn dns_addr(&self, id: u64) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip(id)), 53)
    }

    /// The cluster root, checked against `init`'s fingerprint.
    pub fn trust_root(&self) -> &ops::TrustRoot {
        match &self.root {
            Some(r) => r,
            None => panic!("the cluster root is not known yet"),
        }
    }

    pub fn root_pem(&self) -> &[u8] {
        &self.root_pem
    }

    /// The fingerprint `conclave init` printed (`AB:CD:...`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub(super) fn client_without_token(&self, ids: &[u64]) -> ops::Client {
        let urls = ids.iter().map(|id| self.https_url(*id)).collect();
        match ops::Client::new_trusting(urls, Some(self.trust_root().clone())) {
            Ok(c) => c,
            Err(e) => panic!("client for {ids:?}: {e}"),
        }
    }

    /// An admin client over HTTPS to `ids`, failing over in that order.
    pub fn client(&self, ids: &[u64]) -> ops::Client {
        self.client_without_token(ids)
            .with_token(self.admin_token.clone())
    }

    /// An admin client over every node.
    pub fn admin_client(&self) -> ops::Client {
        self.client(&self.ids())
    }

    /// An admin WebSocket session builder (`wss://` on 443, trusting only the root) over `ids`.
    pub fn session_builder(&self, ids: &[u64]) -> ops::SessionBuilder {
        let urls = ids.iter().map(|id| self.https_url(*id)).collect();
        ops::SessionBuilder::new(urls, self.admin_token.clone())
            .trust_root(Some(self.trust_root().clone()))
    }

    /// The workspace's A records as node `via`'s DNS server (port 53) answers them.
    pub async fn resolve(&self, via: u64) -> Result<BTreeSet<Ipv4Addr>> {
        let a = ops::dns_query::query(
            self.dns_addr(via),
            WORKSPACE,
            ops::dns_query::DnsQuestion::A,
            Duration::from_secs(2),
        )
        .await?;
        if a.rcode != ops::dns_query::DnsRcode::NoError {
            bail!("node {via}'s DNS answered {}", a.rcode);
        }
        Ok(a.addresses()
            .into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// Waits until node `via`'s DNS lists exactly the nodes `want` for the workspace.
    pub async fn wait_dns(&self, via: u64, want: &[u64], timeout: Duration) -> Result<()> {
        let want: BTreeSet<Ipv4Addr> = want.iter().map(|id| self.ip(*id)).collect();
        poll_until(
            &format!("node {via}'s DNS to list exactly {want:?}"),
            timeout,
            || async {
                let got = self.resolve(via).await.map_err(|e| e.to_string())?;
                if got == want {
                    Ok(())
                } else {
                    Err(format!("answered {got:?}"))
                }
            },
        )
        .await
    }

    /// `n` admin clients found the way a user's device finds the cluster: the workspace name
    /// resolved through node `via`'s DNS, then HTTPS to the addresses it gave, each client
    /// starting at a different one and failing over to the others.
    pub async fn clients_by_dns(&self, via: u64, n: usize) -> Result<Vec<ops::Client>> {
        let ips: Vec<Ipv4Addr> = self.resolve(via).await?.into_iter().collect();
        if ips.is_empty() {
            bail!("node {via}'s DNS lists no node");
        }
        let root = self.trust_root().clone();
        (0..n)
            .map(|i| {
                let urls = (0..ips.len())
                    .map(|k| format!("https://{}:443", ips[(i + k) % ips.len()]))
                    .collect();
                Ok(ops::Client::new_trusting(urls, Some(root.clone()))?
                    .with_token(self.admin_token.clone()))
            })
            .collect()
    }

    // ---- cluster state ----

    /// Node `id` answers `/readyz` 200 on its plain port.
    pub async fn readyz(&self, id: u64) -> bool {
        match ops::Client::new(vec![self.plain_url(id)]) {
            Ok(c) => c.readyz().await.is_ok_and(|r| r.ready),
            Err(_) => false,
        }
    }

    pub async fn wait_ready(&self, id: u64) -> Result<()> {
        poll_until(&format!("node {id} ready"), READY_TIMEOUT, || async {
            if self.readyz(id).await {
                Ok(())
            } else {
                Err(format!("node {id} not ready"))
            }
        })
        .await
    }

    pub async fn wait_all_ready(&self, ids: &[u64]) -> Result<()> {
        for id in ids {
            self.wait_ready(*id).await?;
        }
        Ok(())
    }

    /// The leader a majority of `among` agree on (and that is one of them).
    pub async fn wait_for_leader(&self, among: &[u64], excluding: &[u64]) -> Result<u64> {
        poll_until("an agreed leader", READY_TIMEOUT, || async {
            let mut votes = std::collections::BTreeMap::<u64, usize>::new();
            let mut seen = Vec::new();
            for id in among {
                match self.client(&[*id]).cluster().await {
                    Ok(s) => {
                        seen.push(format!("node {id}: leader {:?}", s.leader_id));
                        if let Some(l) = s.leader_id {
                            *votes.entry(l).or_default() += 1;
                        }
                    }
                    Err(e) => seen.push(format!("node {id}: {e}")),
                }
            }
            votes
                .into_iter()
                .find(|(l, c)| c * 2 > among.len() && among.contains(l) && !excluding.contains(l))
                .map(|(l, _)| l)
                .ok_or_else(|| seen.join("; "))
        })
        .await
    }

    /// Creates `name` (an existing one is fine) through any node.
    pub async fn create_channel(&self, name: &str) -> Result<()> {
        poll_until(
            &format!("channel {name} created"),
            READY_TIMEOUT,
            || async {
                match self.admin_client().create_channel(name).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("channel_exists") => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }

    /// Node `id`'s whole view of `channel` (paged), after it applied `min_index`.
    pub async fn messages(
        &self,
        id: u64,
        channel: &str,
        min_index: Option<u64>,
    ) -> Result<Vec<Msg>> {
        crate::channel::read_channel(&self.client(&[id]), id, channel, min_index).await
    }

    /// Waits until every node of `ids` shows the same last seq (at least `min_seq`) for
    /// `channel`, then returns their full views for the checks.
    pub async fn wait_converged(
        &self,
        channel: &str,
        ids: &[u64],
        min_index: Option<u64>,
        min_seq: u64,
    ) -> Result<Vec<NodeView>> {
        poll_until(
            &format!("nodes {ids:?} to agree on {channel} (last seq >= {min_seq})"),
            READY_TIMEOUT,
            || async {
                let mut seqs = Vec::new();
                for id in ids {
                    let page = self
                        .client(&[*id])
                        .list_messages(channel, 0, 1, min_index)
                        .await
                        .map_err(|e| format!("node {id}: {e}"))?;
                    seqs.push((*id, page.last_seq));
                }
                crate::channel::agree_on_last_seq(&seqs, min_seq)
            },
        )
        .await?;
        let mut views = Vec::new();
        for id in ids {
            views.push(NodeView {
                node_id: *id,
                messages: self.messages(*id, channel, min_index).await?,
            });
        }
        Ok(views)
    }

    /// The tail of every node's container log.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!(
                "\n--- node {} ({}, {}) ---\n{}",
                n.id,
                n.container,
                n.ip,
                logs_of(&n.container)
            ));
        }
        out
    }

    /// Fails the test with `msg` and every node's log tail.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.diagnostics())
    }

    /// Unwraps a harness result, failing with the logs on an error.
    pub fn or_fail<T>(&self, r: Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&format!("{e:#}")),
        }
    }

    /// Fails the test (with logs) when an invariant check failed.
    pub fn check(&self, r: std::result::Result<(), String>) {
        if let Err(e) = r {
            self.fail(&e);
        }
    }
}
