//! The query side: parsing what a user typed, and running it against the index with the
//! caller's filters, newest first, one page at a time.
//!
//! Owns the query syntax (words all required, `"quoted phrases"`), the sort order (timestamp,
//! then channel, then sequence, newest first) and the paging cursor. Must never decide access:
//! the caller passes the channels it may search and re-checks every hit.

use std::ops::Bound;

use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocId, SegmentReader, TantivyDocument, Term};

use crate::SearchError;
use crate::index::{SearchIndex, analyzer};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 512;
/// Most words (phrase words included) in one query.
pub const MAX_QUERY_WORDS: usize = 16;

/// A user's query, tokenised with the index's own analyzer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedQuery {
    /// Each entry is required: one word, or the words of a quoted phrase in order.
    pub(crate) groups: Vec<Vec<String>>,
}

impl ParsedQuery {
    /// Parses `q`: words separated by anything that is not a letter or digit, all required;
    /// `"..."` for a phrase. Errors are [`SearchError::BadQuery`] with a message for the user.
    pub fn parse(q: &str) -> Result<Self, SearchError> {
        if q.len() > MAX_QUERY_BYTES {
            return Err(SearchError::BadQuery(format!(
                "the query is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        let mut a = analyzer();
        let mut groups = Vec::new();
        // Odd-numbered pieces between quotes are phrases; an unbalanced quote ends at the end.
        for (i, piece) in q.split('"').enumerate() {
            let mut words = Vec::new();
            let mut ts = a.token_stream(piece);
            while ts.advance() {
                words.push(ts.token().text.clone());
            }
            if i % 2 == 1 {
                if !words.is_empty() {
                    groups.push(words);
                }
            } else {
                groups.extend(words.into_iter().map(|w| vec![w]));
            }
        }
        groups.dedup();
        let n: usize = groups.iter().map(Vec::len).sum();
        if n == 0 {
            return Err(SearchError::BadQuery(
                "the query has no words to search for (letters or digits)".into(),
            ));
        }
        if n > MAX_QUERY_WORDS {
            return Err(SearchError::BadQuery(format!(
                "the query has more than {MAX_QUERY_WORDS} words"
            )));
        }
        Ok(Self { groups })
    }

    /// Every word of the query (for highlighting).
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flatten().map(String::as_str)
    }
}

/// Where a page ended: the sort key of its last hit. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    ts: u64,
    chan_h: u64,
    seq: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{:x}.{:x}.{:x}", self.ts, self.chan_h, self.seq)
    }

    pub fn decode(s: &str) -> Result<Self, SearchError> {
        let bad = || SearchError::BadQuery("the cursor is not one this server gave out".into());
        let mut it = s.split('.');
        let mut next = || {
            it.next()
                .filter(|p| !p.is_empty() && p.len() <= 16)
                .and_then(|p| u64::from_str_radix(p, 16).ok())
                .ok_or_else(bad)
        };
        let c = Self {
            ts: next()?,
            chan_h: next()?,
            seq: next()?,
        };
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(c)
    }

    fn key(&self) -> (u64, u64, u64) {
        (self.ts, self.chan_h, self.seq)
    }
}

/// One search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: ParsedQuery,
    /// The channels to search: those the caller may read (and, with a `channel` filter, only
    /// that one). Empty: nothing is found.
    pub channels: Vec<String>,
    /// Only messages by this author.
    pub author: Option<String>,
    /// Only messages strictly after this time (ms).
    pub after_ms: Option<u64>,
    /// Only messages strictly before this time (ms).
    pub before_ms: Option<u64>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

/// A matching message, by id: the caller reads its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub channel: String,
    pub seq: u64,
    /// Where a page ending at this hit continues.
    pub cursor: Cursor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitPage {
    /// Newest first.
    pub hits: Vec<Hit>,
    /// Set when more hits follow.
    pub next: Option<Cursor>,
}

type SortKey = Option<(u64, u64, u64)>;

impl SearchIndex {
    fn build_query(&self, req: &SearchRequest) -> Box<dyn Query> {
        let f = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for g in &req.query.groups {
            let terms: Vec<Term> = g.iter().map(|w| Term::from_field_text(f.body, w)).collect();
            let q: Box<dyn Query> = match terms.as_slice() {
                [one] => Box::new(TermQuery::new(one.clone(), IndexRecordOption::WithFreqs)),
                _ => Box::new(PhraseQuery::new(terms)),
            };
            clauses.push((Occur::Must, q));
        }
        clauses.push((
            Occur::Must,
            Box::new(TermSetQuery::new(
                req.channels
                    .iter()
                    .map(|c| Term::from_field_text(f.channel, c)),
            )),
        ));
        if let Some(a) = &req.author {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.author, a),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        let lower = req.after_ms.map_or(Bound::Unbounded, |a| {
            Bound::Excluded(Term::from_field_u64(f.ts, a))
        });
        let mut upper = req.before_ms.map_or(Bound::Unbounded, |b| {
            Bound::Excluded(Term::from_field_u64(f.ts, b))
        });
        if let Some(c) = req.cursor {
            let tighter = match req.before_ms {
                Some(b) => c.ts < b,
                None => true,
            };
            if tighter {
                upper = Bound::Included(Term::from_field_u64(f.ts, c.ts));
            }
        }
        if !matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    /// Runs one search on the last committed state of the index.
    pub fn search(&self, req: &SearchRequest) -> Result<HitPage, SearchError> {
        let limit = req.limit.clamp(1, 1000);
        if req.channels.is_empty() {
            return Ok(HitPage {
                hits: Vec::new(),
                next: None,
            });
        }
        let query = self.build_query(req);
        let cursor = req.cursor.map(|c| c.key());
        // Newest first by (ts, channel, seq): unique per message, so a cursor resumes exactly
        // after the last hit even when many messages share a millisecond. Hits at or above the
        // cursor get `None`, which sorts below every real key and is dropped.
        let by_key = move |seg: &SegmentReader| {
            let ff = seg.fast_fields();
            let cols = (ff.u64("ts").ok(), ff.u64("chan_h").ok(), ff.u64("seq").ok());
            move |doc: DocId| -> SortKey {
                let (Some(ts), Some(ch), Some(seq)) = (&cols.0, &cols.1, &cols.2) else {
                    return None;
                };
                let k = (ts.first(doc)?, ch.first(doc)?, seq.first(doc)?);
                match cursor {
                    Some(c) if k >= c => None,
                    _ => Some(k),
                }
            }
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(&*query, &TopDocs::with_limit(limit + 1).order_by(by_key))?;
        let mut hits = Vec::new();
        let mut more = false;
        for (key, addr) in top {
            let Some((ts, chan_h, seq)) = key else {
                continue;
            };
            if hits.len() == limit {
                more = true;
                break;
            }
            let d: TantivyDocument = searcher.doc(addr)?;
            let Some(channel) = d.get_first(self.fields.channel).and_then(|v| v.as_str()) else {
                continue;
            };
            hits.push(Hit {
                channel: channel.to_owned(),
                seq,
                cursor: Cursor { ts, chan_h, seq },
            });
        }
        let next = if more {
            hits.last().map(|h| h.cursor)
        } else {
            None
        };
        Ok(HitPage { hits, next })
    }
}
