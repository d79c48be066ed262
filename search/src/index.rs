//! The tantivy index itself: schema, opening (or rebuilding when missing, corrupt or of another
//! schema), writes (upsert and delete of message documents, per-channel cursors) and commits.
//!
//! Owns the on-disk layout of `<data_dir>/search`. Two kinds of documents live in it: one per
//! live message (`kind = msg`), and one per channel (`kind = cursor`) holding the channel's
//! event sequence the index covers, committed atomically with the messages it covers, so a
//! restart resumes exactly where the last commit ended. Must never store message text (only
//! its tokens): answers are always rendered from the state machine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tantivy::collector::DocSetCollector;
use tantivy::query::TermQuery;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

use crate::SearchError;

/// Bumped whenever the schema or the tokenizer changes: an index written with another value
/// is thrown away and rebuilt from the state machine.
const SCHEMA_TAG: &str = "conclave-search-1";
/// The tokenizer's registered name.
pub(crate) const TOKENIZER: &str = "conclave";
/// Tokens longer than this (bytes) are dropped: hashes, base64, URLs glued together.
const MAX_TOKEN: usize = 40;
/// Indexing memory of the single writer thread. It is all taken in one burst when a node
/// rebuilds its index (after installing a snapshot, or on a new or damaged index), so it counts
/// fully against issue 14's bound on a catch-up's memory growth: 64 MiB made the end of a 190 MB
/// install jump by 44 MiB, 24 MiB by 26 MiB. Indexing speed is unchanged within the noise
/// (`search-bench`, 1 M messages: 16,946 msgs/s at 24 MiB, load 4.3; 18,397 at 64 MiB, load
/// 5-7). tantivy's minimum is 15 MB.
const WRITER_HEAP: usize = 24 * 1024 * 1024;

/// The one analyzer of message bodies and queries: split on anything that is not a letter or
/// digit (Unicode), drop over-long tokens, lower-case. No stemming, no stop words: a chat
/// search must find "is" and "it" inside a quoted phrase, and stemmers are per language.
pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN))
        .filter(LowerCaser)
        .build()
}

#[derive(Clone, Copy)]
pub(crate) struct Fields {
    /// `m/<channel>/<seq>` or `c/<channel>`: the unique term a document is replaced by.
    pub key: Field,
    /// `msg` or `cursor`.
    pub kind: Field,
    pub channel: Field,
    pub seq: Field,
    pub ts: Field,
    /// FNV-1a of the channel name: the middle of the sort key (ts, channel, seq).
    pub chan_h: Field,
    pub author: Field,
    pub body: Field,
    /// Cursor documents: the channel event sequence covered.
    pub ev: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let body_opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        key: b.add_text_field("key", STRING),
        kind: b.add_text_field("kind", STRING),
        channel: b.add_text_field("channel", STRING | STORED),
        seq: b.add_u64_field("seq", STORED | FAST),
        ts: b.add_u64_field("ts", INDEXED | FAST),
        chan_h: b.add_u64_field("chan_h", FAST),
        author: b.add_text_field("author", STRING),
        body: b.add_text_field("body", body_opts),
        ev: b.add_u64_field("ev", STORED),
    };
    (b.build(), fields)
}

/// A stable 64-bit hash of a channel name (FNV-1a), identical on every node and build.
pub(crate) fn channel_hash(channel: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn msg_key(channel: &str, seq: u64) -> String {
    format!("m/{channel}/{seq}")
}

fn cursor_key(channel: &str) -> String {
    format!("c/{channel}")
}

/// One message as the index sees it.
#[derive(Debug, Clone)]
pub struct IndexDoc {
    pub channel: String,
    pub seq: u64,
    pub author: String,
    pub ts_ms: u64,
    pub body: String,
}

/// Numbers for logs, metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexStats {
    /// Message documents visible to searches (after the last commit).
    pub messages: u64,
    pub segments: usize,
}

/// The node's search index. Cheap to share (`Arc`); searches run concurrently with the
/// feeder's writes and see the last committed state.
pub struct SearchIndex {
    pub(crate) reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    pub(crate) fields: Fields,
    dir: Option<PathBuf>,
}

