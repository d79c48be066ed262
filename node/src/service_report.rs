//! Telling the service manager how the node is doing: systemd (`sd_notify`) on Linux, the
//! Service Control Manager on Windows (`win_service`). One readiness rule for both, so
//! `systemctl start conclave` and `conclave service start` return at the same moment: when the
//! node really serves.
//!
//! Owns the loop that watches readiness and the [`Sink`] seam the two managers plug into. The
//! rule itself is `ClusterNode::readiness` (what `/readyz` is built on); this module never has
//! one of its own. It deliberately leaves out the one thing `/readyz` adds, the drain flag: a
//! drained node still serves every request it gets, and the flag is the operator's, cleared by
//! hand after a restart, so waiting on it would make a restart of a drained node (the rolling
//! upgrade's step) hang until the manager's start timeout.
//!
//! It must never be fatal: a manager that cannot be told is logged by its sink and otherwise
//! ignored.

use std::sync::Arc;
use std::time::Duration;

use cluster::ClusterNode;
use tokio_util::sync::CancellationToken;

/// How often readiness is re-read. It changes on Raft events (a leader elected, the log applied
/// up to the leader's), which the node does not publish as a stream; a quarter second keeps
/// the start command within that of the node being ready, at the cost of one cheap read.
const POLL: Duration = Duration::from_millis(250);

/// One service manager's side of the conversation. Every method must return at once and never
/// fail (a manager that cannot be told is logged, not obeyed).
pub trait Sink: Send + Sync {
    /// The node serves (first time in this round): systemd's `READY=1`, the SCM's Running.
    fn ready(&self, status: &str);
    /// The human-readable state changed (starting: why not yet, serving, draining, not ready).
    fn status(&self, status: &str);
    /// Called on every poll until the first `ready`: a manager that times out a start without
    /// progress (the SCM's wait hint) is shown that the node is still working on it.
    fn still_starting(&self) {}
    /// The node begins a graceful stop.
    fn stopping(&self);
    /// The node stops this round to restart in-process after a storage failure: the manager
    /// must not take it for a stop (after systemd's `STOPPING=1` the unit is on its way out).
    fn restarting(&self);
}

/// The service manager this process runs under, if any.
#[derive(Clone, Default)]
pub struct Manager(Option<Arc<dyn Sink>>);

impl Manager {
    /// No manager: `run` in a terminal or a container.
    pub fn none() -> Self {
        Self(None)
    }

    /// systemd when `$NOTIFY_SOCKET` is set, else none (the Windows service passes its own).
    pub fn from_env() -> Self {
        let notifier = crate::sd_notify::Notifier::from_env();
        match notifier.is_enabled() {
            true => Self(Some(Arc::new(notifier))),
            false => Self::none(),
        }
    }

    /// The Windows service's own (and tests').
    #[cfg_attr(not(windows), allow(dead_code))]
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        Self(Some(sink))
    }

    /// A status line outside the readiness loop (waiting for storage).
    pub fn status(&self, status: &str) {
        if let Some(sink) = &self.0 {
            sink.status(status);
        }
    }
}

/// What one poll saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub ready: bool,
    /// Why the node does not serve, when it does not.
    pub reason: Option<String>,
    pub draining: bool,
}

impl Seen {
    pub fn of(node: &ClusterNode) -> Self {
        let readiness = node.readiness();
        Self {
            ready: readiness.ready,
            reason: readiness.reason,
            draining: node.is_draining(),
        }
    }
}

/// Tells the manager how the node is doing until `cancel` fires: a status line while it starts,
/// `ready` (once) when `seen()` first says ready, a status line whenever the reported state
/// changes after that, and `stopping` (or `restarting`, when `restarting` has fired by then)
/// at the end.
pub async fn report(
    manager: Manager,
    seen: impl Fn() -> Seen,
    cancel: CancellationToken,
    restarting: CancellationToken,
) {
    report_every(POLL, manager, seen, cancel, restarting).await
}

