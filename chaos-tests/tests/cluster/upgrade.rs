//! Rolling upgrade across real versions: a TLS cluster started with the previous release's
//! `conclave` (the commit named in `chaos-tests/upgrade-from`, built by
//! `chaos-tests/upgrade/build-previous.sh`), upgraded node by node to this build while clients
//! chat over REST and WebSocket, exactly as docs/operations.md ("Rolling upgrade") tells an
//! operator: drain, wait until `/readyz` says draining, SIGTERM, swap the binary, `chmod 700`
//! the data dir (the previous release created it 0755), start, wait until the node reports
//! itself ready, undrain; followers first, the leader last.
//!
//! Checked: nothing acknowledged is lost or doubled and every node holds the channel in the
//! same order; no client saw an error other than a reconnect. What counts: an error the client
//! library hands to the application is an error (REST: any failed `post_message` call, which
//! `Load` counts in `failed_attempts`; WebSocket: a nack, an `error` frame, lost auth, an event
//! gap, a send not acknowledged within 30 s). A reconnect is not: the REST failover client
//! retrying on another node after a transport error (reset, refused) or a 503 `unavailable`
//! (nothing written: the node is shutting down, or has just started and not caught up, or
//! there is no leader for a moment), and a WebSocket session reconnecting and re-sending with
//! the same ids. Those are counted and printed; none may be a version-gate refusal;
//! a command only the new version knows (`DELETE /api/v1/users/{name}/sessions`,
//! `EndUserSessions`) is refused with 503 `unavailable` "a rolling upgrade is in progress" by
//! every upgraded node until the last node runs the new binary, then accepted.
//!
//! Without the previous release's binaries the test builds them (the script is a no-op once
//! they are cached); when that is impossible it skips with a message, or fails when
//! `CHAOS_REQUIRE_UPGRADE=1` (as `.ci/run` sets).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaos_tests::checks::{self, Msg};
use chaos_tests::node::conclave_bin;
use chaos_tests::{ADMIN_USER, ClusterOptions, Load, LoadConfig, TestCluster};
use ops::{Role, SessionEvent};
use serde_json::Value;

use crate::util::{create_channel, max_index, max_seq, settle, spread_clients, wait_acks};

const CH: &str = "upgrade";
const REST_POSTERS: u64 = 3;
const WS_POSTERS: u64 = 2;
/// Acknowledgements (REST and WebSocket each) required between two steps, so every step
/// happens under traffic.
const ACKS_BETWEEN_STEPS: usize = 10;
/// The account whose sessions the version-6-only command ends (never the admin's: the load
/// runs on the admin's sessions).
const PROBE_USER: &str = "upgrade-probe";
const PROBE_PASSWORD: &str = "probe-pass-phrase-5517";
/// How long a WebSocket send may wait for its ack (reconnects included).
const WS_SEND_DEADLINE: Duration = Duration::from_secs(30);
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (this crate's parent).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The previous release's `conclave`, building it when it is not cached yet; `None` (after
/// saying why) when it cannot be had and the environment does not require it.
fn previous_release() -> Option<PathBuf> {
    let script = repo_root().join("chaos-tests/upgrade/build-previous.sh");
    // The script prints the install directory; it is a no-op when the binaries are there.
    let out = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output();
    let why = match out {
        Ok(o) if o.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            let bin = dir.join("conclave");
            if bin.is_file() {
                return Some(bin);
            }
            format!(
                "{} printed {}, which holds no conclave",
                script.display(),
                dir.display()
            )
        }
        Ok(o) => format!("{} failed ({})", script.display(), o.status),
        Err(e) => format!("cannot run {}: {e}", script.display()),
    };
    chaos_tests::require::skip(
        "upgrade",
        &["CHAOS_REQUIRE_UPGRADE"],
        &format!(
            "the previous release is not available ({why}); chaos-tests/upgrade/build-previous.sh builds it"
        ),
    );
    None
}

/// What WebSocket posters were told and what else they saw.
#[derive(Default, Debug)]
struct WsRecord {
    acks: Vec<Msg>,
    /// Ids sent whose ack never came (counted as errors too).
    unacked: Vec<String>,
    /// Connection ends and reconnect rounds: allowed.
    reconnects: u64,
    /// Anything else a user would notice: nacks, error frames, lost auth, gaps, failed sends.
    errors: Vec<String>,
}

/// WebSocket posters on failover `ChatSession`s (the documented client behaviour: reconnect
/// to another ready node, re-send unacknowledged messages with their ids).
struct WsLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<WsRecord>>,
}

