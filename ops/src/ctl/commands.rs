//! Running one `conclavectl` subcommand: choosing the servers and session, calling the
//! library, and writing the result to stdout as text or JSON.
//!
//! Exit codes and error lines are `failure`'s business, formatting is `render`'s; this module
//! must never exit the process or print errors itself (tail's "retrying" warnings excepted).

use std::io::Write as _;
use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use ops::{ChannelPatch, Client, ClientError, NewChannel, Role, TrustRoot, UserPatch};
use serde::Serialize;

use super::args::{ChannelCommand, Cli, Command, DnsCommand, NodeCommand, RoleArg, UserCommand};
use super::failure::{EXIT_DEGRADED, EXIT_OK, Failure};
use super::token_file::{self, SavedSession};
use super::{backup, ca, chat, check, join_token, password, render};

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// How often `tail --follow` asks for new messages.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);
/// Adding a node returns only after it caught up with the log, which takes longer than an
/// ordinary request; this bounds the wait instead of the client's 5 s default.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the parsed command line; `Ok` carries the exit code (0, or 4 for a degraded cluster).
// Long on purpose: one short arm per subcommand, so the command line maps to its work in one place.
pub(crate) async fn run(cli: Cli) -> Result<u8, Failure> {
    let ctx = Context {
        explicit_servers: cli.servers,
        ca_file: cli.ca_file,
        token_path: match cli.token_file {
            Some(path) => Ok(path),
            None => token_file::default_path(),
        },
        json: cli.json,
    };
    match cli.command {
        Command::Login {
            username,
            password,
            new_password,
        } => ctx.login(&username, password, new_password).await,
        Command::Logout => ctx.logout().await,
        Command::Status => ctx.status().await,
        Command::User(UserCommand::Add {
            username,
            password,
            admin,
        }) => ctx.user_add(&username, password, admin).await,
        Command::User(UserCommand::List) => {
            let users = ctx.session_client()?.list_users().await?;
            ctx.emit(&users, || render::users(&users))
        }
        Command::User(UserCommand::Disable {
            username,
            current_password,
        }) => {
            ctx.user_patch(
                &username,
                UserPatch {
                    disabled: Some(true),
                    current_password: Some(password::obtain(
                        current_password,
                        "your current password",
                    )?),
                    ..UserPatch::default()
                },
                "disabled user",
            )
            .await
        }
        Command::User(UserCommand::Enable {
            username,
            current_password,
        }) => {
            ctx.user_patch(
                &username,
                UserPatch {
                    disabled: Some(false),
                    current_password: Some(password::obtain(
                        current_password,
                        "your current password",
                    )?),
                    ..UserPatch::default()
                },
                "enabled user",
            )
            .await
        }
        Command::User(UserCommand::EndSessions { username }) => {
            let ended = ctx.session_client()?.end_user_sessions(&username).await?;
            ctx.emit(
                &serde_json::json!({ "username": username, "ended": ended }),
                || format!("ended {ended} session(s) of {username}\n"),
            )
        }
        Command::User(UserCommand::SetRole {
            username,
            role,
            current_password,
        }) => {
            let role = match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::Member => Role::Member,
            };
            let client = ctx.session_client()?;
            let current = password::obtain(current_password, "your current password")?;
            let user = client
                .update_user(
                    &username,
                    &UserPatch {
                        role: Some(role),
                        current_password: Some(current),
                        ..UserPatch::default()
                    },
                )
                .await?;
            ctx.emit(&user, || {
                format!("{} is now {}\n", user.username, user.role)
            })
        }
        Command::User(UserCommand::ResetPassword {
            username,
            password,
            current_password,
        }) => {
            let client = ctx.session_client()?;
            let current = password::obtain(current_password, "your current password")?;
            let password = password::obtain(password, &format!("new password for {username}"))?;
            client
                .set_user_password(&username, &password, &current)
                .await?;
            ctx.emit(
                &serde_json::json!({ "username": username, "password_reset": true }),
                || {
                    format!(
                        "password of {username} reset; all their sessions are revoked and they must change it at next login\n"
                    )
                },
            )
        }
        Command::Passwd { current, new } => {
            let client = ctx.session_client()?;
            let current = password::obtain(current, "current password")?;
            let new = password::obtain(new, "new password")?;
            client.change_password(&current, &new).await?;
            ctx.emit(&serde_json::json!({ "password_changed": true }), || {
                "password changed; your other sessions are revoked\n".to_owned()
            })
        }
        Command::Channel(ChannelCommand::Create {
            name,
            private,
            topic,
        }) => {
            let client = ctx.session_client()?;
            let channel = if !private && topic.is_none() {
                // The plain form, which servers before the v1 additions accept too.
                client.create_channel(&name).await?
            } else {
                let mut new = if private {
                    NewChannel::private(&name)
                } else {
                    NewChannel::public(&name)
                };
                new.topic = topic;
                client.create_channel_with(&new).await?
            };
            ctx.emit(&channel, || {
                let kind = if private {
                    "private channel"
                } else {
                    "channel"
                };
                format!("created {kind} {}\n", channel.name)
            })
        }
        Command::Channel(ChannelCommand::Archive { name }) => {
            let channel = ctx
                .session_client()?
                .update_channel(
                    &name,
                    &ChannelPatch {
                        archived: Some(true),
                        ..ChannelPatch::default()
                    },
                )
                .await?;
            ctx.emit(&channel, || format!("archived channel {}\n", channel.name))
        }
        Command::Channel(ChannelCommand::Topic { name, text }) => {
            let channel = ctx
                .session_client()?
                .update_channel(
                    &name,
                    &ChannelPatch {
                        topic: Some(text.join(" ")),
                        ..ChannelPatch::default()
                    },
                )
                .await?;
            ctx.emit(&channel, || {
                format!("topic of {} set to: {}\n", channel.name, channel.topic)
            })
        }
        Command::Dm { users } => {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            let channel = ctx.session_client()?.open_dm(&users).await?;
            ctx.emit(&channel, || {
                format!("{} ({})\n", channel.name, channel.members.join(", "))
            })
        }
        Command::Check(args) => check::run(args, ctx.trust_root()?, ctx.json).await,
        Command::Backup(args) => backup::run(args, || ctx.session_client(), ctx.json).await,
        Command::Chat {
            channel,
            ack_timeout,
            password,
        } => {
            let client = ctx.session_client()?;
            chat::run(client, channel, Duration::from_secs(ack_timeout), password).await
        }
        Command::Channel(ChannelCommand::Join { name }) => {
            let channel = ctx.session_client()?.join_channel(&name).await?;
            ctx.emit(&channel, || {
                format!(
                    "joined channel {} ({} members)\n",
                    channel.name,
                    channel.members.len()
                )
            })
        }
        Command::Channel(ChannelCommand::List) => {
            let channels = ctx.session_client()?.list_channels().await?;
            ctx.emit(&channels, || render::channels(&channels))
        }
        Command::Send { channel, text, id } => ctx.send(&channel, &text.join(" "), id).await,
        Command::Upload {
            channel,
            file,
            message,
            name,
            id,
        } => {
            let client = ctx.session_client()?;
            let outcome = super::files::upload(
                &client,
                &channel,
                &file,
                name,
                message.unwrap_or_default(),
                id.unwrap_or_else(ops::new_client_msg_id),
            )
            .await?;
            ctx.emit(&outcome, || {
                let f = outcome.message.attachments.first();
                format!(
                    "#{} {} file {} ({} bytes, {})\n",
                    outcome.message.seq,
                    if outcome.duplicate {
                        "already sent"
                    } else {
                        "sent"
                    },
                    f.map_or("?", |f| f.id.as_str()),
                    f.map_or(0, |f| f.size),
                    f.map_or("?", |f| f.mime.as_str()),
                )
            })
        }
        Command::Download { file_id, out } => {
            let client = ctx.session_client()?;
            let d = super::files::download(&client, &file_id, &out).await?;
            let (size, resumed_from) = (d.size, d.resumed_from);
            ctx.emit(
                &serde_json::json!({"file_id": file_id, "bytes": size, "out": out, "resumed_from": resumed_from}),
                || {
                    let resumed = if resumed_from > 0 {
                        format!(" (resumed after {resumed_from} bytes)")
                    } else {
                        String::new()
                    };
                    format!("wrote {size} bytes to {}{resumed}\n", out.display())
                },
            )
        }
        Command::Tail {
            channel,
            after,
            limit,
            follow,
        } => ctx.tail(&channel, after, limit, follow).await,
        Command::Search {
            query,
            channel,
            from,
            limit,
        } => {
            let client = ctx.session_client()?;
            let mut params = ops::SearchParams {
                q: query.join(" "),
                channel,
                from,
                ..ops::SearchParams::default()
            };
            let mut results = Vec::new();
            loop {
                let want = (limit as usize - results.len()).min(100) as u32;
                params.limit = Some(want);
                let page = client.search(&params).await?;
                results.extend(page.results);
                match page.next_cursor {
                    Some(c) if results.len() < limit as usize => params.cursor = Some(c),
                    _ => break,
                }
            }
            ctx.emit(&results, || render::search_results(&results))
        }
        Command::Node(NodeCommand::Add {
            id,
            api_addr,
            cluster_addr,
        }) => {
            let client = ctx
                .session_client()?
                .with_request_timeout(MEMBERSHIP_TIMEOUT);
            let status = client.add_node(id, &api_addr, &cluster_addr).await?;
            ctx.emit(&status, || {
                format!("added node {id}\n{}", render::cluster_status(&status))
            })
        }
        Command::Node(NodeCommand::Drain { id }) => {
            let status = ctx.session_client()?.drain_node(id).await?;
            ctx.emit(&status, || {
                format!(
                    "node {id} is draining: out of DNS answers and /readyz, still serving its clients\n{}",
                    render::cluster_status(&status)
                )
            })
        }
        Command::Node(NodeCommand::Undrain { id }) => {
            let status = ctx.session_client()?.undrain_node(id).await?;
            ctx.emit(&status, || {
                format!(
                    "node {id} is no longer draining\n{}",
                    render::cluster_status(&status)
                )
            })
        }
        Command::Dns(DnsCommand::Add {
            name,
            rtype,
            value,
            ttl,
        }) => {
            let record = ctx
                .session_client()?
                .add_dns_record(&name, &rtype, &value.join(" "), ttl)
                .await?;
            ctx.emit(&record, || {
                format!(
                    "added {} {} {} (ttl {})\n",
                    render::sanitize(&record.name),
                    render::sanitize(&record.rtype),
                    render::sanitize(&record.value),
                    record.ttl
                )
            })
        }
        Command::Dns(DnsCommand::List) => {
            let records = ctx.session_client()?.list_dns_records().await?;
            ctx.emit(&records, || render::dns_records(&records))
        }
        Command::Dns(DnsCommand::Rm { name, rtype, value }) => {
            let value = (!value.is_empty()).then(|| value.join(" "));
            let removed = ctx
                .session_client()?
                .remove_dns_records(&name, &rtype, value.as_deref())
                .await?;
            ctx.emit(&serde_json::json!({ "removed": removed }), || {
                let plural = if removed == 1 { "record" } else { "records" };
                format!("removed {removed} {plural}\n")
            })
        }
        Command::Ca(cmd) => {
            let client = if ca::needs_session(&cmd) {
                ctx.session_client()?
            } else {
                ctx.anonymous_client()?
            };
            ca::run(client, ctx.json, cmd).await
        }
        Command::Node(NodeCommand::JoinToken { ttl }) => {
            let created = ctx.session_client()?.create_join_token(ttl).await?;
            ctx.emit(&created, || join_token::render(&created))
        }
        Command::Node(NodeCommand::Remove { id }) => {
            let client = ctx
                .session_client()?
                .with_request_timeout(MEMBERSHIP_TIMEOUT);
            let status = client.remove_node(id).await?;
            ctx.emit(&status, || {
                format!("removed node {id}\n{}", render::cluster_status(&status))
            })
        }
    }
}

