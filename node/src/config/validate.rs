//! The checks a configuration passes before a node starts with it (`Config::validate`, run by
//! `parse` and by `conclave run --validate`).
//!
//! Must never accept what would only fail later at runtime (timing that cannot elect a leader,
//! a KEK file inside the data directory that backups would carry), and never change a value:
//! it only says what is wrong.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// Longest leaf lifetime the CA signs (Apple's limit for TLS server certificates).
const MAX_CERT_DAYS: u32 = 825;

/// Parse `addr/prefix`.
pub(super) fn parse_range(text: &str) -> Result<crate::ca::IpRange, ConfigError> {
    let bad = || {
        ConfigError::Invalid(format!(
            "ca.permitted_ip_ranges: {text:?} is not an address range such as \"10.0.0.0/8\""
        ))
    };
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
    crate::ca::IpRange::new(addr, prefix).map_err(|_| bad())
}

/// `path` made absolute against the working directory, without touching the disk.
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    }
}

/// Lexical normalisation (`.` and `..`), so `data/../conclave.kek` compares as what it names.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl Config {
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        if self.workspace.is_none() {
            return Err(ConfigError::Invalid(
                "[tls] needs `workspace`: node certificates are issued by the workspace's CA"
                    .into(),
            ));
        }
        if tls.https_addr == self.api_addr || tls.https_addr == self.cluster_addr {
            return Err(ConfigError::Invalid(
                "tls.https_addr must differ from api_addr and cluster_addr".into(),
            ));
        }
        if let Some(secs) = tls.node_cert_secs
            && secs < 10
        {
            return Err(ConfigError::Invalid(format!(
                "tls.node_cert_secs must be at least 10 (got {secs})"
            )));
        }
        Ok(())
    }

    fn validate_ca(&self) -> Result<(), ConfigError> {
        if let Some(w) = &self.workspace {
            crate::ca::names::validate_workspace(w)
                .map_err(|e| ConfigError::Invalid(format!("workspace: {e}")))?;
        }
        for r in &self.ca.permitted_ip_ranges {
            parse_range(r)?;
        }
        for (name, days) in [
            ("ca.node_cert_days", self.ca.node_cert_days),
            ("ca.service_cert_days", self.ca.service_cert_days),
        ] {
            if days == 0 || days > MAX_CERT_DAYS {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between 1 and {MAX_CERT_DAYS} (got {days})"
                )));
            }
        }
        if let Some(url) = &self.ca.crl_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "ca.crl_url {url:?} must be an http:// or https:// URL"
            )));
        }
        let kek = normalize(&absolute(&self.kek_path()));
        let data = normalize(&absolute(&self.data_dir));
        if kek.starts_with(&data) {
            // Configs that older `conclave dev` builds wrote inside the node's data directory
            // (no `kek_file`) land here after an upgrade: say exactly which of two moves fixes
            // it. Never accepted as is: the key must not travel with backups of the data.
            let fix = if self.ca.kek_file.is_none() {
                "the default is conclave.kek next to the config file, and this config file is itself inside data_dir: move the config file (and conclave.kek, if it exists) out of data_dir, or move conclave.kek out and set [ca] kek_file to its new path"
            } else {
                "move the key file out of data_dir and set [ca] kek_file to its new path"
            };
            return Err(ConfigError::Invalid(format!(
                "ca.kek_file {} is inside data_dir {}: a copy or backup of the data directory would then carry the key that unseals the CA's private keys; {fix}",
                kek.display(),
                data.display()
            )));
        }
        Ok(())
    }

    /// Secure by default: without `[tls]` the cluster port takes any peer's word and the API
    /// carries passwords and tokens in the clear, so plain HTTP is allowed on loopback only,
    /// unless the operator explicitly sets `insecure_plaintext = true` (a lab). One line that
    /// names the setting, which `conclave run` prints before exiting non-zero.
    fn validate_exposure(&self) -> Result<(), ConfigError> {
        if self.tls.is_some() {
            if self.insecure_plaintext {
                return Err(ConfigError::Invalid(
                    "insecure_plaintext = true means nothing with [tls] (TLS is on); remove it"
                        .into(),
                ));
            }
            return Ok(());
        }
        if self.insecure_plaintext {
            return Ok(());
        }
        for (name, addr) in [
            ("cluster_addr", self.cluster_addr),
            ("api_addr", self.api_addr),
        ] {
            // `::ffff:127.0.0.1` is loopback too.
            if !addr.ip().to_canonical().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "{name} {addr} is not a loopback address and [tls] is absent: nodes and clients would talk plain, unauthenticated HTTP on the network; add a [tls] section (docs/configuration.md) or, in a lab only, set insecure_plaintext = true"
                )));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.raft;
        if self.node_id == 0 {
            return Err(ConfigError::Invalid("node_id must be at least 1".into()));
        }
        if !(r.heartbeat_interval_ms < r.election_timeout_min_ms
            && r.election_timeout_min_ms < r.election_timeout_max_ms)
        {
            return Err(ConfigError::Invalid(format!(
                "need raft.heartbeat_interval_ms ({}) < raft.election_timeout_min_ms ({}) < raft.election_timeout_max_ms ({})",
                r.heartbeat_interval_ms, r.election_timeout_min_ms, r.election_timeout_max_ms
            )));
        }
        if r.snapshot_logs_since_last == 0 || r.max_payload_entries == 0 {
            return Err(ConfigError::Invalid(
                "raft.snapshot_logs_since_last and raft.max_payload_entries must be at least 1"
                    .into(),
            ));
        }
        if self.write.batch_max_commands == 0 || self.write.batch_max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "write.batch_max_commands and write.batch_max_in_flight must be at least 1".into(),
            ));
        }
        if self.session_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "session_ttl_secs must be at least 1".into(),
            ));
        }
        let l = &self.limits;
        if l.max_connections == 0
            || l.max_connections_per_source == 0
            || l.ws_max_per_user == 0
            || l.ws_max_per_node == 0
        {
            return Err(ConfigError::Invalid(
                "every [limits] value must be at least 1".into(),
            ));
        }
        if l.max_connections_per_source > l.max_connections {
            return Err(ConfigError::Invalid(format!(
                "limits.max_connections_per_source ({}) must not exceed limits.max_connections ({})",
                l.max_connections_per_source, l.max_connections
            )));
        }
        if self.session_touch_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "session_touch_interval_secs must be at least 1".into(),
            ));
        }
        if self.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_request_bytes must be at least 1024".into(),
            ));
        }
        if self.dns.addr.is_some() {
            let valid = self
                .dns
                .workspace
                .as_deref()
                .is_some_and(|w| w.contains('.') && crate::dns::zone::parse_zone(w).is_ok());
            if !valid {
                return Err(ConfigError::Invalid(
                    "dns.addr is set, so dns.workspace must be a domain name such as \"chat.corp.lan\"".into(),
                ));
            }
            if self.dns.ttl_secs == 0
                || self.dns.rate_limit_qps == 0
                || self.dns.rate_limit_burst == 0
            {
                return Err(ConfigError::Invalid(
                    "dns.ttl_secs, dns.rate_limit_qps and dns.rate_limit_burst must be at least 1"
                        .into(),
                ));
            }
        }
        if self.api_addr == self.cluster_addr {
            return Err(ConfigError::Invalid(
                "api_addr and cluster_addr must differ".into(),
            ));
        }
        if self.metrics.enabled {
            self.metrics.token(&self.config_dir)?;
        }
        self.validate_ca()?;
        self.validate_tls()?;
        self.validate_exposure()
    }
}
