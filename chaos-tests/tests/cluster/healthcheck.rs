//! `conclave healthcheck --config FILE` (the container image's HEALTHCHECK) against real
//! processes: exit 0 for a ready node; for a drained node (not ready on purpose) and for a
//! killed one, exit 1 with one line on stderr saying why, within its 2 s budget.

use std::time::{Duration, Instant};

use chaos_tests::TestCluster;
use chaos_tests::node::conclave_bin;

/// Runs the subcommand against node `id`'s own config: (success, stderr, how long it took).
fn healthcheck(cluster: &TestCluster, id: u64) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut cmd = std::process::Command::new(conclave_bin().unwrap());
    cmd.args(["healthcheck", "--config"])
        .arg(&cluster.node(id).spec.config_path);
    // Every CONCLAVE_* variable is a config override to the server (an unknown one is an
    // error), and CI exports some for the tests themselves (CONCLAVE_DIST, CONCLAVE_BIN).
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONCLAVE_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_zero_only_for_a_ready_node() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_all_ready().await;
    for id in 1..=3 {
        // Polled: right after start a node's readiness can still flip while it catches up.
        cluster
            .wait_until(
                &format!("healthcheck of node {id} to pass"),
                Duration::from_secs(30),
                || async {
                    match healthcheck(&cluster, id) {
                        (true, err, _) if err.is_empty() => Ok(()),
                        (true, err, _) => Err(format!("exit 0 but printed {err:?}")),
                        (false, err, _) => Err(err),
                    }
                },
            )
            .await;
    }

    // Drained: serving, but out of /readyz on purpose, so unhealthy.
    cluster.client_all().drain_node(2).await.unwrap();
    cluster
        .wait_until("node 2 drained", Duration::from_secs(30), || async {
            if cluster.readyz(2).await {
                Err("still ready".to_string())
            } else {
                Ok(())
            }
        })
        .await;
    let (ok, err, _) = healthcheck(&cluster, 2);
    assert!(!ok, "a drained node must not be healthy");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("not ready (HTTP 503)") && err.contains("draining"),
        "{err}"
    );
    cluster.client_all().undrain_node(2).await.unwrap();
    cluster.wait_ready(2).await;
    assert!(
        healthcheck(&cluster, 2).0,
        "undrained node 2 is healthy again"
    );

    // Dead: nothing answers.
    cluster.kill(3);
    let (ok, err, took) = healthcheck(&cluster, 3);
    assert!(!ok, "a killed node must not be healthy");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("no answer"), "{err}");
    assert!(took < Duration::from_secs(5), "healthcheck took {took:?}");
}
