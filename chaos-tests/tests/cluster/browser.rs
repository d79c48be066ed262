//! The web client in a real browser: Debian's Chromium driven over WebDriver (chromedriver).
//!
//! Alice signs in on node 1's page and Bob on node 2's; they chat in `general`. The node
//! serving Alice is SIGKILLed; Alice presses Enter on a message she had typed at once, then
//! types a second one during the failover. Both show as pending, the page moves to a surviving
//! node by itself, each message is delivered exactly once, and both pages show the same
//! history in the same order as every surviving node's REST API.
//! A recorder in each page (a `MutationObserver`) keeps every state the DOM went through, so
//! a message that was ever rendered twice, or never shown as pending, fails the test even if
//! the final page looks right.
//!
//! Screenshots (desktop 1280x800 for both users, a 390x844 phone for Alice, with and without
//! the channel drawer) go to `$CHAOS_ARTIFACTS`, else `<temp dir>/conclave-browser-artifacts/`;
//! a failing wait saves `browser-failure-*.png` there too.
//!
//! `browser_chat_over_https_survives_a_node_kill` runs the same scenario on a cluster with TLS
//! on (`ClusterOptions::tls`): the pages load from `https://<node>:8443`, the sockets are
//! `wss://`, and the page fails over to another node's HTTPS address. Chromium is told to
//! accept the cluster's certificates by their public keys
//! (`--ignore-certificate-errors-spki-list`, the SHA-256 of the SPKI of the root and of every
//! certificate in the nodes' chains), the closest a throwaway profile gets to "root installed".
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian: `apt-get install chromium
//! chromium-driver`). Without them the test prints why and passes, unless
//! `CHAOS_REQUIRE_BROWSER` is set (`.ci/run` sets it), when it fails.

use std::collections::HashSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chaos_tests::checks::{self, Msg, NodeView};
use chaos_tests::netns::ClientNetns;
use chaos_tests::wait::poll_until;
use chaos_tests::{ClusterOptions, TestCluster};
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use ops::{NewUser, Role};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::util::create_channel;

/// Not on the server's list of common passwords.
pub(crate) const PASSWORD: &str = "browser-pass-phrase-1";
pub(crate) const CHANNEL: &str = "general";
pub(crate) const DESKTOP: (u32, u32) = (1280, 800);
/// A phone in portrait (CSS pixels), rendered at 3x.
const PHONE: (u32, u32, u32) = (390, 844, 3);
/// Sign-in, a message round trip, a screenshot on a healthy cluster.
pub(crate) const PAGE_WAIT: Duration = Duration::from_secs(20);
/// From the SIGKILL until the page is connected to a survivor and the message is sent.
const FAILOVER_WAIT: Duration = Duration::from_secs(20);
/// One WebDriver command.
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_chat_survives_a_node_kill() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_chat_over_https_survives_a_node_kill() {
    scenario(true).await;
}

/// The scenario of the module docs, over plain HTTP or (`tls`) over HTTPS.
/// Session expiry in the web client (issue 11, item 3): alice's page has a message in its
/// outbox (typed while her node was down) when her session goes idle; when the node is back the
/// socket is closed as the session ended (4011), the page asks for the password again, and
/// after signing in the message typed while logged out is delivered, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_reprompts_after_session_expiry_and_keeps_the_outbox() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let cluster = TestCluster::start_with(
        1,
        ClusterOptions::default()
            .top_level("session_idle_secs", "3")
            .top_level("session_touch_interval_secs", "1"),
    )
    .await;
    let browsers = signed_in(&cluster, &tools, [ALICE]).await;
    let [alice] = &browsers.pages;
    let run = browsers.run(&cluster);
    run.send(alice, "before the expiry").await;
    let last_use = Instant::now();

    // The node goes down; alice types a message, which waits in the outbox.
    cluster.kill(1);
    let typed = "typed while logged out";
    run.type_message(alice, typed).await;
    run.wait(
        "the typed message to wait in the outbox",
        PAGE_WAIT,
        || async {
            let s = alice.state().await?;
            match s.messages.iter().find(|m| m.body == typed) {
                Some(m) if m.seq.is_none() => Ok(()),
                m => Err(format!("{m:?}")),
            }
        },
    )
    .await;
    // The session's idle window (3 s, plus the 1 s touch interval) passes meanwhile: the
    // condition here is time itself, measured from her last use.
    run.wait(
        "alice's idle window to pass",
        Duration::from_secs(20),
        || async {
            if last_use.elapsed() > Duration::from_millis(5_500) {
                Ok(())
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err("not yet".to_owned())
            }
        },
    )
    .await;
    cluster.restart(1).await;

    // The page reconnects, is refused as the session ended, and asks for the password again.
    let message = run
        .wait(
            "alice's page to ask for the password again",
            PAGE_WAIT,
            || async {
                let v = alice
                    .js(
                        "return document.body.dataset.view === 'login' \
                       ? document.getElementById('login-error').textContent : null;",
                        vec![],
                    )
                    .await?;
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("view: {v}"))
            },
        )
        .await;
    if !message.contains("session has ended") {
        run.fail::<()>(&format!("the sign-in form says {message:?}"))
            .await;
    }
    // She answers the prompt with her password (the form kept her username; no reload), and
    // the outbox is sent with its original client_msg_id.
    let username = run
        .ok(alice
            .js(
                "return document.getElementById('login-username').value;",
                vec![],
            )
            .await)
        .await;
    assert_eq!(username, json!("alice"), "the prompt keeps the username");
    run.ok(alice.type_into("#login-password", PASSWORD).await)
        .await;
    run.ok(alice.click("#login-submit").await).await;
    let item = format!("#channel-list [data-channel=\"{CHANNEL}\"]");
    run.wait(
        "alice's channel list after signing in again",
        PAGE_WAIT,
        || async { alice.find(&item).await.map(|_| ()) },
    )
    .await;
    run.ok(alice.click(&item).await).await;
    run.wait(
        "the message typed while logged out to be sent",
        FAILOVER_WAIT,
        || async {
            let s = alice.state().await?;
            let shown: Vec<_> = s.messages.iter().filter(|m| m.body == typed).collect();
            match shown.as_slice() {
                [m] if m.state == "sent" && m.seq.is_some() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // Exactly once in the channel, as the cluster has it.
    // A fresh admin session: the harness's own went idle too.
    let admin = cluster
        .login_client(1, chaos_tests::ADMIN_USER, chaos_tests::ADMIN_PASSWORD)
        .await;
    let page = admin
        .list_messages(CHANNEL, 0, 100, None)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("read #{CHANNEL}: {e}")));
    let count = page.messages.iter().filter(|m| m.body == typed).count();
    assert_eq!(count, 1, "{typed:?} is in #{CHANNEL} {count} times");
}

