//! `GET /metrics` on a real three-node TLS cluster (issue 14, item 4): every node's output
//! passes `promtool check metrics`, the shipped alert rules pass `promtool check rules` and the
//! cases of `conclave-alerts.test.yml` (`promtool test rules`: they fire on faults only), the
//! scrape token is required (401 without, 200 with), the plain-HTTP port only redirects, and
//! the counters move as the test posts, logs in (good and bad password), holds a WebSocket
//! open, sends plain HTTP to the HTTPS port and kills the leader.
//!
//! Needs `promtool` (Debian's `prometheus` package): skips with a message without it, unless
//! `CHAOS_REQUIRE_PROMTOOL=1` (`.ci/run`) makes that a failure.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chaos_tests::cluster::{ADMIN_PASSWORD, ADMIN_USER};
use chaos_tests::{ClusterOptions, TestCluster};
use serde_json::json;

use crate::util::{create_channel, post_ok};

const REQUIRE_ENV: &str = "CHAOS_REQUIRE_PROMTOOL";
const SCRAPE_TOKEN: &str = "chaos-scrape-token-5f1e2d3c4b5a";
const POSTS: u64 = 12;

/// Whether promtool runs here; without it the test skips, or fails under [`REQUIRE_ENV`].
fn promtool_available() -> bool {
    let ok = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        chaos_tests::require::skip(
            "metrics",
            &[REQUIRE_ENV],
            "promtool is missing (apt-get install prometheus)",
        );
    }
    ok
}

