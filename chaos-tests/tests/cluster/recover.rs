//! `conclave recover --force-new-cluster` after a cluster lost its majority for good, with real
//! processes and TLS on: three nodes, messages posted and acknowledged, then two nodes SIGKILLed
//! and their data dirs deleted. The survivor (the leader, which holds every acknowledged write)
//! is stopped; `recover` without the confirmation flag is refused (exit code, one line, nothing
//! changed); with it, the survivor's data dir is replaced by a one-voter seed (the old one kept
//! aside). Started again it serves writes alone; two fresh nodes join with tokens; every
//! acknowledged message is on all three (history checks), and new posts replicate.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use chaos_tests::{ClusterOptions, Msg, TestCluster, checks};

use crate::util::{create_channel, max_seq, post_ok};

const WS: &str = "chat.recover.test";
const CH: &str = "survive";
const JOIN_DEADLINE: Duration = Duration::from_secs(90);

async fn run_recover(cluster: &TestCluster, id: u64, args: &[&str]) -> Output {
    let bin = chaos_tests::node::conclave_bin().unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    let config = cluster.node(id).spec.config_path.clone();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("recover")
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => cluster.fail(&format!("run conclave recover: {e}")),
        Err(_) => cluster.fail("conclave recover did not finish within 60 s"),
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

/// Adds node `id` with a join token from the survivor and waits until `voters` is the
/// membership on the survivor.
async fn join(cluster: &mut TestCluster, survivor: u64, id: u64, voters: &[u64]) {
    let token = cluster
        .client(survivor)
        .create_join_token(600)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create a join token: {e}")));
    cluster
        .try_register_extra(id)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
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
    join(&mut cluster, survivor, 4, &sorted(&[survivor, 4])).await;
    join(&mut cluster, survivor, 5, &sorted(&[survivor, 4, 5])).await;
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
