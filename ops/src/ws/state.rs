//! The bookkeeping of a chat session that needs no socket: per-channel cursors and
//! deduplication, the queue of unacknowledged sends, the reconnect backoff, the client-side
//! frame rate limit and the order in which nodes are tried.
//!
//! Pure state machines: time and randomness are passed in so that every rule can be tested
//! exactly. This module must never perform I/O, sleep, or look at the clock itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::ws::ClientFrame;

// ---- reconnect backoff ----

/// The reconnect delay of docs/protocol.md ("Failover"): 100 ms doubling to 5 s, ±50%.
///
/// Unlike the REST failover backoff (`backoff`, equal jitter below the ceiling), the protocol
/// asks for jitter on both sides of the nominal delay: retry `n` waits a uniform draw from
/// `[c/2, 3c/2]` with `c = min(cap, first * 2^n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectBackoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        ReconnectBackoff {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }
}

impl ReconnectBackoff {
    /// The nominal (unjittered) delay before retry `retry` (0-based).
    pub fn nominal(&self, retry: u32) -> Duration {
        // Clamping the shift avoids overflow; 2^20 * 100 ms is far past any cap.
        self.first
            .saturating_mul(1u32 << retry.min(20))
            .min(self.cap)
    }

    /// The delay before retry `retry`, given `unit`, a random number in `[0, 1]`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let nominal = self.nominal(retry);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        nominal / 2 + nominal.mul_f64(unit)
    }
}

// ---- cursors and deduplication ----

/// What to do with an event frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    /// New: deliver it. The cursor now is its `ev`.
    New,
    /// New, but events between the cursor and it never arrived (`expected` is the first
    /// missing one). Delivered anyway; the caller is told about the gap.
    Gap { expected: u64 },
    /// At or below the cursor: already delivered. Drop it.
    Duplicate,
}

#[derive(Debug, Clone, Default)]
struct Sub {
    /// The last `ev` delivered to the caller; `None` until the first event or `subscribed`.
    cursor: Option<u64>,
    /// The caller wants this channel streamed (re-subscribed on every connection).
    wanted: bool,
    /// The server confirmed the subscription on the current connection.
    confirmed: bool,
}

/// Per-channel cursors and subscription wishes.
///
/// Deduplication is by cursor: the server delivers each channel's events in `ev` order and a
/// resumed subscription replays from `after = cursor`, so "ev at or below the cursor" is
/// exactly "this `(channel, ev)` was delivered before", on this connection or an earlier one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subscriptions {
    subs: BTreeMap<String, Sub>,
}

impl Subscriptions {
    /// The caller wants `channel`. With `after`, the cursor is set to it (a replay from there
    /// is wanted, even if it goes back); without, an existing cursor is kept (resume), and a
    /// new channel starts "from now".
    pub(crate) fn want(&mut self, channel: &str, after: Option<u64>) {
        let sub = self.subs.entry(channel.to_owned()).or_default();
        sub.wanted = true;
        sub.confirmed = false;
        if after.is_some() {
            sub.cursor = after;
        }
    }

    /// The caller (or the server, with `unsubscribed`) ended the subscription. The cursor is
    /// kept: subscribing again resumes without duplicates.
    pub(crate) fn unwant(&mut self, channel: &str) {
        if let Some(sub) = self.subs.get_mut(channel) {
            sub.wanted = false;
            sub.confirmed = false;
        }
    }

    pub(crate) fn is_wanted(&self, channel: &str) -> bool {
        self.subs.get(channel).is_some_and(|s| s.wanted)
    }

    /// Wanted but not yet confirmed by `subscribed` on this connection.
    pub(crate) fn is_awaiting_confirmation(&self, channel: &str) -> bool {
        self.subs
            .get(channel)
            .is_some_and(|s| s.wanted && !s.confirmed)
    }

    pub(crate) fn cursor(&self, channel: &str) -> Option<u64> {
        self.subs.get(channel).and_then(|s| s.cursor)
    }

