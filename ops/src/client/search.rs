//! The search endpoint of [`Client`] (`GET /api/v1/search`; docs/api.md). A read: retried on
//! another node like every read. Must never print.

use reqwest::Method;

use super::{Client, decode};
use crate::error::ClientError;
use crate::request::{ApiRequest, Retry};
use api::rest::SearchPage;

/// What to search for; `None` fields are left out of the request.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    pub q: String,
    pub channel: Option<String>,
    pub from: Option<String>,
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl Client {
    /// One page of search results, newest first.
    pub async fn search(&self, p: &SearchParams) -> Result<SearchPage, ClientError> {
        let mut req = ApiRequest::new(Method::GET, &["api", "v1", "search"], Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.query.push(("q", p.q.clone()));
        if let Some(c) = &p.channel {
            req.query.push(("channel", c.clone()));
        }
        if let Some(f) = &p.from {
            req.query.push(("from", f.clone()));
        }
        if let Some(b) = p.before {
            req.query.push(("before", b.to_string()));
        }
        if let Some(a) = p.after {
            req.query.push(("after", a.to_string()));
        }
        if let Some(l) = p.limit {
            req.query.push(("limit", l.to_string()));
        }
        if let Some(c) = &p.cursor {
            req.query.push(("cursor", c.clone()));
        }
        decode(&self.send(&req).await?)
    }
}
