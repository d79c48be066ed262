//! Real Chromium against three containers, finding the cluster only by its workspace name
//! (issue 12, item 4): the browser runs in a network namespace of its own whose only link is a
//! veth into the test's Docker bridge network and whose `resolv.conf` lists the three nodes'
//! DNS servers (port 53), so `https://chat.corp.lan/` works only through Conclave's own DNS.
//!
//! 1. The browser trusts nothing of the cluster at first: the HTTPS page by name is refused.
//!    It opens the plain trust page by name (`http://chat.corp.lan/`), the fingerprint shown
//!    there must be the one `conclave init` printed, and the root it downloads through the
//!    page's link must have it too; that file is then installed the way a Linux user does it,
//!    into the NSS database of the browser's `$HOME` (`certutil`). No flag tells Chromium to
//!    accept anything.
//! 2. Alice and Bob sign in on `https://chat.corp.lan/` and chat in `general`. Chromium's
//!    performance log says which address served Alice's page: that node's container is
//!    `docker kill`ed.
//! 3. Both type at once after the kill; Alice's page fails over by itself (the node list the
//!    server gave it: `https://<node ip>:443`, covered by each node's certificate), every
//!    message sent after the kill reaches both pages in both directions, each exactly once,
//!    and the surviving nodes' DNS stops listing the dead one. The pages, and every surviving
//!    node over REST, hold the same history in the same order; a recorder in each page fails
//!    the test if a message was ever shown twice.
//! 4. Bob's page is loaded again (the name is the same; the dead node is not in DNS any more):
//!    it signs in by itself on a survivor and shows the whole history.
//!
//! Found on the way (Chromium 156): the page fails over to the addresses in the node list the
//! server sends (`https_addr`, here `<node ip>:443`), not to the name; each node's
//! certificate carries its IP address (it binds explicit addresses), so the installed root
//! covers those connections too. After a reload the page's shell comes from its service
//! worker; its API requests by the name go over the network. Where the namespace mechanics
//! come from: `chaos_tests::netns`.
//!
//! Needs Docker, `$CONCLAVE_DIST` (the harness `chaos_tests::docker`), root (a network
//! namespace), `ip`, `certutil` (libnss3-tools), `openssl`, `chromium` and `chromedriver`.
//! Without them it prints why and passes, unless `CHAOS_REQUIRE_DOCKER=1` or
//! `CHAOS_REQUIRE_BROWSER=1` is set, when it fails. Everything it made (containers, network,
//! image, namespace, veth, `/etc/netns/<name>`, browser processes, profiles) is removed by the
//! guards' `Drop`, also on failure.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chaos_tests::checks;
use chaos_tests::docker::{self, DockerCluster, DockerEnv, WORKSPACE};
use chaos_tests::netns::ClientNetns;
use fantoccini::wd::WebDriverCompatibleCommand;
use ops::{NewUser, Role};
use serde_json::{Value, json};

use crate::browser::{
    ChromeDriver, Nodes, Page, Run, artifacts_dir, browser_tools, compare_histories, describe,
    never_twice, now_ms, save,
};

