//! The node's configuration file (TOML) and its environment overrides.
//!
//! Owns parsing and the values derived from the file (defaults are in `sections`, the checks
//! in `validate`); every field is documented in
//! `docs/configuration.md`, whose example file a test parses. Unknown fields are rejected so a
//! typo never silently falls back to a default. Environment variables `CONCLAVE_<FIELD>` and
//! `CONCLAVE_<SECTION>__<FIELD>` override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod sections;
mod validate;

use sections::MIB;
pub use sections::{
    CaSection, DnsSection, FilesSection, LimitsSection, MetricsSection, RaftSection,
    StorageSection, TlsSection, WriteSection,
};
use validate::parse_range;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    #[serde(default)]
    pub advertise_api_addr: Option<String>,
    #[serde(default)]
    pub advertise_cluster_addr: Option<String>,
    /// Absolute session lifetime (default 12 h).
    #[serde(default = "defaults::session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// Idle timeout of sessions (default 30 min; 0: none).
    #[serde(default = "defaults::session_idle_secs")]
    pub session_idle_secs: u64,
    /// How often a node replicates session use (default 60 s): sessions end between
    /// `session_idle_secs` and `session_idle_secs + session_touch_interval_secs` after last use.
    #[serde(default = "defaults::session_touch_interval_secs")]
    pub session_touch_interval_secs: u64,
    #[serde(default = "defaults::max_request_bytes")]
    pub max_request_bytes: usize,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default = "defaults::log")]
    pub log: String,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub write: WriteSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub dns: DnsSection,
    /// The workspace name: the DNS zone clients type and the CA's DNS name constraint.
    /// `[dns] workspace` falls back to it. Without either, the node runs without a CA.
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub ca: CaSection,
    /// HTTPS for clients and mutual TLS between nodes; absent = plain HTTP everywhere, which
    /// `validate` allows only on loopback addresses unless `insecure_plaintext` is set.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// LAB ONLY: run without `[tls]` on non-loopback addresses (the cluster port then accepts
    /// any host that can reach it). Warned about at every start and shown in the cluster
    /// status; refused together with `[tls]`, where it would mean nothing.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// `GET /metrics` and its optional scrape token.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// File attachments: size limit, blob garbage collection, malware scanning.
    #[serde(default)]
    pub files: FilesSection,
    /// Directory of the config file; relative paths in `[ca]` resolve against it.
    #[serde(skip)]
    pub config_dir: PathBuf,
}

/// Client-API defaults belong to the `web` layer.
mod defaults {
    pub fn session_ttl_secs() -> u64 {
        web::ApiConfig::default().session_ttl_ms / 1000
    }
    pub fn session_idle_secs() -> u64 {
        web::ApiConfig::default().session_idle_ms / 1000
    }
    pub fn session_touch_interval_secs() -> u64 {
        web::ApiConfig::default().session_touch_interval_ms / 1000
    }
    pub fn max_request_bytes() -> usize {
        web::ApiConfig::default().max_request_bytes
    }
    pub fn log() -> String {
        "info".into()
    }
}

/// Environment variables that belong to other tools (conclavectl, the tests) and are not config.
const NOT_CONFIG: &[&str] = &[
    "SERVER",
    "TOKEN_FILE",
    "PASSWORD",
    "NEW_PASSWORD",
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    // `conclave join`'s token (node/src/join/joiner.rs), never a config field.
    "JOIN_TOKEN",
    "BIN",
    // The directory of the packaged binaries (ops/dist/build.sh), exported by .ci/run for the
    // tests: nodes those tests start inherit it.
    "DIST",
    // The directory of the Windows .exe files (ops/windows/build.sh), exported the same way.
    "WINDOWS_DIST",
];

