//! Client of a local ClamAV daemon (`clamd`, Debian's `clamav-daemon`) over its Unix socket.
//!
//! Owns the `INSTREAM` exchange: the command `zINSTREAM\0`, then the file in chunks, each
//! prefixed with its length as a 4-byte big-endian integer, then a zero-length chunk; clamd
//! answers one NUL-terminated line: `stream: OK`, `stream: <signature> FOUND`, or
//! `... ERROR` (e.g. `INSTREAM size limit exceeded. ERROR` once the stream passes clamd's
//! `StreamMaxLength`, after which clamd may close the socket while we are still writing).
//! Streaming the bytes (rather than `SCAN <path>`) means clamd needs no read access to the
//! node's blob directory. Every step has a deadline, so a hung daemon fails an upload instead
//! of holding it forever. Must never decide policy (scan vs. block is the caller's) and never
//! read the whole file into memory.
//!
//! Unix sockets do not exist on Windows: there the function returns
//! [`InspectError::ScannerUnsupported`] and the server still builds and runs (with scanning
//! off).

use std::path::Path;
#[cfg(unix)]
use std::time::Duration;

use super::InspectError;

/// What clamd said about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanVerdict {
    Clean,
    /// Infected, with the name of the signature that matched (e.g. `Eicar-Test-Signature`).
    Infected(String),
}

/// Deadlines of one scan.
#[cfg(unix)]
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// Connecting to the socket (a local daemon answers at once, or is not there).
    connect: Duration,
    /// Writing one chunk or reading a part of the file: clamd reads as fast as it scans.
    io: Duration,
    /// From the end of the stream to clamd's verdict: scanning a 100 MiB archive takes a while.
    verdict: Duration,
}

#[cfg(unix)]
const DEADLINES: Deadlines = Deadlines {
    connect: Duration::from_secs(5),
    io: Duration::from_secs(30),
    verdict: Duration::from_secs(120),
};
/// Bytes per INSTREAM chunk (clamd's own client uses a few KiB; larger means fewer writes).
#[cfg(unix)]
const CHUNK: usize = 64 * 1024;
/// Longest reply accepted (a signature name is short; anything longer is not clamd).
#[cfg(unix)]
const MAX_REPLY: usize = 4096;

/// Scans `file` with the clamd listening on `socket`.
#[cfg(unix)]
pub async fn scan_file(socket: &Path, file: &Path) -> Result<ScanVerdict, InspectError> {
    scan_with(socket, file, DEADLINES).await
}