/// An account an admin created signs in with the admin's password, is asked for a new one in
/// the sign-in form, and gets into the workspace with it (issue 11, item 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_asks_for_a_new_password_after_an_admin_set_one() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let cluster = TestCluster::start(1).await;
    let user = NewUser {
        username: "frank".to_owned(),
        password: PASSWORD.to_owned(),
        role: Role::Member,
        display_name: None,
    };
    cluster
        .client(1)
        .create_user_with(&user)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("create frank: {e}")));
    let frank = User {
        name: "frank",
        display: "Frank",
        node: 1,
    };
    let browsers = Browsers::open(&cluster, &tools, [frank]).await;
    let [frank] = &browsers.pages;
    let run = browsers.run(&cluster);
    run.ok(frank.goto(&format!("{}/", cluster.url(1))).await)
        .await;
    run.wait("the sign-in form", PAGE_WAIT, || async {
        frank.find("#login-username").await.map(|_| ())
    })
    .await;
    run.ok(frank.type_into("#login-username", "frank").await)
        .await;
    run.ok(frank.type_into("#login-password", PASSWORD).await)
        .await;
    run.ok(frank.click("#login-submit").await).await;
    run.wait("the new-password field", PAGE_WAIT, || async {
        let v = frank
            .js(
                "return !document.getElementById('login-new-field').hidden;",
                vec![],
            )
            .await?;
        if v == json!(true) {
            Ok(())
        } else {
            Err(format!("hidden: {v}"))
        }
    })
    .await;
    let new_password = "a very own secret 77";
    run.ok(frank.type_into("#login-new-password", new_password).await)
        .await;
    run.ok(frank.click("#login-submit").await).await;
    run.wait("frank's workspace", PAGE_WAIT, || async {
        let s = frank.state().await?;
        if s.view == "app" {
            Ok(())
        } else {
            Err(format!("view {}", s.view))
        }
    })
    .await;
    // The new password is his now, and nothing is required any more.
    let mut check = cluster.client(1);
    let login = check
        .login("frank", new_password)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("frank's new password: {e}")));
    assert!(!login.must_change_password);
}

async fn scenario(tls: bool) {
    let Some(tools) = browser_tools() else {
        return;
    };
    let started = Instant::now();
    let opts = if tls {
        ClusterOptions::default().tls()
    } else {
        ClusterOptions::default()
    };
    let cluster = TestCluster::start_with(3, opts).await;
    if tls {
        assert!(cluster.url(1).starts_with("https://"), "{}", cluster.url(1));
    }

    // 1. Sign in on different nodes, open #general, wait until each socket is subscribed.
    let browsers = two_users(&cluster, &tools).await;
    let [alice, bob] = &browsers.pages;
    let run = browsers.run(&cluster);
    eprintln!("browser sessions signed in after {:.1?}", started.elapsed());
    let alice_node = run.connected_node(alice).await;
    let bob_node = run.connected_node(bob).await;
    if (alice_node, bob_node) != (1, 2) {
        run.fail::<()>(&format!(
            "a page connects to the node it was loaded from first: alice's page (node 1) is on \
             node {alice_node}, bob's page (node 2) on node {bob_node}"
        ))
        .await;
    }

    // 2. Chat both ways; each message is sent before the next is typed.
    let mut expected: Vec<(&str, String)> = Vec::new();
    let before = [
        (alice, "Hi Bob, Alice here on node 1."),
        (bob, "Hello Alice! Bob on node 2, reading you fine."),
        (alice, "Shall we test the failover?"),
        (bob, "Go ahead, I am watching."),
    ];
    for (page, body) in before {
        run.send(page, body).await;
        expected.push((page.who, body.to_owned()));
        run.wait_delivered(&expected).await;
    }

    // 3. Alice has a message ready in the composer when her node is SIGKILLed and presses
    //    Enter at once (the send meets a dying socket); then she types a second one while the
    //    page looks for another node. Both must show as pending.
    let killed = alice_node;
    let first = format!("Sent the moment node {killed} died.");
    let second = "And this one, typed during the failover.";
    run.ok(alice.type_into("#composer", &first).await).await;
    for page in run.pages {
        run.ok(page.install_recorder().await).await;
    }
    let killed_at_ms = now_ms();
    let killed_at = Instant::now();
    cluster.kill(killed);
    run.ok(alice.type_into("#composer", &Key::Enter.to_string()).await)
        .await;
    let entered_in = killed_at.elapsed();
    run.type_message(alice, second).await;
    let typed_in = killed_at.elapsed();
    let outage = [first.as_str(), second];
    for body in outage {
        expected.push(("alice", body.to_owned()));
    }

    // 4. The page reconnects to a survivor by itself; the messages are sent, Bob sees each once.
    let new_node = run
        .wait(
            &format!("alice's page to reconnect to a node other than {killed}"),
            FAILOVER_WAIT,
            || async {
                let s = alice.state().await?;
                match (s.conn.as_str(), s.node) {
                    ("connected", Some(n)) if n != killed && s.ready == "1" => Ok(n),
                    _ => Err(format!(
                        "#conn-status {} node {:?}, ready {}",
                        s.conn, s.node, s.ready
                    )),
                }
            },
        )
        .await;
    let reconnected_in = killed_at.elapsed();
    run.wait_delivered(&expected).await;
    let delivered_in = killed_at.elapsed();

    let alice_rec = run.ok(alice.recording().await).await;
    let bob_rec = run.ok(bob.recording().await).await;
    let mut problems = Vec::new();
    problems.extend(never_twice("alice", &alice_rec));
    problems.extend(never_twice("bob", &bob_rec));
    problems.extend(outage_history(&alice_rec, &outage, killed, killed_at_ms));
    if !problems.is_empty() {
        run.fail::<()>(&format!(
            "what the pages showed during the failover:\n{}\nalice's page went through \
             (ms after the kill):\n{}\nbob's:\n{}",
            problems.join("\n"),
            describe(&alice_rec, killed_at_ms),
            describe(&bob_rec, killed_at_ms)
        ))
        .await;
    }
    eprintln!(
        "node {killed} SIGKILLed; Enter pressed after {entered_in:.1?}, the second message typed \
         by {typed_in:.1?}; alice's page was connected to node {new_node} after \
         {reconnected_in:.1?}; both messages were sent and on bob's page after \
         {delivered_in:.1?}\nalice's page during the failover (ms after the kill):\n{}",
        describe(&alice_rec, killed_at_ms)
    );

    // 5. The conversation goes on after the failover.
    let after = [
        (bob, "Got it exactly once. Welcome back!"),
        (alice, "Still here, now through another node."),
    ];
    for (page, body) in after {
        run.send(page, body).await;
        expected.push((page.who, body.to_owned()));
        run.wait_delivered(&expected).await;
    }

    // 6. Both pages and every surviving node hold the same history in the same order.
    let final_a = run.ok(alice.state().await).await;
    let final_b = run.ok(bob.state().await).await;
    let survivors = cluster.live_ids();
    let views = cluster
        .wait_converged(CHANNEL, &survivors, None, expected.len() as u64)
        .await;
    cluster.check(checks::no_duplicates(&views));
    cluster.check(checks::same_order_on_every_node(&views));
    let rest = &views[0].messages;
    let problems = compare_histories(&expected, &final_a.messages, &final_b.messages, &views);
    if !problems.is_empty() {
        run.fail::<()>(&format!(
            "histories differ:\n{}\nexpected {expected:?}\nalice's page {:?}\nbob's page {:?}\n\
             node {} over REST {:?}",
            problems.join("\n"),
            final_a.messages,
            final_b.messages,
            views[0].node_id,
            rest
        ))
        .await;
    }
    // Nothing was shown twice at any moment since the kill, on either page.
    let mut problems = Vec::new();
    for page in run.pages {
        let rec = run.ok(page.recording().await).await;
        problems.extend(never_twice(page.who, &rec));
    }
    if !problems.is_empty() {
        run.fail::<()>(&problems.join("\n")).await;
    }
    for m in rest {
        eprintln!("  seq {} {}: {}", m.seq, m.author, m.body);
    }

    // The HTTPS variant's screenshots get their own names (the two tests may run together).
    let shot = |name: &str| {
        if tls {
            format!("https-{name}")
        } else {
            name.to_owned()
        }
    };
    // 7. Screenshots: both desktops, then Alice's page as a phone, with and without the drawer.
    let mut shots = Vec::new();
    for page in run.pages {
        let path = run
            .screenshot(page, &shot("desktop"), DESKTOP.0, DESKTOP.1)
            .await;
        shots.push(path);
    }
    run.ok(alice.emulate_phone(PHONE.0, PHONE.1, PHONE.2).await)
        .await;
    let (pw, ph) = (PHONE.0 * PHONE.2, PHONE.1 * PHONE.2);
    shots.push(run.screenshot(alice, &shot("phone"), pw, ph).await);
    run.ok(alice.click("#btn-drawer").await).await;
    run.wait("the phone drawer to open", PAGE_WAIT, || async {
        alice.drawer_open().await
    })
    .await;
    shots.push(run.screenshot(alice, &shot("phone-drawer"), pw, ph).await);
    for s in &shots {
        eprintln!("screenshot: {}", s.display());
    }

    alice.close().await;
    bob.close().await;
    drop(browsers);
    eprintln!("browser test done in {:.1?}", started.elapsed());
}

