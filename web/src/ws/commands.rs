//! What a connection does for the two client frames that touch the cluster's state:
//! `subscribe` (the replay from the client's cursor, then the seam to live events) and `send`
//! (a message write acknowledged only once a quorum has it and this node applied it).
//!
//! Must never let a replay and live delivery both hand out the same event (the per-channel
//! cursor in `Conn::subs` is the seam), nor hold up the connection while a write commits.

use std::time::Duration;

use cluster::{Applied, Command};

use super::conn::{Conn, End};
use super::frames::{Ack, Nack, ServerFrame, encode};
use super::hub::{Out, render_event};
use crate::error::ApiError;
use crate::validate;

/// Events read from storage per replay step.
const REPLAY_PAGE: usize = 256;
/// How long an ack waits for this node to apply the entry the leader committed.
const ACK_APPLY_WAIT: Duration = Duration::from_secs(5);

impl Conn {
    pub(super) async fn subscribe(
        &mut self,
        channel: String,
        after: Option<u64>,
    ) -> Result<(), End> {
        let user = self.auth.user.username.clone();
        let allowed = self.s.read_fresh(|r| r.can_read(&channel, &user)).await;
        match allowed {
            Ok(Some(true)) => {}
            Ok(Some(false)) => {
                return self
                    .error_frame(
                        "forbidden",
                        "only members can read this channel",
                        Some(&channel),
                    )
                    .await;
            }
            Ok(None) => {
                return self
                    .error_frame("channel_not_found", "no such channel", Some(&channel))
                    .await;
            }
            Err(e) => {
                return self
                    .error_frame(e.status_and_code().1, &e.to_string(), Some(&channel))
                    .await;
            }
        }
        // Register first, read storage second: anything applied after the read is queued by
        // the hub, and the seam filter drops what the replay already covered.
        self.s.hub.subscribe(self.id, &channel);
        let reader = self.s.node.reader().clone();
        let already = self.subs.get(&channel).copied();
        let mut cursor = match (after, already) {
            (_, Some(d)) => after.map_or(d, |a| a.max(d)),
            (Some(a), None) => a,
            (None, None) => match reader.last_ev(&channel) {
                Ok(ev) => ev,
                Err(e) => {
                    return self
                        .error_frame("internal", &e.to_string(), Some(&channel))
                        .await;
                }
            },
        };
        if after.is_some() || already.is_some() {
            loop {
                let page = match reader.events_after(&channel, cursor, REPLAY_PAGE) {
                    Ok(p) => p,
                    Err(e) => {
                        return self
                            .error_frame("internal", &e.to_string(), Some(&channel))
                            .await;
                    }
                };
                if page.is_empty() {
                    break;
                }
                for (ev, event) in page {
                    if let Some(frame) = render_event(&reader, &channel, ev, &event) {
                        self.send(frame).await?;
                    }
                    cursor = ev;
                }
            }
        }
        self.subs.insert(channel.clone(), cursor);
        let f = encode(&ServerFrame::Subscribed {
            channel: channel.clone(),
            ev: cursor,
        });
        self.send(f).await
    }

    pub(super) async fn send_message(
        &mut self,
        channel: String,
        body: String,
        client_msg_id: String,
        thread_root: Option<u64>,
    ) -> Result<(), End> {
        if let Err(e) =
            validate::message_body(&body).and_then(|()| validate::client_msg_id(&client_msg_id))
        {
            let f = encode(&ServerFrame::Nack(Nack {
                client_msg_id,
                code: e.status_and_code().1.to_owned(),
                message: e.to_string(),
            }));
            return self.send(f).await;
        }
        let node = self.s.node.clone();
        let handle = self.handle.clone();
        let cmd = Command::PostMessageV2 {
            channel,
            author: self.auth.user.username.clone(),
            body,
            client_msg_id: client_msg_id.clone(),
            thread_root,
        };
        // Queued here, in frame order, so one client's messages keep their order; the ack is
        // awaited in its own task so a slow commit does not hold up this connection.
        let queued = node.write_queued(cmd).await;
        tokio::spawn(async move {
            let result = match queued {
                Ok(outcome) => outcome.await,
                Err(e) => Err(e),
            };
            let frame = match result {
                Ok((
                    Applied::MessageChanged {
                        channel,
                        seq,
                        duplicate,
                    },
                    index,
                )) => {
                    // The leader applied it; this node's ack reports the stored timestamp, so
                    // wait until it has applied the entry too.
                    let _ = node.wait_applied(index, ACK_APPLY_WAIT).await;
                    let ts_ms = node
                        .reader()
                        .message_view(&channel, seq)
                        .ok()
                        .flatten()
                        .map(|m| m.ts_ms)
                        .unwrap_or(0);
                    encode(&ServerFrame::Ack(Ack {
                        client_msg_id,
                        channel,
                        seq,
                        ts_ms,
                        duplicate,
                    }))
                }
                Ok(_) => encode(&ServerFrame::Nack(Nack {
                    client_msg_id,
                    code: "internal".to_owned(),
                    message: "unexpected outcome of a post".to_owned(),
                })),
                Err(e) => {
                    let e = ApiError::from(e);
                    encode(&ServerFrame::Nack(Nack {
                        client_msg_id,
                        code: e.status_and_code().1.to_owned(),
                        message: e.to_string(),
                    }))
                }
            };
            handle.push(Out::Frame(frame));
        });
        Ok(())
    }
}
