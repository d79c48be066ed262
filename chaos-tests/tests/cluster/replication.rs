//! Replication: a message posted on one node is listed on every node at the same seq, and a
//! post sent to a follower is accepted (201) and replicated (the node forwards it to the leader).

use chaos_tests::TestCluster;
use chaos_tests::checks::{self, Msg};
use serde_json::json;

use crate::util::{create_channel, http, post_ok, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication() {
    let cluster = TestCluster::start(3).await;
    let ch = "general";
    create_channel(&cluster, ch).await;

    // Posted on node 1, visible on 2 and 3 with the same seq once they applied its index.
    let id1 = ops::new_client_msg_id();
    let first = post_ok(&cluster, &cluster.client(1), ch, "hello from node 1", &id1).await;
    assert!(!first.duplicate, "a first post must not be a duplicate");
    let index1 = first.index.expect("a write must return X-Conclave-Index");
    for node in [2, 3] {
        let page = cluster
            .client(node)
            .list_messages(ch, 0, 100, Some(index1))
            .await
            .unwrap_or_else(|e| {
                cluster.fail(&format!("list on node {node} with min_index {index1}: {e}"))
            });
        let got = page
            .messages
            .iter()
            .find(|m| m.client_msg_id == id1)
            .unwrap_or_else(|| {
                cluster.fail(&format!(
                    "node {node} applied index {index1} but does not list message {id1}"
                ))
            });
        assert_eq!(
            got.seq, first.message.seq,
            "node {node} lists {id1} at another seq"
        );
        assert_eq!(got.body, "hello from node 1");
        assert_eq!(got.author, chaos_tests::ADMIN_USER);
    }

    // A post sent to a follower: 201, X-Conclave-Index, and the next seq.
    let follower = cluster.a_follower().await;
    let id2 = ops::new_client_msg_id();
    let resp = send(
        http()
            .post(format!(
                "{}/api/v1/channels/{ch}/messages",
                cluster.url(follower)
            ))
            .bearer_auth(cluster.admin_token())
            .json(&json!({"body": "hello via a follower", "client_msg_id": id2})),
    )
    .await;
    assert_eq!(resp.status, 201, "post to follower {follower}: {resp:?}");
    let index2 = resp.index_header.expect("201 without X-Conclave-Index");
    let body: serde_json::Value = serde_json::from_str(&resp.body).expect("201 body is JSON");
    assert_eq!(
        body["seq"].as_u64(),
        Some(first.message.seq + 1),
        "{}",
        resp.body
    );
    assert_eq!(body["duplicate"].as_bool(), Some(false), "{}", resp.body);

    let acked = vec![
        Msg::from(&first.message),
        Msg {
            seq: first.message.seq + 1,
            author: chaos_tests::ADMIN_USER.into(),
            body: "hello via a follower".into(),
            ts_ms: body["ts_ms"].as_u64().unwrap_or(0),
            client_msg_id: id2,
        },
    ];
    let views = cluster
        .wait_converged(ch, &[1, 2, 3], Some(index2), 2)
        .await;
    cluster.check(checks::all_core(&acked, &views));
    assert_eq!(
        views[0].messages.len(),
        2,
        "exactly the two posted messages"
    );
}

/// What the cluster acknowledged is never refused by a follower as unknown: a channel created
/// through the leader can be posted to through a follower at once, and a user created through
/// the leader can log in through a follower at once. (The server checks such names in local
/// state and, before refusing, syncs with the leader: a lagging follower must not answer
/// `channel_not_found` / `invalid_credentials` for something already acknowledged.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_never_refuses_acknowledged_creations() {
    const CHANNEL_ROUNDS: usize = 30;
    const USER_ROUNDS: usize = 10;
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader(&[]).await;
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let on_leader = cluster.client(leader);
    let on_followers: Vec<_> = followers.iter().map(|id| cluster.client(*id)).collect();
    let mut refusals = Vec::new();
    let mut attempts = 0;
    for round in 0..CHANNEL_ROUNDS {
        let ch = format!("fresh-{round}");
        on_leader
            .create_channel(&ch)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("create {ch}: {e}")));
        let posts = on_followers.iter().zip(&followers).map(|(client, id)| {
            let ch = ch.clone();
            async move {
                let r = client
                    .post_message(&ch, "right after create", &format!("{ch}-via-{id}"))
                    .await;
                (*id, r)
            }
        });
        for (id, r) in futures::future::join_all(posts).await {
            attempts += 1;
            if let Err(e) = r {
                refusals.push(format!(
                    "post to {ch} via follower {id} right after its creation: {e}"
                ));
            }
        }
    }
    for round in 0..USER_ROUNDS {
        let user = format!("fresh-user-{round}");
        let follower = followers[round % followers.len()];
        on_leader
            .create_user(&user, "fresh-password", ops::Role::Member)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("create {user}: {e}")));
        let mut client = cluster.try_client_without_token(&[follower]).unwrap();
        attempts += 1;
        if let Err(e) = client.login(&user, "fresh-password").await {
            refusals.push(format!(
                "login as {user} via follower {follower} right after its creation: {e}"
            ));
        }
    }
    if !refusals.is_empty() {
        cluster.fail(&format!(
            "{} of {attempts} requests through a follower were refused right after the leader acknowledged \
             what they need:\n{}",
            refusals.len(),
            refusals.join("\n")
        ));
    }
}