struct Context {
    explicit_servers: Vec<String>,
    ca_file: Option<PathBuf>,
    token_path: Result<PathBuf, String>,
    json: bool,
}

impl Context {
    fn token_path(&self) -> Result<&PathBuf, Failure> {
        self.token_path.as_ref().map_err(Failure::not_logged_in)
    }

    /// `--server`/`CONCLAVE_SERVER` if given, else the servers saved at login, else the default.
    fn servers(&self, saved: Option<&SavedSession>) -> Vec<String> {
        if !self.explicit_servers.is_empty() {
            return self.explicit_servers.clone();
        }
        match saved {
            Some(s) if !s.servers.is_empty() => s.servers.clone(),
            _ => vec![DEFAULT_SERVER.to_owned()],
        }
    }

    /// The saved session if there is a readable one; problems with it are ignored because the
    /// caller does not need a token (it only borrows the saved server list).
    fn saved_session_if_any(&self) -> Option<SavedSession> {
        let path = self.token_path.as_ref().ok()?;
        token_file::load(path).ok().flatten()
    }

    /// The root from `--ca-file`/`CONCLAVE_CA_FILE`, read now so a bad file is a usage error
    /// before anything is sent.
    fn trust_root(&self) -> Result<Option<TrustRoot>, Failure> {
        self.trust_root_or(None)
    }

