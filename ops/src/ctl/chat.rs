//! `conclavectl chat`: a line-based chat client on top of `ops::ChatSession`.
//!
//! Reads lines from stdin (a terminal or a pipe): plain text is sent to the current channel,
//! lines starting with `/` are commands. Writes one line per thing that happened to stdout:
//! `[#channel] HH:MM author: body` for messages (times in UTC, like the rest of
//! conclavectl), `✓ [#channel] #seq` when a message of ours is acknowledged, `-- ...` for
//! everything else (connection changes, command results, non-fatal errors).
//!
//! At the end of input (or `/quit`, or Ctrl-C) it waits until every sent message is
//! acknowledged and shown, then exits 0; if acknowledgements take longer than the ack timeout
//! it exits 3. A session that the server ends (4001, 4011: expired or ended elsewhere) is
//! logged in again with the password from `--password` / `CONCLAVE_PASSWORD`, or one typed at
//! the terminal when asked; the messages not yet acknowledged are resent with their
//! `client_msg_id` (exactly once). Without a password (a pipe and no variable), or on 4003
//! (disabled) or 4012 (password change required), it exits 5. This module owns that
//! loop and its output format; it must never exit the process itself or let a server-sent
//! string reach the terminal unsanitized.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use ops::{
    Channel, ChannelEvent, ChatSession, Client, ClientError, EventKind, SessionBuilder,
    SessionEvent,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::failure::{EXIT_OK, Failure};
use super::render::{chat_line, hm_utc, sanitize};

/// How many messages a channel switch (and `/history` without a number) shows.
const HISTORY: u32 = 20;
/// The most `/history N` asks for (the API's limit).
const MAX_HISTORY: u32 = 1000;
/// After the last ack, how long to wait for our own messages to come back as events so that
/// the transcript shows them (they are committed; only their display is waited for).
const ECHO_GRACE: Duration = Duration::from_secs(2);

const HELP: &str = "\
-- commands:
--   TEXT             send TEXT to the current channel (//TEXT sends /TEXT)
--   /join NAME       join a public channel and switch to it
--   /switch NAME     switch to a channel (also /c NAME) and show its recent history
--   /channels        list channels with unread counts
--   /history [N]     show the last N messages of the current channel (default 20)
--   /dm USER...      open a direct-message channel and switch to it
--   /quit            leave once every sent message is acknowledged";

/// Runs the chat until the input ends; `Ok` carries the exit code.
// Long on purpose: the chat's one event loop, whose deadlines and input state are its locals.
pub(crate) async fn run(
    client: Client,
    channel: Option<String>,
    ack_timeout: Duration,
    password: Option<String>,
) -> Result<u8, Failure> {
    let me = client.me().await?.username;
    let channels = client.list_channels().await?;
    let members: Vec<&Channel> = channels.iter().filter(|c| is_member(c, &me)).collect();

    let mut chat = Chat {
        client,
        me,
        current: None,
        shown: BTreeMap::new(),
        outstanding: HashMap::new(),
        bodies: HashMap::new(),
        unechoed: BTreeSet::new(),
        password,
    };

    // The starting channel: joined if needed, its history shown before live events start.
    let start = match channel {
        Some(name) => Some(chat.ensure_member(&name).await?),
        None => members.first().map(|c| (*c).clone()),
    };
    let mut builder = SessionBuilder::from_client(&chat.client)?;
    let mut start_read = None;
    for c in &members {
        if start.as_ref().is_none_or(|s| s.name != c.name) {
            builder = builder.subscribe(c.name.clone());
        }
    }
    if let Some(start) = &start {
        // Subscribing from the cursor read *before* the history means nothing falls between
        // the two; what both show is printed once (by `shown`).
        builder = builder.subscribe_after(start.name.clone(), start.last_ev);
        chat.current = Some(start.name.clone());
        start_read = chat.show_history(&start.name, HISTORY).await?;
    } else {
        say("-- no channel yet: /join NAME, /switch NAME or /dm USER (/help for more)")?;
    }
    let mut session = builder.connect().await?;
    if let (Some(channel), Some(seq)) = (&chat.current, start_read) {
        // What the user has now seen is read.
        session.mark_read(channel, seq);
    }

    let mut input = stdin_lines();
    let mut input_open = true;
    let mut ack_deadline: Option<Instant> = None;
    let mut echo_deadline: Option<Instant> = None;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        if !input_open && chat.outstanding.is_empty() {
            if chat.unechoed.is_empty() {
                break;
            }
            echo_deadline.get_or_insert_with(|| Instant::now() + ECHO_GRACE);
        }
        let deadline = match (ack_deadline, echo_deadline) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        };
        tokio::select! {
            line = input.recv(), if input_open => {
                let quit = match line {
                    Some(line) => chat.handle_line(&session, &line).await?,
                    None => true,
                };
                if quit {
                    input_open = false;
                    ack_deadline = Some(Instant::now() + ack_timeout);
                }
            }
            signal = &mut ctrl_c, if input_open => {
                if let Err(e) = signal {
                    return Err(Failure::local(format_args!("cannot listen for Ctrl-C: {e}")));
                }
                input_open = false;
                ack_deadline = Some(Instant::now() + ack_timeout);
            }
            event = session.next_event() => match event {
                Some(event) => {
                    if chat.handle_event(&session, event).await? {
                        session = chat.log_in_again(session, &mut input).await?;
                    }
                }
                None => {
                    return Err(match session.end_error() {
                        Some(e) => e.into(),
                        None => Failure::local("the chat session ended"),
                    });
                }
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if chat.outstanding.is_empty() {
                    // Everything is acknowledged; some echoes did not come. Done anyway.
                    break;
                }
                let n = chat.outstanding.len();
                return Err(Failure::unreachable(format_args!(
                    "{n} message{} not acknowledged within {} s",
                    if n == 1 { "" } else { "s" },
                    ack_timeout.as_secs()
                )));
            }
        }
    }
    session.close().await;
    Ok(EXIT_OK)
}