impl Config {
    /// Reads `path`, applies `CONCLAVE_*` overrides from `env`, and validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, env)
    }

    pub fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        for (var, raw) in env {
            let Some(key) = var.strip_prefix("CONCLAVE_") else {
                continue;
            };
            if NOT_CONFIG.contains(&key) {
                continue;
            }
            let parsed = parse_env_value(&raw);
            let lower = key.to_ascii_lowercase();
            match lower.split_once("__") {
                Some((section, field)) => {
                    let entry = value
                        .entry(section.to_string())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    let toml::Value::Table(t) = entry else {
                        return Err(ConfigError::Env {
                            var,
                            message: format!("'{section}' is not a section"),
                        });
                    };
                    t.insert(field.to_string(), parsed);
                }
                None => {
                    value.insert(lower, parsed);
                }
            }
        }
        let mut config: Config =
            toml::Value::Table(value)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.message().to_string(),
                })?;
        config.config_dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        // One workspace for DNS and the CA: `[dns] workspace` alone keeps older files working.
        match (&config.workspace, &config.dns.workspace) {
            (Some(w), None) => config.dns.workspace = Some(w.clone()),
            (None, Some(d)) => config.workspace = Some(d.clone()),
            (Some(w), Some(d)) if !w.eq_ignore_ascii_case(d) => {
                return Err(ConfigError::Invalid(format!(
                    "workspace ({w:?}) and dns.workspace ({d:?}) differ; set only `workspace`"
                )));
            }
            _ => {}
        }
        config.validate()?;
        Ok(config)
    }

    /// The key-encryption key file (see `CaSection::kek_file`).
    pub fn kek_path(&self) -> PathBuf {
        let file = self
            .ca
            .kek_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("conclave.kek"));
        if file.is_absolute() {
            file
        } else {
            self.config_dir.join(file)
        }
    }

    /// The permitted address ranges, parsed (validation already checked them).
    pub fn permitted_ip_ranges(&self) -> Vec<crate::ca::IpRange> {
        self.ca
            .permitted_ip_ranges
            .iter()
            .filter_map(|r| parse_range(r).ok())
            .collect()
    }

    pub fn node_cert_lifetime(&self) -> Duration {
        if let Some(secs) = self.tls.as_ref().and_then(|t| t.node_cert_secs) {
            return Duration::from_secs(secs);
        }
        Duration::from_secs(u64::from(self.ca.node_cert_days) * 86_400)
    }

    /// The HTTPS address to advertise, when TLS is on.
    pub fn advertised_https(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(
            tls.advertise_https_addr
                .clone()
                .unwrap_or_else(|| tls.https_addr.to_string()),
        )
    }

    pub fn service_cert_lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.ca.service_cert_days) * 86_400)
    }

    pub fn advertised_api(&self) -> String {
        self.advertise_api_addr
            .clone()
            .unwrap_or_else(|| self.api_addr.to_string())
    }

    pub fn advertised_cluster(&self) -> String {
        self.advertise_cluster_addr
            .clone()
            .unwrap_or_else(|| self.cluster_addr.to_string())
    }

    pub fn cluster_config(&self) -> cluster::ClusterConfig {
        let info = cluster::NodeInfo {
            api_addr: self.advertised_api(),
            cluster_addr: self.advertised_cluster(),
        };
        let mut c =
            cluster::ClusterConfig::with_defaults(self.node_id, self.data_dir.clone(), info);
        c.heartbeat_interval_ms = self.raft.heartbeat_interval_ms;
        c.election_timeout_min_ms = self.raft.election_timeout_min_ms;
        c.election_timeout_max_ms = self.raft.election_timeout_max_ms;
        c.install_snapshot_timeout_ms = self.raft.install_snapshot_timeout_ms;
        c.snapshot_logs_since_last = self.raft.snapshot_logs_since_last;
        c.max_in_snapshot_log_to_keep = self.raft.max_in_snapshot_log_to_keep;
        c.max_payload_entries = self.raft.max_payload_entries;
        c.ready_max_apply_lag = self.raft.ready_max_apply_lag;
        c.batch_max_commands = self.write.batch_max_commands;
        c.batch_max_bytes = self.write.batch_max_bytes;
        c.batch_max_in_flight = self.write.batch_max_in_flight;
        c.write_timeout_ms = self.write.timeout_ms;
        c.sled_cache_bytes = self.storage.cache_mb * MIB;
        c.min_free_bytes = self.storage.min_free_bytes;
        c.log_segment_bytes = self.storage.log_segment_bytes;
        let ip = self.cluster_addr.ip();
        c.peer_source_ip = (!ip.is_unspecified()).then_some(ip);
        c.insecure_plaintext = self.insecure_plaintext;
        c.blob_gc_grace = self.files.gc_grace;
        c
    }

    pub fn api_config(&self) -> web::ApiConfig {
        web::ApiConfig {
            session_ttl_ms: self.session_ttl_secs.saturating_mul(1000),
            session_idle_ms: self.session_idle_secs.saturating_mul(1000),
            session_touch_interval_ms: self.session_touch_interval_secs.saturating_mul(1000),
            // Plain-HTTP step-up only where plain HTTP cannot leave the host: a client API
            // bound to loopback (`conclave dev --no-tls`, test clusters), and then only for
            // requests from loopback (checked per request).
            step_up_plain_loopback: self.api_addr.ip().is_loopback(),
            step_up_plain_any: self.insecure_plaintext,
            max_request_bytes: self.max_request_bytes,
            allowed_origins: self.allowed_origins.clone(),
            workspace: self.workspace.clone(),
            ws: web::ws::hub::WsLimits {
                max_per_user: self.limits.ws_max_per_user,
                max_per_node: self.limits.ws_max_per_node,
                ..web::ws::hub::WsLimits::default()
            },
            files: web::files_config::FilesConfig {
                max_size: self.files.max_size,
                scan: self.files.scan,
                clamd_socket: self.files.clamd_socket.clone(),
            },
            // The search index is node-local derived data beside the state (docs/architecture.md).
            search_dir: Some(self.data_dir.join("search")),
            // `run` fills `metrics` once the node (and so the registry) exists.
            ..web::ApiConfig::default()
        }
    }

    /// The client ports' accept-loop options (`[limits]`).
    pub fn serve_options(&self) -> crate::tls::ServeOptions {
        crate::tls::ServeOptions {
            max_connections: self.limits.max_connections,
            max_connections_per_source: self.limits.max_connections_per_source,
            ..crate::tls::ServeOptions::default()
        }
    }
}

