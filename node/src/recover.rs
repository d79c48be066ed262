//! `conclave recover --force-new-cluster`: turns the one surviving member of a cluster that
//! lost its majority for good into a one-voter cluster with the same state, identity and CA,
//! which new nodes then join with tokens (docs/operations.md, "Lost the majority for good").
//!
//! Order, so that an interruption at any point is finished or undone by running the same
//! command again: (1) refuse a running node and a non-voter, print what will be dropped and
//! get the operator's confirmation; (2) open the stores offline and apply every local log entry
//! beyond the applied index; (3) seed `<data_dir>.recover-staging` (this node's `tls/` copied in,
//! then `cluster::storage::seed`), then mark it complete (`RECOVER-READY`, atomic); (4) move the
//! old data dir aside to `<data_dir>.before-recover-<unix seconds>` (kept, never deleted) and the
//! staging dir into its place. A run that finds no data dir but a complete staging dir only does
//! (4); one that finds an incomplete staging dir deletes it and starts over from the old data
//! dir, which nothing before (4) changed beyond what any start does.
//!
//! Owns that procedure and its console output (it is an operator's command: the summary and the
//! next steps go to stdout). Must never run while the node runs, nor without the operator's
//! confirmation, nor delete the old data dir.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cluster::storage::fsutil;
use cluster::storage::recovery::StoreOptions;
use cluster::storage::seed::{self, SeedSpec};
use cluster::storage::survivor::{Found, Survivor};

use crate::config::Config;

/// In the staging dir once it is completely written (the swap may then go ahead).
const READY: &str = "RECOVER-READY";

