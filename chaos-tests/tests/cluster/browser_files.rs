//! Files in the web client, in real Chromium (the harness of `browser.rs`).
//!
//! `browser_files_client_pieces` needs no files backend: in a signed-in page it checks the
//! client's own SHA-256 (`files.js`) against the standard vectors and against SubtleCrypto on
//! 3 MiB of random bytes fed in odd-sized pieces (the whole-file hash of an upload is computed
//! that way), that the attach button is a labelled, focusable button, that a pasted screenshot
//! (a synthetic `paste` event whose `DataTransfer` holds a PNG drawn on a canvas) is staged
//! under a readable name and can be removed, and that an attachment whose name is HTML renders
//! as text, never as markup (and that an image without a loadable thumbnail falls back to a
//! file card).
//!
//! `browser_pasted_screenshot_shows_as_preview_for_another_user` is the acceptance scenario:
//! alice pastes a screenshot on node 1's page and sends it; bob, on node 2's page, sees the
//! preview image loaded (`naturalWidth > 0`, alt text = the file name), opens the viewer, sees
//! the full image, closes it with Escape and focus returns to the preview. Then alice opens
//! the message's thread, pastes a screenshot into the thread's composer (staged in the thread
//! panel's tray, not the main one; the panel passes the axe audit with it) and sends it as a
//! reply; bob opens the thread and sees the reply's preview loaded. It needs the files backend
//! (`PUT /api/v1/blobs`, `POST .../files`, `GET /api/v1/files/...`).
//!
//! `browser_upload_continues_on_another_node_after_a_kill`: a 100 MiB upload over a throttled
//! link loses the node it goes through (SIGKILL) after its first chunk; the page finishes it
//! on another node and bob's download is byte-identical.

use std::time::{Duration, Instant};

use chaos_tests::TestCluster;
use fantoccini::key::Key;
use serde_json::{Value, json};

use crate::browser::{ALICE, DESKTOP, PAGE_WAIT, Page, Run, browser_tools, signed_in, two_users};

/// Upload (chunk PUT replicated to a majority, then the commit) and delivery to the other page.
const UPLOAD_WAIT: Duration = Duration::from_secs(30);
/// The size of the upload that survives a node's death (8 MiB chunks).
const UPLOAD_MIB: usize = 100;

/// JS: pastes a 64x48 PNG (drawn on a canvas) into the composer (the textarea whose id is the
/// first argument, `composer` without one) as a browser does for a screenshot: a `paste` event
/// whose clipboard holds one file named `image.png`. Resolves to whether the page took it
/// (`defaultPrevented`).
const PASTE_PNG_JS: &str = "const target = arguments[0] ?? 'composer';\n\
  return (async () => {\n\
  const c = document.createElement('canvas');\n\
  c.width = 64; c.height = 48;\n\
  const g = c.getContext('2d');\n\
  g.fillStyle = '#2f6fde'; g.fillRect(0, 0, 64, 48);\n\
  g.fillStyle = '#ffffff'; g.fillRect(8, 8, 20, 12);\n\
  const blob = await new Promise((r) => c.toBlob(r, 'image/png'));\n\
  const file = new File([blob], 'image.png', { type: 'image/png' });\n\
  const dt = new DataTransfer();\n\
  dt.items.add(file);\n\
  const ev = new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true });\n\
  document.getElementById(target).dispatchEvent(ev);\n\
  return ev.defaultPrevented;\n\
})();";