const TEST: &str = "docker_browser_chat_by_workspace_name_survives_killing_the_serving_node";
const PASSWORD: &str = "browser-pass-phrase-1";
const CHANNEL: &str = "general";
/// The namespace's address on the test's /24: the harness gives the nodes .11-.13 by hand and
/// lets Docker assign nothing, so .250 stays free (checked again by `ClientNetns::attach`).
const NETNS_HOST: u8 = 250;
/// The test's network is a /24 of 172.27.0.0/16, this part's range (common.md).
const NETWORK_RANGE: u8 = 27;
/// Loading a page, signing in, a message round trip.
const PAGE_WAIT: Duration = Duration::from_secs(30);
/// From the kill until the page is on a survivor and the messages are delivered.
const FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// A node's DNS drops a dead node within about one probe period; generous for 2 cores.
const DNS_WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_browser_chat_by_workspace_name_survives_killing_the_serving_node() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let Some(env) = DockerEnv::detect(TEST) else {
        return;
    };
    if !netns_tools_present() {
        return;
    }
    let started = Instant::now();
    // Guards in declaration order; dropped in reverse: pages, chromedriver (and every
    // Chromium), the profile's $HOME, the namespace, then containers, network and image.
    let cluster = DockerCluster::start_in(&env, NETWORK_RANGE).await;
    let suffix = cluster.suffix().to_owned();
    let ids = cluster.ids();
    let ips: Vec<Ipv4Addr> = ids.iter().map(|id| cluster.ip(*id)).collect();
    eprintln!("cluster up after {:.1?}: nodes {ips:?}", started.elapsed());
    setup_chat(&cluster).await;

    let ns_ip = cluster.network().ip(NETNS_HOST);
    let netns = cluster.or_fail(ClientNetns::attach(&cluster.network().name, ns_ip, &ips));
    let home = tempfile::Builder::new()
        .prefix("conclave-browser-home-")
        .tempdir()
        .unwrap_or_else(|e| cluster.fail(&format!("temp HOME: {e}")));
    let nssdb = home.path().join(".pki").join("nssdb");
    cluster.or_fail(new_nss_db(&nssdb));
    let mut driver = ChromeDriver::launch(&tools, Some(&netns), Some(home.path()))
        .unwrap_or_else(|e| cluster.fail(&e));
    let downloads = home.path().join("Downloads");
    std::fs::create_dir_all(&downloads)
        .unwrap_or_else(|e| cluster.fail(&format!("create {}: {e}", downloads.display())));
    driver.performance_log = true;
    driver.prefs = Some(json!({
        "download.default_directory": downloads,
        "download.prompt_for_download": false,
    }));
    let page_url = format!("https://{WORKSPACE}/");

    // 1. The root, from the trust page, by name. Chromium holds a download over plain HTTP
    //    as "insecure" (a `.crdownload` until the user clicks "Keep"; headless cannot, and
    //    `--disable-features=InsecureDownloadWarnings` does not release it): for this session
    //    only, the trust page's origin counts as secure. It changes nothing about certificates.
    driver.extra_args = vec![format!(
        "--unsafely-treat-insecure-origin-as-secure=http://{WORKSPACE}"
    )];
    let trust = driver
        .open("trust")
        .await
        .unwrap_or_else(|e| cluster.fail(&e));
    driver.extra_args.clear();
    let root_file = trust_root_from_page(&cluster, &trust, &page_url, &downloads).await;
    cluster.or_fail(install_root(&nssdb, &root_file));
    trust.close().await;
    eprintln!(
        "root {} downloaded from http://{WORKSPACE}/ and installed after {:.1?}",
        cluster.fingerprint(),
        started.elapsed()
    );

    // 2. Two users on the workspace's page; Chromium opened after the root was installed reads
    //    the NSS database at start.
    let alice = driver
        .open("alice")
        .await
        .unwrap_or_else(|e| cluster.fail(&e));
    let bob = driver
        .open("bob")
        .await
        .unwrap_or_else(|e| cluster.fail(&e));
    let run = Run {
        cluster: &cluster,
        pages: [&alice, &bob],
        artifacts: artifacts_dir(),
    };
    run.sign_in_at(&alice, &page_url).await;
    run.sign_in_at(&bob, &page_url).await;
    let served_ip = run.ok(document_address(&alice, &page_url).await).await;
    let Some(killed) = ids
        .iter()
        .copied()
        .find(|id| IpAddr::V4(cluster.ip(*id)) == served_ip)
    else {
        return run
            .fail(&format!(
                "alice's page came from {served_ip}, which is none of the nodes {ips:?}"
            ))
            .await;
    };
    let alice_node = connected_node(&run, &alice).await;
    let bob_node = connected_node(&run, &bob).await;
    if alice_node != killed {
        run.fail::<()>(&format!(
            "alice's page came from node {killed} ({served_ip}) but its socket is on node \
             {alice_node}: the page connects to where it was loaded from first"
        ))
        .await;
    }
    eprintln!(
        "pages signed in after {:.1?}: alice's page served by node {killed} ({served_ip}), \
         sockets: alice node {alice_node}, bob node {bob_node}",
        started.elapsed()
    );

    let mut expected: Vec<(&'static str, String)> = Vec::new();
    for (page, body) in [
        (&alice, "Hi Bob, Alice here, on chat.corp.lan."),
        (&bob, "Hello Alice! Same name here, reading you fine."),
    ] {
        run.send(page, body).await;
        expected.push((page.who, body.to_owned()));
        run.wait_delivered(&expected).await;
    }

    // 3. The container that served Alice's page dies; both type at once.
    for page in run.pages {
        run.ok(page.install_recorder().await).await;
    }
    let killed_at_ms = now_ms();
    let killed_at = Instant::now();
    cluster.or_fail(cluster.kill(killed).await);
    let outage = [
        (&alice, format!("Typed right after node {killed} died.")),
        (&bob, "And Bob answers during the failover.".to_owned()),
    ];
    for (page, body) in &outage {
        run.type_message(page, body).await;
    }
    let outage: Vec<(&'static str, String)> = outage.into_iter().map(|(p, b)| (p.who, b)).collect();
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
    // The two were typed on different pages at once: either may get the lower seq.
    expected = wait_outage_delivered(&run, &expected, &outage).await;
    let delivered_in = killed_at.elapsed();
    // Where the socket went: the node list's HTTPS address of a survivor (an IP, which its
    // certificate names), reached with the installed root.
    let via = run
        .ok(alice.js("return window.conclave.node;", vec![]).await)
        .await;
    let want_addr = format!("{}:443", cluster.ip(new_node));
    if via["addr"].as_str() != Some(want_addr.as_str()) {
        run.fail::<()>(&format!(
            "alice's page is on node {new_node} through {via}, expected {want_addr}"
        ))
        .await;
    }

    // The survivors' DNS stops handing out the dead node.
    let survivors: Vec<u64> = ids.iter().copied().filter(|id| *id != killed).collect();
    for id in &survivors {
        cluster.or_fail(cluster.wait_dns(*id, &survivors, DNS_WAIT).await);
    }
    let dns_in = killed_at.elapsed();

    // The conversation goes on, both ways.
    for (page, body) in [
        (&alice, "Still here after the failover."),
        (&bob, "Me too. Nothing lost on my side."),
    ] {
        run.send(page, body).await;
        expected.push((page.who, body.to_owned()));
        run.wait_delivered(&expected).await;
    }

    // 4. Nothing shown twice at any moment; pages and nodes agree.
    let mut problems = Vec::new();
    let mut recordings = Vec::new();
    for page in run.pages {
        let rec = run.ok(page.recording().await).await;
        problems.extend(never_twice(page.who, &rec));
        recordings.push(rec);
    }
    let final_a = run.ok(alice.state().await).await;
    let final_b = run.ok(bob.state().await).await;
    let views = cluster.or_fail(
        cluster
            .wait_converged(CHANNEL, &survivors, None, expected.len() as u64)
            .await,
    );
    cluster.check(checks::no_duplicates(&views));
    cluster.check(checks::same_order_on_every_node(&views));
    problems.extend(compare_histories(
        &expected,
        &final_a.messages,
        &final_b.messages,
        &views,
    ));
    if !problems.is_empty() {
        run.fail::<()>(&format!(
            "{}\nalice's page after the kill (ms):\n{}\nbob's:\n{}",
            problems.join("\n"),
            describe(&recordings[0], killed_at_ms),
            describe(&recordings[1], killed_at_ms)
        ))
        .await;
    }
    eprintln!(
        "node {killed} killed; alice's page connected to node {new_node} ({via}) after \
         {reconnected_in:.1?}; both outage messages on both pages after {delivered_in:.1?}; \
         DNS of nodes {survivors:?} without node {killed} after {dns_in:.1?}\n\
         alice's page after the kill (ms):\n{}",
        describe(&recordings[0], killed_at_ms)
    );
    for m in &views[0].messages {
        eprintln!("  seq {} {}: {}", m.seq, m.author, m.body);
    }

    // 5. Bob reloads the page (his session is kept in the page's storage): it comes back on a
    //    survivor with the whole history.
    let revisit_at = Instant::now();
    // What bob's log held so far is not about the visit.
    run.ok(responses(&bob).await).await;
    // A reload (the URL is the same: a `goto` would only be a same-document navigation).
    let reload = tokio::time::timeout(PAGE_WAIT, bob.client.refresh()).await;
    match reload {
        Ok(Ok(())) => {}
        Ok(Err(e)) => run.fail::<()>(&format!("bob: reload: {e}")).await,
        Err(_) => {
            run.fail::<()>(&format!("bob: reload: no answer within {PAGE_WAIT:?}"))
                .await
        }
    }
    let bob_back_on = run
        .wait(
            "bob's page, loaded again by the name, to be back in #general",
            PAGE_WAIT,
            || async {
                let s = bob.state().await?;
                let shown: Vec<(&str, &str)> = s
                    .messages
                    .iter()
                    .map(|m| (m.author.as_str(), m.body.as_str()))
                    .collect();
                let want: Vec<(&str, &str)> =
                    expected.iter().map(|(a, b)| (*a, b.as_str())).collect();
                match (s.view.as_str(), s.conn.as_str(), s.node) {
                    ("app", "connected", Some(n))
                        if n != killed && s.ready == "1" && shown == want =>
                    {
                        Ok(n)
                    }
                    _ => Err(format!(
                        "view {}, #conn-status {} node {:?}, ready {}, shows {shown:?}",
                        s.view, s.conn, s.node, s.ready
                    )),
                }
            },
        )
        .await;
    let visit = run.ok(responses(&bob).await).await;
    let by_name: Vec<String> = visit
        .iter()
        .filter(|r| r.url.starts_with(&page_url))
        .map(|r| {
            let path = r.url.trim_start_matches(&page_url);
            match (r.cached, r.ip) {
                (true, _) => format!("/{path} (cached)"),
                (false, Some(ip)) => format!("/{path} from {ip}"),
                (false, None) => format!("/{path} from ?"),
            }
        })
        .collect();
    // Requests by the name that went over the network after the reload: Chromium resolved it
    // again, through the survivors' DNS, and reached a live node.
    let live: Vec<IpAddr> = survivors
        .iter()
        .map(|id| IpAddr::V4(cluster.ip(*id)))
        .collect();
    let over_network: Vec<&Response> = visit
        .iter()
        .filter(|r| r.url.starts_with(&page_url) && !r.cached)
        .collect();
    if over_network.is_empty()
        || over_network
            .iter()
            .any(|r| !r.ip.is_some_and(|ip| live.contains(&ip)))
    {
        run.fail::<()>(&format!(
            "after the reload, requests by the name should reach the survivors {live:?} over \
             the network; they were: {by_name:?}"
        ))
        .await;
    }
    eprintln!(
        "bob's page opened again by the name after {:.1?}, socket on node {bob_back_on}; \
         requests by the name: {by_name:?}",
        revisit_at.elapsed()
    );

    // For whoever reads the run: both pages as they ended.
    for page in run.pages {
        let png = run.ok(page.screenshot().await).await;
        let name = format!("docker-{}", page.who);
        let path = run.ok(save(&run.artifacts, &name, &png)).await;
        eprintln!("screenshot: {}", path.display());
    }

    alice.close().await;
    bob.close().await;
    drop(driver);
    drop(home);
    let ns_name = netns.name.clone();
    drop(netns);
    drop(cluster);
    docker::assert_nothing_left(&suffix);
    let namespaces = tool("ip", &["netns", "list"]).unwrap_or_default();
    assert!(
        !namespaces.contains(&ns_name) && !Path::new("/etc/netns").join(&ns_name).exists(),
        "namespace {ns_name} or /etc/netns/{ns_name} left behind: {namespaces}"
    );
    eprintln!("docker browser test done in {:.1?}", started.elapsed());
}

impl Nodes for DockerCluster {
    fn page_url(&self, _node: u64) -> String {
        // Pages here are only ever loaded by the workspace name.
        format!("https://{WORKSPACE}/")
    }

    fn fail_with_logs(&self, report: &str) -> ! {
        self.fail(report)
    }
}

/// Users alice and bob (their forced first password change done through the API), channel
/// `general` with both in it.
async fn setup_chat(cluster: &DockerCluster) {
    cluster.or_fail(cluster.create_channel(CHANNEL).await);
    for (name, display) in [("alice", "Alice"), ("bob", "Bob")] {
        let user = NewUser {
            username: name.to_owned(),
            password: PASSWORD.to_owned(),
            role: Role::Member,
            display_name: Some(display.to_owned()),
        };
        match cluster.admin_client().create_user_with(&user).await {
            Ok(_) => {}
            Err(e) if e.code() == Some("user_exists") => {}
            Err(e) => cluster.fail(&format!("create {name}: {e}")),
        }
        let urls: Vec<String> = cluster
            .ids()
            .iter()
            .map(|id| cluster.https_url(*id))
            .collect();
        let mut client = ops::Client::new_trusting(urls, Some(cluster.trust_root().clone()))
            .unwrap_or_else(|e| cluster.fail(&format!("client: {e}")));
        let login = client
            .login(name, PASSWORD)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("first login of {name}: {e}")));
        if login.must_change_password {
            chaos_tests::settle_admin_set_password(&client, PASSWORD)
                .await
                .unwrap_or_else(|e| cluster.fail(&format!("{name}'s password change: {e}")));
        }
        client
            .join_channel(CHANNEL)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("{name} joins #{CHANNEL}: {e}")));
    }
}

