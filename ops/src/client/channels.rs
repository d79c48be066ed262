//! The channel endpoints of [`Client`] (`/api/v1/channels`, `/api/v1/dms`, docs/api.md):
//! create, list, patch, join and leave, membership, direct messages.
//!
//! Retry classes follow the crate docs: reads, patches and `open_dm` are idempotent and always
//! retried; creating, leaving and membership changes only when never sent. Must never print.

use reqwest::Method;

use super::{Client, decode};
use crate::error::ClientError;
use crate::request::Retry;
use api::rest::{
    Channel, ChannelPatch, ChannelsEnvelope, CreateChannelRequest, DmRequest, MemberRequest,
    NewChannel,
};

impl Client {
    pub async fn create_channel(&self, name: &str) -> Result<Channel, ClientError> {
        let body = CreateChannelRequest {
            name: name.to_owned(),
        };
        self.write(&["api", "v1", "channels"], Method::POST, Some(&body))
            .await
            .and_then(|reply| decode(&reply))
    }

    /// Joins a channel; joining twice is not an error.
    pub async fn join_channel(&self, name: &str) -> Result<Channel, ClientError> {
        self.write::<()>(&["api", "v1", "channels", name, "join"], Method::POST, None)
            .await
            .and_then(|reply| decode(&reply))
    }

    pub async fn list_channels(&self) -> Result<Vec<Channel>, ClientError> {
        let envelope: ChannelsEnvelope = self.get(&["api", "v1", "channels"]).await?;
        Ok(envelope.channels)
    }

    pub async fn get_channel(&self, name: &str) -> Result<Channel, ClientError> {
        self.get(&["api", "v1", "channels", name]).await
    }

    /// Creates a channel with a kind, title and topic (the v1 form of
    /// [`Client::create_channel`]). Not idempotent: retried only if never sent.
    pub async fn create_channel_with(&self, channel: &NewChannel) -> Result<Channel, ClientError> {
        self.call(
            &["api", "v1", "channels"],
            Method::POST,
            Some(channel),
            Retry::IfNotSent,
        )
        .await
    }

    /// Changes a channel's title, topic or archive flag (members; admins for any channel).
    /// Retried like a read: the patch sets absolute values, so applying it twice is the same
    /// as once.
    pub async fn update_channel(
        &self,
        name: &str,
        patch: &ChannelPatch,
    ) -> Result<Channel, ClientError> {
        self.call(
            &["api", "v1", "channels", name],
            Method::PATCH,
            Some(patch),
            Retry::Always,
        )
        .await
    }

    /// Leaves a channel.
    pub async fn leave_channel(&self, name: &str) -> Result<Channel, ClientError> {
        self.write::<()>(
            &["api", "v1", "channels", name, "leave"],
            Method::POST,
            None,
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Adds `username` to a private channel (its members, or admins).
    pub async fn add_member(&self, channel: &str, username: &str) -> Result<Channel, ClientError> {
        self.write(
            &["api", "v1", "channels", channel, "members"],
            Method::POST,
            Some(&MemberRequest {
                username: username.to_owned(),
            }),
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Removes `username` from a channel (admins, or the user themself).
    pub async fn remove_member(
        &self,
        channel: &str,
        username: &str,
    ) -> Result<Channel, ClientError> {
        self.write::<()>(
            &["api", "v1", "channels", channel, "members", username],
            Method::DELETE,
            None,
        )
        .await
        .and_then(|reply| decode(&reply))
    }

    /// Opens (or finds) the direct-message channel between the caller and `users` (1 to 7
    /// others). Retried like a read: asking again returns the same channel.
    pub async fn open_dm(&self, users: &[&str]) -> Result<Channel, ClientError> {
        self.call(
            &["api", "v1", "dms"],
            Method::POST,
            Some(&DmRequest {
                users: users.iter().map(|u| (*u).to_owned()).collect(),
            }),
            Retry::Always,
        )
        .await
    }
}
