//! Key wrapping: the key-encryption key (KEK) and the sealed form of the CA private keys.
//!
//! Owns the `Kek` (32 random bytes), its file format, and AES-256-GCM sealing of private-key PEM
//! with `ring::aead`, so the CA adds no second crypto stack.
//!
//! Why a separate file: the CA state (certificates and *sealed* keys) is replicated through Raft and
//! lands in every node's sled database and every backup of it. The KEK lives in its own file next
//! to the node's configuration, outside the data directory, so a copied database or backup yields
//! only ciphertext. A joining node receives the KEK over the authenticated join exchange (the
//! joiner has verified the cluster's root fingerprint from its token first); it is never written
//! into the Raft log.
//!
//! Sealed format: `version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)`. The
//! associated data names the key's purpose and certificate serial
//! (`conclave-ca:intermediate:<serial>`), so a blob moved into another slot does not open.
//! Nonces are random: a KEK seals a handful of keys in its life, far below the 2^32 bound for
//! random 96-bit nonces.
//!
//! Must never: print or log key material (`Kek` and `SecretPem` have redacted `Debug`), write the
//! KEK anywhere but its own owner-only file (mode 0600 on Unix; on Windows a protected DACL for
//! the service account, SYSTEM and Administrators, `cluster::storage::owner_acl`), or panic on
//! a wrong key or damaged blob.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::error::CaError;

/// Current sealed-blob format version; bump it (and keep opening the old one) if the format changes.
const SEAL_VERSION: u8 = 1;
const KEK_LEN: usize = 32;
/// First token of the KEK file, so a wrong file is recognised rather than misread.
const KEK_FILE_TAG: &str = "conclave-kek-v1";

/// The key-encryption key. Not `Clone`: there should be one copy in memory, zeroed on drop.
pub struct Kek([u8; KEK_LEN]);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

impl Drop for Kek {
    fn drop(&mut self) {
        // Best effort without `unsafe` or a zeroize dependency: black_box keeps the optimiser from
        // proving the store dead. Copies made by moves are not covered; that is accepted.
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// A private key that was unsealed: PEM text, zeroed on drop, never `Debug`-printed.
pub struct SecretPem(String);

impl SecretPem {
    /// The PEM text. Keep the borrow short; do not copy it into long-lived strings.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn new(pem: String) -> Self {
        Self(pem)
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem([redacted])")
    }
}

impl Drop for SecretPem {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// A private key sealed under the KEK; safe to replicate and store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    blob: Vec<u8>,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedKey({} bytes)", self.blob.len())
    }
}

impl Kek {
    /// A fresh random KEK.
    pub fn generate() -> Result<Self, CaError> {
        let mut bytes = [0u8; KEK_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| CaError::Random)?;
        Ok(Self(bytes))
    }