/// True when root, `ip`, `certutil` and `openssl` are there; else prints why and returns
/// false, or panics when `CHAOS_REQUIRE_DOCKER` or `CHAOS_REQUIRE_BROWSER` is `1`.
fn netns_tools_present() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        missing.push("root (ip netns)".to_owned());
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("certutil", "libnss3-tools"),
        ("openssl", "openssl"),
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            missing.push(format!("{tool} (apt-get install {package})"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    chaos_tests::require::skip(
        TEST,
        &["CHAOS_REQUIRE_DOCKER", "CHAOS_REQUIRE_BROWSER"],
        &format!("missing: {}", missing.join(", ")),
    );
    false
}

/// Runs a tool to completion; its stdout, or an error with its stderr.
fn tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An empty NSS database (no password) where Chromium on Linux looks for user-trusted roots.
fn new_nss_db(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let db = format!("sql:{}", dir.display());
    tool("certutil", &["-N", "-d", &db, "--empty-password"])?;
    Ok(())
}

/// Trusts `root` (PEM) as a CA for TLS servers: what "install the root" means on Linux.
fn install_root(nssdb: &Path, root: &Path) -> anyhow::Result<()> {
    let db = format!("sql:{}", nssdb.display());
    let root = root.to_string_lossy();
    tool(
        "certutil",
        &[
            "-A",
            "-d",
            &db,
            "-n",
            "Conclave workspace root",
            "-t",
            "C,,",
            "-i",
            &root,
        ],
    )?;
    let listed = tool("certutil", &["-L", "-d", &db])?;
    if !listed.contains("Conclave workspace root") {
        anyhow::bail!("certutil -L does not list the root: {listed}");
    }
    Ok(())
}

/// `AB:CD:...` (upper case) of the DER certificate in the PEM file `path`, by openssl.
fn pem_fingerprint(path: &Path) -> anyhow::Result<String> {
    let out = tool(
        "openssl",
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            &path.to_string_lossy(),
        ],
    )?;
    out.trim()
        .split_once('=')
        .map(|(_, f)| f.to_ascii_uppercase())
        .ok_or_else(|| anyhow::anyhow!("openssl printed {out:?}"))
}

