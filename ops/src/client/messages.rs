//! The message endpoints of [`Client`] (`/api/v1/channels/{name}/messages`, threads,
//! reactions, pins, read markers; docs/api.md).
//!
//! Posts are always retried: the server deduplicates by `(author, client_msg_id)`, so a retry
//! returns the original with `duplicate = true`. Edits, deletes, reactions, pins and read
//! markers change nothing when repeated and are retried too. Must never print.

use reqwest::Method;

use super::{Client, decode, json};
use crate::error::ClientError;
use crate::request::{ApiRequest, MIN_INDEX_HEADER, Retry};
use api::rest::{
    EditMessageRequest, Message, MessagePage, PinsEnvelope, PostMessageRequest, PostOutcome,
    PostedMessage, ReadMarker, ReadRequest, Thread,
};

impl Client {
    /// Posts a message. Safe to retry with the same `client_msg_id` (see
    /// [`crate::new_client_msg_id`]): a retry returns the original with `duplicate = true`.
    pub async fn post_message(
        &self,
        channel: &str,
        body: &str,
        client_msg_id: &str,
    ) -> Result<PostOutcome, ClientError> {
        self.post(channel, body, client_msg_id, None).await
    }

    /// Posts a reply in the thread of message `root` (same retry rules as
    /// [`Client::post_message`]).
    pub async fn post_reply(
        &self,
        channel: &str,
        root: u64,
        body: &str,
        client_msg_id: &str,
    ) -> Result<PostOutcome, ClientError> {
        self.post(channel, body, client_msg_id, Some(root)).await
    }

