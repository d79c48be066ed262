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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .fmt_fields(DefaultFields::new())
        .event_format(WithNodeId {
            node_id,
            inner: Format::default(),
        })
        .try_init();
}
