//! Disk faults on one node, with real processes under load: free space below the watermark,
//! and writes that fail (the node stops writing, restarts in-process from what is on disk and
//! recovers by itself once the disk works). Posters go on through the other nodes; the history
//! checker proves no acknowledged message lost, duplicated or reordered.
//!
//! The failing-write test makes the node's Raft log immutable (`chattr +i`: even root then gets
//! EPERM on write and on open for writing), a fault the kernel injects for real without a FUSE
//! layer. It needs root and a filesystem with the immutable flag (ext4, xfs, btrfs) and skips
//! with a message otherwise (an overlay filesystem in a container has no such flag); the same
//! behaviour is required in CI on the fault filesystem (`disk_full.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chaos_tests::{Load, LoadConfig, TestCluster, checks};
use serde_json::Value;

use crate::util::{create_channel, max_index, max_seq, settle, spread_clients, wait_acks};

const POSTERS: u64 = 3;
/// A watermark no disk reaches (TOML integers are i64): the node is always "below" it.
const HUGE_WATERMARK: &str = "1000000000000000000";

/// `storage` of node `id` in node `from`'s cluster view.
async fn storage_of(cluster: &TestCluster, from: u64, id: u64) -> Result<Value, String> {
    let view = cluster
        .cluster_json(from)
        .await
        .map_err(|e| e.to_string())?;
    let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
    nodes
        .into_iter()
        .find(|n| n["id"].as_u64() == Some(id))
        .map(|n| n["storage"].clone())
        .ok_or_else(|| format!("node {id} not in node {from}'s view"))
}