/// Step 1: with nothing trusted, the HTTPS page by name is refused; the trust page by name
/// shows the fingerprint `init` printed; its link downloads a root with that fingerprint.
/// Returns the downloaded file.
async fn trust_root_from_page(
    cluster: &DockerCluster,
    trust: &Page,
    page_url: &str,
    downloads: &Path,
) -> PathBuf {
    let fail = |msg: String| -> ! { cluster.fail(&format!("trust page: {msg}")) };
    trust.goto(page_url).await.unwrap_or_else(|e| fail(e));
    let href = trust
        .js("return location.href;", vec![])
        .await
        .unwrap_or_else(|e| fail(e));
    if !href
        .as_str()
        .is_some_and(|h| h.starts_with("chrome-error://"))
    {
        fail(format!(
            "{page_url} loaded ({href}) before the root was installed: something else trusts it"
        ));
    }
    let plain = format!("http://{WORKSPACE}/");
    trust.goto(&plain).await.unwrap_or_else(|e| fail(e));
    let text = trust
        .js("return document.body.innerText;", vec![])
        .await
        .unwrap_or_else(|e| fail(e));
    let text = text.as_str().unwrap_or_default().to_owned();
    let shown = fingerprint_in(&text)
        .unwrap_or_else(|| fail(format!("no SHA-256 fingerprint on {plain}: {text}")));
    if shown != cluster.fingerprint() {
        fail(format!(
            "{plain} shows {shown}, `conclave init` printed {}",
            cluster.fingerprint()
        ));
    }
    trust
        .click("a[href=\"/ca.pem\"]")
        .await
        .unwrap_or_else(|e| fail(e));
    let file = chaos_tests::wait::poll_until("the root's download", PAGE_WAIT, || async {
        let entries = std::fs::read_dir(downloads).map_err(|e| e.to_string())?;
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "pem"))
            .ok_or_else(|| format!("nothing finished in {}", downloads.display()))
    })
    .await
    .unwrap_or_else(|e| fail(format!("{e:#}")));
    let got = pem_fingerprint(&file).unwrap_or_else(|e| fail(format!("{e:#}")));
    if got != shown {
        fail(format!(
            "the downloaded {} has fingerprint {got}, the page shows {shown}",
            file.display()
        ));
    }
    file
}

