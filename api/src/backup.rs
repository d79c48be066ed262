//! The backup's framing, written once for both ends: the body of `GET /api/v1/admin/backup`
//! (`web` writes it) and the plaintext inside an encrypted backup file (`ops::backup_file`
//! reads and writes it).
//!
//! ```text
//! server body:  u32 LE manifest_len | manifest JSON | u32 LE secrets_len | secrets JSON
//!               | state stream | blob section (manifest format 2 and later)
//! blob section: per blob: tag u8 = 1 | sha256 (32, raw) | len u64 LE | len bytes
//!               end:      tag u8 = 0 | count u64 LE | total bytes u64 LE
//! backup file:  age( "CONCLAVE-BACKUP\n" | server body )
//! ```
//! The state stream is [`crate::snapshot_stream`]'s format. The blob section carries the
//! content of every blob a live file of that state references, in ascending sha256 order (so a
//! blob appears once, and a reader can refuse a repeated one). Owns the [`Manifest`] and
//! [`Secrets`] shapes, the length-prefixed frames around them and the blob section's framing
//! ([`BlobSectionReader`]); must never hold the state stream itself nor more than one blob,
//! and never show a secret in `Debug` output.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// First bytes of a backup's plaintext (inside the encryption).
pub const MAGIC: &[u8; 16] = b"CONCLAVE-BACKUP\n";
/// [`Manifest::format`] this code writes. Format 2 added the blob section (and
/// [`Manifest::blobs`]); format 1 backups, which end with the state stream, are still read.
pub const MANIFEST_FORMAT: u16 = 2;
/// The oldest [`Manifest::format`] this code reads.
pub const OLDEST_MANIFEST_FORMAT: u16 = 1;
/// Largest blob the blob section may carry: a file chunk (`files.chunk_max`, at most 8 MiB)
/// or a thumbnail (far smaller). A larger length means damage, not something to allocate.
pub const MAX_BLOB: u64 = 8 * 1024 * 1024;
/// Length of a blob entry's header: tag (1) | sha256 (32) | len (8).
pub const BLOB_HEADER_LEN: usize = 41;
/// Length of the blob section's end record: tag (1) | count (8) | bytes (8).
pub const BLOB_END_LEN: usize = 17;

const BLOB_TAG_END: u8 = 0;
const BLOB_TAG_BLOB: u8 = 1;

/// Whether a backup of manifest `format` has a blob section after its state stream.
pub fn has_blob_section(format: u16) -> bool {
    format >= 2
}
/// Largest manifest or secrets frame a reader accepts: both are a few hundred bytes, so a
/// bigger length means a damaged or foreign input, not something to allocate for.
pub const MAX_FRAME: u32 = 1024 * 1024;

/// What a backup holds, written before the state so a reader knows it without decoding the
/// state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u16,
    /// When the serving node started the backup (Unix milliseconds, its clock).
    pub created_at_ms: u64,
    /// The workspace name (`chat.corp.lan`); empty on a node configured without one.
    pub workspace: String,
    /// Raft index and term of the last entry the state includes: every write acknowledged
    /// with an index at or below `index` is in the backup.
    pub index: u64,
    pub term: u64,
    /// The root CA's fingerprint (`AB:CD:..`); empty when the cluster has no CA.
    pub root_fingerprint: String,
    /// The node that served the backup.
    pub served_by: u64,
    /// That node's release (`conclave --version`).
    pub conclave_version: String,
    /// Whether login sessions are in the state (`?sessions=true`); without them every user
    /// logs in again after a restore.
    pub includes_sessions: bool,
    /// The state stream exactly as it follows the frames.
    pub state: StateDigest,
    /// The blob section after the state stream (format 2 and later; zero in a format 1
    /// backup, which has none).
    #[serde(default)]
    pub blobs: BlobsDigest,
}

/// The blob section: how many blobs, and their content's total length (headers not counted).
/// Both are also in the section's end record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobsDigest {
    pub count: u64,
    pub bytes: u64,
}

/// The state stream that follows the frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    /// Length of the whole stream, header to end record.
    pub bytes: u64,
    /// Records in it (the count in its end record).
    pub records: u64,
    /// The stream's own checksum (the sha256 in its end record), lowercase hex.
    pub sha256: String,
}