    /// Seal `plaintext` (a private-key PEM) bound to `purpose` (e.g. `intermediate:<serial>`).
    pub fn seal(&self, plaintext: &[u8], purpose: &str) -> Result<SealedKey, CaError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CaError::Random)?;
        let mut buf = plaintext.to_vec();
        // ring refuses only inputs beyond AES-GCM's ~64 GiB limit; a key PEM is a few hundred bytes.
        self.aead_key()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(purpose)),
                &mut buf,
            )
            .map_err(|_| CaError::Random)?;
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        blob.push(SEAL_VERSION);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&buf);
        Ok(SealedKey { blob })
    }

    /// Open a sealed key; fails cleanly on a wrong KEK, a wrong purpose or any tampering.
    pub fn open(&self, sealed: &SealedKey, purpose: &str) -> Result<SecretPem, CaError> {
        let unseal_err = || CaError::Unseal {
            purpose: purpose.to_owned(),
        };
        let (&version, rest) = sealed.blob.split_first().ok_or_else(unseal_err)?;
        if version != SEAL_VERSION {
            return Err(CaError::SealVersion(version));
        }
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(unseal_err());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unseal_err())?;
        let mut buf = ciphertext.to_vec();
        let plain_len = self
            .aead_key()?
            .open_in_place(nonce, Aad::from(aad(purpose)), &mut buf)
            .map_err(|_| unseal_err())?
            .len();
        buf.truncate(plain_len);
        match String::from_utf8(buf) {
            Ok(pem) => Ok(SecretPem(pem)),
            Err(e) => {
                let mut bytes = e.into_bytes();
                bytes.fill(0);
                Err(unseal_err())
            }
        }
    }

    fn aead_key(&self) -> Result<LessSafeKey, CaError> {
        // Only fails for a wrong key length, which the type rules out; mapped rather than unwrapped.
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| CaError::Random)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// The KEK as one line of text, as stored in the file (also the form the join exchange sends).
    pub fn to_text(&self) -> SecretPem {
        SecretPem(format!("{KEK_FILE_TAG} {}\n", hex::encode(self.0)))
    }

    /// Parse the text form written by [`Kek::to_text`].
    pub fn from_text(text: &str) -> Result<Self, CaError> {
        parse_text(text).map_err(|why| CaError::KekText { why })
    }

    /// Load the KEK from `path`, refusing a file that group or others can read (on Windows: whose
    /// DACL admits Everyone, Users or Authenticated Users, or that has no DACL).
    pub fn load(path: &Path) -> Result<Self, CaError> {
        let io = |source| CaError::KekIo {
            path: path.to_owned(),
            source,
        };
        // The same owner-only rule as the data directory (`cluster::storage::private_dir`).
        #[cfg(windows)]
        if let Some(why) = cluster::storage::owner_acl::refusal(path).map_err(io)? {
            return Err(CaError::KekAcl {
                path: path.to_owned(),
                why,
            });
        }
        if let Some(mode) = cluster::storage::private_dir::shared_mode(path).map_err(io)? {
            return Err(CaError::KekPermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = SecretPem(std::fs::read_to_string(path).map_err(io)?);
        parse_text(text.expose()).map_err(|why| CaError::KekFormat {
            path: path.to_owned(),
            why,
        })
    }

    /// Write this KEK to a new file at `path` (mode 0600). Never overwrites an existing file:
    /// losing the old KEK would make every sealed CA key unreadable.
    pub fn create_file(&self, path: &Path) -> Result<(), CaError> {
        let io = |source| CaError::KekIo {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().ok_or_else(|| CaError::KekFormat {
            path: path.to_owned(),
            why: "the path has no file name",
        })?;
        let mut suffix = [0u8; 8];
        SystemRandom::new()
            .fill(&mut suffix)
            .map_err(|_| CaError::Random)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            file_name.to_string_lossy(),
            hex::encode(suffix)
        ));
        let result = write_new_private(&tmp, self.to_text().expose().as_bytes())
            // A hard link is an atomic "rename unless the target exists" on one filesystem.
            .and_then(|()| std::fs::hard_link(&tmp, path))
            .and_then(|()| link_durable(path, &dir));
        // The temp name is ours alone (random suffix); removing it is safe whatever happened.
        let _ = std::fs::remove_file(&tmp);
        result.map_err(io)
    }

    /// Load the KEK at `path`, or generate and write one if the file does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, CaError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kek = Self::generate()?;
                kek.create_file(path)?;
                Ok(kek)
            }
            Err(source) => Err(CaError::KekIo {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

fn parse_text(text: &str) -> Result<Kek, &'static str> {
    let mut parts = text.split_whitespace();
    if parts.next() != Some(KEK_FILE_TAG) {
        return Err("missing the conclave-kek-v1 tag");
    }
    let hex_key = parts.next().ok_or("missing the key")?;
    if parts.next().is_some() {
        return Err("trailing data after the key");
    }
    let mut bytes = [0u8; KEK_LEN];
    hex::decode_to_slice(hex_key, &mut bytes).map_err(|_| "the key is not 64 hex digits")?;
    Ok(Kek(bytes))
}

fn aad(purpose: &str) -> Vec<u8> {
    format!("conclave-ca:{purpose}").into_bytes()
}

/// Create `path` (must not exist) owner-only (mode 0600; on Windows the owner-only DACL from
/// the first moment, which the hard link shares), write `data` and fsync it.
fn write_new_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    #[cfg(windows)]
    let mut file = cluster::storage::owner_acl::create_file_private(path)?;
    #[cfg(not(windows))]
    let mut file = {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(path)?
    };
    file.write_all(data)?;
    file.sync_all()
}

