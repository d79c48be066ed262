//! `conclavectl upload` and `download`: a file as chunks in and out of the cluster.
//!
//! Owns reading the local file chunk by chunk (never whole: up to `[files] max_size`), the
//! order of an upload (every chunk, then the post) and the one recovery it knows: a post
//! answered 409 `missing_chunk` (a chunk was collected or lost meanwhile) uploads the chunks
//! again and posts once more. A download goes to `PATH.part` and is renamed into place only
//! when complete. Must never print: the caller renders the result.

use std::path::Path;

use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::failure::Failure;
use api::rest::{PostFileRequest, PostOutcome};

const CHUNK: usize = 8 * 1024 * 1024;

/// Reads `path` in chunks and calls `each` with every chunk; returns the whole file's SHA-256,
/// its size and the chunks' SHA-256s.
async fn chunks(
    path: &Path,
    mut each: impl AsyncFnMut(&[u8]) -> Result<(), Failure>,
) -> Result<(String, u64, Vec<String>), Failure> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Failure::local(format_args!("cannot open {}: {e}", path.display())))?;
    let mut whole = sha2::Sha256::new();
    let mut size = 0u64;
    let mut names = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            let n = f
                .read(&mut buf[filled..])
                .await
                .map_err(|e| Failure::local(format_args!("cannot read {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let piece = &buf[..filled];
        whole.update(piece);
        size += filled as u64;
        names.push(hex::encode(sha2::Sha256::digest(piece)));
        each(piece).await?;
        if filled < CHUNK {
            break;
        }
    }
    Ok((hex::encode(whole.finalize()), size, names))
}

/// Uploads `path` to `channel` and posts it; the post's outcome.
pub(crate) async fn upload(
    client: &ops::Client,
    channel: &str,
    path: &Path,
    name: Option<String>,
    caption: String,
    client_msg_id: String,
) -> Result<PostOutcome, Failure> {
    let name = match name {
        Some(n) => n,
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Failure::local(format_args!("{} has no file name", path.display())))?,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (sha256, size, chunk_names) = chunks(path, async |piece: &[u8]| {
            client.put_chunk(piece).await?;
            Ok(())
        })
        .await?;
        if size == 0 {
            return Err(Failure::local(format_args!(
                "{} is empty; there is nothing to upload",
                path.display()
            )));
        }
        let req = PostFileRequest {
            name: name.clone(),
            size,
            sha256,
            chunks: chunk_names,
            body: caption.clone(),
            client_msg_id: client_msg_id.clone(),
            thread_root: None,
        };
        match client.post_file(channel, &req).await {
            Err(e) if attempt == 1 && e.code() == Some("missing_chunk") => continue,
            other => return other.map_err(Failure::from),
        }
    }
}

/// What a download wrote.
pub(crate) struct Downloaded {
    /// The file's size.
    pub size: u64,
    /// How many bytes of an earlier `.part` were kept (0: downloaded from the start).
    pub resumed_from: u64,
}

/// Downloads file `file_id` into `out`.
///
/// A `PATH.part` left by an interrupted download is resumed: only the rest is asked for
/// (`Range: bytes=N-`). The server sends the file's SHA-256 as its `ETag`, and the finished
/// file is checked against it; a resumed file that does not match (the `.part` was damaged or
/// is of another file) is downloaded once more from the start.
pub(crate) async fn download(
    client: &ops::Client,
    file_id: &str,
    out: &Path,
) -> Result<Downloaded, Failure> {
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let have = tokio::fs::metadata(&part)
        .await
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len());
    if have > 0 {
        match download_into(client, file_id, &part, have).await {
            Ok(size) => {
                finish(&part, out).await?;
                return Ok(Downloaded {
                    size,
                    resumed_from: have,
                });
            }
            // A `.part` as long as the file (or longer) cannot be resumed; one that does not
            // hash right is not worth keeping either: start over.
            Err(Resume::Restart) => {}
            Err(Resume::Failed(f)) => return Err(f),
        }
    }
    match download_into(client, file_id, &part, 0).await {
        Ok(size) => {
            finish(&part, out).await?;
            Ok(Downloaded {
                size,
                resumed_from: 0,
            })
        }
        Err(Resume::Failed(f)) => Err(f),
        Err(Resume::Restart) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(Failure::local(format_args!(
                "the downloaded file {file_id} does not match the SHA-256 the server announced"
            )))
        }
    }
}

/// Why [`download_into`] did not produce a complete file.
enum Resume {
    /// The part on disk cannot be completed: start again from the first byte.
    Restart,
    Failed(Failure),
}

impl From<Failure> for Resume {
    fn from(f: Failure) -> Self {
        Resume::Failed(f)
    }
}

/// Writes file `file_id` into `part` from byte `from` (the bytes before it are already there);
/// the file's total size once complete and checked.
async fn download_into(
    client: &ops::Client,
    file_id: &str,
    part: &Path,
    from: u64,
) -> Result<u64, Resume> {
    let io = |what: &str, e: std::io::Error| Failure::local(format_args!("{what}: {e}"));
    let mut dl = match client.download_file(file_id, from).await {
        Err(e) if from > 0 && e.status() == Some(416) => return Err(Resume::Restart),
        other => other.map_err(Failure::from)?,
    };
    let mut hasher = sha2::Sha256::new();
    let mut f = if dl.offset > 0 {
        // Hash what is already there, then append.
        let mut f = tokio::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(part)
            .await
            .map_err(|e| io(&format!("cannot open {}", part.display()), e))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = dl.offset;
        while left > 0 {
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| io(&format!("cannot read {}", part.display()), e))?;
            if n == 0 {
                return Err(Resume::Restart);
            }
            let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        f.set_len(dl.offset)
            .await
            .map_err(|e| io(&format!("cannot truncate {}", part.display()), e))?;
        f
    } else {
        tokio::fs::File::create(part)
            .await
            .map_err(|e| io(&format!("cannot create {}", part.display()), e))?
    };
    let mut written = 0u64;
    while let Some(piece) = dl.chunk().await.map_err(Failure::from)? {
        f.write_all(&piece)
            .await
            .map_err(|e| io(&format!("cannot write {}", part.display()), e))?;
        hasher.update(&piece);
        written += piece.len() as u64;
    }
    if dl.len.is_some_and(|n| n != written) {
        // Kept: the next run resumes from here.
        return Err(Failure::local(format_args!(
            "{}: the download ended after {written} of {} bytes; run it again to resume",
            dl.server,
            dl.len.unwrap_or_default()
        ))
        .into());
    }
    if dl
        .sha256
        .as_ref()
        .is_some_and(|want| *want != hex::encode(hasher.finalize()))
    {
        return Err(Resume::Restart);
    }
    f.sync_all()
        .await
        .map_err(|e| io(&format!("cannot sync {}", part.display()), e))?;
    Ok(dl.offset + written)
}

/// Renames the complete `part` to `out`.
async fn finish(part: &Path, out: &Path) -> Result<(), Failure> {
    tokio::fs::rename(part, out)
        .await
        .map_err(|e| Failure::local(format_args!("cannot rename to {}: {e}", out.display())))
}