    /// `--ca-file` if given, else the root saved at login.
    fn trust_root_or(&self, saved: Option<&SavedSession>) -> Result<Option<TrustRoot>, Failure> {
        let path = self
            .ca_file
            .as_ref()
            .or_else(|| saved.and_then(|s| s.ca_file.as_ref()));
        match path {
            None => Ok(None),
            Some(path) => Ok(Some(TrustRoot::from_file(path)?)),
        }
    }

    /// A client without a token (for `login` and `status`).
    fn anonymous_client(&self) -> Result<Client, Failure> {
        let saved = self.saved_session_if_any();
        Ok(Client::new_trusting(
            self.servers(saved.as_ref()),
            self.trust_root_or(saved.as_ref())?,
        )?)
    }

    /// A client carrying the saved token; exit code 5 if there is none.
    fn session_client(&self) -> Result<Client, Failure> {
        let path = self.token_path()?;
        let saved = token_file::load(path)
            .map_err(Failure::not_logged_in)?
            .ok_or_else(|| {
                Failure::not_logged_in(format_args!("no token file at {}", path.display()))
            })?;
        let client = Client::new_trusting(
            self.servers(Some(&saved)),
            self.trust_root_or(Some(&saved))?,
        )?;
        Ok(client.with_token(saved.token))
    }

