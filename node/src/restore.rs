//! `conclave restore`: creates the first node of a new cluster from an encrypted backup
//! (`ops::backup_file`), with the same workspace, CA, users and history; the others join with
//! tokens as usual (docs/operations.md, "Lost everything").
//!
//! Order: refuse a non-empty data dir, a workspace other than the backup's, and a KEK file
//! that differs from the backup's; decrypt; seed the data dir from the state stream
//! (`cluster::storage::seed`) while checking the stream against the manifest's digest (a
//! mismatch fails the seed before `snapshot.bin` is installed, and the data dir it created is
//! removed); write the blob section's blobs into the node's blob store, each checked against
//! its sha256 and made durable as an upload's are (`BlobStore::put`), the section checked
//! against the manifest (a failure there empties the data dir again); write the KEK; then
//! start the node in-process once, as `init` does, to issue this node's certificate from the
//! restored CA (the node's names may differ from the old cluster's) and to check that the root
//! fingerprint is the manifest's. So the node holds every live file's content before it first
//! serves; nodes that join later get the blobs from it through the background fetcher.
//!
//! Owns that procedure and its console output. Must never print or log the passphrase or the
//! secrets frame, nor write into a data dir that holds anything.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use api::snapshot_stream::{StreamError, StreamReader};
use cluster::ClusterNode;
use cluster::storage::seed::{self, SeedSpec};
use ops::backup_file::{BackupKey, Manifest};
use tokio_util::sync::CancellationToken;

use crate::ca::Kek;
use crate::config::Config;

/// What the state stream of a backup failed on while it was being seeded.
#[derive(Debug, thiserror::Error)]
pub enum StateCheckError {
    #[error("backup state stream: {0}")]
    Stream(#[from] StreamError),
    /// The stream is intact but not the one the manifest describes.
    #[error("the backup's state does not match its manifest: {0}")]
    Digest(String),
}

/// The backup's records, checked: the stream's own framing and checksum as they are read, then
/// its count and sha256 against the manifest at the end (an error there fails the seed).
struct CheckedRecords<R: Read> {
    reader: StreamReader<R>,
    manifest: Manifest,
    done: bool,
}

impl<R: Read> Iterator for CheckedRecords<R> {
    type Item = Result<(Vec<u8>, Vec<u8>), StateCheckError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.next_record() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                let summary = self.reader.summary()?;
                let sha = hex::encode(summary.sha256);
                let want = &self.manifest.state;
                // The sha256 covers every byte before the end record: with it and the count
                // equal, the length is too.
                if summary.records != want.records || sha != want.sha256 {
                    return Some(Err(StateCheckError::Digest(format!(
                        "manifest: {} records, sha256 {}; state: {} records, sha256 {sha}",
                        want.records, want.sha256, summary.records
                    ))));
                }
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }
}

/// What the offline part of a restore did.
pub struct Restored {
    pub manifest: Manifest,
    pub records: u64,
    pub dropped: u64,
    /// Blobs written into the blob store (count, content bytes).
    pub blobs: ops::backup_file::BlobsDigest,
}

/// The key from the arguments: an identity file, a passphrase file (first line) or
/// `CONCLAVE_BACKUP_PASSPHRASE`.
pub fn backup_key(
    passphrase_file: Option<&Path>,
    identity: Option<&Path>,
) -> anyhow::Result<BackupKey> {
    if let Some(id) = identity {
        return Ok(BackupKey::Identity(id.to_path_buf()));
    }
    let text = match passphrase_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("read the passphrase file {}", p.display()))?,
        None => std::env::var("CONCLAVE_BACKUP_PASSPHRASE").map_err(|_| {
            anyhow::anyhow!(
                "give --passphrase-file, --identity or CONCLAVE_BACKUP_PASSPHRASE to decrypt the backup"
            )
        })?,
    };
    let line = text.lines().next().unwrap_or_default().to_owned();
    Ok(BackupKey::Passphrase(line))
}

fn data_dir_is_empty(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("read {}", dir.display())),
    }
}

