//! Bad input is refused with the documented status and error code, and a refused request
//! writes nothing: after every refusal a sentinel message must get exactly the next seq on
//! every node, and the channel and user lists must be unchanged. Requests go to the leader and
//! to a follower (which would forward a write). Expired tokens are checked on a cluster whose
//! sessions last one second.

use std::collections::BTreeSet;

use chaos_tests::{ADMIN_PASSWORD, ADMIN_USER, ClusterOptions, TestCluster};
use serde_json::json;

use crate::util::{Raw, create_channel, http, post_ok, send};

const CH: &str = "inputs";

/// What the cluster held after the last accepted write.
struct Baseline {
    seq: u64,
    channels: BTreeSet<String>,
    users: BTreeSet<String>,
}

async fn channel_names(cluster: &TestCluster, id: u64) -> BTreeSet<String> {
    let list = cluster.client(id).list_channels().await;
    list.unwrap_or_else(|e| cluster.fail(&format!("list channels on node {id}: {e}")))
        .into_iter()
        .map(|c| c.name)
        .collect()
}

async fn user_names(cluster: &TestCluster, id: u64) -> BTreeSet<String> {
    let list = cluster.client(id).list_users().await;
    list.unwrap_or_else(|e| cluster.fail(&format!("list users on node {id}: {e}")))
        .into_iter()
        .map(|u| u.username)
        .collect()
}

impl Baseline {
    async fn take(cluster: &TestCluster) -> Baseline {
        let seq = cluster
            .try_last_seq(1, CH, None)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
        Baseline {
            seq,
            channels: channel_names(cluster, 1).await,
            users: user_names(cluster, 1).await,
        }
    }

    /// Fails unless `what` wrote nothing: a fresh message gets seq + 1 on every node and the
    /// channel and user lists are unchanged on every node.
    async fn expect_nothing_written(&mut self, cluster: &TestCluster, what: &str) {
        let id = ops::new_client_msg_id();
        let out = post_ok(
            cluster,
            &cluster.client_all(),
            CH,
            &format!("sentinel after {what}"),
            &id,
        )
        .await;
        assert_eq!(
            out.message.seq,
            self.seq + 1,
            "{what}: a message was written (sentinel got seq {})",
            out.message.seq
        );
        self.seq = out.message.seq;
        for node in cluster.ids() {
            let page = cluster
                .client(node)
                .list_messages(CH, self.seq - 1, 10, out.index)
                .await;
            let page = page.unwrap_or_else(|e| cluster.fail(&format!("list on node {node}: {e}")));
            let seqs: Vec<(u64, &str)> = page
                .messages
                .iter()
                .map(|m| (m.seq, m.client_msg_id.as_str()))
                .collect();
            assert_eq!(
                seqs,
                vec![(self.seq, id.as_str())],
                "{what}: node {node} disagrees about the sentinel"
            );
            assert_eq!(
                channel_names(cluster, node).await,
                self.channels,
                "{what}: channels changed on node {node}"
            );
            assert_eq!(
                user_names(cluster, node).await,
                self.users,
                "{what}: users changed on node {node}"
            );
        }
    }
}

