//! Per-source response-rate limiting for UDP queries: a token bucket per /24 (IPv4) or /56
//! (IPv6) network, in a bounded map.
//!
//! Owns the decision allow / slip (answer empty with TC=1) / drop. Must never grow without bound
//! (a spoofed flood from random sources would otherwise exhaust memory) and never block: it is
//! called at the top of every request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Answer with an empty TC=1 response: a real client retries over TCP (which a spoofer
    /// cannot), while the reply is no bigger than the query, so there is nothing to amplify.
    Slip,
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    refused: u32,
}

/// Above this many tracked networks, idle buckets are purged; if that frees nothing, unknown
/// sources share one overflow bucket (they are limited together, never let through unchecked).
const MAX_SOURCES: usize = 16_384;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    // A std Mutex: each section is a hash lookup and a few float operations, never held across
    // an `.await`, so an async lock would only add cost.
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The network a source is limited as: its /24 or /56.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[7..].fill(0);
            IpAddr::from(o)
        }
    }
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, ip: IpAddr) -> Decision {
        self.check_at(ip, Instant::now())
    }

    pub fn check_at(&self, ip: IpAddr, now: Instant) -> Decision {
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; fail open rather than take DNS down.
            return Decision::Allow;
        };
        let mut key = source_key(ip);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_SOURCES {
            let burst = self.burst;
            let rate = self.rate;
            // A bucket that would be full again holds no information: forget it.
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_SOURCES {
                key = IpAddr::from([0, 0, 0, 0]);
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            refused: 0,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Decision::Allow;
        }
        b.refused = b.refused.wrapping_add(1);
        if b.refused % 2 == 0 {
            Decision::Slip
        } else {
            Decision::Drop
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_limit_then_refill() {
        let rl = RateLimiter::new(10, 5);
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(rl.check_at(ip, t0), Decision::Allow);
        }
        let over: Vec<_> = (0..4).map(|_| rl.check_at(ip, t0)).collect();
        assert_eq!(
            over,
            [
                Decision::Drop,
                Decision::Slip,
                Decision::Drop,
                Decision::Slip
            ]
        );
        // Same /24 shares the bucket; another /24 does not.
        assert_ne!(
            rl.check_at("192.0.2.99".parse().unwrap(), t0),
            Decision::Allow
        );
        assert_eq!(
            rl.check_at("192.0.3.1".parse().unwrap(), t0),
            Decision::Allow
        );
        // 100 ms at 10/s is one token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(rl.check_at(ip, t1), Decision::Allow);
        assert_ne!(rl.check_at(ip, t1), Decision::Allow);
    }

    #[test]
    fn ipv6_is_keyed_by_56() {
        assert_eq!(
            source_key("2001:db8:1:2ff:1::9".parse().unwrap()),
            "2001:db8:1:200::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_map_stays_bounded() {
        let rl = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 1000) {
            let ip = IpAddr::from((10u32 << 24 | i << 8).to_be_bytes());
            rl.check_at(ip, t0);
        }
        assert!(rl.tracked() <= MAX_SOURCES + 1, "{}", rl.tracked());
    }
}
