//! Pure inspection of an uploaded file's bytes on this node's disk: image thumbnails
//! ([`thumbnail::make_thumbnail`]) and malware scanning through a local ClamAV daemon
//! ([`clamd::scan_file`]).
//!
//! Owns the decode limits that keep a hostile image (a decompression bomb) from exhausting
//! memory, and the client side of clamd's `INSTREAM` protocol. Must never touch the cluster,
//! the Raft log or the blob store (the caller decides what a verdict or a thumbnail means and
//! where it is stored), never trust a client-declared type (the caller passes the sniffed one),
//! and never block the async runtime with a decode: callers run `make_thumbnail` on a blocking
//! thread.

pub mod clamd;
pub mod thumbnail;

pub use clamd::{ScanVerdict, scan_file};
pub use thumbnail::{
    MAX_DECODE_ALLOC, MAX_DIMENSION, THUMBNAIL_MAX_SIDE, Thumbnail, make_thumbnail,
};

/// Why a file could not be inspected. One enum for this layer: the files route maps each
/// variant to its HTTP answer (a refused image is simply left without a thumbnail; a scanner
/// error is `503 scanner_unavailable` in block mode).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading the file to inspect failed.
    #[error("read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The image declares more pixels, or needs more memory to decode, than the limits allow
    /// (a decompression bomb or simply a huge picture): refused before allocating.
    #[error("image refused by the decode limits: {0}")]
    ImageTooLarge(String),
    /// The image's bytes are not a valid image of its type.
    #[error("image could not be decoded: {0}")]
    ImageDecode(String),
    /// Encoding the thumbnail failed.
    #[error("thumbnail could not be encoded: {0}")]
    ThumbnailEncode(String),
    /// The clamd socket could not be reached (absent, refused, or no answer in time).
    #[error("malware scanner unavailable at {socket}: {reason}")]
    ScannerUnavailable {
        socket: std::path::PathBuf,
        reason: String,
    },
    /// clamd refused the stream as longer than its `StreamMaxLength`.
    #[error("the file is larger than the malware scanner accepts (clamd StreamMaxLength)")]
    ScanSizeLimit,
    /// clamd answered something this client does not understand, or reported an error.
    #[error("malware scanner error: {0}")]
    ScannerProtocol(String),
    /// This platform has no Unix sockets, so clamd cannot be reached.
    #[error("malware scanner unsupported on this platform (clamd needs a Unix socket)")]
    ScannerUnsupported,
}