    /// Writes `value` as JSON with `--json`, else the text built by `text`.
    fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> Result<u8, Failure> {
        if self.json {
            let json = serde_json::to_string_pretty(value)
                .map_err(|e| Failure::local(format_args!("cannot encode result: {e}")))?;
            write_stdout(&format!("{json}\n"))?;
        } else {
            write_stdout(&text())?;
        }
        Ok(EXIT_OK)
    }

    async fn login(
        &self,
        username: &str,
        given_password: Option<String>,
        given_new_password: Option<String>,
    ) -> Result<u8, Failure> {
        let path = self.token_path()?.clone();
        let password = password::obtain(given_password, "password")?;
        // The root saved by an earlier login is not reused here: this login saves its own
        // (`--ca-file`), and a new session should not silently inherit an old trust decision.
        let saved = self.saved_session_if_any();
        let mut client = Client::new_trusting(self.servers(saved.as_ref()), self.trust_root()?)?;
        let login = client.login(username, &password).await?;
        if login.must_change_password {
            // An admin set this password: the server accepts nothing else until it changes.
            let new = password::obtain(
                given_new_password,
                "an admin set your password; choose a new password",
            )?;
            client.change_password(&password, &new).await?;
        }
        let session = SavedSession {
            token: login.token.clone(),
            servers: client.servers().to_vec(),
            // Absolute, so later commands find it from any directory; it was readable a moment
            // ago (the client trusts it), so a failure here only keeps the path as given.
            ca_file: self
                .ca_file
                .as_ref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
        };
        token_file::save(&path, &session).map_err(Failure::not_logged_in)?;

        /// What `--json` shows: the login result without the token, which belongs in the
        /// owner-only token file and not in terminal scrollback or CI logs.
        #[derive(Serialize)]
        struct LoginSummary<'a> {
            username: &'a str,
            role: Role,
            expires_at_ms: u64,
            servers: &'a [String],
            token_file: String,
            /// The password had been set by an admin and was changed at this login.
            password_changed: bool,
        }
        let summary = LoginSummary {
            username: &login.username,
            role: login.role,
            expires_at_ms: login.expires_at_ms,
            servers: &session.servers,
            token_file: path.display().to_string(),
            password_changed: login.must_change_password,
        };
        self.emit(&summary, || {
            if login.must_change_password {
                format!(
                    "logged in as {}; your password (set by an admin) is changed\n",
                    login.username
                )
            } else {
                format!("logged in as {}\n", login.username)
            }
        })
    }

    async fn logout(&self) -> Result<u8, Failure> {
        let path = self.token_path()?.clone();
        let mut client = self.session_client()?;
        client.logout().await?;
        token_file::remove(&path).map_err(Failure::local)?;
        self.emit(&serde_json::json!({ "logged_out": true }), || {
            "logged out\n".to_owned()
        })
    }

    async fn status(&self) -> Result<u8, Failure> {
        let status = self.anonymous_client()?.cluster().await?;
        self.emit(&status, || render::cluster_status(&status))?;
        // Still printed in full above; the exit code is what scripts and monitors look at.
        if render::degraded_reasons(&status).is_empty() {
            Ok(EXIT_OK)
        } else {
            Ok(EXIT_DEGRADED)
        }
    }

    async fn user_add(
        &self,
        username: &str,
        given_password: Option<String>,
        admin: bool,
    ) -> Result<u8, Failure> {
        let client = self.session_client()?;
        let password = password::obtain(given_password, &format!("password for {username}"))?;
        let role = if admin { Role::Admin } else { Role::Member };
        let user = client.create_user(username, &password, role).await?;
        self.emit(&user, || {
            format!("created user {} ({})\n", user.username, user.role)
        })
    }

    async fn user_patch(
        &self,
        username: &str,
        patch: UserPatch,
        done: &str,
    ) -> Result<u8, Failure> {
        let user = self.session_client()?.update_user(username, &patch).await?;
        self.emit(&user, || format!("{done} {}\n", user.username))
    }

    async fn send(&self, channel: &str, text: &str, id: Option<String>) -> Result<u8, Failure> {
        let client = self.session_client()?;
        let id = id.unwrap_or_else(ops::new_client_msg_id);
        let outcome = client.post_message(channel, text, &id).await?;
        self.emit(&outcome, || {
            if outcome.duplicate {
                format!("#{} already sent (duplicate)\n", outcome.message.seq)
            } else {
                format!("#{} sent\n", outcome.message.seq)
            }
        })
    }

    async fn tail(
        &self,
        channel: &str,
        after: Option<u64>,
        limit: u32,
        follow: bool,
    ) -> Result<u8, Failure> {
        let client = self.session_client()?;
        let mut after = match after {
            Some(seq) => seq,
            // Like tail(1): without --after, show the newest `limit` messages.
            None => client
                .get_channel(channel)
                .await?
                .last_seq
                .saturating_sub(u64::from(limit)),
        };
        if !follow {
            let page = client.list_messages(channel, after, limit, None).await?;
            if self.json {
                return self.emit(&page, String::new);
            }
            self.print_messages(&page.messages)?;
            return Ok(EXIT_OK);
        }

        let mut ctrl_c = pin!(tokio::signal::ctrl_c());
        loop {
            let result = tokio::select! {
                signal = &mut ctrl_c => return stopped(signal),
                result = client.list_messages(channel, after, limit, None) => result,
            };
            match result {
                Ok(page) => {
                    // Filtering on our side too means a misbehaving node can never make the
                    // follower print a message twice.
                    let fresh: Vec<_> = page
                        .messages
                        .iter()
                        .filter(|m| m.seq > after)
                        .cloned()
                        .collect();
                    self.print_messages(&fresh)?;
                    if let Some(last) = fresh.iter().map(|m| m.seq).max() {
                        after = last;
                    }
                    // A full page of new messages means more are waiting: fetch them now.
                    if !fresh.is_empty() && page.messages.len() >= limit as usize {
                        continue;
                    }
                }
                // The client already failed over for its whole deadline; a follower should
                // outlive a cluster outage, so say so once per deadline and keep polling.
                Err(e @ ClientError::Unreachable { .. }) => warn_retrying(&e),
                Err(e @ ClientError::Api { status: 503, .. }) => warn_retrying(&e),
                Err(e) => return Err(e.into()),
            }
            tokio::select! {
                signal = &mut ctrl_c => return stopped(signal),
                () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
        }
    }

    fn print_messages(&self, messages: &[ops::Message]) -> Result<(), Failure> {
        let mut text = String::new();
        for m in messages {
            if self.json {
                // `--follow` has no single result: one JSON object per line can be streamed.
                let json = serde_json::to_string(m)
                    .map_err(|e| Failure::local(format_args!("cannot encode result: {e}")))?;
                text.push_str(&json);
            } else {
                text.push_str(&render::message_line(m));
            }
            text.push('\n');
        }
        write_stdout(&text)
    }
}

fn stopped(signal: std::io::Result<()>) -> Result<u8, Failure> {
    match signal {
        Ok(()) => Ok(EXIT_OK),
        Err(e) => Err(Failure::local(format_args!(
            "cannot listen for Ctrl-C: {e}"
        ))),
    }
}

fn warn_retrying(err: &ClientError) {
    let line: String = format!("conclavectl: warning: {err}; still trying")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Writes to stdout without panicking when the reader went away (println! would panic).
fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::stdout_closed()),
        Err(e) => Err(Failure::local(format_args!("cannot write to stdout: {e}"))),
    }
}