/// `/readyz` of node `id`: status and reason.
async fn readyz(cluster: &TestCluster, id: u64) -> Result<(u16, String), String> {
    let url = format!("{}/readyz", cluster.url(id));
    let resp = cluster
        .http()
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        body["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

fn other_than(cluster: &TestCluster, id: u64) -> u64 {
    cluster
        .ids()
        .into_iter()
        .find(|n| *n != id)
        .expect("a second node")
}

/// A node below its free-space watermark refuses writes with 503 `disk_full` before
/// proposing, is not ready and says why (on /readyz and in every node's cluster view), never
/// leads, yet keeps replicating; the others carry the load. With the watermark back to its
/// default it is ready and holds the same history as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_watermark_a_node_refuses_writes_and_steps_aside() {
    let cluster = TestCluster::start(3).await;
    let ch = "disk-low";
    create_channel(&cluster, ch).await;
    let started = Instant::now();
    let load = Load::start(
        spread_clients(&cluster, POSTERS),
        LoadConfig::new(ch, "low"),
    );
    wait_acks(&cluster, &load, started, 20, "acks before the watermark").await;

    // The leader is the interesting one: after its restart it must not win leadership back.
    let low = cluster.wait_for_leader(&[]).await;
    let config_path = cluster.node(low).spec.config_path.clone();
    let original = std::fs::read_to_string(&config_path).unwrap();
    cluster.terminate(low).await;
    std::fs::write(
        &config_path,
        format!("{original}\n[storage]\nmin_free_bytes = {HUGE_WATERMARK}\n"),
    )
    .unwrap();
    cluster.node(low).spawn().unwrap();
    let low_at = Instant::now();

    let (status, reason) = cluster
        .wait_until(
            "the low node to say why it is not ready",
            cluster.ready_timeout(),
            || async {
                match readyz(&cluster, low).await {
                    Ok((503, r)) if r.starts_with("disk space low: ") => Ok((503u16, r)),
                    Ok(other) => Err(format!("{other:?}")),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
    eprintln!("node {low} /readyz: {status} {reason}");
    assert!(reason.contains("watermark"), "{reason}");

    // A write through it is refused before anything is proposed, with a code a client acts on.
    let raw = crate::util::send(
        cluster
            .http()
            .post(format!(
                "{}/api/v1/channels/{ch}/messages",
                cluster.url(low)
            ))
            .bearer_auth(cluster.admin_token())
            .json(&serde_json::json!({"body": "refused", "client_msg_id": "low-refused"})),
    )
    .await;
    assert_eq!(
        (raw.status, raw.code.as_deref()),
        (503, Some("disk_full")),
        "{}",
        raw.body
    );

    // Every node's view says so: storage low_space with free space and watermark.
    let peer = other_than(&cluster, low);
    let storage = cluster
        .wait_until(
            "the peers' view of the low node",
            Duration::from_secs(10),
            || async {
                let s = storage_of(&cluster, peer, low).await?;
                if s["state"] == "low_space" {
                    Ok(s)
                } else {
                    Err(format!("{s}"))
                }
            },
        )
        .await;
    assert!(storage["free_bytes"].as_u64().is_some(), "{storage}");
    assert_eq!(
        storage["min_free_bytes"].as_u64(),
        Some(HUGE_WATERMARK.parse().unwrap())
    );

    // The others take the load, and leadership stays away from the low node.
    let new_leader = cluster.wait_for_leader(&[low]).await;
    wait_acks(
        &cluster,
        &load,
        low_at,
        30,
        "acks while one node is low on space",
    )
    .await;
    assert_ne!(cluster.leader_id().await, Some(low), "the low node leads");
    eprintln!("node {low} below its watermark; node {new_leader} leads");

    // Space "returns": the default watermark, and the node is ready again by itself.
    cluster.terminate(low).await;
    std::fs::write(&config_path, &original).unwrap();
    cluster.node(low).spawn().unwrap();
    cluster.wait_ready(low).await;

    let report = load.stop().await;
    let acked = settle(&cluster, ch, &report).await;
    let views = cluster
        .wait_converged(ch, &cluster.ids(), max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    eprintln!(
        "{} acked, {} settled after unknown outcomes",
        report.acks.len(),
        report.failed.len()
    );
}

/// Whether `chattr +i` works here (root, a filesystem with the immutable flag).
fn immutable_supported(dir: &Path) -> Result<(), String> {
    let probe = dir.join("immutable-probe");
    std::fs::write(&probe, b"x").map_err(|e| e.to_string())?;
    let set = chattr("+i", std::slice::from_ref(&probe));
    let _ = chattr("-i", std::slice::from_ref(&probe));
    let _ = std::fs::remove_file(&probe);
    set
}

fn chattr(flag: &str, paths: &[PathBuf]) -> Result<(), String> {
    let out = Command::new("chattr")
        .arg(flag)
        .args(paths)
        .output()
        .map_err(|e| format!("chattr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "chattr {flag}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Clears the immutable flag on drop, so a failing test still leaves a removable temp dir.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: Vec<PathBuf>) -> Immutable {
        chattr("+i", &paths).unwrap();
        Immutable(paths)
    }

    fn clear(&mut self) {
        if !self.0.is_empty() {
            chattr("-i", &self.0).unwrap();
            self.0.clear();
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = chattr("-i", &self.0);
    }
}

/// The raft log's directory and files of node `id`.
fn log_paths(cluster: &TestCluster, id: u64) -> Vec<PathBuf> {
    let dir = cluster.node(id).spec.data_dir.join("log");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.push(dir);
    paths
}

/// The leader's Raft log stops taking writes (EPERM on write, open and create): the node's
/// Raft core stops on the storage error, the process stays up and restarts the node in-process
/// (the same pid), failing again while the log is unwritable; meanwhile /healthz answers, /readyz
/// and the peers' view say storage failed, and the other two elect a leader and carry the load.
/// Once the log is writable again the node is back by itself with the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_log_writes_restart_the_node_in_process() {
    let cluster = TestCluster::start(3).await;
    if let Err(why) = immutable_supported(cluster.root()) {
        eprintln!("skipped: chattr +i is unusable here ({why}); needs root on ext4/xfs/btrfs");
        return;
    }
    let ch = "disk-fail";
    create_channel(&cluster, ch).await;
    let started = Instant::now();
    let load = Load::start(
        spread_clients(&cluster, POSTERS),
        LoadConfig::new(ch, "eio"),
    );
    wait_acks(&cluster, &load, started, 20, "acks before the fault").await;

    let failing = cluster.wait_for_leader(&[]).await;
    let pid = cluster.node(failing).pid();
    let mut fault = Immutable::set(log_paths(&cluster, failing));
    let fault_at = Instant::now();

    cluster
        .wait_until(
            "the node to log its storage failure",
            Duration::from_secs(20),
            || async {
                let log = cluster.node(failing).log_text();
                if log.contains("storage failed: the node stopped and waits until storage works") {
                    Ok(())
                } else {
                    Err("no storage failure logged yet".to_owned())
                }
            },
        )
        .await;
    // Alive, not ready, and the peers know why.
    let peer = other_than(&cluster, failing);
    let storage = cluster
        .wait_until(
            "the peers' view of the failed node",
            Duration::from_secs(20),
            || async {
                let s = storage_of(&cluster, peer, failing).await?;
                if s["state"] == "failed" {
                    Ok(s)
                } else {
                    Err(format!("{s}"))
                }
            },
        )
        .await;
    eprintln!("node {failing} as its peers see it: {storage}");
    let health = crate::util::send(
        cluster
            .http()
            .get(format!("{}/healthz", cluster.url(failing))),
    )
    .await;
    assert_eq!(health.status, 200, "{}", health.body);
    let (status, reason) = readyz(&cluster, failing).await.unwrap();
    assert_eq!(status, 503, "{reason}");
    let new_leader = cluster.wait_for_leader(&[failing]).await;
    wait_acks(&cluster, &load, fault_at, 30, "acks through the other two").await;
    assert_eq!(cluster.node(failing).pid(), pid, "the process was replaced");
    assert!(cluster.is_running(failing), "the process exited");

    fault.clear();
    cluster.wait_ready(failing).await;
    assert_eq!(cluster.node(failing).pid(), pid, "the process was replaced");
    let log = cluster.node(failing).log_text();
    assert!(
        log.contains("restarting the node in-process"),
        "no restart logged"
    );
    eprintln!(
        "node {failing} failed writes and came back in-process; node {new_leader} led meanwhile"
    );

    let report = load.stop().await;
    let acked = settle(&cluster, ch, &report).await;
    let views = cluster
        .wait_converged(ch, &cluster.ids(), max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    eprintln!(
        "{} acked, {} settled after unknown outcomes",
        report.acks.len(),
        report.failed.len()
    );
}

/// Writes fail on a majority (the leader and one follower): the cluster has no quorum, so a
/// write through the healthy node gets a 503 with a clear code within the write timeout and
/// nothing is acknowledged meanwhile; both failed nodes restart in-process once their logs are
/// writable again and service resumes by itself with every acknowledged message in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_log_writes_on_a_majority_stop_writes_until_fixed() {
    let cluster = TestCluster::start(3).await;
    if let Err(why) = immutable_supported(cluster.root()) {
        eprintln!("skipped: chattr +i is unusable here ({why}); needs root on ext4/xfs/btrfs");
        return;
    }
    let ch = "disk-majority";
    create_channel(&cluster, ch).await;
    let started = Instant::now();
    let load = Load::start(
        spread_clients(&cluster, POSTERS),
        LoadConfig::new(ch, "maj"),
    );
    wait_acks(&cluster, &load, started, 20, "acks before the fault").await;

    let leader = cluster.wait_for_leader(&[]).await;
    let follower = other_than(&cluster, leader);
    let healthy = cluster
        .ids()
        .into_iter()
        .find(|n| *n != leader && *n != follower)
        .unwrap();
    let mut paths = log_paths(&cluster, leader);
    paths.extend(log_paths(&cluster, follower));
    let mut fault = Immutable::set(paths);
    for id in [leader, follower] {
        cluster
            .wait_until(
                &format!("node {id} to stop on its storage failure"),
                Duration::from_secs(20),
                || async {
                    if cluster
                        .node(id)
                        .log_text()
                        .contains("storage failed: the node stopped")
                    {
                        Ok(())
                    } else {
                        Err("still running".to_owned())
                    }
                },
            )
            .await;
    }
    // No quorum: a write through the healthy node is refused, within the write timeout.
    let asked = Instant::now();
    // A client that waits longer than the server's write timeout (the harness's does not).
    let raw = crate::util::send(
        crate::util::http()
            .post(format!(
                "{}/api/v1/channels/{ch}/messages",
                cluster.url(healthy)
            ))
            .bearer_auth(cluster.admin_token())
            .json(&serde_json::json!({"body": "no quorum", "client_msg_id": "maj-no-quorum"})),
    )
    .await;
    let took = asked.elapsed();
    eprintln!(
        "write without a quorum: {} {:?} after {took:?}",
        raw.status, raw.code
    );
    assert_eq!(raw.status, 503, "{}", raw.body);
    assert_eq!(raw.code.as_deref(), Some("unavailable"), "{}", raw.body);
    // With one batch in flight per node, a write can queue behind a batch already waiting out
    // its own write timeout (5 s): two timeouts and a margin.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    let acked_during = load.acked();

    fault.clear();
    cluster.wait_all_ready().await;
    let resumed = Instant::now();
    wait_acks(
        &cluster,
        &load,
        resumed,
        20,
        "acks after the disks work again",
    )
    .await;
    eprintln!("{acked_during} acked before the fault cleared");

    let report = load.stop().await;
    let mut acked = settle(&cluster, ch, &report).await;
    // The refused write may or may not have been proposed before the quorum was lost (503
    // `unavailable` means "unknown" for the write path): settle it like the load's unknowns.
    let client = cluster.client_all();
    let out = crate::util::post_ok(&cluster, &client, ch, "no quorum", "maj-no-quorum").await;
    acked.push(chaos_tests::checks::Msg::from(&out.message));
    let views = cluster
        .wait_converged(ch, &cluster.ids(), max_index(&report), max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    eprintln!(
        "{} acked, {} settled after unknown outcomes",
        report.acks.len(),
        report.failed.len()
    );
}