struct Chat {
    client: Client,
    me: String,
    current: Option<String>,
    /// The highest message `seq` printed per channel: history and live events overlap, and a
    /// message is printed once.
    shown: BTreeMap<String, u64>,
    /// Our sends not yet acknowledged: `client_msg_id` to channel.
    outstanding: HashMap<String, String>,
    /// What each outstanding send said (`client_msg_id` to channel and body), to resend it
    /// on a new session after logging in again.
    bodies: HashMap<String, (String, String)>,
    /// The password to log in again with when the server ends the session.
    password: Option<String>,
    /// Acknowledged messages of ours whose event has not been printed yet.
    unechoed: BTreeSet<(String, u64)>,
}

impl Chat {
    /// One input line. True when the user asked to quit.
    async fn handle_line(&mut self, session: &ChatSession, line: &str) -> Result<bool, Failure> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(false);
        }
        let text = match line.strip_prefix('/') {
            Some(rest) if rest.starts_with('/') => rest,
            Some(command) => return self.command(session, command).await,
            None => line,
        };
        let Some(channel) = self.current.clone() else {
            say("-- no current channel: /join NAME, /switch NAME or /dm USER")?;
            return Ok(false);
        };
        let handle = session.send(&channel, text, None);
        self.bodies.insert(
            handle.client_msg_id().to_owned(),
            (channel.clone(), text.to_owned()),
        );
        self.outstanding
            .insert(handle.client_msg_id().to_owned(), channel);
        if session.current_node().is_none() {
            say("-- not connected: the message is queued")?;
        }
        // The handle is not needed: the outcome also arrives as an Acked/Nacked event.
        drop(handle);
        Ok(false)
    }

    async fn command(&mut self, session: &ChatSession, command: &str) -> Result<bool, Failure> {
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        match (verb, args.as_slice()) {
            ("quit" | "exit" | "q", _) => return Ok(true),
            ("help" | "h" | "?", _) => say(HELP)?,
            ("join", [name]) => match self.client.join_channel(name).await {
                Ok(channel) => self.switch_to(session, channel).await?,
                Err(e) => report(&e)?,
            },
            ("switch" | "c", [name]) => match self.client.get_channel(name).await {
                Ok(channel) => self.switch_to(session, channel).await?,
                Err(e) => report(&e)?,
            },
            ("channels", []) => match self.client.list_channels().await {
                Ok(channels) => say(&self.channel_list(&channels))?,
                Err(e) => report(&e)?,
            },
            ("history", [] | [_]) => {
                let n = match args.first() {
                    None => HISTORY,
                    Some(n) => match n.parse::<u32>() {
                        Ok(n) if (1..=MAX_HISTORY).contains(&n) => n,
                        _ => {
                            say(&format!(
                                "-- /history takes a number from 1 to {MAX_HISTORY}"
                            ))?;
                            return Ok(false);
                        }
                    },
                };
                match self.current.clone() {
                    Some(channel) => {
                        if let Some(seq) = self.show_history(&channel, n).await? {
                            session.mark_read(&channel, seq);
                        }
                    }
                    None => say("-- no current channel")?,
                }
            }
            ("dm", users) if !users.is_empty() => match self.client.open_dm(users).await {
                Ok(channel) => self.switch_to(session, channel).await?,
                Err(e) => report(&e)?,
            },
            ("join" | "switch" | "c", _) => say(&format!("-- usage: /{verb} NAME"))?,
            ("dm", _) => say("-- usage: /dm USER...")?,
            ("channels", _) => say("-- usage: /channels")?,
            ("history", _) => say("-- usage: /history [N]")?,
            _ => say(&format!(
                "-- unknown command /{} (/help lists them)",
                sanitize(verb)
            ))?,
        }
        Ok(false)
    }

    /// Makes `channel` current: shows its recent history and makes sure it is streamed.
    async fn switch_to(&mut self, session: &ChatSession, channel: Channel) -> Result<(), Failure> {
        let name = channel.name.clone();
        self.current = Some(name.clone());
        say(&format!(
            "-- now in #{}{}",
            sanitize(&name),
            if channel.topic.is_empty() {
                String::new()
            } else {
                format!(": {}", sanitize(&channel.topic))
            }
        ))?;
        let streamed = session.cursor(&name).is_some();
        if let Some(seq) = self.show_history(&name, HISTORY).await? {
            session.mark_read(&name, seq);
        }
        if !streamed {
            // As at startup: the cursor from before the history, so nothing falls between.
            session.subscribe_after(&name, channel.last_ev);
        }
        Ok(())
    }

    /// Prints the last `n` messages of `channel` and returns the newest one's `seq`.
    async fn show_history(&mut self, channel: &str, n: u32) -> Result<Option<u64>, Failure> {
        let page = match self.client.messages_before(channel, None, n).await {
            Ok(page) => page,
            Err(e) => return report(&e).map(|()| None),
        };
        let mut text = String::new();
        for m in &page.messages {
            if m.deleted {
                continue;
            }
            text.push_str(&chat_line(m));
            text.push('\n');
        }
        write_out(&text)?;
        let last = page.messages.iter().map(|m| m.seq).max();
        if let Some(last) = last {
            let shown = self.shown.entry(channel.to_owned()).or_insert(0);
            *shown = (*shown).max(last);
        }
        Ok(last)
    }

    fn channel_list(&self, channels: &[Channel]) -> String {
        let mut lines = Vec::new();
        for c in channels {
            let marker = if self.current.as_deref() == Some(c.name.as_str()) {
                "*"
            } else {
                " "
            };
            let mut line = format!("-- {marker} #{} ({})", sanitize(&c.name), c.kind);
            if !is_member(c, &self.me) {
                line.push_str(" not joined");
            } else {
                line.push_str(&format!(" unread {}", c.unread.unwrap_or(0)));
                if let Some(mentions) = c.mentions.filter(|m| *m > 0) {
                    line.push_str(&format!(" mentions {mentions}"));
                }
            }
            if c.archived {
                line.push_str(" archived");
            }
            lines.push(line);
        }
        if lines.is_empty() {
            lines.push("-- no channels".to_owned());
        }
        lines.join("\n")
    }

    /// Joins `name` if the caller is not a member yet (public channels), else just reads it.
    async fn ensure_member(&self, name: &str) -> Result<Channel, Failure> {
        let channel = self.client.get_channel(name).await?;
        if is_member(&channel, &self.me) {
            return Ok(channel);
        }
        Ok(self.client.join_channel(name).await?)
    }

    // Long on purpose: one arm per session event, each printing its own line. True when the
    // server ended the session and logging in again may continue it.
    async fn handle_event(
        &mut self,
        session: &ChatSession,
        event: SessionEvent,
    ) -> Result<bool, Failure> {
        match event {
            SessionEvent::Connected(node) => say(&format!(
                "-- connected to node {} ({})",
                node.node_id,
                sanitize(&node.addr)
            ))?,
            SessionEvent::Disconnected { node, reason, .. } => say(&format!(
                "-- lost node {} ({}); reconnecting…",
                node.node_id,
                sanitize(&reason)
            ))?,
            SessionEvent::Reconnecting {
                attempt,
                last_error,
                ..
            } if attempt > 1 => say(&format!(
                "-- reconnecting… (attempt {attempt}; {})",
                sanitize(&last_error)
            ))?,
            SessionEvent::AuthLost(info) => {
                let renewable = matches!(info.code, Some(4001 | 4011));
                if renewable && (self.password.is_some() || std::io::stdin().is_terminal()) {
                    say(&format!(
                        "-- the server ended the session ({}); logging in again",
                        sanitize(&info.to_string())
                    ))?;
                    return Ok(true);
                }
                return Err(Failure::not_logged_in(format_args!(
                    "the server ended the session: {info}"
                )));
            }
            SessionEvent::Event(event) => self.show_event(session, event)?,
            SessionEvent::Acked(ack) => {
                self.bodies.remove(&ack.client_msg_id);
                if let Some(channel) = self.outstanding.remove(&ack.client_msg_id) {
                    say(&format!("✓ [#{}] #{}", sanitize(&channel), ack.seq))?;
                    let streamed = session.cursor(&channel).is_some();
                    if streamed && self.shown.get(&channel).is_none_or(|s| *s < ack.seq) {
                        self.unechoed.insert((channel, ack.seq));
                    }
                }
            }
            SessionEvent::Nacked(nack) => {
                self.bodies.remove(&nack.client_msg_id);
                if let Some(channel) = self.outstanding.remove(&nack.client_msg_id) {
                    say(&format!(
                        "✗ [#{}] not sent: {}: {}",
                        sanitize(&channel),
                        sanitize(&nack.code),
                        sanitize(&nack.message)
                    ))?;
                }
            }
            SessionEvent::Mention { channel, seq, by } => say(&format!(
                "-- {} mentioned you in #{} (#{seq})",
                sanitize(&by),
                sanitize(&channel)
            ))?,
            SessionEvent::ChannelAdded(channel) => {
                if is_member(&channel, &self.me) && session.cursor(&channel.name).is_none() {
                    // A DM someone opened with us, or a channel we were added to: stream it
                    // from the cursor it had when it was announced, so its first message
                    // shows.
                    session.subscribe_after(&channel.name, channel.last_ev);
                    say(&format!("-- you are now in #{}", sanitize(&channel.name)))?;
                } else if !is_member(&channel, &self.me) {
                    say(&format!("-- new channel #{}", sanitize(&channel.name)))?;
                }
            }
            SessionEvent::ChannelRemoved { channel } => {
                say(&format!("-- you left #{}", sanitize(&channel)))?;
            }
            SessionEvent::ServerError { code, message, .. } => say(&format!(
                "-- server: {}: {}",
                sanitize(&code),
                sanitize(&message)
            ))?,
            SessionEvent::Gap {
                channel,
                expected,
                got,
            } => say(&format!(
                "-- warning: events {expected}..{} of #{} are missing",
                got.saturating_sub(1),
                sanitize(&channel)
            ))?,
            // Typing, presence, read markers, pongs and the like have no line of their own.
            _ => {}
        }
        Ok(false)
    }

    /// Logs in again after the server ended the session, and continues on a new one: the same
    /// channels from their cursors, then every message not yet acknowledged, in the order
    /// typed, with its original `client_msg_id` (the server acknowledges an id it already has
    /// with the original, so nothing is posted twice).
    async fn log_in_again(
        &mut self,
        old: ChatSession,
        input: &mut mpsc::UnboundedReceiver<String>,
    ) -> Result<ChatSession, Failure> {
        let password = match self.password.clone() {
            Some(p) => p,
            None => {
                // Only reached on a terminal: the next line typed is the password.
                say("-- type your password (input is visible):")?;
                let line = input.recv().await.ok_or_else(|| {
                    Failure::not_logged_in("the session ended and no password was typed")
                })?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            }
        };
        let login = self.client.login(&self.me, &password).await?;
        if login.must_change_password {
            return Err(Failure::not_logged_in(
                "an admin set your password: run `conclavectl login` to choose a new one",
            ));
        }
        let cursors = old.cursors();
        let mut channels: Vec<String> = old.subscribed();
        channels.extend(cursors.keys().cloned());
        channels.sort();
        channels.dedup();
        let pending = old.pending();
        old.close().await;
        let mut builder = SessionBuilder::from_client(&self.client)?;
        for channel in channels {
            builder = match cursors.get(&channel) {
                Some(ev) => builder.subscribe_after(channel, *ev),
                None => builder.subscribe(channel),
            };
        }
        let session = builder.connect().await?;
        // Pending ids first, in send order; then anything else still outstanding.
        let mut order: Vec<String> = pending
            .into_iter()
            .filter(|id| self.bodies.contains_key(id))
            .collect();
        let mut rest: Vec<String> = self
            .bodies
            .keys()
            .filter(|id| !order.contains(id))
            .cloned()
            .collect();
        rest.sort();
        order.extend(rest);
        for id in order {
            if let Some((channel, body)) = self.bodies.get(&id) {
                drop(session.send_with_id(channel, body, None, id.clone()));
            }
        }
        say("-- logged in again")?;
        Ok(session)
    }

    fn show_event(&mut self, session: &ChatSession, event: ChannelEvent) -> Result<(), Failure> {
        let ch = sanitize(&event.channel);
        match &event.kind {
            EventKind::Message { message } => {
                let shown = self.shown.entry(event.channel.clone()).or_insert(0);
                if message.seq <= *shown {
                    return Ok(());
                }
                *shown = message.seq;
                self.unechoed.remove(&(event.channel.clone(), message.seq));
                say(&chat_line(message))?;
                if self.current.as_deref() == Some(event.channel.as_str()) {
                    session.mark_read(&event.channel, message.seq);
                }
            }
            EventKind::Edited { message } => say(&format!(
                "[#{ch}] {} {} edited #{}: {}",
                hm_utc(message.edited_at_ms.unwrap_or(message.ts_ms)),
                sanitize(&message.author),
                message.seq,
                sanitize(&message.body)
            ))?,
            EventKind::Deleted { message } => {
                say(&format!("[#{ch}] -- message #{} deleted", message.seq))?;
            }
            EventKind::Reaction {
                message,
                user,
                emoji,
                added,
            } => say(&format!(
                "[#{ch}] -- {} {} {} {} #{}",
                sanitize(user),
                if *added { "reacted" } else { "took back" },
                sanitize(emoji),
                if *added { "to" } else { "on" },
                message.seq
            ))?,
            EventKind::Pinned { message, user } => say(&format!(
                "[#{ch}] -- {} {} #{}",
                sanitize(user),
                if message.pinned { "pinned" } else { "unpinned" },
                message.seq
            ))?,
            EventKind::MemberJoined { user, .. } => {
                say(&format!("[#{ch}] -- {} joined", sanitize(user)))?;
            }
            EventKind::MemberLeft { user, .. } => {
                say(&format!("[#{ch}] -- {} left", sanitize(user)))?;
            }
            EventKind::ChannelUpdated { info } => {
                let what = match info {
                    Some(c) if c.archived => "archived".to_owned(),
                    Some(c) => format!("topic: {}", sanitize(&c.topic)),
                    None => "settings changed".to_owned(),
                };
                say(&format!("[#{ch}] -- channel updated ({what})"))?;
            }
            EventKind::Unknown => {}
        }
        Ok(())
    }
}