/// Secrets a restore needs besides the state. Never `Debug`-printed in full.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// The KEK file's text (`conclave-kek-v1 ...`), which opens the CA's sealed private keys in
    /// the state; `None` on a cluster without a CA, or served over plain HTTP.
    pub kek: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("kek", &self.kek.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    Io(std::io::Error),
    /// The length prefix is above [`MAX_FRAME`].
    TooLarge(u32),
    /// The frame is not the JSON it should be.
    Json(serde_json::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                f.write_str("truncated")
            }
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME}"),
            FrameError::Json(e) => write!(f, "not valid JSON: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            FrameError::Json(e) => Some(e),
            FrameError::TooLarge(_) => None,
        }
    }
}

/// The two frames as bytes (manifest, then secrets), ready to precede the state stream.
pub fn encode_frames(manifest: &Manifest, secrets: &Secrets) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    for json in [
        serde_json::to_vec(manifest).map_err(FrameError::Json)?,
        serde_json::to_vec(secrets).map_err(FrameError::Json)?,
    ] {
        let len = u32::try_from(json.len())
            .ok()
            .filter(|n| *n <= MAX_FRAME)
            .ok_or(FrameError::TooLarge(u32::MAX))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&json);
    }
    Ok(out)
}

/// Writes the two frames.
pub fn write_frames(
    mut w: impl Write,
    manifest: &Manifest,
    secrets: &Secrets,
) -> Result<(), FrameError> {
    w.write_all(&encode_frames(manifest, secrets)?)
        .map_err(FrameError::Io)
}

/// Reads one length-prefixed JSON frame.
pub fn read_frame<T: serde::de::DeserializeOwned>(mut r: impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(FrameError::Io)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).map_err(FrameError::Io)?;
    serde_json::from_slice(&buf).map_err(FrameError::Json)
}

/// The header of one blob entry of the blob section.
pub fn encode_blob_header(sha256: &[u8; 32], len: u64) -> [u8; BLOB_HEADER_LEN] {
    let mut out = [0u8; BLOB_HEADER_LEN];
    out[0] = BLOB_TAG_BLOB;
    out[1..33].copy_from_slice(sha256);
    out[33..].copy_from_slice(&len.to_le_bytes());
    out
}

/// The blob section's end record.
pub fn encode_blob_end(digest: BlobsDigest) -> [u8; BLOB_END_LEN] {
    let mut out = [0u8; BLOB_END_LEN];
    out[0] = BLOB_TAG_END;
    out[1..9].copy_from_slice(&digest.count.to_le_bytes());
    out[9..].copy_from_slice(&digest.bytes.to_le_bytes());
    out
}

/// One entry of the blob section, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobEntry {
    /// A blob of `len` bytes follows.
    Blob { sha256: [u8; 32], len: u64 },
    /// The end record.
    End(BlobsDigest),
}

impl BlobEntry {
    /// Parses an entry's header from its first byte on: `Ok(None)` while `head` is too short
    /// (the caller reads or waits for more), an error for an unknown tag or a blob over
    /// [`MAX_BLOB`]. Returns the entry and its header's length.
    pub fn parse(head: &[u8]) -> Result<Option<(BlobEntry, usize)>, BlobSectionError> {
        let Some(&tag) = head.first() else {
            return Ok(None);
        };
        let le = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        };
        match tag {
            BLOB_TAG_BLOB => {
                let Some(h) = head.get(..BLOB_HEADER_LEN) else {
                    return Ok(None);
                };
                let mut sha256 = [0u8; 32];
                sha256.copy_from_slice(&h[1..33]);
                let len = le(&h[33..]);
                if len > MAX_BLOB {
                    return Err(BlobSectionError::TooLarge(len));
                }
                Ok(Some((BlobEntry::Blob { sha256, len }, BLOB_HEADER_LEN)))
            }
            BLOB_TAG_END => {
                let Some(h) = head.get(..BLOB_END_LEN) else {
                    return Ok(None);
                };
                let digest = BlobsDigest {
                    count: le(&h[1..9]),
                    bytes: le(&h[9..]),
                };
                Ok(Some((BlobEntry::End(digest), BLOB_END_LEN)))
            }
            _ => Err(BlobSectionError::Corrupt("unknown blob entry tag")),
        }
    }
}