fn expect(r: &Raw, status: u16, code: &str, what: &str) {
    assert_eq!(
        (r.status, r.code.as_deref()),
        (status, Some(code)),
        "{what}: expected {status} {code}, got {} body {:?}",
        r.status,
        r.body.chars().take(300).collect::<String>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input() {
    let cluster = TestCluster::start(3).await;
    create_channel(&cluster, CH).await;
    let mut base = Baseline::take(&cluster).await;
    let leader = cluster.wait_for_leader(&[]).await;
    let follower = cluster.a_follower().await;
    let token = cluster.admin_token().to_owned();
    let http = http();

    for node in [leader, follower] {
        let url = cluster.url(node);
        let post_url = format!("{url}/api/v1/channels/{CH}/messages");
        let post_json = |body: &'static str| {
            http.post(&post_url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body)
        };
        let post_msg = |v: serde_json::Value| http.post(&post_url).bearer_auth(&token).json(&v);

        let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
            (
                "truncated JSON",
                post_json(r#"{"body": "hi", "client_msg_id": "#),
                400,
                "invalid_json",
            ),
            ("not JSON", post_json("body=hi"), 400, "invalid_json"),
            (
                "wrong type",
                post_json(r#"{"body": 5, "client_msg_id": "x1"}"#),
                400,
                "invalid_json",
            ),
            (
                "missing field",
                post_json(r#"{"client_msg_id": "x2"}"#),
                400,
                "invalid_json",
            ),
            (
                "unknown field",
                post_json(r#"{"body": "b", "client_msg_id": "x3", "extra": 1}"#),
                400,
                "invalid_json",
            ),
            (
                "unknown channel",
                http.post(format!("{url}/api/v1/channels/no-such-channel/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"body": "hi", "client_msg_id": "x4"})),
                404,
                "channel_not_found",
            ),
            (
                "empty body",
                post_msg(json!({"body": "", "client_msg_id": "x5"})),
                400,
                "invalid_request",
            ),
            (
                "whitespace body",
                post_msg(json!({"body": " \n\t  ", "client_msg_id": "x6"})),
                400,
                "invalid_request",
            ),
            (
                "16385-byte body",
                post_msg(json!({"body": "x".repeat(16_385), "client_msg_id": "x7"})),
                400,
                "invalid_request",
            ),
            (
                "client_msg_id with a space",
                post_msg(json!({"body": "b", "client_msg_id": "a b"})),
                400,
                "invalid_request",
            ),
            (
                "65-char client_msg_id",
                post_msg(json!({"body": "b", "client_msg_id": "i".repeat(65)})),
                400,
                "invalid_request",
            ),
            (
                "request over 65536 bytes",
                post_msg(json!({"body": "y".repeat(70_000), "client_msg_id": "x8"})),
                413,
                "payload_too_large",
            ),
            (
                "wrong password",
                http.post(format!("{url}/api/v1/login"))
                    .json(&json!({"username": ADMIN_USER, "password": "not-the-password"})),
                401,
                "invalid_credentials",
            ),
            (
                "unknown user",
                http.post(format!("{url}/api/v1/login"))
                    .json(&json!({"username": "nobody-here", "password": "whatever-password"})),
                401,
                "invalid_credentials",
            ),
            (
                "missing token",
                http.post(&post_url)
                    .json(&json!({"body": "b", "client_msg_id": "x9"})),
                401,
                "unauthorized",
            ),
            (
                "garbage token",
                http.post(&post_url)
                    .bearer_auth("garbage")
                    .json(&json!({"body": "b", "client_msg_id": "x10"})),
                401,
                "unauthorized",
            ),
            (
                "token altered in its last character",
                http.post(&post_url)
                    .bearer_auth(altered(&token))
                    .json(&json!({"body": "b", "client_msg_id": "x11"})),
                401,
                "unauthorized",
            ),
            (
                "non-bearer authorization",
                http.post(&post_url)
                    .header("authorization", format!("Token {token}"))
                    .json(&json!({"body": "b", "client_msg_id": "x12"})),
                401,
                "unauthorized",
            ),
            (
                "missing token on a read",
                http.get(format!("{url}/api/v1/me")),
                401,
                "unauthorized",
            ),
        ];
        for (what, req, status, code) in cases {
            let what = format!("{what} (node {node})");
            expect(&send(req).await, status, code, &what);
            base.expect_nothing_written(&cluster, &what).await;
        }
        // The same reads on the unknown channel: 404 as well.
        let r = send(
            http.get(format!("{url}/api/v1/channels/no-such-channel"))
                .bearer_auth(&token),
        )
        .await;
        expect(
            &r,
            404,
            "channel_not_found",
            &format!("get unknown channel (node {node})"),
        );

        // The limits are exact: a 16,384-byte body is accepted.
        let id = ops::new_client_msg_id();
        let r = send(post_msg(
            json!({"body": "z".repeat(16_384), "client_msg_id": id}),
        ))
        .await;
        assert_eq!(r.status, 201, "16,384-byte body on node {node}: {}", r.body);
        base.seq += 1;
    }

    // A member creating a user, or posting to a channel it has not joined: 403, nothing written.
    let admin = cluster.client(1);
    admin
        .create_user("mallory", "a-long-pass-phrase-9", ops::Role::Member)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create member: {e}")));
    base.users.insert("mallory".into());
    // Logins are judged on the receiving node's local state (the API gives no read-your-writes
    // for them), so wait until the follower has applied the new user.
    cluster
        .wait_until(
            "the follower to know mallory",
            cluster.ready_timeout(),
            || async {
                let users = user_names(&cluster, follower).await;
                if users.contains("mallory") {
                    Ok(())
                } else {
                    Err(format!("users {users:?}"))
                }
            },
        )
        .await;
    let mallory = cluster
        .login_client(follower, "mallory", "a-long-pass-phrase-9")
        .await;
    let err = mallory
        .create_user("eve", "eve-password-1", ops::Role::Admin)
        .await
        .expect_err("a member created a user");
    assert_eq!(
        (err.status(), err.code()),
        (Some(403), Some("forbidden")),
        "{err}"
    );
    base.expect_nothing_written(&cluster, "member creating a user")
        .await;
    let err = mallory
        .post_message(CH, "not a member", &ops::new_client_msg_id())
        .await
        .expect_err("a non-member posted");
    assert_eq!(
        (err.status(), err.code()),
        (Some(403), Some("forbidden")),
        "{err}"
    );
    base.expect_nothing_written(&cluster, "non-member posting")
        .await;
}

/// Tolerance for comparing our clock readings with the node's (same machine, same clock;
/// this only covers rounding to milliseconds and the order of the readings).
const CLOCK_SLACK_MS: u64 = 50;

fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `token` with its last character changed (still well-formed, wrong signature or id).
fn altered(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap_or('A');
    t.push(if last == 'A' { 'B' } else { 'A' });
    t
}

/// Sessions last one second here: a token must be refused once that passes, and a write with
/// the expired token must not land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused() {
    let cluster = TestCluster::start_with(
        1,
        ClusterOptions::default().top_level("session_ttl_secs", "1"),
    )
    .await;
    // Node and test share one clock, so expiry can be checked against wall-clock time: the
    // session is created between `before` and `after`, expires 1 s later, and must be refused
    // from then on, never earlier.
    let mut client = cluster.try_client_without_token(&[1]).unwrap();
    let before = now_ms();
    let login = client.login(ADMIN_USER, ADMIN_PASSWORD).await;
    let after = now_ms();
    let login = login.unwrap_or_else(|e| cluster.fail(&format!("login: {e}")));
    assert!(
        (before + 1000 - CLOCK_SLACK_MS..=after + 1000 + CLOCK_SLACK_MS)
            .contains(&login.expires_at_ms),
        "expires_at_ms {} is not 1 s after the login ({before}..{after})",
        login.expires_at_ms
    );
    let refused_at = cluster
        .wait_until("the token to expire", cluster.ready_timeout(), || async {
            match client.me().await {
                // `session_expired` until the state machine purges it, then `unauthorized`.
                Err(e)
                    if e.status() == Some(401)
                        && matches!(e.code(), Some("session_expired" | "unauthorized")) =>
                {
                    Ok(now_ms())
                }
                Err(e) => Err(format!("unexpected error: {e}")),
                Ok(_) => Err("token still accepted".to_owned()),
            }
        })
        .await;
    assert!(
        refused_at + CLOCK_SLACK_MS >= login.expires_at_ms,
        "token refused at {refused_at}, before it expired at {}",
        login.expires_at_ms
    );
    eprintln!(
        "token refused {} ms after its expiry",
        refused_at.saturating_sub(login.expires_at_ms)
    );

    let err = client
        .create_channel("after-expiry")
        .await
        .expect_err("an expired token created a channel");
    assert!(
        err.status() == Some(401) && matches!(err.code(), Some("session_expired" | "unauthorized")),
        "{err}"
    );

    // A fresh login works (retrying if a slow debug build lets even it expire before use),
    // and shows the refused write left nothing behind.
    let channels = cluster
        .wait_until(
            "a fresh token to list channels",
            cluster.ready_timeout(),
            || async {
                let fresh = cluster.login_client(1, ADMIN_USER, ADMIN_PASSWORD).await;
                fresh.list_channels().await.map_err(|e| e.to_string())
            },
        )
        .await;
    assert!(
        channels.iter().all(|c| c.name != "after-expiry"),
        "a request with an expired token created a channel"
    );
}