impl SearchIndex {
    /// An index in RAM (tests, `conclave dev` without a data dir): rebuilt at every start.
    pub fn in_ram() -> Result<Self, SearchError> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        Self::finish(index, fields, None)
    }

    /// Opens the index under `dir`, or creates it. An index that cannot be opened (corrupt,
    /// half written, another schema) is moved aside and replaced by an empty one: the feeder
    /// then rebuilds it from the state machine while searches answer from what it has so far.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        match Self::try_open(dir) {
            Ok(ix) => Ok(ix),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "search index unusable; rebuilding it from the state machine");
                let aside = dir.with_extension(format!(
                    "discarded-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                ));
                if dir.exists() {
                    // Keep nothing of it: the index is derived data.
                    if std::fs::rename(dir, &aside).is_ok() {
                        let _ = std::fs::remove_dir_all(&aside);
                    } else {
                        std::fs::remove_dir_all(dir)?;
                    }
                }
                std::fs::create_dir_all(dir)?;
                let (schema, fields) = schema();
                let index = Index::create_in_dir(dir, schema)?;
                Self::finish(index, fields, Some(dir.to_path_buf()))
            }
        }
    }

    fn try_open(dir: &Path) -> Result<Self, SearchError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(dir)?;
        let index =
            if Index::exists(&mmap).map_err(|e| SearchError::Io(std::io::Error::other(e)))? {
                let index = Index::open(mmap)?;
                let payload = index.load_metas()?.payload.unwrap_or_default();
                if index.schema() != schema || payload != SCHEMA_TAG {
                    return Err(SearchError::OtherSchema(payload));
                }
                index
            } else {
                Index::create(mmap, schema, tantivy::IndexSettings::default())?
            };
        Self::finish(index, fields, Some(dir.to_path_buf()))
    }

    fn finish(index: Index, fields: Fields, dir: Option<PathBuf>) -> Result<Self, SearchError> {
        index.tokenizers().register(TOKENIZER, analyzer());
        let writer: IndexWriter = index.writer_with_num_threads(1, WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            reader,
            writer: Mutex::new(Some(writer)),
            fields,
            dir,
        })
    }

    /// Where the index lives (`None`: RAM).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn writer(&self) -> MutexGuard<'_, Option<IndexWriter>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter, &Fields) -> Result<T, SearchError>,
    ) -> Result<T, SearchError> {
        let mut g = self.writer();
        let w = g.as_mut().ok_or(SearchError::Closed)?;
        f(w, &self.fields)
    }

    /// Replaces (or adds) the document of one message.
    pub fn upsert(&self, d: &IndexDoc) -> Result<(), SearchError> {
        self.with_writer(|w, f| {
            w.delete_term(Term::from_field_text(f.key, &msg_key(&d.channel, d.seq)));
            w.add_document(doc!(
                f.key => msg_key(&d.channel, d.seq),
                f.kind => "msg",
                f.channel => d.channel.as_str(),
                f.seq => d.seq,
                f.ts => d.ts_ms,
                f.chan_h => channel_hash(&d.channel),
                f.author => d.author.as_str(),
                f.body => d.body.as_str(),
            ))?;
            Ok(())
        })
    }

    /// Adds documents known to be new (a rebuild of an empty index, the benchmark): no delete
    /// before each add.
    pub fn add_new(&self, docs: &[IndexDoc]) -> Result<(), SearchError> {
        self.with_writer(|w, f| {
            for d in docs {
                w.add_document(doc!(
                    f.key => msg_key(&d.channel, d.seq),
                    f.kind => "msg",
                    f.channel => d.channel.as_str(),
                    f.seq => d.seq,
                    f.ts => d.ts_ms,
                    f.chan_h => channel_hash(&d.channel),
                    f.author => d.author.as_str(),
                    f.body => d.body.as_str(),
                ))?;
            }
            Ok(())
        })
    }

    /// Removes one message's document (deleted message).
    pub fn remove(&self, channel: &str, seq: u64) -> Result<(), SearchError> {
        self.with_writer(|w, f| {
            w.delete_term(Term::from_field_text(f.key, &msg_key(channel, seq)));
            Ok(())
        })
    }

    /// Removes every document of a channel, its cursor included.
    pub fn remove_channel(&self, channel: &str) -> Result<(), SearchError> {
        self.with_writer(|w, f| {
            w.delete_term(Term::from_field_text(f.channel, channel));
            Ok(())
        })
    }

    /// Records that the index covers `channel`'s events up to `ev` (visible at the next commit,
    /// together with the documents written before it).
    pub(crate) fn set_cursor(&self, channel: &str, ev: u64) -> Result<(), SearchError> {
        self.with_writer(|w, f| {
            w.delete_term(Term::from_field_text(f.key, &cursor_key(channel)));
            w.add_document(doc!(
                f.key => cursor_key(channel),
                f.kind => "cursor",
                f.channel => channel,
                f.ev => ev,
            ))?;
            Ok(())
        })
    }

    /// Makes everything written so far durable and visible to searches.
    pub fn commit(&self) -> Result<(), SearchError> {
        self.with_writer(|w, _| {
            let mut p = w.prepare_commit()?;
            p.set_payload(SCHEMA_TAG);
            p.commit()?;
            Ok(())
        })?;
        self.reader.reload()?;
        Ok(())
    }

    /// The per-channel event cursors of the last commit.
    pub(crate) fn cursors(&self) -> Result<HashMap<String, u64>, SearchError> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.fields.kind, "cursor"),
            IndexRecordOption::Basic,
        );
        let mut out = HashMap::new();
        for addr in searcher.search(&q, &DocSetCollector)? {
            let d: TantivyDocument = searcher.doc(addr)?;
            let channel = d.get_first(self.fields.channel).and_then(|v| v.as_str());
            let ev = d.get_first(self.fields.ev).and_then(|v| v.as_u64());
            if let (Some(c), Some(ev)) = (channel, ev) {
                out.insert(c.to_owned(), ev);
            }
        }
        Ok(out)
    }

    pub fn stats(&self) -> IndexStats {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.fields.kind, "msg"),
            IndexRecordOption::Basic,
        );
        let messages = searcher.search(&q, &tantivy::collector::Count).unwrap_or(0) as u64;
        IndexStats {
            messages,
            segments: searcher.segment_readers().len(),
        }
    }

    /// Stops the writer (waits for its merges). Later writes fail with [`SearchError::Closed`].
    pub fn close(&self) {
        if let Some(w) = self.writer().take()
            && let Err(e) = w.wait_merging_threads()
        {
            tracing::warn!(error = %e, "search index merges did not finish cleanly");
        }
    }
}