/// The KEK of the backup, written to the config's path unless an identical one is there.
fn install_kek(config: &Config, text: Option<&str>) -> anyhow::Result<()> {
    let path = config.kek_path();
    let Some(text) = text else {
        // A backup of a cluster without a CA: keep whatever the node has.
        return Ok(());
    };
    let kek = Kek::from_text(text).context("the backup's key-encryption key")?;
    if path.exists() {
        let existing = Kek::load(&path)
            .with_context(|| format!("the existing KEK file {}", path.display()))?;
        if existing.to_text().expose() != kek.to_text().expose() {
            bail!(
                "{} holds another key-encryption key than the backup's; move it away first",
                path.display()
            );
        }
        return Ok(());
    }
    kek.create_file(&path)
        .with_context(|| format!("write the KEK to {}", path.display()))
}

/// Checks before anything is written: an empty data dir, the same workspace, and a KEK file
/// that, if present, is the backup's.
fn preflight(config: &Config, manifest: &Manifest, kek: Option<&str>) -> anyhow::Result<()> {
    if !data_dir_is_empty(&config.data_dir)? {
        bail!(
            "{} is not empty: restore creates a new node; give it an empty data_dir",
            config.data_dir.display()
        );
    }
    if config.workspace.as_deref() != Some(manifest.workspace.as_str()) {
        bail!(
            "the backup is of workspace {:?}, the config names {:?}: set `workspace = {:?}`",
            manifest.workspace,
            config.workspace.as_deref().unwrap_or(""),
            manifest.workspace
        );
    }
    let path = config.kek_path();
    if let (Some(text), true) = (kek, path.exists()) {
        let ours = Kek::from_text(text).context("the backup's key-encryption key")?;
        let existing = Kek::load(&path)
            .with_context(|| format!("the existing KEK file {}", path.display()))?;
        if existing.to_text().expose() != ours.to_text().expose() {
            bail!(
                "{} holds another key-encryption key than the backup's; move it away first",
                path.display()
            );
        }
    }
    Ok(())
}

/// The offline part: decrypt, check, seed, write the KEK. Synchronous (the decrypted stream
/// is not `Send`); run it off the async runtime.
pub fn restore_offline(
    config: &Config,
    from: &Path,
    key: &BackupKey,
    keep_sessions: bool,
) -> anyhow::Result<Restored> {
    let file =
        std::fs::File::open(from).with_context(|| format!("open the backup {}", from.display()))?;
    let opened = ops::backup_file::open(file, key).context("open the backup")?;
    let manifest = opened.manifest;
    let kek_text = opened.secrets.kek.clone();
    preflight(config, &manifest, kek_text.as_deref())?;
    // Borrowed, so the blob section after the state stream can be read from where it stops.
    let mut plain = opened.state;
    let reader = StreamReader::new(&mut plain).context("the backup's state stream")?;
    let meta: cluster::types::SnapshotMeta =
        bincode::deserialize(reader.meta()).context("the backup's state meta")?;
    let Some(last_log_id) = meta.last_log_id else {
        bail!("the backup's state is empty (no log id)");
    };
    if last_log_id.index != manifest.index {
        bail!(
            "the backup's state is at index {}, its manifest says {}",
            last_log_id.index,
            manifest.index
        );
    }
    let spec = SeedSpec {
        node_id: config.node_id,
        info: config.cluster_config().info,
        last_log_id,
        keep_sessions,
    };
    let records = CheckedRecords {
        reader,
        manifest: manifest.clone(),
        done: false,
    };
    let created = !config.data_dir.exists();
    let seeded = match seed::seed(&config.data_dir, &spec, records) {
        Ok(s) => s,
        Err(e) => {
            undo(&config.data_dir, created);
            return Err(anyhow::Error::new(e).context("seed the data directory"));
        }
    };
    let blobs = match restore_blobs(&config.data_dir, &mut plain, &manifest) {
        Ok(b) => b,
        Err(e) => {
            // A node whose files point at blobs it lacks must not be left to start.
            undo(&config.data_dir, created);
            return Err(e);
        }
    };
    install_kek(config, kek_text.as_deref())?;
    Ok(Restored {
        manifest,
        records: seeded.records,
        dropped: seeded.dropped,
        blobs,
    })
}

