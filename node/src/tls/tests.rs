//! End-to-end tests of HTTPS serving over real sockets on 127.0.0.1: trust, protocol versions,
//! ALPN, resumption, hot reload under open connections, graceful shutdown, and slow clients.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rustls::{HandshakeKind, ProtocolVersion, RootCertStore};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::test_support::*;
use super::{ServeOptions, TlsError};

#[tokio::test]
async fn a_client_trusting_the_root_gets_200_and_one_trusting_nothing_is_refused() {
    let pki = Pki::new();
    let leaf = pki.leaf();
    let mut server = Server::start(&leaf, ServeOptions::default()).await;

    let stream = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    assert_eq!(peer_serial(&stream), leaf.serial);
    let mut http = h1(stream).await;
    let reply = get1(&mut http, "/").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
    // Handlers see the client's address, as with axum::serve's connect info.
    let peer = get1(&mut http, "/peer").await;
    assert!(peer.text().starts_with("127.0.0.1:"), "{}", peer.text());

    let untrusting = client_with_roots(RootCertStore::empty(), BOTH, H1);
    let err = tls_connect(server.addr, untrusting).await.unwrap_err();
    assert!(
        err.to_string().contains("UnknownIssuer"),
        "expected an unknown-issuer refusal, got {err}"
    );
    // The refused handshake did not disturb the server.
    let reply = get1(&mut http, "/").await;
    assert_eq!(reply.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn tls12_only_and_tls13_only_clients_both_connect() {
    let pki = Pki::new();
    let mut server = Server::start(&pki.leaf(), ServeOptions::default()).await;
    for (version, expect) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let stream = tls_connect(server.addr, pki.client(&[version], H1))
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expect));
        let mut http = h1(stream).await;
        assert_eq!(get1(&mut http, "/").await.status, 200, "{expect:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn alpn_negotiates_h2_when_offered_and_http11_otherwise() {
    let pki = Pki::new();
    let mut server = Server::start(&pki.leaf(), ServeOptions::default()).await;

    let stream = tls_connect(server.addr, pki.client(BOTH, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut http = h2(stream).await;
    let resp = http
        .send_request(request("GET", "https://127.0.0.1/", None))
        .await
        .unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let reply = read_reply(resp).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));

    let stream = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    server.stop().await;
}

#[tokio::test]
async fn sessions_resume_on_tls12_and_tls13() {
    let pki = Pki::new();
    let mut server = Server::start(&pki.leaf(), ServeOptions::default()).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        // One client config = one client session cache, as a browser has.
        let client = pki.client(&[version], H1);
        let first = tls_connect(server.addr, client.clone()).await.unwrap();
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        // A request and its response make the client read the TLS 1.3 tickets, which the
        // server sends after the handshake.
        let mut http = h1(first).await;
        assert_eq!(get1(&mut http, "/").await.status, 200);
        drop(http);
        let second = tls_connect(server.addr, client).await.unwrap();
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?} did not resume"
        );
        let mut http = h1(second).await;
        assert_eq!(get1(&mut http, "/").await.status, 200);
    }
    server.stop().await;
}

#[tokio::test]
async fn hot_reload_keeps_open_connections_and_new_handshakes_get_the_new_certificate() {
    let pki = Pki::new();
    let old = pki.leaf();
    let new = pki.leaf();
    assert_ne!(old.serial, new.serial);
    let mut server = Server::start(&old, ServeOptions::default()).await;

    // An HTTP/1.1 keep-alive connection and a WebSocket, both opened before the swap.
    let stream = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    assert_eq!(peer_serial(&stream), old.serial);
    let mut keep_alive = h1(stream).await;
    assert_eq!(get1(&mut keep_alive, "/").await.status, 200);
    let ws_stream = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://127.0.0.1/ws", ws_stream)
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    let echoed = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("before"));

    let info = server.certs.replace(&new.chain_pem, &new.key_pem).unwrap();
    assert_eq!(info.serial, new.serial);
    assert_eq!(server.certs.serial(), new.serial);

    // Both old connections keep working...
    for _ in 0..3 {
        let reply = get1(&mut keep_alive, "/").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
    }
    ws.send(Message::text("after")).await.unwrap();
    let echoed = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("after"));
    // ...and a new connection (a fresh client: no session to resume) gets the new certificate.
    let fresh = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    assert_eq!(peer_serial(&fresh), new.serial);
    let mut http = h1(fresh).await;
    assert_eq!(get1(&mut http, "/").await.status, 200);

    ws.close(None).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn replace_refuses_a_bad_certificate_and_keeps_the_old_one() {
    let pki = Pki::new();
    let current = pki.leaf();
    let other = pki.leaf();
    let server = Server::start(&current, ServeOptions::default()).await;
    let certs = &server.certs;

    let mismatched = certs.replace(&other.chain_pem, &current.key_pem);
    assert!(
        matches!(mismatched, Err(TlsError::KeyMismatch)),
        "{mismatched:?}"
    );
    let garbage = certs.replace("not a certificate", &other.key_pem);
    assert!(matches!(garbage, Err(TlsError::EmptyChain)), "{garbage:?}");
    let bad_key = certs.replace(
        &other.chain_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    assert!(bad_key.is_err(), "{bad_key:?}");
    let expired = certs.replace_at(
        &other.chain_pem,
        &other.key_pem,
        std::time::SystemTime::now() + Duration::from_secs(2 * 86_400),
    );
    assert!(
        matches!(expired, Err(TlsError::Expired { .. })),
        "{expired:?}"
    );
    assert_eq!(certs.serial(), current.serial);

    // And handshakes still present the old certificate.
    let stream = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    assert_eq!(peer_serial(&stream), current.serial);

    let leaf = certs.leaf();
    let life = leaf.not_after.duration_since(leaf.not_before).unwrap();
    let renew_in = leaf.renew_after().duration_since(leaf.not_before).unwrap();
    assert_eq!(renew_in.as_secs(), life.as_secs() * 2 / 3);
}

#[tokio::test]
async fn cancel_stops_accepting_and_lets_an_in_flight_request_finish() {
    let pki = Pki::new();
    let mut server = Server::start(&pki.leaf(), ServeOptions::default()).await;
    let stream = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    let mut http = h1(stream).await;
    http.ready().await.unwrap();
    let in_flight = tokio::spawn(http.send_request(request("GET", "/slow", Some("127.0.0.1"))));
    tokio::time::timeout(DEADLINE, server.slow_started.recv())
        .await
        .expect("the slow handler never started");

    server.cancel.cancel();
    let addr = server.addr;
    wait_until("the listener refuses new connections", || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        !server.task.as_ref().unwrap().is_finished(),
        "returned before draining"
    );

    server.slow_release.notify_one();
    let resp = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let reply = read_reply(resp).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "done"));
    server.stop().await;
}

