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

/// Downloads file `file_id` into `out`; the number of bytes written.
pub(crate) async fn download(
    client: &ops::Client,
    file_id: &str,
    out: &Path,
) -> Result<u64, Failure> {
    let mut dl = client.download_file(file_id).await?;
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let io = |what: &str, e: std::io::Error| Failure::local(format_args!("{what}: {e}"));
    let mut f = tokio::fs::File::create(&part)
        .await
        .map_err(|e| io(&format!("cannot create {}", part.display()), e))?;
    let mut written = 0u64;
    while let Some(piece) = dl.chunk().await? {
        f.write_all(&piece)
            .await
            .map_err(|e| io(&format!("cannot write {}", part.display()), e))?;
        written += piece.len() as u64;
    }
    if dl.len.is_some_and(|n| n != written) {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(Failure::local(format_args!(
            "{}: the download ended after {written} of {} bytes",
            dl.server,
            dl.len.unwrap_or_default()
        )));
    }
    f.sync_all()
        .await
        .map_err(|e| io(&format!("cannot sync {}", part.display()), e))?;
    drop(f);
    tokio::fs::rename(&part, out)
        .await
        .map_err(|e| io(&format!("cannot rename to {}", out.display()), e))?;
    Ok(written)
}
