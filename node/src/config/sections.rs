//! The sections of the configuration file (`[raft]`, `[write]`, `[storage]`, `[dns]`, `[ca]`,
//! `[tls]`, `[metrics]`) and their defaults.
//!
//! Owns the defaults of the file's sections. Must never define a default the cluster layer
//! owns a second time: `[raft]`, `[write]` and `[storage]` mirror `ClusterConfig::with_defaults`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The built-in certificate authority (docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaSection {
    /// The key-encryption key file. Default `conclave.kek` next to the config file: never in
    /// `data_dir`, so a copied data directory or backup does not carry it.
    pub kek_file: Option<PathBuf>,
    /// Address ranges the CA may certify (CIDR); baked into the issuing CA at `init`.
    pub permitted_ip_ranges: Vec<String>,
    /// Lifetime of node certificates, in days.
    pub node_cert_days: u32,
    /// Default lifetime of certificates signed for other LAN services, in days.
    pub service_cert_days: u32,
    /// CRL distribution point written into every certificate issued, if set (e.g.
    /// `http://chat.corp.lan:8080/api/v1/ca/crl.pem`). Fixed at `init`.
    pub crl_url: Option<String>,
}

/// `[tls]`: its presence turns TLS on for this node (docs/configuration.md). The client API is
/// then served over HTTPS on `https_addr`, `api_addr` becomes the plain-HTTP port (redirects,
/// trust page, health), and the cluster port requires mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub https_addr: SocketAddr,
    /// The HTTPS address other nodes and clients are told (like `advertise_api_addr`).
    #[serde(default)]
    pub advertise_https_addr: Option<String>,
    /// Node certificate lifetime in seconds, overriding `ca.node_cert_days`. For tests that
    /// want to see a renewal; production leaves it unset.
    #[serde(default)]
    pub node_cert_secs: Option<u64>,
}

/// `[metrics]`: `GET /metrics` (Prometheus text format) on the client API port: HTTPS with
/// `[tls]`, the plain API port without; never on the plain-HTTP redirect port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve `/metrics` at all (default true; false answers 404).
    pub enabled: bool,
    /// A file holding the token scrapers must send as `Authorization: Bearer <token>`
    /// (at least 16 characters; surrounding whitespace ignored). Unset: no token needed.
    /// Relative paths resolve against the config file's directory.
    pub bearer_token_file: Option<PathBuf>,
}

impl MetricsSection {
    /// The token file, resolved against the config file's directory `config_dir`.
    pub fn token_path(&self, config_dir: &Path) -> Option<PathBuf> {
        let file = self.bearer_token_file.as_ref()?;
        Some(if file.is_absolute() {
            file.clone()
        } else {
            config_dir.join(file)
        })
    }

    /// The scrape token (`None` when none is configured). Read at every start, so a rotated
    /// token takes effect with a restart.
    pub fn token(&self, config_dir: &Path) -> Result<Option<String>, ConfigError> {
        let Some(path) = self.token_path(config_dir) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid(format!(
                "metrics.bearer_token_file {}: the token must be at least {MIN_TOKEN_CHARS} characters, without spaces",
                path.display()
            )));
        }
        Ok(Some(token.to_owned()))
    }
}

/// A scrape token shorter than this is refused: it would be guessable.
const MIN_TOKEN_CHARS: usize = 16;

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            bearer_token_file: None,
        }
    }
}

/// The private and loopback ranges: everything a LAN-only site can use, nothing routable on the
/// Internet. A root that phones trust must not be able to vouch for a public address.
pub const DEFAULT_PERMITTED_IP_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "fc00::/7",
    "::1/128",
];

