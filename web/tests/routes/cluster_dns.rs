//! Cluster administration and static DNS records: `GET /cluster`, `POST /cluster/nodes`,
//! `DELETE /cluster/nodes/{id}`, `POST`/`DELETE /cluster/nodes/{id}/drain` (and what draining
//! does to `/readyz`), `GET`/`POST`/`DELETE /dns/records`.
//!
//! Adding and removing a real second node: a second in-process node (not initialized) with its
//! cluster port served on 127.0.0.1, as `conclave run` would have it before an add.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

fn member_ids(h: &Harness) -> Vec<u64> {
    h.node.members().iter().map(|(id, _)| *id).collect()
}

/// Waits until the leader has applied its latest membership: until then another change is
/// refused with 409 `membership_change_in_progress`.
async fn membership_settled(h: &Harness) {
    h.node
        .raft()
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(
            |m| m.last_applied.map(|l| l.index) >= m.membership_config.log_id().map(|l| l.index),
            "membership applied",
        )
        .await
        .expect("membership applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_needs_no_token() {
    let h = Harness::start().await;
    h.ready().await;
    // The view probes now; poll until it, too, has seen the node ready.
    let b = h
        .until("the cluster view shows node 1 ready", || async {
            let (s, view) = h.req("GET", "/api/v1/cluster", None, None).await;
            assert_eq!(s, StatusCode::OK, "{view}");
            (view["nodes"][0]["ready"] == true).then_some(view)
        })
        .await;
    assert_eq!(b["node_id"], 1);
    assert_eq!(b["leader_id"], 1);
    assert!(b["term"].as_u64().unwrap() >= 1);
    assert!(b["periodic_probe_ms_ago"].as_u64().is_some(), "{b}");
    let nodes = b["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{b}");
    let n = &nodes[0];
    assert_eq!(n["id"], 1);
    assert_eq!(n["api_addr"], API_ADDR);
    assert_eq!(n["cluster_addr"], h.cluster_addr.as_str());
    assert_eq!(n["https_addr"], Value::Null);
    assert_eq!(n["voter"], true);
    assert_eq!(n["role"], "leader");
    assert_eq!(n["leader_id"], 1);
    assert_eq!(n["healthy"], true);
    assert_eq!(n["ready"], true);
    assert_eq!(n["serving"], true);
    assert_eq!(n["draining"], false);
    assert_eq!(n["error"], Value::Null);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_nodes() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let path = "/api/v1/cluster/nodes";
    let node = |id: u64, api: &str, cluster: &str| {
        Some(json!({"id": id, "api_addr": api, "cluster_addr": cluster}))
    };

    // The existing member with its own addresses: an idempotent add.
    let (s, b) = h
        .req(
            "POST",
            path,
            Some(&admin),
            node(1, API_ADDR, &h.cluster_addr),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["node_id"], 1);
    assert_eq!(b["nodes"].as_array().unwrap().len(), 1);

    let r = h
        .req(
            "POST",
            path,
            Some(&alice),
            node(2, "127.0.0.1:1", "127.0.0.1:2"),
        )
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_needs_token(&h, "POST", path, node(2, "127.0.0.1:1", "127.0.0.1:2")).await;
    for (api, cluster) in [
        ("nohost", "127.0.0.1:2"),
        ("127.0.0.1:1", ":2"),
        ("127.0.0.1:0", "127.0.0.1:2"),
        ("127.0.0.1:1", "127.0.0.1:99999"),
    ] {
        let r = h
            .req("POST", path, Some(&admin), node(2, api, cluster))
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let r = h
        .req(
            "POST",
            path,
            Some(&admin),
            node(0, "127.0.0.1:1", "127.0.0.1:2"),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    // Node 1 again with other addresses.
    let r = h
        .req(
            "POST",
            path,
            Some(&admin),
            node(1, "127.0.0.1:1", "127.0.0.1:2"),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    // Nothing answers on the new node's cluster port: refused before the membership changes.
    let r = h
        .req(
            "POST",
            path,
            Some(&admin),
            node(2, "127.0.0.1:1", "127.0.0.1:2"),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = h
        .req("POST", path, Some(&admin), Some(json!({"id": "two"})))
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(member_ids(&h), [1]);
    let (_, b) = h.req("GET", "/api/v1/cluster", None, None).await;
    assert_eq!(b["nodes"][0]["api_addr"], API_ADDR);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_nodes_is_refused_when_unsafe_or_unknown() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;

    let r = h
        .req("DELETE", "/api/v1/cluster/nodes/1", Some(&alice), None)
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_needs_token(&h, "DELETE", "/api/v1/cluster/nodes/1", None).await;
    let r = h
        .req("DELETE", "/api/v1/cluster/nodes/1", Some(&admin), None)
        .await;
    assert_err(&r, StatusCode::CONFLICT, "unsafe_membership_change");
    let r = h
        .req("DELETE", "/api/v1/cluster/nodes/7", Some(&admin), None)
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    for bad in ["x", "-1"] {
        let r = h
            .req(
                "DELETE",
                &format!("/api/v1/cluster/nodes/{bad}"),
                Some(&admin),
                None,
            )
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(member_ids(&h), [1]);
    // Still a working single-node cluster.
    h.ready().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_takes_the_node_out_of_readyz_only() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let drain = "/api/v1/cluster/nodes/1/drain";
    h.ready().await;

    for m in ["POST", "DELETE"] {
        let r = h.req(m, drain, Some(&alice), None).await;
        assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
        assert_needs_token(&h, m, drain, None).await;
        let r = h
            .req(m, "/api/v1/cluster/nodes/5/drain", Some(&admin), None)
            .await;
        assert_err(&r, StatusCode::NOT_FOUND, "not_found");
        let r = h
            .req(m, "/api/v1/cluster/nodes/one/drain", Some(&admin), None)
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    h.ready().await;

    let (s, b) = h.req("POST", drain, Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["nodes"][0]["draining"], true);
    assert_eq!(b["nodes"][0]["serving"], false);
    // Idempotent.
    let (s, _) = h.req("POST", drain, Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = h.req("GET", "/readyz", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(
        b,
        json!({"ready": false, "node_id": 1, "reason": "draining", "draining": true})
    );
    // Still serving requests.
    h.channel(&alice, "still", "public").await;

    let (s, b) = h.req("DELETE", drain, Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["nodes"][0]["draining"], false);
    assert_eq!(
        h.ready().await,
        json!({"ready": true, "node_id": 1, "reason": null, "draining": false})
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_a_second_node() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let (node2, addr2, _dir2) = start_node(2, &cancel).await;

    let (s, b) = h
        .req(
            "POST",
            "/api/v1/cluster/nodes",
            Some(&admin),
            Some(json!({"id": 2, "api_addr": "127.0.0.1:8", "cluster_addr": addr2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let nodes = b["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{b}");
    assert_eq!(nodes[1]["id"], 2);
    assert_eq!(nodes[1]["voter"], true);
    assert_eq!(nodes[1]["cluster_addr"], addr2.as_str());
    assert_eq!(nodes[1]["healthy"], true);
    assert_eq!(member_ids(&h), [1, 2]);
    // Node 2 has the log: it knows the admin.
    let index = h.node.metrics().last_applied.unwrap().index;
    node2
        .wait_applied(index, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert!(node2.reader().user(ADMIN).unwrap().is_some());
    // The same add again is idempotent.
    membership_settled(&h).await;
    let (s, b) = h
        .req(
            "POST",
            "/api/v1/cluster/nodes",
            Some(&admin),
            Some(json!({"id": 2, "api_addr": "127.0.0.1:8", "cluster_addr": addr2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    membership_settled(&h).await;
    let (s, b) = h
        .req("DELETE", "/api/v1/cluster/nodes/2", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ids: Vec<u64> = b["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1]);
    assert_eq!(member_ids(&h), [1]);
    membership_settled(&h).await;
    let r = h
        .req("DELETE", "/api/v1/cluster/nodes/2", Some(&admin), None)
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    node2.shutdown().await;
    cancel.cancel();
    h.stop().await;
}

async fn records(h: &Harness, token: &str) -> Vec<Value> {
    let (s, b) = h.req("GET", "/api/v1/dns/records", Some(token), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["records"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_dns_records() {
    let h = Harness::start().await;
    let admin = h.admin().await;
    let alice = h.member("alice").await;
    let path = "/api/v1/dns/records";
    let rec =
        |name: &str, t: &str, value: &str| Some(json!({"name": name, "type": t, "value": value}));
    assert!(records(&h, &admin).await.is_empty());

    let r = h
        .raw(
            "POST",
            path,
            Some(&admin),
            Some((
                "application/json",
                serde_json::to_vec(
                    &json!({"name": "Wiki.", "type": "a", "value": "10.0.0.5", "ttl": 60}),
                )
                .unwrap(),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert!(r.headers.contains_key("x-conclave-index"));
    assert_eq!(
        r.json,
        json!({"name": "wiki", "type": "A", "ttl": 60, "value": "10.0.0.5"})
    );
    let (s, b) = h
        .req("POST", path, Some(&admin), rec("wiki", "A", "10.0.0.6"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["ttl"], 300, "default TTL");
    let (s, _) = h
        .req(
            "POST",
            path,
            Some(&admin),
            rec("ldap", "SRV", "10 5 389 wiki"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // Refusals, none of which writes.
    let r = h
        .req("POST", path, Some(&admin), rec("wiki", "CNAME", "web"))
        .await;
    assert_err(&r, StatusCode::CONFLICT, "conflict");
    for reserved in ["node1", "@", "_conclave._tcp"] {
        let r = h
            .req("POST", path, Some(&admin), rec(reserved, "A", "10.0.0.7"))
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "reserved_name");
    }
    for (name, t, value) in [
        ("wiki", "MX", "10 mail"),
        ("wiki", "A", "10.0.0.300"),
        ("wiki", "AAAA", "10.0.0.5"),
        ("bad name", "A", "10.0.0.5"),
        ("a..b", "A", "10.0.0.5"),
    ] {
        let r = h.req("POST", path, Some(&admin), rec(name, t, value)).await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    for ttl in [0, 86_401] {
        let r = h
            .req(
                "POST",
                path,
                Some(&admin),
                Some(json!({"name": "x", "type": "A", "value": "10.0.0.1", "ttl": ttl})),
            )
            .await;
        assert_err(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let r = h
        .req(
            "POST",
            path,
            Some(&admin),
            Some(json!({"name": "x", "type": "A"})),
        )
        .await;
    assert_err(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = h
        .req("POST", path, Some(&alice), rec("x", "A", "10.0.0.1"))
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = h.req("GET", path, Some(&alice), None).await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_needs_token(&h, "POST", path, rec("x", "A", "10.0.0.1")).await;
    assert_needs_token(&h, "GET", path, None).await;

    let listed = records(&h, &admin).await;
    assert_eq!(
        listed,
        [
            json!({"name": "ldap", "type": "SRV", "ttl": 300, "value": "10 5 389 wiki"}),
            json!({"name": "wiki", "type": "A", "ttl": 60, "value": "10.0.0.5"}),
            json!({"name": "wiki", "type": "A", "ttl": 300, "value": "10.0.0.6"}),
        ]
    );

    // Removal: by value, then every record of a type; nothing left is "not found".
    let r = h
        .req(
            "DELETE",
            &format!("{path}?name=wiki&type=A"),
            Some(&alice),
            None,
        )
        .await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_needs_token(&h, "DELETE", &format!("{path}?name=wiki&type=A"), None).await;
    for q in [
        "",
        "?name=wiki",
        "?name=wiki&type=MX",
        "?name=node1&type=A",
        "?name=wiki&type=A&value=nope",
    ] {
        let r = h
            .req("DELETE", &format!("{path}{q}"), Some(&admin), None)
            .await;
        assert!(r.0.is_client_error(), "{q}: {}", r.1);
        let code = if q.contains("node1") {
            "reserved_name"
        } else {
            "invalid_request"
        };
        assert_err(&r, StatusCode::BAD_REQUEST, code);
    }
    assert_eq!(records(&h, &admin).await.len(), 3);
    let (s, b) = h
        .req(
            "DELETE",
            &format!("{path}?name=wiki&type=A&value=10.0.0.6"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"removed": 1})));
    let (s, b) = h
        .req(
            "DELETE",
            &format!("{path}?name=ldap&type=srv"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"removed": 1})));
    let r = h
        .req(
            "DELETE",
            &format!("{path}?name=ldap&type=SRV"),
            Some(&admin),
            None,
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        records(&h, &admin).await,
        [json!({"name": "wiki", "type": "A", "ttl": 60, "value": "10.0.0.5"})]
    );
    h.stop().await;
}
