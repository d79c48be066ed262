//! The node-local full-text index of chat messages (tantivy), its feeder and its query side.
//!
//! Why a crate of its own: the index is derived data that every node builds for itself from
//! its applied state; it is never replicated, never in the Raft log and never in a snapshot.
//! Keeping it out of `cluster` keeps the replicated core free of a search engine (and its
//! compile time), and lets `web` (the route) and the benchmark use it without the rest of a
//! node.
//!
//! What it owns: the index directory (`<data_dir>/search`, or RAM in tests), its schema, the
//! feeder task that follows the applied-event bus and reconciles with the state machine, and
//! the query/snippet logic. The index holds ids and filter fields only (channel, seq, author,
//! timestamp and the tokenised body, not the text itself): every hit is looked up in the state
//! machine by the caller, so an edit or a deletion can never show stale text, even in a race
//! with the feeder.
//!
//! What it must never do: decide who may read what (the caller passes the channels the user
//! can read and re-checks every hit), write to the Raft log, or block `apply` (it only reads
//! the state and subscribes to the event bus; a lagging subscriber reconciles instead).

mod feeder;
mod index;
mod query;
mod snippet;
mod source;

pub use feeder::{Feeder, FeederOptions};
pub use index::{IndexDoc, IndexStats, SearchIndex};
pub use query::{Cursor, Hit, HitPage, ParsedQuery, SearchRequest};
pub use snippet::{Snippet, snippet};
pub use source::Source;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("index directory: {0}")]
    Dir(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("state: {0}")]
    State(#[from] cluster::StateError),
    /// The user's query cannot be searched (empty, too long, too many terms, bad cursor).
    #[error("{0}")]
    BadQuery(String),
    /// The index on disk was written by another schema version (or never committed).
    #[error("index of another schema ({0:?})")]
    OtherSchema(String),
    #[error("the index writer is gone (node shutting down)")]
    Closed,
}
