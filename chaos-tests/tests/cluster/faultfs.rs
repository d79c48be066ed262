//! The fault filesystem's own tests (real FUSE mounts): what survives a power cut (fsynced
//! data, fsynced directory entries) and what does not (everything else), torn writes, ENOSPC,
//! fsync EIO, the reported free space, bit flips; and a real `conclave` node on it keeps an
//! acknowledged post across SIGKILL + power cut. Skipped (with a message) without root and
//! FUSE unless `CHAOS_REQUIRE_FAULTFS=1`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chaos_tests::faultfs::{self, FaultFs, FlipAt, FsyncFault, Tear};
use chaos_tests::{ClusterOptions, TestCluster};
use tempfile::TempDir;

use crate::util::{create_channel, post_ok};

/// A mount over a fresh backing dir. Field order: unmount before the temp dir goes.
struct Mount {
    fs: FaultFs,
    mnt: PathBuf,
    dir: TempDir,
}

impl Mount {
    fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

fn mount() -> Option<Mount> {
    if !faultfs::require() {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("conclave-faultfs-")
        .tempdir()
        .unwrap();
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mnt).unwrap();
    let fs = FaultFs::mount(&backing, &mnt).unwrap();
    assert!(
        faultfs::is_mounted(&mnt).unwrap(),
        "not in /proc/self/mounts"
    );
    Some(Mount { fs, mnt, dir })
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

/// Creates `rel` with `bytes`, fsyncs it and its directory: all of it durable.
fn durable_file(m: &Mount, rel: &str, bytes: &[u8]) {
    let path = m.p(rel);
    let mut f = File::create(&path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    sync_dir(path.parent().unwrap());
}

fn append(path: &Path, bytes: &[u8]) -> File {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f
}

#[test]
fn faultfs_unsynced_write_is_gone_after_cut() {
    let Some(m) = mount() else { return };
    durable_file(&m, "a", b"durable");
    let f = append(&m.p("a"), b"+volatile");
    assert_eq!(m.fs.unsynced_bytes(), 9);
    drop(f);
    assert_eq!(fs::read(m.p("a")).unwrap(), b"durable+volatile");
    let report = m.fs.power_cut(Tear::None);
    assert_eq!(report.files_reverted, 1);
    assert_eq!(fs::read(m.p("a")).unwrap(), b"durable");
    assert_eq!(m.fs.unsynced_bytes(), 0);
}

#[test]
fn faultfs_fsynced_write_stays() {
    let Some(m) = mount() else { return };
    durable_file(&m, "a", b"one");
    append(&m.p("a"), b"+two").sync_all().unwrap();
    assert_eq!(m.fs.unsynced_bytes(), 0);
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("a")).unwrap(), b"one+two");
}

#[test]
fn faultfs_fdatasync_counts() {
    let Some(m) = mount() else { return };
    durable_file(&m, "a", b"one");
    append(&m.p("a"), b"+two").sync_data().unwrap();
    append(&m.p("a"), b"+three");
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("a")).unwrap(), b"one+two");
}

#[test]
fn faultfs_created_file_needs_a_dir_fsync() {
    let Some(m) = mount() else { return };
    fs::create_dir(m.p("d")).unwrap();
    fs::create_dir(m.p("e")).unwrap();
    sync_dir(&m.mnt);
    // Data fsynced, directory entry not: gone at the cut (strict POSIX).
    let mut f = File::create(m.p("e/lost")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    // Entry fsynced too: stays.
    durable_file(&m, "d/kept", b"data");
    fs::create_dir(m.p("newdir")).unwrap();
    durable_file(&m, "newdir/inner", b"x");
    let report = m.fs.power_cut(Tear::None);
    assert!(!m.p("e/lost").exists());
    assert!(m.p("e").is_dir());
    assert_eq!(fs::read(m.p("d/kept")).unwrap(), b"data");
    // `newdir` itself was never made durable in the root: its whole subtree goes.
    assert!(!m.p("newdir").exists());
    assert_eq!(report.dir_ops_undone, 2);
}

/// tmp + fsync + rename (the write_atomic pattern).
fn write_atomic(m: &Mount, rel: &str, bytes: &[u8], sync_dir_after: bool) {
    let tmp = m.p(&format!("{rel}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    fs::rename(&tmp, m.p(rel)).unwrap();
    if sync_dir_after {
        sync_dir(&m.mnt);
    }
}

#[test]
fn faultfs_rename_needs_a_dir_fsync() {
    let Some(m) = mount() else { return };
    durable_file(&m, "meta", b"old");
    // The tmp file's entry is durable from an earlier round, so the cut brings it back.
    durable_file(&m, "meta.tmp", b"stale");
    write_atomic(&m, "meta", b"new", false);
    assert_eq!(fs::read(m.p("meta")).unwrap(), b"new");
    assert!(!m.p("meta.tmp").exists());
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("meta")).unwrap(), b"old");
    assert_eq!(fs::read(m.p("meta.tmp")).unwrap(), b"new");

    write_atomic(&m, "meta", b"newer", true);
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("meta")).unwrap(), b"newer");
    assert!(!m.p("meta.tmp").exists());
}

