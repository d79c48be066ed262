//! Static DNS records and node draining (built-in DNS) against a real 3-node cluster:
//! - `dns_records_rest_round_trip`: records added through one node are listed by another;
//!   re-adding sets the TTL; names the cluster answers itself (`node1`, `_conclave._tcp`, `@`)
//!   are refused with 400 `reserved_name` before anything reaches the log; bad types, values,
//!   names and TTLs are 400 `invalid_request`; a CNAME beside other records is 409 `conflict`
//!   in both orders; removal by value and by type, then 404; members get 403 everywhere;
//! - `dns_records_ctl_round_trip`: `conclavectl dns add|list|rm` and `node drain|undrain`,
//!   with their exit codes and one-line errors;
//! - `dns_records_drain_node`: a drained node answers `/readyz` 503 `draining`, every node's
//!   cluster view says so, and it keeps serving authenticated requests; undrain brings
//!   `/readyz` back to 200; unknown ids are 404;
//! - `dns_records_drain_flag_dies_with_removal`: a drained node removed and added again with
//!   the same id (data dir wiped) is not draining;
//! - `dns_records_are_answered_by_every_node`: real DNS queries: every node answers the static
//!   records (A, CNAME, SRV, TXT, NODATA for an empty non-terminal) and forgets them when
//!   removed; the drain test also checks that a drained node leaves every node's A and SRV
//!   answers, its own included, and comes back after undrain.
//!
//! Every wait polls with a deadline.

use std::time::Duration;

use chaos_tests::TestCluster;
use chaos_tests::wait::Waiting;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use super::ctl::{Ctl, expect_failure, expect_ok, status_rows};
use super::dns_util::{self, addrs, dns_addr, query, udp, wait_answer};
use super::util::{Raw, send};

const RECORDS: &str = "/api/v1/dns/records";
const WAIT: Duration = Duration::from_secs(20);
const MEMBER: &str = "dns-member";
const MEMBER_PASSWORD: &str = "long-pass-phrase-1";

fn url(cluster: &TestCluster, id: u64, path: &str) -> String {
    format!("{}{path}", cluster.url(id))
}

