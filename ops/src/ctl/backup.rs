//! `conclavectl backup`: download a backup body (the state and every live file's content) from
//! any node, encrypt it on this machine, and write it so a file under the final name is always
//! complete; `backup verify` checks a file offline (every record and every blob's sha256);
//! `backup keygen` makes an age identity.
//!
//! Owns the key options (where a passphrase may come from: a file or the environment, never
//! the command line), the `.partial` file and its rename, and the text shown. The file format
//! is `ops::backup_file`'s. Must never print or log a passphrase or the backup's secrets, and
//! never leave a file under the final name that is not a complete, checked backup.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ops::Client;
use ops::backup_file::{self, BackupError, BackupKey, BackupWriter, BodyCheck, Manifest};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::args::{BackupArgs, BackupCommand};
use super::failure::{EXIT_OK, Failure};

/// The environment variable a passphrase may come from (a service reads it from a
/// credentials file; an argument would be visible to every user through `ps`).
const PASSPHRASE_ENV: &str = "CONCLAVE_BACKUP_PASSPHRASE";

/// Runs `backup ...`; `client` is built only for taking a backup (verify and keygen are
/// offline).
pub(crate) async fn run(
    args: BackupArgs,
    client: impl FnOnce() -> Result<Client, Failure>,
    json: bool,
) -> Result<u8, Failure> {
    match args.command {
        Some(BackupCommand::Verify {
            file,
            passphrase_file,
            identity,
        }) => {
            let key = match identity {
                Some(path) => BackupKey::Identity(path),
                None => BackupKey::Passphrase(passphrase(passphrase_file.as_deref())?),
            };
            verify(&file, &key, json)
        }
        Some(BackupCommand::Keygen { out }) => keygen(&out, json),
        None => {
            let Some(out) = args.out else {
                return Err(Failure::usage("backup needs --out FILE"));
            };
            let key = if args.recipient.is_empty() {
                let p = passphrase(args.passphrase_file.as_deref())?;
                // Before anything is downloaded: a refused passphrase costs nothing.
                backup_file::check_new_passphrase(&p).map_err(key_failure)?;
                BackupKey::Passphrase(p)
            } else {
                BackupKey::Recipients(args.recipient)
            };
            take(client()?, &out, &key, args.sessions, json).await
        }
    }
}

/// The passphrase from `file` (its first line), else from the environment.
fn passphrase(file: Option<&Path>) -> Result<String, Failure> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format_args!(
                "cannot read the passphrase file {}: {e}",
                path.display()
            ))
        })?,
        None => std::env::var(PASSPHRASE_ENV).map_err(|_| {
            Failure::usage(format_args!(
                "no key: give --passphrase-file FILE, set {PASSPHRASE_ENV}, or (to take a \
                 backup) --recipient age1..."
            ))
        })?,
    };
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(Failure::usage("the passphrase is empty"));
    }
    Ok(line.to_owned())
}

fn key_failure(err: BackupError) -> Failure {
    match err {
        BackupError::Key(_) => Failure::usage(err),
        _ => Failure::local(err),
    }
}

/// Removes the `.partial` file unless the backup completed.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: the error being reported matters more than a leftover file.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Hashes and counts the encrypted bytes on their way to the file.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What `backup` reports.
#[derive(Serialize)]
struct Taken<'a> {
    file: String,
    size: u64,
    sha256: String,
    server: &'a str,
    manifest: &'a Manifest,
}

