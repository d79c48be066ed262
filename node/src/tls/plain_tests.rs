//! Tests of the plain-HTTP port over real sockets: redirects, the Host rule, the trust page and
//! the root downloads.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::plain_http::{StaticTrust, TrustMaterial, plain_router};
use super::test_support::*;

const HTTPS_PORT: u16 = 8443;

struct PlainServer {
    addr: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(trust: Arc<dyn TrustMaterial>) -> PlainServer {
    let health = Router::new().route("/healthz", get(|| async { "ok" }));
    let router = plain_router(HTTPS_PORT, trust, health);
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    PlainServer { addr, cancel }
}

fn static_trust(pki: &Pki, with_crl: bool) -> Arc<dyn TrustMaterial> {
    Arc::new(StaticTrust {
        workspace: WS.to_owned(),
        root_pem: pki.root_pem().to_owned(),
        crl_pem: with_crl.then(|| pki.state.root_crl.as_ref().unwrap().pem()),
    })
}

/// One request on a fresh connection, with exactly the Host header given.
async fn send(addr: SocketAddr, method: &str, path: &str, host: Option<&str>) -> Reply {
    let mut http = h1(TcpStream::connect(addr).await.unwrap()).await;
    http.ready().await.unwrap();
    let resp = tokio::time::timeout(DEADLINE, http.send_request(request(method, path, host)))
        .await
        .unwrap()
        .unwrap();
    read_reply(resp).await
}

fn header(reply: &Reply, name: &str) -> String {
    reply
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn error_code(reply: &Reply) -> String {
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn redirects_keep_path_and_query_and_use_the_https_port() {
    let pki = Pki::new();
    let server = start(static_trust(&pki, false)).await;
    let cases = [
        (
            "GET",
            "/api/v1/channels?limit=5&q=a%20b",
            "Chat.Corp.LAN:8080",
            301,
            "https://chat.corp.lan:8443/api/v1/channels?limit=5&q=a%20b",
        ),
        (
            "HEAD",
            "/app",
            "chat.corp.lan",
            301,
            "https://chat.corp.lan:8443/app",
        ),
        (
            "POST",
            "/api/v1/login",
            "127.0.0.2:8080",
            308,
            "https://127.0.0.2:8443/api/v1/login",
        ),
        (
            "PUT",
            "/ca.pem",
            "127.0.0.2:8080",
            308,
            "https://127.0.0.2:8443/ca.pem",
        ),
        ("GET", "/x?y", "[::1]:8080", 301, "https://[::1]:8443/x?y"),
    ];
    for (method, path, host, status, location) in cases {
        let reply = send(server.addr, method, path, Some(host)).await;
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(header(&reply, "location"), location, "{method} {path}");
    }
}

#[tokio::test]
async fn a_bad_or_missing_host_is_a_json_400() {
    let pki = Pki::new();
    let server = start(static_trust(&pki, false)).await;
    for host in [
        Some("evil host"),
        Some("a@b.lan"),
        Some("x.lan:99999"),
        Some("-x.lan"),
        None,
    ] {
        let reply = send(server.addr, "GET", "/somewhere", host).await;
        assert_eq!(reply.status, 400, "{host:?}");
        assert_eq!(error_code(&reply), "invalid_request", "{host:?}");
        assert!(reply.headers.get("location").is_none());
    }
}

#[tokio::test]
async fn the_trust_page_shows_the_fingerprint_and_links_only_to_this_host() {
    let pki = Pki::new();
    let server = start(static_trust(&pki, true)).await;
    let reply = send(server.addr, "GET", "/", Some("127.0.0.1:8080")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "content-type"), "text/html; charset=utf-8");
    assert!(header(&reply, "content-security-policy").starts_with("default-src 'none'"));
    let html = reply.text();
    assert!(
        html.contains(&pki.fingerprint().replace(':', ":<wbr>")),
        "fingerprint missing"
    );
    assert!(html.contains(WS));
    assert!(html.contains("Certificate Trust Settings"));
    for needle in ["<script", "src=", "<link", "@import", "url(", "http://"] {
        assert!(!html.contains(needle), "page contains {needle}");
    }
    let hrefs: Vec<&str> = html
        .split("href=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert!(hrefs.contains(&"/ca.crt") && hrefs.contains(&"/ca.mobileconfig"));
    assert!(hrefs.contains(&"/ca.pem") && hrefs.contains(&"/crl.pem"));
    for href in hrefs {
        assert!(
            href.starts_with('/') || href == "https://127.0.0.1:8443/",
            "link to another host: {href}"
        );
    }
}

#[tokio::test]
async fn root_downloads_have_the_right_types_and_parse() {
    let pki = Pki::new();
    let server = start(static_trust(&pki, true)).await;

    let pem = send(server.addr, "GET", "/ca.pem", Some("x.lan")).await;
    assert_eq!(pem.status, 200);
    assert_eq!(header(&pem, "content-type"), "application/x-pem-file");
    assert_eq!(pem.text(), pki.root_pem());

    let der = send(server.addr, "GET", "/ca.crt", Some("x.lan")).await;
    assert_eq!(der.status, 200);
    assert_eq!(header(&der, "content-type"), "application/pkix-cert");
    let (rest, cert) = X509Certificate::from_der(&der.body).expect("/ca.crt is not DER");
    assert!(rest.is_empty());
    assert!(cert.is_ca());
    assert_eq!(crate::ca::fingerprint_sha256(&der.body), pki.fingerprint());

    let profile = send(server.addr, "GET", "/ca.mobileconfig", Some("x.lan")).await;
    assert_eq!(profile.status, 200);
    assert_eq!(
        header(&profile, "content-type"),
        "application/x-apple-aspen-config"
    );
    assert!(profile.text().contains("com.apple.security.root"));

    let crl = send(server.addr, "GET", "/crl.pem", Some("x.lan")).await;
    assert_eq!(crl.status, 200);
    assert!(crl.text().starts_with("-----BEGIN X509 CRL-----"));

    let health = send(server.addr, "GET", "/healthz", Some("x.lan")).await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
}

struct NoCaYet;

impl TrustMaterial for NoCaYet {
    fn workspace(&self) -> String {
        WS.to_owned()
    }
    fn root_pem(&self) -> Option<String> {
        None
    }
    fn crl_pem(&self) -> Option<String> {
        None
    }
}

#[tokio::test]
async fn without_a_ca_the_trust_routes_are_503_and_no_crl_is_404() {
    let server = start(Arc::new(NoCaYet)).await;
    for path in ["/", "/ca.pem", "/ca.crt", "/ca.mobileconfig"] {
        let reply = send(server.addr, "GET", path, Some("x.lan")).await;
        assert_eq!(reply.status, 503, "{path}");
        assert_eq!(error_code(&reply), "unavailable", "{path}");
    }
    let crl = send(server.addr, "GET", "/crl.pem", Some("x.lan")).await;
    assert_eq!((crl.status, error_code(&crl).as_str()), (404, "not_found"));
}
