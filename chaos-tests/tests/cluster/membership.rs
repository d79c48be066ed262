//! Membership changes through the API (`POST /api/v1/cluster/nodes`,
//! `DELETE /api/v1/cluster/nodes/{id}`), on real processes:
//! - a fourth node, started uninitialized, is added through a follower, has the whole history
//!   and takes writes; removed again, it stops by itself, marks its data dir `REMOVED` and
//!   refuses to start on it, while the three others keep taking writes;
//! - removals that would leave no reachable majority, or no voter at all, are refused with 409
//!   `unsafe_membership_change`; unknown ids, unreachable newcomers and non-admins are refused
//!   too, and none of these refusals changes the membership;
//! - while an add is still waiting for its learner to catch up, every other change is refused
//!   with 409 `membership_change_in_progress`. To make that wait last, the log is first filled
//!   past openraft's catch-up threshold (5000 entries), and the learner is held back by a proxy
//!   in front of its cluster port that lets the leader's probes (GET) through but drops every
//!   replication request until the test opens it: no timing assumption, no sleep.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use chaos_tests::checks::{self, Msg};
use chaos_tests::wait::Waiting;
use chaos_tests::{ClusterOptions, Load, LoadConfig, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::util::{create_channel, post_ok};

const CH: &str = "members";
/// Messages posted before the fourth node joins.
const EARLY_POSTS: u64 = 20;
/// `add_node` answers only once the newcomer is a voter; the leader gives it 60 s to catch up.
const ADD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a removed node may take to stop by itself, or a refused start to fail.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);
const MEMBER_USER: &str = "plain-member";
const MEMBER_PASSWORD: &str = "plain-pass-phrase-22";

/// `(id, voter)` of every member in node `id`'s `GET /api/v1/cluster`, sorted by id.
async fn members(cluster: &TestCluster, id: u64) -> anyhow::Result<Vec<(u64, bool)>> {
    let v = cluster.cluster_json(id).await?;
    let nodes = v["nodes"]
        .as_array()
        .ok_or_else(|| anyhow!("node {id}: no `nodes` array in {v}"))?;
    let mut out: Vec<(u64, bool)> = nodes
        .iter()
        .filter_map(|n| Some((n["id"].as_u64()?, n["voter"].as_bool()?)))
        .collect();
    out.sort_unstable();
    Ok(out)
}

fn voters(ids: &[u64]) -> Vec<(u64, bool)> {
    ids.iter().map(|id| (*id, true)).collect()
}

/// `(id, voter)` of every member in a cluster object returned by add/remove.
fn members_of(view: &ops::ClusterStatus) -> Vec<(u64, bool)> {
    let mut out: Vec<(u64, bool)> = view.nodes.iter().map(|n| (n.id, n.voter)).collect();
    out.sort_unstable();
    out
}

/// Waits until every node in `on` lists exactly `want`.
async fn wait_members(cluster: &TestCluster, on: &[u64], want: &[(u64, bool)]) {
    let what = format!("nodes {on:?} to list members {want:?}");
    cluster
        .wait_until(&what, cluster.ready_timeout(), || async {
            let mut wrong = Vec::new();
            for id in on {
                let m = members(cluster, *id).await.map_err(|e| format!("{e:#}"))?;
                if m != want {
                    wrong.push(format!("node {id} lists {m:?}"));
                }
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        })
        .await
}

/// The membership is `want` on every node in `on`, right now (after a refused change).
async fn expect_members_now(cluster: &TestCluster, on: &[u64], want: &[(u64, bool)], what: &str) {
    for id in on {
        let m = members(cluster, *id)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("{what}: cluster view of node {id}: {e:#}")));
        if m != want {
            cluster.fail(&format!(
                "{what}: membership changed: node {id} lists {m:?}, expected {want:?}"
            ));
        }
    }
}

/// Fails unless `r` is the API error `status` / `code`.
fn expect_refused<T: std::fmt::Debug>(
    cluster: &TestCluster,
    r: Result<T, ops::ClientError>,
    status: u16,
    code: &str,
    what: &str,
) {
    match r {
        Ok(v) => cluster.fail(&format!(
            "{what}: expected {status} {code}, but it succeeded: {v:?}"
        )),
        Err(e) if (e.status(), e.code()) == (Some(status), Some(code)) => {}
        Err(e) => cluster.fail(&format!(
            "{what}: expected {status} {code}, got status {:?}: {e}",
            e.status()
        )),
    }
}