fn is_member(channel: &Channel, me: &str) -> bool {
    channel
        .member
        .unwrap_or_else(|| channel.members.iter().any(|m| m == me))
}

/// Reads stdin on a plain thread: a blocking read there never holds up the runtime's exit
/// (tokio's own stdin would make a shutdown wait for the next line on a terminal).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lock.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    // Invalid UTF-8 is replaced rather than ending the chat.
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// A failed request inside the chat is one line, not the end of the chat.
fn report(err: &ClientError) -> Result<(), Failure> {
    say(&format!("-- error: {}", sanitize(&err.to_string())))
}

fn say(line: &str) -> Result<(), Failure> {
    write_out(&format!("{line}\n"))
}

/// Writes to stdout; a closed stdout ends the chat quietly (like `tail | head`).
fn write_out(text: &str) -> Result<(), Failure> {
    if text.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::stdout_closed()),
        Err(e) => Err(Failure::local(format_args!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str, members: &[&str], member: Option<bool>) -> Channel {
        serde_json::from_value(serde_json::json!({
            "name": name, "created_by": "alice", "created_at_ms": 1,
            "members": members, "last_seq": 0, "member": member, "unread": 2, "mentions": 1,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn membership_prefers_the_server_flag() {
        assert!(is_member(&channel("g", &["alice"], None), "alice"));
        assert!(!is_member(&channel("g", &["bob"], None), "alice"));
        assert!(is_member(&channel("g", &[], Some(true)), "alice"));
        assert!(!is_member(&channel("g", &["alice"], Some(false)), "alice"));
    }

    #[test]
    fn channel_list_lines() {
        let chat = Chat {
            client: Client::new(vec!["127.0.0.1:1".into()]).unwrap_or_else(|e| panic!("{e}")),
            me: "alice".into(),
            current: Some("general".into()),
            shown: BTreeMap::new(),
            outstanding: HashMap::new(),
            bodies: HashMap::new(),
            unechoed: BTreeSet::new(),
            password: None,
        };
        let text = chat.channel_list(&[
            channel("general", &["alice"], Some(true)),
            channel("random", &["bob"], Some(false)),
        ]);
        assert_eq!(
            text,
            "-- * #general (public) unread 2 mentions 1\n--   #random (public) not joined"
        );
    }
}
