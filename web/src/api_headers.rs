//! Response headers every answer of the client router carries, whatever produced it (handler,
//! extractor rejection, fallback; the web client's files keep the `Cache-Control` they set):
//! `Cache-Control: no-store`, so no browser or proxy keeps a copy of messages, tokens or user
//! lists; `X-Content-Type-Options: nosniff`, so no browser runs an answer as something other
//! than its declared type; and, on answers to requests that came over HTTPS (the
//! [`ViaHttps`] extension), `Strict-Transport-Security`, so a browser that once reached the
//! cluster over HTTPS never again sends a token to it in the clear. Owns only those three
//! headers; must never replace a `Cache-Control` a handler chose itself, and must never send
//! HSTS over plain HTTP (RFC 6797 8.1: a browser ignores it there, and a lab node on plain
//! HTTP must stay reachable).

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::security_log::ViaHttps;

/// One year, the value HSTS preload lists and ASVS 14.4.5 ask for. No `includeSubDomains`:
/// the workspace zone may hold other hosts (a printer's web page, a lab box) that Conclave does
/// not serve and that may have no HTTPS; the cluster's own names are covered one by one as
/// browsers visit them.
pub const HSTS: &str = "max-age=31536000";

/// `from_fn` layer of the whole client router.
pub async fn add(req: Request, next: Next) -> Response {
    let https = req.extensions().get::<ViaHttps>().is_some();
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    resp
}