/// Why a blob section was refused.
#[derive(Debug)]
pub enum BlobSectionError {
    /// The underlying reader failed (other than ending early, which is `Truncated`).
    Io(std::io::Error),
    /// The input ended before the end record.
    Truncated,
    /// A blob's length is over [`MAX_BLOB`].
    TooLarge(u64),
    /// A byte that cannot be there: an unknown tag, blobs out of order or repeated.
    Corrupt(&'static str),
    /// A blob's content does not hash to the sha256 in its header (lowercase hex).
    HashMismatch { expected: String, actual: String },
    /// The end record's count or total is not what the section held.
    CountMismatch {
        said: BlobsDigest,
        held: BlobsDigest,
    },
}

impl std::fmt::Display for BlobSectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "reading the blob section failed: {e}"),
            Self::Truncated => f.write_str("the blob section is truncated"),
            Self::TooLarge(n) => write!(f, "a blob of {n} bytes exceeds {MAX_BLOB}"),
            Self::Corrupt(what) => write!(f, "the blob section is corrupt: {what}"),
            Self::HashMismatch { expected, actual } => {
                write!(
                    f,
                    "blob {expected} is damaged: its content hashes to {actual}"
                )
            }
            Self::CountMismatch { said, held } => write!(
                f,
                "the blob section's end record says {} blobs of {} bytes; it held {} of {}",
                said.count, said.bytes, held.count, held.bytes
            ),
        }
    }
}

impl std::error::Error for BlobSectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for BlobSectionError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Truncated
        } else {
            Self::Io(e)
        }
    }
}

/// Checks blob entries one after the other, whichever way their bytes arrive: each blob's
/// sha256, their strictly ascending order, and the end record against what passed. Used both
/// by [`BlobSectionReader`] and by a reader that is fed a body in arbitrary chunks.
#[derive(Debug, Default)]
pub struct BlobSectionCheck {
    held: BlobsDigest,
    last: Option<[u8; 32]>,
}

impl BlobSectionCheck {
    /// A blob header arrived: refuses one that is not after the previous one.
    pub fn begin(&mut self, sha256: &[u8; 32]) -> Result<(), BlobSectionError> {
        if self.last.is_some_and(|last| last >= *sha256) {
            return Err(BlobSectionError::Corrupt("blobs out of order or repeated"));
        }
        self.last = Some(*sha256);
        Ok(())
    }

    /// A blob's content was hashed to `actual`.
    pub fn end_blob(
        &mut self,
        sha256: &[u8; 32],
        actual: [u8; 32],
        len: u64,
    ) -> Result<(), BlobSectionError> {
        if actual != *sha256 {
            return Err(BlobSectionError::HashMismatch {
                expected: hex_lower(sha256),
                actual: hex_lower(&actual),
            });
        }
        self.held.count += 1;
        self.held.bytes += len;
        Ok(())
    }

    /// The end record arrived: what the section held, if it says the same.
    pub fn finish(&self, said: BlobsDigest) -> Result<BlobsDigest, BlobSectionError> {
        if said != self.held {
            return Err(BlobSectionError::CountMismatch {
                said,
                held: self.held,
            });
        }
        Ok(self.held)
    }
}

/// Lowercase hex, as blobs are named.
pub fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads a blob section blob by blob from a reader positioned after the state stream, holding
/// one blob at a time (at most [`MAX_BLOB`] bytes).
pub struct BlobSectionReader<R: Read> {
    r: R,
    check: BlobSectionCheck,
    done: Option<BlobsDigest>,
}

impl<R: Read> BlobSectionReader<R> {
    pub fn new(r: R) -> Self {
        Self {
            r,
            check: BlobSectionCheck::default(),
            done: None,
        }
    }

    /// The next blob's sha256 with its content in `buf` (replaced), checked against the
    /// sha256; `Ok(None)` after the end record, once its count and total matched.
    pub fn next_blob(&mut self, buf: &mut Vec<u8>) -> Result<Option<[u8; 32]>, BlobSectionError> {
        if self.done.is_some() {
            return Ok(None);
        }
        let mut head = [0u8; BLOB_HEADER_LEN];
        self.r.read_exact(&mut head[..1])?;
        let mut have = 1;
        let entry = loop {
            match BlobEntry::parse(&head[..have])? {
                Some((entry, _)) => break entry,
                None => {
                    let want = if head[0] == BLOB_TAG_END {
                        BLOB_END_LEN
                    } else {
                        BLOB_HEADER_LEN
                    };
                    self.r.read_exact(&mut head[have..want])?;
                    have = want;
                }
            }
        };
        match entry {
            BlobEntry::End(said) => {
                self.done = Some(self.check.finish(said)?);
                Ok(None)
            }
            BlobEntry::Blob { sha256, len } => {
                self.check.begin(&sha256)?;
                buf.clear();
                // Grows with what arrives, not with what the header claims.
                (&mut self.r).take(len).read_to_end(buf)?;
                if (buf.len() as u64) < len {
                    return Err(BlobSectionError::Truncated);
                }
                let actual: [u8; 32] = Sha256::digest(buf.as_slice()).into();
                self.check.end_blob(&sha256, actual, len)?;
                Ok(Some(sha256))
            }
        }
    }

