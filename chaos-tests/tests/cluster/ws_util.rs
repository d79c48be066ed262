//! Helpers shared by the WebSocket scenarios (`ws_protocol`, `ws_failover`): users and their
//! tokens, and [`WsClient`], a raw [`WsConn`] that sorts every frame the server sends into
//! what a protocol test asserts on (channel events, `subscribed`, acks, nacks, errors) and
//! waits on conditions over them with deadlines.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaos_tests::TestCluster;
use ops::{
    Ack, ChannelEvent, ClientFrame, EventKind, Hello, Nack, NewChannel, NewUser, PresenceStatus,
    Role, ServerFrame, WsConn, WsError,
};

/// Not on the server's list of common passwords (`weak_password`).
pub const USER_PASSWORD: &str = "socket-pass-phrase-1";
/// Budget for one expected frame (an ack, a `subscribed`, a close) on a healthy cluster.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// Creates a member account through any live node (an earlier attempt whose answer was lost
/// counts).
pub async fn create_user(cluster: &TestCluster, name: &str) {
    cluster
        .wait_until(
            &format!("user {name} created"),
            cluster.ready_timeout(),
            || async {
                let user = NewUser {
                    username: name.to_owned(),
                    password: USER_PASSWORD.to_owned(),
                    role: Role::Member,
                    display_name: None,
                };
                match cluster.client_all().create_user_with(&user).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("user_exists") => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
    // An admin chose the password: the first login changes it (and back), once, here.
    let live = cluster.live_ids();
    cluster.login_client(live[0], name, USER_PASSWORD).await;
}

/// A fresh session token for `name` (logged in through node `id`).
pub async fn login(cluster: &TestCluster, id: u64, name: &str) -> String {
    let client = cluster.login_client(id, name, USER_PASSWORD).await;
    client.token().expect("logged in").to_owned()
}

/// Creates a private channel (the admin is its only member).
pub async fn create_private_channel(cluster: &TestCluster, name: &str) {
    cluster
        .wait_until(
            &format!("private channel {name} created"),
            cluster.ready_timeout(),
            || async {
                match cluster
                    .client_all()
                    .create_channel_with(&NewChannel::private(name))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("channel_exists") => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
}

/// `(last_seq, last_ev)` of `channel` as node `id` shows it.
pub async fn channel_cursor(cluster: &TestCluster, id: u64, channel: &str) -> (u64, u64) {
    let ch = cluster
        .client(id)
        .get_channel(channel)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("GET channel {channel} on node {id}: {e}")));
    (ch.last_seq, ch.last_ev)
}

/// Waits until node `id` shows `channel` with `last_ev >= ev`; returns `(last_seq, last_ev)`.
pub async fn wait_channel_ev(cluster: &TestCluster, id: u64, channel: &str, ev: u64) -> (u64, u64) {
    cluster
        .wait_until(
            &format!("node {id} to apply event {ev} of {channel}"),
            cluster.ready_timeout(),
            || async {
                let ch = cluster
                    .client(id)
                    .get_channel(channel)
                    .await
                    .map_err(|e| e.to_string())?;
                if ch.last_ev >= ev {
                    Ok((ch.last_seq, ch.last_ev))
                } else {
                    Err(format!("last_ev {}", ch.last_ev))
                }
            },
        )
        .await
}

/// A raw connection to one node, authenticated, recording what the server sends.
pub struct WsClient {
    pub node: u64,
    pub conn: WsConn,
    pub hello: Hello,
    /// Every channel event, in arrival order.
    pub events: Vec<ChannelEvent>,
    /// Every `subscribed`: channel, `ev`, and how many events had arrived before it.
    pub subscribed: Vec<(String, u64, usize)>,
    pub acks: Vec<Ack>,
    pub nacks: Vec<Nack>,
    /// `error` frames: code and channel.
    pub errors: Vec<(String, Option<String>)>,
    pub pongs: Vec<u64>,
    /// `user_updated` frames: username and disabled flag.
    pub user_updates: Vec<(String, bool)>,
    /// `unsubscribed` and `channel_removed` frames: channel names.
    pub unsubscribed: Vec<String>,
    pub channels_removed: Vec<String>,
    /// `presence` frames: user and status.
    pub presence: Vec<(String, PresenceStatus)>,
    /// How many frames of any other type arrived.
    pub other_frames: usize,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("node", &self.node)
            .field("closed", &self.conn.close_info())
            .field("events", &self.events.len())
            .field(
                "last_events",
                &self
                    .events
                    .iter()
                    .rev()
                    .take(3)
                    .map(|e| (&e.channel, e.ev))
                    .collect::<Vec<_>>(),
            )
            .field("subscribed", &self.subscribed)
            .field("acks", &self.acks.len())
            .field("nacks", &self.nacks)
            .field("errors", &self.errors)
            .field("pongs", &self.pongs.len())
            .finish_non_exhaustive()
    }
}

impl WsClient {
    /// Connects to node `id` and authenticates with `token`; fails the test otherwise.
    pub async fn open(cluster: &TestCluster, id: u64, token: &str) -> WsClient {
        // `ws_connect` is `wss://` trusting the cluster root on a TLS cluster.
        let mut conn = cluster
            .ws_connect(id)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("WebSocket to node {id}: {e}")));
        let hello = conn
            .auth(token)
            .await
            .unwrap_or_else(|e| cluster.fail(&format!("auth on node {id}: {e}")));
        assert_eq!(hello.node_id, id, "hello from the wrong node");
        WsClient {
            node: id,
            conn,
            hello,
            events: Vec::new(),
            subscribed: Vec::new(),
            acks: Vec::new(),
            nacks: Vec::new(),
            errors: Vec::new(),
            pongs: Vec::new(),
            user_updates: Vec::new(),
            unsubscribed: Vec::new(),
            channels_removed: Vec::new(),
            presence: Vec::new(),
            other_frames: 0,
        }
    }

    pub async fn send(&mut self, cluster: &TestCluster, frame: &ClientFrame) {
        if let Err(e) = self.conn.send_frame(frame).await {
            cluster.fail(&format!(
                "sending {frame:?} on node {}: {e} ({self:?})",
                self.node
            ));
        }
    }

    fn record(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Event(e) => self.events.push(e),
            ServerFrame::Subscribed { channel, ev } => {
                self.subscribed.push((channel, ev, self.events.len()))
            }
            ServerFrame::Ack(a) => self.acks.push(a),
            ServerFrame::Nack(n) => self.nacks.push(n),
            ServerFrame::Error { code, channel, .. } => self.errors.push((code, channel)),
            ServerFrame::Pong { id } => self.pongs.push(id),
            ServerFrame::UserUpdated { user } => {
                self.user_updates.push((user.username, user.disabled))
            }
            ServerFrame::Unsubscribed { channel } => self.unsubscribed.push(channel),
            ServerFrame::ChannelRemoved { channel } => self.channels_removed.push(channel),
            ServerFrame::Presence { user, status } => self.presence.push((user, status)),
            _ => self.other_frames += 1,
        }
    }

    /// Reads and records one frame.
    pub async fn pump(&mut self, timeout: Duration) -> Result<(), WsError> {
        let frame = self.conn.next_frame(timeout).await?;
        self.record(frame);
        Ok(())
    }

    /// Reads until `f` finds what it looks for in the recorded frames; fails the test on a
    /// timeout or a close.
    pub async fn wait<T>(
        &mut self,
        cluster: &TestCluster,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&WsClient) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = f(self) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                cluster.fail(&format!(
                    "node {}: timed out after {timeout:?} waiting for {what}; {self:?}",
                    self.node
                ));
            }
            if let Err(e) = self.pump(left).await
                && !matches!(e, WsError::Timeout(_))
            {
                cluster.fail(&format!(
                    "node {}: waiting for {what}: {e}; {self:?}",
                    self.node
                ));
            }
        }
    }

    /// Sends `subscribe` and waits for its `subscribed`; returns its `ev`.
    pub async fn subscribe(
        &mut self,
        cluster: &TestCluster,
        channel: &str,
        after: Option<u64>,
    ) -> u64 {
        let before = self.subscribed.len();
        self.send(
            cluster,
            &ClientFrame::Subscribe {
                channel: channel.to_owned(),
                after,
            },
        )
        .await;
        self.wait(
            cluster,
            &format!("subscribed to {channel}"),
            FRAME_WAIT,
            |c| {
                c.subscribed[before..]
                    .iter()
                    .find(|(ch, _, _)| ch == channel)
                    .map(|(_, ev, _)| *ev)
            },
        )
        .await
    }

    /// Sends a message and waits for its ack (a nack fails the test). Earlier acks of the
    /// same id on this connection do not count.
    pub async fn send_msg(
        &mut self,
        cluster: &TestCluster,
        channel: &str,
        body: &str,
        id: &str,
    ) -> Ack {
        let from = (self.acks.len(), self.nacks.len());
        self.send(cluster, &send_frame(channel, body, id)).await;
        self.wait_answer(cluster, id, from).await
    }

    /// Waits for an ack of `id` (a nack for it fails the test).
    pub async fn wait_ack(&mut self, cluster: &TestCluster, id: &str) -> Ack {
        self.wait_answer(cluster, id, (0, 0)).await
    }

    async fn wait_answer(&mut self, cluster: &TestCluster, id: &str, from: (usize, usize)) -> Ack {
        let node = self.node;
        let r = self
            .wait(cluster, &format!("ack of {id}"), FRAME_WAIT, |c| {
                c.acks[from.0..]
                    .iter()
                    .find(|a| a.client_msg_id == id)
                    .cloned()
                    .map(Ok)
                    .or_else(|| {
                        c.nacks[from.1..]
                            .iter()
                            .find(|n| n.client_msg_id == id)
                            .cloned()
                            .map(Err)
                    })
            })
            .await;
        r.unwrap_or_else(|n| cluster.fail(&format!("send {id} on node {node} refused: {n:?}")))
    }

    /// A ping answered by a pong: the connection is open and served.
    pub async fn ping_pong(&mut self, cluster: &TestCluster, id: u64) {
        self.send(cluster, &ClientFrame::Ping { id }).await;
        self.wait(cluster, &format!("pong {id}"), FRAME_WAIT, |c| {
            c.pongs.contains(&id).then_some(())
        })
        .await
    }

    /// The last event `ev` received for `channel`.
    pub fn last_ev(&self, channel: &str) -> Option<u64> {
        self.events
            .iter()
            .rev()
            .find(|e| e.channel == channel)
            .map(|e| e.ev)
    }
}