async fn take(
    client: Client,
    out: &Path,
    key: &BackupKey,
    sessions: bool,
    json: bool,
) -> Result<u8, Failure> {
    if out.exists() {
        return Err(Failure::local(format_args!(
            "{} exists; refusing to overwrite a backup",
            out.display()
        )));
    }
    let mut partial_name = out.as_os_str().to_owned();
    partial_name.push(".partial");
    let mut partial = Partial {
        path: PathBuf::from(partial_name),
        done: false,
    };
    let file = create_owner_only(&partial.path)?;
    let write_failed =
        |e: std::io::Error| Failure::local(format_args!("cannot write {}: {e}", out.display()));
    let mut writer = BackupWriter::new(
        BufWriter::with_capacity(
            256 * 1024,
            Hashing {
                inner: file,
                hasher: Sha256::new(),
                bytes: 0,
            },
        ),
        key,
    )
    .map_err(key_failure)?;

    let mut download = client.backup(sessions).await?;
    let mut check = BodyCheck::new();
    while let Some(chunk) = download.chunk().await? {
        check.push(&chunk).map_err(Failure::local)?;
        // Blocking writes on the async thread: this single-threaded CLI has nothing else to
        // run meanwhile, and the next chunk waits in the socket buffer.
        writer.write_all(&chunk).map_err(write_failed)?;
    }
    let manifest = check.finish().map_err(|e| {
        Failure::local(format_args!(
            "{} sent an unusable backup: {e}",
            download.server
        ))
    })?;
    let buffered = writer.finish().map_err(Failure::local)?;
    let hashing = buffered
        .into_inner()
        .map_err(|e| write_failed(e.into_error()))?;
    hashing.inner.sync_all().map_err(write_failed)?;
    let size = hashing.bytes;
    let sha256 = hex::encode(hashing.hasher.finalize());
    drop(hashing.inner);
    std::fs::rename(&partial.path, out).map_err(write_failed)?;
    partial.done = true;
    sync_parent_dir(out);

    let taken = Taken {
        file: out.display().to_string(),
        size,
        sha256,
        server: &download.server,
        manifest: &manifest,
    };
    emit(json, &taken, || {
        format!(
            "backup written to {}\n  size {} bytes, sha256 {}\n{}",
            taken.file,
            taken.size,
            taken.sha256,
            render_manifest(&manifest)
        )
    })
}

fn verify(file: &Path, key: &BackupKey, json: bool) -> Result<u8, Failure> {
    let input = File::open(file)
        .map_err(|e| Failure::local(format_args!("cannot open {}: {e}", file.display())))?;
    let manifest = backup_file::verify(input, key).map_err(|e| match e {
        BackupError::Key(_) => Failure::usage(format_args!("{}: {e}", file.display())),
        _ => Failure::local(format_args!("{}: {e}", file.display())),
    })?;
    emit(json, &manifest, || {
        format!(
            "{}: OK, every record and blob checked\n{}",
            file.display(),
            render_manifest(&manifest)
        )
    })
}

fn keygen(out: &Path, json: bool) -> Result<u8, Failure> {
    let (secret, public) = backup_file::generate_identity();
    let mut file = super::ca::create_private(out)?;
    file.write_all(
        format!("# conclavectl backup keygen\n# public key: {public}\n{secret}\n").as_bytes(),
    )
    .and_then(|()| file.sync_all())
    .map_err(|e| Failure::local(format_args!("cannot write {}: {e}", out.display())))?;
    emit(
        json,
        &serde_json::json!({ "identity_file": out.display().to_string(), "recipient": public }),
        || {
            format!(
                "identity written to {} (keep it offline; it decrypts every backup made to it)\nrecipient: {public}\n",
                out.display()
            )
        },
    )
}

/// The manifest as indented lines.
fn render_manifest(m: &Manifest) -> String {
    let clean = super::render::sanitize;
    format!(
        "  workspace {}, root fingerprint {}\n  index {} (term {}), served by node {}, conclave {}\n  created {} (unix ms)\n  state: {} records, {} bytes, sha256 {}\n  files: {} blobs, {} bytes{}\n  sessions {}\n",
        clean(&m.workspace),
        clean(&m.root_fingerprint),
        m.index,
        m.term,
        m.served_by,
        clean(&m.conclave_version),
        m.created_at_ms,
        m.state.records,
        m.state.bytes,
        clean(&m.state.sha256),
        m.blobs.count,
        m.blobs.bytes,
        if api::backup::has_blob_section(m.format) {
            ""
        } else {
            " (a format 1 backup: file contents not included)"
        },
        if m.includes_sessions {
            "included"
        } else {
            "not included"
        },
    )
}

fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> Result<u8, Failure> {
    let out = if json {
        let mut s = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::local(format_args!("cannot encode result: {e}")))?;
        s.push('\n');
        s
    } else {
        text()
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(EXIT_OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::stdout_closed()),
        Err(e) => Err(Failure::local(format_args!("cannot write to stdout: {e}"))),
    }
}

/// A new file only its owner can read (a leftover `.partial` of a failed run is replaced).
fn create_owner_only(path: &Path) -> Result<File, Failure> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .map_err(|e| Failure::local(format_args!("cannot create {}: {e}", path.display())))
}

/// Makes the rename durable where directories can be synced (not on Windows, whose rename is
/// durable once the file's data is).
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // The backup is complete and synced; a failed directory sync only risks the name.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
