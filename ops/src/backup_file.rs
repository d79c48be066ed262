//! The encrypted backup file: age encryption (passphrase through scrypt, or x25519 recipients)
//! over the plaintext `"CONCLAVE-BACKUP\n" | manifest frame | secrets frame | state stream |
//! blob section` (frames and blob section: [`api::backup`]; state stream:
//! [`api::snapshot_stream`]). A format 1 backup (before file contents were carried) ends with
//! the state stream; it is still read.
//!
//! Owns writing ([`BackupWriter`]), opening ([`open`]), reading the blobs ([`read_blobs`]) and
//! checking ([`verify`], and [`BodyCheck`] for a body as it arrives from a server) such a
//! file, and the key handling ([`BackupKey`]). Everything streams: a state of gigabytes passes
//! through a few chunk buffers, never whole into memory, and blobs pass one at a time (at most
//! 8 MiB each). Must never print, never log or `Debug`-show a passphrase or the secrets frame,
//! and never panic on a damaged or foreign file.

use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::str::FromStr as _;

use age::secrecy::SecretString;
use api::backup::{BlobEntry, BlobSectionCheck, BlobSectionError, BlobSectionReader};
use api::snapshot_stream::{StreamError, StreamReader};
use sha2::{Digest as _, Sha256};

pub use api::backup::{
    BlobsDigest, MAGIC, MANIFEST_FORMAT, Manifest, OLDEST_MANIFEST_FORMAT, Secrets, StateDigest,
};

/// Shortest passphrase a new backup accepts: scrypt slows guessing down, it cannot make a
/// short passphrase strong.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Length of a state stream's end record: tag (1) | records u64 LE (8) | sha256 (32).
const END_RECORD_LEN: usize = 41;

/// How a backup is encrypted or decrypted.
#[derive(Clone)]
pub enum BackupKey {
    /// A passphrase (age's scrypt recipient): encrypts and decrypts.
    Passphrase(String),
    /// age x25519 public keys (`age1...`): encrypt only.
    Recipients(Vec<String>),
    /// An age identity file (`AGE-SECRET-KEY-1...` lines, as `age-keygen` or
    /// `conclavectl backup keygen` write): decrypts.
    Identity(PathBuf),
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupKey::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
            BackupKey::Recipients(r) => f.debug_tuple("Recipients").field(r).finish(),
            BackupKey::Identity(p) => f.debug_tuple("Identity").field(p).finish(),
        }
    }
}

/// Why a backup could not be written, opened or verified. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing the underlying file failed (not a sign of damage).
    #[error("cannot read or write the backup: {0}")]
    Io(#[source] std::io::Error),
    /// The key given cannot be used as asked: a short passphrase, a malformed recipient, an
    /// unreadable identity file, or a key of the other kind.
    #[error("{0}")]
    Key(String),
    /// The passphrase or identity does not open this file.
    #[error("cannot decrypt the backup: {0}")]
    WrongKey(String),
    /// It decrypts, but is not a Conclave backup this version can read.
    #[error("not a Conclave backup: {0}")]
    NotABackup(String),
    /// The file is damaged or truncated: authentication of the encrypted data, the state
    /// stream's own checks, or its agreement with the manifest failed.
    #[error("backup damaged: {0}")]
    Damaged(String),
}

/// Refuses an empty or short passphrase for a new backup.
pub fn check_new_passphrase(passphrase: &str) -> Result<(), BackupError> {
    let chars = passphrase.chars().count();
    if chars < MIN_PASSPHRASE_CHARS {
        return Err(BackupError::Key(format!(
            "the passphrase has {chars} characters; a backup needs at least {MIN_PASSPHRASE_CHARS}"
        )));
    }
    Ok(())
}

/// Parses `age1...` recipients.
fn recipients(keys: &[String]) -> Result<Vec<age::x25519::Recipient>, BackupError> {
    if keys.is_empty() {
        return Err(BackupError::Key("no recipient given".into()));
    }
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            age::x25519::Recipient::from_str(k.trim()).map_err(|_| {
                BackupError::Key(format!(
                    "recipient {} is not an age public key (age1...)",
                    i + 1
                ))
            })
        })
        .collect()
}

