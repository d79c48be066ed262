//! Owner-only files: the one check "can group or others reach this path?" (used for the data
//! directory here and for the KEK file in the `node` crate) and creating the data directory
//! with mode 0700.
//!
//! Owns the mode policy on Unix. Everything a node keeps (Raft log, sled tree, snapshots, its
//! sealed TLS key) lives under `data_dir`, so a data directory that only its owner can enter
//! makes every file in it unreachable to other users, whatever mode sled or a later file
//! gives them; the `conclave` binary also sets its umask to 0077 so the files themselves are
//! 0600. On Windows the same rule is an ACL (`owner_acl`): the directory is created with a
//! protected DACL for the service account, SYSTEM and Administrators, which every file in it
//! inherits, and a directory whose DACL admits Everyone, Users or Authenticated Users is
//! refused. Must never loosen a mode or an ACL, and never use a Linux-only call outside
//! `cfg(unix)`.

use std::io;
use std::path::Path;

/// The permission bits of `path` that group or others hold (`mode & 0o077`), and the full
/// permission bits for the message; `Ok(None)` when none (or not on Unix).
pub fn shared_mode(path: &Path) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = std::fs::metadata(path)?;
        Ok(None)
    }
}

/// Why a data directory is not usable.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    #[error("cannot create or read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: io::Error,
    },
    /// Group or others hold permissions on it (`mode`, octal in the message).
    #[error(
        "data_dir {path} has mode {mode:o}: other users can reach the node's data; run `chmod 700 {path}`"
    )]
    Shared { path: std::path::PathBuf, mode: u32 },
    /// Windows: its DACL lets a broad group reach it (`why`).
    #[error(
        "data_dir {path}: {why}, so other users can reach the node's data; run `{remedy}`",
        remedy = crate::storage::owner_acl::AclRefusal::remedy(&.path.display(), true)
    )]
    SharedAcl {
        path: std::path::PathBuf,
        why: crate::storage::owner_acl::AclRefusal,
    },
}

/// Creates `dir` (and missing parents) with mode 0700 when it does not exist, then refuses it
/// when group or others hold any permission on it, exactly as the KEK file is refused.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    let io_err = |source| PrivateDirError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        create_private(dir).map_err(io_err)?;
    }
    #[cfg(windows)]
    if let Some(why) = crate::storage::owner_acl::refusal(dir).map_err(io_err)? {
        return Err(PrivateDirError::SharedAcl {
            path: dir.to_path_buf(),
            why,
        });
    }
    match shared_mode(dir).map_err(io_err)? {
        Some(mode) => Err(PrivateDirError::Shared {
            path: dir.to_path_buf(),
            mode,
        }),
        None => Ok(()),
    }
}

/// Creates `dir` owner-only, durably (a data directory whose entry a power cut undoes would
/// take the node's TLS files, written by `provision` before the first start, with it).
#[cfg(not(windows))]
fn create_private(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    crate::storage::fsutil::create_dir_all_durable(dir, &mut builder)
}

/// Windows: the missing parents as usual, the directory itself with the owner-only DACL.
/// Durable without a directory flush: NTFS journals the creation, and the first file made
/// durable inside it (`FlushFileBuffers`) commits that journal record with its own metadata.
#[cfg(windows)]
fn create_private(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::storage::fsutil::create_dir_all_durable(parent, &mut std::fs::DirBuilder::new())?;
    }
    crate::storage::owner_acl::create_dir_private(dir)
}

#[cfg(all(test, windows))]
#[allow(clippy::unwrap_used)]
mod windows_tests {
    //! Runs under Wine in CI (ops/windows/unit-tests.sh): Wine stores a file's security
    //! descriptor and returns it from GetNamedSecurityInfoW, so both halves are real there.
    use super::*;
    use crate::storage::owner_acl::{self, AceType, SidKind};

    #[test]
    fn created_with_an_owner_only_dacl() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b");
        ensure_private_dir(&dir).unwrap();
        let dacl = owner_acl::read_dacl(&dir).unwrap().unwrap();
        assert!(!dacl.is_empty());
        for ace in &dacl {
            assert_eq!(ace.ace_type, AceType::Allow);
            assert!(
                !matches!(owner_acl::sid_kind(&ace.sid), SidKind::Broad(_)),
                "{ace:?}"
            );
        }
        // Not checked here: that a file created inside inherits the DACL. Windows applies
        // the inheritable entries; Wine does not (a file created without a descriptor gets
        // one derived from its Unix mode, 0644: Everyone may read), so under Wine that half
        // would fail for Wine's reason. The node's secret files are created with their own
        // owner-only descriptor (`create_file_private`) and do not depend on inheritance.
        ensure_private_dir(&dir).unwrap();
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_owner_only_and_shared_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, PrivateDirError::Shared { mode: 0o750, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }
}