/// The first `AB:CD:..` run of 32 hex bytes in `text` (the page may break it across lines).
fn fingerprint_in(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = compact.as_bytes();
    (0..bytes.len()).find_map(|i| {
        let cand = compact.get(i..i + 95)?;
        let ok = cand.split(':').count() == 32
            && cand
                .split(':')
                .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
        ok.then(|| cand.to_ascii_uppercase())
    })
}

/// chromedriver's log of one type (`POST /session/{id}/se/log`).
#[derive(Debug)]
struct GetLog(&'static str);

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": self.0 }).to_string()),
        )
    }
}

/// One response in Chromium's performance log (`Network.responseReceived`).
#[derive(Debug)]
struct Response {
    url: String,
    /// `Document`, `Fetch`, `Script`, ...
    kind: String,
    /// The peer's address; for a cached response, the one it was first fetched from.
    ip: Option<IpAddr>,
    /// Answered by the page's service worker or Chromium's cache, not the network.
    cached: bool,
}

/// The responses `page` received since the last call (chromedriver hands each log entry out
/// once), from Chromium's performance log.
async fn responses(page: &Page) -> Result<Vec<Response>, String> {
    let entries = page
        .client
        .issue_cmd(GetLog("performance"))
        .await
        .map_err(|e| format!("{}: performance log: {e}", page.who))?;
    let mut out = Vec::new();
    for entry in entries.as_array().into_iter().flatten() {
        let Some(msg) = entry["message"].as_str() else {
            continue;
        };
        let Ok(msg) = serde_json::from_str::<Value>(msg) else {
            continue;
        };
        let m = &msg["message"];
        if m["method"] != "Network.responseReceived" {
            continue;
        }
        let r = &m["params"]["response"];
        let flag = |k: &str| r[k].as_bool().unwrap_or(false);
        out.push(Response {
            url: r["url"].as_str().unwrap_or_default().to_owned(),
            kind: m["params"]["type"].as_str().unwrap_or_default().to_owned(),
            ip: r["remoteIPAddress"]
                .as_str()
                .and_then(|ip| ip.trim_matches(['[', ']']).parse().ok()),
            cached: flag("fromServiceWorker") || flag("fromDiskCache") || flag("fromPrefetchCache"),
        });
    }
    Ok(out)
}

