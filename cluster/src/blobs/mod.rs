//! The node-local blob store of file attachments and how blobs move between nodes.
//!
//! Blobs are content-addressed chunks of uploaded files (and their thumbnails), stored outside
//! the Raft log under `<data_dir>/blobs/`. `store` owns the on-disk layout and durable writes;
//! `replicate` pushes a new chunk to the other voters and counts durable copies (a chunk is
//! acknowledged to a client only once a majority of voters has it on disk); `fetch` gets a
//! missing blob from a peer and runs the background fetcher that makes every node hold the
//! blobs of every live file; `gc` removes blobs no live file references once the grace period
//! has passed. Which blobs are live is replicated state (`state::files`), so every node reaches
//! the same verdict. Must never trust a peer's bytes without checking their hash, and never put
//! blob bytes into the Raft log.

pub mod fetch;
pub mod gc;
pub mod replicate;
pub mod store;

pub use store::{BlobError, BlobStore, CHUNK_MAX, is_sha256_hex, sha256_hex};