#[test]
fn faultfs_cross_directory_rename_needs_both_dirs_fsynced() {
    let Some(m) = mount() else { return };
    for d in ["a", "b"] {
        fs::create_dir(m.p(d)).unwrap();
    }
    sync_dir(&m.mnt);
    durable_file(&m, "a/x", b"x");
    fs::rename(m.p("a/x"), m.p("b/x")).unwrap();
    sync_dir(&m.p("b"));
    m.fs.power_cut(Tear::None);
    assert!(m.p("a/x").exists() && !m.p("b/x").exists());

    fs::rename(m.p("a/x"), m.p("b/x")).unwrap();
    sync_dir(&m.p("b"));
    sync_dir(&m.p("a"));
    m.fs.power_cut(Tear::None);
    assert!(!m.p("a/x").exists());
    assert_eq!(fs::read(m.p("b/x")).unwrap(), b"x");
}

#[test]
fn faultfs_unlink_needs_a_dir_fsync() {
    let Some(m) = mount() else { return };
    durable_file(&m, "a", b"keep me");
    durable_file(&m, "b", b"drop me");
    fs::remove_file(m.p("a")).unwrap();
    assert!(!m.p("a").exists());
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("a")).unwrap(), b"keep me");

    fs::remove_file(m.p("b")).unwrap();
    sync_dir(&m.mnt);
    m.fs.power_cut(Tear::None);
    assert!(!m.p("b").exists());
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a"], "the stash must stay hidden");
}

#[test]
fn faultfs_durable_rmdir_takes_what_was_pending_inside() {
    let Some(m) = mount() else { return };
    fs::create_dir(m.p("state")).unwrap();
    sync_dir(&m.mnt);
    durable_file(&m, "state/db", b"sled");
    // remove_dir_all, then only the parent is fsynced: the unlink inside `state` was never
    // fsynced, but `state` is durably gone, so nothing can come back into it.
    fs::remove_dir_all(m.p("state")).unwrap();
    sync_dir(&m.mnt);
    // Both removals are durable: nothing waits in the stash to be put back.
    let stash = m.dir.path().join("backing/.faultfs-stash");
    assert_eq!(fs::read_dir(&stash).unwrap().count(), 0);
    let report = m.fs.power_cut(Tear::None);
    assert_eq!(report.dir_ops_undone, 0, "{report:?}");
    assert!(!m.p("state").exists());
    // Without the parent's fsync the whole removal comes back.
    fs::create_dir(m.p("snap")).unwrap();
    sync_dir(&m.mnt);
    durable_file(&m, "snap/a", b"a");
    fs::remove_dir_all(m.p("snap")).unwrap();
    let report = m.fs.power_cut(Tear::None);
    assert_eq!(report.dir_ops_undone, 2, "{report:?}");
    assert_eq!(fs::read(m.p("snap/a")).unwrap(), b"a");
}

#[test]
fn faultfs_truncate_is_undone() {
    let Some(m) = mount() else { return };
    durable_file(&m, "a", b"0123456789");
    let f = OpenOptions::new().write(true).open(m.p("a")).unwrap();
    f.set_len(3).unwrap();
    drop(append(&m.p("a"), b"xyz"));
    assert_eq!(fs::read(m.p("a")).unwrap(), b"012xyz");
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("a")).unwrap(), b"0123456789");
}