    /// What the section held, once `next_blob` returned `Ok(None)`.
    pub fn summary(&self) -> Option<BlobsDigest> {
        self.done
    }

    /// The reader, positioned after the end record once the section is complete.
    pub fn into_inner(self) -> R {
        self.r
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            created_at_ms: 1,
            workspace: "chat.corp.lan".into(),
            index: 42,
            term: 3,
            root_fingerprint: "AB:CD".into(),
            served_by: 2,
            conclave_version: "0.1.0".into(),
            includes_sessions: false,
            state: StateDigest {
                bytes: 100,
                records: 4,
                sha256: "00".repeat(32),
            },
            blobs: BlobsDigest {
                count: 2,
                bytes: 11,
            },
        }
    }

    /// A blob section of `blobs` (given in any order; written ascending, as a server does).
    fn section(blobs: &[&[u8]]) -> Vec<u8> {
        let mut sorted: Vec<([u8; 32], &[u8])> = blobs
            .iter()
            .map(|b| (Sha256::digest(b).into(), *b))
            .collect();
        sorted.sort();
        let mut out = Vec::new();
        let mut digest = BlobsDigest::default();
        for (sha, b) in sorted {
            out.extend_from_slice(&encode_blob_header(&sha, b.len() as u64));
            out.extend_from_slice(b);
            digest.count += 1;
            digest.bytes += b.len() as u64;
        }
        out.extend_from_slice(&encode_blob_end(digest));
        out
    }

    fn read_section(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, BlobsDigest), BlobSectionError> {
        let mut r = BlobSectionReader::new(bytes);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(sha) = r.next_blob(&mut buf)? {
            assert_eq!(hex_lower(&sha), hex_lower(&Sha256::digest(&buf)));
            out.push(buf.clone());
        }
        let rest = r.r;
        assert!(rest.is_empty(), "the reader stops after the end record");
        Ok((out, r.done.unwrap()))
    }

    #[test]
    fn blob_section_round_trips_and_checks_everything() {
        let bytes = section(&[b"hello", b"world!", b""]);
        let (blobs, digest) = read_section(&bytes).unwrap();
        assert_eq!(blobs.len(), 3);
        assert_eq!(
            digest,
            BlobsDigest {
                count: 3,
                bytes: 11
            }
        );
        assert_eq!(
            read_section(&section(&[])).unwrap().1,
            BlobsDigest::default()
        );

        // Every truncation and every flipped byte is refused.
        for cut in 0..bytes.len() {
            assert!(read_section(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x01;
            assert!(read_section(&b).is_err(), "flip at {at}");
        }
        // A damaged blob names itself.
        let mut b = bytes.clone();
        b[BLOB_HEADER_LEN] ^= 0x20;
        let err = read_section(&b).unwrap_err();
        assert!(
            matches!(err, BlobSectionError::HashMismatch { .. }),
            "{err}"
        );
        // A repeated blob, and a length over the limit.
        let one = section(&[b"x"]);
        let mut twice = one[..one.len() - BLOB_END_LEN].repeat(2);
        twice.extend_from_slice(&encode_blob_end(BlobsDigest { count: 2, bytes: 2 }));
        assert!(matches!(
            read_section(&twice),
            Err(BlobSectionError::Corrupt(_))
        ));
        let huge = encode_blob_header(&[0; 32], MAX_BLOB + 1);
        assert!(matches!(
            read_section(&huge),
            Err(BlobSectionError::TooLarge(_))
        ));
    }

    #[test]
    fn a_format_1_manifest_reads_with_no_blobs() {
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["format"] = 1.into();
        v.as_object_mut().unwrap().remove("blobs");
        let m: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(m.blobs, BlobsDigest::default());
        assert!(!has_blob_section(m.format) && has_blob_section(MANIFEST_FORMAT));
    }

    #[test]
    fn frames_round_trip_and_bound_their_length() {
        let secrets = Secrets {
            kek: Some("conclave-kek-v1 secret".into()),
        };
        let bytes = encode_frames(&manifest(), &secrets).unwrap();
        let mut r = bytes.as_slice();
        assert_eq!(read_frame::<Manifest>(&mut r).unwrap(), manifest());
        assert_eq!(read_frame::<Secrets>(&mut r).unwrap(), secrets);
        assert!(r.is_empty());
        assert!(!format!("{secrets:?}").contains("secret"));

        let huge = (MAX_FRAME + 1).to_le_bytes();
        assert!(matches!(
            read_frame::<Manifest>(huge.as_slice()),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame::<Manifest>(&bytes[..10]),
            Err(FrameError::Io(_))
        ));
    }
}
