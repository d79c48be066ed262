//! File attachments on real processes with mutual TLS between the nodes (issue 15, item 1):
//!
//! - `file_survives_the_uploader_dying`: a two-chunk file uploaded and posted through node 1,
//!   which is SIGKILLed right after the acknowledgement; nodes 2 and 3 serve it byte-identical.
//!   Node 1, restarted with its blob directory wiped, gets every blob back from its peers (the
//!   background fetcher, hash checked) and serves the file again.
//! - `follower_catches_up_and_deletion_collects_everywhere`: a follower down during uploads
//!   fetches the blobs on its return; deleting the message removes the blobs from every node's
//!   disk once the grace period (2 s here) has passed.
//! - `never_attached_chunks_are_collected`: chunks uploaded but never committed as a file go
//!   from every node's disk after the grace period; the chunks of an attached file stay.
//! - `bad_uploads_write_nothing`: oversized, empty, a user outside a private channel,
//!   path-traversal and bidi names get their documented errors and change nothing (the
//!   channel's messages stay the same); an HTML file named `.png` is served as an attachment
//!   with `nosniff`.

use std::path::PathBuf;
use std::time::Duration;

use chaos_tests::{ClusterOptions, TestCluster};
use serde_json::{Value, json};
use sha2::Digest;

use crate::util::create_channel;

const CHUNK: usize = 8 * 1024 * 1024;
const SLOW: Duration = Duration::from_secs(60);

