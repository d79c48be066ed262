//! Which browser origins may talk to this node: the workspace's own (this node as the browser
//! reached it, every cluster member's API address; with TLS also `https://<https_addr>` of
//! every member and `https://<workspace>` on a member's HTTPS port) plus `[api]
//! allowed_origins`. Used by the WebSocket upgrade (`403 forbidden_origin`) and by the CORS
//! middleware.
//!
//! Owns the origin rule. Must never allow a wildcard: a page from any other site must not be
//! able to drive a logged-in user's session.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Whether `origin` (the `Origin` header's value) belongs to the workspace.
pub fn allowed(s: &AppState, origin: &str, host: Option<&str>) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    if s.config.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    // Same origin as the request itself: the page was loaded from this node under whatever
    // name the browser used (the workspace name, an IP).
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true;
    }
    if s.node
        .members()
        .iter()
        .any(|(_, info)| info.api_addr.eq_ignore_ascii_case(authority))
    {
        return true;
    }
    if scheme != "https" {
        return false;
    }
    // HTTPS addresses are not replicated (they describe how each process runs); the members'
    // own status reports, as the last health probe saw them, carry them. A member that just
    // died has no report, yet its pages are exactly the ones that fail over to us: so the
    // member hosts (from the replicated API addresses) on any HTTPS port the cluster uses
    // count too.
    let view = s.node.health_view();
    let https_addrs: Vec<&str> = view.members.iter().filter_map(|m| m.https_addr()).collect();
    let members = s.node.members();
    let member_hosts: Vec<&str> = members
        .iter()
        .filter_map(|(_, info)| info.api_addr.rsplit_once(':').map(|(host, _)| host))
        .collect();
    https_origin_allowed(
        authority,
        &https_addrs,
        &member_hosts,
        s.config.workspace.as_deref(),
    )
}

/// The port of `host:port`, if it has a valid one.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
}

/// Whether an `https://` origin's `authority` is a member's HTTPS address, a member's host on
/// one of the cluster's HTTPS ports, or the workspace name on one of them (no port in the
/// origin means 443).
fn https_origin_allowed(
    authority: &str,
    https_addrs: &[&str],
    member_hosts: &[&str],
    workspace: Option<&str>,
) -> bool {
    if https_addrs
        .iter()
        .any(|addr| addr.eq_ignore_ascii_case(authority))
    {
        return true;
    }
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal without a port ("[::1]") also contains ':'; its last part is no port.
        Some((host, port)) if !authority.ends_with(']') => match port.parse::<u16>() {
            Ok(port) => (host, port),
            Err(_) => return false,
        },
        _ => (authority, 443),
    };
    let https_port = https_addrs.iter().any(|addr| port_of(addr) == Some(port));
    if !https_port {
        return false;
    }
    let workspace = workspace.map(|w| w.trim_end_matches('.'));
    member_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
        || workspace.is_some_and(|w| w.eq_ignore_ascii_case(host))
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok())
}

/// An `Origin` header naming a site outside the workspace.
#[derive(Debug)]
pub struct ForeignOrigin;

/// The request's origin if it is one of ours; `Err` if it names a foreign origin; `Ok(None)`
/// when there is no `Origin` header (not a cross-origin browser request).
pub fn check(s: &AppState, headers: &HeaderMap) -> Result<Option<HeaderValue>, ForeignOrigin> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let Ok(text) = origin.to_str() else {
        return Err(ForeignOrigin);
    };
    if allowed(s, text, host(headers)) {
        Ok(Some(origin.clone()))
    } else {
        Err(ForeignOrigin)
    }
}

/// CORS for the cluster's own origins, and nothing else: other origins get no CORS headers (the
/// browser then refuses to hand the response to the page) and no preflight approval.
pub async fn cors(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let origin = check(&s, req.headers()).ok().flatten();
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        if origin.is_some() {
            StatusCode::NO_CONTENT.into_response()
        } else {
            // The same JSON error as every other refusal, so a script that sends a preflight by
            // hand learns why; a browser only looks at the status and the missing CORS headers.
            let text = req
                .headers()
                .get(header::ORIGIN)
                .and_then(|o| o.to_str().ok())
                .unwrap_or("?")
                .to_string();
            ApiError::ForbiddenOrigin(text).into_response()
        }
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-conclave-min-index"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-conclave-index, retry-after"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::https_origin_allowed;

    #[test]
    fn https_origins_of_members_and_the_workspace() {
        let https = ["127.0.0.1:8443", "10.0.0.2:443"];
        let hosts = ["127.0.0.1", "10.0.0.2", "10.0.0.3"];
        let ws = Some("chat.corp.lan");
        let ok = |origin: &str| https_origin_allowed(origin, &https, &hosts, ws);
        assert!(ok("127.0.0.1:8443"));
        assert!(ok("10.0.0.2:443"));
        // A member whose status is unknown right now (it just died): its host on a port the
        // cluster serves HTTPS on.
        assert!(ok("10.0.0.3:8443"));
        assert!(ok("10.0.0.3"));
        // The workspace name on a member's HTTPS port; 443 may be left out.
        assert!(ok("chat.corp.lan:8443"));
        assert!(ok("CHAT.corp.lan"));
        // Not an HTTPS port of the cluster, not a member or the workspace.
        assert!(!ok("chat.corp.lan:9443"));
        assert!(!ok("10.0.0.3:8080"));
        assert!(!ok("evil.example:8443"));
        assert!(!ok("10.0.0.9:8443"));
        assert!(!ok("chat.corp.lan:x"));
        assert!(!https_origin_allowed("chat.corp.lan", &https, &hosts, None));
        assert!(!https_origin_allowed(
            "chat.corp.lan",
            &["127.0.0.1:8443"],
            &hosts,
            ws
        ));
    }
}