impl WsLoad {
    fn start(cluster: &TestCluster, n: u64) -> WsLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let orders = [[3, 2, 1], [2, 1, 3], [1, 3, 2]];
        let tasks = (0..n)
            .map(|i| {
                let builder =
                    cluster.session_builder(&orders[(i % 3) as usize], cluster.admin_token());
                let (stop, acked) = (stop.clone(), acked.clone());
                tokio::spawn(async move { ws_poster(i, builder, stop, acked).await })
            })
            .collect();
        WsLoad { stop, acked, tasks }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    async fn stop(self) -> Vec<WsRecord> {
        self.stop.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await.unwrap_or_else(|e| WsRecord {
                errors: vec![format!("poster task: {e}")],
                ..WsRecord::default()
            }));
        }
        out
    }
}

async fn ws_poster(
    poster: u64,
    builder: ops::SessionBuilder,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> WsRecord {
    let mut rec = WsRecord::default();
    let mut session = match builder.start() {
        Ok(s) => s,
        Err(e) => {
            rec.errors.push(format!("ws poster {poster}: start: {e}"));
            return rec;
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("ws{poster}-{n}");
        n += 1;
        let body = format!("{id} over the WebSocket");
        let handle = session.send_with_id(CH, &body, None, id.clone());
        match handle.wait_timeout(WS_SEND_DEADLINE).await {
            Ok(ack) => {
                rec.acks.push(Msg {
                    seq: ack.seq,
                    author: ADMIN_USER.to_owned(),
                    body,
                    ts_ms: ack.ts_ms,
                    client_msg_id: id,
                });
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                rec.errors.push(format!("ws poster {poster}: {id}: {e}"));
                rec.unacked.push(id);
            }
        }
        for event in session.drain_events() {
            match event {
                SessionEvent::Disconnected { .. } | SessionEvent::Reconnecting { .. } => {
                    rec.reconnects += 1
                }
                SessionEvent::Nacked(_)
                | SessionEvent::ServerError { .. }
                | SessionEvent::AuthLost(_)
                | SessionEvent::Gap { .. } => {
                    rec.errors.push(format!("ws poster {poster}: {event:?}"))
                }
                _ => {}
            }
        }
        if !rec.errors.is_empty() {
            break;
        }
    }
    session.close().await;
    rec
}

/// `GET /readyz` of node `id` as JSON (whatever the status).
async fn readyz_json(cluster: &TestCluster, id: u64) -> Result<Value, String> {
    let url = format!("{}/readyz", cluster.url(id));
    let resp = cluster
        .http()
        .get(&url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    resp.json::<Value>().await.map_err(|e| e.to_string())
}

/// The version-6-only command against node `id` alone (no failover, no retry):
/// `DELETE /api/v1/users/upgrade-probe/sessions`. Returns the status and the JSON body.
async fn try_v6_command(cluster: &TestCluster, id: u64) -> Result<(u16, Value), String> {
    let url = format!("{}/api/v1/users/{PROBE_USER}/sessions", cluster.url(id));
    let resp = cluster
        .http()
        .delete(&url)
        .bearer_auth(cluster.admin_token())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Every upgraded node refuses the version-6 command with the documented 503.
async fn assert_v6_refused(cluster: &TestCluster, upgraded: &[u64]) {
    for id in upgraded {
        match try_v6_command(cluster, *id).await {
            Ok((503, body))
                if body["error"]["code"] == "unavailable"
                    && body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("rolling upgrade is in progress")) => {}
            other => cluster.fail(&format!(
                "node {id} (upgraded, cluster still mixed) answered the version-6 command with \
                 {other:?}, expected 503 unavailable \"a rolling upgrade is in progress\""
            )),
        }
    }
}

/// Drain, stop, swap the binary, start, wait ready, undrain: one node's upgrade.
async fn upgrade_node(cluster: &mut TestCluster, id: u64, new_bin: &Path, first: bool) {
    let others: Vec<u64> = cluster.ids().into_iter().filter(|o| *o != id).collect();
    let admin = cluster.client_over(&others);
    admin
        .drain_node(id)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("drain node {id}: {e}")));
    cluster
        .wait_until(
            &format!("node {id} /readyz says draining"),
            STEP_TIMEOUT,
            || async {
                let v = readyz_json(cluster, id).await?;
                if v["draining"] == true && v["ready"] == false {
                    Ok(())
                } else {
                    Err(format!("readyz {v}"))
                }
            },
        )
        .await;
    cluster.terminate(id).await;
    cluster.set_binary(id, new_bin.to_path_buf());
    let data_dir = cluster.node(id).spec.data_dir.clone();
    if first {
        // The previous release created its data dir 0755; this release refuses to start on a
        // directory other users can enter and says in one line what to do.
        let mode = std::fs::metadata(&data_dir).unwrap().permissions();
        eprintln!(
            "upgrade: node {id}'s data dir from the previous release has mode {:o}",
            mode.mode() & 0o777
        );
        if mode.mode() & 0o077 != 0 {
            cluster.spawn(id);
            let status = cluster
                .wait_until(
                    &format!("node {id} refuses its 0755 data dir"),
                    STEP_TIMEOUT,
                    || async {
                        cluster
                            .node(id)
                            .exit_status()
                            .ok_or_else(|| "still running".to_owned())
                    },
                )
                .await;
            let log = cluster.node(id).log_text();
            assert!(
                !status.success() && log.contains(&format!("chmod 700 {}", data_dir.display())),
                "node {id} on a 0755 data dir: exit {status}, and the log should name `chmod 700`:\n{}",
                chaos_tests::node::tail(&log, 20)
            );
        }
    }
    // The documented upgrade step for data dirs made by the previous release.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    cluster.spawn(id);
    // A drained node's /readyz says "draining" whatever else holds; its own cluster status
    // says whether it is otherwise ready (leader known, caught up).
    cluster
        .wait_until(
            &format!("node {id} (new binary, drained) ready"),
            STEP_TIMEOUT,
            || async {
                if let Some(status) = cluster.node(id).exit_status() {
                    return Err(chaos_tests::wait::Waiting::Abort(format!(
                        "node {id} exited ({status})"
                    )));
                }
                let v = cluster
                    .cluster_json(id)
                    .await
                    .map_err(|e| chaos_tests::wait::Waiting::NotYet(e.to_string()))?;
                let me = v["nodes"]
                    .as_array()
                    .and_then(|nodes| nodes.iter().find(|n| n["id"] == id))
                    .cloned()
                    .unwrap_or(Value::Null);
                if me["ready"] == true && me["draining"] == true {
                    Ok(())
                } else {
                    Err(chaos_tests::wait::Waiting::NotYet(format!("self {me}")))
                }
            },
        )
        .await;
    admin
        .undrain_node(id)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("undrain node {id}: {e}")));
    cluster.wait_ready(id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_from_previous_release() {
    let Some(old_bin) = previous_release() else {
        return;
    };
    let old_bin_path = || old_bin.clone();
    let new_bin = conclave_bin().unwrap();
    let started = Instant::now();
    let mut cluster =
        TestCluster::start_with(3, ClusterOptions::default().binary(old_bin.clone()).tls()).await;
    create_channel(&cluster, CH).await;
    cluster
        .client_all()
        .create_user(PROBE_USER, PROBE_PASSWORD, Role::Member)
        .await
        .unwrap();
    cluster.remember_secret(PROBE_PASSWORD);

    let rest_clients = spread_clients(&cluster, REST_POSTERS);
    let rest_watch: Vec<ops::Client> = rest_clients.clone();
    let load = Load::start(rest_clients, LoadConfig::new(CH, "rest"));
    let ws = WsLoad::start(&cluster, WS_POSTERS);

    let leader = cluster.wait_for_leader(&[]).await;
    let mut order: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    order.push(leader);
    let mut upgraded = Vec::new();
    for (step, id) in order.iter().copied().enumerate() {
        let since = Instant::now();
        let ws_before = ws.acked();
        wait_acks(
            &cluster,
            &load,
            since,
            ACKS_BETWEEN_STEPS,
            "REST acks before the step",
        )
        .await;
        cluster
            .wait_until("WebSocket acks before the step", STEP_TIMEOUT, || async {
                let got = ws.acked() - ws_before;
                if got >= ACKS_BETWEEN_STEPS as u64 {
                    Ok(())
                } else {
                    Err(format!("{got} acknowledged"))
                }
            })
            .await;
        upgrade_node(&mut cluster, id, &new_bin, step == 0).await;
        upgraded.push(id);
        if upgraded.len() < order.len() {
            assert_v6_refused(&cluster, &upgraded).await;
        }
    }

    // Every node runs the new binary: the gate opens (the version probe is periodic, and a
    // refused write asks the members again, so this is bounded by one probe round).
    let (status, body) = cluster
        .wait_until(
            "the version-6 command accepted after the last upgrade",
            STEP_TIMEOUT,
            || async {
                match try_v6_command(&cluster, leader).await {
                    Ok((200, body)) => Ok((200, body)),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    assert!(
        status == 200 && body["ended"].as_u64().is_some(),
        "accepted version-6 command answered {status} {body}"
    );
    for id in cluster.ids() {
        let (status, body) = try_v6_command(&cluster, id).await.unwrap();
        assert_eq!(status, 200, "node {id} after the upgrade: {body}");
    }

    let since = Instant::now();
    wait_acks(
        &cluster,
        &load,
        since,
        ACKS_BETWEEN_STEPS,
        "posting after the upgrade",
    )
    .await;
    let report = load.stop().await;
    let ws_records = ws.stop().await;

    // ---- what the clients saw ----
    let failovers = rest_watch.iter().map(ops::Client::failovers).fold(
        (0, 0, Vec::new()),
        |(t, u, mut recent), f| {
            recent.extend(f.recent);
            (t + f.transport, u + f.unavailable, recent)
        },
    );
    // The failover clients retry transport errors and 503 `unavailable` (nothing written)
    // on another node; a refusal by the version gate must never be among them (posts are
    // version 1 commands).
    let gate: Vec<&String> = failovers
        .2
        .iter()
        .filter(|e| e.contains("rolling upgrade"))
        .collect();
    assert!(
        gate.is_empty(),
        "posts were refused by the version gate: {gate:?}"
    );
    let reconnects: u64 = ws_records.iter().map(|r| r.reconnects).sum();
    eprintln!(
        "upgrade: {} REST acks, {} WebSocket acks in {:?}; REST failovers (invisible to callers): \
         {} transport, {} 503 unavailable; WebSocket reconnect events: {reconnects}",
        report.acks.len(),
        ws_records.iter().map(|r| r.acks.len()).sum::<usize>(),
        started.elapsed(),
        failovers.0,
        failovers.1,
    );
    let kind = |e: &String| {
        if e.starts_with("cannot reach the cluster") {
            "transport"
        } else if e.contains("shutting down") {
            "503 shutting down"
        } else if e.contains("has not applied index") {
            "503 catching up"
        } else {
            "503 other"
        }
    };
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for e in &failovers.2 {
        *kinds.entry(kind(e)).or_default() += 1;
    }
    eprintln!(
        "upgrade: retries the REST failover made (the last 32 per client) by kind: {kinds:?}: {:?}",
        failovers.2
    );
    assert!(
        report.failed.is_empty() && report.failed_attempts == 0,
        "REST clients saw errors ({} attempts failed after failover): {:?}",
        report.failed_attempts,
        report.failed
    );
    let ws_errors: Vec<&String> = ws_records.iter().flat_map(|r| &r.errors).collect();
    assert!(
        ws_errors.is_empty(),
        "WebSocket clients saw errors: {ws_errors:?}"
    );

    // ---- what the nodes hold ----
    let mut acked = settle(&cluster, CH, &report).await;
    let mut per_poster = report.per_poster();
    let mut sent = report.sent_ids();
    for r in &ws_records {
        acked.extend(r.acks.iter().cloned());
        per_poster.push(r.acks.clone());
        sent.extend(r.acks.iter().map(|m| m.client_msg_id.clone()));
        sent.extend(r.unacked.iter().cloned());
    }
    let views = cluster
        .wait_converged(CH, &[1, 2, 3], max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    cluster.check(checks::nothing_unsent_written(&sent, &views));
    cluster.check(checks::acknowledged_in_send_order(&per_poster));

    // ---- no downgrade once the new version is in the log ----
    // The previous release cannot read a log holding a version 6 entry: it must refuse to
    // start (exit by itself, non-zero) rather than serve, or apply around, what it cannot
    // read. (docs/operations.md, "No downgrade after the last node is upgraded".)
    let back = order[0];
    cluster.terminate(back).await;
    cluster.set_binary(back, old_bin_path());
    cluster.spawn(back);
    let status = cluster
        .wait_until(
            &format!("node {back} on the previous release exits by itself"),
            STEP_TIMEOUT,
            || async {
                cluster
                    .node(back)
                    .exit_status()
                    .ok_or_else(|| "still running".to_owned())
            },
        )
        .await;
    let log = cluster.node(back).log_text();
    let since_start = log
        .rsplit("binary is now")
        .next()
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "upgrade: the previous release on an upgraded data dir exited with {status}; its log:\n{}",
        chaos_tests::node::tail(&since_start, 6)
    );
    assert!(
        !status.success(),
        "the previous release must not run on a log with entries it cannot read"
    );
    eprintln!("upgrade test: {:?} wall", started.elapsed());
}
