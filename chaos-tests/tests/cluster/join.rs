//! Token-based join (`conclavectl node join-token`, `conclave join`) against a real 3-node
//! cluster without TLS: the joiner fetches the root over plain HTTP and pins it by the token's
//! fingerprint; no KEK and no node certificate travel (that needs HTTPS).
//!
//! `join_with_a_token`, in order, with node 5 as the machine that keeps failing:
//! - a garbage token: node 5's `conclave join` exits with "invalid join token";
//! - a token whose fingerprint is not the seed's root (the real id and secret otherwise):
//!   refused before anything is sent ("does not match the token's"); the token is still
//!   unused afterwards, which the next step proves by using it;
//! - the real token, but a wrong secret: refused, membership unchanged;
//! - the real token (created with `conclavectl node join-token --json`): node 4 joins through
//!   a follower, becomes a voter on every node, and replicates (a message posted through node
//!   1 is read on node 4, and one posted through node 4 is read on node 2);
//! - the same token again for node 5: "already used", membership still `[1, 2, 3, 4]`;
//! - a token with a 1 s lifetime, used once it has expired (polled on the clock): "expired",
//!   membership unchanged;
//! - a machine whose config names a member's id (4): "already a member", and its token stays
//!   unused: node 5 joins with it next.
//!
//! Every wait polls with a deadline.

use std::time::Duration;

use chaos_tests::wait::{Waiting, poll_until};
use chaos_tests::{ClusterOptions, TestCluster};
use serde_json::Value;

use super::ctl::{Ctl, expect_ok};
use super::util::{create_channel, post_ok};

const WS: &str = "chat.join.test";
const EXIT_DEADLINE: Duration = Duration::from_secs(30);
const JOIN_DEADLINE: Duration = Duration::from_secs(90);
const CH: &str = "joined";

/// Waits for node `id`'s `conclave join` to exit and returns its log (where stderr goes).
async fn failed_join(cluster: &TestCluster, id: u64) -> String {
    let node = cluster.node(id);
    let r = poll_until(
        &format!("node {id}'s conclave join to exit"),
        EXIT_DEADLINE,
        || async {
            match node.exit_status() {
                Some(status) if !status.success() => Ok(()),
                Some(status) => Err(Waiting::Abort(format!(
                    "exited with {status}, not a failure"
                ))),
                None => Err(Waiting::NotYet("still running".into())),
            }
        },
    )
    .await;
    if let Err(e) = r {
        cluster.fail(&format!("{e:#}"));
    }
    std::fs::read_to_string(&node.spec.log_path).unwrap_or_default()
}

/// The seed of `join_with_a_token` serves plain HTTP (on loopback): `conclave join` refuses it
/// unless told `--insecure`.
const INSECURE: &[&str] = &["--insecure"];

/// Starts node `id` with `conclave join ARGS` and expects it to fail with `message` in its
/// output.
async fn expect_refused_with(
    cluster: &TestCluster,
    id: u64,
    (seed, args): (&str, &[&str]),
    token: &str,
    message: &str,
) {
    let before = std::fs::read_to_string(&cluster.node(id).spec.log_path).unwrap_or_default();
    if let Err(e) = cluster.node(id).spawn_join_with(seed, token, args) {
        cluster.fail(&format!("start conclave join: {e:#}"));
    }
    let log = failed_join(cluster, id).await;
    let new = &log[before.len().min(log.len())..];
    let last = new
        .lines()
        .rev()
        .find(|l| l.starts_with("conclave: "))
        .unwrap_or_default();
    assert!(
        last.contains(message),
        "node {id}: expected a one-line error containing {message:?}, got {last:?}; output:\n{new}"
    );
    assert!(
        !new.contains(&token[token.len() - 16..]),
        "node {id}: the token's secret appears in the output"
    );
}