    pub(crate) fn cursors(&self) -> BTreeMap<String, u64> {
        self.subs
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.cursor?)))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn confirmed(&self) -> Vec<String> {
        self.subs
            .iter()
            .filter(|(_, s)| s.wanted && s.confirmed)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Decides about an event frame and moves the cursor if it is new.
    pub(crate) fn accept(&mut self, channel: &str, ev: u64) -> Accept {
        let sub = self.subs.entry(channel.to_owned()).or_default();
        match sub.cursor {
            Some(cursor) if ev <= cursor => Accept::Duplicate,
            Some(cursor) if ev > cursor + 1 => {
                sub.cursor = Some(ev);
                Accept::Gap {
                    expected: cursor + 1,
                }
            }
            _ => {
                sub.cursor = Some(ev);
                Accept::New
            }
        }
    }

    /// `subscribed` arrived: the replay is complete up to `ev`. The cursor never moves back:
    /// a node that lags behind the one we came from reports a lower `ev`, and its live events
    /// up to our cursor are then dropped as duplicates.
    pub(crate) fn subscribed(&mut self, channel: &str, ev: u64) {
        let sub = self.subs.entry(channel.to_owned()).or_default();
        sub.confirmed = true;
        sub.cursor = Some(sub.cursor.map_or(ev, |c| c.max(ev)));
    }

    /// A new connection: nothing is confirmed on it yet.
    pub(crate) fn connection_lost(&mut self) {
        for sub in self.subs.values_mut() {
            sub.confirmed = false;
        }
    }

    /// The `subscribe` frames that resume every wanted channel from its cursor.
    pub(crate) fn resume_frames(&self) -> Vec<ClientFrame> {
        self.subs
            .iter()
            .filter(|(_, s)| s.wanted)
            .map(|(name, s)| ClientFrame::Subscribe {
                channel: name.clone(),
                after: s.cursor,
            })
            .collect()
    }
}

// ---- unacknowledged sends ----

/// One message sent (or to be sent) and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct PendingSend<R> {
    pub client_msg_id: String,
    pub channel: String,
    pub body: String,
    pub thread_root: Option<u64>,
    /// Set after an `unavailable` nack: when to send it again on this connection.
    pub retry_at: Option<Instant>,
    /// How many `unavailable` nacks it got in a row (for the retry backoff).
    pub unavailable_count: u32,
    /// Whoever waits for the outcome.
    pub responder: R,
}

impl<R> PendingSend<R> {
    pub(crate) fn new(
        client_msg_id: String,
        channel: String,
        body: String,
        thread_root: Option<u64>,
        responder: R,
    ) -> Self {
        PendingSend {
            client_msg_id,
            channel,
            body,
            thread_root,
            retry_at: None,
            unavailable_count: 0,
            responder,
        }
    }

    pub(crate) fn frame(&self) -> ClientFrame {
        ClientFrame::Send {
            channel: self.channel.clone(),
            body: self.body.clone(),
            client_msg_id: self.client_msg_id.clone(),
            thread_root: self.thread_root,
        }
    }
}

/// Unacknowledged sends in the order the caller made them (the order re-sends must keep).
#[derive(Debug)]
pub(crate) struct PendingSends<R> {
    queue: Vec<PendingSend<R>>,
}

impl<R> Default for PendingSends<R> {
    fn default() -> Self {
        PendingSends { queue: Vec::new() }
    }
}

impl<R> PendingSends<R> {
    pub(crate) fn push(&mut self, send: PendingSend<R>) {
        self.queue.push(send);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    #[cfg(test)]
    pub(crate) fn ids(&self) -> Vec<String> {
        self.queue.iter().map(|p| p.client_msg_id.clone()).collect()
    }

    /// Removes and returns the send with this id (on `ack` or a final `nack`).
    pub(crate) fn remove(&mut self, client_msg_id: &str) -> Option<PendingSend<R>> {
        let idx = self
            .queue
            .iter()
            .position(|p| p.client_msg_id == client_msg_id)?;
        Some(self.queue.remove(idx))
    }

    /// An `unavailable` nack: send again at `now + delay(attempt)`. Returns false if the id is
    /// not pending (already acknowledged).
    pub(crate) fn retry_later(
        &mut self,
        client_msg_id: &str,
        now: Instant,
        delay: impl FnOnce(u32) -> Duration,
    ) -> bool {
        let Some(p) = self
            .queue
            .iter_mut()
            .find(|p| p.client_msg_id == client_msg_id)
        else {
            return false;
        };
        p.retry_at = Some(now + delay(p.unavailable_count));
        p.unavailable_count = p.unavailable_count.saturating_add(1);
        true
    }

    /// The earliest scheduled retry.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.queue.iter().filter_map(|p| p.retry_at).min()
    }

    /// The sends whose retry time has come, in original order; their retry is cleared.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        for p in &mut self.queue {
            if p.retry_at.is_some_and(|at| at <= now) {
                p.retry_at = None;
                frames.push(p.frame());
            }
        }
        frames
    }

    /// Every pending send, in original order, for a new connection (scheduled retries are
    /// folded into this re-send).
    pub(crate) fn resend_all(&mut self) -> Vec<ClientFrame> {
        self.queue
            .iter_mut()
            .map(|p| {
                p.retry_at = None;
                p.frame()
            })
            .collect()
    }

    /// Empties the queue (the session ends) and hands back every send, in order.
    pub(crate) fn drain(&mut self) -> Vec<PendingSend<R>> {
        std::mem::take(&mut self.queue)
    }
}

