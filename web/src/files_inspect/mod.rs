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
//!
//! How the files route uses it (the policy lives there; `[files] scan` is off / scan / block):
//!
//! ```ignore
//! if s.config.files.scan != ScanMode::Off {
//!     match files_inspect::scan_file(&s.config.files.clamd_socket, path).await {
//!         Ok(ScanVerdict::Clean) => {}
//!         Ok(ScanVerdict::Infected(name)) => return Err(FileApiError::MalwareDetected(name).into()),
//!         Err(e) if s.config.files.scan == ScanMode::Block => {
//!             return Err(FileApiError::ScannerUnavailable(e.to_string()).into())
//!         }
//!         Err(e) => tracing::warn!(error = %e, "malware scan skipped: scanner unavailable"),
//!     }
//! }
//! let (p, m) = (path.to_owned(), mime.to_owned());
//! match tokio::task::spawn_blocking(move || files_inspect::make_thumbnail(&p, &m)).await {
//!     Ok(Ok(Some(t))) => { /* store t.bytes (t.mime) as a blob; t.width, t.height */ }
//!     Ok(Ok(None)) => {} // not one of the four image types
//!     Ok(Err(e)) => tracing::info!(error = %e, "no thumbnail for this image"),
//!     Err(e) => tracing::warn!(error = %e, "thumbnail task failed"),
//! }
//! ```

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
