//! Wire types of `GET /api/v1/search` (issue 15): a page of matching messages with their
//! snippets. Highlights are UTF-16 code-unit offsets into `snippet.text`, never markup.

use serde::{Deserialize, Serialize};

use super::Message;

/// `GET /api/v1/search` response. Fields in the order the server writes them (alphabetical).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchPage {
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_cursor: Option<String>,
    /// Newest first.
    pub results: Vec<SearchResult>,
}

/// One matching message, as it is now (an edit shows its new text; deleted messages are never
/// returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResult {
    pub message: Message,
    pub snippet: SearchSnippet,
}

/// The part of the body shown in a result, and where the matched words are in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchSnippet {
    /// `[start, end)` pairs in UTF-16 code units of `text` (JavaScript string indices),
    /// ascending and not overlapping.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<u64>>))]
    pub highlights: Vec<[u64; 2]>,
    /// Plain text (never HTML): the whole body, or a window of it with `…` where cut.
    pub text: String,
}
