//! The `event` frame: one numbered change to a channel ([`ChannelEvent`]) and what changed
//! ([`EventKind`], tagged by `kind`).
//!
//! Owns the one irregular part of the frame format: the `channel` key is the channel's name,
//! except that older servers put the channel object there for `channel_updated`. Data only;
//! must never perform I/O.

use serde::{Deserialize, Serialize};

use crate::rest::{Channel, Message};

/// One numbered change to a channel: `{"type":"event","channel","ev","kind",...}`.
///
/// The frame's `channel` is the channel's name, except that protocol.md gives
/// `channel_updated` a channel *object* under the same key; both forms decode (the name is
/// then taken from the object), see the `Deserialize` impl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    pub channel: String,
    /// The channel's event sequence number: the resume cursor.
    pub ev: u64,
    pub kind: EventKind,
}

impl<'de> Deserialize<'de> for ChannelEvent {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        use serde_json::Value;

        let mut fields = serde_json::Map::<String, Value>::deserialize(de)?;
        let ev = fields
            .get("ev")
            .and_then(Value::as_u64)
            .ok_or_else(|| D::Error::custom("event frame without a numeric `ev`"))?;
        let channel = match fields.remove("channel") {
            Some(Value::String(name)) => name,
            Some(Value::Object(object)) => {
                let name = object
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| D::Error::custom("event `channel` object without a name"))?
                    .to_owned();
                // Left in place for `EventKind::ChannelUpdated`, which reads it.
                fields.insert("channel".to_owned(), Value::Object(object));
                name
            }
            _ => return Err(D::Error::custom("event frame without a `channel`")),
        };
        let kind = serde_json::from_value(Value::Object(fields)).map_err(D::Error::custom)?;
        Ok(ChannelEvent { channel, ev, kind })
    }
}

/// The server's order: `channel`, `ev`, then the `kind` and its fields (the frame's `type`
/// comes first, written by [`ServerFrame`](super::ServerFrame)'s tag).
impl Serialize for ChannelEvent {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            channel: &'a str,
            ev: u64,
            #[serde(flatten)]
            kind: &'a EventKind,
        }
        Wire {
            channel: &self.channel,
            ev: self.ev,
            kind: &self.kind,
        }
        .serialize(ser)
    }
}

impl ChannelEvent {
    /// The message this event carries (current state), if it is a message event.
    pub fn message(&self) -> Option<&Message> {
        match &self.kind {
            EventKind::Message { message }
            | EventKind::Edited { message }
            | EventKind::Deleted { message }
            | EventKind::Reaction { message, .. }
            | EventKind::Pinned { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// What happened in a channel event, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A message or thread reply was posted.
    Message { message: Message },
    /// A message's body was edited.
    Edited { message: Message },
    /// A message was deleted (`message` is the tombstone).
    Deleted { message: Message },
    /// A reaction was added or removed; `message` has the new `reactions`.
    Reaction {
        message: Message,
        user: String,
        emoji: String,
        added: bool,
    },
    /// A message was pinned or unpinned; `message.pinned` is the new state.
    Pinned {
        message: Message,
        #[serde(default)]
        user: String,
    },
    MemberJoined {
        user: String,
        #[serde(default)]
        by: Option<String>,
    },
    MemberLeft {
        user: String,
        #[serde(default)]
        by: Option<String>,
    },
    /// Title, topic or archive flag changed. `None` when the server sent only the name.
    ChannelUpdated {
        /// Sent as `info`; servers before protocol.md fixed the key sent it as `channel`.
        #[serde(default, alias = "channel")]
        info: Option<Channel>,
    },
    /// A kind added by a newer server. Its `ev` still counts for the cursor.
    #[serde(other)]
    Unknown,
}

/// The channel and `ev` of an `event` frame whose body does not decode: enough to keep the
/// cursor moving past it (a replay would otherwise stop at it forever).
pub fn event_header(text: &str) -> Option<(String, u64)> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value.get("type")?.as_str()? != "event" {
        return None;
    }
    let ev = value.get("ev")?.as_u64()?;
    let channel = value.get("channel")?;
    let name = channel.as_str().or_else(|| channel.get("name")?.as_str())?;
    Some((name.to_owned(), ev))
}