/// Waits until node `id`'s process answers `GET /healthz` (it serves both ports by then).
async fn wait_up(cluster: &TestCluster, id: u64) {
    let url = format!("{}/healthz", cluster.url(id));
    cluster
        .wait_until(
            &format!("node {id} to answer /healthz"),
            cluster.ready_timeout(),
            || async {
                if let Some(status) = cluster.node(id).exit_status() {
                    return Err(Waiting::Abort(format!("node {id} exited ({status})")));
                }
                match cluster.http().get(&url).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => Ok(()),
                    Ok(r) => Err(Waiting::NotYet(format!("HTTP {}", r.status()))),
                    Err(e) => Err(Waiting::NotYet(e.to_string())),
                }
            },
        )
        .await
}

/// Waits until node `id`'s process has exited by itself and returns its status.
async fn wait_exit(cluster: &TestCluster, id: u64, what: &str) -> std::process::ExitStatus {
    cluster
        .wait_until(what, EXIT_DEADLINE, || async {
            cluster
                .node(id)
                .exit_status()
                .ok_or_else(|| format!("node {id} still runs"))
        })
        .await
}

/// Node `id`'s log since the harness last started it.
fn log_of_last_run(cluster: &TestCluster, id: u64) -> String {
    let path = &cluster.node(id).spec.log_path;
    let log = std::fs::read_to_string(path)
        .unwrap_or_else(|e| cluster.fail(&format!("read {}: {e}", path.display())));
    let marker = format!("===== chaos harness: node {id}: conclave run =====");
    match log.rfind(&marker) {
        Some(at) => log[at..].to_owned(),
        None => log,
    }
}

/// The first live voter among 1..=3 that is not `leader`, and the other one.
fn followers(cluster: &TestCluster, leader: u64) -> (u64, u64) {
    let f: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    match f[..] {
        [a, b] => (a, b),
        _ => cluster.fail(&format!("leader {leader} is not one of nodes 1..=3")),
    }
}