pub(crate) fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic bytes that do not compress or repeat in 8 MiB (xorshift).
pub(crate) fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Where node `id` keeps blob `sha`.
pub(crate) fn blob_path(cluster: &TestCluster, id: u64, sha: &str) -> PathBuf {
    cluster
        .root()
        .join(format!("n{id}"))
        .join("blobs")
        .join(&sha[..2])
        .join(sha)
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn call(
    cluster: &TestCluster,
    id: u64,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Vec<u8>>,
    json_body: Option<Value>,
) -> Result<Reply, String> {
    let mut req = cluster
        .http()
        .request(method, format!("{}{path}", cluster.url(id)))
        .bearer_auth(token)
        .timeout(SLOW);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/octet-stream")
            .body(b);
    }
    if let Some(j) = json_body {
        req = req.json(&j);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

async fn put_chunk(cluster: &TestCluster, id: u64, token: &str, bytes: &[u8]) -> Reply {
    let path = format!("/api/v1/blobs/{}", sha(bytes));
    match call(
        cluster,
        id,
        reqwest::Method::PUT,
        &path,
        token,
        Some(bytes.to_vec()),
        None,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => cluster.fail(&format!("PUT {path} via node {id}: {e}")),
    }
}

fn file_body(name: &str, whole: &[u8], chunks: &[&[u8]], cmid: &str) -> Value {
    json!({
        "name": name,
        "size": whole.len(),
        "sha256": sha(whole),
        "chunks": chunks.iter().map(|c| sha(c)).collect::<Vec<_>>(),
        "body": "",
        "client_msg_id": cmid,
    })
}

async fn post_file(
    cluster: &TestCluster,
    id: u64,
    token: &str,
    channel: &str,
    body: Value,
) -> Reply {
    let path = format!("/api/v1/channels/{channel}/files");
    match call(
        cluster,
        id,
        reqwest::Method::POST,
        &path,
        token,
        None,
        Some(body),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => cluster.fail(&format!("POST {path} via node {id}: {e}")),
    }
}

/// Uploads `chunks` and posts them as `name` through node `id`: the file id and the message seq.
async fn upload(
    cluster: &TestCluster,
    id: u64,
    channel: &str,
    name: &str,
    chunks: &[&[u8]],
) -> (String, u64) {
    let token = cluster.admin_token();
    for c in chunks {
        let r = put_chunk(cluster, id, token, c).await;
        assert_eq!(r.status, 201, "chunk via node {id}: {:?}", r.json());
    }
    let whole = chunks.concat();
    let r = post_file(
        cluster,
        id,
        token,
        channel,
        file_body(name, &whole, chunks, name),
    )
    .await;
    assert_eq!(r.status, 201, "file via node {id}: {:?}", r.json());
    let v = r.json();
    let fid = v["attachments"][0]["id"]
        .as_str()
        .expect("file id")
        .to_owned();
    (fid, v["seq"].as_u64().expect("seq"))
}

/// Downloads file `fid` through node `id` until it answers 200 (the node may still be
/// catching up); returns the bytes.
async fn download(cluster: &TestCluster, id: u64, fid: &str) -> Vec<u8> {
    let token = cluster.admin_token().to_owned();
    cluster
        .wait_until(
            &format!("file {fid} downloads from node {id}"),
            SLOW,
            || {
                let token = token.clone();
                async move {
                    let r = call(
                        cluster,
                        id,
                        reqwest::Method::GET,
                        &format!("/api/v1/files/{fid}"),
                        &token,
                        None,
                        None,
                    )
                    .await?;
                    if r.status == 200 {
                        Ok(r.body)
                    } else {
                        Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
                    }
                }
            },
        )
        .await
}

async fn wait_blobs(cluster: &TestCluster, id: u64, shas: &[String], present: bool) {
    let what = if present { "present" } else { "gone" };
    cluster
        .wait_until(&format!("blobs {what} on node {id}"), SLOW, || async {
            let wrong: Vec<&String> = shas
                .iter()
                .filter(|s| blob_path(cluster, id, s).is_file() != present)
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet {what}: {wrong:?}"))
            }
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_survives_the_uploader_dying() {
    let cluster = TestCluster::start_with(3, ClusterOptions::default().tls()).await;
    create_channel(&cluster, "files").await;
    let a = content(CHUNK, 7);
    let b = content(300 * 1024, 11);
    let whole = [a.clone(), b.clone()].concat();
    let (fid, _) = upload(&cluster, 1, "files", "data.bin", &[&a, &b]).await;
    // Right after the acknowledgement.
    cluster.kill(1);
    for id in [2, 3] {
        let got = download(&cluster, id, &fid).await;
        assert!(
            got == whole,
            "node {id} served {} bytes, not the file",
            got.len()
        );
    }
    // Node 1 comes back without its blobs and fetches them from its peers.
    std::fs::remove_dir_all(cluster.root().join("n1").join("blobs")).expect("wipe node 1's blobs");
    cluster.restart(1).await;
    wait_blobs(&cluster, 1, &[sha(&a), sha(&b)], true).await;
    assert!(
        download(&cluster, 1, &fid).await == whole,
        "node 1 after the wipe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catches_up_and_deletion_collects_everywhere() {
    let cluster = TestCluster::start_with(
        3,
        ClusterOptions::default()
            .tls()
            .top_level("files", "{ gc_grace = \"2s\" }"),
    )
    .await;
    create_channel(&cluster, "files").await;
    let leader = cluster.wait_for_leader(&[]).await;
    let down = [1, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    let via = [1, 2, 3]
        .into_iter()
        .find(|i| *i != down)
        .expect("a live node");
    // A first file while every member is up: a new command version is only proposed once
    // every member is known to speak it, and from its first commit on it stays active.
    let w = content(100, 1);
    let (fw, _) = upload(&cluster, via, "files", "w.bin", &[&w]).await;
    cluster.kill(down);
    let x = content(1024 * 1024, 3);
    let y = content(4096, 5);
    let (fx, sx) = upload(&cluster, via, "files", "x.bin", &[&x]).await;
    let (fy, _) = upload(&cluster, via, "files", "y.bin", &[&y]).await;
    cluster.restart(down).await;
    wait_blobs(&cluster, down, &[sha(&x), sha(&y)], true).await;
    assert!(download(&cluster, down, &fx).await == x);
    assert!(download(&cluster, down, &fw).await == w);
    // Delete x: its blob goes everywhere after the grace; y's stays.
    let r = call(
        &cluster,
        via,
        reqwest::Method::DELETE,
        &format!("/api/v1/channels/files/messages/{sx}"),
        cluster.admin_token(),
        None,
        None,
    )
    .await
    .expect("delete");
    assert_eq!(r.status, 200, "{:?}", r.json());
    for id in [1, 2, 3] {
        wait_blobs(&cluster, id, &[sha(&x)], false).await;
    }
    for id in [1, 2, 3] {
        assert!(
            blob_path(&cluster, id, &sha(&y)).is_file(),
            "y kept on node {id}"
        );
        let r = call(
            &cluster,
            id,
            reqwest::Method::GET,
            &format!("/api/v1/files/{fx}"),
            cluster.admin_token(),
            None,
            None,
        )
        .await
        .expect("get");
        assert_eq!((r.status, r.code().as_str()), (404, "file_not_found"));
    }
    assert!(download(&cluster, down, &fy).await == y);
}

/// Issue 15: chunks whose upload was never committed (`PUT /blobs/...` with no
/// `POST .../files` after it) are plain unreferenced blobs, so the collector removes them from
/// every node's disk a grace period after they arrived, while the chunks of an attached file,
/// older than them, stay; a chunk the abandoned upload shares with the attached file (blobs are
/// content-addressed, so it is the same blob) stays too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_attached_chunks_are_collected() {
    let cluster = TestCluster::start_with(
        3,
        ClusterOptions::default()
            .tls()
            .top_level("files", "{ gc_grace = \"2s\" }"),
    )
    .await;
    create_channel(&cluster, "files").await;
    let a = content(64 * 1024, 21);
    let shared = content(4096, 23);
    let (fid, _) = upload(&cluster, 1, "files", "kept.bin", &[&a, &shared]).await;
    // The abandoned upload, through another node: three chunks, the first also in the file.
    let o1 = content(CHUNK, 25);
    let o2 = content(1000, 27);
    let token = cluster.admin_token().to_owned();
    for c in [&shared, &o1, &o2] {
        let r = put_chunk(&cluster, 2, &token, c).await;
        assert_eq!(r.status, 201, "orphan chunk via node 2: {:?}", r.json());
    }
    let orphans = [sha(&o1), sha(&o2)];
    // Acknowledged means a majority of voters holds them durably: the collector has
    // something to remove on at least two nodes (checked, so the test cannot pass vacuously).
    let holders: Vec<u64> = [1, 2, 3]
        .into_iter()
        .filter(|id| {
            orphans
                .iter()
                .all(|s| blob_path(&cluster, *id, s).is_file())
        })
        .collect();
    assert!(
        holders.len() >= 2,
        "orphan chunks on nodes {holders:?} right after their acknowledgement"
    );
    for id in [1, 2, 3] {
        wait_blobs(&cluster, id, &orphans, false).await;
    }
    for id in [1, 2, 3] {
        wait_blobs(&cluster, id, &[sha(&a), sha(&shared)], true).await;
        assert!(
            download(&cluster, id, &fid).await == [a.clone(), shared.clone()].concat(),
            "the attached file on node {id} after the orphans were collected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_write_nothing() {
    let cluster = TestCluster::start_with(
        3,
        ClusterOptions::default()
            .tls()
            .top_level("files", "{ max_size = 1048576 }"),
    )
    .await;
    let admin = cluster.client(1);
    admin
        .create_channel_with(&api::rest::NewChannel {
            name: "secret".into(),
            kind: api::rest::ChannelKind::Private,
            title: None,
            topic: None,
        })
        .await
        .expect("private channel");
    admin
        .create_user("eve", "a long enough password 1", ops::Role::Member)
        .await
        .expect("eve");
    // Accounts an admin creates must change their password first.
    let eve = cluster
        .login_client(1, "eve", "a long enough password 1")
        .await;
    eve.change_password("a long enough password 1", "eve's own pass phrase 2")
        .await
        .expect("eve's own password");
    let eve_token = eve.token().expect("eve's token").to_owned();
    let token = cluster.admin_token().to_owned();
    let messages = || async {
        admin
            .list_messages("secret", 0, 1000, None)
            .await
            .expect("messages")
            .messages
            .len()
    };
    let before = messages().await;

    // Chunks: too big, empty.
    let big = vec![1u8; CHUNK + 1];
    let r = put_chunk(&cluster, 1, &token, &big).await;
    assert_eq!((r.status, r.code().as_str()), (413, "chunk_too_large"));
    let r = put_chunk(&cluster, 1, &token, b"").await;
    assert_eq!((r.status, r.code().as_str()), (400, "empty_chunk"));

    let ok = b"just some text".to_vec();
    assert_eq!(put_chunk(&cluster, 1, &token, &ok).await.status, 201);
    let body = file_body("ok.txt", &ok, &[&ok], "bad-1");
    let with = |k: &str, v: Value| {
        let mut b = body.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "oversized",
            &token,
            with("size", json!(1_048_577)),
            413,
            "file_too_large",
        ),
        ("empty", &token, with("size", json!(0)), 400, "empty_file"),
        (
            "traversal",
            &token,
            with("name", json!("../../../etc/passwd")),
            400,
            "bad_file_name",
        ),
        (
            "bidi",
            &token,
            with("name", json!("photo\u{202e}gnp.exe")),
            400,
            "bad_file_name",
        ),
        ("outsider", &eve_token, body.clone(), 403, "not_member"),
    ];
    for (what, t, b, status, code) in cases {
        let r = post_file(&cluster, 1, t, "secret", b).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{what}: {:?}",
            r.json()
        );
    }
    assert_eq!(messages().await, before, "a refused upload wrote a message");

    // HTML named like an image: accepted, and served only as an attachment.
    let html = b"<html><body><script>alert(document.cookie)</script></body></html>".to_vec();
    assert_eq!(put_chunk(&cluster, 3, &token, &html).await.status, 201);
    let r = post_file(
        &cluster,
        3,
        &token,
        "secret",
        file_body("cat.png", &html, &[&html], "html-1"),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let fid = r.json()["attachments"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for id in [1, 2, 3] {
        let r = call(
            &cluster,
            id,
            reqwest::Method::GET,
            &format!("/api/v1/files/{fid}"),
            &token,
            None,
            None,
        )
        .await
        .expect("download");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, html);
        assert_eq!(r.header("content-type"), "application/octet-stream");
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert!(
            r.header("content-disposition").starts_with("attachment;"),
            "{}",
            r.header("content-disposition")
        );
        assert_eq!(
            r.header("content-security-policy"),
            "sandbox; default-src 'none'"
        );
        // And the outsider cannot tell it exists.
        let r = call(
            &cluster,
            id,
            reqwest::Method::GET,
            &format!("/api/v1/files/{fid}"),
            &eve_token,
            None,
            None,
        )
        .await
        .expect("download as eve");
        assert_eq!((r.status, r.code().as_str()), (404, "file_not_found"));
    }
}

/// `conclavectl upload` of a five-chunk file through node 1, which is SIGKILLed once the first
/// chunk is on its disk: the upload goes on with the next chunks on the other nodes and posts
/// the file; `conclavectl download` through another node writes it byte-identical, and resumes
/// from a `.part` (a damaged one is downloaded again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_upload_survives_a_node_death_and_downloads() {
    use crate::ctl::{Ctl, expect_ok};
    let bin = Ctl::locate();
    let cluster = TestCluster::start_with(3, ClusterOptions::default().tls()).await;
    create_channel(&cluster, "files").await;
    let ctl = Ctl::new(bin, &cluster);
    let all = [1, 2, 3]
        .iter()
        .map(|id| cluster.url(*id))
        .collect::<Vec<_>>()
        .join(",");
    expect_ok(&cluster, &ctl.login(&all).await);
    // A first small file while every node is up activates command version 7 (see
    // `follower_catches_up_and_deletion_collects_everywhere`).
    let small = cluster.root().join("small.txt");
    std::fs::write(&small, b"warm-up").expect("write the small file");
    let small_s = small.to_string_lossy().into_owned();
    expect_ok(
        &cluster,
        &ctl.run(&["upload", "--channel", "files", &small_s]).await,
    );
    // Node 1 is first in the saved session's ring, so the upload starts there.
    let data = content(4 * CHUNK + 12345, 42);
    let first = sha(&data[..CHUNK]);
    let src = cluster.root().join("upload.bin");
    std::fs::write(&src, &data).expect("write the upload");
    let out = cluster.root().join("download.bin");
    let src_s = src.to_string_lossy().into_owned();
    let args = [
        "--json",
        "upload",
        "--channel",
        "files",
        &src_s,
        "--message",
        "big one",
    ];
    let (run, ()) = tokio::join!(ctl.run(&args), async {
        cluster
            .wait_until("the first chunk on node 1", SLOW, || async {
                if blob_path(&cluster, 1, &first).is_file() {
                    Ok(())
                } else {
                    Err("not yet".to_owned())
                }
            })
            .await;
        cluster.kill(1);
    });
    let stdout = expect_ok(&cluster, &run);
    let v: Value = serde_json::from_str(stdout).expect("upload --json");
    let att = &v["message"]["attachments"][0];
    assert_eq!(att["size"], data.len(), "{v}");
    assert_eq!(att["sha256"], sha(&data).as_str());
    assert_eq!(att["name"], "upload.bin");
    let fid = att["id"].as_str().expect("file id");
    let u3 = cluster.url(3);
    let out_s = out.to_string_lossy().into_owned();
    let run = ctl
        .run(&["--server", &u3, "download", fid, "--out", &out_s])
        .await;
    expect_ok(&cluster, &run);
    assert!(std::fs::read(&out).expect("downloaded") == data);

    // An interrupted download resumes from its `.part` (here: a part ending inside the second
    // chunk), and a `.part` that is not a prefix of the file is caught by the SHA-256 check and
    // downloaded again from the start; both give the exact file.
    let part = cluster.root().join("download.bin.part");
    for (what, prefix, kept) in [
        ("a good prefix", data[..CHUNK + 7].to_vec(), CHUNK + 7),
        ("a damaged prefix", vec![0xAA; 1000], 0),
    ] {
        std::fs::remove_file(&out).expect("remove the last download");
        std::fs::write(&part, &prefix).expect("write the part");
        let run = ctl
            .run(&["--json", "--server", &u3, "download", fid, "--out", &out_s])
            .await;
        let v: Value = serde_json::from_str(expect_ok(&cluster, &run)).expect("download --json");
        assert_eq!(v["resumed_from"], kept, "resumed from {what}: {v}");
        assert_eq!(v["bytes"], data.len(), "resumed from {what}: {v}");
        assert!(
            std::fs::read(&out).expect("downloaded") == data,
            "resumed from {what}: not the file"
        );
        assert!(!part.exists(), "resumed from {what}: the part is left");
    }
}