/// Which address the last document from `url` came from over the network: which container
/// served the page.
async fn document_address(page: &Page, url: &str) -> Result<IpAddr, String> {
    let all = responses(page).await?;
    all.iter()
        .rev()
        .find(|r| r.kind == "Document" && r.url.starts_with(url))
        .and_then(|r| if r.cached { None } else { r.ip })
        .ok_or_else(|| {
            format!(
                "{}: no document from {url} over the network in the log: {all:?}",
                page.who
            )
        })
}

/// Waits until both pages show `before`, then the `outage` messages in some order (the same
/// on both), every one sent with a seq; returns the whole history in that order.
async fn wait_outage_delivered(
    run: &Run<'_>,
    before: &[(&'static str, String)],
    outage: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let what = format!(
        "both pages to show the {} messages sent during the failover",
        outage.len()
    );
    run.wait(&what, FAILOVER_WAIT, || async {
        let mut shown_by_page = Vec::new();
        for page in run.pages {
            let s = page.state().await?;
            let settled = s
                .messages
                .iter()
                .all(|m| m.state == "sent" && m.seq.is_some());
            let shown: Vec<(String, String)> = s
                .messages
                .iter()
                .map(|m| (m.author.clone(), m.body.clone()))
                .collect();
            let (head, tail) = shown.split_at(before.len().min(shown.len()));
            let head_ok = head
                .iter()
                .zip(before)
                .all(|((a, b), (wa, wb))| a == wa && b == wb);
            let mut got: Vec<_> = tail.to_vec();
            let mut want: Vec<(String, String)> = outage
                .iter()
                .map(|(a, b)| ((*a).to_owned(), b.clone()))
                .collect();
            got.sort();
            want.sort();
            if !settled || !head_ok || head.len() != before.len() || got != want {
                return Err(format!("{}'s page shows {:?}", page.who, s.messages));
            }
            shown_by_page.push(shown);
        }
        if shown_by_page.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!("the pages differ in order: {shown_by_page:?}"));
        }
        Ok(shown_by_page.swap_remove(0))
    })
    .await
    .into_iter()
    .map(|(author, body)| {
        let who = if author == "alice" { "alice" } else { "bob" };
        (who, body)
    })
    .collect()
}

async fn connected_node(run: &Run<'_>, page: &Page) -> u64 {
    let s = run.ok(page.state().await).await;
    match (s.conn.as_str(), s.node) {
        ("connected", Some(n)) => n,
        _ => {
            run.fail(&format!(
                "{}'s #conn-status says {} (node {:?})",
                page.who, s.conn, s.node
            ))
            .await
        }
    }
}

#[test]
fn finds_a_fingerprint_split_across_lines() {
    let fp = (0..32)
        .map(|i| format!("{i:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let text = format!("Root fingerprint:\n{}\n{} more text", &fp[..47], &fp[47..]);
    assert_eq!(fingerprint_in(&text), Some(fp));
    assert_eq!(fingerprint_in("AB:CD"), None);
}
