//! Login throttling: progressive delays per source address, per (account, source) and per
//! account, kept in this node's memory in fixed-size tables.
//!
//! Owns the delay schedule (documented in docs/security.md, "Login throttling") and the rule
//! that a third party cannot lock an account: the per-account delay, the only one another host
//! can drive up, never applies to a source this account logged in from before, and every delay
//! is a wait that ends, never a lock. Must never store a username or an address as text (keys
//! are keyed hashes, so a password typed into the username field is not kept), never grow
//! beyond its tables' capacity whatever the number of sources, and never tell an existing
//! account from an unknown name: every rule applies to any name alike.
//!
//! Why node-local and not replicated: a replicated counter (the former `LoginAttempt` command)
//! made each counted attempt a Raft entry, and its single per-account budget let any host on
//! the LAN keep an account in its backoff for everyone. Here a flood costs memory only in
//! bounded tables; spreading attempts over N nodes gives an attacker at most N times the rate.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures allowed from one source to one account before its delay starts.
pub const ACCOUNT_SOURCE_FREE: u32 = 5;
/// Ceiling of the (account, source) delay.
pub const ACCOUNT_SOURCE_MAX_MS: u64 = 300_000;
/// Failures allowed from one source (to any names) before its delay starts. Higher than the
/// per-account one: several people behind one NAT mistype too.
pub const SOURCE_FREE: u32 = 20;
/// Ceiling of the per-source delay.
pub const SOURCE_MAX_MS: u64 = 60_000;
/// Failures allowed on one account from all sources without a login history before its delay
/// starts. Beyond it at most one attempt a minute per node: about 60 an hour (ASVS 2.2.1 asks
/// for no more than 100 failed attempts an hour on one account).
pub const ACCOUNT_FREE: u32 = 20;
/// Ceiling of the per-account delay; small because a third party can drive it up.
pub const ACCOUNT_MAX_MS: u64 = 60_000;
/// The first delay of every rule; each further failure doubles it up to the rule's ceiling.
pub const BASE_DELAY_MS: u64 = 1_000;
/// A counter with no failure for this long starts over.
pub const FORGET_AFTER_MS: u64 = 3_600_000;
/// A successful login makes its source a known one for that account for this long.
pub const KNOWN_SOURCE_MS: u64 = 30 * 24 * 3_600_000;
/// Entries per table. Each costs a few dozen bytes: the four tables stay under a few MiB
/// however many addresses a flood comes from; when one is full, its oldest eighth goes.
pub const TABLE_CAPACITY: usize = 16_384;

/// Which rule refused an attempt (the `reason` of the `login.throttled` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Source,
    AccountSource,
    Account,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Source => "source",
            Rule::AccountSource => "account_source",
            Rule::Account => "account",
        }
    }
}

/// A refused attempt: which rule, and how long until the next attempt is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub rule: Rule,
    pub retry_after_ms: u64,
    /// The first refusal of this delay by this rule: log it. Later ones in the same delay are
    /// not logged one by one, so a flood of refused attempts cannot flood the log.
    pub first: bool,
}

/// An attempt that was let through and counted; hand it back with [`LoginThrottle::succeeded`]
/// when the password was right. Dropping it keeps it counted as a failure.
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    account: u64,
    source: u64,
    account_source: u64,
    known_source: bool,
}

impl Attempt {
    /// Whether this source logged in to this account before (its password check may go first).
    pub fn known_source(&self) -> bool {
        self.known_source
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    last_ms: u64,
    /// Attempts refused since the last counted one (only the first is logged).
    refused: u32,
}

impl Entry {
    fn next_allowed_ms(&self, free: u32, max_ms: u64) -> u64 {
        if self.failures < free {
            return 0;
        }
        let doublings = (self.failures - free).min(30);
        let delay = BASE_DELAY_MS.saturating_mul(1u64 << doublings).min(max_ms);
        self.last_ms.saturating_add(delay)
    }
}

/// A map of at most [`TABLE_CAPACITY`] entries keyed by a 64-bit keyed hash.
#[derive(Debug)]
struct Table {
    entries: HashMap<u64, Entry>,
    /// An entry untouched for this long counts as absent and is the first to go.
    forget_ms: u64,
}

impl Table {
    fn new(forget_ms: u64) -> Self {
        Self {
            entries: HashMap::new(),
            forget_ms,
        }
    }

