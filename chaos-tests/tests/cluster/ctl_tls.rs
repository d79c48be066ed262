//! Clients over HTTPS against a real 3-node cluster with TLS on (`ClusterOptions::tls`):
//! - `ctl_over_https`: `conclavectl` with `CONCLAVE_CA_FILE` logs in, creates a channel,
//!   sends and tails over `https://`; the login saved the root, so later commands of that
//!   session need no `--ca-file`; without the root every command exits 3 at once with the
//!   one "certificate not trusted … pass --ca-file" line; `ca root` over the plain port works
//!   without a root and prints the fingerprint `ca fingerprint` reports, for the same bytes the
//!   harness trusts; a command sent to the plain port is refused with the redirect named, not
//!   followed.
//! - `ops_over_https_and_wss`: the cluster view lists every node's `https_addr`; a client that
//!   trusts nothing is refused with `CertificateNotTrusted`; a WebSocket over `wss://` gets a
//!   `hello` naming every member's HTTPS address; `https://` origins of other members and of
//!   the workspace name are accepted at the upgrade, foreign ones refused; a chat session given only node 1 fails over
//!   to another node's HTTPS address after node 1 is killed and still receives messages.
//!
//! Every wait polls with a deadline.

use std::time::Duration;

use chaos_tests::{ADMIN_PASSWORD, ClusterOptions, TestCluster};
use ops::{ClientError, SessionEvent};

use super::ctl::{Ctl, expect_failure, expect_ok};