/// `<data_dir><suffix>`, next to the data dir (same filesystem, so renames are atomic).
pub fn sibling(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut s = data_dir.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn store_options(config: &Config) -> StoreOptions {
    let c = config.cluster_config();
    StoreOptions {
        cache_bytes: c.sled_cache_bytes,
        segment_bytes: c.log_segment_bytes,
    }
}

/// Refuses when this node's process still runs: it holds its listening ports (sled's lock is
/// checked again by `Survivor::open`).
pub fn refuse_if_running(config: &Config) -> anyhow::Result<()> {
    let mut addrs = vec![config.api_addr, config.cluster_addr];
    if let Some(t) = &config.tls {
        addrs.push(t.https_addr);
    }
    for addr in addrs {
        if let Err(e) = std::net::TcpListener::bind(addr)
            && e.kind() == std::io::ErrorKind::AddrInUse
        {
            bail!(
                "{addr} is in use: node {} seems to be running; stop it first",
                config.node_id
            );
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_summary(config: &Config, found: &Found) {
    let idx =
        |l: Option<cluster::types::LogId>| l.map_or("none".to_owned(), |l| l.index.to_string());
    println!(
        "conclave recover --force-new-cluster on node {}",
        config.node_id
    );
    println!(
        "  workspace:        {}",
        config.workspace.as_deref().unwrap_or("(none)")
    );
    println!("  data dir:         {}", config.data_dir.display());
    println!("  last log index:   {}", idx(found.last_log_id));
    println!("  applied index:    {}", idx(found.applied));
    println!("  term:             {}", found.term());
    println!(
        "  membership to drop (the new cluster will have node {} alone):",
        config.node_id
    );
    for (id, info) in found.membership.membership().nodes() {
        let role = if found.is_voter(*id) {
            "voter"
        } else {
            "learner"
        };
        let me = if *id == config.node_id {
            " (this node)"
        } else {
            ""
        };
        println!("    node {id} {role} {info}{me}");
    }
    println!(
        "WARNING: writes that only the lost nodes had (index above {}) are lost for good. The other",
        idx(found.last_log_id)
    );
    println!(
        "nodes must never be started again with their old data: they would form a second cluster."
    );
}

/// The operator's confirmation: the flag, or the workspace name typed on a terminal.
#[allow(clippy::print_stdout)]
fn confirm(config: &Config, flag: bool) -> anyhow::Result<()> {
    if flag {
        return Ok(());
    }
    let expected = config
        .workspace
        .clone()
        .unwrap_or_else(|| format!("node{}", config.node_id));
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to force a new cluster without confirmation: pass --yes-the-other-nodes-are-gone once you are sure the other nodes are gone for good"
        );
    }
    print!("type `{expected}` to confirm that the other nodes are gone for good: ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != expected {
        bail!("confirmation did not match; nothing was changed");
    }
    Ok(())
}

/// Copies this node's identity (`tls/`) into the staging dir, durably.
fn copy_identity(from: &Path, to: &Path) -> anyhow::Result<()> {
    let src = from.join(crate::node_cert::TLS_DIR);
    if !src.is_dir() {
        return Ok(());
    }
    let dst = to.join(crate::node_cert::TLS_DIR);
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    fsutil::create_dir_all_durable(&dst, &mut builder)?;
    for de in std::fs::read_dir(&src)? {
        let de = de?;
        if !de.file_type()?.is_file() {
            continue;
        }
        let target = dst.join(de.file_name());
        // fs::copy keeps the mode (0600 for the sealed key).
        std::fs::copy(de.path(), &target)
            .with_context(|| format!("copy {}", de.path().display()))?;
        fsutil::sync_file(&target)?;
    }
    fsutil::sync_dir(&dst)?;
    Ok(())
}

/// Step (4): old data dir aside (if still there), staging into place, marker removed.
/// Returns where the old data dir went, if this call moved it.
fn swap(data_dir: &Path, staging: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut moved = None;
    if data_dir.exists() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = sibling(data_dir, &format!(".before-recover-{secs}"));
        fsutil::rename_durable(data_dir, &aside)
            .with_context(|| format!("move {} aside", data_dir.display()))?;
        moved = Some(aside);
    }
    fsutil::rename_durable(staging, data_dir)
        .with_context(|| format!("move {} into place", staging.display()))?;
    std::fs::remove_file(data_dir.join(READY))?;
    fsutil::sync_dir(data_dir)?;
    Ok(moved)
}

#[allow(clippy::print_stdout)]
fn print_next(config: &Config, moved: Option<&Path>, index: Option<u64>) {
    println!();
    if let Some(i) = index {
        println!(
            "node {} is now the only member of its cluster, at index {i}.",
            config.node_id
        );
    } else {
        println!(
            "node {} is now the only member of its cluster.",
            config.node_id
        );
    }
    if let Some(m) = moved {
        println!(
            "the old data directory was kept at {} (delete it once the cluster is healthy again)",
            m.display()
        );
    }
    println!("next:");
    println!("  1. start it: conclave run --config <this config>");
    println!(
        "  2. issue a join token per new node: conclavectl node join-token, then conclave join on each new node"
    );
    println!(
        "  3. `conclavectl node remove` is not needed for the dropped nodes; wipe their disks, never start them again"
    );
}

/// `conclave recover --force-new-cluster`.
pub async fn force_new_cluster(config: Config, yes: bool) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let staging = sibling(&data_dir, ".recover-staging");
    if !data_dir.exists() {
        if staging.join(READY).exists() {
            // Interrupted between the two renames of the swap: finish it.
            swap(&data_dir, &staging)?;
            tracing::warn!(node_id = config.node_id, dir = %data_dir.display(), "finished an interrupted force-new-cluster");
            print_next(&config, None, None);
            return Ok(());
        }
        bail!("{} does not exist: nothing to recover", data_dir.display());
    }
    refuse_if_running(&config)?;
    let mut survivor = Survivor::open(&data_dir, store_options(&config))
        .await
        .with_context(|| format!("open {}", data_dir.display()))?;
    let found = survivor.found.clone();
    print_summary(&config, &found);
    if !found.is_voter(config.node_id) {
        bail!(
            "node {} is not a voter of the last membership: only a voter may hold every committed write",
            config.node_id
        );
    }
    confirm(&config, yes)?;
    if staging.exists() {
        // An earlier run stopped before the staging dir was complete.
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("remove the incomplete {}", staging.display()))?;
    }
    let applied = survivor
        .apply_local_log()
        .await
        .context("apply the local log")?
        .context("this node has applied nothing")?;
    copy_identity(&data_dir, &staging)?;
    let spec = SeedSpec {
        node_id: config.node_id,
        info: config.cluster_config().info,
        last_log_id: applied,
        keep_sessions: true,
    };
    let records = survivor.records();
    let to = staging.clone();
    let seeded = tokio::task::spawn_blocking(move || seed::seed(&to, &spec, records))
        .await
        .context("seed task")??;
    survivor.close().await?;
    fsutil::write_atomic(&staging.join(READY), b"complete\n")?;
    let moved = swap(&data_dir, &staging)?;
    tracing::warn!(
        node_id = config.node_id,
        index = applied.index,
        records = seeded.records,
        dropped = seeded.dropped,
        "forced a new one-voter cluster"
    );
    print_next(&config, moved.as_deref(), Some(applied.index));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn staged(root: &Path) -> (PathBuf, PathBuf) {
        let data = root.join("data");
        let staging = sibling(&data, ".recover-staging");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("new"), b"n").unwrap();
        std::fs::write(staging.join(READY), b"complete\n").unwrap();
        (data, staging)
    }

    /// The swap keeps the old data dir aside and leaves no marker.
    #[test]
    fn swap_moves_the_old_dir_aside() {
        let root = tempfile::tempdir().unwrap();
        let (data, staging) = staged(root.path());
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("old"), b"o").unwrap();
        let aside = swap(&data, &staging).unwrap().unwrap();
        assert!(aside.join("old").is_file());
        assert!(data.join("new").is_file());
        assert!(!data.join(READY).exists());
        assert!(!staging.exists());
    }

    /// Interrupted between the two renames: the rerun's swap only moves staging into place.
    #[test]
    fn swap_finishes_an_interrupted_one() {
        let root = tempfile::tempdir().unwrap();
        let (data, staging) = staged(root.path());
        assert_eq!(swap(&data, &staging).unwrap(), None);
        assert!(data.join("new").is_file());
        assert!(!data.join(READY).exists());
    }
}
