//! Helpers shared by the scenarios: creating a channel, posting until acknowledged, settling
//! messages whose outcome the clients did not learn, and raw HTTP calls for requests the ops
//! client is designed never to send.

use std::time::{Duration, Instant};

use chaos_tests::checks::Msg;
use chaos_tests::load::{LoadReport, post_until_acked};
use chaos_tests::{Load, TestCluster};
use serde_json::Value;

/// How long one test message may be retried before the test fails.
pub const POST_DEADLINE: Duration = Duration::from_secs(30);

/// `n` failover clients over all three nodes, each starting at a different node, so posters
/// spread over the cluster and every one of them survives the loss of any node.
pub fn spread_clients(cluster: &TestCluster, n: u64) -> Vec<ops::Client> {
    let orders = [[1, 2, 3], [2, 3, 1], [3, 1, 2]];
    (0..n)
        .map(|i| cluster.client_over(&orders[(i % 3) as usize]))
        .collect()
}

/// Waits until `load` has at least `n` acknowledgements sent after `since`.
pub async fn wait_acks(cluster: &TestCluster, load: &Load, since: Instant, n: usize, what: &str) {
    cluster
        .wait_until(what, Duration::from_secs(60), || async {
            let got = load.acks_after(since).len();
            if got >= n {
                Ok(())
            } else {
                Err(format!("{got} acknowledged"))
            }
        })
        .await
}

/// Creates `name` through any live node (retrying while the cluster is unavailable).
pub async fn create_channel(cluster: &TestCluster, name: &str) {
    cluster
        .wait_until(
            &format!("channel {name} created"),
            cluster.ready_timeout(),
            || async {
                match cluster.client_all().create_channel(name).await {
                    Ok(_) => Ok(()),
                    // An earlier attempt may have been applied although its answer was lost.
                    Err(e) if e.code() == Some("channel_exists") => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
}

/// Posts through `client` until acknowledged; fails the test (with logs) otherwise.
pub async fn post_ok(
    cluster: &TestCluster,
    client: &ops::Client,
    channel: &str,
    body: &str,
    id: &str,
) -> ops::PostOutcome {
    match post_until_acked(client, channel, body, id, Instant::now() + POST_DEADLINE).await {
        Ok((outcome, _)) => outcome,
        Err((e, attempts)) => cluster.fail(&format!(
            "post {id:?} to {channel} failed after {attempts} attempts: {e}"
        )),
    }
}

/// The acknowledged messages of `report`, plus every message whose outcome was unknown,
/// re-sent with its original client_msg_id until acknowledged (the resend settles whether the
/// first attempt was written: it returns the original, or writes it now).
pub async fn settle(cluster: &TestCluster, channel: &str, report: &LoadReport) -> Vec<Msg> {
    assert!(
        report.panics.is_empty(),
        "poster tasks panicked: {:?}",
        report.panics
    );
    let mut acked = report.acked_msgs();
    let client = cluster.client_all();
    for f in &report.failed {
        let out = post_ok(cluster, &client, channel, &f.body, &f.client_msg_id).await;
        acked.push(Msg::from(&out.message));
    }
    acked
}

/// Highest Raft index any ack reported, if the server sends `X-Conclave-Index`.
pub fn max_index(report: &LoadReport) -> Option<u64> {
    report.acks.iter().filter_map(|a| a.index).max()
}

pub fn max_seq(acked: &[Msg]) -> u64 {
    acked.iter().map(|m| m.seq).max().unwrap_or(0)
}

/// Raw HTTP client for malformed requests (generous timeout; no proxy).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

/// The value of one sample of node `id`'s `GET /metrics` (open: no `[metrics]` token), written
/// exactly as exposed (`name{labels}`); 0 when absent (a labelled counter not bumped yet).
pub async fn metric(cluster: &TestCluster, id: u64, series: &str) -> f64 {
    let body = cluster
        .http()
        .get(format!("{}/metrics", cluster.url(id)))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// A raw response: status and the error code of an error body (`{"error":{"code":..}}`).
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub code: Option<String>,
    pub body: String,
    pub index_header: Option<u64>,
}

pub async fn send(req: reqwest::RequestBuilder) -> Raw {
    let resp = req
        .send()
        .await
        .expect("request could not be sent or no response");
    let status = resp.status().as_u16();
    let index_header = resp
        .headers()
        .get("x-conclave-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = resp.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    Raw {
        status,
        code,
        body,
        index_header,
    }
}