pub fn send_frame(channel: &str, body: &str, id: &str) -> ClientFrame {
    ClientFrame::Send {
        channel: channel.to_owned(),
        body: body.to_owned(),
        client_msg_id: id.to_owned(),
        thread_root: None,
    }
}

/// Checks that `events` (all of one channel, in the order a client applied them) are exactly
/// `ev` 1..=`last_ev`, each once, and that their `message` events carry seqs 1..=`last_seq` in
/// order. Returns the message events by seq.
pub fn check_complete(
    events: &[ChannelEvent],
    last_ev: u64,
    last_seq: u64,
) -> Result<BTreeMap<u64, ops::Message>, String> {
    let evs: Vec<u64> = events.iter().map(|e| e.ev).collect();
    let mut seen = BTreeMap::new();
    for (i, ev) in evs.iter().enumerate() {
        if let Some(first) = seen.insert(*ev, i) {
            return Err(format!(
                "ev {ev} delivered twice (positions {first} and {i}) in {} events",
                evs.len()
            ));
        }
    }
    for w in evs.windows(2) {
        if w[1] != w[0] + 1 {
            return Err(format!(
                "events not consecutive: ev {} followed by ev {}",
                w[0], w[1]
            ));
        }
    }
    if evs.first() != Some(&1) || evs.last() != Some(&last_ev) {
        return Err(format!(
            "events run from {:?} to {:?}, expected 1..={last_ev}",
            evs.first(),
            evs.last()
        ));
    }
    let mut messages = BTreeMap::new();
    let mut seqs = Vec::new();
    for e in events {
        if let EventKind::Message { message } = &e.kind {
            seqs.push(message.seq);
            messages.insert(message.seq, message.clone());
        }
    }
    let want: Vec<u64> = (1..=last_seq).collect();
    if seqs != want {
        return Err(format!(
            "message events carry seqs {} (expected 1..={last_seq} in order)",
            summarize(&seqs)
        ));
    }
    Ok(messages)
}