/// Writes an encrypted backup: [`MAGIC`] at once, then whatever is written to it (the server's
/// body: frames and state stream), encrypted in age's 64 KiB authenticated chunks.
/// [`BackupWriter::finish`] must be called, or the file does not decrypt (age marks the last
/// chunk, so a cut-off file is detected).
pub struct BackupWriter<W: Write> {
    inner: age::stream::StreamWriter<W>,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(out: W, key: &BackupKey) -> Result<Self, BackupError> {
        Self::with_scrypt_work_factor(out, key, None)
    }

    /// [`BackupWriter::new`], with scrypt's work factor set (`None`: age's, about 1 s of
    /// work on this machine). Lower only in tests, which would otherwise spend seconds each.
    fn with_scrypt_work_factor(
        out: W,
        key: &BackupKey,
        log_n: Option<u8>,
    ) -> Result<Self, BackupError> {
        let encryptor = match key {
            BackupKey::Passphrase(p) => {
                check_new_passphrase(p)?;
                let mut recipient = age::scrypt::Recipient::new(SecretString::from(p.clone()));
                if let Some(log_n) = log_n {
                    recipient.set_work_factor(log_n);
                }
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .map_err(|e| BackupError::Key(format!("cannot encrypt: {e}")))?
            }
            BackupKey::Recipients(keys) => {
                let parsed = recipients(keys)?;
                age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| BackupError::Key(format!("cannot encrypt to them: {e}")))?
            }
            BackupKey::Identity(_) => {
                return Err(BackupError::Key(
                    "an identity decrypts; encrypt with a recipient (its public key, age1...)"
                        .into(),
                ));
            }
        };
        let mut inner = encryptor.wrap_output(out).map_err(BackupError::Io)?;
        inner.write_all(MAGIC).map_err(BackupError::Io)?;
        Ok(BackupWriter { inner })
    }

    /// Writes the final chunk and returns the output (flushed).
    pub fn finish(self) -> Result<W, BackupError> {
        let mut out = self.inner.finish().map_err(BackupError::Io)?;
        out.flush().map_err(BackupError::Io)?;
        Ok(out)
    }
}

impl<W: Write> Write for BackupWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A decrypted backup: its frames, and the state stream still to be read.
pub struct OpenedBackup {
    pub manifest: Manifest,
    pub secrets: Secrets,
    /// The state stream ([`api::snapshot_stream`]), positioned at its header, and after it the
    /// blob section (read it with [`read_blobs`] from where the state stream's reader stopped).
    /// Reads fail (`InvalidData`) where the file was altered: age authenticates every chunk as
    /// it goes.
    pub state: Box<dyn Read>,
}

impl std::fmt::Debug for OpenedBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedBackup")
            .field("manifest", &self.manifest)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

fn decrypt_error(e: age::DecryptError) -> BackupError {
    use age::DecryptError as E;
    match e {
        E::DecryptionFailed | E::NoMatchingKeys | E::KeyDecryptionFailed => BackupError::WrongKey(
            "wrong passphrase or identity (or the file's header is damaged)".into(),
        ),
        E::ExcessiveWork { required, target } => BackupError::Damaged(format!(
            "the header asks for scrypt work factor {required}, far above this machine's {target}"
        )),
        E::InvalidHeader | E::UnknownFormat => {
            BackupError::Damaged("not an age-encrypted file, or its header is damaged".into())
        }
        E::InvalidMac => BackupError::Damaged("the header's MAC does not verify".into()),
        E::Io(e) => read_error(e),
    }
}

/// A read error from inside the decryption: age reports an altered or cut-off chunk as
/// `InvalidData` or `UnexpectedEof`, which is damage, not an I/O problem of this machine.
fn read_error(e: std::io::Error) -> BackupError {
    match e.kind() {
        std::io::ErrorKind::InvalidData => {
            BackupError::Damaged(format!("the encrypted data does not authenticate ({e})"))
        }
        std::io::ErrorKind::UnexpectedEof => BackupError::Damaged("the file is truncated".into()),
        _ => BackupError::Io(e),
    }
}

