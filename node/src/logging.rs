//! Log setup: `tracing` to stderr, with this node's id on every line (openraft's own tasks do
//! not carry our spans, so the id is added by the formatter rather than by a span).

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct WithNodeId {
    node_id: Option<u64>,
    inner: Format<Full>,
}

impl<S, N> FormatEvent<S, N> for WithNodeId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if let Some(id) = self.node_id {
            write!(writer, "node_id={id} ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// `RUST_LOG` wins over `default_filter` (the config's `log` field).
pub fn init(node_id: Option<u64>, default_filter: &str) {
    let is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    install(node_id, default_filter, std::io::stderr, is_terminal);
}

/// Past this size the log file is moved aside (to `<name>.1`, replacing the previous one) when
/// the process starts: a service with no log rotation of its own keeps at most twice this.
#[cfg_attr(not(windows), allow(dead_code))]
const ROTATE_AT: u64 = 64 * 1024 * 1024;

/// Like `init`, to `path` (appended; moved aside first when over [`ROTATE_AT`]): a Windows
/// service has no stderr anyone reads.
#[cfg_attr(not(windows), allow(dead_code))]
pub fn init_file(
    node_id: Option<u64>,
    default_filter: &str,
    path: &std::path::Path,
) -> std::io::Result<()> {
    let file = open_log(path, ROTATE_AT)?;
    install(node_id, default_filter, std::sync::Mutex::new(file), false);
    Ok(())
}

/// Opens `path` for appending (creating it and its directory), first moving it to `<path>.1`
/// when it is larger than `rotate_at`.
#[cfg_attr(not(windows), allow(dead_code))]
fn open_log(path: &std::path::Path, rotate_at: u64) -> std::io::Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > rotate_at) {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".1");
        std::fs::rename(path, aside)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn install<W>(node_id: Option<u64>, default_filter: &str, writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // hickory's server logs two INFO lines per DNS query: at thousands of queries a second that
    // would be most of the log and much of the CPU. Quiet unless the operator asks for it.
    let asked = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_string());
    if !asked.contains("hickory")
        && let Ok(d) = "hickory_server=warn".parse()
    {
        filter = filter.add_directive(d);
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_env_filter(filter)
        .fmt_fields(DefaultFields::new())
        .event_format(WithNodeId {
            node_id,
            inner: Format::default(),
        })
        .try_init();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    #[test]
    fn the_log_file_is_appended_and_moved_aside_when_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("conclave.log");
        writeln!(super::open_log(&path, 10).unwrap(), "first").unwrap();
        writeln!(super::open_log(&path, 10).unwrap(), "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nsecond\n");
        // Now over 10 bytes: the next open starts a new file and keeps the old one as .1.
        writeln!(super::open_log(&path, 10).unwrap(), "third").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
        let aside = dir.path().join("logs").join("conclave.log.1");
        assert_eq!(std::fs::read_to_string(aside).unwrap(), "first\nsecond\n");
    }
}
