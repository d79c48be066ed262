//! Corrupted storage on one node (issue 13): a bit flipped in the newest and in an old Raft log
//! segment, in the snapshot file, and in the state machine's sled store (after a clean stop, so
//! its proof is there, and after a crash, when nothing proves it). Real processes; the bits are
//! flipped in the stopped node's files (the fault filesystem's `flip_bit` does the same on a
//! mount). Each scenario checks: the node never serves a message that differs from what was
//! acknowledged, it heals by itself (ready again, the damaged store in `quarantine/`, the heal
//! marker gone), writes went on through the others meanwhile, and every node ends with the
//! same history, which a write through the healed node then extends everywhere.
//!
//! Where the fault filesystem is available (root, FUSE) every data dir is a `FaultFs` mount, the
//! bits are flipped in its durable image (`flip_bit`) and the crash is a power cut; elsewhere
//! the same flips are written to plain files and the crash is a SIGKILL
//! (`CHAOS_REQUIRE_FAULTFS=1` makes a missing fault filesystem a failure).

use std::path::{Path, PathBuf};

use chaos_tests::checks::{self, Msg};
use chaos_tests::faultfs::{self, FlipAt, Tear};
use chaos_tests::{ClusterOptions, Load, LoadConfig, TestCluster};

use crate::util::{create_channel, max_index, max_seq, post_ok, settle};

const SNAPSHOT_EVERY: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    NewestSegment,
    OldSegment,
    Snapshot,
    /// Clean stop (proof written), then sled's files damaged.
    SledProven,
    /// SIGKILL (no proof), then sled's files damaged: rebuilt, not healed from peers.
    SledCrashed,
}

impl Damage {
    /// The quarantine directory's suffix this damage must produce (`None`: nothing quarantined).
    fn quarantined(self) -> Option<&'static str> {
        match self {
            Damage::NewestSegment | Damage::OldSegment => Some("-log"),
            Damage::Snapshot => Some("-snapshot"),
            Damage::SledProven => Some("-state"),
            Damage::SledCrashed => None,
        }
    }

    /// Whether the node must fetch a snapshot from the leader (its log was quarantined and the
    /// leader's log is purged).
    fn needs_leader_snapshot(self) -> bool {
        matches!(self, Damage::NewestSegment | Damage::Snapshot)
    }
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                .collect()
        })
        .unwrap_or_default();
    segs.sort();
    segs
}

/// Start offsets and lengths of the frames (`[len u32][crc u32][payload]`) of a segment.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + len > bytes.len() {
            break;
        }
        out.push((pos, len));
        pos += 8 + len;
    }
    out
}

/// Whether to run on fault filesystem mounts (see the module doc).
fn use_faultfs() -> bool {
    match faultfs::available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var("CHAOS_REQUIRE_FAULTFS").as_deref() != Ok("1"),
                "CHAOS_REQUIRE_FAULTFS=1 but the fault filesystem is not available: {why}"
            );
            eprintln!("storage_heal: no fault filesystem ({why}): flipping bits in plain files");
            false
        }
    }
}

/// Flips bits in one stopped node's files: through its fault filesystem when it has one.
struct Flipper<'a> {
    cluster: &'a TestCluster,
    id: u64,
    data_dir: PathBuf,
    faultfs: bool,
}

impl Flipper<'_> {
    fn flip(&self, path: &Path, offset: usize, bit: u8) {
        if self.faultfs {
            let rel = path.strip_prefix(&self.data_dir).unwrap();
            self.cluster
                .fs(self.id)
                .flip_bit(
                    rel,
                    FlipAt::Offset {
                        offset: offset as u64,
                        bit,
                    },
                )
                .unwrap();
            return;
        }
        let mut bytes = std::fs::read(path).unwrap();
        bytes[offset] ^= 1 << bit;
        std::fs::write(path, &bytes).unwrap();
        eprintln!("flipped bit {bit} at offset {offset} of {}", path.display());
    }
}

/// Flips one bit in the payload of a frame in the middle of `seg`, with valid frames after it:
/// a torn tail never looks like that, so the node must treat it as corruption.
fn flip_in_segment(f: &Flipper<'_>, seg: &Path) {
    let bytes = std::fs::read(seg).unwrap();
    let fr = frames(&bytes);
    assert!(
        fr.len() >= 3,
        "{} holds only {} frames",
        seg.display(),
        fr.len()
    );
    let (pos, len) = fr[fr.len() / 2];
    f.flip(seg, pos + 8 + len / 2, 3);
}

