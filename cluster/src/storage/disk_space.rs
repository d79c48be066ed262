//! Free space of the data directory against the operator's watermark (`[storage]
//! min_free_bytes`).
//!
//! Owns the last sample of free space and the verdict "below the watermark". Sampling is a
//! `statvfs` (`GetDiskFreeSpaceEx` on Windows) through `fs2`, cheap enough to run every second.
//! Why a watermark at all: a follower must still be able to store what the leader replicates
//! after new client writes are refused; the watermark is that headroom, so the disk never
//! reaches the point where an fsync fails for want of space.
//!
//! Must never block a request: readers only load atomics; the sample is taken by a background
//! task (`node::disk_guard`).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// `free` when no sample has been taken (or the last one failed).
const UNKNOWN: u64 = u64::MAX;

/// The free-space state of one node's data directory.
#[derive(Debug)]
pub struct DiskSpace {
    min_free_bytes: u64,
    free: AtomicU64,
}

/// What status reports about storage: `ok`, `low_space` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageState {
    Ok,
    LowSpace,
    Failed,
}

impl StorageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::LowSpace => "low_space",
            Self::Failed => "failed",
        }
    }
}

impl DiskSpace {
    /// `min_free_bytes == 0` turns the watermark off.
    pub fn new(min_free_bytes: u64) -> Self {
        Self {
            min_free_bytes,
            free: AtomicU64::new(UNKNOWN),
        }
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Samples the free space of `dir` now (a blocking syscall: call from a blocking thread
    /// or at start-up).
    pub fn sample(&self, dir: &Path) -> io::Result<u64> {
        match available_space(dir) {
            Ok(free) => {
                self.free.store(free, Ordering::Relaxed);
                Ok(free)
            }
            Err(e) => {
                self.free.store(UNKNOWN, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Free bytes at the last sample; `None` before the first or after a failed one.
    pub fn free_bytes(&self) -> Option<u64> {
        match self.free.load(Ordering::Relaxed) {
            UNKNOWN => None,
            free => Some(free),
        }
    }

    /// Why new writes are refused, when free space is below the watermark. An unknown sample
    /// does not count as low: a filesystem that cannot report space still takes writes, and a
    /// real failure to write shows up as a storage error.
    pub fn low_space(&self) -> Option<String> {
        let free = self.free_bytes()?;
        below_watermark(free, self.min_free_bytes)
            .then(|| low_space_reason(free, self.min_free_bytes))
    }

    /// The state and its reason. A running node is `ok` or `low_space`; `failed` is reported
    /// by the stand-in that answers while the node waits to restart (`node::storage_wait`).
    pub fn state(&self) -> (StorageState, Option<String>) {
        match self.low_space() {
            Some(why) => (StorageState::LowSpace, Some(why)),
            None => (StorageState::Ok, None),
        }
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub fn available_space(dir: &Path) -> io::Result<u64> {
    fs2::available_space(dir)
}

/// Whether `free` is below the watermark (`0` = off).
pub fn below_watermark(free: u64, min_free_bytes: u64) -> bool {
    min_free_bytes > 0 && free < min_free_bytes
}

/// "disk space low: 512.0 MiB free, watermark 1.0 GiB": the reason readiness, status and the
/// 503 body carry.
pub fn low_space_reason(free: u64, min_free_bytes: u64) -> String {
    format!(
        "disk space low: {} free, watermark {}",
        human_bytes(free),
        human_bytes(min_free_bytes)
    )
}

/// Bytes in binary units with one decimal (`1.5 GiB`), exact below 1 KiB (`512 B`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn watermark_zero_is_off_and_the_reason_names_both_numbers() {
        assert!(!below_watermark(0, 0));
        assert!(below_watermark(10, 11));
        assert!(!below_watermark(11, 11));
        assert_eq!(
            low_space_reason(512 * 1024 * 1024, 1024 * 1024 * 1024),
            "disk space low: 512.0 MiB free, watermark 1.0 GiB"
        );
        assert_eq!(human_bytes(1000), "1000 B");
    }

    #[test]
    fn state_is_low_space_below_the_watermark_only() {
        let d = DiskSpace::new(u64::MAX - 1);
        assert_eq!(d.state().0, StorageState::Ok, "no sample yet: not low");
        d.sample(Path::new(".")).unwrap();
        assert_eq!(d.state().0, StorageState::LowSpace);
        let off = DiskSpace::new(0);
        off.sample(Path::new(".")).unwrap();
        assert_eq!(off.state().0, StorageState::Ok);
    }
}
