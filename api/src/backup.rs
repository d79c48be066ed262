//! The backup's framing, written once for both ends: the body of `GET /api/v1/admin/backup`
//! (`web` writes it) and the plaintext inside an encrypted backup file (`ops::backup_file`
//! reads and writes it).
//!
//! ```text
//! server body:  u32 LE manifest_len | manifest JSON | u32 LE secrets_len | secrets JSON | state stream
//! backup file:  age( "CONCLAVE-BACKUP\n" | server body )
//! ```
//! The state stream is [`crate::snapshot_stream`]'s format. Owns the [`Manifest`] and
//! [`Secrets`] shapes and the length-prefixed frames around them; must never hold the state
//! stream itself, and never show a secret in `Debug` output.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// First bytes of a backup's plaintext (inside the encryption).
pub const MAGIC: &[u8; 16] = b"CONCLAVE-BACKUP\n";
/// [`Manifest::format`] this code writes and reads.
pub const MANIFEST_FORMAT: u16 = 1;
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
        }
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