#[test]
fn faultfs_torn_write_keeps_a_prefix_of_the_last_write() {
    let Some(m) = mount() else { return };
    durable_file(&m, "log", b"HEAD");
    for seed in [1u64, 2, 3, 42] {
        drop(append(&m.p("log"), b"aaaa"));
        drop(append(&m.p("log"), b"BBBBBBBB"));
        let report = m.fs.power_cut(Tear::Seeded(seed));
        let (path, kept) = report.torn.expect("a torn write");
        assert_eq!(path, Path::new("log"));
        assert!(kept < 8, "seed {seed}: kept {kept} of 8");
        let mut want = b"HEADaaaa".to_vec();
        want.extend(std::iter::repeat_n(b'B', kept as usize));
        assert_eq!(fs::read(m.p("log")).unwrap(), want, "seed {seed}");
        // Make it durable again for the next round.
        OpenOptions::new()
            .write(true)
            .open(m.p("log"))
            .unwrap()
            .set_len(4)
            .unwrap();
        File::open(m.p("log")).unwrap().sync_all().unwrap();
    }
}

#[test]
fn faultfs_disk_full_is_enospc() {
    let Some(m) = mount() else { return };
    durable_file(&m, "a", b"x");
    m.fs.set_disk_full(true);
    let enospc = |e: std::io::Error| assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    let mut f = OpenOptions::new().append(true).open(m.p("a")).unwrap();
    enospc(f.write_all(b"more").unwrap_err());
    enospc(File::create(m.p("b")).unwrap_err());
    enospc(fs::create_dir(m.p("d")).unwrap_err());
    enospc(f.set_len(1 << 20).unwrap_err());
    m.fs.clear_faults();
    f.write_all(b"more").unwrap();
    assert_eq!(fs::read(m.p("a")).unwrap(), b"xmore");
}

#[test]
fn faultfs_fsync_eio_next_and_always() {
    let Some(m) = mount() else { return };
    fs::create_dir(m.p("raft")).unwrap();
    sync_dir(&m.mnt);
    durable_file(&m, "raft/seg", b"synced");
    durable_file(&m, "other", b"o");
    let eio = |e: std::io::Error| assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");

    m.fs.fail_fsync(Path::new("raft"), FsyncFault::Next);
    let f = append(&m.p("raft/seg"), b"+lost");
    eio(f.sync_data().unwrap_err());
    // The failed fsync made nothing durable: the cut drops the write.
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("raft/seg")).unwrap(), b"synced");
    // `Next` fired once.
    append(&m.p("raft/seg"), b"+ok").sync_all().unwrap();

    m.fs.fail_fsync(Path::new("raft/seg"), FsyncFault::Always);
    let f = append(&m.p("raft/seg"), b"+no");
    for _ in 0..3 {
        eio(f.sync_all().unwrap_err());
    }
    // Only the matching path fails, and a matching directory's fsync fails too.
    append(&m.p("other"), b"+fine").sync_all().unwrap();
    m.fs.fail_fsync(Path::new("raft"), FsyncFault::Always);
    eio(File::open(m.p("raft")).unwrap().sync_all().unwrap_err());
    sync_dir(&m.mnt);
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("raft/seg")).unwrap(), b"synced+ok");
    m.fs.clear_faults();
    append(&m.p("raft/seg"), b"+again").sync_all().unwrap();
}

#[test]
fn faultfs_statfs_reports_free_bytes() {
    let Some(m) = mount() else { return };
    let real = fs2::available_space(&m.mnt).unwrap();
    assert!(real > 0);
    m.fs.set_free_bytes(Some(5 << 20));
    assert_eq!(fs2::available_space(&m.mnt).unwrap(), 5 << 20);
    assert_eq!(fs2::free_space(&m.mnt).unwrap(), 5 << 20);
    m.fs.set_free_bytes(None);
    assert!(fs2::available_space(&m.mnt).unwrap() > 5 << 20);
}

fn differing_bits(a: &[u8], b: &[u8]) -> Vec<(usize, u32)> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, (x ^ y).count_ones()))
        .collect()
}