/// Env values are typed by shape: integers and booleans become numbers and booleans, the rest
/// strings (addresses, paths).
fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
node_id = 1
data_dir = "/tmp/x"
api_addr = "127.0.0.1:8080"
cluster_addr = "127.0.0.1:9080"
"#;

    fn parse(text: &str, env: Vec<(&str, &str)>) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("test.toml"),
            env.into_iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn documented_example_parses() {
        let doc = include_str!("../../../docs/configuration.md");
        let example = doc
            .find("## Example (every field")
            .expect("docs/configuration.md has the full example");
        let start = example
            + doc[example..]
                .find("```toml\n")
                .expect("docs/configuration.md has a toml example")
            + 8;
        let end = start + doc[start..].find("```").expect("closing fence");
        let cfg = parse(&doc[start..end], vec![]).unwrap();
        assert_eq!(cfg.node_id, 1);
        // The example documents every default: it must not drift from the code.
        assert_eq!(cfg.raft, RaftSection::default());
        assert_eq!(cfg.write, WriteSection::default());
        assert_eq!(cfg.storage, StorageSection::default());
        // The example names a workspace (TLS needs it), which `[dns] workspace` falls back to.
        let dns = DnsSection {
            workspace: cfg.workspace.clone(),
            ..DnsSection::default()
        };
        assert_eq!(cfg.dns, dns);
        assert!(
            cfg.tls.is_some(),
            "the example is a production file: TLS on"
        );
        assert!(!cfg.insecure_plaintext);
        assert_eq!(cfg.ca, CaSection::default());
        assert_eq!(cfg.session_ttl_secs, defaults::session_ttl_secs());
        assert_eq!(cfg.max_request_bytes, defaults::max_request_bytes());
    }

    #[test]
    fn plain_http_only_on_loopback_unless_insecure_plaintext() {
        let lan = MINIMAL.replace("127.0.0.1:9080", "10.0.0.5:9080");
        let err = parse(&lan, vec![]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cluster_addr 10.0.0.5:9080") && text.contains("insecure_plaintext"),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
        let api = MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8080");
        let err = parse(&api, vec![]).unwrap_err();
        assert!(err.to_string().contains("api_addr 0.0.0.0:8080"), "{err}");
        let mapped = MINIMAL.replace("127.0.0.1:8080", "[::ffff:127.0.0.1]:8080");
        parse(&mapped, vec![]).unwrap();
        let cfg = parse(&format!("insecure_plaintext = true\n{lan}"), vec![]).unwrap();
        assert!(cfg.insecure_plaintext && cfg.cluster_config().insecure_plaintext);
        let cfg = parse(&lan, vec![("CONCLAVE_INSECURE_PLAINTEXT", "true")]).unwrap();
        assert!(cfg.insecure_plaintext);
        // With TLS the LAN address is fine, and the flag would mean nothing: refused.
        let tls = format!(
            "workspace = \"chat.corp.lan\"\n{lan}\n[tls]\nhttps_addr = \"10.0.0.5:8443\"\n"
        );
        parse(&tls, vec![]).unwrap();
        let err = parse(&format!("insecure_plaintext = true\n{tls}"), vec![]).unwrap_err();
        assert!(err.to_string().contains("insecure_plaintext"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse(&format!("{MINIMAL}\nhartbeat = 3\n"), vec![]).unwrap_err();
        assert!(err.to_string().contains("hartbeat"), "{err}");
        let err = parse(&format!("{MINIMAL}\n[raft]\nheartbeat_ms = 3\n"), vec![]).unwrap_err();
        assert!(err.to_string().contains("heartbeat_ms"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let cfg = parse(
            MINIMAL,
            vec![
                ("CONCLAVE_NODE_ID", "7"),
                ("CONCLAVE_RAFT__SNAPSHOT_LOGS_SINCE_LAST", "20"),
                ("CONCLAVE_SERVER", "http://ignored"),
                ("CONCLAVE_ADMIN_PASSWORD", "not-a-config-field"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.node_id, 7);
        assert_eq!(cfg.raft.snapshot_logs_since_last, 20);
    }

    #[test]
    fn dns_needs_a_workspace() {
        let err = parse(
            &format!("{MINIMAL}\n[dns]\naddr = \"127.0.0.1:8053\"\n"),
            vec![],
        )
        .unwrap_err();
        assert!(err.to_string().contains("dns.workspace"), "{err}");
        let cfg = parse(
            &format!(
                "{MINIMAL}\n[dns]\naddr = \"127.0.0.1:8053\"\nworkspace = \"chat.corp.lan\"\n"
            ),
            vec![],
        )
        .unwrap();
        assert_eq!(cfg.dns.ttl_secs, 5);
    }

    #[test]
    fn bad_timing_is_refused() {
        let err = parse(
            &format!("{MINIMAL}\n[raft]\nheartbeat_interval_ms = 400\n"),
            vec![],
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)));
    }

    #[test]
    fn workspace_is_shared_with_dns_and_checked() {
        let cfg = parse(&format!("workspace = \"Chat.Corp.LAN\"\n{MINIMAL}"), vec![]).unwrap();
        assert_eq!(cfg.dns.workspace.as_deref(), Some("Chat.Corp.LAN"));
        let cfg = parse(
            &format!("{MINIMAL}\n[dns]\nworkspace = \"chat.corp.lan\"\n"),
            vec![],
        )
        .unwrap();
        assert_eq!(cfg.workspace.as_deref(), Some("chat.corp.lan"));
        let err = parse(
            &format!("workspace = \"a.corp.lan\"\n{MINIMAL}\n[dns]\nworkspace = \"b.corp.lan\"\n"),
            vec![],
        )
        .unwrap_err();
        assert!(err.to_string().contains("differ"), "{err}");
        let err = parse(&format!("workspace = \"bad_name\"\n{MINIMAL}"), vec![]).unwrap_err();
        assert!(err.to_string().contains("workspace"), "{err}");
    }

    /// A config file inside its own data_dir without `kek_file` (what `conclave dev` wrote
    /// before the KEK existed) puts the default KEK inside data_dir: refused in one line that
    /// says which moves fix it.
    #[test]
    fn default_kek_inside_data_dir_names_the_fix() {
        let err = Config::parse(MINIMAL, Path::new("/tmp/x/conclave.toml"), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ca.kek_file /tmp/x/conclave.kek is inside data_dir /tmp/x")
                && err.contains("move the config file")
                && err.contains("set [ca] kek_file"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn ca_section_defaults_and_validation() {
        let cfg = Config::parse(MINIMAL, Path::new("/etc/conclave/node.toml"), Vec::new()).unwrap();
        assert_eq!(cfg.kek_path(), PathBuf::from("/etc/conclave/conclave.kek"));
        assert_eq!(cfg.permitted_ip_ranges().len(), 6);
        assert_eq!(cfg.node_cert_lifetime(), Duration::from_secs(7 * 86_400));
        let cfg = Config::parse(
            &format!("{MINIMAL}\n[ca]\nkek_file = \"keys/k\"\n"),
            Path::new("/etc/conclave/node.toml"),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(cfg.kek_path(), PathBuf::from("/etc/conclave/keys/k"));
        for bad in [
            "permitted_ip_ranges = [\"10.0.0.0\"]",
            "permitted_ip_ranges = [\"10.0.0.0/33\"]",
            "node_cert_days = 0",
            "service_cert_days = 900",
            "kek_file = \"/tmp/x/conclave.kek\"",
            "kek_file = \"/tmp/y/../x/sub/k\"",
            "crl_url = \"ftp://x\"",
        ] {
            let err = parse(&format!("{MINIMAL}\n[ca]\n{bad}\n"), vec![]).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn tls_section_is_opt_in_and_checked() {
        let cfg = parse(MINIMAL, vec![]).unwrap();
        assert!(cfg.tls.is_none());
        assert_eq!(cfg.advertised_https(), None);
        let ok = format!(
            "workspace = \"chat.corp.lan\"\n{MINIMAL}\n[tls]\nhttps_addr = \"127.0.0.1:8443\"\nnode_cert_secs = 30\n"
        );
        let cfg = parse(&ok, vec![]).unwrap();
        assert_eq!(cfg.advertised_https().as_deref(), Some("127.0.0.1:8443"));
        assert_eq!(cfg.node_cert_lifetime(), Duration::from_secs(30));
        // The admin user for `conclave provision` is not a config key.
        parse(&ok, vec![("CONCLAVE_ADMIN_USER", "root")]).unwrap();
        for bad in [
            // No workspace: no CA to issue the node certificate.
            format!("{MINIMAL}\n[tls]\nhttps_addr = \"127.0.0.1:8443\"\n"),
            format!(
                "workspace = \"chat.corp.lan\"\n{MINIMAL}\n[tls]\nhttps_addr = \"127.0.0.1:8080\"\n"
            ),
            format!(
                "workspace = \"chat.corp.lan\"\n{MINIMAL}\n[tls]\nhttps_addr = \"127.0.0.1:8443\"\nnode_cert_secs = 5\n"
            ),
        ] {
            let err = parse(&bad, vec![]).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
        }
        let err = parse(&format!("{MINIMAL}\n[tls]\nhttps = 1\n"), vec![]).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }
}
