//! Backups against a real 3-node cluster with TLS on (`conclavectl backup`, `backup verify`,
//! `backup keygen`, `GET /api/v1/admin/backup`):
//! - `backup_while_posting`: a client keeps posting through node 1 while `conclavectl backup`
//!   (passphrase from a file) runs against node 3, and keeps being acknowledged during it; the
//!   file verifies offline; decrypted with `ops::backup_file::open` and read with the stream
//!   reader, it holds every message acknowledged at or below the manifest's index, byte for
//!   byte, no session key, the KEK and the cluster's root fingerprint; a wrong passphrase
//!   fails with one line, a short one is refused before anything is sent, the passphrase may
//!   come from `CONCLAVE_BACKUP_PASSPHRASE`; a backup to an age recipient (from `backup keygen`) with
//!   `--sessions` verifies with the identity and holds session keys; a flipped byte at seeded
//!   positions (age header, middle, last bytes) makes `backup verify` exit 1 with one line; a
//!   member gets 403, no token 401, and the plain port redirects the route (exit 2, no file
//!   left behind).
//!
//! Every wait polls with a deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use api::snapshot_stream::StreamReader;
use chaos_tests::{ClusterOptions, TestCluster};
use ops::backup_file::{self, BackupKey};
use ops::{ClientError, Role};

use super::ctl::{Ctl, Run, expect_failure, expect_ok};
use crate::util::create_channel;

const CH: &str = "backup-general";
/// The passphrase of [`take_backup`]'s backups.
pub(crate) const PASSPHRASE: &str = "a long backup passphrase for tests";
const MEMBER_PASSWORD: &str = "member-password-1";
const WAIT: Duration = Duration::from_secs(30);

/// One acknowledged post: its sequence, the Raft index that holds it, and its text.
#[derive(Debug, Clone)]
struct Acked {
    seq: u64,
    index: u64,
    text: String,
}

/// What a decrypted backup holds that the checks need: the manifest, the KEK, the messages of
/// [`CH`] by sequence (their stored values) and how many session keys the state has.
pub(crate) struct Decoded {
    pub(crate) manifest: backup_file::Manifest,
    pub(crate) kek: Option<String>,
    pub(crate) messages: HashMap<u64, Vec<u8>>,
    pub(crate) session_keys: usize,
}

/// `conclavectl backup --passphrase-file` (with [`PASSPHRASE`]) of the cluster through node
/// `id`, into `dir/name`: the run, the file and the passphrase file. For the restore scenarios
/// as well.
pub(crate) async fn take_backup(
    cluster: &TestCluster,
    ctl: &Ctl,
    id: u64,
    dir: &Path,
    name: &str,
) -> (Run, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let pass_file = dir.join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let out = dir.join(name);
    let run = ctl
        .run(&[
            "--server",
            &cluster.url(id),
            "backup",
            "--out",
            out.to_str().unwrap(),
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ])
        .await;
    (run, out, pass_file)
}

