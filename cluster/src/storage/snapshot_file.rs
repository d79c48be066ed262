//! The snapshot file `snapshot.bin` of a data dir: one state stream (`api::snapshot_stream`)
//! whose meta is `bincode(SnapshotMeta)`, and the temp files a snapshot is built or received in.
//!
//! Owns the file's name, its durable replacement (temp file, fsync, rename, directory fsync)
//! and reading the previous release's format 1 (a CRC-framed bincode `{meta, data}` whose data
//! is `bincode({format: 1, pairs})`). Must never hold a whole snapshot in memory, except a
//! format-1 one (that format only exists as one buffer; it is converted into a stream on read),
//! and must never leave a half-written `snapshot.bin`: readers see the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use api::snapshot_stream::{self, StreamError, StreamReader, StreamWriter, Summary};
use serde::{Deserialize, Serialize};

use crate::storage::fsutil;
use crate::types::SnapshotMeta;

/// The file name under the data dir.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Every temp file of this module is `snapshot.<what>.tmp`; `remove_temp_files` clears them.
const TEMP_PREFIX: &str = "snapshot.";
const TEMP_SUFFIX: &str = ".tmp";
/// Buffer of the reader and writer: big enough that the per-field reads and writes of the
/// stream codec do not become syscalls, small enough not to matter for memory.
const IO_BUF: usize = 256 << 10;

/// A snapshot file's records, read (and checked) one by one from its first record on.
pub type Records = StreamReader<BufReader<File>>;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file io: {0}")]
    Io(#[from] io::Error),
    /// The file (or a received snapshot) is damaged: not a stream, a bad digest, truncated...
    #[error("snapshot {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    /// Reading a pair to write failed (the source, e.g. the sled tree).
    #[error("snapshot source: {0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    #[error("snapshot meta does not encode: {0}")]
    Encode(bincode::Error),
}

impl SnapshotFileError {
    fn corrupt(path: &Path, why: impl ToString) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            why: why.to_string(),
        }
    }
}

/// The path of `snapshot.bin` under `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// A fresh temp file path under `dir` (unique within this process), for a build or a receive.
pub fn temp_path(dir: &Path, what: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{TEMP_PREFIX}{what}-{}-{n}{TEMP_SUFFIX}",
        std::process::id()
    ))
}

/// Removes the temp files of this module under `dir` (only those made for `what`, if given)
/// but `keep`: a build or a receive that a crash, a failed transfer or a newer transfer
/// abandoned. Best effort: a file that cannot be removed is logged and left.
pub fn remove_temp_files(dir: &Path, what: Option<&str>, keep: Option<&Path>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let prefix = match what {
        Some(w) => format!("{TEMP_PREFIX}{w}-"),
        None => TEMP_PREFIX.to_string(),
    };
    for de in rd.flatten() {
        let name = de.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && name.ends_with(TEMP_SUFFIX) {
            let p = de.path();
            if keep == Some(p.as_path()) {
                continue;
            }
            match fs::remove_file(&p) {
                Ok(()) => {
                    tracing::info!(path = %p.display(), "removed an abandoned snapshot temp file")
                }
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove an abandoned snapshot temp file")
                }
            }
        }
    }
}

/// Writes a stream of `pairs` with `meta` into `out` (buffered), fsyncs it and returns its
/// summary. The file is left at its end.
pub fn write_stream<E>(
    out: &mut File,
    meta: &SnapshotMeta,
    pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
) -> Result<Summary, SnapshotFileError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let meta_bytes = bincode::serialize(meta).map_err(SnapshotFileError::Encode)?;
    let mut w = StreamWriter::new(BufWriter::with_capacity(IO_BUF, &mut *out), &meta_bytes)?;
    for kv in pairs {
        let (k, v) = kv.map_err(|e| SnapshotFileError::Source(Box::new(e)))?;
        w.push(&k, &v)?;
    }
    let (buf, summary) = w.finish()?;
    buf.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    Ok(summary)
}

/// Makes the (already fsynced) file at `tmp` the new `snapshot.bin`, durably.
pub fn install_file(dir: &Path, tmp: &Path) -> io::Result<()> {
    fsutil::rename_durable(tmp, &path(dir))
}

