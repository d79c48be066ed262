//! Group commit: gathers client commands that arrive while earlier proposals are in flight and
//! proposes them as one log entry, then hands each caller its own outcome.
//!
//! Why here: openraft 0.9 appends and flushes each `client_write` on its own, so without
//! batching every message costs one fsync on each node and one replication round. Owns the
//! write path from "a handler has a command" to "the command's outcome is known", including
//! forwarding to the leader when this node is a follower, and retrying while leadership moves.
//!
//! Must never retry a batch whose outcome is unknown unless every command in it is idempotent
//! (a retried `PostMessage` is deduplicated by the state machine; a retried `CreateUser` is not).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::command::{COMMAND_VERSION, Command, Outcome, Request, Response};
use crate::error::ClusterError;
use crate::node::shared::Shared;
use crate::transport::network::TransportError;
use crate::transport::rpc::{self, ForwardError, ForwardReply, ForwardRequest};
use crate::types::NodeId;

pub(crate) type Reply = oneshot::Sender<Result<(Outcome, u64), ClusterError>>;

pub(crate) struct Pending {
    pub cmd: Command,
    pub reply: Reply,
}

/// Limits of one proposed entry.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_commands: usize,
    pub max_bytes: usize,
    /// Proposals in flight at once from this node; the next batch fills while they run.
    pub max_in_flight: usize,
    /// How long one write may wait for a leader before the caller gets `Unavailable`.
    pub write_timeout: Duration,
}

fn approx_size(c: &Command) -> usize {
    match c {
        Command::PostMessage {
            body,
            client_msg_id,
            ..
        } => 64 + body.len() + client_msg_id.len(),
        _ => 256,
    }
}

fn idempotent(c: &Command) -> bool {
    !matches!(
        c,
        Command::CreateUser { .. } | Command::CreateUserV2 { .. } | Command::CreateChannel { .. }
    )
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Pending>,
    limits: BatchLimits,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    loop {
        // Wait for a proposal slot first, so commands queue (and batch up) while slots are busy.
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            p = rx.recv() => match p { Some(p) => p, None => break },
        };
        let mut bytes = approx_size(&first.cmd);
        let mut batch = vec![first];
        while batch.len() < limits.max_commands && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += approx_size(&p.cmd);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        crate::metrics::observe_batch(batch.len());
        // Waits while a leadership handover holds writes (`handover`); kept until the
        // proposal ended, so the handover also waits for the proposals in flight.
        let admitted = shared.handover.admit().await;
        let shared = shared.clone();
        tokio::spawn(async move {
            propose(&shared, batch, limits.write_timeout).await;
            drop(admitted);
            drop(permit);
        });
    }
    // Fail whatever is still queued so no caller hangs on shutdown.
    rx.close();
    while let Ok(p) = rx.try_recv() {
        let _ = p.reply.send(Err(ClusterError::ShuttingDown));
    }
}

async fn propose(shared: &Shared, batch: Vec<Pending>, timeout: Duration) {
    let (commands, replies): (Vec<Command>, Vec<Reply>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let all_idempotent = commands.iter().all(idempotent);
    let commands: Arc<[Command]> = commands.into();
    let started = Instant::now();
    let result = propose_with_retry(shared, commands, all_idempotent, timeout).await;
    let took = result.as_ref().ok().map(|_| started.elapsed());
    crate::metrics::observe_commit(replies.len(), took);
    match result {
        Ok((index, response)) => {
            let mut outcomes = response.outcomes.into_iter();
            for reply in replies {
                let outcome = outcomes.next().ok_or_else(|| {
                    ClusterError::Internal(
                        "state machine returned fewer outcomes than commands".into(),
                    )
                });
                let _ = reply.send(outcome.map(|o| (o, index)));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(ClusterError::Unavailable(msg.clone())));
            }
        }
    }
}

/// Leader-side proposal, shared by the batcher and the forward handler: the timestamp is read
/// here, on the leader, at proposal time.
pub(crate) async fn propose_local(shared: &Shared, commands: Arc<[Command]>) -> ForwardReply {
    // The lowest version that covers the batch, so entries of version 1 commands stay readable
    // by version 1 nodes during a rolling upgrade.
    let version = commands
        .iter()
        .map(Command::min_version)
        .max()
        .unwrap_or(1)
        .min(COMMAND_VERSION);
    let req = Request::new(version, now_ms(), commands);
    match shared.raft.client_write(req).await {
        Ok(resp) => Ok(rpc::ForwardOk {
            index: resp.log_id.index,
            response: resp.data,
        }),
        // openraft answers ForwardToLeader both when this node was no longer leader at the call
        // and when it stepped down with the entry already appended (a new leader may still
        // commit it). The two cannot be told apart, so the outcome is unknown: only idempotent
        // batches are retried.
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ForwardError::Unavailable(format!(
                "leadership changed while proposing (leader now {:?}); outcome unknown",
                f.leader_id
            )))
        }
        Err(e) => Err(ForwardError::Unavailable(e.to_string())),
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn propose_with_retry(
    shared: &Shared,
    commands: Arc<[Command]>,
    all_idempotent: bool,
    timeout: Duration,
) -> Result<(u64, Response), ClusterError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    let mut last_err;
    loop {
        if shared.cancel.is_cancelled() {
            return Err(ClusterError::ShuttingDown);
        }
        let leader: Option<NodeId> = shared.raft.metrics().borrow().current_leader;
        let attempt: Result<ForwardReply, TransportError> = match leader {
            // Bounded: openraft 0.9 has no check-quorum, so a leader cut off from the majority
            // stays leader and its `client_write` would wait forever.
            Some(l) if l == shared.id => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, propose_local(shared, commands.clone())).await {
                    Ok(reply) => Ok(reply),
                    Err(_) => Ok(Err(ForwardError::Unavailable(
                        "no quorum acknowledged the write in time; outcome unknown".into(),
                    ))),
                }
            }
            Some(l) => match shared.node_info(l) {
                Some(info) => {
                    crate::metrics::observe_forwarded(commands.len());
                    shared
                        .http
                        .post_bin::<_, ForwardReply>(
                            &info.cluster_addr,
                            rpc::PATH_FORWARD,
                            &ForwardRequest {
                                commands: commands.clone(),
                            },
                            deadline
                                .saturating_duration_since(Instant::now())
                                .max(Duration::from_millis(50)),
                        )
                        .await
                }
                None => Ok(Err(ForwardError::NotLeader { leader: None })),
            },
            None => Ok(Err(ForwardError::NotLeader { leader: None })),
        };
        match attempt {
            Ok(Ok(ok)) => return Ok((ok.index, ok.response)),
            // The receiver was not the leader and proposed nothing (checked before proposing):
            // always safe to try again once leadership settles.
            Ok(Err(ForwardError::NotLeader { leader })) => {
                last_err = format!("no leader (last known {leader:?})")
            }
            Err(e @ TransportError::Connect { .. }) => last_err = e.to_string(),
            // Outcome unknown: only idempotent batches may be retried.
            Ok(Err(ForwardError::Unavailable(m))) => {
                if !all_idempotent {
                    return Err(ClusterError::Unavailable(m));
                }
                last_err = m;
            }
            Err(e) => {
                if !all_idempotent {
                    return Err(ClusterError::Unavailable(e.to_string()));
                }
                last_err = e.to_string();
            }
        }
        if Instant::now() + pause > deadline {
            return Err(ClusterError::Unavailable(last_err));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
