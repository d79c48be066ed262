//! `ops` over TLS against tiny local servers that present certificates from a throwaway CA:
//! REST and WebSockets trusting only the given root, refusal (at once, without failing over
//! for the whole deadline) when the root is missing or another CA's, and the certificate
//! check that `conclavectl check` uses.
//!
//! These tests need no Conclave server; tests against a real TLS cluster live in
//! `chaos-tests` (`ClusterOptions::tls`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use ops::{Client, ClientError, TrustRoot, WsConn, WsError, WsMessage};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Upper bound for any single test; a hang fails the test instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

/// A root CA and a leaf for 127.0.0.1 issued by it.
struct Pki {
    root_pem: String,
    leaf: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn new_pki(days: i64) -> Pki {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "test root");
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root, &root_key);

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(days);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        root_pem: root_cert.pem(),
        leaf: leaf_cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
    }
}

/// What the server does with each connection after the TLS handshake.
#[derive(Clone, Copy)]
enum Serve {
    /// Answers one HTTP request with `{"status":"ok"}`.
    Json,
    /// Accepts a WebSocket and sends one text frame, "hello over tls".
    WebSocket,
}

/// A TLS server on 127.0.0.1:0; stops when the token is cancelled (dropped with the test).
async fn tls_server(pki: &Pki, serve: Serve, stop: CancellationToken) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.leaf.clone()],
            PrivateKeyDer::Pkcs8(pki.key.clone_key()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((tcp, _)) = accepted else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // An untrusting client aborts the handshake: nothing to serve then.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                match serve {
                    Serve::Json => {
                        let mut buf = vec![0u8; 4096];
                        let mut got = Vec::new();
                        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
                            let Ok(n) = tls.read(&mut buf).await else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                        let body = r#"{"status":"ok"}"#;
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.write_all(response.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                    Serve::WebSocket => {
                        let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                            return;
                        };
                        let _ = ws.send(WsMessage::text("hello over tls")).await;
                        // Keep the socket open until the client goes away.
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                }
            });
        }
    });
    addr
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, f)
        .await
        .expect("test exceeded its deadline")
}

fn https_client(addr: SocketAddr, root: Option<TrustRoot>) -> Client {
    Client::new_trusting(vec![format!("https://{addr}")], root)
        .unwrap()
        .with_failover_deadline(Duration::from_secs(10))
        .with_request_timeout(Duration::from_secs(3))
}

#[tokio::test]
async fn rest_over_https_trusts_only_the_given_root() {
    bounded(async {
        let stop = CancellationToken::new();
        let _guard = stop.clone().drop_guard();
        let pki = new_pki(7);
        let addr = tls_server(&pki, Serve::Json, stop.clone()).await;

        let root = TrustRoot::from_pem(pki.root_pem.as_bytes()).unwrap();
        let answer = https_client(addr, Some(root)).healthz().await.unwrap();
        assert_eq!(answer["status"], "ok");

        // No root, or another CA's root: refused at once (not after the 10 s failover
        // deadline), with the reason.
        let other = TrustRoot::from_pem(new_pki(7).root_pem.as_bytes()).unwrap();
        for root in [None, Some(other)] {
            let started = Instant::now();
            let err = https_client(addr, root.clone())
                .healthz()
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ClientError::CertificateNotTrusted { reason, .. }
                    if reason.contains("invalid peer certificate")),
                "{err:?}"
            );
            let err = https_client(addr, root).cluster().await.unwrap_err();
            assert!(
                matches!(err, ClientError::CertificateNotTrusted { .. }),
                "{err:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    })
    .await;
}

#[tokio::test]
async fn websocket_over_tls() {
    bounded(async {
        let stop = CancellationToken::new();
        let _guard = stop.clone().drop_guard();
        let pki = new_pki(7);
        let addr = tls_server(&pki, Serve::WebSocket, stop.clone()).await;
        let server = format!("https://{addr}");
        let root = TrustRoot::from_pem(pki.root_pem.as_bytes()).unwrap();

        let mut conn = WsConn::connect_trusting(&server, Some(root)).await.unwrap();
        assert!(conn.url().starts_with("wss://127.0.0.1:"), "{}", conn.url());
        let text = conn.next_text(Duration::from_secs(5)).await.unwrap();
        assert_eq!(text, "hello over tls");
        conn.close(1000, "done").await.unwrap();

        let err = WsConn::connect(&server).await.unwrap_err();
        assert!(
            matches!(err, WsError::CertificateNotTrusted { .. }),
            "{err:?}"
        );
        let other = TrustRoot::from_pem(new_pki(7).root_pem.as_bytes()).unwrap();
        let err = WsConn::connect_trusting(&server, Some(other))
            .await
            .unwrap_err();
        assert!(
            // Both roots are named "test root": rustls finds the other one by name and the
            // signature check fails instead (BadSignature); either way, refused.
            matches!(&err, WsError::CertificateNotTrusted { reason, .. }
                if reason.contains("invalid peer certificate")),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn certificate_check_reports_days_left_and_wrong_names() {
    bounded(async {
        let stop = CancellationToken::new();
        let _guard = stop.clone().drop_guard();
        let pki = new_pki(5);
        let addr = tls_server(&pki, Serve::Json, stop.clone()).await;
        let root = TrustRoot::from_pem(pki.root_pem.as_bytes()).unwrap();
        let timeout = Duration::from_secs(3);

        let cert = ops::verify_server_certificate(addr, "127.0.0.1", &root, timeout)
            .await
            .unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let days = cert.days_left(now);
        assert!(
            (4..=5).contains(&days),
            "5 days minus the elapsed seconds, got {days}"
        );
        assert_eq!(cert.names, vec!["IP:127.0.0.1".to_owned()]);

        // The certificate does not name what was dialled.
        let err = ops::verify_server_certificate(addr, "chat.corp.lan", &root, timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::CertificateNotTrusted { reason, .. }
                if reason.contains("not valid for name")),
            "{err:?}"
        );
    })
    .await;
}

#[test]
fn root_fingerprints_match_for_pem_and_der() {
    let pki = new_pki(1);
    let from_pem = ops::root_fingerprint(pki.root_pem.as_bytes()).unwrap();
    let der = CertificateDer::pem_slice_iter(pki.root_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(ops::root_fingerprint(der.as_ref()).unwrap(), from_pem);
    assert_eq!(from_pem.len(), 32 * 3 - 1);
    assert_eq!(ops::root_fingerprint(b"<plist/>"), None);
}
