//! The embedded web client: serves `web/static/` at `/` from bytes compiled into the binary.
//!
//! Owns the list of shipped files and their content types and caching headers. Must never read
//! the file system at run time (the binary is the whole install) nor reference any address
//! outside the cluster.
//!
//! Caching: `index.html` and `sw.js` are `no-cache` so an upgraded server shows up on the next
//! load; the other code files (JS, CSS, manifest) are `no-cache` too but carry a strong `ETag`,
//! so a revalidation costs a 304 and a page never mixes files of two versions; icons are cached
//! for a day. The service worker's cache name embeds a hash of every embedded file (the
//! placeholder in `sw.js` is replaced when serving), so each upgrade replaces the offline shell.

use std::sync::LazyLock;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// Content-Security-Policy of the page, as served without knowledge of the cluster: no inline
/// script or style, and `connect-src 'self'` only. `img-src blob:`: attached images are fetched
/// with the session's bearer token (files.js) and shown from `blob:` URLs of those bytes, since
/// an `<img src>` cannot carry the token. The client router replaces `connect-src`
/// with the cluster's own nodes ([`cluster_csp`]): the client fails over to the other nodes
/// (REST and WebSocket), and no other host may receive what it sends.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; font-src 'self'; \
     connect-src 'self'; manifest-src 'self'; worker-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The policy with `connect-src` set to `'self'` and `sources`.
pub fn content_security_policy(sources: &[String]) -> String {
    let mut connect = String::from("connect-src 'self'");
    for src in sources {
        connect.push(' ');
        connect.push_str(src);
    }
    CONTENT_SECURITY_POLICY.replace("connect-src 'self'", &connect)
}

/// Where the web client may connect: every member's HTTPS address (`https:` and `wss:`), the
/// members' hosts and the workspace name on the cluster's HTTPS ports (the names a browser may
/// have used, as `origin` accepts them), and, for a page served over plain HTTP (a lab cluster),
/// every member's API address (`http:` and `ws:`). Sorted, without duplicates. Characters that
/// would end a CSP directive are never copied in: addresses are validated `host:port` values,
/// and one containing `;`, `,` or whitespace is skipped.
pub fn connect_sources(
    api_addrs: &[String],
    https_addrs: &[String],
    workspace: Option<&str>,
    page_over_https: bool,
) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let safe = |a: &str| {
        !a.is_empty() && !a.contains([';', ',', '\'', '"']) && !a.contains(char::is_whitespace)
    };
    let mut add = |scheme: &str, ws: &str, authority: &str| {
        if safe(authority) {
            out.insert(format!("{scheme}://{authority}"));
            out.insert(format!("{ws}://{authority}"));
        }
    };
    let hosts: Vec<&str> = api_addrs
        .iter()
        .filter_map(|a| a.rsplit_once(':').map(|(h, _)| h))
        .chain(workspace.map(|w| w.trim_end_matches('.')))
        .collect();
    for https in https_addrs {
        add("https", "wss", https);
        if let Some((_, port)) = https.rsplit_once(':') {
            for host in &hosts {
                add("https", "wss", &format!("{host}:{port}"));
                if port == "443" {
                    add("https", "wss", host);
                }
            }
        }
    }
    if !page_over_https {
        for api in api_addrs {
            add("http", "ws", api);
        }
    }
    out.into_iter().collect()
}

