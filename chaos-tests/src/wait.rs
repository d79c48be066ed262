//! Waiting on state, never on time: [`poll_until`] re-evaluates a condition with a short,
//! growing pause until it holds or a deadline passes, and on timeout says what it waited for
//! and the last state it saw.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Why a condition does not hold yet.
#[derive(Debug)]
pub enum Waiting {
    /// Not yet; the text says what was seen. Polling goes on.
    NotYet(String),
    /// It never will (e.g. the process exited): stop polling now.
    Abort(String),
}

impl From<String> for Waiting {
    fn from(state: String) -> Self {
        Waiting::NotYet(state)
    }
}

/// Polls `check` until it returns `Ok(value)` or `timeout` passes. `Err(state)` means "not
/// yet" and describes what was seen (a `String` converts to [`Waiting::NotYet`]); the last one
/// goes into the timeout error. [`Waiting::Abort`] ends the wait at once. An attempt that
/// itself hangs is cut off at the deadline.
pub async fn poll_until<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    E: Into<Waiting>,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pause = Duration::from_millis(10);
    let mut attempts = 0u32;
    let mut last;
    loop {
        attempts += 1;
        // Each attempt gets at least a moment, even when the deadline is already near.
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(500));
        match tokio::time::timeout(budget, check()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => match e.into() {
                Waiting::NotYet(state) => last = state,
                Waiting::Abort(why) => bail!("gave up waiting for {what}: {why}"),
            },
            Err(_) => last = format!("an attempt was still running after {budget:?}"),
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "timed out after {:.1?} ({attempts} attempts) waiting for {what}; last state: {last}",
                now.duration_since(start)
            );
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let n = AtomicU32::new(0);
        let v = poll_until("third call", Duration::from_secs(5), || async {
            let k = n.fetch_add(1, Ordering::Relaxed);
            if k >= 2 { Ok(k) } else { Err(format!("k={k}")) }
        })
        .await
        .unwrap();
        assert_eq!(v, 2);
    }

    #[tokio::test]
    async fn times_out_with_the_last_state() {
        let err = poll_until("never", Duration::from_millis(50), || async {
            Err::<(), _>("still no".to_string())
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("waiting for never") && err.contains("still no"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn abort_ends_the_wait_at_once() {
        let started = std::time::Instant::now();
        let err = poll_until("doomed", Duration::from_secs(30), || async {
            Err::<(), _>(Waiting::Abort("process exited".into()))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("process exited"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
