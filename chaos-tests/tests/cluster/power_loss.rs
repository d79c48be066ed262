//! Power-loss series: three TLS nodes, each data dir on its own fault-injecting mount
//! (`ClusterOptions::faultfs`), posters through all three nodes, and at a seeded random moment
//! the power goes: on one node, on the leader, or on all three at once (SIGKILL every process,
//! then drop everything each mount holds that was never fsynced, tearing the last unsynced
//! write at a seeded byte), or on all three right after a clean stop (SIGTERM: the state
//! machine's proof is what must hold then). Then the nodes start again with no operator
//! action, load goes on, and the next round cuts again.
//!
//! After every round: every node started and is ready, the cluster takes writes, every
//! acknowledged post is on every node exactly once, in one order with no gap
//! (`checks::all_core`), nothing unsent was written, each poster's acks are in send order, and
//! every node still serves HTTPS with a certificate that chains to the cluster root and the
//! same CA fingerprint (the CA state and the node's TLS files survived the cut).
//!
//! A small snapshot interval makes snapshots and log purges happen during the run, so cuts
//! land in the middle of snapshot writes and segment deletions too.
//!
//! Knobs: `CHAOS_SEED` (the seed, printed at the start; the same seed replays the same plan:
//! kinds of cuts, their moments in acks, the tears), `CHAOS_POWER_ROUNDS` (all-three cuts;
//! default 20; after every fourth one more round, in turn: one node, the leader, all three
//! after a clean stop). Long run:
//! `CHAOS_POWER_ROUNDS=200 cargo nextest run -p chaos-tests --test cluster power_loss`.
//! Needs FUSE and root: skips with a message otherwise, unless `CHAOS_REQUIRE_FAULTFS=1`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chaos_tests::checks::{self, Msg};
use chaos_tests::faultfs::{self, CutReport, Tear};
use chaos_tests::{ClusterOptions, Load, LoadConfig, LoadReport, TestCluster};
use serde_json::Value;

use crate::util::{create_channel, max_index, max_seq, settle, spread_clients, wait_acks};

/// All-three cuts when `CHAOS_POWER_ROUNDS` is unset (the CI budget).
const DEFAULT_ALL_ROUNDS: usize = 20;
/// One more round (in turn: a random node, the leader, all three after a clean stop) after
/// every this many all-three cuts.
const EXTRA_EVERY: usize = 4;
const POSTERS: u64 = 3;
/// Acks before the cut: a seeded number in this range (the "random moment").
const ACKS_BEFORE_CUT: std::ops::Range<u64> = 3..100;
/// Acks after everyone is back, before the round is checked: the cluster takes writes again.
const ACKS_AFTER_RESTART: usize = 5;
/// Snapshot every this many log entries, keeping this many behind it: several snapshots and
/// purges per round at the load's rate.
const SNAPSHOT_EVERY: u64 = 40;
const KEEP_BEHIND_SNAPSHOT: u64 = 10;
const CHANNEL: &str = "power";

/// SplitMix64: small and seedable; every random choice of the series comes from it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn in_range(&mut self, r: std::ops::Range<u64>) -> u64 {
        r.start + self.next() % (r.end - r.start).max(1)
    }
}

/// What one round cuts.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// One node, chosen by the seed (a follower or the leader, whichever it is then).
    One(u64),
    /// Whichever node leads when the moment comes.
    Leader,
    /// All three at once: SIGKILL every process, then cut every mount.
    All,
    /// All three stopped cleanly (SIGTERM: the state machine's proof is written), then the
    /// power goes before anything else reaches the disks.
    StoppedThenAll,
}