/// Leaves the data dir as it was found: removed if the restore created it, else emptied
/// (preflight made sure it was empty).
fn undo(data_dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(data_dir);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Writes the blob section that follows the state stream in `plain` into the blob store of
/// `data_dir`: each blob checked against its sha256 and fsynced (file and directory) by
/// `BlobStore::put`, the section's count and total checked against the manifest.
fn restore_blobs(
    data_dir: &Path,
    plain: &mut dyn Read,
    manifest: &Manifest,
) -> anyhow::Result<ops::backup_file::BlobsDigest> {
    let store = cluster::blobs::BlobStore::open(data_dir)
        .with_context(|| format!("open the blob store in {}", data_dir.display()))?;
    ops::backup_file::read_blobs(plain, manifest, |sha, bytes| {
        store.put(sha, bytes).map(|_| ()).map_err(|e| {
            ops::backup_file::BackupError::Io(std::io::Error::other(format!(
                "write blob {sha}: {e}"
            )))
        })
    })
    .context("restore the backup's files")
}

/// The online part: starts the restored node once, checks the root fingerprint against the
/// manifest and issues this node's certificate (TLS on). Returns the root fingerprint.
pub async fn finish(config: &Config, restored: &Restored) -> anyhow::Result<Option<String>> {
    let Some(settings) = crate::ca_runtime::CaSettings::from_config(config) else {
        return Ok(None);
    };
    let cancel = CancellationToken::new();
    let node: Arc<ClusterNode> = ClusterNode::start(config.cluster_config(), cancel.clone())
        .await
        .context("start the restored node")?;
    let result = async {
        node.raft()
            .wait(Some(Duration::from_secs(30)))
            .state(openraft::ServerState::Leader, "restore: become leader")
            .await
            .context("the restored node did not become leader of its new cluster")?;
        // Loaded from the file just written, as `init` does: a Kek is never copied in memory.
        let kek = Kek::load(&config.kek_path()).ok();
        let service = crate::ca_runtime::CaService::new(node.clone(), kek, settings);
        // Read, never `ensure_initialized`: that would create a new CA if the backup had none.
        let (_, state) = service
            .load()
            .context("the restored certificate authority")?;
        let fingerprint = crate::ca::root_fingerprint(&state)
            .context("the restored root certificate")?;
        if !fingerprint.eq_ignore_ascii_case(&restored.manifest.root_fingerprint) {
            bail!(
                "the restored root CA fingerprint {fingerprint} is not the manifest's {}",
                restored.manifest.root_fingerprint
            );
        }
        if config.tls.is_some() {
            let kek = Kek::load(&config.kek_path())
                .context("TLS is on but no key-encryption key is usable")?;
            let serial = crate::node_cert::issue_at_init(config, &service, &kek)
                .await
                .context("issue this node's certificate from the restored CA")?;
            tracing::info!(node_id = config.node_id, serial = %serial, "node certificate issued from the restored CA");
        }
        Ok(Some(fingerprint))
    }
    .await;
    node.shutdown().await;
    result
}

#[allow(clippy::print_stdout)]
pub fn print_outcome(config: &Config, r: &Restored, fingerprint: Option<&str>) {
    let m = &r.manifest;
    println!("restored node {} from a backup", config.node_id);
    println!("  workspace:        {}", m.workspace);
    println!("  index:            {} (term {})", m.index, m.term);
    println!("  taken at (ms):    {}", m.created_at_ms);
    println!(
        "  root fingerprint: {}",
        fingerprint.unwrap_or(&m.root_fingerprint)
    );
    println!(
        "  records:          {} ({} dropped: sessions unless kept, join tokens, draining flags, login throttling)",
        r.records, r.dropped
    );
    if api::backup::has_blob_section(m.format) {
        println!(
            "  files:            {} blobs, {} bytes",
            r.blobs.count, r.blobs.bytes
        );
    } else {
        println!("  files:            none restored (a format 1 backup carries no file contents)");
    }
    println!("next:");
    println!("  1. start it: conclave run --config <this config>");
    println!(
        "  2. add nodes: conclavectl node join-token, then conclave join on each new node (empty data_dir)"
    );
    println!("  writes after index {} are not in this backup.", m.index);
}