/// An address of this cluster's block nothing listens on (checked by binding it once).
fn dead_addr(cluster: &TestCluster, last_octet: u8, port: u16) -> String {
    let (a, b) = cluster.block();
    let addr = format!("127.{a}.{b}.{last_octet}:{port}");
    drop(TcpListener::bind(&addr).unwrap_or_else(|e| panic!("{addr} should be free: {e}")));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_node() {
    let mut cluster = TestCluster::start(3).await;
    create_channel(&cluster, CH).await;
    let client = cluster.client_all();
    let mut acked: Vec<Msg> = Vec::new();
    let mut index = None;
    for i in 0..EARLY_POSTS {
        let out = post_ok(
            &cluster,
            &client,
            CH,
            &format!("early #{i}"),
            &format!("early-{i}"),
        )
        .await;
        assert!(!out.duplicate, "early-{i} answered as a duplicate");
        acked.push(Msg::from(&out.message));
        index = index.max(out.index);
    }
    let seqs: Vec<u64> = acked.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=EARLY_POSTS).collect::<Vec<_>>(), "early seqs");

    // Node 4 starts uninitialized and is added through a follower (forwarded to the leader).
    cluster.spawn_extra(4);
    wait_up(&cluster, 4).await;
    let leader = cluster.wait_for_leader(&[]).await;
    let (via, _) = followers(&cluster, leader);
    let api4 = cluster.api_addr(4).to_string();
    let cluster4 = cluster.cluster_addr(4).to_string();
    let view = cluster
        .client(via)
        .with_request_timeout(ADD_TIMEOUT)
        .add_node(4, &api4, &cluster4)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("add_node(4) through follower {via}: {e}")));
    // It answers once node 4 is a voter: the leader says so at once, without waiting.
    let on_leader = members(&cluster, leader)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    assert_eq!(
        on_leader,
        voters(&[1, 2, 3, 4]),
        "leader {leader} right after add_node(4) returned"
    );
    assert_eq!(
        members_of(&view),
        voters(&[1, 2, 3, 4]),
        "cluster object returned by add_node(4) through node {via}: {view:?}"
    );
    let n4 = view.nodes.iter().find(|n| n.id == 4);
    assert_eq!(
        n4.map(|n| (n.api_addr.as_str(), n.cluster_addr.as_str())),
        Some((api4.as_str(), cluster4.as_str())),
        "node 4's addresses in the returned cluster object"
    );
    cluster.wait_ready(4).await;

    // Node 4 has every earlier message, at the same seqs.
    let on4 = cluster
        .wait_until(
            "node 4 to list the channel",
            cluster.ready_timeout(),
            || async {
                cluster
                    .try_messages(4, CH, index)
                    .await
                    .map_err(|e| format!("{e:#}"))
            },
        )
        .await;
    assert_eq!(on4, acked, "node 4's copy of {CH}");

    // A post through node 4 is the next message everywhere.
    let out = post_ok(&cluster, &cluster.client(4), CH, "through node 4", "via-4").await;
    assert!(!out.duplicate, "via-4 answered as a duplicate");
    assert_eq!(
        out.message.seq,
        EARLY_POSTS + 1,
        "seq of the post through node 4"
    );
    acked.push(Msg::from(&out.message));
    let views = cluster
        .wait_converged(CH, &[1, 2, 3, 4], out.index, EARLY_POSTS + 1)
        .await;
    cluster.check(checks::all_core(&acked, &views));

    // Remove node 4 again (through the leader of the moment).
    let leader = cluster.wait_for_leader(&[]).await;
    let through = if leader == 4 { via } else { leader };
    let view = cluster
        .client(through)
        .remove_node(4)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("remove_node(4) through node {through}: {e}")));
    assert_eq!(
        members_of(&view),
        voters(&[1, 2, 3]),
        "cluster object returned by remove_node(4) through node {through}: {view:?}"
    );
    wait_members(&cluster, &[1, 2, 3], &voters(&[1, 2, 3])).await;

    // The leader tells node 4, which marks its data dir and stops by itself.
    let status = wait_exit(&cluster, 4, "node 4 to stop after its removal").await;
    eprintln!("node 4 stopped by itself after its removal: {status}");
    let marker = cluster.node(4).spec.data_dir.join("REMOVED");
    assert!(
        marker.is_file(),
        "{} missing after node 4 stopped",
        marker.display()
    );

    // It refuses to start on that data dir.
    cluster.spawn(4);
    let status = wait_exit(
        &cluster,
        4,
        "node 4 to refuse to start on its REMOVED data dir",
    )
    .await;
    let log = log_of_last_run(&cluster, 4);
    assert!(
        !status.success(),
        "node 4 restarted on a REMOVED data dir exited with {status}; log:\n{log}"
    );
    assert!(
        log.contains("removed"),
        "node 4's failed start does not say it was removed ({status}); log:\n{log}"
    );

    // The three others keep taking writes, through each of them.
    let mut last = None;
    for id in [1, 2, 3] {
        let msg_id = format!("after-removal-{id}");
        let out = post_ok(
            &cluster,
            &cluster.client(id),
            CH,
            &format!("after removal via {id}"),
            &msg_id,
        )
        .await;
        assert!(!out.duplicate, "{msg_id} answered as a duplicate");
        assert_eq!(
            out.message.seq,
            acked.len() as u64 + 1,
            "seq of the post through node {id} after the removal"
        );
        acked.push(Msg::from(&out.message));
        last = out.index.max(last);
    }
    let views = cluster
        .wait_converged(CH, &[1, 2, 3], last, acked.len() as u64)
        .await;
    cluster.check(checks::all_core(&acked, &views));
    assert!(
        !cluster.is_running(4),
        "node 4 runs again although its data dir says REMOVED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_removals_are_refused() {
    // A one-voter cluster: its only node cannot be removed.
    {
        let single = TestCluster::start(1).await;
        let r = single.client(1).remove_node(1).await;
        expect_refused(
            &single,
            r,
            409,
            "unsafe_membership_change",
            "removing the only voter",
        );
        expect_members_now(&single, &[1], &voters(&[1]), "removing the only voter").await;
    }

    let cluster = TestCluster::start(3).await;
    let all = voters(&[1, 2, 3]);
    let leader = cluster.wait_for_leader(&[]).await;
    let (f1, f2) = followers(&cluster, leader);

    // Unknown node id: 404 on the leader and forwarded from a follower.
    for via in [leader, f2] {
        let what = format!("removing unknown node 7 through node {via}");
        let r = cluster.client(via).remove_node(7).await;
        expect_refused(&cluster, r, 404, "not_found", &what);
        expect_members_now(&cluster, &[1, 2, 3], &all, &what).await;
    }

    // A newcomer nothing answers for: the leader probes it first and refuses.
    let api4 = dead_addr(&cluster, 4, 8080);
    let cluster4 = dead_addr(&cluster, 4, 9080);
    for via in [leader, f1] {
        let what = format!("adding node 4 at {cluster4} (nothing listens) through node {via}");
        let r = cluster
            .client(via)
            .with_request_timeout(ADD_TIMEOUT)
            .add_node(4, &api4, &cluster4)
            .await;
        expect_refused(&cluster, r, 400, "invalid_request", &what);
        expect_members_now(&cluster, &[1, 2, 3], &all, &what).await;
    }

    // A member that is not an admin may neither add nor remove.
    cluster
        .client(leader)
        .create_user(MEMBER_USER, MEMBER_PASSWORD, ops::Role::Member)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create {MEMBER_USER}: {e}")));
    cluster
        .wait_until(
            &format!("node {f1} to know {MEMBER_USER}"),
            cluster.ready_timeout(),
            || async {
                let users = cluster
                    .client(f1)
                    .list_users()
                    .await
                    .map_err(|e| e.to_string())?;
                if users.iter().any(|u| u.username == MEMBER_USER) {
                    Ok(())
                } else {
                    Err(format!("users {users:?}"))
                }
            },
        )
        .await;
    for via in [leader, f1] {
        let member = cluster
            .login_client(via, MEMBER_USER, MEMBER_PASSWORD)
            .await;
        let what = format!("{MEMBER_USER} adding node 4 through node {via}");
        let r = member.add_node(4, &api4, &cluster4).await;
        expect_refused(&cluster, r, 403, "forbidden", &what);
        expect_members_now(&cluster, &[1, 2, 3], &all, &what).await;
        let what = format!("{MEMBER_USER} removing node {f2} through node {via}");
        let r = member.remove_node(f2).await;
        expect_refused(&cluster, r, 403, "forbidden", &what);
        expect_members_now(&cluster, &[1, 2, 3], &all, &what).await;
    }

    // Follower f1 crashes. Removing f2 would leave {leader, f1}: one reachable of two.
    cluster.kill(f1);
    for via in [leader, f2] {
        let what = format!("removing live follower {f2} through node {via} while {f1} is down");
        let r = cluster.client(via).remove_node(f2).await;
        expect_refused(&cluster, r, 409, "unsafe_membership_change", &what);
        expect_members_now(&cluster, &[leader, f2], &all, &what).await;
    }
    // The two live voters still take writes.
    create_channel(&cluster, CH).await;
    let out = post_ok(
        &cluster,
        &cluster.client(f2),
        CH,
        "after the refusals",
        "refusals-done",
    )
    .await;
    assert_eq!(out.message.seq, 1, "first message of {CH}");
}