#[test]
fn faultfs_bit_flip_changes_exactly_one_bit() {
    let Some(m) = mount() else { return };
    let data: Vec<u8> = (0..64u8).collect();
    durable_file(&m, "seg", &data);
    let flip =
        m.fs.flip_bit(Path::new("seg"), FlipAt::Offset { offset: 10, bit: 3 })
            .unwrap();
    assert_eq!((flip.offset, flip.bit), (10, 3));
    let now = fs::read(m.p("seg")).unwrap();
    assert_eq!(now[10], data[10] ^ (1 << 3));
    assert_eq!(differing_bits(&data, &now), [(10, 1)]);

    // Seeded, and only inside the durable data: unsynced bytes are not a target.
    drop(append(&m.p("seg"), &[0u8; 100]));
    let before = fs::read(m.p("seg")).unwrap();
    let flip = m.fs.flip_bit(Path::new("seg"), FlipAt::Seeded(7)).unwrap();
    assert!(flip.offset < 64);
    let after = fs::read(m.p("seg")).unwrap();
    assert_eq!(differing_bits(&before, &after), [(flip.offset as usize, 1)]);
    assert!(
        m.fs.flip_bit(Path::new("seg"), FlipAt::Offset { offset: 64, bit: 0 })
            .is_err()
    );
    // A durable byte overwritten by an unsynced write: the flip goes to the durable image
    // (what a cut brings back), the unsynced byte the process reads is left alone.
    let f = OpenOptions::new().write(true).open(m.p("seg")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xff], 20).unwrap();
    let durable20 = after[20];
    m.fs.flip_bit(Path::new("seg"), FlipAt::Offset { offset: 20, bit: 0 })
        .unwrap();
    assert_eq!(fs::read(m.p("seg")).unwrap()[20], 0xff);
    let mut after = after;
    after[20] = durable20 ^ 1;
    // The flip is in the durable image: it survives a cut.
    m.fs.power_cut(Tear::None);
    assert_eq!(fs::read(m.p("seg")).unwrap(), after[..64]);
}

/// Not an assertion on speed: prints what a write+fsync loop through the mount does, the
/// cost the node's log appends pay.
#[test]
fn faultfs_write_fsync_throughput() {
    let Some(m) = mount() else { return };
    let mut f = File::create(m.p("bench")).unwrap();
    let record = [0x5au8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_millis() < 500 {
        f.write_all(&record).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "faultfs: {n} x (4 KiB write + fdatasync) in {secs:.2} s: {:.0} ops/s, {:.1} MiB/s",
        n as f64 / secs,
        (n * 4096) as f64 / secs / (1 << 20) as f64
    );
    assert_eq!(fs::metadata(m.p("bench")).unwrap().len(), n * 4096);
}

/// A real node on the fault filesystem: a post acknowledged before SIGKILL + power cut is
/// still there after the restart (posts are fsynced through the Raft log before the ack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faultfs_node_keeps_acknowledged_post_across_power_cut() {
    if !faultfs::require() {
        return;
    }
    let cluster = TestCluster::start_with(1, ClusterOptions::default().faultfs()).await;
    create_channel(&cluster, "power").await;
    let client = cluster.client(1);
    post_ok(&cluster, &client, "power", "before the cut", "cut-1").await;
    let report = cluster.power_cut(1, Tear::Seeded(13));
    eprintln!("cut: {report:?}");
    cluster.spawn(1);
    cluster.wait_ready(1).await;
    let texts = cluster
        .wait_until("the post on node 1", cluster.ready_timeout(), || async {
            let page = cluster
                .client(1)
                .list_messages("power", 0, 100, None)
                .await
                .map_err(|e| e.to_string())?;
            let texts: Vec<String> = page.messages.into_iter().map(|m| m.body).collect();
            if texts.is_empty() {
                return Err("no messages yet".to_string());
            }
            Ok(texts)
        })
        .await;
    assert_eq!(texts, ["before the cut"]);
}

/// SplitMix64 for the model test's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the test expects, independently of the filesystem's journal: per file identity its
/// current and durable contents; per directory its current and durable entries.
#[derive(Default)]
struct Model {
    now: Vec<Vec<u8>>,
    durable: Vec<Vec<u8>>,
    entries: [std::collections::BTreeMap<String, usize>; 2],
    durable_entries: [std::collections::BTreeMap<String, usize>; 2],
}

const DIRS: [&str; 2] = ["", "sub"];

fn rel(dir: usize, name: &str) -> String {
    if DIRS[dir].is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", DIRS[dir])
    }
}