/// Make the new directory entry `path` in `dir` durable, so a crash cannot lose a KEK we already
/// used to seal. Unix: fsync the directory. Windows has no directory fsync and no write-through
/// hard link; `FlushFileBuffers` through the new link flushes the file's metadata, which on NTFS
/// commits the metadata log holding the new entry (docs/architecture.md, "Durability per
/// platform").
fn link_durable(path: &Path, dir: &Path) -> std::io::Result<()> {
    #[cfg(windows)]
    {
        let _ = dir;
        cluster::storage::fsutil::sync_file(path)
    }
    #[cfg(not(windows))]
    {
        let _ = path;
        cluster::storage::fsutil::sync_dir(dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    #[test]
    fn round_trip() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal(PEM.as_bytes(), "intermediate:01").unwrap();
        assert_eq!(kek.open(&sealed, "intermediate:01").unwrap().expose(), PEM);
    }

    #[test]
    fn wrong_kek_fails() {
        let sealed = Kek::generate()
            .unwrap()
            .seal(PEM.as_bytes(), "root:01")
            .unwrap();
        let err = Kek::generate()
            .unwrap()
            .open(&sealed, "root:01")
            .unwrap_err();
        assert!(matches!(err, CaError::Unseal { .. }), "{err}");
    }

    #[test]
    fn wrong_purpose_fails() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal(PEM.as_bytes(), "root:01").unwrap();
        assert!(matches!(
            kek.open(&sealed, "intermediate:01"),
            Err(CaError::Unseal { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_fails() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal(PEM.as_bytes(), "root:01").unwrap();
        for i in 0..sealed.blob.len() {
            let mut bad = sealed.clone();
            bad.blob[i] ^= 0x01;
            assert!(kek.open(&bad, "root:01").is_err(), "byte {i} flipped");
        }
        let truncated = SealedKey {
            blob: sealed.blob[..10].to_vec(),
        };
        assert!(kek.open(&truncated, "root:01").is_err());
        assert!(kek.open(&SealedKey { blob: vec![] }, "root:01").is_err());
    }

    #[test]
    fn blob_does_not_contain_plaintext() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal(PEM.as_bytes(), "root:01").unwrap();
        let contains = |needle: &[u8]| sealed.blob.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(b"PRIVATE KEY"));
        assert!(!contains(b"MIGHAgEAMBMG"));
    }

    #[test]
    fn debug_is_redacted() {
        let kek = Kek::generate().unwrap();
        let text = kek.to_text();
        assert_eq!(format!("{kek:?}"), "Kek([redacted])");
        assert_eq!(format!("{text:?}"), "SecretPem([redacted])");
    }

    #[test]
    fn file_round_trip_mode_and_no_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.kek");
        let kek = Kek::load_or_create(&path).unwrap();
        let sealed = kek.seal(PEM.as_bytes(), "root:01").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Kek::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed, "root:01").unwrap().expose(), PEM);
        // Creating over an existing KEK must fail rather than orphan the sealed keys.
        assert!(Kek::generate().unwrap().create_file(&path).is_err());
        assert_eq!(
            Kek::load(&path)
                .unwrap()
                .open(&sealed, "root:01")
                .unwrap()
                .expose(),
            PEM
        );
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.kek");
        Kek::generate().unwrap().create_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            Kek::load(&path),
            Err(CaError::KekPermissions { mode: 0o640, .. })
        ));
    }

    #[test]
    fn malformed_text_is_refused() {
        assert!(Kek::from_text("conclave-kek-v1 abcd").is_err());
        assert!(Kek::from_text("something-else 00").is_err());
        assert!(Kek::from_text("").is_err());
    }
}