fn frame_error(what: &str, e: api::backup::FrameError) -> BackupError {
    match e {
        api::backup::FrameError::Io(e) => match read_error(e) {
            BackupError::Io(e) => BackupError::Io(e),
            damaged => damaged,
        },
        other => BackupError::NotABackup(format!("its {what} is unreadable: {other}")),
    }
}

/// Decrypts `input` with `key` and reads the frames; the state stream is left to the caller.
pub fn open(input: impl Read + 'static, key: &BackupKey) -> Result<OpenedBackup, BackupError> {
    let decryptor = age::Decryptor::new_buffered(BufReader::new(input)).map_err(decrypt_error)?;
    let mut plain: Box<dyn Read> = match key {
        BackupKey::Passphrase(p) => {
            if !decryptor.is_scrypt() {
                return Err(BackupError::Key(
                    "this backup is encrypted to recipient keys: give --identity".into(),
                ));
            }
            if p.is_empty() {
                return Err(BackupError::Key("the passphrase is empty".into()));
            }
            let identity = age::scrypt::Identity::new(SecretString::from(p.clone()));
            Box::new(
                decryptor
                    .decrypt(std::iter::once(&identity as &dyn age::Identity))
                    .map_err(decrypt_error)?,
            )
        }
        BackupKey::Identity(path) => {
            if decryptor.is_scrypt() {
                return Err(BackupError::Key(
                    "this backup is encrypted with a passphrase: give --passphrase-file or CONCLAVE_BACKUP_PASSPHRASE".into(),
                ));
            }
            let identities = age::IdentityFile::from_file(path.to_string_lossy().into_owned())
                .map_err(|e| {
                    BackupError::Key(format!("cannot read identity file {}: {e}", path.display()))
                })?
                .into_identities()
                .map_err(|e| {
                    BackupError::Key(format!("unusable identity file {}: {e}", path.display()))
                })?;
            Box::new(
                decryptor
                    .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
                    .map_err(decrypt_error)?,
            )
        }
        BackupKey::Recipients(_) => {
            return Err(BackupError::Key(
                "recipients only encrypt; decrypt with --identity (the matching secret key)".into(),
            ));
        }
    };
    let mut magic = [0u8; MAGIC.len()];
    plain.read_exact(&mut magic).map_err(read_error)?;
    if &magic != MAGIC {
        return Err(BackupError::NotABackup(
            "it decrypts, but does not start like one".into(),
        ));
    }
    let manifest: Manifest =
        api::backup::read_frame(&mut plain).map_err(|e| frame_error("manifest", e))?;
    if !(OLDEST_MANIFEST_FORMAT..=MANIFEST_FORMAT).contains(&manifest.format) {
        return Err(BackupError::NotABackup(format!(
            "manifest format {} (this release reads {OLDEST_MANIFEST_FORMAT} to {MANIFEST_FORMAT}; use a newer one)",
            manifest.format
        )));
    }
    let secrets: Secrets =
        api::backup::read_frame(&mut plain).map_err(|e| frame_error("secrets frame", e))?;
    Ok(OpenedBackup {
        manifest,
        secrets,
        state: plain,
    })
}

/// Counts and hashes what passes through, so the state stream's length can be checked.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Decrypts the whole file and checks everything: age's authentication of every chunk and of
/// the end (a cut-off file fails), the manifest, the state stream's own framing, record count
/// and sha256, every blob's sha256, and that they are what the manifest says. Returns the
/// manifest.
pub fn verify(input: impl Read + 'static, key: &BackupKey) -> Result<Manifest, BackupError> {
    let opened = open(input, key)?;
    let manifest = opened.manifest;
    let mut state = Counting {
        inner: opened.state,
        bytes: 0,
    };
    let mut reader = StreamReader::new(&mut state).map_err(|e| stream_error(&e, e.to_string()))?;
    while reader
        .next_record()
        .map_err(|e| stream_error(&e, e.to_string()))?
        .is_some()
    {}
    let summary = *reader
        .summary()
        .ok_or_else(|| BackupError::Damaged("the state stream is incomplete".into()))?;
    check_digest(
        &manifest.state,
        state.bytes,
        summary.records,
        &summary.sha256,
    )?;
    read_blobs(&mut state.inner, &manifest, |_, _| Ok(()))?;
    Ok(manifest)
}