/// Writes `snapshot.bin` from `pairs`: a temp file, fsync, rename over, directory fsync. A
/// crash at any point leaves the previous file (and maybe a temp file `remove_temp_files`
/// clears).
pub fn write<E>(
    dir: &Path,
    meta: &SnapshotMeta,
    pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
) -> Result<Summary, SnapshotFileError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let tmp = temp_path(dir, "write");
    let result = (|| {
        let mut f = create_temp(&tmp)?;
        let summary = write_stream(&mut f, meta, pairs)?;
        drop(f);
        install_file(dir, &tmp)?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates a temp file for writing (and reading back, for a received snapshot).
pub fn create_temp(tmp: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
}

/// Opens `snapshot.bin` and reads its header: its meta and a reader positioned at the first
/// record. Records are checked as they are read (see `StreamReader`). A format-1 file is
/// converted into a stream first (see `convert_legacy`). `Ok(None)`: there is no file.
pub fn open(dir: &Path) -> Result<Option<(SnapshotMeta, Records)>, SnapshotFileError> {
    let p = path(dir);
    let file = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    open_file(file, &p, None).map(Some)
}

/// Reads the header of a snapshot file (either format). `expect`: the meta the caller knows
/// (openraft's, for a received snapshot), which a format-1 body does not carry.
pub fn open_file(
    mut file: File,
    p: &Path,
    expect: Option<&SnapshotMeta>,
) -> Result<(SnapshotMeta, Records), SnapshotFileError> {
    file.seek(SeekFrom::Start(0))?;
    let mut head = [0u8; 8];
    let n = read_up_to(&mut file, &mut head)?;
    file.seek(SeekFrom::Start(0))?;
    if n == 8 && &head == snapshot_stream::MAGIC {
        let r = StreamReader::new(BufReader::with_capacity(IO_BUF, file))
            .map_err(|e| stream_err(p, e))?;
        let meta: SnapshotMeta =
            bincode::deserialize(r.meta()).map_err(|e| SnapshotFileError::corrupt(p, e))?;
        return Ok((meta, r));
    }
    // Not a stream: only a format-1 file is read further, and only if its first bytes fit one
    // (so a damaged 2 GB stream is not read into memory to find out it is no legacy file).
    let len = file.metadata()?.len();
    let framed =
        n == 8 && u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]])) + 8 == len;
    let bare_body = expect.is_some() && n >= 2 && head[..2] == 1u16.to_le_bytes();
    if !framed && !bare_body {
        return Err(SnapshotFileError::corrupt(
            p,
            "neither a state stream nor a format-1 snapshot",
        ));
    }
    let (meta, pairs) = read_legacy(file, p, expect)?;
    convert_legacy(p, &meta, pairs)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn stream_err(p: &Path, e: StreamError) -> SnapshotFileError {
    match e {
        StreamError::Io(e) => SnapshotFileError::Io(e),
        e => SnapshotFileError::corrupt(p, e),
    }
}

/// Reads a whole snapshot file (either format), checking every record, digest and count,
/// without keeping the records. Returns the meta and the summary.
pub fn verify_file(
    file: File,
    p: &Path,
    expect: Option<&SnapshotMeta>,
) -> Result<(SnapshotMeta, Summary), SnapshotFileError> {
    let (meta, mut r) = open_file(file, p, expect)?;
    while r.next_record().map_err(|e| stream_err(p, e))?.is_some() {}
    let summary = *r
        .summary()
        .ok_or_else(|| SnapshotFileError::corrupt(p, "no end record"))?;
    // The stream must be the whole file.
    let mut rest = r.into_inner();
    let mut extra = [0u8; 1];
    if read_up_to(rest.get_mut(), &mut extra)? != 0 || !rest.buffer().is_empty() {
        return Err(SnapshotFileError::corrupt(p, "bytes after the end record"));
    }
    Ok((meta, summary))
}

/// Checks a received snapshot (fsynced by the caller) before anything else is touched: every
/// record, the digest, the count, and that its meta is the one openraft announced. Returns the
/// path of a complete format-2 file to install: `received` itself, or, for a format-1 body
/// from a leader of the previous release, a converted copy (`received` is then removed). On
/// error `received` is removed and nothing else has changed.
pub fn accept_received(
    dir: &Path,
    file: File,
    received: &Path,
    expect: &SnapshotMeta,
) -> Result<PathBuf, SnapshotFileError> {
    let result = (|| {
        let mut file = file;
        file.seek(SeekFrom::Start(0))?;
        let mut head = [0u8; 8];
        let n = read_up_to(&mut file, &mut head)?;
        file.seek(SeekFrom::Start(0))?;
        if n == 8 && &head == snapshot_stream::MAGIC {
            let (meta, summary) = verify_file(file, received, None)?;
            if &meta != expect {
                return Err(SnapshotFileError::corrupt(
                    received,
                    format!(
                        "its meta ({:?}) is not the one announced ({:?})",
                        meta.last_log_id, expect.last_log_id
                    ),
                ));
            }
            tracing::info!(snapshot = ?meta.last_log_id, records = summary.records, bytes = summary.bytes, "received snapshot verified");
            return Ok(received.to_path_buf());
        }
        let (meta, pairs) = read_legacy(file, received, Some(expect))?;
        let tmp = temp_path(dir, "recv");
        let mut out = create_temp(&tmp)?;
        let written = write_stream(
            &mut out,
            &meta,
            pairs.into_iter().map(Ok::<_, std::convert::Infallible>),
        );
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let _ = fs::remove_file(received);
        tracing::info!(snapshot = ?meta.last_log_id, "received a format-1 snapshot (leader of the previous release), converted");
        Ok(tmp)
    })();
    if result.is_err() {
        let _ = fs::remove_file(received);
    }
    result
}

