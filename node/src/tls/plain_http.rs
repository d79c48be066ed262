//! The plain-HTTP port: redirects everything to HTTPS, except what a device needs before it
//! can trust HTTPS at all (the root certificate in several formats, the CRL, and a page that
//! explains how to check and install the root) and `/healthz` for load balancers.
//!
//! Owns the plain port's routes and the Host-header rule for redirects. Must never serve
//! anything else in the clear (no API, no login), never redirect to a host that is not a
//! syntactically valid host name or IP address, and never serve a private key.
//!
//! Everything here travels unauthenticated, so the trust page tells the reader to compare the
//! fingerprint with one obtained over a channel they already trust; the page itself proves
//! nothing.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use web::ApiError;

use super::trust_page::{self, TrustPage};
use crate::ca::trust_formats;

/// Where the plain port gets what it publishes. The CA service implements it over its
/// replicated state; getters are synchronous and cheap (a clone of what is already in
/// memory), since every request calls them.
pub trait TrustMaterial: Send + Sync + 'static {
    /// The workspace name (DNS zone) the root belongs to.
    fn workspace(&self) -> String;
    /// The root CA certificate as PEM; `None` while this node has no CA state yet (before
    /// `init` or while joining), which the plain port answers with 503.
    fn root_pem(&self) -> Option<String>;
    /// The current CRLs (issuing CA and root) concatenated as PEM; `None` when there are none.
    fn crl_pem(&self) -> Option<String>;
}

/// Trust material that does not change while the process runs. Test-only: a node publishes
/// the replicated CA (`ca_runtime::CaTrust`).
#[cfg(test)]
#[derive(Clone, Debug)]
pub struct StaticTrust {
    pub workspace: String,
    pub root_pem: String,
    pub crl_pem: Option<String>,
}

#[cfg(test)]
impl TrustMaterial for StaticTrust {
    fn workspace(&self) -> String {
        self.workspace.clone()
    }
    fn root_pem(&self) -> Option<String> {
        Some(self.root_pem.clone())
    }
    fn crl_pem(&self) -> Option<String> {
        self.crl_pem.clone()
    }
}

/// File names offered for download; the extension is what each platform's installer expects.
pub const ROOT_PEM_FILE: &str = "conclave-root-ca.pem";
pub const ROOT_DER_FILE: &str = "conclave-root-ca.crt";
pub const ROOT_PROFILE_FILE: &str = "conclave-root-ca.mobileconfig";
pub const CRL_FILE: &str = "conclave.crl.pem";

#[derive(Clone)]
struct PlainState {
    https_port: u16,
    trust: Arc<dyn TrustMaterial>,
}

/// The plain port's router. `https_port` is where redirects point; `health` answers
/// `/healthz` and `/readyz` (pass the client API router so the answer is the same as over
/// HTTPS).
pub fn plain_router(https_port: u16, trust: Arc<dyn TrustMaterial>, health: Router) -> Router {
    let state = PlainState { https_port, trust };
    // Other methods on the trust paths redirect like any other request, rather than 405.
    Router::new()
        .route("/", get(trust_page).fallback(redirect))
        .route("/ca.pem", get(root_pem).fallback(redirect))
        .route("/ca.crt", get(root_der).fallback(redirect))
        .route("/ca.mobileconfig", get(root_profile).fallback(redirect))
        .route("/crl.pem", get(crl_pem).fallback(redirect))
        .route_service("/healthz", health.clone())
        // Load balancers and `conclave dev` probe readiness on the plain port too.
        .route_service("/readyz", health)
        .fallback(redirect)
        .with_state(state)
}

async fn redirect(
    State(s): State<PlainState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let host = match request_host(&uri, &headers) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{}{path}", https_origin(&host, s.https_port));
    // 301 for GET/HEAD (what every browser expects); 308 otherwise, because 301 lets clients
    // turn a POST into a GET.
    let status = if method == Method::GET || method == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (status, [(header::LOCATION, v)]).into_response(),
        // Unreachable with a validated host and a path hyper already parsed, but not a panic.
        Err(_) => {
            ApiError::InvalidRequest("cannot build the redirect location".into()).into_response()
        }
    }
}

async fn trust_page(State(s): State<PlainState>, uri: Uri, headers: HeaderMap) -> Response {
    let Some(pem) = s.trust.root_pem() else {
        return no_ca_yet();
    };
    let der = match trust_formats::root_der(&pem) {
        Ok(d) => d,
        Err(e) => return ApiError::Internal(format!("root certificate: {e}")).into_response(),
    };
    let page = TrustPage {
        workspace: s.trust.workspace(),
        fingerprint: crate::ca::fingerprint_sha256(&der),
        // The link to continue is shown only for a Host we would also redirect to.
        https_url: request_host(&uri, &headers)
            .ok()
            .map(|h| format!("{}/", https_origin(&h, s.https_port))),
        has_crl: s.trust.crl_pem().is_some(),
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No scripts, no external anything: the page only needs its own inline style.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                 form-action 'none'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        trust_page::render(&page),
    )
        .into_response()
}