/// Flips one bit in every copy of `canary` in the files of sled's directory; how many.
fn flip_canary_in_sled(f: &Flipper<'_>, canary: &str) -> usize {
    let mut flipped = 0;
    let mut stack = vec![f.data_dir.join("state")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let needle = canary.as_bytes();
            let mut i = 0;
            while i + needle.len() <= bytes.len() {
                if &bytes[i..i + needle.len()] == needle {
                    f.flip(&p, i + needle.len() / 2, 1);
                    flipped += 1;
                    i += needle.len();
                } else {
                    i += 1;
                }
            }
        }
    }
    eprintln!("flipped a bit in {flipped} copies of {canary:?} in sled's files");
    flipped
}

fn quarantine_entries(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("quarantine"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Posts `n` messages one after another (each its own log entry) through `ids`.
async fn post_many(
    cluster: &TestCluster,
    ids: &[u64],
    ch: &str,
    prefix: &str,
    n: u64,
) -> (Vec<Msg>, Option<u64>) {
    let mut cfg = LoadConfig::new(ch, prefix);
    cfg.total = Some(n);
    let report = Load::start(vec![cluster.client_over(ids)], cfg)
        .join()
        .await;
    let acked = settle(cluster, ch, &report).await;
    (acked, max_index(&report))
}

/// Every message `id` serves must be the acknowledged one at its seq (it may lag, never differ).
fn served_matches_acked(id: u64, served: &[Msg], acked: &[Msg]) -> Result<(), String> {
    let by_seq: std::collections::HashMap<u64, &Msg> = acked.iter().map(|m| (m.seq, m)).collect();
    for m in served {
        match by_seq.get(&m.seq) {
            Some(a) if *a == m => {}
            Some(a) => return Err(format!("node {id} serves {m}, acknowledged was {a}")),
            None => {
                return Err(format!(
                    "node {id} serves {m}, which was never acknowledged"
                ));
            }
        }
    }
    Ok(())
}

async fn heal_after(damage: Damage) {
    let on_faultfs = use_faultfs();
    let mut opts = ClusterOptions::default();
    if on_faultfs {
        opts = opts.faultfs();
    }
    opts = if damage == Damage::OldSegment {
        // Small segments and no purge, so the oldest segment is still there to damage.
        opts.top_level("storage", "{ log_segment_bytes = 4096 }")
    } else {
        opts.snapshot_logs_since_last(SNAPSHOT_EVERY)
            .max_in_snapshot_log_to_keep(0)
    };
    let cluster = TestCluster::start_with(3, opts).await;
    let ch = "heal";
    create_channel(&cluster, ch).await;
    let canary = "sled-canary-7f3a9c";
    let first = post_ok(&cluster, &cluster.client_all(), ch, canary, "canary").await;
    let (mut acked, _) = post_many(&cluster, &[1, 2, 3], ch, "before", 3 * SNAPSHOT_EVERY).await;
    acked.push(Msg::from(&first.message));

    let victim = cluster.a_follower().await;
    let data_dir = cluster.node(victim).spec.data_dir.clone();
    // Everything acknowledged so far is applied on the victim (so its sled holds the canary).
    cluster
        .wait_converged(ch, &[victim], None, max_seq(&acked))
        .await;
    match (damage, on_faultfs) {
        (Damage::SledCrashed, true) => {
            cluster.power_cut(victim, Tear::None);
        }
        (Damage::SledCrashed, false) => cluster.kill(victim),
        _ => cluster.terminate(victim).await,
    }
    let f = Flipper {
        cluster: &cluster,
        id: victim,
        data_dir: data_dir.clone(),
        faultfs: on_faultfs,
    };
    match damage {
        Damage::NewestSegment => flip_in_segment(&f, segments(&data_dir).last().unwrap()),
        Damage::OldSegment => {
            let segs = segments(&data_dir);
            assert!(segs.len() >= 3, "only {} log segments", segs.len());
            flip_in_segment(&f, &segs[0]);
        }
        Damage::Snapshot => {
            let snap = data_dir.join("snapshot.bin");
            let len = std::fs::metadata(&snap).unwrap().len() as usize;
            f.flip(&snap, len / 2, 5);
        }
        Damage::SledProven => {
            assert!(
                data_dir.join("state.proof").exists(),
                "no proof after a clean stop"
            );
            assert!(
                flip_canary_in_sled(&f, canary) > 0,
                "the canary is nowhere in sled's files after a clean stop"
            );
        }
        Damage::SledCrashed => {
            assert!(
                !data_dir.join("state.proof").exists(),
                "a proof after a crash"
            );
            // After a power cut sled may hold none of it (it never fsyncs): flip what is there.
            flip_canary_in_sled(&f, canary);
        }
    }

    // Writes go on through the others meanwhile.
    let survivors = cluster.live_ids();
    let (more, _) = post_many(&cluster, &survivors, ch, "while-down", 2 * SNAPSHOT_EVERY).await;
    acked.extend(more);

    cluster.spawn(victim);
    let marker = data_dir.join("HEALING");
    cluster
        .wait_until(
            &format!("node {victim} healed (ready, no heal marker)"),
            cluster.ready_timeout(),
            || async {
                // Whatever it serves meanwhile is never different from what was acknowledged.
                if let Ok(served) = cluster.try_messages(victim, ch, None).await
                    && let Err(e) = served_matches_acked(victim, &served, &acked)
                {
                    cluster.fail(&e);
                }
                if marker.exists() {
                    return Err("heal marker still there".to_string());
                }
                if !cluster.readyz(victim).await {
                    return Err("not ready".to_string());
                }
                Ok(())
            },
        )
        .await;

    let q = quarantine_entries(&data_dir);
    match damage.quarantined() {
        Some(suffix) => assert!(
            q.iter().any(|e| e.ends_with(suffix)),
            "node {victim}: no quarantine entry ending in {suffix}: {q:?}"
        ),
        None => assert!(q.is_empty(), "node {victim}: a crash quarantined {q:?}"),
    }
    let log = std::fs::read_to_string(&cluster.node(victim).spec.log_path).unwrap_or_default();
    let since_restart = log.rsplit("chaos harness: node").next().unwrap_or_default();
    let expect = match damage {
        Damage::NewestSegment | Damage::OldSegment | Damage::Snapshot => {
            "healed: caught up from peers"
        }
        Damage::SledProven => "does not match its proof",
        Damage::SledCrashed => "rebuilding it from the snapshot and the log",
    };
    assert!(
        since_restart.contains(expect),
        "node {victim} did not log {expect:?} after the restart:\n{}",
        chaos_tests::node::tail(since_restart, 60)
    );
    if damage.needs_leader_snapshot() {
        assert!(
            since_restart.contains("installing snapshot from leader"),
            "node {victim} healed without a snapshot from the leader:\n{}",
            chaos_tests::node::tail(since_restart, 60)
        );
    }

    // The healed node takes writes, and every node ends with the same history.
    let after = post_ok(
        &cluster,
        &cluster.client(victim),
        ch,
        "after healing",
        "after",
    )
    .await;
    acked.push(Msg::from(&after.message));
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], after.index, max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    same_users_and_channels(&cluster).await;
}

/// Users and channels read from each node are identical (the state machine, not just messages).
async fn same_users_and_channels(cluster: &TestCluster) {
    let mut seen: Vec<(u64, String)> = Vec::new();
    for id in cluster.ids() {
        let c = cluster.client(id);
        let users = c
            .list_users()
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("users on {id}: {e}")));
        let chans = c
            .list_channels()
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("channels on {id}: {e}")));
        seen.push((id, format!("{users:?} {chans:?}")));
    }
    for (id, s) in &seen[1..] {
        assert_eq!(
            s, &seen[0].1,
            "node {id} and node {} disagree on users/channels",
            seen[0].0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_in_newest_log_segment_heals_from_peers() {
    heal_after(Damage::NewestSegment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_in_old_log_segment_heals_from_peers() {
    heal_after(Damage::OldSegment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_in_snapshot_file_heals_from_peers() {
    heal_after(Damage::Snapshot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flip_in_proven_sled_store_is_quarantined_and_rebuilt() {
    heal_after(Damage::SledProven).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_after_a_crash_is_rebuilt_not_trusted() {
    heal_after(Damage::SledCrashed).await;
}