/// Whether `file` is the file at `path` (the handle openraft wrote a transfer through is the
/// temp file this node created for it, unless a caller swapped it). Where that cannot be told
/// cheaply, `false`: the caller then copies, which is only slower.
pub fn is_file_at(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        false
    }
}

/// Copies `file` whole into a fresh temp file under `dir` (streaming), returning it and its
/// path.
pub fn copy_to_temp(dir: &Path, file: &mut File) -> io::Result<(File, PathBuf)> {
    let tmp = temp_path(dir, "recv");
    let result = (|| {
        let mut out = create_temp(&tmp)?;
        file.seek(SeekFrom::Start(0))?;
        io::copy(file, &mut out)?;
        Ok(out)
    })();
    match result {
        Ok(out) => Ok((out, tmp)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The previous release's file: `frame(bincode({meta, data}))`, data = `bincode(LegacyBody)`.
#[derive(Serialize, Deserialize)]
struct LegacyFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct LegacyBody {
    format: u16,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Decodes a format-1 snapshot: a framed file (with its meta), or, when `expect` is given, a
/// bare body as an old leader sends it (meta from openraft).
fn read_legacy(
    mut file: File,
    p: &Path,
    expect: Option<&SnapshotMeta>,
) -> Result<(SnapshotMeta, Pairs), SnapshotFileError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    if let Some((payload, _)) = fsutil::unframe(&bytes)
        && let Ok(f) = bincode::deserialize::<LegacyFile>(payload)
    {
        let body = decode_legacy_body(&f.data, p)?;
        return Ok((f.meta, body));
    }
    match expect {
        Some(meta) => Ok((meta.clone(), decode_legacy_body(&bytes, p)?)),
        None => Err(SnapshotFileError::corrupt(
            p,
            "neither a state stream nor a format-1 snapshot",
        )),
    }
}

fn decode_legacy_body(data: &[u8], p: &Path) -> Result<Pairs, SnapshotFileError> {
    use bincode::Options;
    // Bounded like every other decode of untrusted bytes: a corrupt length must not allocate.
    let body: LegacyBody = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(data.len() as u64)
        .deserialize(data)
        .map_err(|e| SnapshotFileError::corrupt(p, format!("format-1 body: {e}")))?;
    if body.format != 1 {
        return Err(SnapshotFileError::corrupt(
            p,
            format!("format-1 body says format {}", body.format),
        ));
    }
    Ok(body.pairs)
}

/// Writes a format-1 snapshot's pairs as a stream into an unnamed-once-opened temp file next to
/// `p` and opens it. The original file is left as it is (it stays valid for the old binary
/// until the next snapshot replaces it).
fn convert_legacy(
    p: &Path,
    meta: &SnapshotMeta,
    pairs: Pairs,
) -> Result<(SnapshotMeta, Records), SnapshotFileError> {
    let dir = p.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(dir, "legacy");
    let mut f = create_temp(&tmp)?;
    let written = write_stream(
        &mut f,
        meta,
        pairs.into_iter().map(Ok::<_, std::convert::Infallible>),
    );
    // Unlinked at once: the open handle keeps it readable, and nothing is left behind.
    let _ = fs::remove_file(&tmp);
    written?;
    f.seek(SeekFrom::Start(0))?;
    let r = StreamReader::new(BufReader::with_capacity(IO_BUF, f)).map_err(|e| stream_err(p, e))?;
    tracing::info!(path = %p.display(), snapshot = ?meta.last_log_id, "read a format-1 snapshot (previous release)");
    Ok((meta.clone(), r))
}

/// Writes a format-1 file as the previous release did (for tests of the upgrade path).
#[cfg(test)]
pub(crate) fn write_legacy(dir: &Path, meta: &SnapshotMeta, pairs: Pairs) {
    #[allow(clippy::unwrap_used)]
    let data = bincode::serialize(&LegacyBody { format: 1, pairs }).unwrap();
    #[allow(clippy::unwrap_used)]
    let payload = bincode::serialize(&LegacyFile {
        meta: meta.clone(),
        data,
    })
    .unwrap();
    let mut framed = Vec::new();
    fsutil::frame(&payload, &mut framed);
    #[allow(clippy::unwrap_used)]
    fsutil::write_atomic(&path(dir), &framed).unwrap();
}

/// `bincode(LegacyBody)` of `pairs`: what an old leader sends (for tests).
#[cfg(test)]
pub(crate) fn legacy_body(pairs: Pairs) -> Vec<u8> {
    #[allow(clippy::unwrap_used)]
    bincode::serialize(&LegacyBody { format: 1, pairs }).unwrap()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::types::LogId;
    use openraft::CommittedLeaderId;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: Default::default(),
            snapshot_id: format!("s-{index}"),
        }
    }

    fn pairs(n: u8) -> Pairs {
        (0..n).map(|i| (vec![i], vec![i; 10])).collect()
    }

    fn read_all(dir: &Path) -> (SnapshotMeta, Pairs) {
        let (m, mut r) = open(dir).unwrap().unwrap();
        let mut out = Vec::new();
        while let Some(kv) = r.next_record().unwrap() {
            out.push(kv);
        }
        (m, out)
    }

    #[test]
    fn write_then_open_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path()).unwrap().is_none());
        let s = write(
            dir.path(),
            &meta(5),
            pairs(4).into_iter().map(Ok::<_, io::Error>),
        )
        .unwrap();
        assert_eq!(s.records, 4);
        assert_eq!(read_all(dir.path()), (meta(5), pairs(4)));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![SNAPSHOT_FILE]);
        let f = File::open(path(dir.path())).unwrap();
        assert_eq!(
            verify_file(f, &path(dir.path()), None).unwrap(),
            (meta(5), s)
        );
    }

    #[test]
    fn a_failing_source_leaves_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &meta(5),
            pairs(2).into_iter().map(Ok::<_, io::Error>),
        )
        .unwrap();
        let failing = pairs(3)
            .into_iter()
            .map(Ok)
            .chain(std::iter::once(Err(io::Error::other("boom"))));
        assert!(matches!(
            write(dir.path(), &meta(9), failing),
            Err(SnapshotFileError::Source(_))
        ));
        assert_eq!(read_all(dir.path()), (meta(5), pairs(2)));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_legacy_file_still_opens_and_is_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path(), &meta(7), pairs(3));
        let before = fs::read(path(dir.path())).unwrap();
        assert_eq!(read_all(dir.path()), (meta(7), pairs(3)));
        assert_eq!(fs::read(path(dir.path())).unwrap(), before);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A bare body (what an old leader sends) opens with the meta openraft gives.
        let recv = dir.path().join("recv");
        fs::write(&recv, legacy_body(pairs(2))).unwrap();
        let (m, s) = verify_file(File::open(&recv).unwrap(), &recv, Some(&meta(8))).unwrap();
        assert_eq!((m, s.records), (meta(8), 2));
        assert!(matches!(
            verify_file(File::open(&recv).unwrap(), &recv, None),
            Err(SnapshotFileError::Corrupt { .. })
        ));
    }

    #[test]
    fn damage_is_corrupt_not_io() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &meta(5),
            pairs(4).into_iter().map(Ok::<_, io::Error>),
        )
        .unwrap();
        let p = path(dir.path());
        let good = fs::read(&p).unwrap();
        for at in [3usize, 20, good.len() / 2, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x40;
            fs::write(&p, &b).unwrap();
            let r = verify_file(File::open(&p).unwrap(), &p, None);
            assert!(
                matches!(r, Err(SnapshotFileError::Corrupt { .. })),
                "at {at}"
            );
        }
        fs::write(&p, &good[..good.len() - 5]).unwrap();
        assert!(matches!(
            verify_file(File::open(&p).unwrap(), &p, None),
            Err(SnapshotFileError::Corrupt { .. })
        ));
    }

    #[test]
    fn temp_files_are_cleared_but_the_kept_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = temp_path(dir.path(), "recv");
        let b = temp_path(dir.path(), "recv");
        fs::write(&a, b"x").unwrap();
        fs::write(&b, b"x").unwrap();
        fs::write(dir.path().join("other.tmp"), b"x").unwrap();
        remove_temp_files(dir.path(), Some("build"), None);
        assert!(a.exists());
        remove_temp_files(dir.path(), Some("recv"), Some(&b));
        assert!(!a.exists() && b.exists());
        assert!(dir.path().join("other.tmp").exists());
    }
}
