//! Client load shared by the chaos tests and the benchmark: posters that send messages with a
//! fixed `client_msg_id` each and retry that same id until it is acknowledged or a deadline
//! passes, recording what every client was told (acknowledged with which seq, or unknown, or
//! refused). The record is what the invariant checks in [`crate::checks`] compare against.
//!
//! A poster waits for each ack before sending its next message, so its acks also give the
//! send-order check ([`crate::checks::acknowledged_in_send_order`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ops::ClientError;
use tokio::task::JoinHandle;

use crate::checks::Msg;

/// A message the cluster acknowledged (201, or 200 with `duplicate` for a retry that had
/// already been written).
#[derive(Clone, Debug)]
pub struct Ack {
    pub poster: usize,
    pub msg: Msg,
    pub index: Option<u64>,
    pub duplicate: bool,
    /// When the first attempt was sent.
    pub sent_at: Instant,
    pub acked_at: Instant,
    /// The server the client used for the successful attempt.
    pub server: String,
    pub attempts: u32,
}

impl Ack {
    pub fn latency(&self) -> Duration {
        self.acked_at.duration_since(self.sent_at)
    }
}

/// A message whose fate the client does not know (retries ran out) or that was refused.
#[derive(Clone, Debug)]
pub struct Failed {
    pub poster: usize,
    pub client_msg_id: String,
    pub body: String,
    pub error: String,
    /// A definite refusal (non-retryable answer such as a 4xx) rather than an unknown outcome.
    pub refused: bool,
}

/// Whether an error may be retried with the same `client_msg_id`: transport failures and 5xx
/// (the server dedupes by `(author, client_msg_id)`, so a retry never writes twice). 4xx are
/// final answers.
pub fn retryable(e: &ClientError) -> bool {
    match e.status() {
        Some(status) => status >= 500,
        None => !matches!(
            e,
            ClientError::NotLoggedIn
                | ClientError::InvalidServer { .. }
                | ClientError::InvalidTrustRoot { .. }
                | ClientError::CertificateNotTrusted { .. }
                | ClientError::Redirected { .. }
        ),
    }
}

/// Posts one message, retrying the same id on retryable errors until `deadline`.
/// Returns the outcome and the number of attempts, or the last error.
pub async fn post_until_acked(
    client: &ops::Client,
    channel: &str,
    body: &str,
    client_msg_id: &str,
    deadline: Instant,
) -> Result<(ops::PostOutcome, u32), (ClientError, u32)> {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match client.post_message(channel, body, client_msg_id).await {
            Ok(outcome) => return Ok((outcome, attempts)),
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                // A short pause so a cluster without a leader is not hammered; the wait is
                // bounded by `deadline`, not a fixed sleep standing in for a state change.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err((e, attempts)),
        }
    }
}

/// What a load run should do.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub channel: String,
    /// Ids are `<prefix>-<n>`, n counting from 0 across all posters.
    pub id_prefix: String,
    /// How long one message is retried before it is recorded as unknown.
    pub per_message_deadline: Duration,
    /// Stop after this many messages in all (None: until [`Load::stop`]).
    pub total: Option<u64>,
    /// Body length in bytes (at least the id's length).
    pub body_len: usize,
}

impl LoadConfig {
    pub fn new(channel: &str, id_prefix: &str) -> Self {
        Self {
            channel: channel.to_owned(),
            id_prefix: id_prefix.to_owned(),
            per_message_deadline: Duration::from_secs(30),
            total: None,
            body_len: 64,
        }
    }
}

#[derive(Default)]
struct Shared {
    acks: Mutex<Vec<Ack>>,
    failed: Mutex<Vec<Failed>>,
    next: AtomicU64,
    acked: AtomicU64,
    failed_attempts: AtomicU64,
}

/// Locks a harness mutex: held only to push or copy a record, never across an `.await`;
/// a poisoned lock (a panicking poster) still holds valid records.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Posters running in the background.
pub struct Load {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    started: Instant,
}

/// What the clients were told, once the load has stopped.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// In acknowledgement order; per poster that is also sending order.
    pub acks: Vec<Ack>,
    /// Unknown fate (retries ran out) or refused (4xx).
    pub failed: Vec<Failed>,
    /// Attempts that failed and were retried or given up.
    pub failed_attempts: u64,
    pub posters: usize,
    pub elapsed: Duration,
    /// Poster tasks that panicked.
    pub panics: Vec<String>,
}

