//! Response headers every answer of the client router carries, whatever produced it (handler,
//! extractor rejection, fallback; the web client's files keep the `Cache-Control` they set): `Cache-Control: no-store`, so no browser or proxy keeps a copy of
//! messages, tokens or user lists, and `X-Content-Type-Options: nosniff`, so no browser runs an
//! answer as something other than its declared type. Owns only those two headers; must never
//! replace a `Cache-Control` a handler chose itself.

use axum::http::{HeaderValue, header};
use axum::response::Response;

/// `map_response` layer of the whole client router.
pub async fn add(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