/// What the proxy's relays share: whether it is open yet, and how many connections it dropped.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    dropped: AtomicU64,
}

/// A TCP proxy in front of a node's cluster port. While closed it forwards only GET requests
/// (the leader's reachability probe, status polls) and drops every connection that carries
/// anything else (AppendEntries, snapshots), so a learner behind it answers but never catches
/// up. Once opened it is a plain pass-through. Dropping it stops every relay.
struct GatedProxy {
    addr: SocketAddr,
    gate: Arc<Gate>,
    task: tokio::task::JoinHandle<()>,
}

impl GatedProxy {
    async fn start(addr: SocketAddr, upstream: SocketAddr) -> GatedProxy {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("proxy cannot listen on {addr}: {e}"));
        let gate = Arc::new(Gate::default());
        let g = gate.clone();
        let task = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((sock, _)) => {
                            relays.spawn(relay(sock, upstream, g.clone()));
                        }
                        Err(_) => break,
                    },
                    Some(_) = relays.join_next(), if !relays.is_empty() => {}
                }
            }
        });
        GatedProxy { addr, gate, task }
    }

    fn open(&self) {
        self.gate.open.store(true, Ordering::SeqCst);
    }

    /// Connections dropped because they carried a non-GET request while closed.
    fn dropped(&self) -> u64 {
        self.gate.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for GatedProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every relay.
        self.task.abort();
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, gate: Arc<Gate>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Whichever direction ends first closes both sockets.
    tokio::select! {
        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
        _ = requests(&mut from_client, &mut to_server, &gate) => {}
    }
}

