//! Reading a channel back from every node: full listings (paged, read-your-writes via
//! `X-Conclave-Min-Index`), last seqs, and waiting until nodes converge on the same history,
//! as the invariant checks in [`crate::checks`] need them.

use anyhow::{Result, anyhow, bail};

use crate::checks::{Msg, NodeView};
use crate::cluster::{TestCluster, or_panic};

impl TestCluster {
    /// Creates `name` (an existing one is fine), retrying while the cluster is unavailable,
    /// and waits until every live node knows it, so that a post through a lagging follower is
    /// not refused as 404. For the benchmarks' setup.
    pub async fn ensure_channel(&self, name: &str) -> Result<()> {
        crate::wait::poll_until(
            &format!("create channel {name}"),
            std::time::Duration::from_secs(30),
            || async {
                let client = self
                    .try_client(&self.live_ids())
                    .map_err(|e| crate::wait::Waiting::Abort(e.to_string()))?;
                match client.create_channel(name).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("channel_exists") => Ok(()),
                    Err(e) if crate::load::retryable(&e) => {
                        Err(crate::wait::Waiting::NotYet(e.to_string()))
                    }
                    Err(e) => Err(crate::wait::Waiting::Abort(e.to_string())),
                }
            },
        )
        .await?;
        for id in self.live_ids() {
            crate::wait::poll_until(
                &format!("node {id} to know {name}"),
                std::time::Duration::from_secs(30),
                || async {
                    let client = self.try_client(&[id]).map_err(|e| e.to_string())?;
                    client
                        .get_channel(name)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// All messages of `channel` on node `id` (paged), the first page read with
    /// `X-Conclave-Min-Index: min_index` so a lagging node first applies that far.
    pub async fn try_messages(
        &self,
        id: u64,
        channel: &str,
        min_index: Option<u64>,
    ) -> Result<Vec<Msg>> {
        read_channel(&self.try_client(&[id])?, id, channel, min_index).await
    }

    /// The channel's newest seq on node `id`.
    pub async fn try_last_seq(
        &self,
        id: u64,
        channel: &str,
        min_index: Option<u64>,
    ) -> Result<u64> {
        let page = self
            .try_client(&[id])?
            .list_messages(channel, 0, 1, min_index)
            .await
            .map_err(|e| anyhow!("list {channel} on node {id}: {e}"))?;
        Ok(page.last_seq)
    }

    /// Every listed node's full view of `channel`.
    pub async fn views(&self, channel: &str, ids: &[u64], min_index: Option<u64>) -> Vec<NodeView> {
        let mut views = Vec::new();
        for id in ids {
            let r = self.try_messages(*id, channel, min_index).await;
            let messages = or_panic(r.map_err(|e| self.annotate(e)));
            views.push(NodeView {
                node_id: *id,
                messages,
            });
        }
        views
    }

    /// Waits until every node in `ids` has applied `min_index` and shows the same last seq for
    /// `channel` (at least `min_seq`), then returns their full views. Call it once writes stopped.
    pub async fn wait_converged(
        &self,
        channel: &str,
        ids: &[u64],
        min_index: Option<u64>,
        min_seq: u64,
    ) -> Vec<NodeView> {
        let what = format!("nodes {ids:?} to agree on channel {channel} (last seq >= {min_seq})");
        self.wait_until(&what, self.ready_timeout(), || async {
            let mut seqs = Vec::new();
            for id in ids {
                let s = self
                    .try_last_seq(*id, channel, min_index)
                    .await
                    .map_err(|e| e.to_string())?;
                seqs.push((*id, s));
            }
            agree_on_last_seq(&seqs, min_seq)
        })
        .await;
        self.views(channel, ids, min_index).await
    }
}

/// All messages of `channel` as node `id` (the one `client` talks to) shows them, paged, the
/// first page read with `X-Conclave-Min-Index: min_index` so a lagging node first applies that
/// far. Shared by the process harness and the Docker harness.
pub(crate) async fn read_channel(
    client: &ops::Client,
    id: u64,
    channel: &str,
    min_index: Option<u64>,
) -> Result<Vec<Msg>> {
    let mut out: Vec<Msg> = Vec::new();
    let mut after = 0u64;
    let mut min = min_index;
    loop {
        let page = client
            .list_messages(channel, after, 1000, min.take())
            .await
            .map_err(|e| anyhow!("list {channel} after {after} on node {id}: {e}"))?;
        let Some(last) = page.messages.last() else {
            break;
        };
        if last.seq <= after {
            bail!(
                "node {id}: page after seq {after} ended at seq {} (not ascending)",
                last.seq
            );
        }
        after = last.seq;
        out.extend(page.messages.iter().map(Msg::from));
        if after >= page.last_seq {
            break;
        }
    }
    Ok(out)
}

/// Ok when every node's last seq (`(node, seq)` pairs) is the same and at least `min_seq`.
pub(crate) fn agree_on_last_seq(seqs: &[(u64, u64)], min_seq: u64) -> Result<(), String> {
    let first = seqs.first().map(|(_, s)| *s).unwrap_or(0);
    if first >= min_seq && seqs.iter().all(|(_, s)| *s == first) {
        Ok(())
    } else {
        Err(format!("last seq per node: {seqs:?}"))
    }
}
