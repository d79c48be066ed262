//! The web client as an installed desktop app (issue 17, item 5): what an administrator's
//! `WebAppInstallForceList` policy (Edge, Chrome) installs is the page at the workspace URL, and
//! Chromium installs it only if its manifest meets the browser's installability criteria. This
//! asks real Chromium (DevTools `Page.getInstallabilityErrors`, the check the browser itself
//! runs before it offers or force-installs an app) over HTTPS with the cluster's certificate,
//! and reads the parsed manifest back (`Page.getAppManifest`) for what the policy relies on:
//! name, start URL and scope at the workspace root, a window of its own, PNG icons at 192 and
//! 512 px. The app badge API the client uses for unread counts must exist there too.
//!
//! Skipped like the other browser tests when Chromium or chromedriver is missing (unless
//! `CHAOS_REQUIRE_BROWSER` is set).

use chaos_tests::{ClusterOptions, TestCluster};
use serde_json::{Value, json};

use crate::browser::{ALICE, PAGE_WAIT, browser_tools, signed_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_web_client_is_installable_as_an_app() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let cluster = TestCluster::start_with(1, ClusterOptions::default().tls()).await;
    let browsers = signed_in(&cluster, &tools, [ALICE]).await;
    let [alice] = &browsers.pages;
    let run = browsers.run(&cluster);

    // The browser fetches the manifest and its icons after the page loads: wait until its
    // verdict has no errors (a failed wait shows the last errors it gave).
    run.wait(
        "Chromium to find the app installable",
        PAGE_WAIT,
        || async {
            let v = alice.cdp("Page.getInstallabilityErrors", json!({})).await?;
            match v["installabilityErrors"].as_array() {
                Some(errors) if errors.is_empty() => Ok(()),
                _ => Err(format!("installability errors: {v}")),
            }
        },
    )
    .await;

    let m = run
        .ok(alice.cdp("Page.getAppManifest", json!({})).await)
        .await;
    assert_eq!(m["errors"], json!([]), "manifest parse errors: {m}");
    let url = m["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with("https://") && url.ends_with("/manifest.webmanifest"),
        "the manifest is not the page's own over HTTPS: {url}"
    );
    let data: Value = serde_json::from_str(m["data"].as_str().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("manifest is not JSON ({e}): {m}"));
    assert_eq!(data["name"], "Conclave");
    assert_eq!(data["short_name"], "Conclave");
    assert_eq!(data["start_url"], "/");
    assert_eq!(data["scope"], "/");
    assert_eq!(data["id"], "/");
    assert_eq!(
        data["display"], "standalone",
        "an installed app opens in its own window"
    );
    let icons = data["icons"].as_array().cloned().unwrap_or_default();
    for size in ["192x192", "512x512"] {
        assert!(
            icons.iter().any(|i| i["sizes"] == size
                && i["type"] == "image/png"
                && i["purpose"].as_str().is_none_or(|p| p.contains("any"))),
            "no {size} PNG icon for any purpose: {icons:?}"
        );
    }
    // Every icon the manifest names is served (the start menu and taskbar use them).
    for icon in &icons {
        let src = icon["src"].as_str().unwrap_or_default();
        let status = run
            .ok(alice
                .js(
                    "return fetch(arguments[0]).then((r) => r.status);",
                    vec![json!(src)],
                )
                .await)
            .await;
        assert_eq!(status, json!(200), "icon {src}");
    }
    let badge = run
        .ok(alice
            .js(
                "return typeof navigator.setAppBadge === 'function' && window.isSecureContext;",
                vec![],
            )
            .await)
        .await;
    assert_eq!(badge, json!(true), "no app badge API in a secure context");
}