    async fn post(
        &self,
        channel: &str,
        body: &str,
        client_msg_id: &str,
        thread_root: Option<u64>,
    ) -> Result<PostOutcome, ClientError> {
        let path = ["api", "v1", "channels", channel, "messages"];
        // Always retryable: the server deduplicates by (author, client_msg_id).
        let mut req = ApiRequest::new(Method::POST, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.json_body = Some(json(&PostMessageRequest {
            body: body.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            thread_root,
        })?);
        let reply = self.send(&req).await?;
        let posted: PostedMessage = decode(&reply)?;
        Ok(PostOutcome {
            message: posted.message,
            // The body flag is authoritative; the status (200 = original returned, 201 =
            // created) is the documented fallback.
            duplicate: posted.duplicate.unwrap_or(reply.status == 200),
            index: reply.index,
        })
    }

    /// Lists messages with `seq > after`, at most `limit`. With `min_index`, the answering node
    /// first waits until it has applied that index (read-your-writes across nodes).
    pub async fn list_messages(
        &self,
        channel: &str,
        after: u64,
        limit: u32,
        min_index: Option<u64>,
    ) -> Result<MessagePage, ClientError> {
        let path = ["api", "v1", "channels", channel, "messages"];
        let mut req = ApiRequest::new(Method::GET, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        req.query = vec![("after", after.to_string()), ("limit", limit.to_string())];
        if let Some(index) = min_index {
            req.headers.push((MIN_INDEX_HEADER, index.to_string()));
        }
        decode(&self.send(&req).await?)
    }

    /// The `limit` messages just below `before` (default: the newest), oldest first;
    /// `has_more` in the page says whether older ones exist.
    pub async fn messages_before(
        &self,
        channel: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<MessagePage, ClientError> {
        let path = ["api", "v1", "channels", channel, "messages"];
        let mut req = ApiRequest::new(Method::GET, &path, Retry::Always);
        req.bearer = Some(self.require_token()?);
        // Without `before` the server lists from the oldest message (the v1 `after` form), so
        // "the newest" is asked for as "below the largest possible seq".
        let before = before.unwrap_or(u64::MAX);
        req.query.push(("before", before.to_string()));
        req.query.push(("limit", limit.to_string()));
        decode(&self.send(&req).await?)
    }

    /// A thread: its root message and every reply.
    pub async fn thread(&self, channel: &str, root: u64) -> Result<Thread, ClientError> {
        let root = root.to_string();
        self.get(&["api", "v1", "channels", channel, "threads", &root])
            .await
    }

    /// Replaces the body of one of the caller's messages. Retried like a read: setting the
    /// same body twice has the effect of setting it once.
    pub async fn edit_message(
        &self,
        channel: &str,
        seq: u64,
        body: &str,
    ) -> Result<Message, ClientError> {
        let seq = seq.to_string();
        let path = ["api", "v1", "channels", channel, "messages", &seq];
        self.call(
            &path,
            Method::PATCH,
            Some(&EditMessageRequest {
                body: body.to_owned(),
            }),
            Retry::Always,
        )
        .await
    }

    /// Deletes a message (its author, or an admin) and returns the tombstone. Retried like a
    /// read: deleting is absolute, a second delete changes nothing.
    pub async fn delete_message(&self, channel: &str, seq: u64) -> Result<Message, ClientError> {
        let seq = seq.to_string();
        let path = ["api", "v1", "channels", channel, "messages", &seq];
        self.call::<(), _>(&path, Method::DELETE, None, Retry::Always)
            .await
    }

    /// Adds the caller's `emoji` reaction (PUT: idempotent, retried like a read).
    pub async fn add_reaction(
        &self,
        channel: &str,
        seq: u64,
        emoji: &str,
    ) -> Result<Message, ClientError> {
        self.reaction(Method::PUT, channel, seq, emoji).await
    }

    /// Removes the caller's `emoji` reaction (DELETE: idempotent, retried like a read).
    pub async fn remove_reaction(
        &self,
        channel: &str,
        seq: u64,
        emoji: &str,
    ) -> Result<Message, ClientError> {
        self.reaction(Method::DELETE, channel, seq, emoji).await
    }

    async fn reaction(
        &self,
        method: Method,
        channel: &str,
        seq: u64,
        emoji: &str,
    ) -> Result<Message, ClientError> {
        let seq = seq.to_string();
        // `endpoint` percent-encodes each segment, which is the URL encoding the API asks for.
        let path = [
            "api",
            "v1",
            "channels",
            channel,
            "messages",
            &seq,
            "reactions",
            emoji,
        ];
        self.call::<(), _>(&path, method, None, Retry::Always).await
    }

    /// Pins a message (PUT: idempotent, retried like a read).
    pub async fn pin(&self, channel: &str, seq: u64) -> Result<Message, ClientError> {
        self.pin_method(Method::PUT, channel, seq).await
    }

    /// Unpins a message (DELETE: idempotent, retried like a read).
    pub async fn unpin(&self, channel: &str, seq: u64) -> Result<Message, ClientError> {
        self.pin_method(Method::DELETE, channel, seq).await
    }

    async fn pin_method(
        &self,
        method: Method,
        channel: &str,
        seq: u64,
    ) -> Result<Message, ClientError> {
        let seq = seq.to_string();
        let path = ["api", "v1", "channels", channel, "messages", &seq, "pin"];
        self.call::<(), _>(&path, method, None, Retry::Always).await
    }

    /// The pinned messages of a channel.
    pub async fn pins(&self, channel: &str) -> Result<Vec<Message>, ClientError> {
        let envelope: PinsEnvelope = self
            .get(&["api", "v1", "channels", channel, "pins"])
            .await?;
        Ok(envelope.messages)
    }

    /// Moves the caller's read marker forward to `seq` (never back). Retried like a read: the
    /// marker only moves forward, so a repeat is a no-op.
    pub async fn mark_read(&self, channel: &str, seq: u64) -> Result<ReadMarker, ClientError> {
        let path = ["api", "v1", "channels", channel, "read"];
        self.call(
            &path,
            Method::POST,
            Some(&ReadRequest { seq }),
            Retry::Always,
        )
        .await
    }
}