/// [`expect_refused_with`] `--insecure`, for the plain-HTTP seed.
async fn expect_refused(cluster: &TestCluster, id: u64, seed: &str, token: &str, message: &str) {
    expect_refused_with(cluster, id, (seed, INSECURE), token, message).await;
}

async fn voter_ids(cluster: &TestCluster, id: u64) -> Vec<u64> {
    cluster
        .voters(id)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("voters on node {id}: {e:#}")))
}

async fn member_count(cluster: &TestCluster, id: u64) -> usize {
    let v = cluster
        .cluster_json(id)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    v["nodes"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn join_with_a_token() {
    let bin = Ctl::locate();
    let opts = ClusterOptions::default().top_level("workspace", &format!("\"{WS}\""));
    let mut cluster = TestCluster::start_with(3, opts).await;
    let ctl = Ctl::new(bin, &cluster);
    let leader = cluster.wait_for_leader(&[]).await;
    let seed_id = if leader == 1 { 2 } else { 1 };
    let seed = cluster.api_addr(seed_id).to_string();
    let servers = cluster.plain_url(leader);
    expect_ok(&cluster, &ctl.login(&servers).await);
    create_channel(&cluster, CH).await;

    // The token, through the CLI.
    let out = ctl
        .run(&[
            "--server",
            &servers,
            "--json",
            "node",
            "join-token",
            "--ttl",
            "10m",
        ])
        .await;
    let created: Value = serde_json::from_str(expect_ok(&cluster, &out))
        .unwrap_or_else(|e| cluster.fail(&format!("join-token --json output: {e}")));
    let token = created["token"].as_str().unwrap_or_default().to_owned();
    let parts: Vec<&str> = token.split(':').collect();
    assert_eq!(parts.len(), 4, "token format: {token:?}");
    assert_eq!(parts[0], "conclave-join");
    let fp = cluster
        .client(seed_id)
        .ca_fingerprint()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("fingerprint: {e}")))
        .fingerprint;
    assert_eq!(
        parts[1],
        fp.replace(':', "").to_ascii_lowercase(),
        "the token embeds the root fingerprint"
    );
    assert_eq!(created["fingerprint"].as_str(), Some(fp.as_str()));

    cluster
        .try_register_extra(4)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    cluster
        .try_register_extra(5)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));

    // Garbage.
    expect_refused(
        &cluster,
        5,
        &seed,
        "conclave-join:nonsense",
        "invalid join token",
    )
    .await;
    // Another cluster's fingerprint: refused before anything is sent.
    let other_fp = if parts[1].starts_with('0') { "1" } else { "0" }.repeat(64);
    let wrong_fp = format!("conclave-join:{other_fp}:{}:{}", parts[2], parts[3]);
    expect_refused(&cluster, 5, &seed, &wrong_fp, "does not match the token's").await;
    // A wrong secret.
    let other_secret = if parts[3].starts_with('0') { "1" } else { "0" }.repeat(64);
    let wrong_secret = format!("conclave-join:{}:{}:{other_secret}", parts[1], parts[2]);
    expect_refused(&cluster, 5, &seed, &wrong_secret, "wrong secret").await;
    assert_eq!(voter_ids(&cluster, 1).await, vec![1, 2, 3]);
    assert_eq!(member_count(&cluster, 1).await, 3);
    // The real token, but the seed answers in plain HTTP only and `--insecure` is not given:
    // refused before the token is sent (a man in the middle must not downgrade the join), and
    // the token stays usable.
    expect_refused_with(
        &cluster,
        4,
        (&seed, &[]),
        &token,
        "answers in plain HTTP only",
    )
    .await;
    assert_eq!(member_count(&cluster, 1).await, 3);

    // The real token: node 4 joins through a follower and becomes a voter everywhere.
    cluster
        .node(4)
        .spawn_join_with(&seed, &token, INSECURE)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    cluster
        .wait_until(
            "node 4 to be a voter on every node",
            JOIN_DEADLINE,
            || async {
                if let Some(status) = cluster.node(4).exit_status() {
                    return Err(format!("node 4 exited ({status})"));
                }
                for id in [1, 2, 3, 4] {
                    let v = cluster.voters(id).await.map_err(|e| format!("{e:#}"))?;
                    if v != [1, 2, 3, 4] {
                        return Err(format!("node {id} lists voters {v:?}"));
                    }
                }
                Ok(())
            },
        )
        .await;
    cluster.wait_ready(4).await;
    let ca_pem = std::fs::read_to_string(cluster.node(4).spec.ca_pem_path())
        .unwrap_or_else(|e| cluster.fail(&format!("node 4's ca.pem: {e}")));
    assert!(ca_pem.contains("BEGIN CERTIFICATE"), "node 4's ca.pem");

    // It replicates both ways.
    post_ok(&cluster, &cluster.client(1), CH, "before-4", "join-1").await;
    post_ok(&cluster, &cluster.client(4), CH, "from-4", "join-2").await;
    for id in [4, 2] {
        cluster
            .wait_until(
                &format!("node {id} to have both messages"),
                JOIN_DEADLINE,
                || async {
                    let page = cluster
                        .client(id)
                        .list_messages(CH, 0, 100, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
                    if bodies.contains(&"before-4") && bodies.contains(&"from-4") {
                        Ok(())
                    } else {
                        Err(format!("node {id} has {bodies:?}"))
                    }
                },
            )
            .await;
    }

    // Reusing the token for node 5 fails and changes nothing.
    expect_refused(&cluster, 5, &seed, &token, "already used").await;
    assert_eq!(voter_ids(&cluster, 1).await, vec![1, 2, 3, 4]);
    assert_eq!(member_count(&cluster, 1).await, 4);

    // The security log: the admin's token creation once, the join and its completion once
    // each, on whichever nodes served them; the token's secret nowhere (checked at drop).
    cluster.remember_secret(parts[3]);
    let logs: String = (1..=5).map(|id| cluster.node(id).log_text()).collect();
    let count = |needle: &str| {
        logs.lines()
            .filter(|l| l.contains("security") && l.contains(needle))
            .count()
    };
    assert_eq!(count("join_token.created"), 1, "join_token.created lines");
    assert_eq!(
        count("route=\"/api/v1/join\""),
        1,
        "join_token.used for /api/v1/join"
    );
    assert_eq!(
        count("route=\"/api/v1/join/complete\""),
        1,
        "join_token.used for /api/v1/join/complete"
    );

    // An expired token.
    let short = cluster
        .client(leader)
        .create_join_token(1)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create a 1 s token: {e}")));
    let r = poll_until(
        "the 1 s token to expire",
        Duration::from_secs(10),
        || async {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            // A margin for the clocks of the seed and the leader (one machine here).
            if now > short.expires_ms + 200 {
                Ok(())
            } else {
                Err(Waiting::NotYet(format!(
                    "{} ms left",
                    short.expires_ms + 200 - now
                )))
            }
        },
    )
    .await;
    if let Err(e) = r {
        cluster.fail(&format!("{e:#}"));
    }
    expect_refused(&cluster, 5, &seed, &short.token, "expired").await;
    assert_eq!(voter_ids(&cluster, 1).await, vec![1, 2, 3, 4]);
    assert_eq!(member_count(&cluster, 1).await, 4);

    // A machine configured with a member's id (4) is refused, and the token stays unused:
    // node 5 then joins with it.
    let third = cluster
        .client(leader)
        .create_join_token(600)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create a token: {e}")));
    cluster
        .try_register_extra(6)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    let config6 = cluster.node(6).spec.config_path.clone();
    let text = std::fs::read_to_string(&config6).unwrap();
    std::fs::write(&config6, text.replace("node_id = 6", "node_id = 4")).unwrap();
    expect_refused(&cluster, 6, &seed, &third.token, "already a member").await;
    assert_eq!(voter_ids(&cluster, 1).await, vec![1, 2, 3, 4]);
    cluster
        .node(5)
        .spawn_join_with(&seed, &third.token, INSECURE)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    cluster
        .wait_until("node 5 to be a voter", JOIN_DEADLINE, || async {
            if let Some(status) = cluster.node(5).exit_status() {
                return Err(format!("node 5 exited ({status})"));
            }
            let v = cluster.voters(1).await.map_err(|e| format!("{e:#}"))?;
            if v == [1, 2, 3, 4, 5] {
                Ok(())
            } else {
                Err(format!("voters {v:?}"))
            }
        })
        .await;
}