/// Layer of the client router: gives the page (the only answer with a CSP) a `connect-src`
/// naming the cluster's nodes instead of any host. Membership is read per page load, so a node
/// added later is allowed from the next reload on.
pub async fn cluster_csp(
    axum::extract::State(s): axum::extract::State<crate::state::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let https = req
        .extensions()
        .get::<crate::security_log::ViaHttps>()
        .is_some();
    let mut res = next.run(req).await;
    // Downloads of uploaded files carry their own sandboxing policy (`routes::files`): kept.
    let own_policy = res
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .is_none_or(|v| v.as_bytes().starts_with(b"sandbox"));
    if own_policy {
        return res;
    }
    let api_addrs: Vec<String> = s
        .node
        .members()
        .into_iter()
        .map(|(_, info)| info.api_addr)
        .collect();
    let view = s.node.health_view();
    let https_addrs: Vec<String> = view
        .members
        .iter()
        .filter_map(|m| m.https_addr().map(str::to_owned))
        .collect();
    let policy = content_security_policy(&connect_sources(
        &api_addrs,
        &https_addrs,
        s.config.workspace.as_deref(),
        https,
    ));
    if let Ok(v) = HeaderValue::from_str(&policy) {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

/// Replaced in `sw.js` by a hash of all embedded files.
const VERSION_PLACEHOLDER: &str = "__CONCLAVE_ASSET_HASH__";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caching {
    /// Always revalidated (`no-cache`), with an `ETag`.
    Revalidate,
    /// Rarely changing, harmless when stale (icons).
    Day,
}

impl Caching {
    fn header(self) -> &'static str {
        match self {
            Caching::Revalidate => "no-cache",
            Caching::Day => "public, max-age=86400",
        }
    }
}

struct Asset {
    /// URL path, e.g. `/app.js`.
    path: &'static str,
    content_type: &'static str,
    caching: Caching,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($file:literal, $content_type:expr, $caching:expr) => {
        Asset {
            path: concat!("/", $file),
            content_type: $content_type,
            caching: $caching,
            bytes: include_bytes!(concat!("../static/", $file)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const MANIFEST: &str = "application/manifest+json";
const PNG: &str = "image/png";
const SVG: &str = "image/svg+xml";

/// Every file of `web/static/` (a unit test checks that none is missing).
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML, Caching::Revalidate),
    asset!("app.js", JS, Caching::Revalidate),
    asset!("conn.js", JS, Caching::Revalidate),
    asset!("ui.js", JS, Caching::Revalidate),
    asset!("dialogs.js", JS, Caching::Revalidate),
    asset!("files.js", JS, Caching::Revalidate),
    asset!("format.js", JS, Caching::Revalidate),
    asset!("notify.js", JS, Caching::Revalidate),
    asset!("keys.js", JS, Caching::Revalidate),
    asset!("search.js", JS, Caching::Revalidate),
    asset!("style.css", CSS, Caching::Revalidate),
    asset!("format.css", CSS, Caching::Revalidate),
    asset!("sw.js", JS, Caching::Revalidate),
    asset!("manifest.webmanifest", MANIFEST, Caching::Revalidate),
    asset!("icon.svg", SVG, Caching::Day),
    asset!("icon-192.png", PNG, Caching::Day),
    asset!("icon-512.png", PNG, Caching::Day),
    asset!("icon-maskable-512.png", PNG, Caching::Day),
    asset!("apple-touch-icon.png", PNG, Caching::Day),
];

/// An asset ready to serve: its final body and `ETag`.
struct Prepared {
    asset: &'static Asset,
    body: Bytes,
    etag: HeaderValue,
}

/// Hex SHA-256 prefix of every embedded file (path and content): the client's version.
fn assets_hash() -> String {
    let mut h = Sha256::new();
    for a in ASSETS {
        h.update(a.path.as_bytes());
        h.update((a.bytes.len() as u64).to_le_bytes());
        h.update(a.bytes);
    }
    hex::encode(&h.finalize()[..8])
}

static PREPARED: LazyLock<Vec<Prepared>> = LazyLock::new(|| {
    let version = assets_hash();
    ASSETS
        .iter()
        .map(|asset| {
            let body = if asset.path == "/sw.js" {
                let text =
                    String::from_utf8_lossy(asset.bytes).replace(VERSION_PLACEHOLDER, &version);
                Bytes::from(text.into_bytes())
            } else {
                Bytes::from_static(asset.bytes)
            };
            let digest = Sha256::digest(&body);
            let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
            Prepared { asset, body, etag }
        })
        .collect()
});

/// True when an `If-None-Match` header names `etag` (or `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(etag) = etag.to_str().ok() else {
        return false;
    };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn serve(p: &Prepared, headers: &HeaderMap) -> Response {
    let a = p.asset;
    let mut res = if not_modified(headers, &p.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Body::from(p.body.clone()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        r
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, p.etag.clone());
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(a.caching.header()),
    );
    // `nosniff` comes from the client router's layer (`api_headers`), as for every answer.
    if a.content_type == HTML {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    res
}

/// URL paths served, each with the index of its file in `ASSETS` (`/` is `index.html`).
fn route_table() -> Vec<(&'static str, usize)> {
    let mut table: Vec<(&'static str, usize)> = ASSETS
        .iter()
        .enumerate()
        .map(|(i, a)| (a.path, i))
        .collect();
    if let Some(i) = ASSETS.iter().position(|a| a.path == "/index.html") {
        table.push(("/", i));
    }
    table
}

/// Routes for the web client's files. Merged into the node's router, outside `/api`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for (path, i) in route_table() {
        router = router.route(
            path,
            get(move |headers: HeaderMap| async move {
                match PREPARED.get(i) {
                    Some(p) => serve(p, &headers),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        );
    }
    router
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn served_paths() -> BTreeSet<&'static str> {
        route_table().into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn every_embedded_file_is_non_empty() {
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.path);
        }
        for p in PREPARED.iter() {
            assert!(!p.body.is_empty(), "{} is empty", p.asset.path);
        }
    }

    #[test]
    fn routes_cover_the_client() {
        let paths = served_paths();
        for required in [
            "/",
            "/index.html",
            "/app.js",
            "/conn.js",
            "/ui.js",
            "/dialogs.js",
            "/files.js",
            "/format.js",
            "/notify.js",
            "/keys.js",
            "/search.js",
            "/style.css",
            "/format.css",
            "/manifest.webmanifest",
            "/sw.js",
            "/icon.svg",
            "/icon-192.png",
            "/icon-512.png",
            "/icon-maskable-512.png",
            "/apple-touch-icon.png",
        ] {
            assert!(paths.contains(required), "{required} is not served");
        }
    }

    /// Adding a file to `web/static/` without embedding it would ship a broken client.
    #[test]
    fn every_file_in_the_static_dir_is_embedded() {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let rel = path
                        .strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    out.push(format!("/{rel}"));
                }
            }
        }
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        let mut files = Vec::new();
        walk(&base, &base, &mut files);
        let paths = served_paths();
        for f in files {
            assert!(
                paths.contains(f.as_str()),
                "web/static{f} is not embedded in ASSETS"
            );
        }
    }

    #[test]
    fn content_types_match_extensions() {
        for a in ASSETS {
            let expected = match a.path.rsplit('.').next().unwrap() {
                "html" => HTML,
                "js" => JS,
                "css" => CSS,
                "webmanifest" => MANIFEST,
                "png" => PNG,
                "svg" => SVG,
                other => panic!("unexpected extension {other}"),
            };
            assert_eq!(a.content_type, expected, "{}", a.path);
        }
        for a in ASSETS.iter().filter(|a| a.content_type == PNG) {
            assert!(
                a.bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{} is not a PNG",
                a.path
            );
        }
    }

    #[test]
    fn service_worker_gets_a_version_and_precaches_the_shell() {
        let sw = PREPARED.iter().find(|p| p.asset.path == "/sw.js").unwrap();
        let text = std::str::from_utf8(&sw.body).unwrap();
        assert!(!text.contains(VERSION_PLACEHOLDER));
        assert!(text.contains(&assets_hash()));
        for a in ASSETS.iter().filter(|a| a.path != "/sw.js") {
            assert!(
                text.contains(&format!("'{}'", a.path)),
                "sw.js does not precache {}",
                a.path
            );
        }
    }

    /// The page must work under its CSP: no inline scripts, styles or handlers, no outside address.
    #[test]
    fn client_has_no_inline_code_and_no_outside_addresses() {
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert_eq!(ASSETS[0].path, "/index.html");
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains("src="), "inline script in index.html: {tag}");
        }
        assert!(!html.contains("<style"), "inline <style> in index.html");
        assert!(!html.contains(" style="), "style attribute in index.html");
        assert!(!html.contains(" onclick="), "inline handler in index.html");
        for a in ASSETS.iter().filter(|a| a.content_type != PNG) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for (i, _) in text.match_indices("://") {
                let rest = &text[i + 3..];
                // Only the SVG namespace URI (an identifier, never fetched) is allowed.
                assert!(
                    rest.starts_with("www.w3.org/"),
                    "{} references an outside address: {}",
                    a.path,
                    &text[i.saturating_sub(10)..(i + 40).min(text.len())]
                );
            }
            assert!(!text.contains("innerHTML"), "{} uses innerHTML", a.path);
        }
    }

    async fn get(addr: std::net::SocketAddr, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
        let status = head[9..12].parse().unwrap();
        (status, head, buf[split + 4..].to_vec())
    }

    #[tokio::test]
    async fn serves_files_with_headers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app: Router = routes::<()>();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let (status, head, body) = get(addr, "/", "").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/html; charset=utf-8"),
            "{head}"
        );
        assert!(head.contains("cache-control: no-cache"), "{head}");
        assert!(
            head.contains("content-security-policy: default-src 'self'"),
            "{head}"
        );
        // Without the cluster's state, only the page's own origin.
        assert!(head.contains("connect-src 'self';"), "{head}");
        assert!(body.starts_with(b"<!doctype html>"));

        let (status, head, _) = get(addr, "/sw.js", "").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/javascript"), "{head}");
        assert!(head.contains("cache-control: no-cache"), "{head}");

        let (status, head, body) = get(addr, "/icon-192.png", "").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: image/png"), "{head}");
        assert!(
            head.contains("cache-control: public, max-age=86400"),
            "{head}"
        );
        assert!(body.starts_with(b"\x89PNG"));

        // Conditional request: 304 with no body.
        let (_, head, _) = get(addr, "/app.js", "").await;
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .unwrap()
            .to_string();
        let (status, _, body) = get(addr, "/app.js", &format!("If-None-Match: {etag}\r\n")).await;
        assert_eq!(status, 304);
        assert!(body.is_empty());
    }

    #[test]
    fn connect_sources_name_the_cluster_and_nothing_else() {
        let api = vec!["10.0.0.1:8080".to_owned(), "10.0.0.2:8080".to_owned()];
        let https = vec!["10.0.0.1:8443".to_owned()];
        let over_https = connect_sources(&api, &https, Some("chat.acme.lan"), true);
        assert_eq!(
            over_https,
            [
                "https://10.0.0.1:8443",
                "https://10.0.0.2:8443",
                "https://chat.acme.lan:8443",
                "wss://10.0.0.1:8443",
                "wss://10.0.0.2:8443",
                "wss://chat.acme.lan:8443",
            ]
        );
        let plain = connect_sources(&api, &[], None, false);
        assert_eq!(
            plain,
            [
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "ws://10.0.0.1:8080",
                "ws://10.0.0.2:8080",
            ]
        );
        // Port 443 also as the bare host; nothing that could end the directive.
        let odd = connect_sources(&["a;b:1".to_owned()], &["h:443".to_owned()], None, true);
        assert_eq!(odd, ["https://h:443", "wss://h:443"], "{odd:?}");
        let policy = content_security_policy(&plain);
        assert!(
            policy.contains("connect-src 'self' http://10.0.0.1:8080 "),
            "{policy}"
        );
        for wildcard in [" ws: ", " wss: ", " http: ", " https: ", "*"] {
            assert!(!policy.contains(wildcard), "{policy}");
        }
    }
}