/// `[1..=5, 7, 9..=12]`.
pub fn summarize(v: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        if i == j {
            parts.push(v[i].to_string());
        } else {
            parts.push(format!("{}..={}", v[i], v[j]));
        }
        i = j + 1;
    }
    format!("[{}]", parts.join(", "))
}

/// Sends messages over one WebSocket in the background, each after the previous one's ack,
/// paced below the server's rate limit, until stopped.
pub struct WsPoster {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<Vec<Ack>, String>>,
}

impl WsPoster {
    /// Ids are `<prefix>-<n>`; one send every `every` at most.
    pub fn start(
        cluster: &TestCluster,
        id: u64,
        token: &str,
        channel: &str,
        prefix: &str,
        every: Duration,
    ) -> WsPoster {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (url, opts, token, channel, prefix) = (
            cluster.url(id),
            cluster.ws_options(),
            token.to_owned(),
            channel.to_owned(),
            prefix.to_owned(),
        );
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut conn = WsConn::connect_with(&url, &opts)
                .await
                .map_err(|e| format!("poster {prefix}: connect: {e}"))?;
            conn.auth(&token)
                .await
                .map_err(|e| format!("poster {prefix}: auth: {e}"))?;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut acks = Vec::new();
            let mut n = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                tick.tick().await;
                let id = format!("{prefix}-{n}");
                n += 1;
                let body = format!("{id} over the WebSocket");
                conn.send_frame(&send_frame(&channel, &body, &id))
                    .await
                    .map_err(|e| format!("poster {prefix}: send {id}: {e}"))?;
                loop {
                    match conn.next_frame(FRAME_WAIT).await {
                        Ok(ServerFrame::Ack(a)) if a.client_msg_id == id => {
                            acks.push(a);
                            acked2.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Ok(ServerFrame::Nack(n)) if n.client_msg_id == id => {
                            return Err(format!("poster {prefix}: {id} refused: {n:?}"));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(format!("poster {prefix}: waiting for ack of {id}: {e}"));
                        }
                    }
                }
            }
            let _ = conn.close(1000, "done").await;
            Ok(acks)
        });
        WsPoster { stop, acked, task }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Stops after the message in flight and returns every ack.
    pub async fn stop(self) -> Result<Vec<Ack>, String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(format!("poster task: {e}")),
        }
    }
}

