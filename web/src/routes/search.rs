//! `GET /api/v1/search`: full-text search over the messages the caller can read right now.
//!
//! Owns the HTTP shape of a search: the query parameters, the access filter handed to the
//! index (public channels, and private channels and DMs the caller is a member of, decided by
//! the same `can_read` rule as the message routes), and the answer, rendered from the state
//! machine's current records (the index only names hits). Must never return a message it did
//! not re-check: a hit whose channel the caller can no longer read, that was deleted, or whose
//! current text no longer matches (an edit the index has not caught up with) is dropped.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use cluster::state::keys;
use cluster::{ChannelKind, StateError, StateReader};
use serde::Deserialize;

use super::channels::require_reader;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::MinIndex;
use crate::state::AppState;
use crate::wire;
use api::rest::{SearchPage, SearchResult, SearchSnippet};

/// Results per page when the client does not say.
pub const DEFAULT_LIMIT: usize = 20;
/// Most results per page.
pub const MAX_LIMIT: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: Option<String>,
    channel: Option<String>,
    from: Option<String>,
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn bad(e: search::SearchError) -> ApiError {
    match e {
        search::SearchError::BadQuery(m) => ApiError::BadQuery(m),
        other => ApiError::Internal(format!("search: {other}")),
    }
}

/// Every channel `user` may read now: public ones, and the others they are a member of.
pub fn readable_channels(r: &StateReader, user: &str) -> Result<Vec<String>, StateError> {
    let mut out = Vec::new();
    for k in r.tree().scan_prefix(keys::CHANNEL_PREFIX).keys() {
        let k = k?;
        let Some(name) = k.get(keys::CHANNEL_PREFIX.len()..) else {
            continue;
        };
        let name = String::from_utf8_lossy(name);
        let readable = match r.channel_kind(&name)? {
            Some(ChannelKind::Public) => true,
            Some(_) => r.is_member(&name, user)?,
            None => false,
        };
        if readable {
            out.push(name.into_owned());
        }
    }
    Ok(out)
}

#[utoipa::path(
    get,
    path = "/api/v1/search",
    tag = "search",
    params(
        ("q" = String, Query, description = "words to find, all required; `\"...\"` for a phrase; at most 16 words and 512 bytes"),
        ("channel" = Option<String>, Query, description = "only this channel (the caller must be able to read it)"),
        ("from" = Option<String>, Query, description = "only messages by this username"),
        ("before" = Option<u64>, Query, description = "only messages before this time (ms since the Unix epoch)"),
        ("after" = Option<u64>, Query, description = "only messages after this time (ms since the Unix epoch)"),
        ("limit" = Option<usize>, Query, description = "results per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "matching messages the caller can read, newest first, with snippets whose highlights are UTF-16 offsets", body = api::rest::SearchPage),
        (status = 400, description = "`bad_query`: no words, too long, too many words, a bad limit or cursor", body = api::error::ErrorBody),
        (status = 403, description = "`forbidden`: the `channel` filter names a channel the caller cannot read", body = api::error::ErrorBody),
        (status = 404, description = "`channel_not_found`: the `channel` filter names no channel", body = api::error::ErrorBody),
        (status = 503, description = "`unavailable`: this node has no search index (it could not be opened); try another node", body = api::error::ErrorBody)
    )
)]
pub async fn search(
    State(s): State<AppState>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
    _min: MinIndex,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let Some(index) = s.search.clone() else {
        return Err(ApiError::Unavailable(
            "search is not available on this node; try another".into(),
        ));
    };
    let parsed = search::ParsedQuery::parse(q.q.as_deref().unwrap_or("")).map_err(bad)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadQuery(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let cursor = match q.cursor.as_deref() {
        Some(c) => Some(search::Cursor::decode(c).map_err(bad)?),
        None => None,
    };
    let user = auth.user.username.clone();
    let channels = match &q.channel {
        Some(c) => {
            require_reader(&s, c, &user).await?;
            vec![c.clone()]
        }
        None => readable_channels(s.node.reader(), &user)?,
    };
    let req = search::SearchRequest {
        query: parsed.clone(),
        channels,
        author: q.from.clone(),
        after_ms: q.after,
        before_ms: q.before,
        limit,
        cursor,
    };
    let page = tokio::task::spawn_blocking(move || index.search(&req))
        .await
        .map_err(|e| ApiError::Internal(format!("search task: {e}")))?
        .map_err(bad)?;

    let reader = s.node.reader();
    let mut readable: HashMap<String, bool> = HashMap::new();
    let mut results = Vec::new();
    for hit in page.hits {
        // Re-checked now: membership may have changed since the channel list was read.
        let ok = match readable.get(&hit.channel) {
            Some(ok) => *ok,
            None => {
                let ok = reader.can_read(&hit.channel, &user)?.unwrap_or(false);
                readable.insert(hit.channel.clone(), ok);
                ok
            }
        };
        if !ok {
            continue;
        }
        let Some(view) = reader.message_view(&hit.channel, hit.seq)? else {
            continue;
        };
        if view.deleted {
            continue;
        }
        let Some(snip) = search::snippet(&view.body, &parsed) else {
            continue; // edited since it was indexed: the new text does not match
        };
        results.push(SearchResult {
            message: wire::message(&view),
            snippet: SearchSnippet {
                highlights: snip
                    .highlights
                    .iter()
                    .map(|&(a, b)| [a as u64, b as u64])
                    .collect(),
                text: snip.text,
            },
        });
    }
    wire::as_value(&SearchPage {
        next_cursor: page.next.map(|c| c.encode()),
        results,
    })
}
