//! Search in the web client, in real Chromium (issue 15): alice types a word into the header's
//! search box and presses Enter; the result shows the snippet with the word marked (built as
//! DOM: a message's `<b>` stays text); she moves to the result with the keyboard and presses
//! Enter; the page opens the channel, loads older history until the message is there (it is
//! beyond the first page), scrolls it into view and highlights it.
//!
//! Reuses `browser.rs`'s driver and helpers; skipped like those tests when Chromium or
//! chromedriver is missing (unless `CHAOS_REQUIRE_BROWSER` is set).

use chaos_tests::TestCluster;
use fantoccini::key::Key;
use serde_json::json;

use crate::browser::{ALICE, Browsers, CHANNEL, PAGE_WAIT, browser_tools, members};
use crate::util::post_ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_search_jumps_to_the_message() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let cluster = TestCluster::start(1).await;
    members(&cluster, &[ALICE]).await;
    // The match is message 5 of 120: the channel opens on the newest 50, so the jump has to
    // load older pages first.
    let admin = cluster.client(1);
    for i in 1..=120u64 {
        let body = if i == 5 {
            "the narwhal <b>report</b> is ready".to_owned()
        } else {
            format!("filler message number {i}")
        };
        post_ok(&cluster, &admin, CHANNEL, &body, &format!("bs-{i}")).await;
    }

    let browsers = Browsers::open(&cluster, &tools, [ALICE]).await;
    let [alice] = &browsers.pages;
    let run = browsers.run(&cluster);
    browsers.sign_in(&run).await;

    // Search with the keyboard: type, Enter.
    run.ok(alice.type_into("#search-input", "Narwhal").await)
        .await;
    run.ok(alice
        .type_into("#search-input", &Key::Enter.to_string())
        .await)
        .await;
    let hit = run
        .wait("a search result", PAGE_WAIT, || async {
            let v = alice
                .js(
                    "const b = document.querySelector('#search-list .search-hit');\
                     if (!b) return null;\
                     return { seq: b.dataset.seq, marks: [...b.querySelectorAll('mark')].map((m) => m.textContent),\
                              text: b.querySelector('.search-hit-text').textContent,\
                              elements: b.querySelectorAll('.search-hit-text b').length,\
                              status: document.getElementById('search-status').textContent };",
                    vec![],
                )
                .await?;
            if v.is_null() { Err("no result yet".to_owned()) } else { Ok(v) }
        })
        .await;
    assert_eq!(hit["seq"], json!("5"), "{hit}");
    assert_eq!(hit["marks"], json!(["narwhal"]), "{hit}");
    assert_eq!(
        hit["text"],
        json!("the narwhal <b>report</b> is ready"),
        "{hit}"
    );
    assert_eq!(
        hit["elements"],
        json!(0),
        "markup in a message must stay text: {hit}"
    );
    // The open results panel passes the same WCAG 2.1 A/AA audit as every other view.
    crate::browser_ui::audit(&run, alice, "search results").await;

    // ArrowDown moves focus onto the result; Enter jumps to it.
    run.ok(alice
        .type_into("#search-input", &Key::Down.to_string())
        .await)
        .await;
    let focused = run
        .ok(alice
            .js(
                "return document.activeElement?.dataset?.seq ?? null;",
                vec![],
            )
            .await)
        .await;
    assert_eq!(focused, json!("5"), "the result has the focus");
    let active = run
        .ok(alice
            .client
            .active_element()
            .await
            .map_err(|e| e.to_string()))
        .await;
    run.ok(active
        .send_keys(&Key::Enter.to_string())
        .await
        .map_err(|e| e.to_string()))
        .await;
    run.wait("message 5 shown, highlighted, in view", PAGE_WAIT, || async {
        let v = alice
            .js(
                "const el = document.querySelector('#messages .message[data-seq=\"5\"]');\
                 if (!el) return 'not loaded';\
                 const r = el.getBoundingClientRect(), t = document.getElementById('timeline').getBoundingClientRect();\
                 if (!el.classList.contains('search-target')) return 'not highlighted';\
                 if (r.bottom < t.top || r.top > t.bottom) return 'not in view';\
                 return document.activeElement === el ? 'ok' : 'not focused';",
                vec![],
            )
            .await?;
        if v == json!("ok") { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    assert!(
        run.ok(alice
            .js(
                "return document.getElementById('search-results').hidden;",
                vec![]
            )
            .await)
            .await
            == json!(true),
        "the results close after the jump"
    );
    drop(browsers);
    cluster.stop_all().await;
}