/// Random operations (writes, truncations, fsyncs, creates, renames and unlinks within a
/// directory, directory fsyncs) checked against a model of what must survive: after every
/// cut the tree is exactly the durable part of the model.
#[test]
fn faultfs_random_operations_match_the_model() {
    let Some(m) = mount() else { return };
    fs::create_dir(m.p("sub")).unwrap();
    sync_dir(&m.mnt);
    for seed in 1..=6u64 {
        eprintln!("model test seed {seed}");
        let mut rng = Rng(seed);
        let mut model = Model {
            now: Vec::new(),
            durable: Vec::new(),
            entries: Default::default(),
            durable_entries: Default::default(),
        };
        // Start from what the previous seed left (all durable after its final cut).
        for (d, dir) in DIRS.iter().enumerate() {
            for e in fs::read_dir(m.p(dir)).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    let name = e.file_name().into_string().unwrap();
                    let data = fs::read(e.path()).unwrap();
                    model.now.push(data.clone());
                    model.durable.push(data);
                    model.entries[d].insert(name.clone(), model.now.len() - 1);
                    model.durable_entries[d].insert(name, model.now.len() - 1);
                }
            }
        }
        for step in 0..300 {
            let d = rng.below(2) as usize;
            let name = format!("f{}", rng.below(5));
            let path = m.p(&rel(d, &name));
            let id = model.entries[d].get(&name).copied();
            match (rng.below(9), id) {
                (0 | 1, Some(id)) => {
                    let len = model.now[id].len() as u64;
                    let off = rng.below(len + 8);
                    let data: Vec<u8> = (0..1 + rng.below(40)).map(|_| rng.next() as u8).collect();
                    let f = OpenOptions::new().write(true).open(&path).unwrap();
                    std::os::unix::fs::FileExt::write_all_at(&f, &data, off).unwrap();
                    let c = &mut model.now[id];
                    let end = off as usize + data.len();
                    if c.len() < end {
                        c.resize(end, 0);
                    }
                    c[off as usize..end].copy_from_slice(&data);
                }
                (2, Some(id)) => {
                    let len = rng.below(model.now[id].len() as u64 + 10);
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(len)
                        .unwrap();
                    model.now[id].resize(len as usize, 0);
                }
                (3, Some(id)) => {
                    let f = File::open(&path).unwrap();
                    if rng.below(2) == 0 {
                        f.sync_all().unwrap();
                    } else {
                        f.sync_data().unwrap();
                    }
                    model.durable[id] = model.now[id].clone();
                }
                (4, None) => {
                    File::create(&path).unwrap();
                    model.now.push(Vec::new());
                    model.durable.push(Vec::new());
                    model.entries[d].insert(name, model.now.len() - 1);
                }
                (5, Some(id)) => {
                    let to = format!("f{}", rng.below(5));
                    fs::rename(&path, m.p(&rel(d, &to))).unwrap();
                    model.entries[d].remove(&name);
                    model.entries[d].insert(to, id);
                }
                (6, Some(_)) => {
                    fs::remove_file(&path).unwrap();
                    model.entries[d].remove(&name);
                }
                (7, _) => {
                    sync_dir(&m.p(DIRS[d]));
                    model.durable_entries[d] = model.entries[d].clone();
                }
                (8, _) if rng.below(4) == 0 => {
                    m.fs.power_cut(Tear::None);
                    for (dd, dir) in DIRS.iter().enumerate() {
                        model.entries[dd] = model.durable_entries[dd].clone();
                        for id in model.entries[dd].values() {
                            model.now[*id] = model.durable[*id].clone();
                        }
                        let mut seen = std::collections::BTreeMap::new();
                        for e in fs::read_dir(m.p(dir)).unwrap() {
                            let e = e.unwrap();
                            if e.file_type().unwrap().is_file() {
                                let n = e.file_name().into_string().unwrap();
                                seen.insert(n, fs::read(e.path()).unwrap());
                            }
                        }
                        let want: std::collections::BTreeMap<String, Vec<u8>> = model.entries[dd]
                            .iter()
                            .map(|(n, id)| (n.clone(), model.durable[*id].clone()))
                            .collect();
                        assert_eq!(seen, want, "seed {seed} step {step} dir {dir:?}");
                    }
                }
                _ => {}
            }
        }
        // End every seed with everything durable, so the next one starts from a known tree.
        for (d, dir) in DIRS.iter().enumerate() {
            for (name, id) in &model.entries[d] {
                File::open(m.p(&rel(d, name))).unwrap().sync_all().unwrap();
                model.durable[*id] = model.now[*id].clone();
            }
            sync_dir(&m.p(dir));
        }
        m.fs.power_cut(Tear::None);
    }
}