// ----- the scenario's steps ------------------------------------------------------------------

/// What the steps need from the cluster under test (processes here, containers in
/// `docker_browser`): where node `node`'s page is, and a failure with every node's log tail.
pub(crate) trait Nodes {
    fn page_url(&self, node: u64) -> String;
    fn fail_with_logs(&self, report: &str) -> !;
}

impl Nodes for TestCluster {
    fn page_url(&self, node: u64) -> String {
        format!("{}/", self.url(node))
    }

    fn fail_with_logs(&self, report: &str) -> ! {
        self.fail(report)
    }
}

/// The cluster and both pages: every failed step saves a screenshot of each page and panics
/// with the pages' state and every node's log tail.
pub(crate) struct Run<'a> {
    pub(crate) cluster: &'a dyn Nodes,
    pub(crate) pages: [&'a Page; 2],
    pub(crate) artifacts: PathBuf,
}

impl Run<'_> {
    pub(crate) async fn ok<T>(&self, r: Result<T, String>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&e).await,
        }
    }

    /// Saves a screenshot of each page and panics with `msg`, the pages' state and the nodes'
    /// logs. (Generic rather than `-> !`, which an `async fn` cannot return.)
    pub(crate) async fn fail<T>(&self, msg: &str) -> T {
        let mut report = format!("{msg}\n");
        for page in self.pages {
            let name = format!("failure-{}", page.who);
            match page.screenshot().await {
                Ok(png) => match save(&self.artifacts, &name, &png) {
                    Ok(p) => {
                        report.push_str(&format!("screenshot of {}: {}\n", page.who, p.display()))
                    }
                    Err(e) => report.push_str(&format!("screenshot of {}: {e}\n", page.who)),
                },
                Err(e) => report.push_str(&format!("no screenshot of {}: {e}\n", page.who)),
            }
            match page.state().await {
                Ok(s) => report.push_str(&format!("{}'s page: {s:?}\n", page.who)),
                Err(e) => report.push_str(&format!("{}'s page: {e}\n", page.who)),
            }
        }
        self.cluster.fail_with_logs(&report)
    }

    /// Polls `check` until it holds (see [`poll_until`]); fails the test otherwise.
    pub(crate) async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        match poll_until(what, timeout, check).await {
            Ok(v) => v,
            Err(e) => self.fail(&format!("{e:#}")).await,
        }
    }

    /// Loads node `node`'s page, signs in, opens #general and waits for `body[data-ready=1]`.
    pub(crate) async fn sign_in(&self, page: &Page, node: u64) {
        self.sign_in_at(page, &self.cluster.page_url(node)).await;
    }

    /// [`Run::sign_in`] on the page at `url` (`https://<workspace>/` in `docker_browser`).
    pub(crate) async fn sign_in_at(&self, page: &Page, url: &str) {
        self.ok(page.goto(url).await).await;
        let host = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        // A first load can meet a network error (Chromium's error page, `chrome-error://`):
        // once, the test does what a user does and reloads; what the error page said is kept
        // for the report. A second error page fails the test like any other timeout.
        let reloaded: Mutex<Option<String>> = Mutex::new(None);
        let workspace = self
            .wait(
                &format!("{}'s sign-in form", page.who),
                PAGE_WAIT,
                || async {
                    let v = page
                        .js(
                            "return document.body?.dataset.view === 'login' \
                           ? document.getElementById('login-workspace').value \
                           : { view: document.body?.dataset.view ?? null, url: location.href, \
                               text: (document.body?.innerText ?? '').slice(0, 200) };",
                            vec![],
                        )
                        .await?;
                    if let Some(ws) = v.as_str() {
                        return Ok(ws.to_owned());
                    }
                    let on_error_page = v["url"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("chrome-error://"));
                    let first_error = {
                        let mut r = reloaded.lock().map_err(|e| e.to_string())?;
                        if on_error_page && r.is_none() {
                            *r = Some(v.to_string());
                            true
                        } else {
                            false
                        }
                    };
                    if first_error {
                        eprintln!("{}'s first load of {url} failed ({v}); reloading", page.who);
                        page.goto(url).await?;
                    }
                    let earlier = reloaded
                        .lock()
                        .map_err(|e| e.to_string())?
                        .clone()
                        .map(|e| format!(" (after a reload; the first load showed {e})"))
                        .unwrap_or_default();
                    Err(format!("page: {v}{earlier}"))
                },
            )
            .await;
        if workspace != host {
            self.fail::<()>(&format!(
                "{}'s sign-in form offers workspace {workspace:?}, the page is {host}",
                page.who
            ))
            .await;
        }
        self.ok(page.type_into("#login-username", page.who).await)
            .await;
        self.ok(page.type_into("#login-password", PASSWORD).await)
            .await;
        self.ok(page.click("#login-submit").await).await;
        let item = format!("#channel-list [data-channel=\"{CHANNEL}\"]");
        self.wait(
            &format!("{}'s channel list", page.who),
            PAGE_WAIT,
            || async { page.find(&item).await.map(|_| ()) },
        )
        .await;
        self.ok(page.click(&item).await).await;
        self.wait(
            &format!("{}'s page to show #{CHANNEL}, subscribed", page.who),
            PAGE_WAIT,
            || async {
                let s = page.state().await?;
                if s.view == "app" && s.ready == "1" && s.hash == format!("#/c/{CHANNEL}") {
                    Ok(())
                } else {
                    Err(format!(
                        "view {}, ready {}, hash {}",
                        s.view, s.ready, s.hash
                    ))
                }
            },
        )
        .await;
    }

    async fn connected_node(&self, page: &Page) -> u64 {
        let s = self.ok(page.state().await).await;
        match (s.conn.as_str(), s.node) {
            ("connected", Some(n)) => n,
            _ => {
                self.fail(&format!(
                    "{}'s #conn-status says {} (node {:?})",
                    page.who, s.conn, s.node
                ))
                .await
            }
        }
    }

    /// Types `body` and Enter into the composer.
    pub(crate) async fn type_message(&self, page: &Page, body: &str) {
        let keys = format!("{body}{}", Key::Enter);
        let r = page.type_into("#composer", &keys).await;
        self.ok(r).await;
    }

    /// Types `body` on a healthy page and waits until it is sent.
    pub(crate) async fn send(&self, page: &Page, body: &str) {
        self.type_message(page, body).await;
        self.wait(
            &format!("{body:?} sent by {}", page.who),
            PAGE_WAIT,
            || async {
                let s = page.state().await?;
                match s.messages.iter().find(|m| m.body == body) {
                    Some(m) if m.state == "sent" && m.seq.is_some() => Ok(()),
                    m => Err(format!("{m:?}")),
                }
            },
        )
        .await;
    }

    /// Waits until both pages show exactly `expected` (author, body) in order, every message
    /// with a seq and sent.
    pub(crate) async fn wait_delivered(&self, expected: &[(&str, String)]) {
        let what = format!("both pages to show the {} messages, sent", expected.len());
        self.wait(&what, FAILOVER_WAIT, || async {
            for page in self.pages {
                let s = page.state().await?;
                let shown: Vec<(&str, &str)> = s
                    .messages
                    .iter()
                    .map(|m| (m.author.as_str(), m.body.as_str()))
                    .collect();
                let want: Vec<(&str, &str)> =
                    expected.iter().map(|(a, b)| (*a, b.as_str())).collect();
                let settled = s
                    .messages
                    .iter()
                    .all(|m| m.state == "sent" && m.seq.is_some());
                if shown != want || !settled {
                    return Err(format!("{}'s page shows {:?}", page.who, s.messages));
                }
            }
            Ok(())
        })
        .await
    }

    /// Saves a screenshot of `page` after checking its pixel size; returns the path.
    pub(crate) async fn screenshot(
        &self,
        page: &Page,
        name: &str,
        width: u32,
        height: u32,
    ) -> PathBuf {
        // Let transitions (the drawer, the composer) finish first.
        self.wait(
            &format!("{}'s page to settle", page.who),
            PAGE_WAIT,
            || async {
                let v = page
                    .js(
                        "return document.getAnimations().filter((a) => a.playState === 'running' \
                       && a instanceof CSSTransition).length;",
                        vec![],
                    )
                    .await?;
                if v.as_u64() == Some(0) {
                    Ok(())
                } else {
                    Err(format!("{v} transitions running"))
                }
            },
        )
        .await;
        let png = self.ok(page.screenshot().await).await;
        match png_size(&png) {
            Some(size) if size == (width, height) => {}
            size => {
                self.fail::<()>(&format!(
                    "{}'s {name} screenshot is {size:?} pixels, expected {width}x{height}",
                    page.who
                ))
                .await
            }
        }
        let file = format!("{}-{name}", page.who);
        let r = save(&self.artifacts, &file, &png);
        self.ok(r).await
    }
}

