//! Failover behaviour of `ops::Client` against real sockets: refused ports and tiny hand-written
//! HTTP/1.1 responders that answer every request with one fixed response (or hang up).
//!
//! These tests need no Conclave server; tests against a real cluster live in `chaos-tests`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ops::{Client, ClientError, Role};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Upper bound for any single test; a hang fails the test instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

/// A port on which nothing listens: bind, note the port, close.
fn refused_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A fake node: answers every request with `response`, or closes the connection after reading
/// the request when `response` is `None` (a node that died mid-request).
struct Responder {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Responder {
    async fn start(response: Option<String>) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                let response = response.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    log.lock().unwrap().push(request);
                    if let Some(response) = response {
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    // `None`: drop the stream without answering.
                });
            }
        });
        Responder { url, requests }
    }

    async fn json(status: u16, body: &str, extra_headers: &str) -> Responder {
        Responder::start(Some(http_response(status, body, extra_headers))).await
    }

    async fn hangup() -> Responder {
        Responder::start(None).await
    }

    fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn request(&self, i: usize) -> String {
        self.requests.lock().unwrap()[i].clone()
    }
}

fn http_response(status: u16, body: &str, extra_headers: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

/// Reads one request (head plus Content-Length body) and returns it as text.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let content_length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + content_length {
                return Some(text);
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

const CLUSTER_BODY: &str = r#"{"node_id":2,"leader_id":1,"term":3,"nodes":[
  {"id":1,"api_addr":"127.0.0.1:8080","cluster_addr":"127.0.0.1:9080","voter":true,
   "role":"leader","term":3,"leader_id":1,"last_log_index":120,"last_applied":120,
   "healthy":true,"ready":true,"error":null}]}"#;

const CHANNEL_BODY: &str = r#"{"name":"general","created_by":"alice","created_at_ms":1767225600000,
  "members":["alice"],"last_seq":0}"#;

const UNAVAILABLE_BODY: &str = r#"{"error":{"code":"unavailable","message":"no leader"}}"#;

fn client(servers: &[&str]) -> Client {
    Client::new(servers.iter().map(|s| (*s).to_owned()).collect())
        .unwrap()
        .with_failover_deadline(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(2))
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, f)
        .await
        .expect("test exceeded its deadline")
}

