//! What the session's task does with each frame the server sends: events through the
//! cursor (each `(channel, ev)` handed out once), acks and nacks to the pending sends, the rest
//! to the caller as [`SessionEvent`]s.
//!
//! Must never panic on what a server sends: an undecodable event still moves its cursor, an
//! unknown frame is ignored.

use tokio::time::Instant;

use super::session::SessionEvent;
use super::state::Accept;
use super::task::{Task, lock};
use crate::error::WsError;
use api::ws::{ChannelEvent, EventKind, Nack, ServerFrame, event_header};

impl Task {
    // Long on purpose: one arm per server frame type, the protocol table in one place.
    pub(super) fn handle_text(&mut self, text: &str) {
        let frame = match ServerFrame::decode(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.emit(SessionEvent::Malformed {
                    text: text.to_owned(),
                    error: e.to_string(),
                });
                // Keep the cursor moving, or every resume would replay this frame again.
                if let Some((channel, ev)) = event_header(text) {
                    self.apply_event(ChannelEvent {
                        channel,
                        ev,
                        kind: EventKind::Unknown,
                    });
                }
                return;
            }
        };
        match frame {
            ServerFrame::Hello(hello) => {
                // Only expected once per connection; a later one can only refresh the list.
                if !hello.nodes.is_empty() {
                    self.known_nodes = hello.nodes.clone();
                    lock(&self.shared).nodes = hello.nodes;
                }
            }
            ServerFrame::Subscribed { channel, ev } => {
                self.subs.subscribed(&channel, ev);
                self.sync_cursors();
                {
                    let mut shared = lock(&self.shared);
                    if !shared.subscribed.contains(&channel) {
                        shared.subscribed.push(channel.clone());
                    }
                }
                self.emit(SessionEvent::Subscribed { channel, ev });
            }
            ServerFrame::Unsubscribed { channel } => {
                self.subs.unwant(&channel);
                lock(&self.shared).subscribed.retain(|c| c != &channel);
                self.emit(SessionEvent::Unsubscribed { channel });
            }
            ServerFrame::Event(event) => self.apply_event(event),
            ServerFrame::Ack(ack) => {
                if let Some(send) = self.pending.remove(&ack.client_msg_id) {
                    self.forget_pending(&ack.client_msg_id);
                    let _ = send.responder.send(Ok(ack.clone()));
                    self.emit(SessionEvent::Acked(ack));
                }
            }
            ServerFrame::Nack(nack) => self.handle_nack(nack),
            ServerFrame::Typing { channel, user } => {
                self.emit(SessionEvent::Typing { channel, user });
            }
            ServerFrame::Presence { user, status } => {
                self.emit(SessionEvent::Presence { user, status });
            }
            ServerFrame::ReadMarker(marker) => self.emit(SessionEvent::ReadMarker(marker)),
            ServerFrame::ChannelAdded { channel } => {
                self.emit(SessionEvent::ChannelAdded(channel));
            }
            ServerFrame::ChannelRemoved { channel } => {
                self.emit(SessionEvent::ChannelRemoved { channel });
            }
            ServerFrame::Mention { channel, seq, by } => {
                self.emit(SessionEvent::Mention { channel, seq, by });
            }
            ServerFrame::UserUpdated { user } => self.emit(SessionEvent::UserUpdated(user)),
            // A per-user notification setting: the command-line client raises no
            // notifications, so there is nothing to update.
            ServerFrame::ChannelMuted { .. } => {}
            ServerFrame::Error {
                code,
                message,
                channel,
            } => {
                // A refused subscription is not retried on every reconnect. Only one that is
                // still awaiting `subscribed`: the same codes for e.g. a `read` frame must not
                // cancel a working subscription.
                if let Some(ch) = &channel
                    && matches!(code.as_str(), "forbidden" | "channel_not_found")
                    && self.subs.is_awaiting_confirmation(ch)
                {
                    self.subs.unwant(ch);
                }
                self.emit(SessionEvent::ServerError {
                    code,
                    message,
                    channel,
                });
            }
            ServerFrame::Pong { id } => self.emit(SessionEvent::Pong { id }),
            ServerFrame::Unknown => self.emit(SessionEvent::UnknownFrame {
                text: text.to_owned(),
            }),
        }
    }

    pub(super) fn handle_nack(&mut self, nack: Nack) {
        if nack.code == "unavailable" {
            // The outcome is unknown: the protocol says re-send with the same id.
            let backoff = self.cfg.backoff;
            self.pending
                .retry_later(&nack.client_msg_id, Instant::now().into_std(), |n| {
                    backoff.delay(n, rand::random::<f64>())
                });
            return;
        }
        if let Some(send) = self.pending.remove(&nack.client_msg_id) {
            self.forget_pending(&nack.client_msg_id);
            let _ = send.responder.send(Err(WsError::Nacked {
                code: nack.code.clone(),
                message: nack.message.clone(),
            }));
            self.emit(SessionEvent::Nacked(nack));
        }
    }

    pub(super) fn apply_event(&mut self, event: ChannelEvent) {
        match self.subs.accept(&event.channel, event.ev) {
            Accept::Duplicate => {
                lock(&self.shared).duplicates_dropped += 1;
            }
            Accept::Gap { expected } => {
                self.sync_cursor(&event.channel, event.ev);
                self.emit(SessionEvent::Gap {
                    channel: event.channel.clone(),
                    expected,
                    got: event.ev,
                });
                self.emit(SessionEvent::Event(event));
            }
            Accept::New => {
                self.sync_cursor(&event.channel, event.ev);
                self.emit(SessionEvent::Event(event));
            }
        }
    }
}