// ---- client-side rate limit ----

/// A token bucket that keeps the client under the server's frame limit (20/s sustained,
/// burst 60, then close 4029). Without it a long queue of re-sends after an outage would be
/// sent at once, get the connection closed, be re-sent on the next connection, and so on.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(per_sec: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            // A zero or negative rate would never refill; treat it as "one per second".
            per_sec: if per_sec.is_finite() && per_sec > 0.0 {
                per_sec
            } else {
                1.0
            },
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is available now.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be available (now if one is).
    pub(crate) fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }
}

// ---- which node next ----

/// The order in which to try `nodes` after `failed` went away: the ones after it in the
/// list first (wrapping around), the failed one last, so that every other node is preferred
/// but a cluster of one still gets its node back.
pub(crate) fn failover_order<T: Clone>(nodes: &[T], failed: Option<usize>) -> Vec<T> {
    let n = nodes.len();
    match failed {
        Some(f) if f < n => (1..=n).map(|k| nodes[(f + k) % n].clone()).collect(),
        _ => nodes.to_vec(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_doubles_to_five_seconds_with_half_jitter() {
        let b = ReconnectBackoff::default();
        let nominal: Vec<u128> = (0..9).map(|n| b.nominal(n).as_millis()).collect();
        assert_eq!(
            nominal,
            vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(5));
        for retry in 0..12 {
            let c = b.nominal(retry);
            assert_eq!(b.delay(retry, 0.0), c / 2);
            assert_eq!(b.delay(retry, 1.0), c * 3 / 2);
            assert_eq!(b.delay(retry, 0.5), c);
            for unit in [0.1, 0.33, 0.9] {
                let d = b.delay(retry, unit);
                assert!(d >= c / 2 && d <= c * 3 / 2, "{d:?} outside ±50% of {c:?}");
            }
        }
        // The absolute bounds the protocol allows: 50 ms at the least, 7.5 s at the most.
        assert_eq!(b.delay(0, -3.0), Duration::from_millis(50));
        assert_eq!(b.delay(40, 9.0), Duration::from_millis(7500));
        assert_eq!(b.delay(3, f64::NAN), b.nominal(3));
    }

    #[test]
    fn events_are_deduplicated_by_cursor() {
        let mut subs = Subscriptions::default();
        subs.want("general", Some(41));
        assert_eq!(subs.accept("general", 41), Accept::Duplicate);
        assert_eq!(subs.accept("general", 42), Accept::New);
        assert_eq!(subs.accept("general", 43), Accept::New);
        assert_eq!(subs.accept("general", 42), Accept::Duplicate);
        assert_eq!(subs.accept("general", 43), Accept::Duplicate);
        assert_eq!(subs.cursor("general"), Some(43));
        // Channels are independent.
        assert_eq!(subs.accept("ops", 1), Accept::New);
        assert_eq!(subs.accept("ops", 1), Accept::Duplicate);
        assert_eq!(subs.cursor("general"), Some(43));
    }

    #[test]
    fn reconnect_replay_overlap_is_dropped() {
        let mut subs = Subscriptions::default();
        subs.want("general", None);
        subs.subscribed("general", 10);
        for ev in 11..=15 {
            assert_eq!(subs.accept("general", ev), Accept::New);
        }
        subs.connection_lost();
        assert_eq!(
            subs.resume_frames(),
            vec![ClientFrame::Subscribe {
                channel: "general".into(),
                after: Some(15)
            }]
        );
        // A server that replays a little too much (or a lagging node's live stream) never
        // makes the caller see an ev twice.
        for ev in 13..=15 {
            assert_eq!(subs.accept("general", ev), Accept::Duplicate);
        }
        assert_eq!(subs.accept("general", 16), Accept::New);
        // A lagging node confirms a lower ev: the cursor does not move back.
        subs.subscribed("general", 14);
        assert_eq!(subs.cursor("general"), Some(16));
        assert_eq!(subs.accept("general", 15), Accept::Duplicate);
    }

    #[test]
    fn gaps_are_reported_and_skipped() {
        let mut subs = Subscriptions::default();
        subs.want("general", Some(5));
        assert_eq!(subs.accept("general", 8), Accept::Gap { expected: 6 });
        assert_eq!(subs.accept("general", 9), Accept::New);
        // Without a cursor ("from now", before `subscribed`) nothing can be a gap.
        subs.want("ops", None);
        assert_eq!(subs.accept("ops", 77), Accept::New);
    }

    #[test]
    fn subscription_wishes_and_confirmation() {
        let mut subs = Subscriptions::default();
        subs.want("b", None);
        subs.want("a", Some(3));
        assert!(subs.is_awaiting_confirmation("a"));
        subs.subscribed("a", 7);
        assert!(!subs.is_awaiting_confirmation("a"));
        assert_eq!(subs.confirmed(), vec!["a"]);
        assert_eq!(subs.cursor("a"), Some(7));
        assert_eq!(subs.cursor("b"), None);
        assert_eq!(
            subs.resume_frames(),
            vec![
                ClientFrame::Subscribe {
                    channel: "a".into(),
                    after: Some(7)
                },
                ClientFrame::Subscribe {
                    channel: "b".into(),
                    after: None
                },
            ]
        );
        subs.unwant("a");
        assert!(!subs.is_wanted("a"));
        assert_eq!(subs.resume_frames().len(), 1);
        // The cursor survives: subscribing again resumes.
        subs.want("a", None);
        assert_eq!(subs.cursor("a"), Some(7));
        // An explicit `after` asks for a replay, even backwards.
        subs.want("a", Some(0));
        assert_eq!(subs.cursor("a"), Some(0));
        assert_eq!(subs.cursors().get("a"), Some(&0));
    }

    fn pending(id: &str) -> PendingSend<()> {
        PendingSend::new(id.into(), "general".into(), format!("body {id}"), None, ())
    }

    fn ids(frames: &[ClientFrame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                ClientFrame::Send { client_msg_id, .. } => client_msg_id.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn resend_keeps_original_order_and_ids() {
        let mut q = PendingSends::default();
        for id in ["c-1", "c-2", "c-3", "c-4"] {
            q.push(pending(id));
        }
        // Acks arrive out of order.
        assert!(q.remove("c-3").is_some());
        assert!(q.remove("c-3").is_none());
        assert_eq!(ids(&q.resend_all()), vec!["c-1", "c-2", "c-4"]);
        q.push(pending("c-5"));
        assert_eq!(q.ids(), vec!["c-1", "c-2", "c-4", "c-5"]);
        let ClientFrame::Send {
            body, thread_root, ..
        } = &q.resend_all()[0]
        else {
            panic!("not a send");
        };
        assert_eq!((body.as_str(), *thread_root), ("body c-1", None));
        assert_eq!(q.drain().len(), 4);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn unavailable_nacks_are_retried_after_a_growing_delay() {
        let t0 = Instant::now();
        let mut q = PendingSends::default();
        q.push(pending("c-1"));
        q.push(pending("c-2"));
        q.push(pending("c-3"));
        let delay = |n: u32| Duration::from_millis(100 << n);
        assert!(q.retry_later("c-3", t0, delay));
        assert!(q.retry_later("c-1", t0, delay));
        assert!(!q.retry_later("c-9", t0, delay));
        assert_eq!(q.next_retry(), Some(t0 + Duration::from_millis(100)));
        assert!(q.take_due(t0).is_empty());
        // Due together: original order, not nack order.
        let due = q.take_due(t0 + Duration::from_millis(100));
        assert_eq!(ids(&due), vec!["c-1", "c-3"]);
        assert_eq!(q.next_retry(), None);
        // A second nack doubles the delay.
        assert!(q.retry_later("c-1", t0, delay));
        assert_eq!(q.next_retry(), Some(t0 + Duration::from_millis(200)));
        // A reconnect re-sends everything and clears the schedule.
        assert_eq!(ids(&q.resend_all()), vec!["c-1", "c-2", "c-3"]);
        assert_eq!(q.next_retry(), None);
    }

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert_eq!(b.ready_at(t0), t0 + Duration::from_millis(100));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long it was idle.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.try_take(later));
        }
        assert!(!b.try_take(later));
        // A nonsense rate still refills.
        let mut b = TokenBucket::new(0.0, 1, t0);
        assert!(b.try_take(t0));
        assert!(b.ready_at(t0) <= t0 + Duration::from_secs(1));
    }

    #[test]
    fn failover_prefers_the_other_nodes() {
        let nodes = ["n1", "n2", "n3"];
        assert_eq!(failover_order(&nodes, None), vec!["n1", "n2", "n3"]);
        assert_eq!(failover_order(&nodes, Some(0)), vec!["n2", "n3", "n1"]);
        assert_eq!(failover_order(&nodes, Some(2)), vec!["n1", "n2", "n3"]);
        assert_eq!(failover_order(&nodes, Some(1)), vec!["n3", "n1", "n2"]);
        assert_eq!(failover_order(&nodes, Some(7)), vec!["n1", "n2", "n3"]);
        assert_eq!(failover_order(&["only"], Some(0)), vec!["only"]);
        assert!(failover_order::<&str>(&[], Some(0)).is_empty());
    }
}
