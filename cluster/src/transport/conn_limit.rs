//! Admission of TCP connections on a listener: a cap on all open connections and a cap per
//! source, so one host cannot take every place (tried before this existed: one host holding
//! about 900 half-open TLS connections made another client's health checks fail).
//!
//! Owns the counting and the notion of a source: an IPv4 address, or the /64 of an IPv6
//! address (one host usually has a whole /64 to pick addresses from). Used by every accept
//! loop: the cluster port here, the client API's plain and HTTPS ports in the node. Must never
//! block: a connection over a cap is refused at once (closed), and the table holds an entry
//! only per source with an open connection, so it never holds more than the total cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// A source as the caps count it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source([u8; 9]);

impl Source {
    pub fn of(addr: IpAddr) -> Self {
        let mut out = [0u8; 9];
        match addr.to_canonical() {
            IpAddr::V4(v4) => {
                out[0] = 4;
                out[1..5].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out[0] = 6;
                out[1..9].copy_from_slice(&v6.octets()[..8]);
            }
        }
        Source(out)
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener has its total number of connections open.
    Total,
    /// This source has its share open.
    PerSource,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerSource => "per_source",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<Source, usize>,
}

/// The caps of one listener; cheap to clone (shared counts).
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_source: usize,
    /// A std mutex: a few integer updates per connect and close, never held across `.await`.
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; its place is given back when this is dropped.
#[derive(Debug)]
pub struct ConnPermit {
    source: Source,
    counts: Arc<Mutex<Counts>>,
}

impl ConnLimiter {
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts are plain integers, consistent after any panic between updates.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `addr`, or says which cap it hit.
    pub fn admit(&self, addr: IpAddr) -> Result<ConnPermit, Refused> {
        let source = Source::of(addr);
        let mut c = self.counts();
        if c.total >= self.max_total {
            return Err(Refused::Total);
        }
        let n = c.by_source.entry(source).or_insert(0);
        if *n >= self.max_per_source {
            return Err(Refused::PerSource);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnPermit {
            source,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now (tests and diagnostics).
    pub fn open(&self) -> usize {
        self.counts().total
    }

    /// Sources with a connection open now (tests: the table never outgrows the total cap).
    pub fn sources(&self) -> usize {
        self.counts().by_source.len()
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

/// Logs refused connections at most once a second per listener (a flood would otherwise write a
/// line per connect), with how many were refused since the last line.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: Mutex<Option<std::time::Instant>>,
    refused: std::sync::atomic::AtomicU64,
}

impl RefusalLog {
    /// Counts one refusal; `Some(count)` when a line should be written now.
    pub fn note(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1)) {
            return None;
        }
        *last = Some(now);
        Some(self.refused.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v4(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn one_source_gets_its_share_and_others_still_get_in() {
        let l = ConnLimiter::new(10, 3);
        let mine: Vec<_> = (0..3).map(|_| l.admit(v4(2)).unwrap()).collect();
        assert_eq!(l.admit(v4(2)).unwrap_err(), Refused::PerSource);
        let other = l.admit(v4(3)).unwrap();
        assert_eq!(l.open(), 4);
        drop(mine);
        assert_eq!(l.open(), 1);
        assert_eq!(
            l.sources(),
            1,
            "a source with nothing open leaves the table"
        );
        assert!(l.admit(v4(2)).is_ok());
        drop(other);
    }

    #[test]
    fn the_total_cap_holds_over_many_sources() {
        let l = ConnLimiter::new(5, 3);
        let held: Vec<_> = (1..=5).map(|n| l.admit(v4(n)).unwrap()).collect();
        assert_eq!(l.admit(v4(9)).unwrap_err(), Refused::Total);
        assert_eq!(held.len(), 5);
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64() {
        let l = ConnLimiter::new(10, 1);
        let _a = l.admit("fd00:1:2:3::1".parse().unwrap()).unwrap();
        assert!(l.admit("fd00:1:2:3::99".parse().unwrap()).is_err());
        assert!(l.admit("fd00:1:2:4::1".parse().unwrap()).is_ok());
    }
}