#[tokio::test]
async fn skips_a_dead_server_and_sticks_to_the_live_one() {
    bounded(async {
        let dead = refused_server();
        let live = Responder::json(200, CLUSTER_BODY, "").await;
        let c = client(&[&dead, &live.url]);
        assert_eq!(c.current_server(), dead);

        let status = c.cluster().await.unwrap();
        assert_eq!(status.leader_id, Some(1));
        assert_eq!(status.nodes[0].last_applied, Some(120));
        assert_eq!(c.current_server(), live.url);
        assert!(live.request(0).starts_with("GET /api/v1/cluster HTTP/1.1"));

        // Clones share the current server: the next call goes straight to the live node.
        let clone = c.clone();
        clone.cluster().await.unwrap();
        assert_eq!(live.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn client_errors_are_returned_at_once_and_never_retried() {
    bounded(async {
        let bad = Responder::json(
            400,
            r#"{"error":{"code":"invalid_request","message":"bad channel name"}}"#,
            "",
        )
        .await;
        let other = Responder::json(201, CHANNEL_BODY, "").await;
        let c = client(&[&bad.url, &other.url]).with_token("t");

        let err = c.create_channel("Bad Name").await.unwrap_err();
        assert_eq!(
            err,
            ClientError::Api {
                status: 400,
                code: "invalid_request".into(),
                message: "bad channel name".into()
            }
        );
        // Reads are not retried on 4xx either.
        let err = c.list_channels().await.unwrap_err();
        assert_eq!(err.status(), Some(400));
        assert_eq!(bad.hits(), 2);
        assert_eq!(other.hits(), 0);
        assert_eq!(c.current_server(), bad.url);
    })
    .await;
}

#[tokio::test]
async fn redirects_are_reported_not_followed() {
    bounded(async {
        // What a TLS node's plain port answers to every API request.
        let https = Responder::json(200, CHANNEL_BODY, "").await;
        let location = format!("{}/api/v1/channels", https.url);
        let plain = Responder::json(308, "", &format!("Location: {location}\r\n")).await;
        let c = client(&[&plain.url]).with_token("secret");

        let err = c.create_channel("general").await.unwrap_err();
        assert_eq!(
            err,
            ClientError::Redirected {
                server: plain.url.clone(),
                location
            }
        );
        assert!(
            err.to_string().contains("use its https:// address"),
            "{err}"
        );
        assert_eq!(plain.hits(), 1);
        // Never followed: the token is not sent a second time.
        assert_eq!(https.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn unavailable_fails_over_even_for_writes() {
    bounded(async {
        let busy = Responder::json(503, UNAVAILABLE_BODY, "").await;
        let live = Responder::json(201, CHANNEL_BODY, "X-Conclave-Index: 9\r\n").await;
        let c = client(&[&busy.url, &live.url]).with_token("t");

        let channel = c.create_channel("general").await.unwrap();
        assert_eq!(channel.members, vec!["alice"]);
        assert_eq!(busy.hits(), 1);
        assert_eq!(live.hits(), 1);
        let req = live.request(0).to_ascii_lowercase();
        assert!(req.starts_with("post /api/v1/channels http/1.1"));
        assert!(req.contains("authorization: bearer t\r\n"));
        assert!(req.contains("content-type: application/json\r\n"));
        assert!(req.ends_with(r#"{"name":"general"}"#));
    })
    .await;
}

#[tokio::test]
async fn a_write_that_may_have_been_applied_is_not_retried() {
    bounded(async {
        let dying = Responder::hangup().await;
        let live = Responder::json(201, CHANNEL_BODY, "").await;
        let c = client(&[&dying.url, &live.url]).with_token("t");

        let err = c.create_channel("general").await.unwrap_err();
        let ClientError::Unreachable {
            servers,
            last_error,
        } = &err
        else {
            panic!("expected Unreachable, got {err:?}");
        };
        assert_eq!(servers, &vec![dying.url.clone()]);
        assert!(last_error.contains("may have been applied"), "{last_error}");
        assert_eq!(dying.hits(), 1);
        assert_eq!(live.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn reads_and_posts_are_retried_after_a_dropped_connection() {
    bounded(async {
        let dying = Responder::hangup().await;
        let posted = r#"{"channel":"general","seq":42,"author":"alice","body":"hello",
            "ts_ms":1767225600123,"client_msg_id":"c-1","duplicate":true,"extra":1}"#;
        let live = Responder::json(200, posted, "X-Conclave-Index: 7\r\n").await;
        let c = client(&[&dying.url, &live.url]).with_token("t");

        let outcome = c.post_message("general", "hello", "c-1").await.unwrap();
        assert!(outcome.duplicate);
        assert_eq!(outcome.index, Some(7));
        assert_eq!(outcome.message.seq, 42);
        assert_eq!(dying.hits(), 1);
        assert_eq!(live.hits(), 1);
        assert!(
            live.request(0)
                .ends_with(r#"{"body":"hello","client_msg_id":"c-1"}"#)
        );
    })
    .await;
}

#[tokio::test]
async fn gives_up_with_unreachable_at_the_deadline() {
    bounded(async {
        let (a, b) = (refused_server(), refused_server());
        let c = client(&[&a, &b]).with_failover_deadline(Duration::from_millis(400));
        let started = Instant::now();
        let err = c.cluster().await.unwrap_err();
        let elapsed = started.elapsed();
        let ClientError::Unreachable {
            servers,
            last_error,
        } = &err
        else {
            panic!("expected Unreachable, got {err:?}");
        };
        assert_eq!(servers, &vec![a.clone(), b.clone()]);
        assert!(last_error.contains("connect failed"), "{last_error}");
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot reach the cluster (tried {a}, {b}): "))
        );
    })
    .await;
}

#[tokio::test]
async fn returns_the_last_unavailable_error_at_the_deadline() {
    bounded(async {
        let busy = Responder::json(503, UNAVAILABLE_BODY, "").await;
        let c = client(&[&busy.url]).with_failover_deadline(Duration::from_millis(400));
        let err = c.cluster().await.unwrap_err();
        assert_eq!(err.code(), Some("unavailable"));
        assert_eq!(err.status(), Some(503));
        assert!(busy.hits() >= 2, "only {} attempts", busy.hits());
    })
    .await;
}

#[tokio::test]
async fn readyz_503_is_a_verdict_and_probes_do_not_fail_over() {
    bounded(async {
        let not_ready = Responder::json(
            503,
            r#"{"ready":false,"node_id":3,"reason":"no leader"}"#,
            "",
        )
        .await;
        let other = Responder::json(200, r#"{"ready":true,"node_id":1}"#, "").await;
        let c = client(&[&not_ready.url, &other.url]);
        let verdict = c.readyz().await.unwrap();
        assert!(!verdict.ready);
        assert_eq!(verdict.node_id, Some(3));
        assert_eq!(verdict.reason.as_deref(), Some("no leader"));
        assert_eq!(other.hits(), 0);

        let dead = refused_server();
        let c = client(&[&dead, &other.url]);
        assert!(matches!(
            c.healthz().await,
            Err(ClientError::Unreachable { .. })
        ));
        assert_eq!(other.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn list_messages_sends_query_and_min_index() {
    bounded(async {
        let live = Responder::json(200, r#"{"messages":[],"last_seq":57}"#, "").await;
        let c = client(&[&live.url]).with_token("t");
        let page = c.list_messages("general", 5, 10, Some(42)).await.unwrap();
        assert_eq!(page.last_seq, 57);
        let req = live.request(0).to_ascii_lowercase();
        assert!(
            req.starts_with("get /api/v1/channels/general/messages?after=5&limit=10 http/1.1"),
            "{req}"
        );
        assert!(req.contains("x-conclave-min-index: 42\r\n"));
    })
    .await;
}

#[tokio::test]
async fn login_stores_and_logout_clears_the_token() {
    bounded(async {
        let login = Responder::json(
            200,
            r#"{"token":"cv1.abc","username":"alice","role":"admin","expires_at_ms":1}"#,
            "",
        )
        .await;
        let mut c = client(&[&login.url]);
        assert_eq!(c.me().await.unwrap_err(), ClientError::NotLoggedIn);
        assert_eq!(login.hits(), 0);

        let resp = c.login("alice", "correct horse").await.unwrap();
        assert_eq!(resp.role, Role::Admin);
        assert_eq!(c.token(), Some("cv1.abc"));
        assert!(
            !login
                .request(0)
                .to_ascii_lowercase()
                .contains("authorization")
        );

        // Logout on a server that says the token is already gone still clears it.
        let gone = Responder::json(
            401,
            r#"{"error":{"code":"unauthorized","message":"revoked"}}"#,
            "",
        )
        .await;
        let mut c = client(&[&gone.url]).with_token("cv1.abc");
        c.logout().await.unwrap();
        assert_eq!(c.token(), None);
        assert_eq!(c.logout().await.unwrap_err(), ClientError::NotLoggedIn);
    })
    .await;
}

#[tokio::test]
async fn non_json_error_bodies_become_http_codes() {
    bounded(async {
        let proxy = Responder::start(Some(
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\
             Connection: close\r\n\r\nbad gateway"
                .to_owned(),
        ))
        .await;
        let c = client(&[&proxy.url]);
        let err = c.cluster().await.unwrap_err();
        assert_eq!(
            err,
            ClientError::Api {
                status: 502,
                code: "http_502".into(),
                message: "bad gateway".into()
            }
        );
    })
    .await;
}

#[test]
fn invalid_server_lists_are_rejected() {
    assert!(matches!(
        Client::new(vec![]),
        Err(ClientError::InvalidServer { .. })
    ));
    assert!(matches!(
        Client::new(vec!["127.0.0.1:1".into(), "ftp://x".into()]),
        Err(ClientError::InvalidServer { .. })
    ));
    let c = Client::new(vec![
        "127.0.0.1:8080".into(),
        "http://10.0.0.2:8080/".into(),
    ])
    .unwrap();
    assert_eq!(
        c.servers(),
        &["http://127.0.0.1:8080", "http://10.0.0.2:8080"]
    );
    assert_eq!(c.token(), None);
    let mut c = c.with_token("x");
    assert_eq!(c.token(), Some("x"));
    c.set_token(None);
    assert_eq!(c.token(), None);
    assert!(!format!("{:?}", c.clone().with_token("secret")).contains("secret"));
}

#[test]
fn client_msg_ids_are_valid() {
    let id = ops::new_client_msg_id();
    assert!(id.len() <= 64);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    );
}
