//! `conclave recover --force-new-cluster` after a cluster lost its majority for good, with real
//! processes and TLS on: three nodes, messages posted and acknowledged, then two nodes SIGKILLed
//! and their data dirs deleted. The survivor (the leader, which holds every acknowledged write)
//! is stopped (`recover` on it while it runs is refused); `recover` without the confirmation
//! flag is refused (exit code, one line, nothing changed); with it, the survivor's data dir is replaced by a one-voter seed (the old one kept
//! aside). Started again it serves writes alone; two fresh nodes join with tokens; every
//! acknowledged message is on all three (history checks), and new posts replicate.
//!
//! `conclave restore` from a backup taken with `conclavectl backup` of a 3-node TLS cluster:
//! the whole cluster is stopped and wiped (data dirs and the KEK file); restore into a non-empty
//! data dir is refused; restored into node 1, which is started, and two nodes join with tokens.
//! Every message acknowledged before the backup is there, identical, on all three; users log in
//! with their old passwords; old session tokens are refused; the root fingerprint is the same.
//! A backup while a live file's blob is on no node fails naming it and leaves no file. A file
//! of two chunks uploaded before the backup (and another deleted before it, whose blob the
//! backup must not carry) is in the backup's blob section, on node 1's disk as soon as the
//! restore returns, downloads byte-identical from node 1, and reaches node 3, which joined
//! afterwards, through the background fetcher (on its disk, then downloaded from it).

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use chaos_tests::{ClusterOptions, Msg, TestCluster, checks};

use crate::ctl::{Ctl, expect_ok};
use crate::files::{blob_path, content, sha};
use crate::util::{create_channel, max_seq, post_ok};

const WS: &str = "chat.recover.test";
const CH: &str = "survive";
const JOIN_DEADLINE: Duration = Duration::from_secs(90);

async fn run_recover(cluster: &TestCluster, id: u64, args: &[&str]) -> Output {
    run_conclave(cluster, id, "recover", args).await
}

/// Runs `conclave <sub> --config <node id's config> args...` with stdin closed.
async fn run_conclave(cluster: &TestCluster, id: u64, sub: &str, args: &[&str]) -> Output {
    let bin = chaos_tests::node::conclave_bin().unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    let config = cluster.node(id).spec.config_path.clone();
    let mut cmd = tokio::process::Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONCLAVE_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg(sub)
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => cluster.fail(&format!("run conclave {sub}: {e}")),
        Err(_) => cluster.fail(&format!("conclave {sub} did not finish within 60 s")),
    }
}

fn siblings(data_dir: &Path, prefix: &str) -> Vec<String> {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = data_dir.parent().unwrap_or(Path::new("."));
    std::fs::read_dir(parent)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}{prefix}")))
                .collect()
        })
        .unwrap_or_default()
}