async fn report_every(
    poll: Duration,
    manager: Manager,
    seen: impl Fn() -> Seen,
    cancel: CancellationToken,
    restarting: CancellationToken,
) {
    let Some(sink) = manager.0 else {
        return;
    };
    let mut ready_sent = false;
    let mut last_status = String::new();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = seen();
        let status = match (&now.reason, now.draining) {
            (None, false) => "serving".to_owned(),
            (None, true) => "serving (draining: out of DNS and /readyz)".to_owned(),
            (Some(why), _) if ready_sent => format!("not ready: {why}"),
            (Some(why), _) => format!("starting: {why}"),
        };
        if now.ready && !ready_sent {
            ready_sent = true;
            tracing::info!("ready; notifying the service manager");
            sink.ready(&status);
            last_status = status;
            continue;
        }
        if !ready_sent {
            sink.still_starting();
        }
        if status != last_status {
            sink.status(&status);
            last_status = status;
        }
    }
    if restarting.is_cancelled() {
        sink.restarting();
    } else {
        sink.stopping();
    }
}

/// systemd's side: `sd_notify(3)` assignments.
impl Sink for crate::sd_notify::Notifier {
    fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping");
    }

    fn restarting(&self) {
        self.notify("STATUS=restarting after a storage failure");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        fn events(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Sink for Recorder {
        fn ready(&self, status: &str) {
            self.push(format!("ready {status}"));
        }
        fn status(&self, status: &str) {
            self.push(format!("status {status}"));
        }
        fn still_starting(&self) {
            self.push("tick".into());
        }
        fn stopping(&self) {
            self.push("stopping".into());
        }
        fn restarting(&self) {
            self.push("restarting".into());
        }
    }

    /// Plays `script` (one `Seen` per poll, the last repeated) and cancels once it is used up
    /// and one more poll has run.
    async fn play(script: Vec<Seen>, restart: bool) -> Vec<String> {
        let recorder = Arc::new(Recorder::default());
        let cancel = CancellationToken::new();
        let restarting = CancellationToken::new();
        if restart {
            restarting.cancel();
        }
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (p, c, n) = (polls.clone(), cancel.clone(), script.len());
        let seen = move || {
            let i = p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if i >= n {
                c.cancel();
            }
            script[i.min(n - 1)].clone()
        };
        report_every(
            Duration::from_millis(1),
            Manager::new(recorder.clone()),
            seen,
            cancel,
            restarting,
        )
        .await;
        recorder.events()
    }

    fn starting(why: &str) -> Seen {
        Seen {
            ready: false,
            reason: Some(why.into()),
            draining: false,
        }
    }

    fn serving(draining: bool) -> Seen {
        Seen {
            ready: true,
            reason: None,
            draining,
        }
    }

    #[tokio::test]
    async fn ready_is_sent_once_after_progress_and_changes_follow() {
        let events = play(
            vec![
                starting("no leader"),
                starting("no leader"),
                starting("catching up"),
                serving(false),
                serving(false),
                serving(true),
                starting("no leader"),
            ],
            false,
        )
        .await;
        assert_eq!(
            events,
            vec![
                "tick",
                "status starting: no leader",
                "tick",
                "tick",
                "status starting: catching up",
                "ready serving",
                "status serving (draining: out of DNS and /readyz)",
                "status not ready: no leader",
                "stopping",
            ]
        );
    }

    #[tokio::test]
    async fn a_storage_restart_is_not_a_stop() {
        let events = play(vec![serving(false)], true).await;
        assert_eq!(events, vec!["ready serving", "restarting"]);
    }

    #[tokio::test]
    async fn no_manager_means_no_polling() {
        let polled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let p = polled.clone();
        report(
            Manager::none(),
            move || {
                p.store(true, std::sync::atomic::Ordering::SeqCst);
                serving(false)
            },
            CancellationToken::new(),
            CancellationToken::new(),
        )
        .await;
        assert!(!polled.load(std::sync::atomic::Ordering::SeqCst));
    }
}