#[tokio::test]
async fn draining_is_bounded_by_the_drain_timeout() {
    let pki = Pki::new();
    let options = ServeOptions {
        drain_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let mut server = Server::start(&pki.leaf(), options).await;
    let stream = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    let mut http = h1(stream).await;
    http.ready().await.unwrap();
    let in_flight = tokio::spawn(http.send_request(request("GET", "/slow", Some("127.0.0.1"))));
    tokio::time::timeout(DEADLINE, server.slow_started.recv())
        .await
        .unwrap();
    // The handler is never released: shutdown must still end, and the client sees the
    // connection close instead of a response.
    server.stop().await;
    let outcome = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(
        outcome.is_err(),
        "a request that never finished got a response"
    );
}

#[tokio::test]
async fn a_silent_client_does_not_block_others_and_is_dropped_after_the_handshake_timeout() {
    let pki = Pki::new();
    let timeout = Duration::from_millis(1500);
    let options = ServeOptions {
        handshake_timeout: timeout,
        ..ServeOptions::default()
    };
    let mut server = Server::start(&pki.leaf(), options).await;

    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let opened = Instant::now();
    for _ in 0..3 {
        let stream = tls_connect(server.addr, pki.client(BOTH, H1))
            .await
            .unwrap();
        let mut http = h1(stream).await;
        assert_eq!(get1(&mut http, "/").await.status, 200);
    }
    // Those were served while the silent client still held its connection: a handshake run on
    // the accept path would have served them only after the silent one timed out.
    let mut buf = [0u8; 16];
    assert!(
        matches!(silent.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the silent connection was closed before the other clients were served"
    );
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
        .await
        .expect("the silent client was never dropped");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the server to close the connection, read {read:?}"
    );
    assert!(
        opened.elapsed() >= timeout - Duration::from_millis(50),
        "dropped after {:?}, before the handshake timeout",
        opened.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn handshakes_beyond_the_bound_wait_for_a_free_slot() {
    let pki = Pki::new();
    let options = ServeOptions {
        handshake_timeout: Duration::from_millis(300),
        max_handshakes: 1,
        ..ServeOptions::default()
    };
    let mut server = Server::start(&pki.leaf(), options).await;
    // The only slot is taken by a client that never speaks; the next client waits in the
    // backlog until that slot frees at the silent client's timeout, and is then served.
    let silent = TcpStream::connect(server.addr).await.unwrap();
    let stream = tls_connect(server.addr, pki.client(BOTH, H1))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let silent_state = silent.try_read(&mut buf);
    assert!(
        matches!(silent_state, Ok(0)),
        "the second handshake ran while the only slot was taken: {silent_state:?}"
    );
    let mut http = h1(stream).await;
    assert_eq!(get1(&mut http, "/").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn curl_with_the_root_as_cacert_gets_healthz() {
    let curl = which("curl").unwrap_or_else(|| {
        panic!("the `curl` command is required by this test: install it (apt-get install -y curl)")
    });
    let pki = Pki::new();
    let mut server = Server::start(&pki.leaf(), ServeOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, pki.root_pem()).unwrap();
    let url = format!("https://127.0.0.1:{}/healthz", server.addr.port());

    let ok = curl_output(&curl, &["--cacert", root.to_str().unwrap(), &url]).await;
    assert!(
        ok.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok");
    // Without the root, curl must refuse (it uses the system store, which lacks our root).
    let refused = curl_output(&curl, &[&url]).await;
    assert!(
        !refused.status.success(),
        "curl accepted an untrusted server"
    );
    server.stop().await;
}

async fn curl_output(curl: &std::path::Path, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(curl)
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(DEADLINE + Duration::from_secs(2), run)
        .await
        .expect("curl hung")
        .unwrap()
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