    /// The entry, unless absent or forgotten.
    fn fresh(&self, key: u64, now: u64) -> Option<Entry> {
        self.entries
            .get(&key)
            .filter(|e| now.saturating_sub(e.last_ms) < self.forget_ms)
            .copied()
    }

    fn get(&self, key: u64, now: u64) -> Entry {
        self.fresh(key, now).unwrap_or_default()
    }

    fn put(&mut self, key: u64, entry: Entry, now: u64) {
        if self.entries.len() >= TABLE_CAPACITY && !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        self.entries.insert(key, entry);
    }

    /// Drops forgotten entries and, if that frees too little, the oldest eighth: one scan per
    /// `TABLE_CAPACITY / 8` inserts, so a flood from ever new addresses costs O(1) per attempt.
    fn make_room(&mut self, now: u64) {
        let forget_ms = self.forget_ms;
        self.entries
            .retain(|_, e| now.saturating_sub(e.last_ms) < forget_ms);
        let target = TABLE_CAPACITY - TABLE_CAPACITY / 8;
        if self.entries.len() <= target {
            return;
        }
        let mut ages: Vec<(u64, u64)> = self.entries.iter().map(|(k, e)| (e.last_ms, *k)).collect();
        let excess = self.entries.len() - target;
        ages.select_nth_unstable(excess - 1);
        for (_, k) in &ages[..excess] {
            self.entries.remove(k);
        }
    }

    fn remove(&mut self, key: u64) {
        self.entries.remove(&key);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug)]
struct Tables {
    source: Table,
    account_source: Table,
    account: Table,
    /// (account, source) pairs that logged in; `last_ms` is the time of the last success.
    known: Table,
}

/// This node's login throttle (one per router, in `AppState`).
#[derive(Debug)]
pub struct LoginThrottle {
    keys: std::collections::hash_map::RandomState,
    /// A std mutex: held for a few map operations, never across an `.await`.
    tables: Mutex<Tables>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

/// The part of an address one party controls: the whole IPv4 address, the /64 of an IPv6
/// address (a single host usually has a whole /64 to pick from). `None` (an in-process router
/// without connect info) is one source.
fn source_prefix(source: Option<IpAddr>) -> [u8; 9] {
    let mut out = [0u8; 9];
    match source.map(|a| a.to_canonical()) {
        None => {}
        Some(IpAddr::V4(v4)) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            out[0] = 6;
            out[1..9].copy_from_slice(&v6.octets()[..8]);
        }
    }
    out
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self {
            keys: std::collections::hash_map::RandomState::new(),
            tables: Mutex::new(Tables {
                source: Table::new(FORGET_AFTER_MS),
                account_source: Table::new(FORGET_AFTER_MS),
                account: Table::new(FORGET_AFTER_MS),
                known: Table::new(KNOWN_SOURCE_MS),
            }),
        }
    }

