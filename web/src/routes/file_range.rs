//! HTTP range requests on file downloads (RFC 9110 §14): which bytes of a file a `GET` asks
//! for, given its `Range` and `If-Range` headers, and which parts of which chunks hold them.
//!
//! Owns the decision "whole file, one part, or 416" and the mapping of a byte range onto a
//! file's chunks. Must never read a blob or look at who is asking: the download route checks
//! the caller first and streams the chunks; this module only does arithmetic on headers and
//! sizes, so a malformed header can cost nothing but a full `200`.

use axum::http::{HeaderMap, header};

/// What a download answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `200` and every byte: no `Range`, one this server ignores (multiple ranges, another
    /// unit, a syntax error) or an `If-Range` that names another version.
    Whole,
    /// `206` with bytes `start..=end` (both inside the file).
    Part { start: u64, end: u64 },
    /// `416` with `Content-Range: bytes */size`: a well-formed single range that starts at or
    /// past the end, or a suffix of zero bytes.
    Unsatisfiable,
}

/// What `headers` ask of a file of `size` bytes whose strong entity tag is `etag` (quoted).
pub fn want(headers: &HeaderMap, size: u64, etag: &str) -> Want {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Want::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        // A strong comparison (RFC 9110 §13.1.5): only our exact tag counts. A date never
        // matches because downloads carry no `Last-Modified`; a weak tag never matches by rule.
        if if_range.as_bytes() != etag.as_bytes() {
            return Want::Whole;
        }
    }
    parse(range, size)
}

/// One `Range` header value against a file of `size` bytes.
///
/// Multiple ranges get the whole file (RFC 9110 §14.2 lets a server ignore `Range`): a
/// multipart answer buys nothing for resuming or seeking, and overlapping ranges are a known
/// way to make a server send a file many times over.
pub fn parse(value: &str, size: u64) -> Want {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return Want::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Want::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Want::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last `n` bytes.
        let Some(n) = digits(last) else {
            return Want::Whole;
        };
        if n == 0 || size == 0 {
            return Want::Unsatisfiable;
        }
        return Want::Part {
            start: size.saturating_sub(n),
            end: size - 1,
        };
    }
    let Some(start) = digits(first) else {
        return Want::Whole;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last) {
            Some(end) if end >= start => end,
            // `last < first` makes the range invalid, not unsatisfiable: ignored.
            _ => return Want::Whole,
        }
    };
    if start >= size {
        return Want::Unsatisfiable;
    }
    Want::Part {
        start,
        end: end.min(size - 1),
    }
}

/// A non-empty run of ASCII digits, saturating at `u64::MAX` (a huge position is past any
/// file's end, which is what its sender meant); `None` for anything else, `+` included.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// One chunk's share of an answer: bytes `skip..skip + take` of blob `sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub sha256: String,
    pub skip: usize,
    pub take: usize,
}

/// The pieces of the chunks (`(sha256, size)` in file order) that hold bytes `start..=end`;
/// chunks before the range are skipped by their sizes alone, never read. `None` when the
/// range runs past the chunks' total (the caller checks sizes against the file record first).
pub fn pieces(chunks: &[(String, u64)], start: u64, end: u64) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for (sha, size) in chunks {
        let (lo, hi) = (offset, offset + size);
        offset = hi;
        if hi <= start || lo > end {
            continue;
        }
        let skip = start.saturating_sub(lo);
        let stop = (end + 1).min(hi) - lo;
        out.push(Piece {
            sha256: sha.clone(),
            skip: usize::try_from(skip).ok()?,
            take: usize::try_from(stop - skip).ok()?,
        });
    }
    (offset > end).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-9", 100), Want::Part { start: 0, end: 9 });
        assert_eq!(parse("bytes=90-", 100), Want::Part { start: 90, end: 99 });
        assert_eq!(parse("bytes=-10", 100), Want::Part { start: 90, end: 99 });
        assert_eq!(parse("bytes=-1000", 100), Want::Part { start: 0, end: 99 });
        assert_eq!(
            parse("bytes=50-1000", 100),
            Want::Part { start: 50, end: 99 }
        );
        assert_eq!(parse("Bytes = 1-1", 100), Want::Part { start: 1, end: 1 });
        assert_eq!(
            parse("bytes=0-99999999999999999999999", 100),
            Want::Part { start: 0, end: 99 }
        );
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse("bytes=100-", 100), Want::Unsatisfiable);
        assert_eq!(parse("bytes=100-200", 100), Want::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Want::Unsatisfiable);
        assert_eq!(
            parse("bytes=99999999999999999999999-", 100),
            Want::Unsatisfiable
        );
        for ignored in [
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=5-1",
            "bytes=+1-2",
            "bytes=a-b",
            "bytes=-",
            "bytes",
            "",
        ] {
            assert_eq!(parse(ignored, 100), Want::Whole, "{ignored}");
        }
    }

    #[test]
    fn if_range_needs_the_exact_tag() {
        let tag = "\"abc\"";
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=1-2"));
        assert_eq!(want(&h, 10, tag), Want::Part { start: 1, end: 2 });
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"abc\""));
        assert_eq!(want(&h, 10, tag), Want::Part { start: 1, end: 2 });
        for other in ["\"abd\"", "W/\"abc\"", "Tue, 01 Dec 2026 10:00:00 GMT"] {
            h.insert(header::IF_RANGE, HeaderValue::from_static(other));
            assert_eq!(want(&h, 10, tag), Want::Whole, "{other}");
        }
        assert_eq!(want(&HeaderMap::new(), 10, tag), Want::Whole);
    }

    #[test]
    fn pieces_cover_exactly_the_range() {
        let chunks = vec![
            ("a".to_string(), 4),
            ("b".to_string(), 4),
            ("c".to_string(), 2),
        ];
        let p = |s: &str, skip, take| Piece {
            sha256: s.into(),
            skip,
            take,
        };
        assert_eq!(
            pieces(&chunks, 0, 9),
            Some(vec![p("a", 0, 4), p("b", 0, 4), p("c", 0, 2)])
        );
        assert_eq!(pieces(&chunks, 5, 6), Some(vec![p("b", 1, 2)]));
        assert_eq!(
            pieces(&chunks, 3, 8),
            Some(vec![p("a", 3, 1), p("b", 0, 4), p("c", 0, 1)])
        );
        assert_eq!(pieces(&chunks, 9, 9), Some(vec![p("c", 1, 1)]));
        assert_eq!(pieces(&chunks, 4, 7), Some(vec![p("b", 0, 4)]));
        assert_eq!(pieces(&chunks, 5, 10), None);
    }
}