// ---- sockets as the kernel sees them (Linux /proc/net/tcp) ----

pub const ESTABLISHED: u8 = 1;

/// One IPv4 TCP socket of `/proc/net/tcp`: its addresses, bytes sent but not yet acknowledged
/// by the peer, and bytes received but not yet read by the application.
#[derive(Debug, Clone, Copy)]
pub struct Sock {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// The state column (`01` established, `07` closed, `08` close-wait, ...).
    pub state: u8,
    pub tx: u64,
    pub rx: u64,
}

/// `0100007F:1F90` (the address as the kernel's native-endian u32, the port big-endian).
fn parse_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

pub fn tcp_sockets() -> Vec<Sock> {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some(Sock {
                local: parse_addr(f.get(1)?)?,
                remote: parse_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                tx: u64::from_str_radix(tx, 16).ok()?,
                rx: u64::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// Local addresses of this host's established connections to `server`.
pub fn connections_to(server: SocketAddrV4) -> HashSet<SocketAddrV4> {
    tcp_sockets()
        .into_iter()
        .filter(|s| s.state == ESTABLISHED && s.remote == server)
        .map(|s| s.local)
        .collect()
}

/// Bytes the kernel holds for the connection `client` -> `server`: the server's unsent or
/// unacknowledged bytes plus the client's unread ones.
pub fn held_bytes(client: SocketAddrV4, server: SocketAddrV4) -> Option<u64> {
    let socks = tcp_sockets();
    let c = socks
        .iter()
        .find(|s| s.local == client && s.remote == server)?;
    let s = socks
        .iter()
        .find(|s| s.local == server && s.remote == client)?;
    Some(c.rx + s.tx)
}

/// Opens a connection to node `id` and finds it in /proc/net/tcp as the one connection to that
/// node that is new: the client, the node's address and the client's address (`None` if it
/// could not be told apart).
pub async fn open_located(
    cluster: &TestCluster,
    id: u64,
    token: &str,
) -> (WsClient, SocketAddrV4, Option<SocketAddrV4>) {
    let SocketAddr::V4(server) = cluster.api_addr(id) else {
        panic!("the harness uses IPv4 loopback addresses")
    };
    let before = connections_to(server);
    let c = WsClient::open(cluster, id, token).await;
    let new: Vec<SocketAddrV4> = connections_to(server)
        .difference(&before)
        .copied()
        .collect();
    (c, server, (new.len() == 1).then(|| new[0]))
}