    fn key(&self, parts: impl Hash) -> u64 {
        self.keys.hash_one(parts)
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides whether an attempt for `username` from `source` may check a password now, and
    /// counts it if so (counted before the check, so concurrent attempts cannot all slip
    /// through one free place). Refused attempts are not counted: hammering during a delay
    /// does not lengthen it.
    pub fn begin(
        &self,
        username: &str,
        source: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<Attempt, Throttled> {
        let prefix = source_prefix(source);
        let mut attempt = Attempt {
            account: self.key(("account", username)),
            source: self.key(("source", prefix)),
            account_source: self.key(("account_source", username, prefix)),
            known_source: false,
        };
        let mut t = self.tables();
        let src = t.source.get(attempt.source, now_ms);
        let pair = t.account_source.get(attempt.account_source, now_ms);
        let acct = t.account.get(attempt.account, now_ms);
        let known = t.known.fresh(attempt.account_source, now_ms).is_some();
        attempt.known_source = known;
        let mut refusal: Option<Throttled> = None;
        let mut consider = |rule: Rule, next: u64| {
            if now_ms < next {
                let wait = next - now_ms;
                if refusal.is_none_or(|r| wait > r.retry_after_ms) {
                    refusal = Some(Throttled {
                        rule,
                        retry_after_ms: wait,
                        first: false,
                    });
                }
            }
        };
        consider(
            Rule::Source,
            src.next_allowed_ms(SOURCE_FREE, SOURCE_MAX_MS),
        );
        consider(
            Rule::AccountSource,
            pair.next_allowed_ms(ACCOUNT_SOURCE_FREE, ACCOUNT_SOURCE_MAX_MS),
        );
        if !known {
            consider(
                Rule::Account,
                acct.next_allowed_ms(ACCOUNT_FREE, ACCOUNT_MAX_MS),
            );
        }
        if let Some(mut r) = refusal {
            let (table, key, mut entry) = match r.rule {
                Rule::Source => (&mut t.source, attempt.source, src),
                Rule::AccountSource => (&mut t.account_source, attempt.account_source, pair),
                Rule::Account => (&mut t.account, attempt.account, acct),
            };
            entry.refused = entry.refused.saturating_add(1);
            r.first = entry.refused == 1;
            table.put(key, entry, now_ms);
            return Err(r);
        }
        let bump = |e: Entry| Entry {
            failures: e.failures.saturating_add(1),
            last_ms: now_ms,
            refused: 0,
        };
        t.source.put(attempt.source, bump(src), now_ms);
        t.account_source
            .put(attempt.account_source, bump(pair), now_ms);
        t.account.put(attempt.account, bump(acct), now_ms);
        Ok(attempt)
    }

    /// The password was right: the attempt is taken back from the source's and the account's
    /// counts, the (account, source) pair starts over and becomes a known source.
    pub fn succeeded(&self, attempt: Attempt, now_ms: u64) {
        let mut guard = self.tables();
        let t = &mut *guard;
        for (table, key) in [
            (&mut t.source, attempt.source),
            (&mut t.account, attempt.account),
        ] {
            if let Some(e) = table.entries.get_mut(&key) {
                e.failures = e.failures.saturating_sub(1);
            }
        }
        t.account_source.remove(attempt.account_source);
        t.known.put(
            attempt.account_source,
            Entry {
                failures: 0,
                last_ms: now_ms,
                refused: 0,
            },
            now_ms,
        );
    }

    /// Entries held in all tables (tests and diagnostics: bounded by 4 × [`TABLE_CAPACITY`]).
    pub fn len(&self) -> usize {
        let t = self.tables();
        t.source.len() + t.account_source.len() + t.account.len() + t.known.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
    }

    /// Fails `n` attempts at `now`, all let through.
    fn fail(t: &LoginThrottle, user: &str, src: Option<IpAddr>, n: u32, now: u64) {
        for i in 0..n {
            let a = t.begin(user, src, now);
            assert!(a.is_ok(), "attempt {i} of {user} was refused: {a:?}");
        }
    }

    #[test]
    fn one_source_gets_five_free_failures_per_account_then_a_doubling_delay() {
        let t = LoginThrottle::new();
        fail(&t, "alice", ip(2), ACCOUNT_SOURCE_FREE, 1_000);
        let r = t.begin("alice", ip(2), 1_000).unwrap_err();
        assert_eq!(r.rule, Rule::AccountSource);
        assert_eq!(r.retry_after_ms, BASE_DELAY_MS);
        // After the wait one more attempt goes through, and the next wait doubles.
        fail(&t, "alice", ip(2), 1, 2_000);
        let r = t.begin("alice", ip(2), 2_000).unwrap_err();
        assert_eq!(r.retry_after_ms, 2 * BASE_DELAY_MS);
        assert!(r.first, "the first refusal of a delay is logged");
        // Hammering while refused does not lengthen the wait, and only the first refusal of
        // a delay is to be logged.
        for i in 0..100 {
            let r = t.begin("alice", ip(2), 2_500).unwrap_err();
            assert!(!r.first, "refusal {i} of the same delay");
        }
        assert!(t.begin("alice", ip(2), 4_000).is_ok());
    }

    #[test]
    fn the_delay_is_capped_and_forgotten_after_an_hour() {
        let t = LoginThrottle::new();
        let mut now = 0;
        for _ in 0..40 {
            now += ACCOUNT_SOURCE_MAX_MS;
            let _ = t.begin("alice", ip(2), now);
        }
        let r = t.begin("alice", ip(2), now).unwrap_err();
        assert!(r.retry_after_ms <= ACCOUNT_SOURCE_MAX_MS, "{r:?}");
        assert!(t.begin("alice", ip(2), now + FORGET_AFTER_MS).is_ok());
    }

    #[test]
    fn an_attacker_elsewhere_does_not_lock_out_a_known_source() {
        let t = LoginThrottle::new();
        let ok = t.begin("alice", ip(9), 0).unwrap();
        t.succeeded(ok, 0);
        // Many attackers drive alice's account-wide count far past its free attempts.
        for n in 10..=60 {
            for _ in 0..ACCOUNT_SOURCE_FREE {
                let _ = t.begin("alice", ip(n), 10);
            }
        }
        let r = t.begin("alice", ip(61), 10).unwrap_err();
        assert_eq!(r.rule, Rule::Account, "a new source waits for the account");
        assert!(r.retry_after_ms <= ACCOUNT_MAX_MS);
        // alice's own source is not delayed at all.
        let ok = t.begin("alice", ip(9), 10).unwrap();
        t.succeeded(ok, 10);
    }

    #[test]
    fn one_source_spraying_names_is_slowed_and_unknown_names_are_treated_alike() {
        let t = LoginThrottle::new();
        for i in 0..SOURCE_FREE {
            assert!(t.begin(&format!("user{i}"), ip(3), 0).is_ok());
        }
        let r = t.begin("anyone", ip(3), 0).unwrap_err();
        assert_eq!(r.rule, Rule::Source);
        // Another source is unaffected.
        assert!(t.begin("anyone", ip(4), 0).is_ok());
    }

    #[test]
    fn a_success_takes_its_attempt_back() {
        let t = LoginThrottle::new();
        for _ in 0..(SOURCE_FREE * 3) {
            let a = t.begin("alice", ip(5), 0).unwrap();
            t.succeeded(a, 0);
        }
        assert!(t.begin("bob", ip(5), 0).is_ok());
    }

    #[test]
    fn tables_stay_bounded_under_a_flood_from_many_addresses() {
        let t = LoginThrottle::new();
        for i in 0..(3 * TABLE_CAPACITY as u32) {
            let src = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            let _ = t.begin(&format!("u{i}"), src, u64::from(i));
        }
        assert!(t.len() <= 4 * TABLE_CAPACITY, "{} entries", t.len());
    }

    #[test]
    fn ipv6_sources_are_grouped_by_their_64_bit_prefix() {
        let a: IpAddr = "fd00:1:2:3::1".parse().unwrap();
        let b: IpAddr = "fd00:1:2:3:ffff::9".parse().unwrap();
        let c: IpAddr = "fd00:1:2:4::1".parse().unwrap();
        assert_eq!(source_prefix(Some(a)), source_prefix(Some(b)));
        assert_ne!(source_prefix(Some(a)), source_prefix(Some(c)));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(source_prefix(Some(mapped)), source_prefix(ip(2)));
    }
}