/// Adds node `id` (a new extra node with `register`, else an existing one with an empty data
/// dir) with a join token from `survivor` and waits until `voters` is the membership there.
async fn join(cluster: &mut TestCluster, survivor: u64, id: u64, voters: &[u64], register: bool) {
    let token = cluster
        .client(survivor)
        .create_join_token(600)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create a join token: {e}")));
    if register {
        cluster
            .try_register_extra(id)
            .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    }
    let seed = cluster.api_addr(survivor).to_string();
    cluster
        .node(id)
        .spawn_join(&seed, &token.token)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    let want: Vec<u64> = voters.to_vec();
    cluster
        .wait_until(
            &format!("node {id} to join as a voter"),
            JOIN_DEADLINE,
            || async {
                if let Some(status) = cluster.node(id).exit_status() {
                    return Err(format!("node {id} exited ({status})"));
                }
                let v = cluster
                    .voters(survivor)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                if v == want {
                    Ok(())
                } else {
                    Err(format!("voters {v:?}"))
                }
            },
        )
        .await;
    cluster.wait_ready(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn force_new_cluster_on_the_last_survivor() {
    let opts = ClusterOptions::default()
        .top_level("workspace", &format!("\"{WS}\""))
        .tls();
    let mut cluster = TestCluster::start_with(3, opts).await;
    create_channel(&cluster, CH).await;
    let client = cluster.client_all();
    let mut acked: Vec<Msg> = Vec::new();
    for i in 0..30 {
        let out = post_ok(
            &cluster,
            &client,
            CH,
            &format!("before the loss {i}"),
            &format!("rc-{i}"),
        )
        .await;
        acked.push(Msg::from(&out.message));
    }
    // The leader holds every acknowledged (committed) entry: it is the survivor.
    let survivor = cluster.wait_for_leader(&[]).await;
    let lost: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != survivor).collect();
    for id in &lost {
        cluster.kill(*id);
        let dir = cluster.node(*id).spec.data_dir.clone();
        std::fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| cluster.fail(&format!("wipe {}: {e}", dir.display())));
    }
    // While it runs: refused, even with the confirmation.
    let out = run_recover(
        &cluster,
        survivor,
        &["--force-new-cluster", "--yes-the-other-nodes-are-gone"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("seems to be running"), "{stderr}");
    cluster.terminate(survivor).await;
    let data_dir = cluster.node(survivor).spec.data_dir.clone();

    // Without the confirmation: refused, one line, exit code 1, nothing moved.
    let out = run_recover(&cluster, survivor, &["--force-new-cluster"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("conclave: "))
        .unwrap_or_default();
    assert!(
        last.contains("--yes-the-other-nodes-are-gone"),
        "refusal names the flag: {last:?}"
    );
    for id in &lost {
        assert!(
            stdout.contains(&format!("node {id} voter")),
            "the summary lists the membership to drop, node {id}:\n{stdout}"
        );
    }
    assert!(stdout.contains("last log index"), "summary:\n{stdout}");
    assert!(
        siblings(&data_dir, ".before-recover-").is_empty(),
        "a refused recover changed nothing"
    );

    // With it.
    let out = run_recover(
        &cluster,
        survivor,
        &["--force-new-cluster", "--yes-the-other-nodes-are-gone"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "recover failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("join-token"), "next steps:\n{stdout}");
    assert_eq!(
        siblings(&data_dir, ".before-recover-").len(),
        1,
        "the old data dir is kept aside"
    );
    assert!(siblings(&data_dir, ".recover-staging").is_empty());

    // Alone, it serves writes.
    cluster.spawn(survivor);
    cluster.wait_ready(survivor).await;
    let alone = post_ok(&cluster, &cluster.client(survivor), CH, "alone", "rc-alone").await;
    acked.push(Msg::from(&alone.message));
    let voters = cluster
        .voters(survivor)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    assert_eq!(voters, vec![survivor]);

    // Two fresh nodes join with tokens.
    join(&mut cluster, survivor, 4, &sorted(&[survivor, 4]), true).await;
    join(&mut cluster, survivor, 5, &sorted(&[survivor, 4, 5]), true).await;
    let after = post_ok(
        &cluster,
        &cluster.client(4),
        CH,
        "after the joins",
        "rc-after",
    )
    .await;
    acked.push(Msg::from(&after.message));

    let ids = [survivor, 4, 5];
    let views = cluster
        .wait_converged(CH, &ids, None, max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v
}

const BOB_PASSWORD: &str = "bob-password-restored-1";
/// The channel of the restore test's files (kept apart from [`CH`], whose messages are counted).
const FILES_CH: &str = "restore-files";
/// ctl uploads in chunks of this size: a file one byte longer has two blobs.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// `conclavectl --json upload --channel FILES_CH path`: the file id and message seq.
async fn upload(cluster: &TestCluster, ctl: &Ctl, path: &Path) -> (String, u64) {
    let path = path.to_string_lossy().into_owned();
    let run = ctl
        .run(&["--json", "upload", "--channel", FILES_CH, &path])
        .await;
    let v: serde_json::Value = serde_json::from_str(expect_ok(cluster, &run))
        .unwrap_or_else(|e| cluster.fail(&format!("upload --json: {e}")));
    let id = v["message"]["attachments"][0]["id"]
        .as_str()
        .map(str::to_owned);
    let seq = v["message"]["seq"].as_u64();
    match (id, seq) {
        (Some(id), Some(seq)) => (id, seq),
        _ => cluster.fail(&format!("upload answered {v}")),
    }
}

/// `conclavectl --server <node id> download fid`: the bytes.
async fn download_from(cluster: &TestCluster, ctl: &Ctl, id: u64, fid: &str) -> Vec<u8> {
    let out = cluster.root().join(format!("download-{id}.bin"));
    let out_s = out.to_string_lossy().into_owned();
    let url = cluster.url(id);
    let run = ctl
        .run(&["--server", &url, "download", fid, "--out", &out_s])
        .await;
    expect_ok(cluster, &run);
    let bytes = std::fs::read(&out).unwrap_or_else(|e| cluster.fail(&format!("read {out_s}: {e}")));
    let _ = std::fs::remove_file(&out);
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_a_backup_into_a_new_cluster() {
    let ctl_bin = Ctl::locate();
    let opts = ClusterOptions::default()
        .top_level("workspace", &format!("\"{WS}\""))
        .tls();
    let mut cluster = TestCluster::start_with(3, opts).await;
    let ctl = Ctl::new(ctl_bin, &cluster);
    create_channel(&cluster, CH).await;
    cluster
        .client_all()
        .create_user("bob", BOB_PASSWORD, ops::Role::Member)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create bob: {e}")));
    let old_bob = cluster.login_client(1, "bob", BOB_PASSWORD).await;
    let old_admin = cluster.client(1);
    let client = cluster.client_all();
    let mut acked: Vec<Msg> = Vec::new();
    for i in 0..20 {
        let out = post_ok(
            &cluster,
            &client,
            CH,
            &format!("before the backup {i} \u{1F4BE}"),
            &format!("rs-{i}"),
        )
        .await;
        acked.push(Msg::from(&out.message));
    }
    let fp_before = cluster
        .client(1)
        .ca_fingerprint()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("fingerprint: {e}")))
        .fingerprint;

    // Files: one of two chunks that stays, one deleted before the backup (a tombstone, whose
    // blob the backup must not carry).
    expect_ok(&cluster, &ctl.login(&cluster.url(1)).await);
    create_channel(&cluster, FILES_CH).await;
    let data = content(UPLOAD_CHUNK + 4321, 7);
    let chunks = [sha(&data[..UPLOAD_CHUNK]), sha(&data[UPLOAD_CHUNK..])];
    let kept = cluster.root().join("kept.bin");
    std::fs::write(&kept, &data).unwrap();
    let (fid, _) = upload(&cluster, &ctl, &kept).await;
    let gone_data = b"deleted before the backup".to_vec();
    let gone = cluster.root().join("gone.txt");
    std::fs::write(&gone, &gone_data).unwrap();
    let (_, gone_seq) = upload(&cluster, &ctl, &gone).await;
    cluster
        .client_all()
        .delete_message(FILES_CH, gone_seq)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("delete the second file's message: {e}")));

    let pass = cluster.root().join("backup.pass");
    std::fs::write(&pass, "a long backup passphrase 42\n").unwrap();

    // A live file whose blob no node has any more: the backup fails and names it, and leaves
    // no file, rather than being taken without it.
    let lost_data = b"a file every node lost".to_vec();
    let lost_sha = sha(&lost_data);
    let lost = cluster.root().join("lost.txt");
    std::fs::write(&lost, &lost_data).unwrap();
    let (_, lost_seq) = upload(&cluster, &ctl, &lost).await;
    // Every copy first (the pushes beyond the majority finish in the background), then gone.
    cluster
        .wait_until(
            "the lost file's blob on every node",
            JOIN_DEADLINE,
            || async {
                if [1, 2, 3]
                    .iter()
                    .all(|id| blob_path(&cluster, *id, &lost_sha).is_file())
                {
                    Ok(())
                } else {
                    Err("not yet everywhere".to_owned())
                }
            },
        )
        .await;
    for id in [1, 2, 3] {
        std::fs::remove_file(blob_path(&cluster, id, &lost_sha)).unwrap();
    }
    let (run, refused, _) = crate::backup::take_backup(
        &cluster,
        &ctl,
        2,
        &cluster.root().join("refused"),
        "refused.backup",
    )
    .await;
    assert!(
        run.code != Some(0) && run.stderr.contains(&lost_sha),
        "a backup missing a live file's blob must fail naming it:\n{run}"
    );
    assert!(!refused.exists(), "no backup file left behind");
    cluster
        .client_all()
        .delete_message(FILES_CH, lost_seq)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("delete the lost file's message: {e}")));

    // The backup, through the CLI.
    let backup = cluster.root().join("cluster.backup");
    let out = ctl
        .run(&[
            "--server",
            &cluster.url(2),
            "backup",
            "--out",
            &backup.to_string_lossy(),
            "--passphrase-file",
            &pass.to_string_lossy(),
        ])
        .await;
    expect_ok(&cluster, &out);
    cluster.stop_all().await;
    let key = ops::backup_file::BackupKey::Passphrase("a long backup passphrase 42".into());
    let file = std::fs::File::open(&backup).unwrap();
    let manifest = ops::backup_file::open(file, &key)
        .unwrap_or_else(|e| cluster.fail(&format!("open the backup: {e}")))
        .manifest;
    assert_eq!(
        (manifest.blobs.count, manifest.blobs.bytes),
        (2, data.len() as u64),
        "the live file's two chunks, not the deleted file's blob"
    );

    // Into a non-empty data dir: refused.
    let args = [
        "--from",
        &*backup.to_string_lossy(),
        "--passphrase-file",
        &*pass.to_string_lossy(),
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_conclave(&cluster, 1, "restore", &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not empty"), "{stderr}");

    // A brand-new cluster: no data dir, no KEK file anywhere.
    for id in [1, 2, 3] {
        let dir = cluster.node(id).spec.data_dir.clone();
        std::fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| cluster.fail(&format!("wipe {}: {e}", dir.display())));
    }
    let kek = cluster.root().join("conclave.kek");
    let old_kek = std::fs::read(&kek).unwrap();
    std::fs::remove_file(&kek).unwrap();

    let out = run_conclave(&cluster, 1, "restore", &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "restore failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(WS), "workspace printed:\n{stdout}");
    assert!(
        stdout.to_lowercase().contains(&fp_before.to_lowercase()),
        "the root fingerprint {fp_before} printed:\n{stdout}"
    );
    assert_eq!(
        std::fs::read(&kek).unwrap(),
        old_kek,
        "the KEK from the backup"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kek).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "KEK file mode");
    }

    assert!(
        stdout.contains("2 blobs"),
        "the restored files printed:\n{stdout}"
    );
    for blob in &chunks {
        assert!(
            blob_path(&cluster, 1, blob).is_file(),
            "blob {blob} in node 1's store before it serves"
        );
    }
    assert!(!blob_path(&cluster, 1, &sha(&gone_data)).exists());

    cluster.spawn(1);
    cluster.wait_ready(1).await;
    // The admin logs in with the old password; its old session is gone.
    cluster.relogin_admin(1).await;
    expect_ok(&cluster, &ctl.login(&cluster.url(1)).await);
    assert!(
        download_from(&cluster, &ctl, 1, &fid).await == data,
        "the file from the restored node, byte-identical"
    );
    let refused = old_admin.list_channels().await;
    assert_eq!(
        refused.as_ref().err().and_then(|e| e.status()),
        Some(401),
        "old admin session: {refused:?}"
    );
    join(&mut cluster, 1, 2, &[1, 2], false).await;
    join(&mut cluster, 1, 3, &[1, 2, 3], false).await;
    // Node 3 joined after the restore: the background fetcher brings it the blobs.
    cluster
        .wait_until("the file's blobs on node 3", JOIN_DEADLINE, || async {
            let missing: Vec<&String> = chunks
                .iter()
                .filter(|blob| !blob_path(&cluster, 3, blob).is_file())
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet on node 3: {missing:?}"))
            }
        })
        .await;
    assert!(
        download_from(&cluster, &ctl, 3, &fid).await == data,
        "the file from a node that joined the restored cluster, byte-identical"
    );

    let views = cluster
        .wait_converged(CH, &[1, 2, 3], None, max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
    for v in &views {
        assert_eq!(
            v.messages.len(),
            acked.len(),
            "node {}: exactly the backed-up messages",
            v.node_id
        );
    }
    let refused = old_bob.list_channels().await;
    assert_eq!(
        refused.as_ref().err().and_then(|e| e.status()),
        Some(401),
        "old bob session: {refused:?}"
    );
    let bob = cluster.login_client(3, "bob", BOB_PASSWORD).await;
    bob.list_channels()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("bob after the restore: {e}")));
    let fp_after = cluster
        .client(2)
        .ca_fingerprint()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("fingerprint: {e}")))
        .fingerprint;
    assert_eq!(fp_after, fp_before, "same root CA");
    let after = post_ok(
        &cluster,
        &cluster.client(3),
        CH,
        "after the restore",
        "rs-after",
    )
    .await;
    acked.push(Msg::from(&after.message));
    let views = cluster
        .wait_converged(CH, &[1, 2, 3], None, max_seq(&acked))
        .await;
    cluster.check(checks::all_core(&acked, &views));
}