/// Reads the blob section that follows the state stream in `r` (nothing, in a format 1
/// backup), checking each blob's sha256 and the section's count and total against its end
/// record and the manifest, and hands every blob to `each` (its lowercase hex sha256 and
/// content; one at a time). Then reads on to the end: that makes age check its final chunk's
/// marker (a file cut at a chunk boundary would pass otherwise), and refuses anything after
/// the section. Returns the section's count and total.
pub fn read_blobs(
    r: &mut dyn Read,
    manifest: &Manifest,
    mut each: impl FnMut(&str, &[u8]) -> Result<(), BackupError>,
) -> Result<BlobsDigest, BackupError> {
    let mut held = BlobsDigest::default();
    if api::backup::has_blob_section(manifest.format) {
        let mut reader = BlobSectionReader::new(&mut *r);
        let mut buf = Vec::new();
        while let Some(sha) = reader.next_blob(&mut buf).map_err(blob_error)? {
            each(&hex::encode(sha), &buf)?;
        }
        held = reader
            .summary()
            .ok_or_else(|| BackupError::Damaged("the blob section is incomplete".into()))?;
    }
    if held != manifest.blobs {
        return Err(BackupError::Damaged(format!(
            "the manifest describes {} blobs of {} bytes; the file holds {} of {}",
            manifest.blobs.count, manifest.blobs.bytes, held.count, held.bytes
        )));
    }
    let mut rest = [0u8; 1];
    match r.read(&mut rest).map_err(read_error)? {
        0 => Ok(held),
        _ => Err(BackupError::Damaged(if held.count == 0 {
            "unexpected data after the state stream".into()
        } else {
            "unexpected data after the blob section".into()
        })),
    }
}

fn blob_error(e: BlobSectionError) -> BackupError {
    match e {
        BlobSectionError::Io(e) => read_error(e),
        BlobSectionError::Truncated => BackupError::Damaged("the file is truncated".into()),
        other => BackupError::Damaged(other.to_string()),
    }
}

fn stream_error(e: &StreamError, text: String) -> BackupError {
    match e {
        StreamError::Io(io) => match io.kind() {
            std::io::ErrorKind::InvalidData => {
                BackupError::Damaged(format!("the encrypted data does not authenticate ({io})"))
            }
            std::io::ErrorKind::UnexpectedEof => {
                BackupError::Damaged("the file is truncated".into())
            }
            kind => BackupError::Io(std::io::Error::new(kind, text)),
        },
        _ => BackupError::Damaged(format!("state stream: {text}")),
    }
}

fn check_digest(
    digest: &StateDigest,
    bytes: u64,
    records: u64,
    sha256: &[u8; 32],
) -> Result<(), BackupError> {
    let sha = hex::encode(sha256);
    if digest.bytes != bytes || digest.records != records || digest.sha256 != sha {
        return Err(BackupError::Damaged(format!(
            "the manifest describes {} bytes, {} records, sha256 {}; the state has {bytes} bytes, {records} records, sha256 {sha}",
            digest.bytes, digest.records, digest.sha256
        )));
    }
    Ok(())
}

/// Checks a server's backup body as it streams through (`conclavectl backup`), without holding
/// it: parses the two frames at the start, then follows the state stream for the length the
/// manifest gives it, hashing all but its 41-byte end record, then the blob section entry by
/// entry, hashing each blob (nothing of it is kept). A damaged blob is refused as soon as it
/// has passed; [`BodyCheck::finish`] says whether the body was complete and is exactly what
/// its manifest describes. Record framing is checked by [`verify`], which reads the file back.
pub struct BodyCheck {
    head: Vec<u8>,
    frames: Option<(Manifest, Secrets)>,
    hasher: Sha256,
    /// State stream bytes seen so far.
    bytes: u64,
    /// The state stream's end record, as it arrives.
    tail: Vec<u8>,
    blobs: BlobPhase,
    blob_check: BlobSectionCheck,
}