const CH: &str = "tls-general";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_over_https() {
    let bin = Ctl::locate();
    let cluster = TestCluster::start_with(3, ClusterOptions::default().tls()).await;
    let ctl = Ctl::new(bin, &cluster);
    let (u1, u2) = (cluster.url(1), cluster.url(2));
    assert!(u1.starts_with("https://"), "{u1}");

    let run = ctl.login(&format!("{u1},{u2}")).await;
    assert_eq!(expect_ok(&cluster, &run), "logged in as admin\n", "{run}");
    let run = ctl.run(&["channel", "create", CH]).await;
    expect_ok(&cluster, &run);
    let run = ctl
        .run(&["--server", &u2, "send", CH, "--id", "tls-1", "over", "tls"])
        .await;
    assert_eq!(expect_ok(&cluster, &run), "#1 sent\n", "{run}");
    let run = ctl.run(&["status"]).await;
    let status = expect_ok(&cluster, &run);
    assert!(status.contains("leader"), "{run}");
    cluster
        .wait_until("`tail` over HTTPS lists the message", WAIT, || async {
            let run = ctl.run(&["--server", &u2, "tail", CH]).await;
            if run.code != Some(0) {
                return Err(run.to_string());
            }
            if run.stdout.contains("over tls") {
                Ok(())
            } else {
                Err(run.to_string())
            }
        })
        .await;

    // No root: refused at once with the remedy, exit 3, nothing on stdout.
    // The login saved the root with the session: later commands need no --ca-file.
    let run = ctl.without_ca_file(true).run(&["channel", "list"]).await;
    assert!(expect_ok(&cluster, &run).contains(CH), "{run}");

    let untrusting = ctl.without_ca_file(false);
    let started = std::time::Instant::now();
    let run = untrusting
        .run(&["--server", &format!("{u1},{u2}"), "status"])
        .await;
    let line = expect_failure(
        &cluster,
        &run,
        3,
        "conclavectl: error: certificate not trusted",
    );
    assert!(
        line.contains("pass --ca-file with the cluster root") && line.contains("ca root"),
        "{run}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "an untrusted certificate must not be failed over for the whole deadline: {:?}",
        started.elapsed()
    );

    // The plain port redirects the API: reported (exit 2, pointing at the HTTPS address),
    // never followed, so the token is not re-sent.
    let run = ctl
        .run(&["--server", &cluster.plain_url(1), "user", "list"])
        .await;
    let line = expect_failure(&cluster, &run, 2, "conclavectl: error: ");
    assert!(
        line.contains("redirects to https://") && line.contains("use its https:// address"),
        "{run}"
    );

    // The root over the plain port, without trusting anything yet; its fingerprint is
    // printed for the operator to compare, and matches what the cluster reports.
    let out = cluster.root().join("fetched-root.pem");
    let out_s = out.to_str().expect("utf-8 temp path");
    let run = untrusting
        .run(&[
            "--server",
            &cluster.plain_url(3),
            "ca",
            "root",
            "--out",
            out_s,
        ])
        .await;
    let printed = expect_ok(&cluster, &run).to_owned();
    let fetched = std::fs::read(&out).expect("ca root wrote the file");
    let trusted = std::fs::read(cluster.ca_file().expect("TLS cluster has a root")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fetched).trim(),
        String::from_utf8_lossy(&trusted).trim(),
        "the plain port serves the root the harness trusts"
    );
    let run = ctl.run(&["ca", "fingerprint"]).await;
    let fp_out = expect_ok(&cluster, &run);
    let fingerprint = ops::root_fingerprint(&fetched).expect("a PEM certificate");
    assert!(
        printed.contains(&format!("root CA SHA-256 fingerprint: {fingerprint}")),
        "{printed}"
    );
    assert!(fp_out.contains(&fingerprint), "{fp_out} vs {fingerprint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_over_https_and_wss() {
    let cluster = TestCluster::start_with(3, ClusterOptions::default().tls()).await;

    // Every node advertises its HTTPS address in the cluster view.
    let view = cluster
        .client(2)
        .cluster()
        .await
        .expect("cluster view over HTTPS");
    for node in &view.nodes {
        let want = format!("{}:8443", cluster.ip(node.id));
        assert_eq!(node.https_addr.as_deref(), Some(want.as_str()), "{view:?}");
        assert_eq!(node.base_url(), format!("https://{want}"));
    }

    // A client that trusts no root is refused, with the reason.
    let untrusting = ops::Client::new(vec![cluster.url(1)]).unwrap();
    match untrusting.cluster().await {
        Err(ClientError::CertificateNotTrusted { reason, .. }) => {
            assert!(reason.contains("invalid peer certificate"), "{reason}");
        }
        other => cluster.fail(&format!("expected CertificateNotTrusted, got {other:?}")),
    }

    // wss://: hello names every member's HTTPS address.
    let mut conn = cluster.ws_connect(2).await.expect("wss to node 2");
    assert!(conn.url().starts_with("wss://"), "{}", conn.url());
    let hello = conn
        .auth(cluster.admin_token())
        .await
        .expect("hello over wss");
    assert_eq!(hello.nodes.len(), 3, "{hello:?}");
    cluster
        .wait_until("hello to carry every https_addr", WAIT, || async {
            let mut conn = cluster.ws_connect(2).await.map_err(|e| e.to_string())?;
            let hello = conn
                .auth(cluster.admin_token())
                .await
                .map_err(|e| e.to_string())?;
            let _ = conn.close(1000, "done").await;
            if hello.nodes.iter().all(|n| n.https_addr.is_some()) {
                Ok(())
            } else {
                Err(format!("{:?}", hello.nodes))
            }
        })
        .await;
    let _ = conn.close(1000, "done").await;

    // Origins over HTTPS: another member's HTTPS page and the workspace name on the HTTPS
    // port are the cluster's own; anything else is refused at the upgrade.
    let ws_with_origin = |origin: String| {
        let mut opts = cluster.ws_options();
        opts.origin = Some(origin);
        let url = cluster.url(2);
        async move { ops::WsConn::connect_with(&url, &opts).await }
    };
    for origin in [
        format!("https://{}:8443", cluster.ip(1)),
        format!("https://{}:8443", cluster.ip(3)),
        format!("https://{}:8443", chaos_tests::cluster::TLS_WORKSPACE),
    ] {
        let conn = ws_with_origin(origin.clone()).await;
        assert!(conn.is_ok(), "origin {origin}: {conn:?}");
    }
    for origin in [
        "https://evil.example:8443".to_owned(),
        format!("https://{}:9443", cluster.ip(1)),
    ] {
        match ws_with_origin(origin.clone()).await {
            Err(ops::WsError::Rejected { status: 403, .. }) => {}
            other => cluster.fail(&format!("origin {origin}: expected 403, got {other:?}")),
        }
    }

    // A session given only node 1 learns the others' HTTPS addresses and fails over to one.
    let admin = cluster.client(1);
    admin.create_channel(CH).await.expect("create channel");
    let mut session = cluster
        .session_builder(&[1], cluster.admin_token())
        .subscribe(CH)
        .connect_deadline(WAIT)
        .connect()
        .await
        .expect("session over wss");
    let first = session.current_node().expect("connected");
    assert_eq!(first.node_id, 1);
    cluster.kill(1);
    // The first connection's `Connected` may still be queued: wait for one to another node.
    let moved = session
        .wait_for(cluster.ready_timeout(), |event| match event {
            SessionEvent::Connected(node) if node.node_id != 1 => Some(node.clone()),
            _ => None,
        })
        .await
        .expect("the session reconnects to another node");
    assert!(
        moved.addr.ends_with(":8443"),
        "moved to an HTTPS address: {moved:?}"
    );

    let poster = cluster
        .login_client(moved.node_id, chaos_tests::ADMIN_USER, ADMIN_PASSWORD)
        .await;
    let id = ops::new_client_msg_id();
    cluster
        .wait_until("a post after the failover", WAIT, || async {
            poster
                .post_message(CH, "after failover", &id)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    session
        .wait_message(CH, |m| m.body == "after failover", WAIT)
        .await
        .expect("the session receives messages after moving");
    session.close().await;
}
