//! The saved session of `conclavectl`: a small JSON file `{"token": ..., "servers": [...],
//! "ca_file": ...}`.
//!
//! Owns where the file lives, and reading, writing (owner-only permissions on unix) and deleting
//! it. It must never log or print the token, and never talk to a server.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `login` leaves behind for later commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedSession {
    pub token: String,
    /// The servers the session was created through, reused when `--server` is not given.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The cluster root the session was created with (`--ca-file`, made absolute), reused when
    /// `--ca-file` is not given: the saved `https://` servers need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// `$HOME/.config/conclave/token` (on Windows `%APPDATA%\conclave\token`).
pub(crate) fn default_path() -> Result<PathBuf, String> {
    #[cfg(windows)]
    let (var, subdirs): (&str, &[&str]) = ("APPDATA", &["conclave"]);
    #[cfg(not(windows))]
    let (var, subdirs): (&str, &[&str]) = ("HOME", &[".config", "conclave"]);

    match std::env::var_os(var) {
        Some(base) if !base.is_empty() => {
            let mut path = PathBuf::from(base);
            path.extend(subdirs);
            path.push("token");
            Ok(path)
        }
        _ => Err(format!("{var} is not set; pass --token-file")),
    }
}

/// Reads the saved session. `Ok(None)` when there is no file (never logged in, or logged out).
pub(crate) fn load(path: &Path) -> Result<Option<SavedSession>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let session: SavedSession = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a conclavectl token file: {e}", path.display()))?;
    if session.token.is_empty() {
        return Err(format!("{} holds an empty token", path.display()));
    }
    Ok(Some(session))
}

/// Writes the session, replacing any previous file atomically.
///
/// The content goes to a fresh temporary file created with mode 0600 and is then renamed over
/// the target: opening the target itself with a mode would not tighten the permissions of an
/// already existing, wider file, and a crash mid-write would leave a truncated token.
pub(crate) fn save(path: &Path, session: &SavedSession) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot write token file {}: {what}: {e}", path.display())
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir).map_err(|e| fail("creating the directory", &e))?;

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".to_owned());
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    // A leftover from a crashed run with the same pid would make create_new fail.
    let _ = std::fs::remove_file(&tmp);

    let json = serde_json::to_vec_pretty(session).map_err(|e| fail("encoding", &e))?;
    let written = open_private(&tmp).and_then(|mut file| {
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("writing", &e));
    }
    Ok(())
}

/// Deletes the token file; a missing file is not an error.
pub(crate) fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot delete {}: {e}", path.display())),
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    // %APPDATA% is already private to the user on Windows.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    // 0700 applies only to directories created here; existing ones are left as they are.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn session() -> SavedSession {
        SavedSession {
            token: "cv1.secret".into(),
            servers: vec![
                "http://127.0.0.1:8080".into(),
                "http://127.0.0.1:8081".into(),
            ],
            ca_file: Some(PathBuf::from("/etc/conclave/root.pem")),
        }
    }

    #[test]
    fn round_trip_creates_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("token");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &session()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(session()));
        // Overwrite with a different session.
        let other = SavedSession {
            token: "cv1.other".into(),
            servers: vec![],
            ca_file: None,
        };
        save(&path, &other).unwrap();
        assert_eq!(load(&path).unwrap(), Some(other));
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("token")]);
        remove(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
        remove(&path).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn file_is_owner_only_even_when_it_existed_wider() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, &session()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn garbage_and_empty_tokens_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "not json").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .contains("not a conclavectl token file")
        );
        std::fs::write(&path, r#"{"token":""}"#).unwrap();
        assert!(load(&path).unwrap_err().contains("empty token"));
        // Old files without servers still load.
        std::fs::write(&path, r#"{"token":"t"}"#).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().servers, Vec::<String>::new());
    }
}