#[cfg(unix)]
async fn scan_with(
    socket: &Path,
    file: &Path,
    deadlines: Deadlines,
) -> Result<ScanVerdict, InspectError> {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;

    let unavailable = |reason: String| InspectError::ScannerUnavailable {
        socket: socket.to_owned(),
        reason,
    };
    let io_err = |source: std::io::Error| InspectError::Io {
        path: file.to_owned(),
        source,
    };
    // Open the file first: a missing file is our error, not the scanner's.
    let mut input = tokio::fs::File::open(file).await.map_err(io_err)?;
    let mut stream =
        tokio::time::timeout(deadlines.connect, tokio::net::UnixStream::connect(socket))
            .await
            .map_err(|_| unavailable(format!("no connection within {:?}", deadlines.connect)))?
            .map_err(|e| unavailable(e.to_string()))?;

    // A write error while streaming usually means clamd gave up on the stream (size limit)
    // and closed its side: its reply, if any, says why, so read it before reporting.
    let sent: Result<(), String> = async {
        tokio::time::timeout(deadlines.io, stream.write_all(b"zINSTREAM\0"))
            .await
            .map_err(|_| "command timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = tokio::time::timeout(deadlines.io, input.read(&mut buf))
                .await
                .map_err(|_| "reading the file timed out".to_owned())?
                .map_err(|e| format!("read file: {e}"))?;
            if n == 0 {
                break;
            }
            let len = u32::try_from(n).map_err(|e| e.to_string())?;
            let mut frame = Vec::with_capacity(4 + n);
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&buf[..n]);
            tokio::time::timeout(deadlines.io, stream.write_all(&frame))
                .await
                .map_err(|_| "sending a chunk timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        }
        tokio::time::timeout(deadlines.io, stream.write_all(&0u32.to_be_bytes()))
            .await
            .map_err(|_| "ending the stream timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;

    let mut reply = Vec::new();
    let read = tokio::time::timeout(deadlines.verdict, async {
        let mut byte = [0u8; 512];
        loop {
            let n = stream.read(&mut byte).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&byte[..n]);
            if reply.contains(&0) || reply.len() > MAX_REPLY {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    let text = String::from_utf8_lossy(reply.split(|b| *b == 0).next().unwrap_or(&[]))
        .trim()
        .to_owned();
    if text.is_empty() {
        // Nothing usable came back: report the first failure seen.
        return Err(match (sent, read) {
            (Err(e), _) if e.starts_with("read file") => io_err(std::io::Error::other(e)),
            (Err(e), _) => unavailable(format!("while streaming: {e}")),
            (Ok(()), Err(_)) => unavailable(format!("no verdict within {:?}", deadlines.verdict)),
            (Ok(()), Ok(Err(e))) => unavailable(format!("reading the verdict: {e}")),
            (Ok(()), Ok(Ok(()))) => InspectError::ScannerProtocol(
                "clamd closed the connection without a verdict".into(),
            ),
        });
    }
    parse_reply(&text)
}

/// Without Unix sockets there is no way to reach clamd.
#[cfg(not(unix))]
pub async fn scan_file(_socket: &Path, _file: &Path) -> Result<ScanVerdict, InspectError> {
    Err(InspectError::ScannerUnsupported)
}

/// clamd's one-line answer to INSTREAM (without its NUL). Only the Unix-socket path calls it;
/// the unit tests run it everywhere.
#[cfg_attr(not(unix), allow(dead_code))]
fn parse_reply(text: &str) -> Result<ScanVerdict, InspectError> {
    if text.contains("size limit exceeded") {
        return Err(InspectError::ScanSizeLimit);
    }
    if let Some(rest) = text.strip_suffix(" ERROR") {
        return Err(InspectError::ScannerProtocol(rest.trim().to_owned()));
    }
    // `stream: OK`; with IDSESSION there may be an `<id>: ` prefix, never used here.
    let body = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if body == "OK" {
        return Ok(ScanVerdict::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        let name = name.trim();
        if !name.is_empty() {
            return Ok(ScanVerdict::Infected(name.to_owned()));
        }
    }
    Err(InspectError::ScannerProtocol(format!(
        "unexpected reply {text:?}"
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed() {
        assert_eq!(parse_reply("stream: OK").unwrap(), ScanVerdict::Clean);
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature FOUND").unwrap(),
            ScanVerdict::Infected("Eicar-Test-Signature".into())
        );
        assert!(matches!(
            parse_reply("INSTREAM size limit exceeded. ERROR"),
            Err(InspectError::ScanSizeLimit)
        ));
        assert!(matches!(
            parse_reply("stream: Can't allocate memory ERROR"),
            Err(InspectError::ScannerProtocol(_))
        ));
        assert!(matches!(
            parse_reply("HTTP/1.1 400 Bad Request"),
            Err(InspectError::ScannerProtocol(_))
        ));
        assert!(matches!(
            parse_reply("stream:  FOUND"),
            Err(InspectError::ScannerProtocol(_))
        ));
    }

    /// A fake daemon on a Unix socket: checks the framing byte for byte and answers like clamd.
    #[cfg(unix)]
    #[tokio::test]
    async fn the_stream_is_framed_as_clamd_expects() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("clamd.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let file = dir.path().join("f");
        std::fs::write(&file, &content).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut cmd = [0u8; 10];
            s.read_exact(&mut cmd).await.unwrap();
            assert_eq!(&cmd, b"zINSTREAM\0");
            let mut got = Vec::new();
            loop {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).await.unwrap();
                let len = u32::from_be_bytes(len) as usize;
                if len == 0 {
                    break;
                }
                let mut chunk = vec![0u8; len];
                s.read_exact(&mut chunk).await.unwrap();
                got.extend(chunk);
            }
            s.write_all(b"stream: Fake-Signature FOUND\0")
                .await
                .unwrap();
            got
        });
        let verdict = scan_file(&sock, &file).await.unwrap();
        assert_eq!(verdict, ScanVerdict::Infected("Fake-Signature".into()));
        assert_eq!(server.await.unwrap(), content);
    }

    /// A daemon that accepts and never answers: the scan fails after its deadline instead of
    /// hanging (with short deadlines, so the test does not wait 2 minutes).
    #[cfg(unix)]
    #[tokio::test]
    async fn a_silent_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("clamd.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        let _server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            // Hold the connection open, read nothing more.
            std::future::pending::<()>().await;
            drop(s);
        });
        let short = Deadlines {
            connect: Duration::from_secs(5),
            io: Duration::from_secs(5),
            verdict: Duration::from_millis(300),
        };
        let started = std::time::Instant::now();
        match scan_with(&sock, &file, short).await {
            Err(InspectError::ScannerUnavailable { reason, .. }) => {
                assert!(reason.contains("verdict"), "{reason}");
                assert!(started.elapsed() < Duration::from_secs(5));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn an_absent_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        match scan_file(&dir.path().join("nope.sock"), &file).await {
            Err(InspectError::ScannerUnavailable { .. }) => {}
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
