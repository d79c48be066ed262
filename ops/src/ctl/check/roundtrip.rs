//! Step 5, `roundtrip`: subscribe over WebSocket on node B, post through node A (A != B when
//! two nodes are ready) and time the message's arrival on B.
//!
//! Owns preparing the round-trip channel (the default one is created *private*, so check
//! messages never show in anyone else's channel list or unread counts). Must never write to
//! the cluster beyond that channel (or joining a public `--channel`) and one message per run.

use std::time::{Duration, Instant};

use ops::{ChannelKind, Client, NewChannel, SessionBuilder, SessionEvent};

use super::super::render::sanitize;
use super::{DEFAULT_CHANNEL, Node, Plan, StepResult};

/// The topic a created default channel gets, so whoever stumbles on it knows what it is.
const CHANNEL_TOPIC: &str = "Test messages from `conclavectl check`; safe to ignore.";
/// Makes sure `user` can post to and read the round-trip channel (see the module docs for
/// what is created or joined); `Ok` says what was done, for the step line.
async fn prepare_channel(client: &Client, plan: &Plan, user: &str) -> Result<&'static str, String> {
    let name = plan.channel.as_str();
    let not_member = || {
        format!(
            "channel {name} is private and {user} is not a member; pass --channel with a \
             channel {user} can post to"
        )
    };
    let channel = match client.get_channel(name).await {
        Ok(channel) => channel,
        Err(e) if e.code() == Some("forbidden") => return Err(not_member()),
        Err(e) if e.code() == Some("channel_not_found") && plan.channel_given => {
            return Err(format!(
                "channel {name} does not exist (create it, or leave out --channel to use a \
                 private {DEFAULT_CHANNEL} channel)"
            ));
        }
        Err(e) if e.code() == Some("channel_not_found") => {
            let new = NewChannel::private(name).with_topic(CHANNEL_TOPIC);
            return match client.create_channel_with(&new).await {
                Ok(_) => Ok(" (created it, private)"),
                // Someone else's private channel of that name, invisible to us.
                Err(e) if e.code() == Some("channel_exists") => Err(not_member()),
                Err(e) => Err(format!("cannot create channel {name}: {e}")),
            };
        }
        Err(e) => return Err(format!("cannot look up channel {name}: {e}")),
    };
    if channel.archived {
        return Err(format!(
            "channel {name} is archived; pass --channel with another channel"
        ));
    }
    if channel.members.iter().any(|m| m == user) {
        return Ok("");
    }
    if channel.kind != ChannelKind::Public {
        return Err(not_member());
    }
    client
        .join_channel(name)
        .await
        .map(|_| " (joined it)")
        .map_err(|e| format!("cannot join channel {name}: {e}"))
}

pub(super) async fn roundtrip_step(
    plan: &Plan,
    client: &Client,
    user: &str,
    nodes: &[Node],
) -> StepResult {
    let started = Instant::now();
    match roundtrip(plan, client, user, nodes).await {
        Ok((detail, delivery)) => StepResult::done("roundtrip", Ok(detail), delivery),
        Err(why) => StepResult::done("roundtrip", Err(why), started.elapsed()),
    }
}

/// Returns the step detail and the time from the send until the message arrived on B.
async fn roundtrip(
    plan: &Plan,
    client: &Client,
    user: &str,
    nodes: &[Node],
) -> Result<(String, Duration), String> {
    let (Some(a), Some(b)) = (nodes.first(), nodes.get(1).or(nodes.first())) else {
        return Err("no ready node".into());
    };
    let channel = plan.channel.as_str();
    let prepared = prepare_channel(client, plan, user).await?;
    let token = client.token().ok_or("no session token after login")?;

    // The receiving session is pinned to B by being given only B; it could still fail over
    // to another node named in `hello`, which is checked after the message arrives.
    let mut session = SessionBuilder::new(vec![b.url()], token)
        .trust_root(plan.root.clone())
        .subscribe(channel)
        .connect_deadline(plan.timeout)
        .connect()
        .await
        .map_err(|e| {
            format!(
                "WebSocket to {} failed: {}",
                b.label(),
                sanitize(&e.to_string())
            )
        })?;
    let result = send_and_receive(plan, client, &mut session, a, b, channel).await;
    session.close().await;
    let (received_on, delivery) = result?;
    let same = if a.addr == b.addr {
        " (only one node is ready, so sent and received on the same node)"
    } else {
        ""
    };
    Ok((
        format!(
            "#{channel}{prepared}: sent through {}, received on {received_on}{same}",
            a.label()
        ),
        delivery,
    ))
}

async fn send_and_receive(
    plan: &Plan,
    client: &Client,
    session: &mut ops::ChatSession,
    a: &Node,
    b: &Node,
    channel: &str,
) -> Result<(String, Duration), String> {
    // Subscribed first: a message posted before the subscription is live would only come in a
    // replay, which this "from now" subscription does not ask for.
    wait_subscribed(plan, session, b, channel).await?;

    let id = ops::new_client_msg_id();
    let body = format!("conclavectl check {id}");
    let poster = Client::new_trusting(vec![a.url()], plan.root.clone())
        .map_err(|e| e.to_string())?
        .with_token(client.token().unwrap_or_default())
        .with_request_timeout(plan.timeout)
        .with_failover_deadline(plan.timeout);
    let sent = Instant::now();
    poster
        .post_message(channel, &body, &id)
        .await
        .map_err(|e| {
            format!(
                "posting through {} failed: {}",
                a.label(),
                sanitize(&e.to_string())
            )
        })?;
    session
        .wait_message(channel, |m| m.body == body, plan.timeout)
        .await
        .map_err(|e| match e {
            ops::WsError::Timeout(_) => format!(
                "the message posted through {} did not arrive on {} within {} s",
                a.label(),
                b.label(),
                plan.timeout.as_secs()
            ),
            other => format!(
                "waiting on {} for the message: {}",
                b.label(),
                sanitize(&other.to_string())
            ),
        })?;
    let delivery = sent.elapsed();
    let Some(node) = session.current_node() else {
        return Err(format!("the WebSocket to {} dropped", b.label()));
    };
    let b_addr = b.wire_addr();
    if node.addr != b_addr {
        return Err(format!(
            "the WebSocket moved from {} to node {} ({}) before the message arrived",
            b.label(),
            node.node_id,
            sanitize(&node.addr)
        ));
    }
    Ok((format!("node {} ({b_addr})", node.node_id), delivery))
}

/// Waits until B confirms the subscription to `channel`, or says why it refused it.
async fn wait_subscribed(
    plan: &Plan,
    session: &mut ops::ChatSession,
    b: &Node,
    channel: &str,
) -> Result<(), String> {
    // The outer error: no verdict within the timeout; the inner one: B refused.
    session
        .wait_for(plan.timeout, |event| match event {
            SessionEvent::Subscribed { channel: ch, .. } if ch == channel => Some(Ok(())),
            SessionEvent::ServerError {
                code,
                message,
                channel: Some(ch),
            } if ch == channel => Some(Err(format!(
                "{} refused the subscription to {channel}: {code}: {}",
                b.label(),
                sanitize(message)
            ))),
            _ => None,
        })
        .await
        .map_err(|e| {
            format!(
                "no subscription to {channel} on {}: {}",
                b.label(),
                sanitize(&e.to_string())
            )
        })?
}
