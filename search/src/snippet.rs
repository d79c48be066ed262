//! Snippets: the part of a message body shown in a search result, with the matched words
//! marked by UTF-16 offsets (what JavaScript string indices count), never by markup.
//!
//! Owns the window and highlight rules. Must never produce HTML: the client builds `<mark>`
//! elements from the offsets with DOM calls, so a body is always text.

use crate::index::analyzer;
use crate::query::ParsedQuery;

/// Snippets of longer bodies are cut to about this many characters.
const WINDOW_CHARS: usize = 200;
/// Characters of context kept before the first match when cutting.
const LEAD_CHARS: usize = 60;
const ELLIPSIS: &str = "…";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    pub text: String,
    /// `[start, end)` in UTF-16 code units of `text`, ascending, not overlapping.
    pub highlights: Vec<(usize, usize)>,
}

/// The snippet of `body` for `query`, or `None` when no word of the query occurs in it (the
/// index was a moment behind an edit: the caller drops such a hit).
pub fn snippet(body: &str, query: &ParsedQuery) -> Option<Snippet> {
    let words: std::collections::HashSet<&str> = query.words().collect();
    let mut a = analyzer();
    let mut ranges = Vec::new();
    let mut ts = a.token_stream(body);
    while ts.advance() {
        let t = ts.token();
        if words.contains(t.text.as_str()) {
            ranges.push((t.offset_from, t.offset_to));
        }
    }
    let (first, _) = *ranges.first()?;
    // The window, in bytes of `body`, on character boundaries.
    let (start, end) = if body.chars().count() <= WINDOW_CHARS {
        (0, body.len())
    } else {
        let lead: Vec<usize> = body[..first].char_indices().map(|(i, _)| i).collect();
        let mut start = lead
            .len()
            .checked_sub(LEAD_CHARS)
            .and_then(|i| lead.get(i).copied())
            .unwrap_or(0);
        // Begin at a word boundary when one is near.
        if start > 0
            && let Some(sp) = body[start..first].find(char::is_whitespace)
        {
            start += sp + 1;
        }
        let end = body[start..]
            .char_indices()
            .nth(WINDOW_CHARS)
            .map_or(body.len(), |(i, _)| start + i);
        (start, end)
    };
    let mut text = String::new();
    let mut units = 0usize;
    if start > 0 {
        text.push_str(ELLIPSIS);
        units += ELLIPSIS.encode_utf16().count();
    }
    let utf16 = |s: &str| s.encode_utf16().count();
    let mut highlights = Vec::new();
    for (from, to) in ranges {
        if from < start || to > end {
            continue;
        }
        let s = units + utf16(&body[start..from]);
        let e = s + utf16(&body[from..to]);
        highlights.push((s, e));
    }
    text.push_str(&body[start..end]);
    if end < body.len() {
        text.push_str(ELLIPSIS);
    }
    Some(Snippet { text, highlights })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(s: &str) -> ParsedQuery {
        ParsedQuery::parse(s).unwrap()
    }

    fn marked(s: &Snippet) -> Vec<String> {
        let u: Vec<u16> = s.text.encode_utf16().collect();
        s.highlights
            .iter()
            .map(|&(a, b)| String::from_utf16(&u[a..b]).unwrap())
            .collect()
    }

    #[test]
    fn marks_every_occurrence_case_insensitively() {
        let s = snippet("Deploy the API; the api deploy is Friday", &q("api deploy")).unwrap();
        assert_eq!(s.text, "Deploy the API; the api deploy is Friday");
        assert_eq!(marked(&s), ["Deploy", "API", "api", "deploy"]);
    }

    #[test]
    fn offsets_are_utf16_code_units() {
        // The emoji is two UTF-16 units and four UTF-8 bytes; "é" one unit, two bytes.
        let s = snippet("😀 café résumé", &q("résumé")).unwrap();
        assert_eq!(s.highlights, vec![(8, 14)]);
        assert_eq!(marked(&s), ["résumé"]);
    }

    #[test]
    fn long_bodies_are_cut_around_the_first_match() {
        let body = format!("{} needle {}", "word ".repeat(200), "tail ".repeat(200));
        let s = snippet(&body, &q("needle")).unwrap();
        assert!(s.text.starts_with('…') && s.text.ends_with('…'));
        assert!(s.text.chars().count() <= WINDOW_CHARS + 2);
        assert_eq!(marked(&s), ["needle"]);
    }

    #[test]
    fn no_match_means_no_snippet() {
        assert_eq!(snippet("nothing here", &q("absent")), None);
    }

    #[test]
    fn bad_queries_are_refused() {
        assert!(ParsedQuery::parse("").is_err());
        assert!(ParsedQuery::parse("  !!! ").is_err());
        let many: String = (0..17).map(|i| format!("w{i} ")).collect();
        assert!(ParsedQuery::parse(&many).is_err());
        // Repeating a word does not count twice.
        assert!(ParsedQuery::parse(&"a ".repeat(17)).is_ok());
        assert!(ParsedQuery::parse(&"x".repeat(600)).is_err());
        let p = q(r#"release "next friday" NOTES"#);
        assert_eq!(
            p.groups,
            vec![
                vec!["release".to_owned()],
                vec!["next".to_owned(), "friday".to_owned()],
                vec!["notes".to_owned()]
            ]
        );
    }
}