/// JS: the chips of the upload tray (the one whose id is the first argument, the main composer's
/// `file-tray` without one), `[{state, name}]`, and whether the tray is shown.
const TRAY_JS: &str = "const tray = document.getElementById(arguments[0] ?? 'file-tray');\n\
  return { shown: !!tray && !tray.hidden, chips: [...(tray?.querySelectorAll('.file-chip') ?? [])]\
  .map((c) => ({ state: c.dataset.state, name: c.querySelector('.file-chip-name')?.textContent ?? '', \
  info: c.querySelector('.file-chip-info')?.textContent ?? '' })) };";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_files_client_pieces() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let cluster = TestCluster::start(1).await;
    let browsers = signed_in(&cluster, &tools, [ALICE]).await;
    let [alice] = &browsers.pages;
    let run = browsers.run(&cluster);

    // 1. SHA-256: standard vectors, and incremental == SubtleCrypto on random data.
    let sha = run
        .ok(alice
            .js(
                "return (async () => {\n\
                 const m = await import('/files.js');\n\
                 const enc = new TextEncoder();\n\
                 const vectors = [\n\
                   ['', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],\n\
                   ['abc', 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'],\n\
                   ['abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq', \
                    '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1'],\n\
                 ];\n\
                 const bad = vectors.filter(([s, want]) => new m.Sha256().update(enc.encode(s)).hex() !== want)\
                   .map(([s]) => s);\n\
                 const million = new m.Sha256().update(new Uint8Array(1000000).fill(97)).hex();\n\
                 const data = new Uint8Array(3 * 1024 * 1024 + 17);\n\
                 for (let o = 0; o < data.length; o += 65536) crypto.getRandomValues(data.subarray(o, o + 65536));\n\
                 const h = new m.Sha256();\n\
                 let off = 0, k = 1;\n\
                 while (off < data.length) {\n\
                   const n = Math.min(data.length - off, k);\n\
                   h.update(data.subarray(off, off + n));\n\
                   off += n;\n\
                   k = ((k * 7 + 13) % 100003) + 1;\n\
                 }\n\
                 const subtle = m.toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', data)));\n\
                 return { bad, million, split: h.hex() === subtle, chunk: (await m.sha256Hex(data)) === subtle,\n\
                   sizes: [0, 1536, 10 * 1024 * 1024].map(m.humanSize) };\n\
                 })();",
                vec![],
            )
            .await)
        .await;
    assert_eq!(sha["bad"], json!([]), "SHA-256 vectors failed: {sha}");
    assert_eq!(
        sha["million"],
        json!("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
        "SHA-256 of a million 'a': {sha}"
    );
    assert_eq!(
        sha["split"],
        json!(true),
        "incremental != SubtleCrypto: {sha}"
    );
    assert_eq!(sha["chunk"], json!(true), "chunk hash: {sha}");
    assert_eq!(sha["sizes"], json!(["0 B", "1.5 KB", "10 MB"]), "{sha}");

    // 2. The attach button: a real, labelled, focusable button in the composer.
    let attach = run
        .ok(alice
            .js(
                "const b = document.getElementById('composer-attach');\n\
                 if (!b) return null;\n\
                 b.focus();\n\
                 return { tag: b.tagName, label: b.getAttribute('aria-label'), \
                   focused: document.activeElement === b, inForm: !!b.closest('#composer-form') };",
                vec![],
            )
            .await)
        .await;
    assert_eq!(
        attach,
        json!({"tag": "BUTTON", "label": "Attach files", "focused": true, "inForm": true}),
        "attach button"
    );

    // 3. A pasted screenshot is staged under a readable name; removing it empties the tray.
    let taken = run.ok(alice.js(PASTE_PNG_JS, vec![]).await).await;
    assert_eq!(taken, json!(true), "the page did not take the pasted image");
    let name = run
        .wait("the pasted screenshot in the tray", PAGE_WAIT, || async {
            let v = alice.js(TRAY_JS, vec![]).await?;
            match v["chips"].as_array().map(Vec::as_slice) {
                Some([chip]) if v["shown"] == json!(true) && chip["state"] == json!("staged") => {
                    Ok(chip["name"].as_str().unwrap_or_default().to_owned())
                }
                _ => Err(format!("tray: {v}")),
            }
        })
        .await;
    assert!(
        name.starts_with("Screenshot ") && name.ends_with(".png"),
        "pasted file named {name:?}"
    );
    run.ok(alice.click("#file-tray .file-chip-remove").await)
        .await;
    run.wait("the tray to empty", PAGE_WAIT, || async {
        let v = alice.js(TRAY_JS, vec![]).await?;
        if v["shown"] == json!(false) && v["chips"] == json!([]) {
            Ok(())
        } else {
            Err(format!("tray: {v}"))
        }
    })
    .await;

    // 4. Attachments render as DOM built from text: a name that is HTML stays text. The
    // image's thumbnail does not exist (unknown id), so it falls back to a file card.
    let rendered = run
        .ok(alice
            .js(
                "return (async () => {\n\
                 const m = await import('/files.js');\n\
                 const slot = document.createElement('div');\n\
                 slot.id = 'attachment-probe';\n\
                 document.body.appendChild(slot);\n\
                 m.updateAttachments(slot, { attachments: [\n\
                   { id: '0'.repeat(32), name: '<img src=x onerror=\"window.__pwned=1\">.pdf', size: 2048, \
                     sha256: '', mime: 'application/pdf', image: false, has_thumbnail: false },\n\
                   { id: 'f'.repeat(32), name: 'pic.png', size: 5000, sha256: '', mime: 'image/png', \
                     image: true, width: 640, height: 480, has_thumbnail: true },\n\
                 ] });\n\
                 return { preview: slot.querySelector('.attachment-image img')?.alt ?? null, \
                   width: slot.querySelector('.attachment-image img')?.width ?? null };\n\
                 })();",
                vec![],
            )
            .await)
        .await;
    assert_eq!(
        rendered,
        json!({"preview": "pic.png", "width": 320}),
        "the image preview before its thumbnail loads"
    );
    let cards = run
        .wait(
            "the image without a thumbnail to become a file card",
            PAGE_WAIT,
            || async {
                let v = alice
                    .js(
                        "const slot = document.getElementById('attachment-probe');\n\
                         return { cards: [...slot.querySelectorAll('.file-card')].map((c) => ({ \
                           name: c.querySelector('.file-card-name').textContent, \
                           info: c.querySelector('.file-card-info').textContent, \
                           download: c.querySelector('a.file-download').getAttribute('download'), \
                           elements: c.querySelector('.file-card-name').children.length })), \
                           imgs: slot.querySelectorAll('img').length, pwned: window.__pwned ?? null };",
                        vec![],
                    )
                    .await?;
                if v["cards"].as_array().is_some_and(|c| c.len() == 2) {
                    Ok(v)
                } else {
                    Err(format!("{v}"))
                }
            },
        )
        .await;
    assert_eq!(
        cards,
        json!({
            "cards": [
                {"name": "<img src=x onerror=\"window.__pwned=1\">.pdf", "info": "2.0 KB · PDF",
                 "download": "<img src=x onerror=\"window.__pwned=1\">.pdf", "elements": 0},
                {"name": "pic.png", "info": "4.9 KB · PNG image", "download": "pic.png",
                 "elements": 0},
            ],
            "imgs": 0,
            "pwned": null,
        }),
        "attachments as rendered"
    );
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_pasted_screenshot_shows_as_preview_for_another_user() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let cluster = TestCluster::start(3).await;
    let browsers = two_users(&cluster, &tools).await;
    let [alice, bob] = &browsers.pages;
    let run = browsers.run(&cluster);

    // Alice pastes a screenshot and sends it with a caption.
    let taken = run.ok(alice.js(PASTE_PNG_JS, vec![]).await).await;
    assert_eq!(taken, json!(true), "the page did not take the pasted image");
    let name = run
        .wait("the pasted screenshot in the tray", PAGE_WAIT, || async {
            let v = alice.js(TRAY_JS, vec![]).await?;
            match v["chips"].as_array().map(Vec::as_slice) {
                Some([chip]) if chip["state"] == json!("staged") => {
                    Ok(chip["name"].as_str().unwrap_or_default().to_owned())
                }
                _ => Err(format!("tray: {v}")),
            }
        })
        .await;
    let caption = "the login page, see the button";
    run.type_message(alice, caption).await;
    run.wait("alice's upload to finish", UPLOAD_WAIT, || async {
        let v = alice.js(TRAY_JS, vec![]).await?;
        if v["chips"] == json!([]) {
            Ok(())
        } else {
            Err(format!("tray: {v}"))
        }
    })
    .await;

    // Both pages show the message with its caption and the preview, loaded.
    for page in [alice, bob] {
        preview_loaded(&run, page, "#timeline", &name, caption).await;
    }
    run.screenshot(bob, "files-preview", DESKTOP.0, DESKTOP.1)
        .await;

    // Bob opens the viewer: the full image loads; Escape closes it and focus returns.
    run.ok(bob.click("#timeline .message .attachment-image").await)
        .await;
    run.wait("the viewer's image", UPLOAD_WAIT, || async {
        let v = bob
            .js(
                "const d = document.getElementById('file-viewer');\n\
                 const img = d?.querySelector('.viewer-img');\n\
                 return { open: !!d?.open, alt: img?.alt ?? null, w: img?.naturalWidth ?? 0, \
                   title: document.getElementById('file-viewer-title')?.textContent ?? null };",
                vec![],
            )
            .await?;
        if v["open"] == json!(true) && v["w"] == json!(64) {
            Ok(v)
        } else {
            Err(format!("viewer: {v}"))
        }
    })
    .await;
    // The viewer and the conversation with its image preview pass the WCAG 2.1 A/AA audit.
    crate::browser_ui::audit(&run, bob, "file viewer").await;
    run.screenshot(bob, "files-viewer", DESKTOP.0, DESKTOP.1)
        .await;
    run.ok(bob
        .type_into("#file-viewer .dialog-close", &Key::Escape.to_string())
        .await)
        .await;
    run.wait(
        "the viewer to close and focus to return",
        PAGE_WAIT,
        || async {
            let v = bob
                .js(
                    "return { open: !!document.getElementById('file-viewer')?.open, \
                       focus: document.activeElement?.classList.contains('attachment-image') ?? false };",
                    vec![],
                )
                .await?;
            if v == json!({"open": false, "focus": true}) {
                Ok(())
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .await;

    thread_reply_with_a_file(&run, alice, bob).await;
    alice.close().await;
    bob.close().await;
}

/// JS: opens the thread of the timeline's message that has an image preview (its "Reply in
/// thread" action).
const OPEN_THREAD_JS: &str = "const m = [...document.querySelectorAll('#timeline .message')]\
  .find((el) => el.querySelector('.attachment-image'));\n\
  const b = m?.querySelector('.act-reply');\n\
  if (b) b.click();\n\
  return !!b;";

/// A reply in a thread carries a file: alice pastes a screenshot into the thread panel's
/// composer (it is staged in the panel's tray, not the main one), sends it with a caption, and
/// bob, opening the thread, sees the reply with its preview loaded.
async fn thread_reply_with_a_file(run: &Run<'_>, alice: &Page, bob: &Page) {
    assert_eq!(
        run.ok(alice.js(OPEN_THREAD_JS, vec![]).await).await,
        json!(true)
    );
    run.wait("alice's thread composer with its attach button", PAGE_WAIT, || async {
        let v = alice
            .js(
                "const b = document.getElementById('thread-attach');\n\
                 return { label: b?.getAttribute('aria-label') ?? null, \
                   composer: !!document.getElementById('thread-composer'), \
                   tray: document.getElementById('thread-file-tray')?.getAttribute('aria-label') ?? null };",
                vec![],
            )
            .await?;
        let want = json!({"label": "Attach files to reply", "composer": true, "tray": "Reply attachments"});
        if v == want { Ok(()) } else { Err(format!("{v}")) }
    })
    .await;
    let taken = run
        .ok(alice.js(PASTE_PNG_JS, vec![json!("thread-composer")]).await)
        .await;
    assert_eq!(
        taken,
        json!(true),
        "the thread composer did not take the pasted image"
    );
    let name = run
        .wait(
            "the screenshot in the thread's tray only",
            PAGE_WAIT,
            || async {
                let thread = alice.js(TRAY_JS, vec![json!("thread-file-tray")]).await?;
                let main = alice.js(TRAY_JS, vec![]).await?;
                match thread["chips"].as_array().map(Vec::as_slice) {
                    Some([chip])
                        if chip["state"] == json!("staged")
                            && thread["shown"] == json!(true)
                            && main["chips"] == json!([]) =>
                    {
                        Ok(chip["name"].as_str().unwrap_or_default().to_owned())
                    }
                    _ => Err(format!("thread tray: {thread}; main tray: {main}")),
                }
            },
        )
        .await;
    // The thread panel with its new button and a staged file passes the audit too.
    crate::browser_ui::audit(run, alice, "thread with a staged file").await;
    let caption = "and the same in the thread";
    let keys = format!("{caption}{}", Key::Enter);
    run.ok(alice.type_into("#thread-composer", &keys).await)
        .await;
    run.wait("alice's reply upload to finish", UPLOAD_WAIT, || async {
        let v = alice.js(TRAY_JS, vec![json!("thread-file-tray")]).await?;
        if v["chips"] == json!([]) {
            Ok(())
        } else {
            Err(format!("tray: {v}"))
        }
    })
    .await;
    assert_eq!(
        run.ok(bob.js(OPEN_THREAD_JS, vec![]).await).await,
        json!(true)
    );
    preview_loaded(run, bob, "#thread-list", &name, caption).await;
}

/// Waits until the message list `list` (`#timeline`, or `#thread-list` for a thread) on
/// `page` has the message `caption` with one image preview named `name`, its thumbnail loaded
/// (`naturalWidth > 0`).
async fn preview_loaded(run: &Run<'_>, page: &Page, list: &str, name: &str, caption: &str) {
    let want = json!(name);
    run.wait(
        &format!("{}'s {list} to show the image's preview", page.who),
        UPLOAD_WAIT,
        || async {
            let v: Value = page
                .js(
                    "return [...document.querySelectorAll(arguments[0] + ' .message')].map((el) => ({ \
                       body: el.querySelector('.body')?.textContent ?? '', \
                       previews: [...el.querySelectorAll('.attachment-image img')].map((i) => \
                         ({ alt: i.alt, w: i.naturalWidth, complete: i.complete })) }))\
                       .filter((m) => m.previews.length);",
                    vec![json!(list)],
                )
                .await?;
            let ok = v.as_array().is_some_and(|msgs| {
                msgs.iter().any(|m| {
                    m["body"] == json!(caption)
                        && m["previews"].as_array().is_some_and(|p| {
                            p.len() == 1
                                && p[0]["alt"] == want
                                && p[0]["w"].as_u64().is_some_and(|w| w > 0)
                        })
                })
            });
            if ok { Ok(()) } else { Err(format!("{v}")) }
        },
    )
    .await;
}

/// The product's promise (a 100 MiB upload over Wi-Fi survives a node failover): a
/// [`UPLOAD_MIB`] MiB upload (13 chunks, each different) from alice's page on node 1, with the page's
/// upload bandwidth throttled (DevTools network emulation, about 2 s per 8 MiB chunk) so the
/// upload is still under way when the node the page uploads through (read from the page's
/// resource timing of its acknowledged chunk PUTs) is SIGKILLed after its first acknowledged
/// chunk. The page goes on with the next unacknowledged chunk on another node (the chunk in
/// flight is sent again there, no acknowledged chunk is), commits the file there, and bob, on
/// node 2, sees the file card with its size and downloads it through his page: the bytes are
/// the ones alice pasted (same SHA-256 and size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_upload_continues_on_another_node_after_a_kill() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let cluster = TestCluster::start(3).await;
    let browsers = two_users(&cluster, &tools).await;
    let [alice, bob] = &browsers.pages;
    let run = browsers.run(&cluster);
    run.ok(alice.cdp("Network.enable", json!({})).await).await;
    run.ok(alice
        .cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": false, "latency": 0, "downloadThroughput": -1,
                        "uploadThroughput": 4 * 1024 * 1024 }),
        )
        .await)
        .await;
    let name = "measurements.bin";
    // Every 4 KiB page starts with its own number, so no two chunks are alike; the SHA-256 of
    // what was pasted (SubtleCrypto, not the client's code) is kept for the download check.
    let taken = run
        .ok(alice
            .js(
                "return (async () => {\n\
                 const data = new Uint8Array(arguments[1] * 1024 * 1024);\n\
                 const view = new DataView(data.buffer);\n\
                 for (let i = 0; i < data.length; i += 4096) view.setUint32(i, i / 4096);\n\
                 const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', data));\n\
                 window.__pasted = { size: data.length, \
                   sha256: [...digest].map((b) => b.toString(16).padStart(2, '0')).join('') };\n\
                 const dt = new DataTransfer();\n\
                 dt.items.add(new File([data], arguments[0], { type: 'application/octet-stream' }));\n\
                 const ev = new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true });\n\
                 document.getElementById('composer').dispatchEvent(ev);\n\
                 return ev.defaultPrevented;\n\
                 })();",
                vec![json!(name), json!(UPLOAD_MIB)],
            )
            .await)
        .await;
    assert_eq!(taken, json!(true), "the page did not take the pasted file");
    run.ok(alice.click("#composer-send").await).await;
    run.wait(
        "alice's first chunk to be acknowledged",
        UPLOAD_WAIT,
        || async {
            let v = alice.js(TRAY_JS, vec![]).await?;
            let info = v["chips"][0]["info"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match info.trim_end_matches('%').parse::<u32>() {
                Ok(p) if p > 0 && p < 100 => Ok(()),
                _ => Err(format!("tray: {v}")),
            }
        },
    )
    .await;
    // The node that acknowledged the chunk is the one the page uploads through: that one dies.
    let before = run.ok(chunk_puts(alice).await).await;
    let origins: Vec<&str> = before.iter().map(|(o, _)| o.as_str()).collect();
    let killed = match origins.as_slice() {
        [first, rest @ ..] if rest.iter().all(|o| o == first) => {
            match cluster
                .ids()
                .into_iter()
                .find(|id| cluster.url(*id) == *first)
            {
                Some(id) => id,
                None => {
                    run.fail(&format!("chunks went to {first}, no node's address"))
                        .await
                }
            }
        }
        _ => {
            run.fail(&format!(
                "acknowledged chunk PUTs before the kill: {before:?}"
            ))
            .await
        }
    };
    let killed_at = Instant::now();
    cluster.kill(killed);
    run.wait(
        "alice's upload to finish on another node",
        Duration::from_secs(90),
        || async {
            let v = alice.js(TRAY_JS, vec![]).await?;
            if v["chips"] == json!([]) {
                Ok(())
            } else {
                Err(format!("tray: {v}"))
            }
        },
    )
    .await;
    eprintln!(
        "node {killed} SIGKILLed after {} acknowledged chunk(s); the upload finished {:.1?} later",
        before.len(),
        killed_at.elapsed()
    );
    // Every chunk was acknowledged once (none sent again after its acknowledgement), and the
    // ones after the kill by another node.
    let puts = run.ok(chunk_puts(alice).await).await;
    let killed_url = cluster.url(killed);
    let after = &puts[before.len().min(puts.len())..];
    let mut shas: Vec<&str> = puts.iter().map(|(_, sha)| sha.as_str()).collect();
    shas.sort_unstable();
    shas.dedup();
    let chunks = UPLOAD_MIB.div_ceil(8);
    if puts.len() != chunks || shas.len() != chunks || after.iter().any(|(o, _)| *o == killed_url) {
        run.fail::<()>(&format!(
            "acknowledged chunk PUTs (node {killed} is {killed_url}): {puts:?}"
        ))
        .await;
    }
    run.wait("bob's page to show the file card", UPLOAD_WAIT, || async {
        let v = bob
            .js(
                "return [...document.querySelectorAll('#timeline .message .file-card')].map((c) => \
                   [c.querySelector('.file-card-name').textContent, \
                    c.querySelector('.file-card-info').textContent]);",
                vec![],
            )
            .await?;
        if v == json!([[name, format!("{UPLOAD_MIB} MB · Binary file")]]) {
            Ok(())
        } else {
            Err(format!("{v}"))
        }
    })
    .await;
    // Bob downloads it with his page's own download link: the page fetches the file with his
    // token and hands the browser a `blob:` URL; the Blob behind it is hashed here (the page's
    // CSP keeps `fetch` off `blob:` URLs).
    let pasted = run
        .ok(alice.js("return window.__pasted;", vec![]).await)
        .await;
    run.ok(bob
        .js(
            "window.__downloaded = null;\n\
             const blobs = new Map();\n\
             const create = URL.createObjectURL;\n\
             URL.createObjectURL = (b) => { const u = create(b); blobs.set(u, b); return u; };\n\
             const click = HTMLAnchorElement.prototype.click;\n\
             HTMLAnchorElement.prototype.click = function () {\n\
               const blob = blobs.get(this.href);\n\
               if (!blob) return click.call(this);\n\
               window.__downloaded = 'reading';\n\
               blob.arrayBuffer().then(async (b) => {\n\
                 const d = new Uint8Array(await crypto.subtle.digest('SHA-256', b));\n\
                 window.__downloaded = { name: this.download, size: b.byteLength, \
                   sha256: [...d].map((x) => x.toString(16).padStart(2, '0')).join('') };\n\
               }, (e) => { window.__downloaded = String(e); });\n\
             };\n\
             document.querySelector('#timeline .message .file-card a.file-download').click();",
            vec![],
        )
        .await)
        .await;
    let downloaded = run
        .wait("bob's download of the file", UPLOAD_WAIT, || async {
            let v = bob.js("return window.__downloaded;", vec![]).await?;
            if v.is_object() {
                Ok(v)
            } else {
                Err(format!("{v}"))
            }
        })
        .await;
    let want = json!({ "name": name, "size": pasted["size"], "sha256": pasted["sha256"] });
    assert_eq!(
        downloaded, want,
        "bob's download differs from what alice pasted"
    );
    alice.close().await;
    bob.close().await;
}

/// The chunk PUTs `page` completed with 201, in order: (origin of the node, chunk SHA-256),
/// from the page's resource timing (a failed request has no `responseStatus` 201).
async fn chunk_puts(page: &Page) -> Result<Vec<(String, String)>, String> {
    let v = page
        .js(
            "return performance.getEntriesByType('resource')\
               .filter((e) => e.responseStatus === 201 && e.name.includes('/api/v1/blobs/'))\
               .map((e) => { const u = new URL(e.name); \
                 return [u.origin, u.pathname.split('/').pop()]; });",
            vec![],
        )
        .await?;
    serde_json::from_value(v).map_err(|e| format!("resource entries: {e}"))
}