/// `promtool check metrics` on `body`; panics with promtool's words if it objects.
fn promtool_check_metrics(node: u64, body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics rejects node {node}'s /metrics:\n{}{}\n--- body ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample written exactly `series` (name plus labels as exposed).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `sample`, or 0 for a labelled counter whose label value has not been seen yet.
fn count(body: &str, series: &str) -> f64 {
    sample(body, series).unwrap_or(0.0)
}

async fn scrape(cluster: &TestCluster, id: u64, token: Option<&str>) -> (u16, String) {
    let mut req = cluster.http().get(format!("{}/metrics", cluster.url(id)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("GET /metrics");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await.expect("metrics body");
    if status == 200 {
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "content type {content_type:?}"
        );
    }
    (status, body)
}

async fn scrape_ok(cluster: &TestCluster, id: u64) -> String {
    let (status, body) = scrape(cluster, id, Some(SCRAPE_TOKEN)).await;
    assert_eq!(status, 200, "node {id}: {body}");
    body
}

async fn login_status(cluster: &TestCluster, id: u64, password: &str) -> u16 {
    cluster
        .http()
        .post(format!("{}/api/v1/login", cluster.url(id)))
        .json(&json!({"username": ADMIN_USER, "password": password}))
        .send()
        .await
        .expect("POST /api/v1/login")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_move_with_the_cluster() {
    if !promtool_available() {
        return;
    }
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ops/dist/prometheus/conclave-alerts.yml"
    );
    let out = Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .expect("promtool check rules");
    assert!(
        out.status.success(),
        "promtool check rules {rules}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The rules fire on faults and stay quiet on a healthy cluster (series in the test file).
    let cases = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cluster/conclave-alerts.test.yml"
    );
    let out = Command::new("promtool")
        .args(["test", "rules", cases])
        .output()
        .expect("promtool test rules");
    assert!(
        out.status.success(),
        "promtool test rules {cases}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("scrape.token");
    std::fs::write(&token_file, format!("{SCRAPE_TOKEN}\n")).expect("write token file");
    // Snapshots every few entries, so the snapshot gauges have a snapshot to describe.
    let opts = ClusterOptions::default()
        .tls()
        .snapshot_logs_since_last(8)
        .top_level(
            "metrics",
            &format!(
                "{{ bearer_token_file = {:?} }}",
                token_file.display().to_string()
            ),
        );
    let cluster = TestCluster::start_with(3, opts).await;

    // The token: required on every node, a user's session token is not it.
    for id in cluster.ids() {
        let (status, body) = scrape(&cluster, id, None).await;
        assert_eq!(status, 401, "node {id} without a token: {body}");
        assert!(body.contains("\"unauthorized\""), "{body}");
        let (status, _) = scrape(&cluster, id, Some(cluster.admin_token())).await;
        assert_eq!(status, 401, "node {id} with an admin session token");
    }
    // The plain-HTTP port serves no metrics: it redirects to HTTPS like any other path.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("plain client");
    let r = plain
        .get(format!("{}/metrics", cluster.plain_url(1)))
        .bearer_auth(SCRAPE_TOKEN)
        .send()
        .await
        .expect("plain GET /metrics");
    assert_eq!(r.status().as_u16(), 301, "plain port");
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(location.starts_with("https://"), "redirect to {location:?}");

    // Every node's output is valid and says what the cluster is.
    let leader = cluster.wait_for_leader(&[]).await;
    let mut before = Vec::new();
    for id in cluster.ids() {
        let body = scrape_ok(&cluster, id).await;
        promtool_check_metrics(id, &body);
        for name in [
            "conclave_build_info{",
            "conclave_raft_term ",
            "conclave_raft_commit_index ",
            "conclave_raft_applied_lag_entries ",
            "conclave_raft_log_size_bytes ",
            "conclave_storage_free_bytes ",
            "conclave_tls_certificate_expiry_seconds{certificate=\"node\"} ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
        ] {
            assert!(body.contains(name), "node {id}: {name} missing\n{body}");
        }
        let days_left = count(
            &body,
            "conclave_tls_certificate_expiry_seconds{certificate=\"node\"}",
        ) / 86400.0;
        assert!(
            days_left > 1.0,
            "node {id}: certificate days left {days_left}"
        );
        before.push((id, body));
    }
    let leaders: f64 = before
        .iter()
        .map(|(_, b)| count(b, "conclave_raft_is_leader"))
        .sum();
    assert_eq!(leaders, 1.0, "exactly one node says it leads");

    // Writes, logins and a WebSocket move their counters.
    let ch = "metrics";
    create_channel(&cluster, ch).await;
    let client = cluster.client(leader);
    for i in 0..POSTS {
        post_ok(
            &cluster,
            &client,
            ch,
            &format!("m{i}"),
            &format!("metrics-{i}"),
        )
        .await;
    }
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    assert_eq!(login_status(&cluster, follower, ADMIN_PASSWORD).await, 200);
    assert_eq!(
        login_status(&cluster, follower, "not the password 0").await,
        401
    );
    let _ws = cluster
        .ws_connect(follower)
        .await
        .expect("wss to a follower");
    // Plain HTTP sent to the HTTPS port: a failed handshake, counted by reason.
    let https = cluster.url(follower);
    let addr = https.trim_start_matches("https://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect to HTTPS");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write plain HTTP");
    let mut buf = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut buf).await;
    let bad_handshakes = "conclave_tls_handshake_failures_total{reason=\"invalid_message\"}";
    cluster
        .wait_until(
            "the failed handshake is counted",
            cluster.ready_timeout(),
            || async {
                let body = scrape_ok(&cluster, follower).await;
                match count(&body, bad_handshakes) {
                    n if n >= 1.0 => Ok(()),
                    n => Err(format!("{bad_handshakes} = {n}")),
                }
            },
        )
        .await;

    let old = |id: u64| &before.iter().find(|(n, _)| *n == id).expect("node").1;
    let after_leader = scrape_ok(&cluster, leader).await;
    let committed = "conclave_write_commands_total{outcome=\"committed\"}";
    assert!(
        count(&after_leader, committed) >= count(old(leader), committed) + POSTS as f64,
        "commits on the leader: {} -> {}",
        count(old(leader), committed),
        count(&after_leader, committed)
    );
    assert!(
        count(&after_leader, "conclave_write_commit_seconds_count")
            > count(old(leader), "conclave_write_commit_seconds_count")
    );
    assert!(
        count(&after_leader, "conclave_raft_log_fsync_seconds_count")
            > count(old(leader), "conclave_raft_log_fsync_seconds_count")
    );
    let after_follower = scrape_ok(&cluster, follower).await;
    promtool_check_metrics(follower, &after_follower);
    // Snapshots are built in the background once the log passes the threshold.
    let with_snapshot = cluster
        .wait_until(
            "the leader reports its snapshot",
            cluster.ready_timeout(),
            || async {
                let body = scrape_ok(&cluster, leader).await;
                let index = count(&body, "conclave_raft_snapshot_index");
                let size = count(&body, "conclave_raft_snapshot_size_bytes");
                if index > 0.0 && size > 0.0 {
                    Ok(body)
                } else {
                    Err(format!("snapshot index {index}, size {size}"))
                }
            },
        )
        .await;
    for outcome in ["success", "invalid_credentials"] {
        let series = format!("conclave_logins_total{{outcome=\"{outcome}\"}}");
        assert!(
            count(&after_follower, &series) >= count(old(follower), &series) + 1.0,
            "{series} on node {follower}: {} -> {}",
            count(old(follower), &series),
            count(&after_follower, &series)
        );
    }
    assert!(
        count(&after_follower, "conclave_ws_connections") >= 1.0,
        "an open WebSocket on node {follower}"
    );
    assert!(
        count(&after_follower, "conclave_raft_applied_index")
            >= count(old(follower), "conclave_raft_applied_index") + POSTS as f64,
        "the follower applied the posts"
    );

    eprintln!(
        "leader {leader}: commits {} -> {}; follower {follower}: logins ok {} bad {}, ws {}",
        count(old(leader), committed),
        count(&after_leader, committed),
        count(
            &after_follower,
            "conclave_logins_total{outcome=\"success\"}"
        ),
        count(
            &after_follower,
            "conclave_logins_total{outcome=\"invalid_credentials\"}"
        ),
        count(&after_follower, "conclave_ws_connections"),
    );

    // The leader dies: each survivor sees a new leader and counts the change.
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(&[leader]).await;
    assert_ne!(new_leader, leader);
    for id in cluster.live_ids() {
        let was = count(old(id), "conclave_raft_leader_changes_total");
        let body = cluster
            .wait_until(
                &format!("node {id} counts the leader change"),
                cluster.ready_timeout(),
                || async {
                    let body = scrape_ok(&cluster, id).await;
                    if count(&body, "conclave_raft_leader_changes_total") > was {
                        Ok(body)
                    } else {
                        Err(format!("leader changes still {was}"))
                    }
                },
            )
            .await;
        promtool_check_metrics(id, &body);
        eprintln!(
            "node {id}: leader changes {was} -> {}",
            count(&body, "conclave_raft_leader_changes_total")
        );
        let leads = count(&body, "conclave_raft_is_leader");
        assert_eq!(
            leads == 1.0,
            id == new_leader,
            "node {id}: is_leader {leads}"
        );
    }
    cluster.stop_all().await;

    // The rules and the dashboard query what the nodes expose (a renamed metric would leave
    // an alert silent forever), and the dashboard's queries are valid PromQL.
    let mut seen: Vec<&str> = before.iter().map(|(_, b)| b.as_str()).collect();
    seen.extend([
        after_leader.as_str(),
        after_follower.as_str(),
        with_snapshot.as_str(),
    ]);
    let exposed = |name: &str| {
        seen.iter().any(|body| {
            body.lines().any(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
        })
    };
    let dashboard_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ops/dist/prometheus/conclave-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_file).expect("dashboard"))
            .expect("the dashboard is JSON");
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect();
    assert!(queries.len() >= 20, "{} dashboard queries", queries.len());
    let rules_text = std::fs::read_to_string(rules).expect("rules");
    for (what, text) in [
        ("alert rules", rules_text),
        ("dashboard", queries.join("\n")),
    ] {
        for name in metric_names(&text) {
            // No DNS server runs in this cluster: its counters have no series yet.
            if name.starts_with("conclave_dns_") {
                continue;
            }
            assert!(
                exposed(&name),
                "the {what} query {name}, which no node exposes"
            );
        }
    }
    let mut as_rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = serde_json::to_string(q).expect("quote");
        as_rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {q}\n"
        ));
    }
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, as_rules).expect("write dashboard queries");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool check rules (dashboard)");
    assert!(
        out.status.success(),
        "the dashboard's queries are not valid PromQL:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `conclave_*` / `process_*` metric name in a PromQL text.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["conclave_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}