/// The rounds: `all_rounds` all-three cuts with one more after every `EXTRA_EVERY` (module doc).
fn plan(all_rounds: usize, rng: &mut Rng) -> Vec<Cut> {
    let mut rounds = Vec::new();
    let mut extras = 0usize;
    for i in 1..=all_rounds {
        rounds.push(Cut::All);
        if i % EXTRA_EVERY == 0 {
            extras += 1;
            rounds.push(match extras % 3 {
                1 => Cut::One(rng.in_range(1..4)),
                2 => Cut::Leader,
                _ => Cut::StoppedThenAll,
            });
        }
    }
    // Short runs still cut one node and the leader once each.
    if !rounds.iter().any(|c| matches!(c, Cut::One(_))) {
        rounds.push(Cut::One(rng.in_range(1..4)));
    }
    if !rounds.iter().any(|c| matches!(c, Cut::Leader)) {
        rounds.push(Cut::Leader);
    }
    if !rounds.iter().any(|c| matches!(c, Cut::StoppedThenAll)) {
        rounds.push(Cut::StoppedThenAll);
    }
    rounds
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

/// One cut mount: what was dropped.
struct CutNumbers {
    unsynced_bytes: u64,
    report: CutReport,
}

/// The series' running totals, printed at the end (the numbers the docs quote).
#[derive(Default)]
struct Totals {
    rounds: usize,
    restarts: usize,
    cuts: Vec<CutNumbers>,
    round_times: Vec<Duration>,
}

impl Totals {
    fn print(&self, seed: u64, acked: usize) {
        let dropped: Vec<u64> = self.cuts.iter().map(|c| c.unsynced_bytes).collect();
        let max = dropped.iter().max().copied().unwrap_or(0);
        let total: u64 = dropped.iter().sum();
        let torn = self.cuts.iter().filter(|c| c.report.torn.is_some()).count();
        let reverted: usize = self.cuts.iter().map(|c| c.report.files_reverted).sum();
        let undone: usize = self.cuts.iter().map(|c| c.report.dir_ops_undone).sum();
        let nonzero = dropped.iter().filter(|b| **b > 0).count();
        let secs: Vec<f64> = self.round_times.iter().map(Duration::as_secs_f64).collect();
        let mean = secs.iter().sum::<f64>() / secs.len().max(1) as f64;
        let slowest = secs.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "power_loss: seed {seed}: {} rounds, {acked} acknowledged posts, {} node restarts, \
             {} mount cuts ({nonzero} dropped unsynced data; {total} bytes in all, at most {max} \
             in one cut; {reverted} files reverted, {undone} directory operations undone, {torn} \
             torn writes); {mean:.1} s per round on average, slowest {slowest:.1} s",
            self.rounds,
            self.restarts,
            self.cuts.len(),
        );
    }
}

/// Kills `ids` (SIGKILL, all before any mount is cut: nothing may reach a disk after its
/// power went) and cuts each one's mount, tearing the last unsynced write at a seeded byte.
fn cut_power(cluster: &TestCluster, ids: &[u64], rng: &mut Rng, totals: &mut Totals) {
    for id in ids {
        cluster.node(*id).mark("power cut: SIGKILL");
        cluster.kill(*id);
    }
    for id in ids {
        let fs = cluster.fs(*id);
        let unsynced_bytes = fs.unsynced_bytes();
        let report = fs.power_cut(Tear::Seeded(rng.next()));
        cluster.node(*id).mark(&format!(
            "power cut: dropped {unsynced_bytes} unsynced bytes, {} files reverted, {} directory operations undone, torn {:?}",
            report.files_reverted, report.dir_ops_undone, report.torn
        ));
        totals.cuts.push(CutNumbers {
            unsynced_bytes,
            report,
        });
    }
}

/// Restarts every stopped node and waits until all are ready and agree on a leader. A node
/// that exits by itself fails the round at once (`wait_ready` aborts): every node must start
/// from what its disk kept, without an operator.
async fn restart_stopped(cluster: &TestCluster, totals: &mut Totals) {
    let stopped: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| !cluster.is_running(*id))
        .collect();
    for id in &stopped {
        cluster.spawn(*id);
        totals.restarts += 1;
    }
    for id in cluster.ids() {
        cluster.wait_ready(id).await;
    }
    cluster.wait_for_leader(&[]).await;
}