/// Client-to-node direction: one HTTP/1.1 request head at a time while the gate is closed.
async fn requests(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    gate: &Gate,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_len = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if from.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        if gate.open.load(Ordering::SeqCst) {
            to.write_all(&buf).await?;
            tokio::io::copy(from, to).await?;
            return Ok(());
        }
        if !buf.starts_with(b"GET ") {
            gate.dropped.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        // A GET has no body: forward its head and read the next request.
        to.write_all(&buf[..head_len]).await?;
        buf.drain(..head_len);
    }
}

/// openraft's `replication_lag_threshold` (default 5000 log entries; the server keeps the
/// default): its blocking `add_learner`, which `add_node` uses to wait for the newcomer, treats a
/// learner this close to the leader's last log index as caught up, even one that has received
/// nothing. So an add is only "in flight" for longer than a few milliseconds while the
/// newcomer lags by more than this.
const OPENRAFT_LAG_THRESHOLD: u64 = 5000;
/// The leader's log is filled past this index before node 4 is added.
const FILL_TO_INDEX: u64 = OPENRAFT_LAG_THRESHOLD + 300;
const FILL_POSTERS: usize = 16;

/// The leader's own `(last_log_index, last_applied)` from its cluster view.
async fn leader_log(cluster: &TestCluster, leader: u64) -> Result<(u64, u64), String> {
    let v = cluster
        .cluster_json(leader)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let me = v["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"].as_u64() == Some(leader)))
        .ok_or_else(|| format!("node {leader} is not in its own view: {v}"))?;
    match (me["last_log_index"].as_u64(), me["last_applied"].as_u64()) {
        (Some(log), Some(applied)) => Ok((log, applied)),
        other => Err(format!("node {leader} reports log/applied {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_change_is_refused() {
    let opts = ClusterOptions::default()
        // One command per log entry, many entries in flight: the log grows quickly.
        .top_level("write.batch_max_commands", "1")
        .top_level("write.batch_max_in_flight", &FILL_POSTERS.to_string())
        // No snapshot: node 4 later catches up from the log alone.
        .snapshot_logs_since_last(1_000_000);
    let mut cluster = TestCluster::start_with(3, opts).await;
    create_channel(&cluster, CH).await;

    // Fill the log so that a newcomer lags by more than openraft's threshold.
    let leader = cluster.wait_for_leader(&[]).await;
    let clients = (0..FILL_POSTERS).map(|_| cluster.client(leader)).collect();
    let load = Load::start(clients, LoadConfig::new(CH, "fill"));
    cluster
        .wait_until(
            &format!("the leader's log to pass index {FILL_TO_INDEX}"),
            Duration::from_secs(600),
            || async {
                let (log, _) = leader_log(&cluster, leader).await?;
                if log >= FILL_TO_INDEX {
                    Ok(())
                } else {
                    Err(format!("leader {leader} at index {log}"))
                }
            },
        )
        .await;
    let report = load.stop().await;
    assert!(
        report.panics.is_empty(),
        "poster tasks panicked: {:?}",
        report.panics
    );
    eprintln!(
        "filled the log with {} messages in {:.1?}",
        report.acks.len(),
        report.elapsed
    );

    cluster.spawn_extra(4);
    cluster.spawn_extra(5);
    wait_up(&cluster, 4).await;
    wait_up(&cluster, 5).await;
    let (a, b) = cluster.block();
    let proxy_addr: SocketAddr = format!("127.{a}.{b}.104:9080")
        .parse()
        .unwrap_or_else(|e| panic!("proxy address: {e}"));
    let proxy = GatedProxy::start(proxy_addr, cluster.cluster_addr(4)).await;
    let leader = cluster.wait_for_leader(&[]).await;
    let (f1, f2) = followers(&cluster, leader);

    // Node 4 joins through the proxy: it passes the probe but cannot catch up.
    let adder = cluster.client(leader).with_request_timeout(ADD_TIMEOUT);
    let api4 = cluster.api_addr(4).to_string();
    let via_proxy = proxy.addr.to_string();
    let first = tokio::spawn(async move { adder.add_node(4, &api4, &via_proxy).await });

    // In flight: node 4 is a learner in a committed, applied membership, replication to it
    // has been refused at least once, and add_node(4) has not answered.
    let learner = [(1, true), (2, true), (3, true), (4, false)];
    let in_flight = cluster
        .wait_until(
            "node 4 to be a committed learner that cannot catch up",
            cluster.ready_timeout(),
            || async {
                if first.is_finished() {
                    return Ok(false);
                }
                let m = members(&cluster, leader)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let (log, applied) = leader_log(&cluster, leader).await?;
                if m == learner && log == applied && proxy.dropped() > 0 {
                    Ok(true)
                } else {
                    Err(format!(
                        "members {m:?}, leader log {log} applied {applied}, {} replication connections dropped",
                        proxy.dropped()
                    ))
                }
            },
        )
        .await;
    if !in_flight {
        let r = first.await;
        cluster.fail(&format!(
            "add_node(4) answered although node 4 could not catch up: {r:?}"
        ));
    }

    // Other changes are refused while it waits; the outcomes are gathered first so that a
    // failure reports all of them.
    let api5 = cluster.api_addr(5).to_string();
    let cluster5 = cluster.cluster_addr(5).to_string();
    let outcomes = [
        (
            format!("add_node(5) through follower {f1}"),
            cluster
                .client(f1)
                .with_request_timeout(ADD_TIMEOUT)
                .add_node(5, &api5, &cluster5)
                .await,
        ),
        (
            format!("remove_node({f2}) through leader {leader}"),
            cluster.client(leader).remove_node(f2).await,
        ),
    ];
    let still_in_flight = !first.is_finished();
    let during = members(&cluster, leader).await;
    let mut problems = Vec::new();
    for (what, r) in &outcomes {
        match r {
            Err(e)
                if (e.status(), e.code()) == (Some(409), Some("membership_change_in_progress")) => {
            }
            Err(e) => problems.push(format!(
                "{what}: expected 409 membership_change_in_progress, got status {:?}: {e}",
                e.status()
            )),
            Ok(v) => problems.push(format!(
                "{what}: expected 409 membership_change_in_progress, but it succeeded (200); \
                 the cluster object it returned lists {:?}",
                members_of(v)
            )),
        }
    }
    if !still_in_flight {
        problems.push("add_node(4) answered while node 4 still could not catch up".into());
    }
    match &during {
        Ok(m) if m[..] == learner[..] => {}
        other => problems.push(format!(
            "membership changed while add_node(4) was in flight: leader {leader} lists {other:?}"
        )),
    }
    if !problems.is_empty() {
        cluster.fail(&format!(
            "concurrent membership changes were not refused:\n  {}",
            problems.join("\n  ")
        ));
    }

    // Let node 4 catch up: the first add completes and nothing else changed.
    proxy.open();
    let r = first
        .await
        .unwrap_or_else(|e| panic!("add_node(4) task: {e}"));
    let view =
        r.unwrap_or_else(|e| cluster.fail(&format!("add_node(4) after opening the proxy: {e}")));
    assert_eq!(
        members_of(&view),
        voters(&[1, 2, 3, 4]),
        "cluster object returned by add_node(4): {view:?}"
    );
    wait_members(&cluster, &[1, 2, 3, 4], &voters(&[1, 2, 3, 4])).await;
    cluster.wait_ready(4).await;
    let out = post_ok(
        &cluster,
        &cluster.client(4),
        CH,
        "after the add",
        "after-add",
    )
    .await;
    assert!(!out.duplicate, "after-add answered as a duplicate");
}