// ----- setup through the API ------------------------------------------------------------------

pub(crate) async fn create_user(cluster: &TestCluster, name: &str, display: &str) {
    let user = NewUser {
        username: name.to_owned(),
        password: PASSWORD.to_owned(),
        role: Role::Member,
        display_name: Some(display.to_owned()),
    };
    cluster
        .wait_until(
            &format!("user {name} created"),
            cluster.ready_timeout(),
            || async {
                match cluster.client_all().create_user_with(&user).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("user_exists") => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
    // An admin chose the password: its forced first change happens here, through the API,
    // so the pages log in with it as before (the must-change prompt has its own test).
    let live = cluster.live_ids();
    cluster.login_client(live[0], name, PASSWORD).await;
}

pub(crate) async fn join(cluster: &TestCluster, node: u64, user: &str) {
    let client = cluster.login_client(node, user, PASSWORD).await;
    cluster
        .wait_until(
            &format!("{user} joins #{CHANNEL}"),
            cluster.ready_timeout(),
            || async {
                client
                    .join_channel(CHANNEL)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await
}

// ----- the common setup: users, their channel, their signed-in pages ----------------------------

/// A user of a browser test: created with [`PASSWORD`], a member of [`CHANNEL`] (joined
/// through `node`), whose page is loaded from `node`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct User {
    pub(crate) name: &'static str,
    pub(crate) display: &'static str,
    pub(crate) node: u64,
}

pub(crate) const ALICE: User = User {
    name: "alice",
    display: "Alice",
    node: 1,
};
/// On node 2: the two-user tests chat across nodes.
pub(crate) const BOB: User = User {
    name: "bob",
    display: "Bob",
    node: 2,
};

impl User {
    /// The same user on node `node`'s page.
    pub(crate) const fn on(self, node: u64) -> User {
        User { node, ..self }
    }
}

/// Creates `users` and [`CHANNEL`], and makes each user a member through its node.
pub(crate) async fn members(cluster: &TestCluster, users: &[User]) {
    for u in users {
        create_user(cluster, u.name, u.display).await;
    }
    create_channel(cluster, CHANNEL).await;
    for u in users {
        join(cluster, u.node, u.name).await;
    }
}

/// One page per user and the chromedriver running them.
pub(crate) struct Browsers<const N: usize> {
    /// Declared before the driver: fields drop in order, so the sessions end before the
    /// driver's guard kills chromedriver's process group (Chromium included).
    pub(crate) pages: [Page; N],
    pub(crate) users: [User; N],
    driver: ChromeDriver,
}

impl<const N: usize> Browsers<N> {
    /// Starts chromedriver and opens a page per user at the desktop viewport, not signed in.
    /// On a TLS cluster Chromium accepts the cluster's certificates (see
    /// [`cluster_spki_hashes`]).
    pub(crate) async fn open(cluster: &TestCluster, tools: &Tools, users: [User; N]) -> Self {
        let mut driver = ChromeDriver::start(tools).unwrap_or_else(|e| panic!("{e}"));
        if cluster.ca_file().is_some() {
            let spkis = cluster_spki_hashes(cluster);
            driver.extra_args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                spkis.join(",")
            ));
        }
        let mut pages = Vec::with_capacity(N);
        for u in users {
            pages.push(driver.open(u.name).await.unwrap_or_else(|e| panic!("{e}")));
        }
        let Ok(pages) = <[Page; N]>::try_from(pages) else {
            unreachable!("one page per user")
        };
        let browsers = Browsers {
            pages,
            users,
            driver,
        };
        let run = browsers.run(cluster);
        for page in &browsers.pages {
            run.ok(page.set_viewport(DESKTOP.0, DESKTOP.1).await).await;
        }
        browsers
    }

    /// The steps over these pages: a failed one shows the first and the last page (the one
    /// page twice when there is one user).
    pub(crate) fn run<'a>(&'a self, cluster: &'a TestCluster) -> Run<'a> {
        Run {
            cluster,
            pages: [&self.pages[0], &self.pages[N - 1]],
            artifacts: artifacts_dir(),
        }
    }

    /// One more session (another tab of a user, an admin), on the same chromedriver.
    pub(crate) async fn open_page(&self, who: &'static str) -> Page {
        self.driver
            .open(who)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Signs each page in on its user's node, with #[`CHANNEL`] open and subscribed.
    pub(crate) async fn sign_in(&self, run: &Run<'_>) {
        for (page, user) in self.pages.iter().zip(&self.users) {
            run.sign_in(page, user.node).await;
        }
    }
}

/// The setup most browser tests share: `users` created and members of [`CHANNEL`], each
/// signed in on its node's page at the desktop viewport.
pub(crate) async fn signed_in<const N: usize>(
    cluster: &TestCluster,
    tools: &Tools,
    users: [User; N],
) -> Browsers<N> {
    members(cluster, &users).await;
    let browsers = Browsers::open(cluster, tools, users).await;
    browsers.sign_in(&browsers.run(cluster)).await;
    browsers
}

/// [`ALICE`] on node 1's page and [`BOB`] on node 2's, signed in to #[`CHANNEL`].
pub(crate) async fn two_users(cluster: &TestCluster, tools: &Tools) -> Browsers<2> {
    signed_in(cluster, tools, [ALICE, BOB]).await
}

// ----- what the pages showed -------------------------------------------------------------------

/// A `.message` element of the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DomMsg {
    pub(crate) seq: Option<u64>,
    pub(crate) state: String,
    pub(crate) author: String,
    pub(crate) client_msg_id: String,
    pub(crate) body: String,
}

/// What a page shows that the test looks at.
#[derive(Clone, Debug)]
pub(crate) struct PageState {
    /// Where the page is (a Chromium error page is `chrome-error://chromewebdata/`), its title
    /// and the start of its text: what a failure report needs when the app never started.
    /// Read only through `Debug`, in failure reports.
    #[allow(dead_code)]
    pub(crate) url: String,
    #[allow(dead_code)]
    pub(crate) title: String,
    #[allow(dead_code)]
    pub(crate) text: String,
    pub(crate) view: String,
    pub(crate) ready: String,
    pub(crate) hash: String,
    /// `#conn-status[data-state]` and `[data-node-id]`.
    pub(crate) conn: String,
    pub(crate) node: Option<u64>,
    pub(crate) messages: Vec<DomMsg>,
}

/// One entry of a page's recording: the state after a DOM change, at browser time `t` (ms).
#[derive(Clone, Debug)]
pub(crate) struct Snap {
    t: u64,
    conn: String,
    node: Option<u64>,
    messages: Vec<DomMsg>,
}

/// JS: the timeline's messages, in document order.
const MESSAGES_JS: &str = "const messages = () => [...document.querySelectorAll('#timeline .message')]\
    .map((el) => ({ seq: el.dataset.seq ?? null, state: el.dataset.state ?? '', \
      author: el.dataset.author ?? '', client_msg_id: el.dataset.clientMsgId ?? '', \
      body: el.querySelector('.body')?.textContent ?? '' }));\n";

fn str_field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn num_field(v: &Value, key: &str) -> Option<u64> {
    match &v[key] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_messages(v: &Value) -> Vec<DomMsg> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| DomMsg {
                    seq: num_field(m, "seq"),
                    state: str_field(m, "state"),
                    author: str_field(m, "author"),
                    client_msg_id: str_field(m, "client_msg_id"),
                    body: str_field(m, "body"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Problems: a snapshot in which one message (by body or by seq) is shown twice.
pub(crate) fn never_twice(who: &str, rec: &[Snap]) -> Vec<String> {
    let mut problems = Vec::new();
    for s in rec {
        let mut bodies = HashSet::new();
        let mut seqs = HashSet::new();
        for m in &s.messages {
            if !bodies.insert(&m.body) || m.seq.is_some_and(|q| !seqs.insert(q)) {
                problems.push(format!(
                    "{who}'s page showed a message twice at t={}: {m:?} in {:?}",
                    s.t, s.messages
                ));
            }
        }
    }
    problems
}

/// Problems with how Alice's page showed the messages sent during the outage: each must
/// first appear pending (no seq), the page must leave the killed node and come back on another
/// one, and each message must show as sent only while connected to another node.
fn outage_history(rec: &[Snap], bodies: &[&str], killed: u64, killed_at_ms: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let left = rec
        .iter()
        .position(|s| s.t >= killed_at_ms && s.conn != "connected");
    match left {
        None => problems.push(format!(
            "#conn-status never left \"connected\" after node {killed} was killed"
        )),
        Some(i) => {
            let back = rec[i..]
                .iter()
                .find(|s| s.conn == "connected")
                .map(|s| s.node);
            if back.is_none() || back == Some(Some(killed)) {
                problems.push(format!(
                    "after the kill the page came back connected to node {back:?}"
                ));
            }
        }
    }
    for body in bodies {
        let with = |s: &Snap| s.messages.iter().find(|m| m.body == *body).cloned();
        match rec.iter().find_map(with) {
            None => problems.push(format!("{body:?} never appeared")),
            Some(m) if m.state != "pending" || m.seq.is_some() => {
                problems.push(format!("{body:?} first appeared as {m:?}, not pending"))
            }
            Some(_) => {}
        }
        match rec
            .iter()
            .find(|s| with(s).is_some_and(|m| m.state == "sent"))
        {
            Some(s) if s.conn != "connected" || s.node == Some(killed) => problems.push(format!(
                "{body:?} showed as sent while #conn-status said {} node {:?}",
                s.conn, s.node
            )),
            Some(_) => {}
            None => problems.push(format!("{body:?} never showed as sent")),
        }
    }
    problems
}

/// A recording as lines: ms since `t0`, connection, and each message's seq and state.
pub(crate) fn describe(rec: &[Snap], t0: u64) -> String {
    rec.iter()
        .map(|s| {
            let msgs: Vec<String> = s
                .messages
                .iter()
                .map(|m| match m.seq {
                    Some(q) => format!("{q}:{}", m.state),
                    None => format!("-:{}", m.state),
                })
                .collect();
            format!(
                "  {:>+6} ms  {:<12} node {:<4} [{}]",
                s.t as i64 - t0 as i64,
                s.conn,
                s.node.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                msgs.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Problems: the pages and the nodes do not all hold `expected`, in order, each exactly once,
/// at seqs 1..=n, with the same client_msg_id everywhere.
pub(crate) fn compare_histories(
    expected: &[(&str, String)],
    alice: &[DomMsg],
    bob: &[DomMsg],
    views: &[NodeView],
) -> Vec<String> {
    let mut problems = Vec::new();
    let want: Vec<(u64, &str, &str)> = expected
        .iter()
        .enumerate()
        .map(|(i, (a, b))| (i as u64 + 1, *a, b.as_str()))
        .collect();
    let page = |msgs: &[DomMsg]| -> Vec<(u64, String, String, String)> {
        msgs.iter()
            .map(|m| {
                (
                    m.seq.unwrap_or(0),
                    m.author.clone(),
                    m.body.clone(),
                    m.client_msg_id.clone(),
                )
            })
            .collect()
    };
    let rest = |msgs: &[Msg]| -> Vec<(u64, String, String, String)> {
        msgs.iter()
            .map(|m| {
                (
                    m.seq,
                    m.author.clone(),
                    m.body.clone(),
                    m.client_msg_id.clone(),
                )
            })
            .collect()
    };
    let a = page(alice);
    let shown: Vec<(u64, &str, &str)> = a
        .iter()
        .map(|(s, au, b, _)| (*s, au.as_str(), b.as_str()))
        .collect();
    if shown != want {
        problems.push(format!("alice's page shows {shown:?}, expected {want:?}"));
    }
    if a.iter().any(|(_, _, _, id)| id.is_empty()) {
        problems.push("a message on alice's page has no data-client-msg-id".to_owned());
    }
    if page(bob) != a {
        problems.push("bob's page differs from alice's".to_owned());
    }
    for v in views {
        if rest(&v.messages) != a {
            problems.push(format!(
                "node {} over REST differs from the pages",
                v.node_id
            ));
        }
    }
    problems
}

// ----- the browser ------------------------------------------------------------------------------

/// Base64 SHA-256 of the SubjectPublicKeyInfo of the cluster root and of every certificate in
/// every node's chain (what `--ignore-certificate-errors-spki-list` takes), computed by
/// `openssl`. A server sends its leaf and issuing CA, not the root, hence the chains.
fn cluster_spki_hashes(cluster: &TestCluster) -> Vec<String> {
    let mut pems: Vec<String> = Vec::new();
    let mut files = vec![
        cluster
            .ca_file()
            .expect("a TLS cluster has a root")
            .to_path_buf(),
    ];
    for id in cluster.ids() {
        files.push(
            cluster
                .node(id)
                .spec
                .data_dir
                .join("tls")
                .join("node-chain.pem"),
        );
    }
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| cluster.fail(&format!("read {}: {e}", file.display())));
        for block in text.split("-----BEGIN CERTIFICATE-----").skip(1) {
            pems.push(format!("-----BEGIN CERTIFICATE-----{block}"));
        }
    }
    let mut hashes: Vec<String> = Vec::new();
    for pem in pems {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "openssl x509 -pubkey -noout | openssl pkey -pubin -outform der \
                 | openssl dgst -sha256 -binary | openssl base64 -A",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| cluster.fail(&format!("run openssl (install it): {e}")));
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin
                .write_all(pem.as_bytes())
                .unwrap_or_else(|e| cluster.fail(&format!("write to openssl: {e}")));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| cluster.fail(&format!("wait for openssl: {e}")));
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || hash.len() != 44 {
            cluster.fail(&format!(
                "openssl SPKI hash failed: {:?} {hash:?}",
                out.status
            ));
        }
        if !hashes.contains(&hash) {
            hashes.push(hash);
        }
    }
    hashes
}

pub(crate) struct Tools {
    pub(crate) chromium: PathBuf,
    pub(crate) chromedriver: PathBuf,
}

/// The browser and its driver, or `None` (after saying why) when they are not installed and
/// `CHAOS_REQUIRE_BROWSER` is not set.
pub(crate) fn browser_tools() -> Option<Tools> {
    let chromium = on_path("chromium");
    let chromedriver = on_path("chromedriver");
    if let (Some(chromium), Some(chromedriver)) = (&chromium, &chromedriver) {
        return Some(Tools {
            chromium: chromium.clone(),
            chromedriver: chromedriver.clone(),
        });
    }
    let missing: Vec<&str> = [("chromium", &chromium), ("chromedriver", &chromedriver)]
        .into_iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n)
        .collect();
    let missing = missing.join(", ");
    let required = std::env::var("CHAOS_REQUIRE_BROWSER").unwrap_or_default();
    if !required.is_empty() && required != "0" {
        panic!(
            "CHAOS_REQUIRE_BROWSER is set but not found on PATH: {missing} \
             (apt-get install -y chromium chromium-driver)"
        );
    }
    eprintln!(
        "SKIPPED browser test: not found on PATH: {missing} (apt-get install -y chromium \
         chromium-driver; with CHAOS_REQUIRE_BROWSER=1 the test fails instead)"
    );
    None
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `$CHAOS_ARTIFACTS`, else `<temp dir>/conclave-browser-artifacts`.
pub(crate) fn artifacts_dir() -> PathBuf {
    std::env::var_os("CHAOS_ARTIFACTS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("conclave-browser-artifacts"))
}

pub(crate) fn save(dir: &Path, name: &str, png: &[u8]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = dir.join(format!("browser-{name}.png"));
    std::fs::write(&path, png).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A chromedriver process in its own process group, and the Chromium profiles of its sessions.
/// Dropping it SIGKILLs the whole group (chromedriver and every Chromium process it started),
/// reaps chromedriver, then removes the profiles.
pub(crate) struct ChromeDriver {
    child: Child,
    url: String,
    chromium: PathBuf,
    /// chromedriver's output, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    /// Behind a lock so that a test can open one more session while it holds its pages.
    profiles: Mutex<Vec<TempDir>>,
    /// More Chromium arguments for every session (the HTTPS variant's trusted keys).
    pub(crate) extra_args: Vec<String>,
    /// Chromium preferences for every later session (`goog:chromeOptions.prefs`).
    pub(crate) prefs: Option<Value>,
    /// Record Chromium's performance log (network events) in every later session.
    pub(crate) performance_log: bool,
}

impl ChromeDriver {
    pub(crate) fn start(tools: &Tools) -> Result<ChromeDriver, String> {
        Self::launch(tools, None, None)
    }

    /// chromedriver (and so every Chromium it starts) inside `netns` when given, listening on
    /// the namespace's address for the host only; else on loopback. `home` becomes `$HOME`
    /// for chromedriver and Chromium: Chromium on Linux keeps its trusted roots in the NSS
    /// database `$HOME/.pki/nssdb`, which is where a user's "install the root" lands.
    pub(crate) fn launch(
        tools: &Tools,
        netns: Option<&ClientNetns>,
        home: Option<&Path>,
    ) -> Result<ChromeDriver, String> {
        use std::os::unix::process::CommandExt as _;
        let (mut cmd, host, allowed) = match netns {
            // `ip netns exec` execs chromedriver in place: the pid (and the process group
            // the guard kills) stay the same.
            Some(ns) => (
                ns.command(&tools.chromedriver),
                ns.ip.to_string(),
                ns.gateway.to_string(),
            ),
            None => (
                Command::new(&tools.chromedriver),
                "127.0.0.1".to_owned(),
                "127.0.0.1".to_owned(),
            ),
        };
        if let Some(home) = home {
            cmd.env("HOME", home);
        }
        let mut child = cmd
            .args(["--port=0".to_owned(), format!("--allowed-ips={allowed}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {}: {e}", tools.chromedriver.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            drain(out, log.clone(), Some(tx));
        }
        if let Some(err) = child.stderr.take() {
            drain(err, log.clone(), None);
        }
        let mut driver = ChromeDriver {
            child,
            url: String::new(),
            chromium: tools.chromium.clone(),
            log,
            profiles: Mutex::new(Vec::new()),
            extra_args: Vec::new(),
            prefs: None,
            performance_log: false,
        };
        // "ChromeDriver was started successfully on port N." says it listens, and where.
        let port = rx.recv_timeout(PAGE_WAIT).map_err(|_| {
            format!(
                "chromedriver did not say it started within {PAGE_WAIT:?}; it printed:\n{}",
                driver.log_text()
            )
        })?;
        driver.url = format!("http://{host}:{port}/");
        Ok(driver)
    }

    fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// A new session: its own window and a fresh profile.
    pub(crate) async fn open(&self, who: &'static str) -> Result<Page, String> {
        let profile = tempfile::Builder::new()
            .prefix(&format!("conclave-chromium-{who}-"))
            .tempdir()
            .map_err(|e| format!("profile dir: {e}"))?;
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(self.extra_args.iter().cloned());
        self.profiles
            .lock()
            .map_err(|e| format!("profiles: {e}"))?
            .push(profile);
        let mut caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
        });
        if let Some(prefs) = &self.prefs {
            caps["goog:chromeOptions"]["prefs"] = prefs.clone();
        }
        if self.performance_log {
            caps["goog:loggingPrefs"] = json!({ "performance": "ALL" });
        }
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let caps: Capabilities = caps;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connect = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await;
        match connect {
            Ok(client) => Ok(Page { who, client }),
            Err(e) => Err(format!(
                "new WebDriver session for {who}: {e}\nchromedriver printed:\n{}",
                self.log_text()
            )),
        }
    }
}

/// Keeps reading a pipe so chromedriver never blocks on it; the first stdout line naming the
/// port is sent on `port`.
fn drain(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    port: Option<mpsc::Sender<u16>>,
) {
    std::thread::spawn(move || {
        let mut port = port;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(p) = port.as_ref().and_then(|_| started_on_port(&line)) {
                let _ = port.take().map(|tx| tx.send(p));
            }
            if let Ok(mut l) = log.lock() {
                l.push(line);
                if l.len() > 200 {
                    l.remove(0);
                }
            }
        }
    });
}

fn started_on_port(line: &str) -> Option<u16> {
    let rest = line.split("started successfully on port ").nth(1)?;
    rest.trim_end_matches(['.', ' ']).parse().ok()
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Then the profiles (TempDir's drop), now that no Chromium writes into them.
        if let Ok(mut profiles) = self.profiles.lock() {
            profiles.clear();
        }
    }
}

/// SIGKILL to every process of the group led by `pid`.
#[allow(unsafe_code)]
fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The group is the
    // one chromedriver leads (spawned with process_group(0)) and it is not reaped yet, so the
    // id cannot have been reused.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// A chromedriver command to Chromium's DevTools protocol.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// One WebDriver session (one browser window). Every command has a deadline.
pub(crate) struct Page {
    pub(crate) who: &'static str,
    pub(crate) client: Client,
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CMD_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {CMD_TIMEOUT:?}")),
    }
}

impl Page {
    pub(crate) async fn goto(&self, url: &str) -> Result<(), String> {
        within(&format!("{}: open {url}", self.who), self.client.goto(url)).await
    }

    pub(crate) async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        within(
            &format!("{}: script", self.who),
            self.client.execute(script, args),
        )
        .await
    }

    pub(crate) async fn find(&self, css: &str) -> Result<fantoccini::elements::Element, String> {
        within(
            &format!("{}: find {css}", self.who),
            self.client.find(Locator::Css(css)),
        )
        .await
    }

    pub(crate) async fn click(&self, css: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        within(&format!("{}: click {css}", self.who), el.click()).await
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        within(
            &format!("{}: type into {css}", self.who),
            el.send_keys(text),
        )
        .await
    }

    pub(crate) async fn screenshot(&self) -> Result<Vec<u8>, String> {
        within(
            &format!("{}: screenshot", self.who),
            self.client.screenshot(),
        )
        .await
    }

    pub(crate) async fn cdp(&self, cmd: &'static str, params: Value) -> Result<Value, String> {
        within(
            &format!("{}: {cmd}", self.who),
            self.client.issue_cmd(Cdp { cmd, params }),
        )
        .await
    }

    pub(crate) async fn inner_size(&self) -> Result<(i64, i64), String> {
        let v = self.js("return [innerWidth, innerHeight];", vec![]).await?;
        match (v[0].as_i64(), v[1].as_i64()) {
            (Some(w), Some(h)) => Ok((w, h)),
            _ => Err(format!("{}: innerWidth/innerHeight: {v}", self.who)),
        }
    }

    /// Resizes the window until the page's viewport (`innerWidth` x `innerHeight`) is
    /// `width` x `height`: a window's size includes the browser's own frame.
    pub(crate) async fn set_viewport(&self, width: u32, height: u32) -> Result<(), String> {
        let want = (i64::from(width), i64::from(height));
        let (mut ww, mut wh) = (want.0, want.1);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (w, h) = (u32::try_from(ww), u32::try_from(wh));
            let (Ok(w), Ok(h)) = (w, h) else { break };
            within(
                &format!("{}: window size", self.who),
                self.client.set_window_size(w, h),
            )
            .await?;
            let got = self.inner_size().await?;
            seen.push(got);
            if got == want {
                return Ok(());
            }
            ww += want.0 - got.0;
            wh += want.1 - got.1;
        }
        Err(format!(
            "{}: could not get a {width}x{height} viewport; got {seen:?}",
            self.who
        ))
    }

    /// A phone: `width` x `height` CSS pixels at `scale` device pixels each, mobile layout.
    pub(crate) async fn emulate_phone(
        &self,
        width: u32,
        height: u32,
        scale: u32,
    ) -> Result<(), String> {
        let params = json!({
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": true,
        });
        self.cdp("Emulation.setDeviceMetricsOverride", params)
            .await?;
        let got = self.inner_size().await?;
        if got != (i64::from(width), i64::from(height)) {
            return Err(format!(
                "{}: emulating a {width}x{height} phone gives a {got:?} viewport",
                self.who
            ));
        }
        Ok(())
    }

    /// The drawer (the sidebar on a phone) is open and in place.
    pub(crate) async fn drawer_open(&self) -> Result<(), String> {
        let v = self
            .js(
                "const r = document.getElementById('sidebar').getBoundingClientRect(); \
                 return [document.body.dataset.pane, r.left, r.width];",
                vec![],
            )
            .await?;
        if v[0] == "list" && v[1].as_f64() == Some(0.0) && v[2].as_f64().is_some_and(|w| w > 0.0) {
            Ok(())
        } else {
            Err(format!("pane, sidebar left and width: {v}"))
        }
    }

    pub(crate) async fn state(&self) -> Result<PageState, String> {
        let script = format!(
            "{MESSAGES_JS}const st = document.getElementById('conn-status');\n\
             return {{ url: location.href, title: document.title, \
               text: (document.body?.innerText ?? '').slice(0, 300), \
               view: document.body?.dataset.view ?? '', ready: document.body?.dataset.ready ?? '', \
               hash: location.hash, conn: st?.dataset.state ?? '', node: st?.dataset.nodeId ?? null, \
               messages: messages() }};"
        );
        let v = self.js(&script, vec![]).await?;
        Ok(PageState {
            url: str_field(&v, "url"),
            title: str_field(&v, "title"),
            text: str_field(&v, "text"),
            view: str_field(&v, "view"),
            ready: str_field(&v, "ready"),
            hash: str_field(&v, "hash"),
            conn: str_field(&v, "conn"),
            node: num_field(&v, "node"),
            messages: parse_messages(&v["messages"]),
        })
    }

    /// Starts recording every state of the connection status and the timeline (a
    /// `MutationObserver` appends a snapshot whenever one of them changed).
    pub(crate) async fn install_recorder(&self) -> Result<(), String> {
        let script = format!(
            "{MESSAGES_JS}if (window.__rec) return true;\n\
             const rec = (window.__rec = []);\n\
             let last = '';\n\
             const snap = () => {{\n\
               const st = document.getElementById('conn-status');\n\
               const s = {{ conn: st.dataset.state ?? '', node: st.dataset.nodeId ?? null, messages: messages() }};\n\
               const key = JSON.stringify(s);\n\
               if (key !== last) {{ last = key; s.t = Date.now(); rec.push(s); }}\n\
             }};\n\
             new MutationObserver(snap).observe(document.body, {{ subtree: true, childList: true, \
               characterData: true, attributes: true }});\n\
             snap();\n\
             return true;"
        );
        self.js(&script, vec![]).await.map(|_| ())
    }

    pub(crate) async fn recording(&self) -> Result<Vec<Snap>, String> {
        let v = self.js("return window.__rec ?? [];", vec![]).await?;
        let snaps = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| Snap {
                        t: num_field(s, "t").unwrap_or(0),
                        conn: str_field(s, "conn"),
                        node: num_field(s, "node"),
                        messages: parse_messages(&s["messages"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(snaps)
    }

    /// Ends the WebDriver session (closes the browser) on a successful run.
    pub(crate) async fn close(&self) {
        let _ = within(&format!("{}: close", self.who), self.client.clone().close()).await;
    }
}