/// The cluster's CA fingerprint as node `id` serves it over HTTPS. The request itself proves
/// the node's certificate: the harness's client trusts only the cluster root and checks the
/// name (the node's address) and the validity period.
async fn ca_fingerprint(cluster: &TestCluster, id: u64) -> Result<String, String> {
    let url = format!("{}/api/v1/ca/fingerprint", cluster.url(id));
    let resp = cluster
        .http()
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("node {id}: HTTPS GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("node {id}: GET {url}: {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    v["fingerprint"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("node {id}: no fingerprint in {body}"))
}

/// Every node serves HTTPS with a valid certificate and the fingerprint seen before the cuts.
async fn check_tls_and_ca(cluster: &TestCluster, want: &str, round: usize) {
    for id in cluster.ids() {
        let what = format!("round {round}: node {id} serves HTTPS and the cluster's CA");
        let got = cluster
            .wait_until(&what, cluster.ready_timeout(), || {
                ca_fingerprint(cluster, id)
            })
            .await;
        if got != want {
            cluster.fail(&format!(
                "round {round}: node {id} serves CA fingerprint {got}, before the cuts it was {want}"
            ));
        }
    }
}

/// Everything the clients were told so far, across rounds.
#[derive(Default)]
struct History {
    acked: Vec<Msg>,
    sent: HashSet<String>,
    max_index: Option<u64>,
}

impl History {
    /// Adds a stopped round's load: its acks, plus its unknown outcomes settled by resending.
    async fn add(&mut self, cluster: &TestCluster, report: &LoadReport, round: usize) {
        cluster.check(
            checks::acknowledged_in_send_order(&report.per_poster())
                .map_err(|e| format!("round {round}: {e}")),
        );
        self.acked.extend(settle(cluster, CHANNEL, report).await);
        self.sent.extend(report.sent_ids());
        self.max_index = self.max_index.max(max_index(report));
    }

    /// Every node shows every acknowledged post once, in one order, and nothing unsent.
    async fn check(&self, cluster: &TestCluster, round: usize, cut: Cut) {
        converge_or_explain(cluster, self, round, cut).await;
        let views = cluster
            .wait_converged(
                CHANNEL,
                &cluster.ids(),
                self.max_index,
                max_seq(&self.acked),
            )
            .await;
        let label = |e: String| format!("round {round} ({cut:?}): {e}");
        cluster.check(checks::all_core(&self.acked, &views).map_err(label));
        cluster.check(checks::nothing_unsent_written(&self.sent, &views).map_err(label));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_series() {
    if !faultfs::require() {
        return;
    }
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let all_rounds = env_u64("CHAOS_POWER_ROUNDS").map_or(DEFAULT_ALL_ROUNDS, |n| n as usize);
    eprintln!(
        "power_loss: seed {seed} (replay with CHAOS_SEED={seed}), {all_rounds} all-node cuts"
    );
    let mut rng = Rng(seed);
    let rounds = plan(all_rounds, &mut rng);

    let opts = ClusterOptions::default()
        .tls()
        .faultfs()
        .snapshot_logs_since_last(SNAPSHOT_EVERY)
        .max_in_snapshot_log_to_keep(KEEP_BEHIND_SNAPSHOT);
    let cluster = TestCluster::start_with(3, opts).await;
    create_channel(&cluster, CHANNEL).await;
    let fingerprint = cluster
        .wait_until("the CA fingerprint", cluster.ready_timeout(), || {
            ca_fingerprint(&cluster, 1)
        })
        .await;

    let mut history = History::default();
    let mut totals = Totals::default();
    for (i, cut) in rounds.iter().copied().enumerate() {
        let round = i + 1;
        let started = Instant::now();
        let mut cfg = LoadConfig::new(CHANNEL, &format!("r{round}"));
        cfg.per_message_deadline = cluster.ready_timeout();
        let load = Load::start(spread_clients(&cluster, POSTERS), cfg);
        let moment = rng.in_range(ACKS_BEFORE_CUT) as usize;
        wait_acks(&cluster, &load, started, moment, "acks before the cut").await;

        let victims = match cut {
            Cut::All => cluster.ids(),
            Cut::StoppedThenAll => {
                cluster.stop_all().await;
                cluster.ids()
            }
            Cut::One(id) => vec![id],
            Cut::Leader => vec![cluster.wait_for_leader(&[]).await],
        };
        eprintln!(
            "power_loss: round {round}/{}: {cut:?}: power cut on {victims:?} after {moment} acks",
            rounds.len()
        );
        cut_power(&cluster, &victims, &mut rng, &mut totals);
        let cut_at = Instant::now();
        restart_stopped(&cluster, &mut totals).await;
        wait_acks(
            &cluster,
            &load,
            cut_at,
            ACKS_AFTER_RESTART,
            "posting to go on after the restart",
        )
        .await;
        let report = load.stop().await;
        history.add(&cluster, &report, round).await;
        history.check(&cluster, round, cut).await;
        check_tls_and_ca(&cluster, &fingerprint, round).await;
        totals.rounds += 1;
        totals.round_times.push(started.elapsed());
        let dropped: u64 = totals
            .cuts
            .iter()
            .rev()
            .take(victims.len())
            .map(|c| c.unsynced_bytes)
            .sum();
        eprintln!(
            "power_loss: round {round} ok in {:.1?}: {} acks this round, {} in all, {dropped} unsynced bytes dropped",
            started.elapsed(),
            report.acks.len(),
            history.acked.len(),
        );
    }
    totals.print(seed, history.acked.len());
}

/// Waits until every node shows the same last seq; if they never do, fails with where their
/// histories part (each node's messages from the first seq at which they differ), which says
/// more than the last seqs alone: lost, doubled or reordered entries after a cut.
async fn converge_or_explain(cluster: &TestCluster, history: &History, round: usize, cut: Cut) {
    let ids = cluster.ids();
    let min_seq = max_seq(&history.acked);
    let agreed = chaos_tests::wait::poll_until(
        "the nodes to agree on the channel",
        cluster.ready_timeout(),
        || async {
            let mut seqs = Vec::new();
            for id in &ids {
                let s = cluster
                    .try_last_seq(*id, CHANNEL, history.max_index)
                    .await
                    .map_err(|e| e.to_string())?;
                seqs.push((*id, s));
            }
            let first = seqs.first().map_or(0, |(_, s)| *s);
            if first >= min_seq && seqs.iter().all(|(_, s)| *s == first) {
                Ok(())
            } else {
                Err(format!("last seq per node: {seqs:?}"))
            }
        },
    )
    .await;
    let Err(e) = agreed else {
        return;
    };
    let mut views = Vec::new();
    for id in &ids {
        match cluster.try_messages(*id, CHANNEL, None).await {
            Ok(m) => views.push((*id, m)),
            Err(e) => {
                eprintln!("power_loss: node {id}: {e:#}");
                views.push((*id, Vec::new()));
            }
        }
    }
    let common = (0..)
        .take_while(|i| {
            let at: Vec<Option<&Msg>> = views.iter().map(|(_, v)| v.get(*i)).collect();
            at.iter().all(|m| m.is_some() && *m == at[0])
        })
        .count();
    let mut text = format!(
        "round {round} ({cut:?}): the nodes never agreed ({e:#}); they share the first {common} messages, then:"
    );
    for (id, v) in &views {
        text.push_str(&format!("\n  node {id}:"));
        for m in v.iter().skip(common).take(12) {
            text.push_str(&format!("\n    {m}"));
        }
    }
    let acked: HashSet<&str> = history
        .acked
        .iter()
        .map(|m| m.client_msg_id.as_str())
        .collect();
    text.push_str(&format!(
        "\n  ({} acknowledged posts so far; acknowledged ids among the differing ones: {:?})",
        history.acked.len(),
        views
            .iter()
            .flat_map(|(_, v)| v.iter().skip(common))
            .filter(|m| acked.contains(m.client_msg_id.as_str()))
            .map(|m| m.client_msg_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    ));
    cluster.fail(&text);
}
