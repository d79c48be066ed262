//! The node's one metrics `Registry` and the metrics of the layers this crate owns: DNS
//! (queries by rcode, rate-limited), TLS (handshake failures by reason, the node certificate's
//! time left), the process (resident memory, open file descriptors) and the build.
//!
//! Owns [`registry`], which `run` builds once per start of the node from every layer's
//! `register` (`cluster::metrics`, `web::metrics`, this module) and hands to the web layer's
//! `GET /metrics`. Counters are process-wide statics (see `cluster::metrics` for why).
//!
//! Must never use a label whose values come from the network or from users (a client's
//! address, a query name): labels here are fixed vocabularies. Process figures come from
//! `/proc/self` on Linux only; elsewhere they are left out, never guessed.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

type OneLabel = [(&'static str, &'static str); 1];

struct Metrics {
    dns_queries: Family<OneLabel, Counter>,
    dns_rate_limited: Family<OneLabel, Counter>,
    tls_handshake_failures: Family<OneLabel, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    dns_queries: Family::default(),
    dns_rate_limited: Family::default(),
    tls_handshake_failures: Family::default(),
});

/// One DNS answer sent (or attempted), by its response code.
pub fn dns_answered(rcode: hickory_server::proto::op::ResponseCode) {
    use hickory_server::proto::op::ResponseCode as R;
    let rcode = match rcode {
        R::NoError => "NOERROR",
        R::FormErr => "FORMERR",
        R::ServFail => "SERVFAIL",
        R::NXDomain => "NXDOMAIN",
        R::NotImp => "NOTIMP",
        R::Refused => "REFUSED",
        R::BADVERS => "BADVERS",
        _ => "OTHER",
    };
    METRICS.dns_queries.get_or_create(&[("rcode", rcode)]).inc();
}

/// One UDP query the rate limiter dropped (`drop`) or answered truncated (`slip`).
pub fn dns_rate_limited(action: &'static str) {
    METRICS
        .dns_rate_limited
        .get_or_create(&[("action", action)])
        .inc();
}

/// One failed TLS handshake on the HTTPS port, by a coarse reason read from the error.
pub fn tls_handshake_failed(error: Option<&std::io::Error>) {
    METRICS
        .tls_handshake_failures
        .get_or_create(&[("reason", handshake_reason(error))])
        .inc();
}

/// A fixed vocabulary for why a handshake failed: `None` is a timeout.
fn handshake_reason(error: Option<&std::io::Error>) -> &'static str {
    let Some(e) = error else {
        return "timeout";
    };
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::AlertReceived(_) => "alert_received",
            rustls::Error::InvalidCertificate(_) => "bad_certificate",
            rustls::Error::PeerIncompatible(_) => "incompatible",
            rustls::Error::NoCertificatesPresented => "no_certificate",
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "invalid_message"
            }
            _ => "protocol",
        };
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => "peer_closed",
        std::io::ErrorKind::InvalidData => "invalid_message",
        _ => "io",
    }
}

/// Builds the registry `GET /metrics` serves for one start of the node.
pub fn registry(node: Arc<cluster::ClusterNode>, data_dir: PathBuf, tls: bool) -> Registry {
    let mut registry = Registry::default();
    cluster::metrics::register(&mut registry, node);
    web::metrics::register(&mut registry);
    let m = &*METRICS;
    registry.register(
        "conclave_dns_queries",
        "DNS queries this node answered, by response code",
        m.dns_queries.clone(),
    );
    registry.register(
        "conclave_dns_rate_limited",
        "UDP DNS queries the per-source rate limit dropped or truncated (action: drop, slip)",
        m.dns_rate_limited.clone(),
    );
    registry.register(
        "conclave_tls_handshake_failures",
        "Failed TLS handshakes on the HTTPS port, by reason",
        m.tls_handshake_failures.clone(),
    );
    registry.register_collector(Box::new(NodeGauges {
        chain: tls.then(|| {
            data_dir
                .join(crate::node_cert::TLS_DIR)
                .join(crate::node_cert::CHAIN_FILE)
        }),
    }));
    registry
}

/// Gauges read at scrape time: build info, the node certificate's expiry, the process.
struct NodeGauges {
    /// This node's certificate chain file (`[tls]` on), re-read at each scrape so a renewal
    /// shows at once.
    chain: Option<PathBuf>,
}

impl fmt::Debug for NodeGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeGauges")
    }
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    let g = ConstGauge::new(value);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for NodeGauges {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let mut info = enc.encode_descriptor(
            "conclave_build_info",
            "Always 1; the labels say which build this node runs",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(info.encode_family(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("BUILD_GIT_COMMIT")),
        ])?)?;
        if let Some(not_after) = self.chain.as_ref().and_then(|p| cert_not_after(p)) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let mut family = enc.encode_descriptor(
                "conclave_tls_certificate_expiry_seconds",
                "Seconds until this node's certificate expires (negative: expired)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(not_after - now)
                .encode(family.encode_family(&[("certificate", "node")])?)?;
        }
        if let Some(rss) = process::resident_bytes() {
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            )?;
        }
        if let Some(fds) = process::open_fds() {
            gauge(
                &mut enc,
                "process_open_fds",
                "Number of open file descriptors",
                fds,
            )?;
        }
        Ok(())
    }
}

/// The leaf's notAfter (Unix seconds), `None` when the file is missing or unreadable (the
/// gauge is then absent, which the expiry alert does not mistake for "far away").
fn cert_not_after(path: &std::path::Path) -> Option<i64> {
    let pem = std::fs::read_to_string(path).ok()?;
    crate::ca::x509::cert_info(&pem).ok().map(|i| i.not_after)
}

#[cfg(target_os = "linux")]
mod process {
    /// `VmRSS` of `/proc/self/status` (the kernel reports it in kB).
    pub fn resident_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Entries of `/proc/self/fd`.
    pub fn open_fds() -> Option<u64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
    }
}

#[cfg(not(target_os = "linux"))]
mod process {
    pub fn resident_bytes() -> Option<u64> {
        None
    }
    pub fn open_fds() -> Option<u64> {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn handshake_reasons_are_a_fixed_vocabulary() {
        assert_eq!(handshake_reason(None), "timeout");
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(handshake_reason(Some(&eof)), "peer_closed");
        let bad = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(handshake_reason(Some(&bad)), "invalid_message");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_figures_are_read_on_linux() {
        assert!(process::resident_bytes().unwrap() > 1024 * 1024);
        assert!(process::open_fds().unwrap() >= 3);
    }
}
