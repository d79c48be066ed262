//! The one byte format of a state stream: the on-disk `snapshot.bin`, what a leader sends a
//! follower, and the state inside a backup (docs/architecture.md, "Snapshots").
//!
//! ```text
//! "CNCLSNAP" (8) | format u16 LE = 2 | meta_len u32 LE | meta
//! records:     tag u8 = 1 | key_len u32 LE | key | value_len u32 LE | value
//! end record:  tag u8 = 0 | records u64 LE | sha256 (32) over every byte before this tag
//! ```
//!
//! Owns the encoding and its checks. Both ends work record by record, so memory stays bounded
//! by the largest record whatever the stream's size. The reader checks every length against a
//! limit before allocating (corrupt input must not make it allocate wildly), and only reports
//! the end (`Ok(None)`) after the record count and the digest matched: a caller that applies
//! records as they come must therefore be ready to throw them away until then (or `verify`
//! first). Must never interpret the meta (the cluster puts its own encoding there) nor do I/O
//! beyond the `Read`/`Write` it is handed.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// The first 8 bytes of every stream.
pub const MAGIC: &[u8; 8] = b"CNCLSNAP";
/// The format this code writes and reads (format 1 was the previous release's framed bincode
/// snapshot, which is not a stream; the cluster crate still reads it).
pub const FORMAT: u16 = 2;
/// Largest meta the reader accepts.
pub const MAX_META: usize = 1 << 20;
/// Largest key the reader accepts (and the writer refuses to write).
pub const MAX_KEY: usize = 64 << 10;
/// Largest value the reader accepts (and the writer refuses to write).
pub const MAX_VALUE: usize = 256 << 20;

/// One record: a key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

const TAG_END: u8 = 0;
const TAG_RECORD: u8 = 1;

/// What a complete stream holds: its record count, its total length in bytes (end record
/// included) and the digest its end record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// Why a stream was refused.
#[derive(Debug)]
pub enum StreamError {
    /// The underlying reader failed (other than ending early, which is `Truncated`).
    Io(io::Error),
    /// The first 8 bytes are not [`MAGIC`].
    BadMagic,
    /// A format this code does not read.
    UnsupportedFormat(u16),
    /// A length over its limit; names the field.
    TooLarge(&'static str),
    /// The input ended before the end record was complete.
    Truncated,
    /// A byte that cannot be there (an unknown tag); names what.
    Corrupt(&'static str),
    /// The end record's digest is not the digest of the bytes read.
    ChecksumMismatch,
    /// The end record's count is not the number of records read.
    CountMismatch,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "reading the state stream failed: {e}"),
            Self::BadMagic => f.write_str("not a Conclave state stream (bad magic)"),
            Self::UnsupportedFormat(v) => write!(f, "unsupported state stream format {v}"),
            Self::TooLarge(what) => write!(f, "state stream {what} is over its limit"),
            Self::Truncated => f.write_str("state stream is truncated"),
            Self::Corrupt(what) => write!(f, "state stream is corrupt: {what}"),
            Self::ChecksumMismatch => f.write_str("state stream checksum mismatch"),
            Self::CountMismatch => f.write_str("state stream record count mismatch"),
        }
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Truncated
        } else {
            Self::Io(e)
        }
    }
}

/// Writes a stream. Give it a buffered writer: it issues one small write per field.
pub struct StreamWriter<W: Write> {
    w: W,
    hash: Sha256,
    records: u64,
    bytes: u64,
}

impl<W: Write> StreamWriter<W> {
    /// Writes the header.
    pub fn new(w: W, meta: &[u8]) -> io::Result<Self> {
        if meta.len() > MAX_META {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "state stream meta over its limit",
            ));
        }
        let mut s = Self {
            w,
            hash: Sha256::new(),
            records: 0,
            bytes: 0,
        };
        s.put(MAGIC)?;
        s.put(&FORMAT.to_le_bytes())?;
        s.put(&(meta.len() as u32).to_le_bytes())?;
        s.put(meta)?;
        Ok(s)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.hash.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    /// Appends one record. Keys and values over the reader's limits are refused here, so a
    /// writer never produces a stream its reader would reject.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "state stream record over its limit",
            ));
        }
        self.put(&[TAG_RECORD])?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end record and flushes; returns the writer and what the stream holds.
    pub fn finish(mut self) -> io::Result<(W, Summary)> {
        let sha256: [u8; 32] = self.hash.clone().finalize().into();
        self.w.write_all(&[TAG_END])?;
        self.w.write_all(&self.records.to_le_bytes())?;
        self.w.write_all(&sha256)?;
        self.w.flush()?;
        let summary = Summary {
            records: self.records,
            bytes: self.bytes + 1 + 8 + 32,
            sha256,
        };
        Ok((self.w, summary))
    }
}