impl Load {
    /// Starts one poster per client. Each client may point at one node or at several (failover).
    pub fn start(clients: Vec<ops::Client>, cfg: LoadConfig) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(poster, client)| {
                let (stop, shared, cfg) = (stop.clone(), shared.clone(), cfg.clone());
                tokio::spawn(async move { poster_loop(poster, client, cfg, stop, shared).await })
            })
            .collect();
        Load {
            stop,
            shared,
            tasks,
            started: Instant::now(),
        }
    }

    /// Messages acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Relaxed)
    }

    /// Acks received after `t` so far (copies).
    pub fn acks_after(&self, t: Instant) -> Vec<Ack> {
        lock(&self.shared.acks)
            .iter()
            .filter(|a| a.acked_at > t)
            .cloned()
            .collect()
    }

    pub fn failed_attempts(&self) -> u64 {
        self.shared.failed_attempts.load(Ordering::Relaxed)
    }

    /// True once every poster has exited (bounded load finished, or all posters died).
    pub fn finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// Asks the posters to stop after their current message and waits for them.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Waits for a bounded load (`total`) to finish.
    pub async fn join(self) -> LoadReport {
        let posters = self.tasks.len();
        let mut panics = Vec::new();
        for t in self.tasks {
            if let Err(e) = t.await {
                panics.push(e.to_string());
            }
        }
        LoadReport {
            acks: std::mem::take(&mut *lock(&self.shared.acks)),
            failed: std::mem::take(&mut *lock(&self.shared.failed)),
            failed_attempts: self.shared.failed_attempts.load(Ordering::Relaxed),
            posters,
            elapsed: self.started.elapsed(),
            panics,
        }
    }
}

async fn poster_loop(
    poster: usize,
    client: ops::Client,
    cfg: LoadConfig,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    while !stop.load(Ordering::Relaxed) {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if cfg.total.is_some_and(|total| n >= total) {
            break;
        }
        let id = format!("{}-{n}", cfg.id_prefix);
        let body = make_body(&id, cfg.body_len);
        let sent_at = Instant::now();
        let deadline = sent_at + cfg.per_message_deadline;
        match post_until_acked(&client, &cfg.channel, &body, &id, deadline).await {
            Ok((outcome, attempts)) => {
                let acked_at = Instant::now();
                shared
                    .failed_attempts
                    .fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
                let ack = Ack {
                    poster,
                    msg: Msg::from(&outcome.message),
                    index: outcome.index,
                    duplicate: outcome.duplicate,
                    sent_at,
                    acked_at,
                    server: client.current_server().to_string(),
                    attempts,
                };
                lock(&shared.acks).push(ack);
                shared.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, attempts)) => {
                shared
                    .failed_attempts
                    .fetch_add(u64::from(attempts), Ordering::Relaxed);
                lock(&shared.failed).push(Failed {
                    poster,
                    client_msg_id: id,
                    body,
                    refused: !retryable(&e),
                    error: e.to_string(),
                });
            }
        }
    }
}

/// `<id> xxxx...` padded to `len` bytes.
pub fn make_body(id: &str, len: usize) -> String {
    let mut body = format!("{id} ");
    while body.len() < len {
        body.push('x');
    }
    body
}

impl LoadReport {
    /// The acknowledged messages as the clients were told them.
    pub fn acked_msgs(&self) -> Vec<Msg> {
        self.acks.iter().map(|a| a.msg.clone()).collect()
    }

    /// Acks grouped by poster, in sending order.
    pub fn per_poster(&self) -> Vec<Vec<Msg>> {
        let mut out = vec![Vec::new(); self.posters];
        for a in &self.acks {
            if let Some(v) = out.get_mut(a.poster) {
                v.push(a.msg.clone());
            }
        }
        out
    }

    /// Every client_msg_id any poster sent (acknowledged or not).
    pub fn sent_ids(&self) -> HashSet<String> {
        self.acks
            .iter()
            .map(|a| a.msg.client_msg_id.clone())
            .chain(self.failed.iter().map(|f| f.client_msg_id.clone()))
            .collect()
    }

    /// Sorted per-request latencies in milliseconds.
    pub fn latencies_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .acks
            .iter()
            .map(|a| a.latency().as_secs_f64() * 1e3)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// The `p`-th percentile (0..=100) of sorted samples, nearest-rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 1.0), Some(7.0));
    }

    #[test]
    fn body_has_requested_length_and_starts_with_id() {
        let b = make_body("t-1", 64);
        assert_eq!(b.len(), 64);
        assert!(b.starts_with("t-1 "));
    }
}