/// Where the body is in its blob section.
enum BlobPhase {
    /// Gathering the next entry's header.
    Header(Vec<u8>),
    /// Inside a blob: `left` of its bytes still to come.
    Blob {
        sha256: [u8; 32],
        len: u64,
        left: u64,
        hasher: Sha256,
    },
    /// After the end record.
    Done(BlobsDigest),
}

impl Default for BodyCheck {
    fn default() -> Self {
        BodyCheck {
            head: Vec::new(),
            frames: None,
            hasher: Sha256::new(),
            bytes: 0,
            tail: Vec::with_capacity(END_RECORD_LEN),
            blobs: BlobPhase::Header(Vec::new()),
            blob_check: BlobSectionCheck::default(),
        }
    }
}

impl BodyCheck {
    pub fn new() -> Self {
        BodyCheck::default()
    }

    /// The manifest, once its frame has arrived.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.frames.as_ref().map(|(m, _)| m)
    }

    /// Feeds the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BackupError> {
        if self.frames.is_some() {
            return self.after_frames(chunk);
        }
        self.head.extend_from_slice(chunk);
        let Some(used) = self.try_frames()? else {
            return Ok(());
        };
        let rest = self.head.split_off(used);
        self.head = Vec::new();
        self.after_frames(&rest)
    }

    /// `Some(bytes used)` once both frames are complete.
    fn try_frames(&mut self) -> Result<Option<usize>, BackupError> {
        let frame_end = |at: usize| -> Result<Option<usize>, BackupError> {
            let Some(len) = self.head.get(at..at + 4) else {
                return Ok(None);
            };
            let mut le = [0u8; 4];
            le.copy_from_slice(len);
            let len = u32::from_le_bytes(le);
            if len > api::backup::MAX_FRAME {
                return Err(BackupError::NotABackup(format!(
                    "the server sent a frame of {len} bytes"
                )));
            }
            let end = at + 4 + len as usize;
            Ok((self.head.len() >= end).then_some(end))
        };
        let Some(manifest_end) = frame_end(0)? else {
            return Ok(None);
        };
        let Some(secrets_end) = frame_end(manifest_end)? else {
            return Ok(None);
        };
        let mut r = &self.head[..secrets_end];
        let manifest: Manifest =
            api::backup::read_frame(&mut r).map_err(|e| frame_error("manifest", e))?;
        // An older server's format 1 body (no file contents) is still a usable backup.
        if !(OLDEST_MANIFEST_FORMAT..=MANIFEST_FORMAT).contains(&manifest.format) {
            return Err(BackupError::NotABackup(format!(
                "the server sent manifest format {} (this conclavectl reads {OLDEST_MANIFEST_FORMAT} to {MANIFEST_FORMAT})",
                manifest.format
            )));
        }
        if manifest.state.bytes < END_RECORD_LEN as u64 {
            return Err(BackupError::Damaged(format!(
                "the manifest gives the state stream {} bytes",
                manifest.state.bytes
            )));
        }
        let secrets: Secrets =
            api::backup::read_frame(&mut r).map_err(|e| frame_error("secrets frame", e))?;
        self.frames = Some((manifest, secrets));
        Ok(Some(secrets_end))
    }

    /// Bytes after the frames: the state stream for as long as the manifest says, then the
    /// blob section.
    fn after_frames(&mut self, mut data: &[u8]) -> Result<(), BackupError> {
        let state_len = self.manifest().map_or(0, |m| m.state.bytes);
        if self.bytes < state_len {
            let n = usize::try_from(state_len - self.bytes)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let (piece, rest) = data.split_at(n);
            // The checksum covers every byte before the end record.
            let hashed_end = state_len - END_RECORD_LEN as u64;
            let hashed = usize::try_from(hashed_end.saturating_sub(self.bytes))
                .unwrap_or(usize::MAX)
                .min(piece.len());
            self.hasher.update(&piece[..hashed]);
            self.tail.extend_from_slice(&piece[hashed..]);
            self.bytes += n as u64;
            data = rest;
        }
        while !data.is_empty() {
            let used = self.blob_bytes(data)?;
            data = &data[used..];
        }
        Ok(())
    }

    /// Takes what it can of `data` into the blob section; returns how much (at least 1).
    fn blob_bytes(&mut self, data: &[u8]) -> Result<usize, BackupError> {
        let has_section = self
            .manifest()
            .is_some_and(|m| api::backup::has_blob_section(m.format));
        match &mut self.blobs {
            _ if !has_section => Err(BackupError::Damaged(
                "unexpected data after the state stream".into(),
            )),
            BlobPhase::Done(_) => Err(BackupError::Damaged(
                "unexpected data after the blob section".into(),
            )),
            BlobPhase::Header(head) => {
                // One byte at first: the tag says how long the header is, and nothing past
                // it may be taken.
                let want = match head.first() {
                    None => 1,
                    Some(0) => api::backup::BLOB_END_LEN,
                    Some(_) => api::backup::BLOB_HEADER_LEN,
                };
                let n = (want - head.len()).min(data.len());
                head.extend_from_slice(&data[..n]);
                let Some((entry, _)) = BlobEntry::parse(head).map_err(blob_error)? else {
                    return Ok(n);
                };
                match entry {
                    BlobEntry::End(said) => {
                        let held = self.blob_check.finish(said).map_err(blob_error)?;
                        self.blobs = BlobPhase::Done(held);
                    }
                    BlobEntry::Blob { sha256, len } => {
                        self.blob_check.begin(&sha256).map_err(blob_error)?;
                        self.blobs = BlobPhase::Blob {
                            sha256,
                            len,
                            left: len,
                            hasher: Sha256::new(),
                        };
                        self.end_blob_if_complete()?;
                    }
                }
                Ok(n)
            }
            BlobPhase::Blob { left, hasher, .. } => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                hasher.update(&data[..n]);
                *left -= n as u64;
                self.end_blob_if_complete()?;
                Ok(n)
            }
        }
    }

    fn end_blob_if_complete(&mut self) -> Result<(), BackupError> {
        if !matches!(self.blobs, BlobPhase::Blob { left: 0, .. }) {
            return Ok(());
        }
        if let BlobPhase::Blob {
            sha256,
            len,
            hasher,
            ..
        } = std::mem::replace(&mut self.blobs, BlobPhase::Header(Vec::new()))
        {
            let actual: [u8; 32] = hasher.finalize().into();
            self.blob_check
                .end_blob(&sha256, actual, len)
                .map_err(blob_error)?;
        }
        Ok(())
    }

    /// After the last chunk: the manifest, if the body was complete and matches it.
    pub fn finish(self) -> Result<Manifest, BackupError> {
        let Some((manifest, _)) = self.frames else {
            return Err(BackupError::Damaged(
                "the server's answer ended before the manifest".into(),
            ));
        };
        let tail = self.tail.as_slice();
        let (true, Some(&0), Some(count), Some(sum)) = (
            tail.len() == END_RECORD_LEN,
            tail.first(),
            tail.get(1..9),
            tail.get(9..END_RECORD_LEN),
        ) else {
            return Err(BackupError::Damaged(
                "the server's answer ended inside the state stream".into(),
            ));
        };
        let mut le = [0u8; 8];
        le.copy_from_slice(count);
        let records = u64::from_le_bytes(le);
        let computed: [u8; 32] = self.hasher.finalize().into();
        if computed.as_slice() != sum {
            return Err(BackupError::Damaged(
                "the state stream's sha256 does not match its end record".into(),
            ));
        }
        check_digest(&manifest.state, self.bytes, records, &computed)?;
        let held = match self.blobs {
            BlobPhase::Done(held) => held,
            _ if !api::backup::has_blob_section(manifest.format) => BlobsDigest::default(),
            _ => {
                return Err(BackupError::Damaged(
                    "the server's answer ended inside the blob section".into(),
                ));
            }
        };
        if held != manifest.blobs {
            return Err(BackupError::Damaged(format!(
                "the manifest describes {} blobs of {} bytes; the answer held {} of {}",
                manifest.blobs.count, manifest.blobs.bytes, held.count, held.bytes
            )));
        }
        Ok(manifest)
    }
}

/// A new x25519 identity: its secret text (for an identity file) and its public recipient.
pub fn generate_identity() -> (String, String) {
    use age::secrecy::ExposeSecret as _;
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    (identity.to_string().expose_secret().to_owned(), public)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