/// Reads a stream record by record, checking as it goes. Give it a buffered reader.
pub struct StreamReader<R: Read> {
    r: R,
    meta: Vec<u8>,
    hash: Sha256,
    records: u64,
    bytes: u64,
    done: Option<Summary>,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the header.
    pub fn new(r: R) -> Result<Self, StreamError> {
        let mut s = Self {
            r,
            meta: Vec::new(),
            hash: Sha256::new(),
            records: 0,
            bytes: 0,
            done: None,
        };
        let mut magic = [0u8; 8];
        s.take_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(StreamError::BadMagic);
        }
        let format = u16::from_le_bytes(s.array()?);
        if format != FORMAT {
            return Err(StreamError::UnsupportedFormat(format));
        }
        s.meta = s.sized(MAX_META, "meta")?;
        Ok(s)
    }

    /// The meta bytes of the header.
    pub fn meta(&self) -> &[u8] {
        &self.meta
    }

    fn take_exact(&mut self, buf: &mut [u8]) -> Result<(), StreamError> {
        self.r.read_exact(buf)?;
        self.hash.update(&*buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StreamError> {
        let mut b = [0u8; N];
        self.take_exact(&mut b)?;
        Ok(b)
    }

    /// A u32 length then that many bytes. The buffer grows with what actually arrives (not
    /// with what the length claims), so a corrupt length on a short input costs nothing.
    fn sized(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>, StreamError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        if len > max {
            return Err(StreamError::TooLarge(what));
        }
        let mut buf = Vec::with_capacity(len.min(64 << 10));
        let got = (&mut self.r).take(len as u64).read_to_end(&mut buf)?;
        if got != len {
            return Err(StreamError::Truncated);
        }
        self.hash.update(&buf);
        self.bytes += len as u64;
        Ok(buf)
    }

    /// The next record; `Ok(None)` once the end record was read and its count and digest
    /// matched (and on every call after that).
    pub fn next_record(&mut self) -> Result<Option<Record>, StreamError> {
        if self.done.is_some() {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.r.read_exact(&mut tag)?;
        match tag[0] {
            TAG_RECORD => {
                self.hash.update(tag);
                self.bytes += 1;
                let key = self.sized(MAX_KEY, "key")?;
                let value = self.sized(MAX_VALUE, "value")?;
                self.records += 1;
                Ok(Some((key, value)))
            }
            TAG_END => {
                let want: [u8; 32] = self.hash.clone().finalize().into();
                let mut count = [0u8; 8];
                self.r.read_exact(&mut count)?;
                let mut sha256 = [0u8; 32];
                self.r.read_exact(&mut sha256)?;
                if sha256 != want {
                    return Err(StreamError::ChecksumMismatch);
                }
                if u64::from_le_bytes(count) != self.records {
                    return Err(StreamError::CountMismatch);
                }
                self.done = Some(Summary {
                    records: self.records,
                    bytes: self.bytes + 1 + 8 + 32,
                    sha256,
                });
                Ok(None)
            }
            _ => Err(StreamError::Corrupt("unknown record tag")),
        }
    }

    /// What the stream held, once `next_record` returned `Ok(None)`.
    pub fn summary(&self) -> Option<&Summary> {
        self.done.as_ref()
    }

    /// The reader, positioned after the end record once the stream is complete.
    pub fn into_inner(self) -> R {
        self.r
    }
}

/// Reads a whole stream, checking everything, keeping nothing but the meta. A byte after the
/// end record is refused too: the stream is the whole input.
pub fn verify(r: impl Read) -> Result<(Vec<u8>, Summary), StreamError> {
    let mut s = StreamReader::new(r)?;
    while s.next_record()?.is_some() {}
    let summary = s.done.ok_or(StreamError::Truncated)?;
    let mut r = s.r;
    let mut extra = [0u8; 1];
    loop {
        match r.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => return Err(StreamError::Corrupt("bytes after the end record")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Io(e)),
        }
    }
    Ok((s.meta, summary))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(n: usize) -> (Vec<u8>, Summary) {
        let mut w = StreamWriter::new(Vec::new(), b"meta!").unwrap();
        for i in 0..n {
            w.push(format!("key{i}").as_bytes(), &vec![i as u8; i * 3])
                .unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<(Vec<u8>, Vec<Record>, Summary), StreamError> {
        let mut r = StreamReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(kv) = r.next_record()? {
            out.push(kv);
        }
        Ok((r.meta().to_vec(), out, *r.summary().unwrap()))
    }

    #[test]
    fn round_trip() {
        let (bytes, written) = sample(20);
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.records, 20);
        let (meta, pairs, read) = read_all(&bytes).unwrap();
        assert_eq!(meta, b"meta!");
        assert_eq!(read, written);
        assert_eq!(pairs.len(), 20);
        assert_eq!(pairs[7], (b"key7".to_vec(), vec![7u8; 21]));
        let (meta, summary) = verify(bytes.as_slice()).unwrap();
        assert_eq!((meta.as_slice(), summary), (b"meta!".as_slice(), written));
    }

    #[test]
    fn empty_stream() {
        let (bytes, s) = StreamWriter::new(Vec::new(), b"")
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(s.records, 0);
        let (meta, pairs, read) = read_all(&bytes).unwrap();
        assert!(meta.is_empty() && pairs.is_empty());
        assert_eq!(read, s);
        assert!(verify(bytes.as_slice()).is_ok());
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected() {
        let (bytes, _) = sample(5);
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(
                    verify(b.as_slice()).is_err(),
                    "flip {bit:#x} at {i} undetected"
                );
            }
        }
    }

    #[test]
    fn truncation_anywhere_is_detected() {
        let (bytes, _) = sample(5);
        for len in 0..bytes.len() {
            let err = verify(&bytes[..len]).unwrap_err();
            assert!(matches!(err, StreamError::Truncated), "cut at {len}: {err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            verify(longer.as_slice()),
            Err(StreamError::Corrupt(_))
        ));
    }

    #[test]
    fn count_mismatch_is_detected() {
        // A well-formed end record whose count is wrong (digest right): only the count says so.
        let mut w = StreamWriter::new(Vec::new(), b"m").unwrap();
        w.push(b"k", b"v").unwrap();
        let digest: [u8; 32] = w.hash.clone().finalize().into();
        let mut bytes = w.w.clone();
        bytes.push(TAG_END);
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(&digest);
        assert!(matches!(
            verify(bytes.as_slice()),
            Err(StreamError::CountMismatch)
        ));
    }

    #[test]
    fn limits_are_checked_before_allocating() {
        let header = |format: u16, meta_len: u32| {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&format.to_le_bytes());
            b.extend_from_slice(&meta_len.to_le_bytes());
            b
        };
        assert!(matches!(
            StreamReader::new(header(2, MAX_META as u32 + 1).as_slice()),
            Err(StreamError::TooLarge("meta"))
        ));
        assert!(matches!(
            StreamReader::new(header(1, 0).as_slice()),
            Err(StreamError::UnsupportedFormat(1))
        ));
        assert!(matches!(
            StreamReader::new(&b"CNCLSNAX\x02\x00\x00\x00\x00\x00"[..]),
            Err(StreamError::BadMagic)
        ));
        let mut b = header(2, 0);
        b.push(TAG_RECORD);
        b.extend_from_slice(&(MAX_KEY as u32 + 1).to_le_bytes());
        let mut r = StreamReader::new(b.as_slice()).unwrap();
        assert!(matches!(r.next_record(), Err(StreamError::TooLarge("key"))));
        let mut b = header(2, 0);
        b.push(TAG_RECORD);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut r = StreamReader::new(b.as_slice()).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(StreamError::TooLarge("value"))
        ));
        // A value length under the limit on a short input: truncated, nothing big allocated.
        let mut b = header(2, 0);
        b.push(TAG_RECORD);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&(MAX_VALUE as u32).to_le_bytes());
        let mut r = StreamReader::new(b.as_slice()).unwrap();
        assert!(matches!(r.next_record(), Err(StreamError::Truncated)));
        // The writer refuses what the reader would refuse.
        let mut w = StreamWriter::new(Vec::new(), b"").unwrap();
        assert!(w.push(&vec![0u8; MAX_KEY + 1], b"").is_err());
        assert!(StreamWriter::new(Vec::new(), &vec![0u8; MAX_META + 1]).is_err());
    }
}
