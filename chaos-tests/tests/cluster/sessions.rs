//! Sessions, must-change passwords and step-up against real `conclave` processes (issue 11,
//! items 1, 3, 4, 7):
//! - `session_idle_expiry_closes_the_websocket_with_4011`: a node whose sessions go idle after
//!   2 s (touch interval 1 s) closes an open WebSocket with 4011 between 2 and 3 s after its
//!   last use, REST refuses the token, a session in use meanwhile lives on, and the purge is
//!   logged once as `session.expired` (reason `idle`);
//! - `admin_reset_must_be_changed_with_conclavectl`: `conclavectl user reset-password` needs the
//!   admin's own password; the user's next `conclavectl login` must choose a new one; the
//!   security events of the whole story are in the log with user and source, and no password
//!   or token appears in any log.
//!
//! Needs `conclave` and `conclavectl` (`cargo build -p node -p ops`).

use std::time::{Duration, Instant};

use chaos_tests::node::conclavectl_bin;
use chaos_tests::{ADMIN_PASSWORD, ADMIN_USER, ClusterOptions, TestCluster};

use super::ctl::{Ctl, expect_ok};
use super::ws_util::{USER_PASSWORD, WsClient, create_user};

/// The lines of the `security` target with `event="<name>"` in every node's log.
fn security_lines(cluster: &TestCluster, event: &str) -> Vec<String> {
    let needle = format!("event=\"{event}\"");
    cluster
        .live_ids()
        .into_iter()
        .flat_map(|id| {
            cluster
                .node(id)
                .log_text()
                .lines()
                .filter(|l| l.contains(&needle))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn wait_for_event(cluster: &TestCluster, event: &str, user: &str) -> String {
    let user_field = format!("user={user}");
    cluster
        .wait_until(
            &format!("security event {event} of {user} in the log"),
            Duration::from_secs(15),
            || async {
                security_lines(cluster, event)
                    .into_iter()
                    .find(|l| l.contains(&user_field))
                    .ok_or_else(|| format!("no {event} line for {user} yet"))
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_idle_expiry_closes_the_websocket_with_4011() {
    let cluster = TestCluster::start_with(
        1,
        ClusterOptions::default()
            .top_level("session_idle_secs", "2")
            .top_level("session_touch_interval_secs", "1"),
    )
    .await;
    create_user(&cluster, "carol").await;
    let carol = cluster.login_client(1, "carol", USER_PASSWORD).await;
    let token = carol.token().expect("token").to_owned();
    let admin = cluster.login_client(1, ADMIN_USER, ADMIN_PASSWORD).await;
    let mut ws = WsClient::open(&cluster, 1, &token).await;
    let opened = Instant::now();
    // Meanwhile the admin's session is used every 500 ms: it must outlive carol's.
    let keep = async {
        while opened.elapsed() < Duration::from_secs(5) {
            if let Err(e) = admin.me().await {
                return Err(format!("the admin's session in use ended: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    };
    let (closed, kept) = tokio::join!(ws.conn.expect_close(Duration::from_secs(15)), keep);
    if let Err(e) = kept {
        cluster.fail(&e);
    }
    let elapsed = opened.elapsed();
    match closed {
        Ok(info) if info.code == Some(4011) => {}
        other => cluster.fail(&format!(
            "carol's idle socket: expected 4011, got {other:?}"
        )),
    }
    // Idle 2 s, plus up to one touch interval (1 s); the login came a moment before `opened`.
    assert!(
        elapsed >= Duration::from_millis(1_500) && elapsed <= Duration::from_secs(6),
        "closed after {elapsed:?}"
    );
    match carol.me().await {
        Err(e) if e.status() == Some(401) => {}
        other => cluster.fail(&format!("REST with the idle token: {other:?}")),
    }
    admin
        .me()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("the admin's session: {e}")));
    // The purge happens at the first entry after the deadline (the admin's touches are
    // entries) and is logged once, by the leader.
    let line = wait_for_event(&cluster, "session.expired", "carol").await;
    assert!(line.contains("reason=\"idle\""), "{line}");
    // Carol has two sessions (the helper's first login, and this test's): each is logged
    // once, under its own session id.
    let carols: Vec<String> = security_lines(&cluster, "session.expired")
        .into_iter()
        .filter(|l| l.contains("user=carol"))
        .collect();
    let ids: std::collections::BTreeSet<&str> = carols
        .iter()
        .filter_map(|l| l.split("session_id=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(
        ids.len(),
        carols.len(),
        "a session.expired logged twice: {carols:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reset_must_be_changed_with_conclavectl() {
    let cluster = TestCluster::start(1).await;
    create_user(&cluster, "dave").await;
    let bin = conclavectl_bin().unwrap_or_else(|e| cluster.fail(&format!("{e:#}")));
    let ctl = Ctl::new(bin, &cluster);
    let server = format!("http://{}", cluster.api_addr(1));
    expect_ok(&cluster, &ctl.login(&server).await);

    // Without the admin's own password: refused, nothing changes.
    let wrong = ctl
        .run_env(
            &[
                "user",
                "reset-password",
                "dave",
                "--password",
                "reset by the admin 1",
            ],
            &[("CONCLAVE_PASSWORD", "not the admin password")],
        )
        .await;
    assert_eq!(wrong.code, Some(1), "{wrong}");
    assert!(wrong.stderr.contains("step_up_failed"), "{wrong}");
    let ok = ctl
        .run_env(
            &[
                "user",
                "reset-password",
                "dave",
                "--password",
                "reset by the admin 1",
            ],
            &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)],
        )
        .await;
    expect_ok(&cluster, &ok);

    // The REST answer says it must change; nothing else is allowed.
    let mut rest = cluster.client(1);
    let login = rest
        .login("dave", "reset by the admin 1")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("dave's login: {e}")));
    assert!(login.must_change_password);
    match rest.me().await {
        Err(e) if e.code() == Some("password_change_required") => {}
        other => cluster.fail(&format!("GET /me before the change: {other:?}")),
    }

    // `conclavectl login` asks for the new password and sets it.
    let dave = ctl
        .run_env(
            &["--server", &server, "login", "--username", "dave"],
            &[
                ("CONCLAVE_PASSWORD", "reset by the admin 1"),
                ("CONCLAVE_NEW_PASSWORD", "his very own secret 2"),
            ],
        )
        .await;
    expect_ok(&cluster, &dave);
    let mut again = cluster.client(1);
    let login = again
        .login("dave", "his very own secret 2")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("dave's new password: {e}")));
    assert!(!login.must_change_password);
    again
        .me()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("GET /me after the change: {e}")));

    // Dave ends his other session (the one conclavectl holds), then logs out; an admin makes
    // him an admin (step-up) and ends all his sessions.
    let mine = again
        .my_sessions()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("dave's sessions: {e}")));
    assert_eq!(mine.len(), 2, "{mine:?}");
    let other = mine
        .iter()
        .find(|s| !s.current)
        .unwrap_or_else(|| cluster.fail("no other session"));
    again
        .end_my_session(&other.id)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("end a session: {e}")));
    let mut last = cluster.client(1);
    last.login("dave", "his very own secret 2")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("dave's login: {e}")));
    again
        .logout()
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("logout: {e}")));
    expect_ok(&cluster, &ctl.login(&server).await);
    let promote = ctl
        .run_env(
            &["user", "set-role", "dave", "admin"],
            &[("CONCLAVE_PASSWORD", ADMIN_PASSWORD)],
        )
        .await;
    expect_ok(&cluster, &promote);
    let end = ctl.run(&["user", "end-sessions", "dave"]).await;
    expect_ok(&cluster, &end);
    match last.me().await {
        Err(e) if e.status() == Some(401) => {}
        other => cluster.fail(&format!("dave's session after end-sessions: {other:?}")),
    }

    // The story in the security log: each event with its user and source.
    let reset = wait_for_event(&cluster, "admin.password_reset", ADMIN_USER).await;
    assert!(
        reset.contains("target=dave") && reset.contains("source=127."),
        "{reset}"
    );
    let failed = wait_for_event(&cluster, "stepup.failure", ADMIN_USER).await;
    assert!(failed.contains("reason=\"wrong_password\""), "{failed}");
    wait_for_event(&cluster, "admin.user_created", ADMIN_USER).await;
    let changed = wait_for_event(&cluster, "password.changed", "dave").await;
    assert!(changed.contains("source=127."), "{changed}");
    let success = wait_for_event(&cluster, "login.success", "dave").await;
    assert!(success.contains("source=127."), "{success}");
    let ended_by_user = wait_for_event(&cluster, "session.ended", "dave").await;
    assert!(
        ended_by_user.contains("by=\"user\"") && ended_by_user.contains(&other.id),
        "{ended_by_user}"
    );
    wait_for_event(&cluster, "logout", "dave").await;
    let updated = wait_for_event(&cluster, "admin.user_updated", ADMIN_USER).await;
    assert!(updated.contains("target=dave"), "{updated}");
    let ended_by_admin = security_lines(&cluster, "session.ended")
        .into_iter()
        .find(|l| l.contains("by=\"admin\"") && l.contains("target=dave"))
        .unwrap_or_else(|| cluster.fail("no session.ended by an admin"));
    assert!(ended_by_admin.contains("user=admin"), "{ended_by_admin}");
    // No password or token in any log.
    let token = last.token().expect("token").to_owned();
    for id in cluster.live_ids() {
        let log = cluster.node(id).log_text();
        for secret in [
            "reset by the admin 1",
            "his very own secret 2",
            ADMIN_PASSWORD,
            token.as_str(),
        ] {
            assert!(!log.contains(secret), "node {id}'s log holds a secret");
        }
    }
}