impl Default for CaSection {
    fn default() -> Self {
        Self {
            kek_file: None,
            permitted_ip_ranges: DEFAULT_PERMITTED_IP_RANGES
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            node_cert_days: 7,
            service_cert_days: 90,
            crl_url: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub install_snapshot_timeout_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    pub max_payload_entries: u64,
    pub ready_max_apply_lag: u64,
}

/// The cluster layer owns the defaults (`ClusterConfig::with_defaults`); the file's sections
/// only mirror them, so a default is changed in one place.
fn cluster_defaults() -> cluster::ClusterConfig {
    cluster::ClusterConfig::with_defaults(0, PathBuf::new(), cluster::NodeInfo::default())
}

/// Bytes per MiB (`storage.cache_mb`).
pub(super) const MIB: u64 = 1024 * 1024;

impl Default for RaftSection {
    fn default() -> Self {
        let d = cluster_defaults();
        Self {
            heartbeat_interval_ms: d.heartbeat_interval_ms,
            election_timeout_min_ms: d.election_timeout_min_ms,
            election_timeout_max_ms: d.election_timeout_max_ms,
            install_snapshot_timeout_ms: d.install_snapshot_timeout_ms,
            snapshot_logs_since_last: d.snapshot_logs_since_last,
            max_in_snapshot_log_to_keep: d.max_in_snapshot_log_to_keep,
            max_payload_entries: d.max_payload_entries,
            ready_max_apply_lag: d.ready_max_apply_lag,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteSection {
    pub batch_max_commands: usize,
    pub batch_max_bytes: usize,
    pub batch_max_in_flight: usize,
    pub timeout_ms: u64,
}

impl Default for WriteSection {
    fn default() -> Self {
        let d = cluster_defaults();
        Self {
            batch_max_commands: d.batch_max_commands,
            batch_max_bytes: d.batch_max_bytes,
            batch_max_in_flight: d.batch_max_in_flight,
            timeout_ms: d.write_timeout_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub cache_mb: u64,
    /// Free-space watermark of the data directory, in bytes (0 = off).
    pub min_free_bytes: u64,
    /// Raft log segment size in bytes (at least 4096; small values are for tests).
    pub log_segment_bytes: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        let d = cluster_defaults();
        Self {
            cache_mb: d.sled_cache_bytes / MIB,
            min_free_bytes: d.min_free_bytes,
            log_segment_bytes: d.log_segment_bytes,
        }
    }
}

/// `[limits]`: connection caps of the client API ports and WebSocket caps
/// (docs/security.md, "Resource bounds"). The cluster port's caps are fixed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Connections open at once on each client port (plain and HTTPS, counted apart).
    pub max_connections: usize,
    /// Connections open at once from one source (IPv4 address, IPv6 /64) on each client port.
    pub max_connections_per_source: usize,
    /// WebSocket connections one user may hold on this node.
    pub ws_max_per_user: usize,
    /// WebSocket connections this node holds.
    pub ws_max_per_node: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let serve = crate::tls::ServeOptions::default();
        let ws = web::ws::hub::WsLimits::default();
        Self {
            max_connections: serve.max_connections,
            max_connections_per_source: serve.max_connections_per_source,
            ws_max_per_user: ws.max_per_user,
            ws_max_per_node: ws.max_per_node,
        }
    }
}

/// The built-in authoritative DNS server (`docs/health.md`). No `addr`, no DNS server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// UDP and TCP listen address; `None` disables the DNS server.
    pub addr: Option<SocketAddr>,
    /// The zone this node is authoritative for (the workspace name clients type).
    pub workspace: Option<String>,
    /// TTL of every record and the SOA minimum (negative caching).
    pub ttl_secs: u32,
    /// Per-source (/24 or /56) UDP queries per second, and the burst above it.
    pub rate_limit_qps: u32,
    pub rate_limit_burst: u32,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            addr: None,
            workspace: None,
            ttl_secs: 5,
            rate_limit_qps: 200,
            rate_limit_burst: 400,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metrics_token_file_is_resolved_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let off = MetricsSection::default();
        assert!(off.enabled);
        assert_eq!(off.token(dir.path()).unwrap(), None);
        let relative = MetricsSection {
            enabled: true,
            bearer_token_file: Some(PathBuf::from("metrics.token")),
        };
        // Missing file: refused before the node starts.
        assert!(matches!(
            relative.token(dir.path()),
            Err(ConfigError::Read { .. })
        ));
        std::fs::write(
            dir.path().join("metrics.token"),
            "  a-long-enough-token-42\n",
        )
        .unwrap();
        assert_eq!(
            relative.token(dir.path()).unwrap().as_deref(),
            Some("a-long-enough-token-42")
        );
        for weak in ["short", "has a space in it ok", ""] {
            std::fs::write(dir.path().join("metrics.token"), weak).unwrap();
            assert!(
                matches!(relative.token(dir.path()), Err(ConfigError::Invalid(_))),
                "{weak:?}"
            );
        }
    }
}

/// `[files]`: file attachments (docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesSection {
    /// Largest file, in bytes.
    pub max_size: u64,
    /// How long a blob no live file references is kept: an integer number of seconds or a
    /// string with a unit (`"500ms"`, `"30s"`, `"10m"`, `"24h"`, `"7d"`).
    #[serde(deserialize_with = "duration")]
    pub gc_grace: std::time::Duration,
    /// Malware scanning through clamd: `off`, `scan` (log and mark) or `block` (refuse).
    pub scan: web::files_config::ScanMode,
    /// clamd's local socket.
    pub clamd_socket: PathBuf,
}

impl Default for FilesSection {
    fn default() -> Self {
        let d = web::files_config::FilesConfig::default();
        Self {
            max_size: d.max_size,
            gc_grace: cluster_defaults().blob_gc_grace,
            scan: d.scan,
            clamd_socket: d.clamd_socket,
        }
    }
}

/// A duration written as whole seconds or as a string with a unit.
fn duration<'de, D: serde::Deserializer<'de>>(de: D) -> Result<std::time::Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(de)? {
        Raw::Secs(s) => Ok(std::time::Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// `"500ms"`, `"30s"`, `"10m"`, `"24h"`, `"7d"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. \"30s\", \"24h\")"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        other => return Err(format!("unknown unit '{other}' in duration '{text}'")),
    }
    .ok_or_else(|| format!("duration '{text}' is too long"))?;
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod files_tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("24h"),
            Ok(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(parse_duration("3"), Ok(std::time::Duration::from_secs(3)));
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("h").is_err());
    }
}
