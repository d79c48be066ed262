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

use crate::command::{COMMAND_VERSION, ChannelKind, Command, Outcome, Request, Response};
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
        // Each chunk name is 64 hex characters plus its length prefix.
        Command::PostMessageWithFiles { body, files, .. } => {
            256 + body.len()
                + files
                    .iter()
                    .map(|f| 256 + f.name.len() + f.chunks.len() * 72)
                    .sum::<usize>()
        }
        _ => 256,
    }
}

/// Whether applying `c` a second time gives its caller the same answer as the first time.
/// Creating a user, a named channel or a join token a second time is refused as "exists", and
/// using a join token again is refused as "used": a re-sent batch would turn a success into a
/// refusal. A direct-message channel is returned unchanged when it exists, and a `PostMessage`
/// returns the original message for a seen `(author, client_msg_id)`.
fn idempotent(c: &Command) -> bool {
    match c {
        Command::CreateUser { .. }
        | Command::CreateUserV2 { .. }
        | Command::CreateChannel { .. }
        | Command::CreateJoinToken { .. }
        | Command::UseJoinToken { .. } => false,
        Command::CreateChannelV2 { kind, .. } => *kind == ChannelKind::Direct,
        _ => true,
    }
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

/// What became of one forward to the leader.
enum ForwardAttempt {
    /// The leader (or the transport) answered.
    Answered(Result<ForwardReply, TransportError>),
    /// This node learnt of another leader (possibly itself) while the forward was in flight.
    LeaderMoved(NodeId),
    /// The attempt's own bound passed without an answer (idempotent batches only).
    TimedOut,
}

/// How long one forward of an idempotent batch may wait for its answer before it is sent
/// again. A leader that stopped answering (SIGSTOP, a one-way cut) is replaced within about
/// one election timeout, and the metrics watch re-sends to the new one at once; this bound
/// covers the case where no new leader is announced to this node, so a lost request costs
/// about one election rather than the whole write deadline. Re-sending is safe only because
/// the batch is idempotent.
fn attempt_bound(election_timeout_max_ms: u64) -> Duration {
    Duration::from_millis(election_timeout_max_ms.saturating_mul(2).max(300))
}

/// Resolves with the leader this node learns of next when it is not `from`. A moment without
/// any known leader (an election in progress) does not count: the forward in flight may still
/// be answered, and there is nowhere better to send it yet. Never resolves if the watch closes
/// (the node is shutting down; the attempt's own bound or the shutdown ends it).
async fn leader_moved_from<T>(
    mut rx: tokio::sync::watch::Receiver<T>,
    from: NodeId,
    leader_of: impl Fn(&T) -> Option<NodeId>,
) -> NodeId {
    loop {
        if let Some(l) = leader_of(&rx.borrow_and_update())
            && l != from
        {
            return l;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Forwards `commands` to `leader` at `addr` and waits for the first of: its answer, news of
/// another leader, or (idempotent batches) the attempt bound.
async fn forward_once(
    shared: &Shared,
    leader: NodeId,
    addr: &str,
    commands: &Arc<[Command]>,
    all_idempotent: bool,
    deadline: Instant,
) -> ForwardAttempt {
    crate::metrics::observe_forwarded(commands.len());
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(50));
    let bound = if all_idempotent {
        left.min(attempt_bound(shared.config.election_timeout_max_ms))
    } else {
        left
    };
    let req = ForwardRequest {
        commands: commands.clone(),
    };
    let send = shared
        .http
        .post_bin::<_, ForwardReply>(addr, rpc::PATH_FORWARD, &req, bound);
    let moved = leader_moved_from(shared.raft.metrics(), leader, |m| m.current_leader);
    tokio::select! {
        r = send => match r {
            Err(TransportError::Timeout { .. }) if all_idempotent && Instant::now() < deadline => {
                ForwardAttempt::TimedOut
            }
            r => ForwardAttempt::Answered(r),
        },
        new = moved => ForwardAttempt::LeaderMoved(new),
    }
}

async fn propose_with_retry(
    shared: &Shared,
    commands: Arc<[Command]>,
    all_idempotent: bool,
    timeout: Duration,
) -> Result<(u64, Response), ClusterError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    let mut last_err = String::from("no leader answered in time");
    loop {
        if shared.cancel.is_cancelled() {
            return Err(ClusterError::ShuttingDown);
        }
        // Re-sends after a leader change skip the pause below, so the deadline is checked here.
        if Instant::now() >= deadline {
            return Err(ClusterError::Unavailable(last_err));
        }
        let leader: Option<NodeId> = shared.raft.metrics().borrow().current_leader;
        let attempt: Result<ForwardReply, TransportError> = match leader {
            // Bounded: openraft 0.9 has no check-quorum, so a leader cut off from the majority
            // stays leader and its `client_write` would wait forever.
            Some(l) if l == shared.id => {
                let left = deadline.saturating_duration_since(Instant::now());
                let local = async {
                    match tokio::time::timeout(left, propose_local(shared, commands.clone())).await
                    {
                        Ok(reply) => Ok(reply),
                        Err(_) => Ok(Err(ForwardError::Unavailable(
                            "no quorum acknowledged the write in time; outcome unknown".into(),
                        ))),
                    }
                };
                // A deposed leader's pending `client_write` is answered only when its entry is
                // applied or overwritten, which can take until the deadline; an idempotent
                // batch goes to the new leader as soon as this node hears of it.
                let moved = async {
                    if all_idempotent {
                        leader_moved_from(shared.raft.metrics(), l, |m| m.current_leader).await
                    } else {
                        std::future::pending().await
                    }
                };
                let attempt = tokio::select! {
                    r = local => ForwardAttempt::Answered(r),
                    new = moved => ForwardAttempt::LeaderMoved(new),
                };
                match attempt {
                    ForwardAttempt::LeaderMoved(new) => {
                        tracing::debug!(
                            node_id = shared.id,
                            to = new,
                            "this node lost leadership while proposing; re-sending to the new leader"
                        );
                        last_err = format!("leadership moved from this node to node {new}");
                        continue;
                    }
                    ForwardAttempt::Answered(r) => r,
                    ForwardAttempt::TimedOut => Ok(Err(ForwardError::Unavailable(
                        "local proposal timed out".into(),
                    ))),
                }
            }
            Some(l) => match shared.node_info(l) {
                Some(info) => {
                    let addr = &info.cluster_addr;
                    match forward_once(shared, l, addr, &commands, all_idempotent, deadline).await {
                        ForwardAttempt::Answered(r) => r,
                        // Whatever the old leader does with the batch, a retry is deduplicated
                        // by the state machine: send it to the new leader now rather than wait
                        // for an answer that may never come.
                        ForwardAttempt::LeaderMoved(new) if all_idempotent => {
                            tracing::debug!(
                                node_id = shared.id,
                                from = l,
                                to = new,
                                "leader moved while a write was forwarded; re-sending"
                            );
                            last_err = format!("leader moved from node {l} to node {new}");
                            continue;
                        }
                        // The old leader may still commit it: the outcome is unknown, and a
                        // non-idempotent batch must not be proposed twice. Say so now instead
                        // of when the deadline passes.
                        ForwardAttempt::LeaderMoved(new) => {
                            return Err(ClusterError::Unavailable(format!(
                                "leadership moved from node {l} to node {new} while the write \
                                 was forwarded; outcome unknown"
                            )));
                        }
                        ForwardAttempt::TimedOut => {
                            tracing::debug!(
                                node_id = shared.id,
                                leader = l,
                                "forwarded write unanswered within one attempt; re-sending"
                            );
                            last_err = format!("leader {l} did not answer a forwarded write");
                            continue;
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leader_moved_resolves_only_on_another_known_leader() {
        let (tx, rx) = tokio::sync::watch::channel(Some(1u64));
        let moved = tokio::spawn(leader_moved_from(rx, 1, |l: &Option<NodeId>| *l));
        // No leader known (an election) and the same leader again: keep waiting.
        for l in [None, Some(1), None] {
            assert!(tx.send(l).is_ok());
            tokio::task::yield_now().await;
            assert!(!moved.is_finished(), "resolved on {l:?}");
        }
        assert!(tx.send(Some(3)).is_ok());
        assert_eq!(moved.await.ok(), Some(3));
    }

    #[tokio::test]
    async fn leader_moved_sees_a_change_that_happened_before_the_wait() {
        // The forward may start after the metrics already name a new leader (read a moment
        // earlier): the wait must not need a further change to notice.
        let (_tx, rx) = tokio::sync::watch::channel(Some(2u64));
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            leader_moved_from(rx, 1, |l: &Option<NodeId>| *l),
        )
        .await;
        assert_eq!(got.ok(), Some(2));
    }

    #[test]
    fn an_attempt_costs_about_one_election_at_most() {
        assert_eq!(attempt_bound(550), Duration::from_millis(1100));
        // Tiny test timeouts still leave a loopback round trip under load some room.
        assert_eq!(attempt_bound(50), Duration::from_millis(300));
    }

    #[test]
    fn creations_and_token_use_are_not_idempotent() {
        let post = Command::PostMessage {
            channel: "c".into(),
            author: "a".into(),
            body: "b".into(),
            client_msg_id: "m-1".into(),
        };
        assert!(idempotent(&post));
        let create = Command::CreateChannel {
            name: "c".into(),
            creator: "a".into(),
        };
        assert!(!idempotent(&create));
        let v2 = |kind| Command::CreateChannelV2 {
            name: "c".into(),
            creator: "a".into(),
            kind,
            title: String::new(),
            topic: String::new(),
            members: Vec::new(),
        };
        // A second create of a named channel answers "exists"; a DM is returned unchanged.
        assert!(!idempotent(&v2(ChannelKind::Public)));
        assert!(!idempotent(&v2(ChannelKind::Private)));
        assert!(idempotent(&v2(ChannelKind::Direct)));
        let use_token = Command::UseJoinToken {
            id: "t".into(),
            secret_hash: "h".into(),
            node_id: 4,
            api_addr: "127.0.0.4:8080".into(),
            cluster_addr: "127.0.0.4:9080".into(),
        };
        assert!(!idempotent(&use_token));
    }
}
