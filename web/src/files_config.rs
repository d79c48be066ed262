//! `[files]` settings the client API needs: the size limit and malware scanning.
//!
//! Owns their defaults (the cluster layer owns the blob garbage collector's grace period).
//! Must never do I/O.

use std::path::PathBuf;

use serde::Deserialize;

/// Malware scanning of uploads through clamd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMode {
    /// No scanning.
    #[default]
    Off,
    /// Scan; an infected file is refused, a scanner that cannot be reached is logged and the
    /// file accepted.
    Scan,
    /// Scan and block: an infected file is refused, and so is every upload while clamd
    /// cannot be reached (503 `scanner_unavailable`).
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Largest file, in bytes (default 100 MiB).
    pub max_size: u64,
    pub scan: ScanMode,
    /// clamd's local socket (Debian's `clamav-daemon`).
    pub clamd_socket: PathBuf,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_size: 100 * 1024 * 1024,
            scan: ScanMode::Off,
            clamd_socket: PathBuf::from("/run/clamav/clamd.ctl"),
        }
    }
}