async fn root_pem(State(s): State<PlainState>) -> Response {
    match s.trust.root_pem() {
        Some(pem) => download("application/x-pem-file", ROOT_PEM_FILE, pem.into_bytes()),
        None => no_ca_yet(),
    }
}

async fn root_der(State(s): State<PlainState>) -> Response {
    let Some(pem) = s.trust.root_pem() else {
        return no_ca_yet();
    };
    match trust_formats::root_der(&pem) {
        Ok(der) => download("application/pkix-cert", ROOT_DER_FILE, der),
        Err(e) => ApiError::Internal(format!("root certificate: {e}")).into_response(),
    }
}

async fn root_profile(State(s): State<PlainState>) -> Response {
    let Some(pem) = s.trust.root_pem() else {
        return no_ca_yet();
    };
    match trust_formats::apple_mobileconfig(&pem, &s.trust.workspace()) {
        Ok(profile) => download(
            "application/x-apple-aspen-config",
            ROOT_PROFILE_FILE,
            profile.into_bytes(),
        ),
        Err(e) => ApiError::Internal(format!("root certificate: {e}")).into_response(),
    }
}

async fn crl_pem(State(s): State<PlainState>) -> Response {
    match s.trust.crl_pem() {
        Some(pem) => download("application/x-pem-file", CRL_FILE, pem.into_bytes()),
        None => ApiError::NotFound("no certificate revocation list has been published".into())
            .into_response(),
    }
}

fn download(content_type: &'static str, file_name: &'static str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            // The root can be replaced (a new workspace); make browsers revalidate.
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        body,
    )
        .into_response()
}

fn no_ca_yet() -> Response {
    ApiError::Unavailable(
        "this node has no certificate authority yet; retry once it has joined the cluster".into(),
    )
    .into_response()
}

/// `https://host[:port]`, leaving out the default port.
fn https_origin(host: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The host the client addressed (URI authority for HTTP/2 or absolute-form requests, else the
/// Host header), without its port, lower-cased, and checked to be a host name or an IP address
/// (IPv6 in brackets). Anything else is a 400, never echoed into a Location header.
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers
            .get(header::HOST)
            .ok_or_else(|| ApiError::InvalidRequest("the request has no Host header".into()))?
            .to_str()
            .map_err(|_| invalid_host())?,
    };
    parse_host(raw).ok_or_else(invalid_host)
}

fn invalid_host() -> ApiError {
    ApiError::InvalidRequest("the Host header is not a valid host name or IP address".into())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` to the normalized host part.
fn parse_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = addr.parse().ok()?;
        valid_port(after, true)?;
        return Some(format!("[{ip}]"));
    }
    let (host, port) = match raw.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (raw, None),
    };
    if let Some(p) = port {
        valid_port(p, false)?;
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(ip.to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    valid_dns_name(name).then(|| name.to_ascii_lowercase())
}

/// A port suffix: empty, or digits that fit a u16 (`bracketed` means it still has its colon).
fn valid_port(s: &str, bracketed: bool) -> Option<()> {
    let digits = if bracketed {
        if s.is_empty() {
            return Some(());
        }
        s.strip_prefix(':')?
    } else {
        s
    };
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u16>().ok())
        .flatten()
        .map(|_| ())
}

/// RFC 1123 host name: labels of letters, digits and inner hyphens, at most 63 bytes each and
/// 253 in all, and a last label that is not all digits (that would be a malformed IPv4).
fn valid_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let last_not_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && last_not_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized_or_refused() {
        let ok = [
            ("chat.corp.lan", "chat.corp.lan"),
            ("Chat.Corp.LAN:8080", "chat.corp.lan"),
            ("chat.corp.lan.", "chat.corp.lan"),
            ("localhost", "localhost"),
            ("127.0.0.2:8080", "127.0.0.2"),
            ("[::1]:8080", "[::1]"),
            ("[fd00::1]", "[fd00::1]"),
            ("node-1", "node-1"),
        ];
        for (raw, want) in ok {
            assert_eq!(parse_host(raw).as_deref(), Some(want), "{raw}");
        }
        let bad = [
            "",
            ":8080",
            "evil.lan:80:80",
            "a b",
            "<script>",
            "host/path",
            "user@host",
            "-bad.lan",
            "bad-.lan",
            "bad..lan",
            "1.2.3.999",
            "[::1",
            "[nothere]",
            "[::1]x",
            "host:99999",
            "host:",
            "host:8o",
            "\"quoted\"",
        ];
        for raw in bad {
            assert_eq!(parse_host(raw), None, "{raw:?} must be refused");
        }
        assert_eq!(parse_host(&"a".repeat(64)), None);
    }

    #[test]
    fn origins_omit_the_default_port() {
        assert_eq!(https_origin("x.lan", 443), "https://x.lan");
        assert_eq!(https_origin("[::1]", 8443), "https://[::1]:8443");
    }
}