/// The same join against a cluster with TLS on (`[tls]` on every node): the joiner reads the
/// root from the seed's plain port, pins it by the token's fingerprint, and talks HTTPS to the
/// address the plain port redirects to. It receives its certificate and the KEK (written 0600
/// to its own `kek_file`, equal to the cluster's), and joins over mutual TLS. A token with
/// another fingerprint is refused before anything is sent, here too.
#[tokio::test(flavor = "multi_thread")]
async fn join_over_https() {
    let opts = ClusterOptions::default()
        .top_level("workspace", &format!("\"{WS}\""))
        .tls();
    let mut cluster = TestCluster::start_with(3, opts).await;
    let leader = cluster.wait_for_leader(&[]).await;
    let seed_id = if leader == 1 { 2 } else { 1 };
    let seed = cluster.api_addr(seed_id).to_string();
    create_channel(&cluster, CH).await;
    let created = cluster
        .client(leader)
        .create_join_token(600)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create a token: {e}")));
    let parts: Vec<&str> = created.token.split(':').collect();
    assert_eq!(parts.len(), 4, "token format");
    cluster
        .try_register_extra(4)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    // Node 4 gets a KEK file of its own, so the test sees the one the join delivered.
    let kek4 = cluster.root().join("node-4.kek");
    let config4 = cluster.node(4).spec.config_path.clone();
    let mut text = std::fs::read_to_string(&config4).unwrap();
    text.push_str(&format!(
        "\n[ca]\nkek_file = {:?}\n",
        kek4.to_string_lossy()
    ));
    std::fs::write(&config4, text).unwrap();

    let other_fp = if parts[1].starts_with('0') { "1" } else { "0" }.repeat(64);
    let wrong_fp = format!("conclave-join:{other_fp}:{}:{}", parts[2], parts[3]);
    expect_refused(&cluster, 4, &seed, &wrong_fp, "does not match the token's").await;
    assert!(!kek4.exists(), "no KEK after a refused join");

    cluster
        .node(4)
        .spawn_join(&seed, &created.token)
        .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    cluster
        .wait_until(
            "node 4 to be a voter on every node",
            JOIN_DEADLINE,
            || async {
                if let Some(status) = cluster.node(4).exit_status() {
                    return Err(format!("node 4 exited ({status})"));
                }
                for id in [1, 2, 3, 4] {
                    let v = cluster.voters(id).await.map_err(|e| format!("{e:#}"))?;
                    if v != [1, 2, 3, 4] {
                        return Err(format!("node {id} lists voters {v:?}"));
                    }
                }
                Ok(())
            },
        )
        .await;
    cluster.wait_ready(4).await;
    let shared_kek = std::fs::read(cluster.root().join("conclave.kek")).unwrap();
    assert_eq!(
        std::fs::read(&kek4).unwrap(),
        shared_kek,
        "the delivered KEK"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kek4).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "KEK file mode");
    }
    let tls_dir = cluster.node(4).spec.data_dir.join("tls");
    for f in ["node-key.sealed", "node-chain.pem", "ca.pem"] {
        assert!(tls_dir.join(f).is_file(), "node 4 has tls/{f}");
    }
    let sealed = std::fs::read(tls_dir.join("node-key.sealed")).unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"),
        "the node key is sealed"
    );
    post_ok(&cluster, &cluster.client(4), CH, "over-tls", "join-tls-1").await;
}