async fn post_record(cluster: &TestCluster, id: u64, token: &str, body: Value) -> Raw {
    send(
        cluster
            .http()
            .post(url(cluster, id, RECORDS))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

async fn delete_records(
    cluster: &TestCluster,
    id: u64,
    token: &str,
    query: &[(&str, &str)],
) -> Raw {
    send(
        cluster
            .http()
            .delete(url(cluster, id, RECORDS))
            .bearer_auth(token)
            .query(query),
    )
    .await
}

/// `GET /api/v1/dns/records` on node `id`, waiting for `min_index` first if given.
async fn list_records(
    cluster: &TestCluster,
    id: u64,
    token: &str,
    min_index: Option<u64>,
) -> Result<Vec<Value>, String> {
    let mut req = cluster
        .http()
        .get(url(cluster, id, RECORDS))
        .bearer_auth(token);
    if let Some(i) = min_index {
        req = req.header("x-conclave-min-index", i.to_string());
    }
    let raw = send(req).await;
    if raw.status != 200 {
        return Err(format!("GET {RECORDS} on node {id}: {raw:?}"));
    }
    let v: Value = serde_json::from_str(&raw.body).map_err(|e| format!("{e}: {}", raw.body))?;
    v["records"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("no records array in {v}"))
}

/// `name type ttl value` of every record, in the order listed.
fn shown(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["name"].as_str().unwrap_or("?"),
                r["type"].as_str().unwrap_or("?"),
                r["ttl"],
                r["value"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn expect_status(raw: &Raw, status: u16, code: Option<&str>, what: &str) {
    assert_eq!(
        (raw.status, raw.code.as_deref()),
        (status, code),
        "{what}: {raw:?}"
    );
}

/// (term, last_log_index) of the leader as node 1 sees it.
async fn leader_log(cluster: &TestCluster) -> Option<(u64, u64)> {
    let v = cluster.cluster_json(1).await.ok()?;
    let leader = v["leader_id"].as_u64()?;
    let node = v["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"].as_u64() == Some(leader))?;
    Some((node["term"].as_u64()?, node["last_log_index"].as_u64()?))
}

/// `draining` of node `target` in node `seen_by`'s cluster view.
async fn draining_in_view(
    cluster: &TestCluster,
    seen_by: u64,
    target: u64,
) -> Result<bool, String> {
    let v = cluster
        .cluster_json(seen_by)
        .await
        .map_err(|e| e.to_string())?;
    v["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"].as_u64() == Some(target)))
        .and_then(|n| n["draining"].as_bool())
        .ok_or_else(|| format!("node {target} without `draining` in {v}"))
}

/// `GET /readyz` of node `id`: status and body.
async fn readyz(cluster: &TestCluster, id: u64) -> Result<(u16, Value), String> {
    let raw = send(cluster.http().get(url(cluster, id, "/readyz"))).await;
    let body = serde_json::from_str(&raw.body).map_err(|e| format!("{e}: {}", raw.body))?;
    Ok((raw.status, body))
}

async fn member_token(cluster: &TestCluster) -> String {
    cluster
        .client(1)
        .create_user(MEMBER, MEMBER_PASSWORD, ops::Role::Member)
        .await
        .unwrap_or_else(|e| panic!("create {MEMBER}: {e}"));
    let client = cluster.login_client(2, MEMBER, MEMBER_PASSWORD).await;
    client.token().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_rest_round_trip() {
    let cluster = TestCluster::start(3).await;
    let admin = cluster.admin_token().to_owned();

    // Added through node 1, listed by node 2 once it has applied the write.
    let raw = post_record(
        &cluster,
        1,
        &admin,
        json!({"name": "Wiki", "type": "a", "value": "10.0.0.5", "ttl": 300}),
    )
    .await;
    expect_status(&raw, 201, None, "add wiki A");
    let body: Value = serde_json::from_str(&raw.body).unwrap();
    assert_eq!(
        body,
        json!({"name": "wiki", "type": "A", "ttl": 300, "value": "10.0.0.5"})
    );
    let index = raw.index_header.expect("X-Conclave-Index on a write");
    let listed = list_records(&cluster, 2, &admin, Some(index))
        .await
        .unwrap();
    assert_eq!(shown(&listed), ["wiki A 300 10.0.0.5"]);

    // The same record again only sets its TTL; a second address is a second record. TTL
    // defaults to 300.
    let raw = post_record(
        &cluster,
        2,
        &admin,
        json!({"name": "wiki", "type": "A", "value": "10.0.0.5", "ttl": 60}),
    )
    .await;
    expect_status(&raw, 201, None, "re-add wiki A with ttl 60");
    let raw = post_record(
        &cluster,
        3,
        &admin,
        json!({"name": "wiki", "type": "A", "value": "10.0.0.6"}),
    )
    .await;
    expect_status(&raw, 201, None, "add a second wiki A");
    let raw = post_record(
        &cluster,
        1,
        &admin,
        json!({"name": "_ldap._tcp", "type": "SRV", "value": "10 5 389 LDAP", "ttl": 600}),
    )
    .await;
    expect_status(&raw, 201, None, "add SRV");
    let listed = list_records(&cluster, 3, &admin, raw.index_header)
        .await
        .unwrap();
    assert_eq!(
        shown(&listed),
        [
            "_ldap._tcp SRV 600 10 5 389 ldap",
            "wiki A 60 10.0.0.5",
            "wiki A 300 10.0.0.6",
        ]
    );

    // Shadowing names: refused before proposing, so the log does not move.
    let before = leader_log(&cluster).await;
    for name in ["node1", "_conclave._tcp", "@", "NODE2.", "x._https._tcp"] {
        let raw = post_record(
            &cluster,
            1,
            &admin,
            json!({"name": name, "type": "A", "value": "10.0.0.9"}),
        )
        .await;
        expect_status(&raw, 400, Some("reserved_name"), name);
    }
    let after = leader_log(&cluster).await;
    if let (Some((t0, i0)), Some((t1, i1))) = (before, after)
        && t0 == t1
    {
        // An election in between would append a blank entry; only compare within one term.
        assert_eq!(i0, i1, "a refused record reached the log");
    }

    // Malformed requests: 400 invalid_request naming the problem.
    for (body, needle) in [
        (json!({"name": "x", "type": "MX", "value": "10 mail"}), "MX"),
        (json!({"name": "x", "type": "A", "value": "10.0.0"}), "IPv4"),
        (
            json!({"name": "x", "type": "AAAA", "value": "10.0.0.1"}),
            "IPv6",
        ),
        (
            json!({"name": "a..b", "type": "A", "value": "10.0.0.1"}),
            "a..b",
        ),
        (
            json!({"name": "x", "type": "A", "value": "10.0.0.1", "ttl": 0}),
            "ttl",
        ),
        (
            json!({"name": "x", "type": "A", "value": "10.0.0.1", "ttl": 86401}),
            "ttl",
        ),
        (
            json!({"name": "x", "type": "SRV", "value": "10 5 ldap"}),
            "PRIORITY",
        ),
    ] {
        let raw = post_record(&cluster, 2, &admin, body.clone()).await;
        expect_status(&raw, 400, Some("invalid_request"), &body.to_string());
        assert!(
            raw.body.contains(needle),
            "{body}: message should name {needle:?}: {}",
            raw.body
        );
    }
    let raw = post_record(&cluster, 2, &admin, json!({"name": "x", "type": "A"})).await;
    expect_status(&raw, 400, Some("invalid_json"), "missing value");

    // CNAME exclusivity, both orders.
    let raw = post_record(
        &cluster,
        1,
        &admin,
        json!({"name": "wiki", "type": "CNAME", "value": "web"}),
    )
    .await;
    expect_status(&raw, 409, Some("conflict"), "CNAME beside A records");
    let raw = post_record(
        &cluster,
        1,
        &admin,
        json!({"name": "docs", "type": "CNAME", "value": "wiki.corp.lan."}),
    )
    .await;
    expect_status(&raw, 201, None, "CNAME alone");
    let raw = post_record(
        &cluster,
        3,
        &admin,
        json!({"name": "docs", "type": "TXT", "value": "\"hello\""}),
    )
    .await;
    expect_status(&raw, 409, Some("conflict"), "TXT beside a CNAME");
    let listed = list_records(&cluster, 1, &admin, None).await.unwrap();
    assert_eq!(
        shown(&listed),
        [
            "_ldap._tcp SRV 600 10 5 389 ldap",
            "docs CNAME 300 wiki.corp.lan.",
            "wiki A 60 10.0.0.5",
            "wiki A 300 10.0.0.6",
        ]
    );

    // Removal: one value, then all of a type, then nothing left to remove.
    let raw = delete_records(
        &cluster,
        2,
        &admin,
        &[("name", "wiki"), ("type", "A"), ("value", "10.0.0.5")],
    )
    .await;
    expect_status(&raw, 200, None, "rm one value");
    assert_eq!(
        serde_json::from_str::<Value>(&raw.body).unwrap(),
        json!({"removed": 1})
    );
    let raw = delete_records(
        &cluster,
        2,
        &admin,
        &[("name", "wiki"), ("type", "A"), ("value", "10.0.0.5")],
    )
    .await;
    expect_status(&raw, 404, Some("not_found"), "rm the same value again");
    let raw = delete_records(&cluster, 3, &admin, &[("name", "docs"), ("type", "cname")]).await;
    expect_status(&raw, 200, None, "rm all CNAMEs at docs");
    assert_eq!(
        serde_json::from_str::<Value>(&raw.body).unwrap(),
        json!({"removed": 1})
    );
    let raw = delete_records(&cluster, 1, &admin, &[("name", "wiki")]).await;
    expect_status(&raw, 400, Some("invalid_request"), "rm without type");
    let raw = delete_records(&cluster, 1, &admin, &[("name", "node1"), ("type", "A")]).await;
    expect_status(&raw, 400, Some("reserved_name"), "rm at a reserved name");
    let listed = list_records(&cluster, 1, &admin, raw.index_header)
        .await
        .unwrap();
    assert_eq!(
        shown(&listed),
        ["_ldap._tcp SRV 600 10 5 389 ldap", "wiki A 300 10.0.0.6"]
    );

    // Members may not touch the zone, nor drain nodes.
    let member = member_token(&cluster).await;
    let raw = send(
        cluster
            .http()
            .get(url(&cluster, 2, RECORDS))
            .bearer_auth(&member),
    )
    .await;
    expect_status(&raw, 403, Some("forbidden"), "member lists");
    let raw = post_record(
        &cluster,
        2,
        &member,
        json!({"name": "evil", "type": "A", "value": "10.6.6.6"}),
    )
    .await;
    expect_status(&raw, 403, Some("forbidden"), "member adds");
    let raw = delete_records(&cluster, 2, &member, &[("name", "wiki"), ("type", "A")]).await;
    expect_status(&raw, 403, Some("forbidden"), "member removes");
    let raw = send(
        cluster
            .http()
            .post(url(&cluster, 2, "/api/v1/cluster/nodes/3/drain"))
            .bearer_auth(&member),
    )
    .await;
    expect_status(&raw, 403, Some("forbidden"), "member drains");
    let raw = send(cluster.http().get(url(&cluster, 2, RECORDS))).await;
    expect_status(&raw, 401, Some("unauthorized"), "anonymous lists");
    assert_eq!(
        list_records(&cluster, 2, &admin, None).await.unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_ctl_round_trip() {
    let bin = Ctl::locate();
    let cluster = TestCluster::start(3).await;
    let ctl = Ctl::new(bin, &cluster);
    let servers = format!("{},{}", cluster.url(1), cluster.url(2));
    expect_ok(&cluster, &ctl.login(&servers).await);

    let run = ctl
        .run(&["dns", "add", "wiki", "A", "10.0.0.5", "--ttl", "120"])
        .await;
    assert_eq!(
        expect_ok(&cluster, &run),
        "added wiki A 10.0.0.5 (ttl 120)\n"
    );
    let run = ctl
        .run(&["dns", "add", "_ldap._tcp", "srv", "10", "5", "389", "ldap"])
        .await;
    assert_eq!(
        expect_ok(&cluster, &run),
        "added _ldap._tcp SRV 10 5 389 ldap (ttl 300)\n"
    );
    let run = ctl.run(&["dns", "list"]).await;
    let text = expect_ok(&cluster, &run);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "TYPE", "TTL", "VALUE"], "{run}");
    assert_eq!(
        rows[1],
        ["_ldap._tcp", "SRV", "300", "10", "5", "389", "ldap"],
        "{run}"
    );
    assert_eq!(rows[2], ["wiki", "A", "120", "10.0.0.5"], "{run}");
    let run = ctl.run(&["dns", "list", "--json"]).await;
    let listed: Value = serde_json::from_str(expect_ok(&cluster, &run)).unwrap();
    assert_eq!(
        listed,
        json!([
            {"name": "_ldap._tcp", "type": "SRV", "ttl": 300, "value": "10 5 389 ldap"},
            {"name": "wiki", "type": "A", "ttl": 120, "value": "10.0.0.5"},
        ])
    );

    // Refusals: exit 1 and one line with the server's code.
    let run = ctl.run(&["dns", "add", "node1", "A", "10.0.0.1"]).await;
    let line = expect_failure(&cluster, &run, 1, "conclavectl: error: reserved_name:");
    assert!(line.contains("node1"), "{run}");
    let run = ctl.run(&["dns", "add", "wiki", "CNAME", "web"]).await;
    expect_failure(&cluster, &run, 1, "conclavectl: error: conflict:");
    let run = ctl.run(&["dns", "add", "wiki", "A", "not-an-ip"]).await;
    expect_failure(&cluster, &run, 1, "conclavectl: error: invalid_request:");
    let run = ctl.run(&["dns", "add", "wiki", "A"]).await;
    assert_eq!(run.code, Some(2), "missing value is a usage error:\n{run}");

    // Removal.
    let run = ctl.run(&["dns", "rm", "wiki", "A", "10.0.0.5"]).await;
    assert_eq!(expect_ok(&cluster, &run), "removed 1 record\n");
    let run = ctl.run(&["dns", "rm", "wiki", "A"]).await;
    expect_failure(&cluster, &run, 1, "conclavectl: error: not_found:");
    let run = ctl.run(&["--json", "dns", "rm", "_ldap._tcp", "SRV"]).await;
    let removed: Value = serde_json::from_str(expect_ok(&cluster, &run)).unwrap();
    assert_eq!(removed, json!({"removed": 1}));
    let run = ctl.run(&["dns", "list"]).await;
    assert_eq!(expect_ok(&cluster, &run), "no static DNS records\n");

    // Drain and undrain: the status table shows it; draining is not "degraded" (exit 0).
    let run = ctl.run(&["node", "drain", "2"]).await;
    let out = expect_ok(&cluster, &run);
    assert!(out.starts_with("node 2 is draining"), "{run}");
    let run = ctl.run(&["status"]).await;
    let rows = status_rows(expect_ok(&cluster, &run)).unwrap_or_else(|e| panic!("{e}:\n{run}"));
    let drained: Vec<u64> = rows.iter().filter(|r| r.draining).map(|r| r.id).collect();
    assert_eq!(drained, [2], "{run}");
    let run = ctl.run(&["node", "undrain", "2"]).await;
    let out = expect_ok(&cluster, &run);
    assert!(out.starts_with("node 2 is no longer draining"), "{run}");
    let rows = status_rows(out.split_once('\n').map_or("", |(_, t)| t))
        .unwrap_or_else(|e| panic!("{e}:\n{run}"));
    assert!(rows.iter().all(|r| !r.draining), "{run}");
    let run = ctl.run(&["node", "drain", "9"]).await;
    let line = expect_failure(&cluster, &run, 1, "conclavectl: error: not_found:");
    assert!(line.contains("node 9"), "{run}");
    let run = ctl.run(&["node", "undrain", "two"]).await;
    assert_eq!(
        run.code,
        Some(2),
        "a non-numeric id is a usage error:\n{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
}

const WS: &str = "chat.records.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_drain_node() {
    let cluster = TestCluster::start_with(3, dns_util::dns_options(WS, 1, 10_000, 10_000)).await;
    let admin = cluster.admin_token().to_owned();
    let drain_url = |id: u64| url(&cluster, 1, &format!("/api/v1/cluster/nodes/{id}/drain"));

    let (status, body) = readyz(&cluster, 2).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["draining"], json!(false), "{body}");

    // Drain node 2 through node 1: the answer is the cluster view, showing it.
    let raw = send(cluster.http().post(drain_url(2)).bearer_auth(&admin)).await;
    expect_status(&raw, 200, None, "drain node 2");
    let view: Value = serde_json::from_str(&raw.body).unwrap();
    let flags: Vec<(u64, bool)> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_u64().unwrap(), n["draining"].as_bool().unwrap()))
        .collect();
    assert_eq!(flags, [(1, false), (2, true), (3, false)], "{view}");

    // Node 2 leaves /readyz once it has applied the flag.
    let body = cluster
        .wait_until("node 2 /readyz 503 draining", WAIT, || async {
            match readyz(&cluster, 2).await? {
                (503, body) if body["draining"] == json!(true) => Ok(body),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert_eq!(
        body,
        json!({"ready": false, "draining": true, "reason": "draining", "node_id": 2})
    );
    // Another node's view says so too; the others stay ready.
    cluster
        .wait_until("node 3 sees node 2 draining", WAIT, || async {
            match draining_in_view(&cluster, 3, 2).await? {
                true => Ok(()),
                false => Err("not yet".to_owned()),
            }
        })
        .await;
    for id in [1, 3] {
        let (status, body) = readyz(&cluster, id).await.unwrap();
        assert_eq!(status, 200, "node {id}: {body}");
    }
    // Every node's DNS, the drained node's own included, stops listing it.
    let without_2 = addrs(&cluster, &[1, 3]);
    for id in 1..=3 {
        wait_answer(&cluster, id, WS, &without_2, WAIT).await;
    }
    let srv = udp(
        dns_addr(&cluster, 2),
        &query(&format!("_conclave._tcp.{WS}"), RecordType::SRV),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let targets: Vec<String> = srv.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(targets.len(), 2, "{targets:?}");
    assert!(
        targets.iter().all(|t| !t.contains(&format!("node2.{WS}"))),
        "{targets:?}"
    );

    // A draining node keeps serving: authenticated reads and writes through node 2 work.
    let client = cluster.client(2);
    let me = client
        .me()
        .await
        .expect("GET /api/v1/me through the draining node");
    assert_eq!(me.username, chaos_tests::ADMIN_USER);
    client
        .create_channel("drained-but-serving")
        .await
        .expect("a write through the draining node");
    let outcome = client
        .post_message("drained-but-serving", "still here", "drain-1")
        .await
        .expect("a post through the draining node");
    assert_eq!(outcome.message.seq, 1);

    // Draining twice is fine; unknown and malformed ids are refused.
    let raw = send(cluster.http().post(drain_url(2)).bearer_auth(&admin)).await;
    expect_status(&raw, 200, None, "drain node 2 again");
    let raw = send(cluster.http().post(drain_url(9)).bearer_auth(&admin)).await;
    expect_status(&raw, 404, Some("not_found"), "drain node 9");
    let raw = send(
        cluster
            .http()
            .delete(url(&cluster, 1, "/api/v1/cluster/nodes/x/drain"))
            .bearer_auth(&admin),
    )
    .await;
    expect_status(&raw, 400, Some("invalid_request"), "undrain node x");
    let raw = send(cluster.http().post(drain_url(2))).await;
    expect_status(&raw, 401, Some("unauthorized"), "drain without a token");

    // Undrain through node 3: node 2 is ready again, and every view agrees.
    let raw = send(
        cluster
            .http()
            .delete(url(&cluster, 3, "/api/v1/cluster/nodes/2/drain"))
            .bearer_auth(&admin),
    )
    .await;
    expect_status(&raw, 200, None, "undrain node 2");
    cluster
        .wait_until("node 2 /readyz 200 again", WAIT, || async {
            match readyz(&cluster, 2).await? {
                (200, body) if body["draining"] == json!(false) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    let all = addrs(&cluster, &[1, 2, 3]);
    for id in 1..=3 {
        wait_answer(&cluster, id, WS, &all, WAIT).await;
    }
    for seen_by in [1, 2, 3] {
        cluster
            .wait_until(
                &format!("node {seen_by} sees node 2 serving"),
                WAIT,
                || async {
                    match draining_in_view(&cluster, seen_by, 2).await? {
                        false => Ok(()),
                        true => Err("still draining".to_owned()),
                    }
                },
            )
            .await;
    }
}

/// Node `id` answers `/healthz` (it runs, possibly not yet a member).
async fn wait_healthz(cluster: &TestCluster, id: u64) {
    cluster
        .wait_until(&format!("node {id} /healthz"), WAIT, || async {
            if let Some(status) = cluster.node(id).exit_status() {
                return Err(Waiting::Abort(format!("node {id} exited ({status})")));
            }
            let raw = cluster
                .http()
                .get(url(cluster, id, "/healthz"))
                .send()
                .await
                .map_err(|e| Waiting::NotYet(e.to_string()))?;
            match raw.status().as_u16() {
                200 => Ok(()),
                s => Err(Waiting::NotYet(format!("HTTP {s}"))),
            }
        })
        .await
}

async fn add_node(cluster: &TestCluster, id: u64) {
    let api = cluster.api_addr(id).to_string();
    let raft = cluster.cluster_addr(id).to_string();
    cluster
        .client(1)
        .with_request_timeout(Duration::from_secs(90))
        .add_node(id, &api, &raft)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("add node {id}: {e}")));
}

/// A node drained, removed, wiped and added again with the same id starts out serving: the
/// flag is dropped when the membership change that removes it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_drain_flag_dies_with_removal() {
    let mut cluster = TestCluster::start(3).await;
    let admin = cluster.admin_token().to_owned();
    cluster.spawn_extra(4);
    wait_healthz(&cluster, 4).await;
    add_node(&cluster, 4).await;

    let raw = send(
        cluster
            .http()
            .post(url(&cluster, 1, "/api/v1/cluster/nodes/4/drain"))
            .bearer_auth(&admin),
    )
    .await;
    expect_status(&raw, 200, None, "drain node 4");
    assert_eq!(draining_in_view(&cluster, 1, 4).await, Ok(true));

    cluster
        .client(1)
        .with_request_timeout(Duration::from_secs(90))
        .remove_node(4)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("remove node 4: {e}")));
    // The removed node stops by itself; wipe its data dir and add it again as new.
    cluster
        .wait_until("node 4 to stop after its removal", WAIT, || async {
            match cluster.node(4).exit_status() {
                Some(_) => Ok(()),
                None => Err("still running".to_owned()),
            }
        })
        .await;
    let dir = cluster.node(4).spec.data_dir.clone();
    std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("wipe {}: {e}", dir.display()));
    cluster.spawn(4);
    wait_healthz(&cluster, 4).await;
    add_node(&cluster, 4).await;

    for seen_by in [1, 4] {
        cluster
            .wait_until(
                &format!("node {seen_by} to list node 4 as not draining"),
                WAIT,
                || async {
                    match draining_in_view(&cluster, seen_by, 4).await? {
                        false => Ok(()),
                        true => Err("draining".to_owned()),
                    }
                },
            )
            .await;
    }
    cluster
        .wait_until("node 4 /readyz 200", WAIT, || async {
            match readyz(&cluster, 4).await? {
                (200, _) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
}

/// The answer of node `id` for `name`/`qtype`: rcode and the records' data, sorted.
async fn dns_data(
    cluster: &TestCluster,
    id: u64,
    name: &str,
    qtype: RecordType,
) -> Result<(ResponseCode, Vec<String>), String> {
    let m = udp(
        dns_addr(cluster, id),
        &query(name, qtype),
        Duration::from_secs(1),
    )
    .await
    .map_err(|e| format!("{e:#}"))?;
    let mut data: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    data.sort();
    Ok((m.metadata.response_code, data))
}

/// Polls every node until `name`/`qtype` answers `rcode` with exactly `want`.
async fn wait_dns(
    cluster: &TestCluster,
    name: &str,
    qtype: RecordType,
    rcode: ResponseCode,
    want: &[&str],
) {
    for id in 1..=3 {
        cluster
            .wait_until(
                &format!("node {id}: {name} {qtype} -> {rcode} {want:?}"),
                WAIT,
                || async {
                    match dns_data(cluster, id, name, qtype).await? {
                        (rc, data) if rc == rcode && data == want => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_are_answered_by_every_node() {
    let cluster = TestCluster::start_with(3, dns_util::dns_options(WS, 1, 10_000, 10_000)).await;
    let admin = cluster.admin_token().to_owned();
    let wiki = format!("wiki.{WS}");
    // Before: no such name.
    wait_dns(&cluster, &wiki, RecordType::A, ResponseCode::NXDomain, &[]).await;

    for (node, body) in [
        (
            1,
            json!({"name": "wiki", "type": "A", "value": "10.9.0.5", "ttl": 60}),
        ),
        (2, json!({"name": "wiki", "type": "A", "value": "10.9.0.6"})),
        (3, json!({"name": "docs", "type": "CNAME", "value": "wiki"})),
        (
            1,
            json!({"name": "_ldap._tcp.lab", "type": "SRV", "value": "10 5 389 ldap.corp.lan."}),
        ),
        (
            2,
            json!({"name": "wiki", "type": "TXT", "value": "\"owner=it\""}),
        ),
    ] {
        let raw = post_record(&cluster, node, &admin, body.clone()).await;
        expect_status(&raw, 201, None, &format!("add {body}"));
    }
    // Written through three different nodes, answered by all three.
    wait_dns(
        &cluster,
        &wiki,
        RecordType::A,
        ResponseCode::NoError,
        &["10.9.0.5", "10.9.0.6"],
    )
    .await;
    wait_dns(
        &cluster,
        &wiki,
        RecordType::TXT,
        ResponseCode::NoError,
        &["owner=it"],
    )
    .await;
    wait_dns(
        &cluster,
        &format!("docs.{WS}"),
        RecordType::A,
        ResponseCode::NoError,
        &[&format!("{wiki}.")],
    )
    .await;
    wait_dns(
        &cluster,
        &format!("_ldap._tcp.lab.{WS}"),
        RecordType::SRV,
        ResponseCode::NoError,
        &["10 5 389 ldap.corp.lan."],
    )
    .await;
    // Every node counted its answers by rcode (docs/operations.md, "Monitoring").
    for id in 1..=3 {
        for rcode in ["NXDOMAIN", "NOERROR"] {
            let series = format!("conclave_dns_queries_total{{rcode=\"{rcode}\"}}");
            let n = crate::util::metric(&cluster, id, &series).await;
            assert!(n >= 1.0, "node {id}: {series} = {n}");
        }
    }
    // An empty non-terminal exists (NODATA), a name below a record does not.
    wait_dns(
        &cluster,
        &format!("lab.{WS}"),
        RecordType::A,
        ResponseCode::NoError,
        &[],
    )
    .await;
    wait_dns(
        &cluster,
        &format!("x.wiki.{WS}"),
        RecordType::A,
        ResponseCode::NXDomain,
        &[],
    )
    .await;
    // TTLs go out as stored.
    let m = udp(
        dns_addr(&cluster, 3),
        &query(&wiki, RecordType::A),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let mut ttls: Vec<u32> = m.answers.iter().map(|r| r.ttl).collect();
    ttls.sort();
    assert_eq!(ttls, [60, 300], "per-record TTLs");
    // The cluster's own names are untouched.
    wait_answer(&cluster, 2, WS, &addrs(&cluster, &[1, 2, 3]), WAIT).await;

    // Removal: one value, then the whole name.
    let raw = delete_records(
        &cluster,
        3,
        &admin,
        &[("name", "wiki"), ("type", "A"), ("value", "10.9.0.5")],
    )
    .await;
    expect_status(&raw, 200, None, "remove one A");
    wait_dns(
        &cluster,
        &wiki,
        RecordType::A,
        ResponseCode::NoError,
        &["10.9.0.6"],
    )
    .await;
    for t in ["A", "TXT"] {
        let raw = delete_records(&cluster, 1, &admin, &[("name", "wiki"), ("type", t)]).await;
        expect_status(&raw, 200, None, &format!("remove wiki {t}"));
    }
    wait_dns(&cluster, &wiki, RecordType::A, ResponseCode::NXDomain, &[]).await;
}