pub(crate) fn decode(path: &Path, key: &BackupKey) -> Decoded {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let opened = backup_file::open(file, key).unwrap_or_else(|e| panic!("open backup: {e}"));
    let mut reader = StreamReader::new(opened.state).unwrap_or_else(|e| panic!("state: {e}"));
    let prefix = format!("m/{CH}/").into_bytes();
    let mut messages = HashMap::new();
    let mut session_keys = 0;
    while let Some((key, value)) = reader
        .next_record()
        .unwrap_or_else(|e| panic!("state record: {e}"))
    {
        if let Some(seq) = key.strip_prefix(prefix.as_slice()) {
            let seq: [u8; 8] = seq.try_into().expect("message keys end in a u64");
            messages.insert(u64::from_be_bytes(seq), value);
        } else if [&b"s/"[..], b"si/", b"se/", b"su/"]
            .iter()
            .any(|p| key.starts_with(p))
        {
            session_keys += 1;
        }
    }
    Decoded {
        manifest: opened.manifest,
        kek: opened.secrets.kek,
        messages,
        session_keys,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_posting() {
    let bin = Ctl::locate();
    let cluster = TestCluster::start_with(3, ClusterOptions::default().tls()).await;
    let ctl = Ctl::new(bin, &cluster);
    let run = ctl.login(&cluster.url(3)).await;
    expect_ok(&cluster, &run);
    create_channel(&cluster, CH).await;
    let dir = cluster.root().join("backups");

    // A poster on node 1 that records every acknowledgement, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<Acked>::new()));
    let poster = {
        let (stop, acked, client) = (stop.clone(), acked.clone(), cluster.client(1));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let text = format!("backup message {i} {}", ops::new_client_msg_id());
                if let Ok(out) = client.post_message(CH, &text, &format!("bk-{i}")).await {
                    let index = out.index.expect("a post answers with its index");
                    acked.lock().unwrap().push(Acked {
                        seq: out.message.seq,
                        index,
                        text,
                    });
                }
            }
        })
    };
    let count = || acked.lock().unwrap().len();
    cluster
        .wait_until("the poster has 20 acknowledgements", WAIT, || async {
            if count() >= 20 {
                Ok(())
            } else {
                Err(format!("{} so far", count()))
            }
        })
        .await;

    // The backup, from node 3, while node 1 keeps taking posts.
    let before = count();
    let (run, out, pass_file) = take_backup(&cluster, &ctl, 3, &dir, "cluster.backup").await;
    let during = count() - before;
    let out_s = out.to_str().unwrap().to_owned();
    let pass_file_s = pass_file.to_str().unwrap().to_owned();
    let text = expect_ok(&cluster, &run);
    assert!(
        text.starts_with(&format!("backup written to {out_s}\n")),
        "{run}"
    );
    assert!(text.contains("sessions not included"), "{run}");
    assert!(
        during > 0,
        "no post was acknowledged while the backup ran: writes must keep flowing"
    );
    assert!(!dir.join("cluster.backup.partial").exists());
    stop.store(true, Ordering::SeqCst);
    poster.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    let run = ctl
        .run(&[
            "backup",
            "verify",
            &out_s,
            "--passphrase-file",
            &pass_file_s,
        ])
        .await;
    assert!(
        expect_ok(&cluster, &run).contains("OK, every record and blob checked"),
        "{run}"
    );

    // Every message acknowledged at or below the backup's index is in it, byte for byte.
    let decoded = decode(&out, &BackupKey::Passphrase(PASSPHRASE.into()));
    let m = &decoded.manifest;
    assert_eq!(m.served_by, 3);
    assert!(!m.includes_sessions);
    assert_eq!(decoded.session_keys, 0, "sessions are left out by default");
    let fingerprint = cluster.client(2).ca_fingerprint().await.unwrap();
    assert_eq!(m.root_fingerprint, fingerprint.fingerprint);
    assert!(
        decoded
            .kek
            .as_deref()
            .is_some_and(|k| k.starts_with("conclave-kek-v1")),
        "the backup carries the KEK"
    );
    let covered: Vec<&Acked> = acked.iter().filter(|a| a.index <= m.index).collect();
    assert!(
        covered.len() >= before,
        "every post acknowledged before the backup started is at or below its index {}: {} of {before}",
        m.index,
        covered.len()
    );
    for a in &covered {
        let value = decoded.messages.get(&a.seq).unwrap_or_else(|| {
            cluster.fail(&format!(
                "message #{} (index {}) acknowledged before the backup's index {} is missing",
                a.seq, a.index, m.index
            ))
        });
        assert!(
            contains(value, a.text.as_bytes()),
            "message #{} differs",
            a.seq
        );
    }

    // The passphrase from the environment works as well; a short one is refused up front.
    let run = ctl
        .run_env(
            &["backup", "verify", &out_s],
            &[("CONCLAVE_BACKUP_PASSPHRASE", PASSPHRASE)],
        )
        .await;
    expect_ok(&cluster, &run);
    let run = ctl
        .run_env(
            &["backup", "--out", &format!("{out_s}.short")],
            &[("CONCLAVE_BACKUP_PASSPHRASE", "too short")],
        )
        .await;
    let line = expect_failure(&cluster, &run, 2, "conclavectl: error: ");
    assert!(line.contains("at least 12"), "{run}");

    let wrong = dir.join("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase at all\n").unwrap();
    let run = ctl
        .run(&[
            "backup",
            "verify",
            &out_s,
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ])
        .await;
    let line = expect_failure(&cluster, &run, 1, "conclavectl: error: ");
    assert!(line.contains("cannot decrypt"), "{run}");

    // To an age recipient, with sessions, from node 2.
    let identity = dir.join("identity.txt");
    let run = ctl
        .run(&["backup", "keygen", "--out", identity.to_str().unwrap()])
        .await;
    let recipient = expect_ok(&cluster, &run)
        .lines()
        .find_map(|l| l.strip_prefix("recipient: "))
        .unwrap_or_else(|| panic!("keygen printed no recipient:\n{run}"))
        .to_owned();
    let out2 = dir.join("with-sessions.backup");
    let out2_s = out2.to_str().unwrap().to_owned();
    let run = ctl
        .run(&[
            "--server",
            &cluster.url(2),
            "backup",
            "--out",
            &out2_s,
            "--recipient",
            &recipient,
            "--sessions",
        ])
        .await;
    expect_ok(&cluster, &run);
    let id_s = identity.to_str().unwrap().to_owned();
    let run = ctl
        .run(&["backup", "verify", &out2_s, "--identity", &id_s])
        .await;
    expect_ok(&cluster, &run);
    let decoded = decode(&out2, &BackupKey::Identity(identity.clone()));
    assert!(decoded.manifest.includes_sessions);
    assert!(decoded.session_keys > 0, "--sessions keeps the sessions");
    assert!(
        decoded.messages.len() >= covered.len(),
        "a later backup holds at least as much"
    );

    // A flipped byte anywhere: the age header, the middle, the last bytes, seeded others.
    let bytes = std::fs::read(&out2).unwrap();
    let mut positions = vec![20, bytes.len() / 2, bytes.len() - 3];
    let mut seed: u64 = 14;
    for _ in 0..2 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        positions.push((seed >> 33) as usize % bytes.len());
    }
    for at in positions {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x04;
        let path = dir.join(format!("flipped-{at}.backup"));
        std::fs::write(&path, &damaged).unwrap();
        let run = ctl
            .run(&[
                "backup",
                "verify",
                path.to_str().unwrap(),
                "--identity",
                &id_s,
            ])
            .await;
        expect_failure(&cluster, &run, 1, "conclavectl: error: ");
    }

    // Admins only: a member gets 403, no token 401.
    cluster
        .client(1)
        .create_user("backup-member", MEMBER_PASSWORD, Role::Member)
        .await
        .unwrap();
    let member = cluster
        .login_client(2, "backup-member", MEMBER_PASSWORD)
        .await;
    match member.backup(false).await {
        Err(ClientError::Api { status: 403, .. }) => {}
        other => cluster.fail(&format!("a member's backup: {other:?}")),
    }
    let anonymous = cluster
        .http()
        .get(format!("{}/api/v1/admin/backup", cluster.url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // The plain port never serves it: the redirect is reported, and no file is left.
    let out3 = dir.join("plain.backup");
    let run = ctl
        .run(&[
            "--server",
            &cluster.plain_url(1),
            "backup",
            "--out",
            out3.to_str().unwrap(),
            "--passphrase-file",
            &pass_file_s,
        ])
        .await;
    let line = expect_failure(&cluster, &run, 2, "conclavectl: error: ");
    assert!(line.contains("redirects to https://"), "{run}");
    assert!(!out3.exists() && !dir.join("plain.backup.partial").exists());
}
