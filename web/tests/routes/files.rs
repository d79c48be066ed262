//! File attachments in-process: chunk upload, posting a file, downloads with their headers, and
//! every documented refusal, each of which must write nothing (the applied index and the
//! channel's messages stay as they were).

use axum::http::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

use crate::harness::*;

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn put_chunk(h: &Harness, token: &str, bytes: &[u8]) -> Reply {
    h.raw(
        "PUT",
        &format!("/api/v1/blobs/{}", sha(bytes)),
        Some(token),
        Some(("application/octet-stream", bytes.to_vec())),
    )
    .await
}

fn file_body(name: &str, content: &[u8], chunks: &[&[u8]], id: &str) -> Value {
    json!({
        "name": name,
        "size": content.len(),
        "sha256": sha(content),
        "chunks": chunks.iter().map(|c| sha(c)).collect::<Vec<_>>(),
        "body": "see attached",
        "client_msg_id": id,
    })
}

/// Uploads `content` as one chunk and posts it to `channel`: the reply.
async fn upload(h: &Harness, token: &str, channel: &str, name: &str, content: &[u8]) -> Reply {
    let r = put_chunk(h, token, content).await;
    assert_eq!(r.status, StatusCode::CREATED, "chunk: {}", r.json);
    h.call(
        "POST",
        &format!("/api/v1/channels/{channel}/files"),
        Some(token),
        Some(file_body(name, content, &[content], &format!("up-{name}"))),
    )
    .await
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_post_and_download() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    h.channel(&alice, "docs", "public").await;
    // Two chunks: the file is their concatenation.
    let (a, b) = (b"hello, ".to_vec(), "wörld\n".as_bytes().to_vec());
    let whole = [a.clone(), b.clone()].concat();
    for c in [&a, &b] {
        let r = put_chunk(&h, &alice, c).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        assert_eq!(r.json["sha256"], sha(c));
        assert_eq!(r.json["size"], c.len());
    }
    // Re-uploading a chunk is fine.
    assert_eq!(put_chunk(&h, &alice, &a).await.status, StatusCode::CREATED);
    let body = file_body("  notes.txt ", &whole, &[&a, &b], "f1");
    let r = h
        .call(
            "POST",
            "/api/v1/channels/docs/files",
            Some(&alice),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let msg = &r.json;
    assert_eq!(msg["body"], "see attached");
    let att = &msg["attachments"][0];
    assert_eq!(att["name"], "notes.txt");
    assert_eq!(att["mime"], "text/plain; charset=utf-8");
    assert_eq!(att["size"], whole.len());
    assert_eq!(att["image"], false);
    assert_eq!(att["uploader"], "alice");
    let id = att["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    // A retry answers the original, with the same file.
    let again = h
        .call(
            "POST",
            "/api/v1/channels/docs/files",
            Some(&alice),
            Some(body),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_eq!(again.json["attachments"][0]["id"], id.as_str());
    // The listing carries the attachment too.
    let msgs = h.messages(&alice, "docs").await;
    assert_eq!(msgs.last().unwrap()["attachments"][0]["id"], id.as_str());
    // Any reader of a public channel downloads it.
    let bob = h.member("bob").await;
    let d = h
        .call("GET", &format!("/api/v1/files/{id}"), Some(&bob), None)
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.bytes, whole);
    assert_eq!(header(&d, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&d, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&d, "content-security-policy"),
        "sandbox; default-src 'none'"
    );
    assert_eq!(
        header(&d, "content-disposition"),
        "attachment; filename*=UTF-8''notes.txt"
    );
    assert_eq!(header(&d, "content-length"), whole.len().to_string());
    // No thumbnail for text.
    let t = h
        .req(
            "GET",
            &format!("/api/v1/files/{id}/thumbnail"),
            Some(&bob),
            None,
        )
        .await;
    assert_err(&t, StatusCode::NOT_FOUND, "no_thumbnail");
    // Deleting the message makes the file gone.
    let seq = msg["seq"].as_u64().unwrap();
    let (s, _) = h
        .req(
            "DELETE",
            &format!("/api/v1/channels/docs/messages/{seq}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let gone = h
        .req("GET", &format!("/api/v1/files/{id}"), Some(&alice), None)
        .await;
    assert_err(&gone, StatusCode::NOT_FOUND, "file_not_found");
    assert!(
        h.messages(&alice, "docs").await.last().unwrap()["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_inline_and_html_never() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    h.channel(&alice, "pics", "public").await;
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend_from_slice(&3u32.to_be_bytes());
    png.extend_from_slice(&2u32.to_be_bytes());
    png.extend_from_slice(b"\x08\x06\0\0\0rest of a png");
    let r = upload(&h, &alice, "pics", "shot.png", &png).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let att = &r.json["attachments"][0];
    assert_eq!(att["mime"], "image/png");
    assert_eq!(att["image"], true);
    assert_eq!(
        (att["width"].clone(), att["height"].clone()),
        (json!(3), json!(2))
    );
    let d = h
        .call(
            "GET",
            &format!("/api/v1/files/{}", att["id"].as_str().unwrap()),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(header(&d, "content-type"), "image/png");
    assert_eq!(
        header(&d, "content-disposition"),
        "inline; filename*=UTF-8''shot.png"
    );
    // HTML named like an image: sniffed from its bytes, served as an attachment.
    let html = b"<!DOCTYPE html><html><script>alert(1)</script></html>";
    let r = upload(&h, &alice, "pics", "evil.png", html).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let att = &r.json["attachments"][0];
    assert_eq!(att["mime"], "application/octet-stream");
    assert_eq!(att["image"], false);
    let d = h
        .call(
            "GET",
            &format!("/api/v1/files/{}", att["id"].as_str().unwrap()),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(d.bytes, html);
    assert_eq!(header(&d, "content-type"), "application/octet-stream");
    assert_eq!(header(&d, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&d, "content-disposition"),
        "attachment; filename*=UTF-8''evil.png"
    );
    assert_eq!(
        header(&d, "content-security-policy"),
        "sandbox; default-src 'none'"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunks_are_refused() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let before = applied_index(&h);
    // Too big: one byte over 8 MiB.
    let big = vec![7u8; 8 * 1024 * 1024 + 1];
    let r = put_chunk(&h, &alice, &big).await;
    assert_error(
        (r.status, &r.json),
        StatusCode::PAYLOAD_TOO_LARGE,
        "chunk_too_large",
    );
    let r = h
        .raw(
            "PUT",
            &format!("/api/v1/blobs/{}", sha(b"")),
            Some(&alice),
            Some(("application/octet-stream", Vec::new())),
        )
        .await;
    assert_error((r.status, &r.json), StatusCode::BAD_REQUEST, "empty_chunk");
    let r = h
        .raw(
            "PUT",
            &format!("/api/v1/blobs/{}", sha(b"one")),
            Some(&alice),
            Some(("application/octet-stream", b"two".to_vec())),
        )
        .await;
    assert_error(
        (r.status, &r.json),
        StatusCode::BAD_REQUEST,
        "hash_mismatch",
    );
    let r = h
        .raw(
            "PUT",
            "/api/v1/blobs/..%2F..%2Fetc",
            Some(&alice),
            Some(("application/octet-stream", b"x".to_vec())),
        )
        .await;
    assert_error(
        (r.status, &r.json),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_needs_token(
        &h,
        "PUT",
        &format!("/api/v1/blobs/{}", sha(b"{}")),
        Some(json!({})),
    )
    .await;
    // A chunk of exactly 8 MiB is fine.
    let max = vec![9u8; 8 * 1024 * 1024];
    assert_eq!(
        put_chunk(&h, &alice, &max).await.status,
        StatusCode::CREATED
    );
    assert_eq!(before, applied_index(&h), "chunks never go through the log");
    let stored = h.node.blobs().list().unwrap();
    assert_eq!(stored.len(), 1, "only the good chunk is stored: {stored:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_and_write_nothing() {
    let mut config = web::ApiConfig::default();
    config.files.max_size = 1024;
    let h = Harness::start_with(config).await;
    let alice = h.member("alice").await;
    let eve = h.member("eve").await;
    h.channel(&alice, "secret", "private").await;
    let content = b"private numbers".to_vec();
    assert_eq!(
        put_chunk(&h, &alice, &content).await.status,
        StatusCode::CREATED
    );
    let ok = file_body("n.txt", &content, &[&content], "x1");
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let before_msgs = h.messages(&alice, "secret").await.len();
    let cases: Vec<(&str, Option<&str>, Value, StatusCode, &str)> = vec![
        (
            "too big",
            None,
            with("size", json!(1025)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
        (
            "empty",
            None,
            with("size", json!(0)),
            StatusCode::BAD_REQUEST,
            "empty_file",
        ),
        (
            "traversal",
            None,
            with("name", json!("../../etc/passwd")),
            StatusCode::BAD_REQUEST,
            "bad_file_name",
        ),
        (
            "backslash",
            None,
            with("name", json!("..\\boot.ini")),
            StatusCode::BAD_REQUEST,
            "bad_file_name",
        ),
        (
            "bidi",
            None,
            with("name", json!("invoice\u{202e}fdp.exe")),
            StatusCode::BAD_REQUEST,
            "bad_file_name",
        ),
        (
            "control",
            None,
            with("name", json!("a\u{7}b.txt")),
            StatusCode::BAD_REQUEST,
            "bad_file_name",
        ),
        (
            "blank",
            None,
            with("name", json!("   ")),
            StatusCode::BAD_REQUEST,
            "bad_file_name",
        ),
        (
            "long",
            None,
            with("name", json!("x".repeat(256))),
            StatusCode::BAD_REQUEST,
            "bad_file_name",
        ),
        (
            "wrong hash",
            None,
            with("sha256", json!(sha(b"other"))),
            StatusCode::BAD_REQUEST,
            "hash_mismatch",
        ),
        (
            "wrong size",
            None,
            with("size", json!(3)),
            StatusCode::BAD_REQUEST,
            "hash_mismatch",
        ),
        (
            "missing chunk",
            None,
            with("chunks", json!([sha(b"never uploaded")])),
            StatusCode::CONFLICT,
            "missing_chunk",
        ),
        (
            "outsider",
            Some(eve.as_str()),
            ok.clone(),
            StatusCode::FORBIDDEN,
            "not_member",
        ),
    ];
    for (what, token, body, status, code) in cases {
        let before = applied_index(&h);
        let r = h
            .req(
                "POST",
                "/api/v1/channels/secret/files",
                Some(token.unwrap_or(&alice)),
                Some(body),
            )
            .await;
        assert_eq!(r.0, status, "{what}: {}", r.1);
        assert_err(&r, status, code);
        assert_eq!(
            before,
            applied_index(&h),
            "{what}: a refusal wrote to the log"
        );
    }
    let r = h
        .req(
            "POST",
            "/api/v1/channels/nope/files",
            Some(&alice),
            Some(ok.clone()),
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");
    assert_eq!(h.messages(&alice, "secret").await.len(), before_msgs);
    // The good one goes through; an outsider cannot tell the file exists.
    let r = h
        .req(
            "POST",
            "/api/v1/channels/secret/files",
            Some(&alice),
            Some(ok),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let id = r.1["attachments"][0]["id"].as_str().unwrap().to_owned();
    for path in [
        format!("/api/v1/files/{id}"),
        format!("/api/v1/files/{id}/thumbnail"),
    ] {
        let r = h.req("GET", &path, Some(&eve), None).await;
        assert_err(&r, StatusCode::NOT_FOUND, "file_not_found");
        let r = h.req("GET", &path, None, None).await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED);
    }
    let r = h
        .req(
            "GET",
            &format!("/api/v1/files/{}", "f".repeat(32)),
            Some(&alice),
            None,
        )
        .await;
    assert_err(&r, StatusCode::NOT_FOUND, "file_not_found");
    let d = h
        .call("GET", &format!("/api/v1/files/{id}"), Some(&alice), None)
        .await;
    assert_eq!(d.bytes, content);
    h.stop().await;
}

/// A PNG chunk: length, type, data, CRC-32 of type and data.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out
}

/// A valid PNG of `width` x `height` RGBA pixels whose IDAT inflates to zeros: with a large
/// size it is a decompression bomb (a few KB declaring gigabytes of pixels); with a small one
/// a normal, decodable image.
fn zero_png(width: u32, height: u32, rows: usize) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png.extend(png_chunk(b"IHDR", &ihdr));
    // zlib with stored blocks: `rows` rows of (filter byte 0 + zero pixels), then an adler32.
    let raw = vec![0u8; rows * (1 + width as usize * 4)];
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for x in &raw {
        a = (a + u32::from(*x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    png.extend(png_chunk(b"IDAT", &z));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// Thumbnails through the upload route: a real image gets one (served under the same access
/// rule), a decompression bomb is stored as a file without a thumbnail (the decode limits refuse
/// it before allocating: `files_inspect::thumbnail` tests bound the memory) and the node goes on
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_and_a_decompression_bomb() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let eve = h.member("eve").await;
    h.channel(&alice, "pics", "private").await;

    let png = zero_png(640, 480, 480);
    let r = upload(&h, &alice, "pics", "big.png", &png).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let att = &r.json["attachments"][0];
    assert_eq!(att["has_thumbnail"], true, "{att}");
    assert_eq!(
        (att["width"].clone(), att["height"].clone()),
        (json!(640), json!(480))
    );
    let thumb_path = format!("/api/v1/files/{}/thumbnail", att["id"].as_str().unwrap());
    let t = h.raw("GET", &thumb_path, Some(&alice), None).await;
    assert_eq!(t.status, StatusCode::OK);
    let ct = header(&t, "content-type").to_owned();
    assert!(
        ct == "image/png" || ct == "image/jpeg",
        "thumbnail type {ct}"
    );
    // Someone outside the private channel learns nothing, not even that it exists.
    let t = h.call("GET", &thumb_path, Some(&eve), None).await;
    assert_eq!(t.status, StatusCode::NOT_FOUND, "{}", t.json);

    // 1000 x 1,000,000 RGBA pixels declared (4 GB decoded), one row of them sent.
    let bomb = zero_png(1000, 1_000_000, 1);
    assert!(bomb.len() < 64 * 1024, "the bomb is small on the wire");
    let r = upload(&h, &alice, "pics", "bomb.png", &bomb).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let att = &r.json["attachments"][0];
    assert_eq!(att["has_thumbnail"], false, "{att}");
    let t = h
        .call(
            "GET",
            &format!("/api/v1/files/{}/thumbnail", att["id"].as_str().unwrap()),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(t.status, StatusCode::NOT_FOUND);
    assert_eq!(t.json["error"]["code"], "no_thumbnail");
    // Still serving.
    assert_eq!(h.messages(&alice, "pics").await.len(), 2);
}

/// A `GET` of `id` with extra request headers.
async fn get_with(h: &Harness, token: &str, id: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = axum::http::Request::builder()
        .method("GET")
        .uri(format!("/api/v1/files/{id}"))
        .header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    h.send(b.body(axum::body::Body::empty()).expect("request"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_downloads() {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let eve = h.member("eve").await;
    h.channel(&alice, "vault", "private").await;
    // Three chunks of uneven sizes, so ranges start and end inside and across chunks.
    let (a, b, c): (Vec<u8>, Vec<u8>, Vec<u8>) = (
        (0..10u8).collect(),
        (10..17u8).collect(),
        (17..30u8).collect(),
    );
    let whole = [a.clone(), b.clone(), c.clone()].concat();
    let size = whole.len();
    for chunk in [&a, &b, &c] {
        assert_eq!(
            put_chunk(&h, &alice, chunk).await.status,
            StatusCode::CREATED
        );
    }
    let r = h
        .call(
            "POST",
            "/api/v1/channels/vault/files",
            Some(&alice),
            Some(file_body("data.bin", &whole, &[&a, &b, &c], "range1")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["attachments"][0]["id"].as_str().unwrap().to_owned();
    let etag = format!("\"{}\"", sha(&whole));

    // Without a Range: the whole file, and the headers that announce ranges.
    let full = get_with(&h, &alice, &id, &[]).await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(full.bytes, whole);
    assert_eq!(header(&full, "accept-ranges"), "bytes");
    assert_eq!(header(&full, "etag"), etag);

    // One range, inside and across chunks: 206 with exactly that slice.
    for (range, lo, hi) in [
        ("bytes=0-0", 0, 0),
        ("bytes=3-12", 3, 12),
        ("bytes=12-14", 12, 14),
        ("bytes=9-10", 9, 10),
        ("bytes=25-1000", 25, size - 1),
        ("bytes=17-", 17, size - 1),
        ("bytes=-4", size - 4, size - 1),
        ("bytes=-1000", 0, size - 1),
    ] {
        let p = get_with(&h, &alice, &id, &[("range", range)]).await;
        assert_eq!(p.status, StatusCode::PARTIAL_CONTENT, "{range}: {}", p.json);
        assert_eq!(p.bytes, whole[lo..=hi], "{range}");
        assert_eq!(
            header(&p, "content-range"),
            format!("bytes {lo}-{hi}/{size}"),
            "{range}"
        );
        assert_eq!(header(&p, "content-length"), (hi - lo + 1).to_string());
        assert_eq!(header(&p, "accept-ranges"), "bytes");
        assert_eq!(header(&p, "etag"), etag);
        assert_eq!(header(&p, "x-content-type-options"), "nosniff");
        assert_eq!(
            header(&p, "content-security-policy"),
            "sandbox; default-src 'none'"
        );
    }

    // Past the end: 416 with the size.
    for range in [format!("bytes={size}-"), "bytes=-0".to_string()] {
        let u = get_with(&h, &alice, &id, &[("range", &range)]).await;
        assert_eq!(u.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(
            u.json["error"]["code"], "range_not_satisfiable",
            "{}",
            u.json
        );
        assert_eq!(header(&u, "content-range"), format!("bytes */{size}"));
    }

    // Several ranges, a malformed one, or an If-Range for another version: the whole file.
    for extra in [
        vec![("range", "bytes=0-1,5-9")],
        vec![("range", "bytes=9-2")],
        vec![("range", "bytes=2-5"), ("if-range", "\"0000\"")],
        vec![
            ("range", "bytes=2-5"),
            ("if-range", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ],
    ] {
        let w = get_with(&h, &alice, &id, &extra).await;
        assert_eq!(w.status, StatusCode::OK, "{extra:?}");
        assert_eq!(w.bytes, whole, "{extra:?}");
        assert_eq!(header(&w, "content-range"), "", "{extra:?}");
    }
    // An If-Range with the current tag keeps the range.
    let m = get_with(
        &h,
        &alice,
        &id,
        &[("range", "bytes=2-5"), ("if-range", &etag)],
    )
    .await;
    assert_eq!(m.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(m.bytes, whole[2..=5]);

    // A Range changes nothing about who may read: outside the channel, still 404 (for any
    // range, satisfiable or not) and not one byte.
    for range in ["bytes=0-3", "bytes=-2", "bytes=999-"] {
        let refused = get_with(&h, &eve, &id, &[("range", range)]).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "{range}");
        assert_eq!(refused.json["error"]["code"], "file_not_found");
        assert_eq!(header(&refused, "content-range"), "");
    }
    h.stop().await;
}
