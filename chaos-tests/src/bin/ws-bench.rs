//! `ws-bench`: WebSocket fan-out of a 3-node Conclave cluster on loopback (real-time delivery). Run by
//! hand on a release build; CI smoke-runs it at a tiny size
//! (`chaos-tests/bench/smoke.sh`) so it cannot rot:
//!
//! ```text
//! cargo build --release -p node -p chaos-tests
//! $CARGO_TARGET_DIR/release/ws-bench --clients 1000 --senders 20 --rate 100 --duration 20s
//! ```
//!
//! Starts a real 3-node cluster, creates `--users` accounts (argon2 makes logins slow, so
//! several connections share one token), one public channel that every user joins, then opens
//! `--clients` plain `tokio-tungstenite` connections round-robin over the nodes, each
//! authenticated and subscribed "from now". Measures:
//!
//! * resident memory (`VmRSS`) of every node before the clients connect and after they have
//!   been connected and idle for `--idle`: the difference per connection on that node;
//! * fan-out: the first `--senders` clients also send, paced so that all of them together send
//!   `--rate` messages per second; each body carries its send time (µs since the bench's own
//!   monotonic epoch), every client records receipt − send for every message event. After
//!   `--warmup`, a `--duration` window is measured: messages in per second, deliveries per
//!   second, delivery latency percentiles, CPU per process;
//! * correctness: after the senders stop, each client must hold every message `seq` of the
//!   channel exactly once.
//! * with `--kill-node N`: a reconnect stampede. `--kill-after` into the measured window node N
//!   is SIGKILLed; each of its clients reconnects to the next node (100 ms backoff, doubling to
//!   1 s), resubscribes from its cursor (`after` = the last `ev` it applied) and re-sends its
//!   unacknowledged messages with their `client_msg_id`. Reported: how long each took from the
//!   lost connection to `subscribed` on a survivor, and the per-second latency curve of the
//!   moved clients and of the others. The exactly-once check covers the moved clients too.
//!
//! ```text
//! $CARGO_TARGET_DIR/release/ws-bench --clients 3000 --senders 30 --rate 100 --duration 20s \
//!     --kill-node 3 --kill-after 5s
//! ```
//!
//! The load generator is deliberately lean (one runtime, `--threads 1` = current-thread, one
//! task per connection, a hand-rolled scan of event frames instead of a JSON tree) because it
//! shares the machine's cores with the three servers. Errors are counted and reported, never
//! turned into panics.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use chaos_tests::bench_main;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chaos_tests::wait::{Waiting, poll_until};
use chaos_tests::{ClusterOptions, TestCluster};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const CHANNEL: &str = "bench";

#[derive(Parser, Debug)]
#[command(about = "WebSocket fan-out benchmark of a 3-node Conclave cluster (release build)")]
struct Args {
    /// WebSocket clients, spread round-robin over the 3 nodes.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// How many of the clients also send (the first N; they spread over the nodes too).
    #[arg(long, default_value_t = 20)]
    senders: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Measured window (e.g. 20s, 1500ms, 2m).
    #[arg(long, default_value = "20s", value_parser = chaos_tests::duration_arg::parse)]
    duration: Duration,
    /// Sending before the measured window starts.
    #[arg(long, default_value = "3s", value_parser = chaos_tests::duration_arg::parse)]
    warmup: Duration,
    /// How long the connected clients stay idle before the memory is read.
    #[arg(long, default_value = "5s", value_parser = chaos_tests::duration_arg::parse)]
    idle: Duration,
    /// After the senders stop: how long to wait for every delivery.
    #[arg(long, default_value = "15s", value_parser = chaos_tests::duration_arg::parse)]
    drain_timeout: Duration,
    /// Distinct user accounts; client i logs in as user i % users.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Message body length in bytes (the timestamp header padded with 'x').
    #[arg(long, default_value_t = 100)]
    body_len: usize,
    /// Connections being set up (TCP + upgrade + auth + subscribe) at the same time.
    #[arg(long, default_value_t = 50)]
    connect_parallel: usize,
    /// Load-generator threads: 1 = a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Server binary (default: $CONCLAVE_BIN, else `conclave` in the release dir next to this binary).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Keep the data dir and node logs after the run.
    #[arg(long)]
    keep: bool,
    /// SIGKILL this node (1-3) during the measured window: a reconnect stampede.
    #[arg(long)]
    kill_node: Option<u64>,
    /// When to kill `--kill-node`, counted from the start of the measured window.
    #[arg(long, default_value = "5s", value_parser = chaos_tests::duration_arg::parse)]
    kill_after: Duration,
}

// ----- process statistics (Linux /proc) ------------------------------------------------------

/// Raises the soft open-file limit to at least `want` (up to the hard limit). The servers
/// started afterwards inherit it. Returns the soft limit in force.
#[allow(unsafe_code)]
fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: setrlimit reads the struct we own; it touches no other memory.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

#[allow(unsafe_code)]
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes an integer and returns one.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A `kB` field of `/proc/<pid>/status` (VmRSS, RssAnon, ...), in KiB.
fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The whole machine's CPU ticks (`/proc/stat`, first line): user, nice, system, idle,
/// iowait, irq, softirq, steal.
fn machine_ticks() -> Option<[u64; 8]> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let mut out = [0u64; 8];
    let mut fields = text.lines().next()?.split_whitespace().skip(1);
    for v in &mut out {
        *v = fields.next()?.parse().ok()?;
    }
    Some(out)
}

#[derive(Clone, Copy, Debug, Default)]
struct Rss {
    vm_rss: u64,
    rss_anon: u64,
}

fn rss(pid: Option<u32>) -> Rss {
    Rss {
        vm_rss: status_kib(pid, "VmRSS").unwrap_or(0),
        rss_anon: status_kib(pid, "RssAnon").unwrap_or(0),
    }
}

// ----- shared state between the driver and the client tasks ---------------------------------

/// The timeline, fixed once every client is subscribed. Times in µs since `Shared::epoch`.
#[derive(Debug)]
struct Plan {
    send_start: Instant,
    send_end: Instant,
    window_from_us: u64,
    window_to_us: u64,
}

/// What the driver tells the clients (a `watch`: each client sees the latest value).
#[derive(Clone, Debug, Default)]
struct Phase {
    plan: Option<Arc<Plan>>,
    /// Every seq in `(from, to]` must arrive: a client that holds them all says so once.
    drain: Option<(u64, u64)>,
    stop: bool,
}

#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    nacked: AtomicU64,
    subscribed: AtomicUsize,
    setup_failed: AtomicUsize,
    /// Clients whose connection ended before the driver stopped them.
    ended: AtomicUsize,
    /// Clients that hold every seq of the drain range.
    complete: AtomicUsize,
}

struct Shared {
    epoch: Instant,
    counters: Counters,
    senders: usize,
    rate: f64,
    body_len: usize,
    /// Every node's WebSocket URL, in node order: where a client fails over to.
    urls: Vec<String>,
    /// Whether a lost connection is re-established on another node (the stampede run).
    failover: bool,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientReport {
    index: usize,
    node: usize,
    setup_error: Option<String>,
    /// How the connection ended if the server (or the network) ended it.
    ended: Option<String>,
    seen: Vec<u64>,
    message_events: u64,
    dups: u64,
    other_frames: u64,
    unparsed: u64,
    parse_mismatch: u64,
    latencies_us: Vec<u32>,
    // Senders only.
    sent: u64,
    acked: u64,
    nacks: Vec<String>,
    ack_latencies_us: Vec<u32>,
    lateness_us: Vec<u32>,
    /// For each entry of `latencies_us`: the second of the window its message was sent in.
    latency_secs: Vec<u16>,
    /// Lost connection -> `subscribed` on another node, once per failover.
    resumes_us: Vec<u64>,
    /// The last `ev` applied: the resume cursor.
    cursor: u64,
}

impl ClientReport {
    /// Marks `seq` as received; false if it was already.
    fn mark(&mut self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        let fresh = self.seen[w] & (1 << b) == 0;
        self.seen[w] |= 1 << b;
        fresh
    }

    fn has(&self, seq: u64) -> bool {
        let w = (seq / 64) as usize;
        self.seen.get(w).is_some_and(|x| x & (1 << (seq % 64)) != 0)
    }

    fn count_in(&self, from: u64, to: u64) -> u64 {
        (from + 1..=to).filter(|s| self.has(*s)).count() as u64
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ----- frame scanning -------------------------------------------------------------------------

/// Every event frame starts so (serde writes the internal tag first).
const EVENT_PREFIX: &str = r#"{"type":"event","#;

/// Byte offset of `needle` in `hay` at or after `from`. A plain scan: the fields sought sit in
/// the first couple of hundred bytes, and building a substring searcher per frame cost more.
fn find_at(hay: &str, from: usize, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let first = *n.first()?;
    let mut i = from;
    while i + n.len() <= h.len() {
        let p = i + h[i..=h.len() - n.len()].iter().position(|b| *b == first)?;
        if &h[p..p + n.len()] == n {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// `(seq, send time in µs)` of a `message` event, found by scanning the text (the load
/// generator must not build a JSON tree for each of ~100,000 frames per second). `None` when
/// the frame does not look as expected; the caller then asks [`parse_message_event`].
fn scan_message_event(t: &str) -> Option<(u64, Option<u64>)> {
    let k = find_at(t, EVENT_PREFIX.len(), r#""kind":"#)? + 7;
    if !t[k..].starts_with(r#""message","#) {
        return None;
    }
    let m = find_at(t, k, r#""message":{"#)?;
    let s = find_at(t, m, r#""seq":"#)? + 6;
    let digits = t.as_bytes()[s..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(t.len() - s);
    let seq = t[s..s + digits].parse().ok()?;
    let b = find_at(t, m, r#""body":""#)? + 8;
    let len = t.as_bytes()[b..].iter().position(|c| *c == b'"')?;
    Some((seq, body_send_us(&t[b..b + len])))
}

/// The same with a real JSON parser: for frames the scanner does not recognise, and to check
/// the scanner on each client's first event.
fn parse_message_event(t: &str) -> Option<(u64, Option<u64>)> {
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    if v["type"] != "event" || v["kind"] != "message" {
        return None;
    }
    Some((
        v["message"]["seq"].as_u64()?,
        v["message"]["body"].as_str().and_then(body_send_us),
    ))
}

/// The send time (µs since the epoch) in a bench body `wsb <t_us> <sender> <n> xxx…`.
fn body_send_us(body: &str) -> Option<u64> {
    body.strip_prefix("wsb ")?.split(' ').next()?.parse().ok()
}

fn close_text(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) => format!("close {} {:?}", u16::from(f.code), f.reason.as_str()),
        None => "close (no code)".to_owned(),
    }
}

// ----- one client -----------------------------------------------------------------------------

async fn next_text(ws: &mut Ws) -> std::result::Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(f))) => return Err(close_text(f.as_ref())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("connection ended".to_owned()),
        }
    }
}

/// Reads frames until one of type `want` (returned); an `error` or `nack` frame or a close is a
/// failure. Event frames met on the way are kept in `skipped` (in order), anything else is
/// dropped.
async fn wait_for(
    ws: &mut Ws,
    want: &str,
    skipped: &mut VecDeque<String>,
) -> std::result::Result<serde_json::Value, String> {
    loop {
        let t = next_text(ws).await?;
        if t.starts_with(EVENT_PREFIX) {
            skipped.push_back(t);
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&t).map_err(|e| format!("bad frame {t}: {e}"))?;
        match v["type"].as_str() {
            Some(x) if x == want => return Ok(v),
            Some("error") | Some("nack") => return Err(format!("waiting for {want}: {t}")),
            _ => {}
        }
    }
}

/// Connects, authenticates and subscribes: "from now" without `after`, else replaying what
/// follows cursor `after`. Returns the socket, the `subscribed` frame's `ev` and the replay:
/// the server sends the events after `after` as ordinary event frames *before* `subscribed`,
/// and the caller must apply them like any other (dropping them was a gap of every resumed
/// client, the events of its outage).
async fn open(
    url: &str,
    token: &str,
    after: Option<u64>,
) -> std::result::Result<(Ws, u64, VecDeque<String>), String> {
    // Small buffers: a thousand connections share this process with the servers.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(cfg), true)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let auth = serde_json::json!({"type": "auth", "v": 1, "token": token}).to_string();
    ws.send(Message::text(auth))
        .await
        .map_err(|e| format!("send auth: {e}"))?;
    let mut replay = VecDeque::new();
    wait_for(&mut ws, "hello", &mut replay).await?;
    let mut sub = serde_json::json!({"type": "subscribe", "channel": CHANNEL});
    if let Some(after) = after {
        sub["after"] = after.into();
    }
    ws.send(Message::text(sub.to_string()))
        .await
        .map_err(|e| format!("send subscribe: {e}"))?;
    let subscribed = wait_for(&mut ws, "subscribed", &mut replay).await?;
    Ok((ws, subscribed["ev"].as_u64().unwrap_or(0), replay))
}

/// `ev` of an event frame, by scanning (it follows the channel name near the start).
fn scan_ev(t: &str) -> Option<u64> {
    let s = find_at(t, EVENT_PREFIX.len(), r#""ev":"#)? + 5;
    let digits = t.as_bytes()[s..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(t.len() - s);
    t[s..s + digits].parse().ok()
}

/// The next frame: what was read ahead first, then the socket's.
async fn next_message(
    ws: &mut Ws,
    backlog: &mut VecDeque<String>,
) -> Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match backlog.pop_front() {
        Some(text) => Some(Ok(Message::text(text))),
        None => ws.next().await,
    }
}

/// After a lost connection: tries the other nodes in turn (starting after `from`) with a
/// backoff of 100 ms doubling to 1 s, until one subscribes from `cursor` or `give_up` passes.
async fn reconnect(
    shared: &Shared,
    token: &str,
    from: usize,
    cursor: u64,
    give_up: Instant,
) -> std::result::Result<(Ws, usize, VecDeque<String>), String> {
    let n = shared.urls.len();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0usize;
    let mut last_err = String::new();
    while Instant::now() < give_up {
        let node = (from + 1 + attempt % (n - 1).max(1)) % n;
        attempt += 1;
        match tokio::time::timeout(
            Duration::from_secs(5),
            open(&shared.urls[node], token, Some(cursor)),
        )
        .await
        {
            Ok(Ok((ws, _, replay))) => return Ok((ws, node, replay)),
            Ok(Err(e)) => last_err = e,
            Err(_) => last_err = "reconnect timed out after 5 s".to_owned(),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    Err(format!("no node took the client back: {last_err}"))
}

struct Sender {
    id: usize,
    ticker: Option<tokio::time::Interval>,
    n: u64,
    /// n → when it was sent and the frame, until acked (re-sent as is after a failover).
    pending: HashMap<u64, (Instant, String)>,
}

async fn client(
    index: usize,
    node: usize,
    token: Arc<str>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    mut phase_rx: watch::Receiver<Phase>,
) -> ClientReport {
    let mut r = ClientReport {
        index,
        node,
        ..ClientReport::default()
    };
    let c = &shared.counters;
    let opened = {
        let _permit = gate.acquire().await;
        tokio::time::timeout(
            Duration::from_secs(60),
            open(&shared.urls[node], &token, None),
        )
        .await
    };
    let mut at = node;
    // `backlog`: event frames read ahead of the loop (a resume's replay), applied before the
    // socket's next.
    let (mut ws, mut backlog) = match opened {
        Ok(Ok((ws, ev, early))) => {
            r.cursor = ev;
            (ws, early)
        }
        Ok(Err(e)) => {
            r.setup_error = Some(e);
            c.setup_failed.fetch_add(1, Ordering::Relaxed);
            return r;
        }
        Err(_) => {
            r.setup_error = Some("setup timed out after 60 s".to_owned());
            c.setup_failed.fetch_add(1, Ordering::Relaxed);
            return r;
        }
    };
    c.subscribed.fetch_add(1, Ordering::Relaxed);
    let mut sender = (index < shared.senders).then(|| Sender {
        id: index,
        ticker: None,
        n: 0,
        pending: HashMap::new(),
    });
    let mut plan: Option<Arc<Plan>> = None;
    let mut drain: Option<(u64, u64)> = None;
    let mut complete = false;
    let mut checked_first = false;
    loop {
        let tick = async {
            match sender.as_mut().and_then(|s| s.ticker.as_mut()) {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let p = phase_rx.borrow_and_update().clone();
                if p.stop {
                    break;
                }
                if plan.is_none() && let Some(new) = &p.plan {
                    plan = Some(new.clone());
                    if let Some(s) = sender.as_mut() {
                        let period = Duration::from_secs_f64(shared.senders as f64 / shared.rate);
                        let offset = period.mul_f64(s.id as f64 / shared.senders as f64);
                        let mut t = tokio::time::interval_at(
                            (new.send_start + offset).into(),
                            period,
                        );
                        // After a failover, no burst of missed ticks (it could pass the
                        // server's per-connection frame limit).
                        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                        s.ticker = Some(t);
                    }
                }
                if drain.is_none() && let Some(d) = p.drain {
                    drain = Some(d);
                }
            }
            msg = next_message(&mut ws, &mut backlog) => {
                let lost = match msg {
                    Some(Ok(Message::Text(t))) => Ok(t),
                    Some(Ok(Message::Close(f))) => Err(close_text(f.as_ref())),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Err(format!("read error: {e}")),
                    None => Err("connection ended without a close frame".to_owned()),
                };
                let text = match lost {
                    Ok(t) => t,
                    Err(why) if !shared.failover => {
                        r.ended = Some(why);
                        break;
                    }
                    Err(why) => {
                        let lost_at = Instant::now();
                        match reconnect(&shared, &token, at, r.cursor, lost_at + Duration::from_secs(30)).await {
                            Ok((new_ws, new_at, replay)) => {
                                ws = new_ws;
                                at = new_at;
                                backlog = replay;
                                r.resumes_us.push(lost_at.elapsed().as_micros() as u64);
                                if let Some(s) = sender.as_mut() {
                                    let mut again: Vec<&(Instant, String)> = s.pending.values().collect();
                                    again.sort_by_key(|(t, _)| *t);
                                    let frames: Vec<String> = again.into_iter().map(|(_, f)| f.clone()).collect();
                                    for f in frames {
                                        if let Err(e) = ws.send(Message::text(f)).await {
                                            r.ended = Some(format!("re-send after failover: {e}"));
                                            break;
                                        }
                                    }
                                    if r.ended.is_some() {
                                        break;
                                    }
                                }
                                continue;
                            }
                            Err(e) => {
                                r.ended = Some(format!("{why}; {e}"));
                                break;
                            }
                        }
                    }
                };
                let now_us = shared.now_us();
                let event = if text.starts_with(EVENT_PREFIX) {
                    let scanned = scan_message_event(&text);
                    if !checked_first || scanned.is_none() {
                        checked_first |= scanned.is_some();
                        let parsed = parse_message_event(&text);
                        if scanned.is_some() && parsed != scanned {
                            r.parse_mismatch += 1;
                        }
                        parsed
                    } else {
                        scanned
                    }
                } else {
                    None
                };
                if text.starts_with(EVENT_PREFIX) && let Some(ev) = scan_ev(&text) {
                    r.cursor = r.cursor.max(ev);
                }
                if let Some((seq, sent_us)) = event {
                    c.deliveries.fetch_add(1, Ordering::Relaxed);
                    r.message_events += 1;
                    if !r.mark(seq) {
                        r.dups += 1;
                    }
                    match sent_us {
                        Some(t) => {
                            if let Some(p) = &plan
                                && (p.window_from_us..p.window_to_us).contains(&t)
                            {
                                r.latencies_us.push(now_us.saturating_sub(t) as u32);
                                r.latency_secs.push(((t - p.window_from_us) / 1_000_000) as u16);
                            }
                        }
                        None => r.unparsed += 1,
                    }
                } else if let Some(s) = sender.as_mut()
                    && (text.contains(r#""type":"ack""#) || text.contains(r#""type":"nack""#))
                {
                    on_ack(&text, s, &mut r, c, plan.as_deref(), &shared);
                } else {
                    r.other_frames += 1;
                }
            }
            scheduled = tick => {
                let (Some(s), Some(p)) = (sender.as_mut(), plan.as_ref()) else { continue };
                let now = Instant::now();
                if now >= p.send_end {
                    s.ticker = None;
                    continue;
                }
                s.n += 1;
                let t_us = shared.now_us();
                let mut body = format!("wsb {t_us} {} {} ", s.id, s.n);
                while body.len() < shared.body_len {
                    body.push('x');
                }
                let frame = serde_json::json!({
                    "type": "send",
                    "channel": CHANNEL,
                    "body": body,
                    "client_msg_id": format!("wsb-{}-{}", s.id, s.n),
                })
                .to_string();
                if (p.window_from_us..p.window_to_us).contains(&t_us) {
                    let late = now.saturating_duration_since(scheduled.into_std());
                    r.lateness_us.push(late.as_micros() as u32);
                }
                s.pending.insert(s.n, (now, frame.clone()));
                if let Err(e) = ws.send(Message::text(frame)).await {
                    if shared.failover {
                        // The read side sees the loss next and fails over; the frame is pending.
                        r.sent += 1;
                        c.sent.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    r.ended = Some(format!("send error: {e}"));
                    break;
                }
                r.sent += 1;
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let (false, Some((from, to))) = (complete, drain)
            && r.count_in(from, to) == to - from
        {
            complete = true;
            c.complete.fetch_add(1, Ordering::Relaxed);
        }
    }
    if r.ended.is_some() {
        c.ended.fetch_add(1, Ordering::Relaxed);
    }
    r
}

fn on_ack(
    text: &str,
    s: &mut Sender,
    r: &mut ClientReport,
    c: &Counters,
    plan: Option<&Plan>,
    shared: &Shared,
) {
    let v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            r.other_frames += 1;
            return;
        }
    };
    let n = v["client_msg_id"]
        .as_str()
        .and_then(|id| id.rsplit('-').next()?.parse::<u64>().ok());
    let sent_at = n.and_then(|n| s.pending.remove(&n)).map(|(at, _)| at);
    if v["type"] == "ack" {
        r.acked += 1;
        c.acked.fetch_add(1, Ordering::Relaxed);
        if let (Some(at), Some(p)) = (sent_at, plan) {
            let t = at.duration_since(shared.epoch).as_micros() as u64;
            if (p.window_from_us..p.window_to_us).contains(&t) {
                r.ack_latencies_us.push(at.elapsed().as_micros() as u32);
            }
        }
    } else {
        c.nacked.fetch_add(1, Ordering::Relaxed);
        if r.nacks.len() < 5 {
            r.nacks.push(text.to_owned());
        }
    }
}

// ----- cluster setup --------------------------------------------------------------------------

fn retryable(e: &ops::ClientError) -> bool {
    chaos_tests::load::retryable(e)
}

/// Creates user `i` through node `id`, logs in, joins the channel; returns the token.
async fn make_user(cluster: &TestCluster, id: u64, i: usize) -> Result<String> {
    let user = format!("bench-{i:04}");
    let password = format!("bench-user-password-{i:04}");
    poll_until(
        &format!("create {user}"),
        Duration::from_secs(60),
        || async {
            let admin = cluster
                .try_client(&[id])
                .map_err(|e| Waiting::Abort(e.to_string()))?;
            match admin.create_user(&user, &password, ops::Role::Member).await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("user_exists") => Ok(()),
                Err(e) if retryable(&e) => Err(Waiting::NotYet(e.to_string())),
                Err(e) => Err(Waiting::Abort(e.to_string())),
            }
        },
    )
    .await?;
    let token = poll_until(
        &format!("login {user}"),
        Duration::from_secs(60),
        || async {
            let mut c = cluster
                .try_client_without_token(&[id])
                .map_err(|e| Waiting::Abort(e.to_string()))?;
            match c.login(&user, &password).await {
                // An admin chose the password: change it (and back) once, as the server asks.
                Ok(resp) if resp.must_change_password => {
                    match chaos_tests::settle_admin_set_password(&c, &password).await {
                        Ok(_) => Ok(resp.token),
                        Err(e) => Err(Waiting::Abort(e.to_string())),
                    }
                }
                Ok(resp) => Ok(resp.token),
                Err(e) if retryable(&e) => Err(Waiting::NotYet(e.to_string())),
                Err(e) => Err(Waiting::Abort(e.to_string())),
            }
        },
    )
    .await?;
    poll_until(
        &format!("{user} joins"),
        Duration::from_secs(60),
        || async {
            let c = cluster
                .try_client_without_token(&[id])
                .map_err(|e| Waiting::Abort(e.to_string()))?
                .with_token(token.clone());
            match c.join_channel(CHANNEL).await {
                Ok(_) => Ok(()),
                Err(e) if retryable(&e) => Err(Waiting::NotYet(e.to_string())),
                Err(e) => Err(Waiting::Abort(e.to_string())),
            }
        },
    )
    .await?;
    Ok(token)
}

async fn last_seq(cluster: &TestCluster) -> Result<u64> {
    poll_until(
        "the channel's last_seq",
        Duration::from_secs(30),
        || async {
            let c = cluster
                .try_client(&cluster.live_ids())
                .map_err(|e| e.to_string())?;
            c.get_channel(CHANNEL)
                .await
                .map(|ch| ch.last_seq)
                .map_err(|e| e.to_string())
        },
    )
    .await
}

// ----- reporting helpers ----------------------------------------------------------------------

/// Nearest-rank percentile of sorted µs samples, in ms.
fn pct_ms(sorted: &[u32], p: f64) -> String {
    if sorted.is_empty() {
        return "-".to_owned();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let v = sorted[rank.clamp(1, sorted.len()) - 1];
    format!("{:.1}", f64::from(v) / 1e3)
}

fn lat_line(label: &str, v: &mut [u32]) {
    v.sort_unstable();
    println!(
        "  {label:<26} n={:<9} p50 {:>7} p90 {:>7} p99 {:>7} p99.9 {:>7} max {:>7} ms",
        v.len(),
        pct_ms(v, 50.0),
        pct_ms(v, 90.0),
        pct_ms(v, 99.0),
        pct_ms(v, 99.9),
        pct_ms(v, 100.0),
    );
}

struct CpuSnap {
    at: Instant,
    ticks: Vec<Option<u64>>,
    machine: Option<[u64; 8]>,
}

fn cpu_snap(pids: &[Option<u32>]) -> CpuSnap {
    CpuSnap {
        at: Instant::now(),
        ticks: pids
            .iter()
            .map(|p| cpu_ticks(*p))
            .chain([cpu_ticks(None)])
            .collect(),
        machine: machine_ticks(),
    }
}

// ----- the run --------------------------------------------------------------------------------

async fn run(args: Args) -> Result<()> {
    if args.clients == 0 || args.rate <= 0.0 || args.users == 0 {
        bail!("--clients, --rate and --users must be positive");
    }
    let senders = args.senders.min(args.clients);
    if senders == 0 {
        bail!("--senders must be positive");
    }
    let per_sender = args.rate / senders as f64;
    if per_sender >= 20.0 {
        println!(
            "warning: {per_sender:.1} msgs/s per sender is at or above the server's 20 frames/s per-connection limit (close 4029)"
        );
    }
    let bin = chaos_tests::node::release_binary(args.binary.as_deref())?;
    if bin.to_string_lossy().contains("/debug/") {
        println!(
            "warning: {} looks like a debug build; numbers will be low",
            bin.display()
        );
    }
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let opts = ClusterOptions::default()
        .binary(bin.clone())
        .env("RUST_LOG", &rust_log);
    let started = Instant::now();
    let mut cluster = TestCluster::try_start_with(3, opts).await?;
    let (a, b) = cluster.block();
    println!(
        "cluster of 3 on 127.{a}.{b}.1-3 from {} up in {:.1} s (data {})",
        bin.display(),
        started.elapsed().as_secs_f64(),
        cluster.root().display()
    );
    let result = bench(&cluster, &args, senders).await;
    if args.keep {
        println!(
            "kept data dir and logs: {}",
            cluster.keep_data_dir().display()
        );
    }
    result
}

async fn bench(cluster: &TestCluster, args: &Args, senders: usize) -> Result<()> {
    let ids = cluster.live_ids();
    let pids: Vec<Option<u32>> = ids.iter().map(|id| cluster.node(*id).pid()).collect();

    // Users, channel, memberships.
    let t = Instant::now();
    cluster.ensure_channel(CHANNEL).await?;
    let tokens: Vec<String> = futures::stream::iter(0..args.users)
        .map(|i| make_user(cluster, ids[i % ids.len()], i))
        .buffered(6)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()
        .context("creating users")?;
    let seq_before = last_seq(cluster).await?;
    println!(
        "{} users created, logged in and joined #{CHANNEL} in {:.1} s (last_seq {seq_before})",
        args.users,
        t.elapsed().as_secs_f64()
    );

    // Idle memory, before.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<Rss> = pids.iter().map(|p| rss(*p)).collect();
    let self_before = rss(None);

    // Connect every client.
    let kill = match args.kill_node {
        Some(id) if ids.contains(&id) => Some(id),
        Some(id) => bail!("--kill-node {id}: the nodes are {ids:?}"),
        None => None,
    };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        counters: Counters::default(),
        senders,
        rate: args.rate,
        body_len: args.body_len,
        urls: ids
            .iter()
            .map(|id| format!("ws://{}/api/v1/ws", cluster.api_addr(*id)))
            .collect(),
        failover: kill.is_some(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::default());
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let tokens: Vec<Arc<str>> = tokens.into_iter().map(Arc::from).collect();
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let node = i % ids.len();
        tasks.push(tokio::spawn(client(
            i,
            node,
            tokens[i % tokens.len()].clone(),
            shared.clone(),
            gate.clone(),
            phase_rx.clone(),
        )));
    }
    drop(phase_rx);
    let c = &shared.counters;
    loop {
        let (ok, failed) = (
            c.subscribed.load(Ordering::Relaxed),
            c.setup_failed.load(Ordering::Relaxed),
        );
        if ok + failed >= args.clients {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            println!("  setup still incomplete after 300 s: {ok} subscribed, {failed} failed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subscribed = c.subscribed.load(Ordering::Relaxed);
    println!(
        "{subscribed} of {} clients connected, authenticated and subscribed in {:.1} s ({} failed)",
        args.clients,
        t.elapsed().as_secs_f64(),
        c.setup_failed.load(Ordering::Relaxed)
    );

    // Idle memory, after.
    tokio::time::sleep(args.idle).await;
    let idle_after: Vec<Rss> = pids.iter().map(|p| rss(*p)).collect();
    let self_idle = rss(None);
    let per_node = |n: usize| (0..args.clients).filter(|i| i % ids.len() == n).count();
    println!(
        "\nidle memory after {:.0} s connected (VmRSS, KiB; RssAnon in brackets):",
        args.idle.as_secs_f64()
    );
    let mut total_delta = 0i64;
    for (n, id) in ids.iter().enumerate() {
        let delta = idle_after[n].vm_rss as i64 - before[n].vm_rss as i64;
        let delta_anon = idle_after[n].rss_anon as i64 - before[n].rss_anon as i64;
        total_delta += delta;
        let conns = per_node(n).max(1);
        println!(
            "  node {id}: {:>7} -> {:>7} (+{delta} [+{delta_anon}]) for {conns} connections: {:.1} KiB per connection [{:.1} anon]",
            before[n].vm_rss,
            idle_after[n].vm_rss,
            delta as f64 / conns as f64,
            delta_anon as f64 / conns as f64,
        );
    }
    println!(
        "  all nodes: {:.1} KiB per idle connection; load generator {} -> {} KiB ({:.1} KiB per client)",
        total_delta as f64 / args.clients as f64,
        self_before.vm_rss,
        self_idle.vm_rss,
        (self_idle.vm_rss as f64 - self_before.vm_rss as f64) / args.clients as f64
    );

    // Fan-out.
    let send_start = Instant::now() + Duration::from_millis(200);
    let window_from = send_start + args.warmup;
    let send_end = window_from + args.duration;
    let us = |t: Instant| t.duration_since(shared.epoch).as_micros() as u64;
    let plan = Arc::new(Plan {
        send_start,
        send_end,
        window_from_us: us(window_from),
        window_to_us: us(send_end),
    });
    println!(
        "\nfan-out: {senders} senders, {:.1} msgs/s in total ({:.2}/s each), {} B bodies, warm-up {:.0} s, measured {:.0} s",
        args.rate,
        args.rate / senders as f64,
        args.body_len,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    let _ = phase_tx.send(Phase {
        plan: Some(plan.clone()),
        ..Phase::default()
    });
    tokio::time::sleep_until(window_from.into()).await;
    let cpu0 = cpu_snap(&pids);
    let (sent0, deliv0) = (
        c.sent.load(Ordering::Relaxed),
        c.deliveries.load(Ordering::Relaxed),
    );
    let mut per_sec = Vec::new();
    let mut last = deliv0;
    let mut next = window_from;
    let mut kill_at = kill.map(|id| (id, window_from + args.kill_after));
    while next + Duration::from_secs(1) <= send_end {
        next += Duration::from_secs(1);
        if let Some((id, at)) = kill_at
            && at <= next
        {
            tokio::time::sleep_until(at.into()).await;
            cluster.kill(id);
            println!(
                "  t+{:.1} s: node {id} SIGKILLed ({} clients on it)",
                at.duration_since(window_from).as_secs_f64(),
                (0..args.clients)
                    .filter(|i| ids[i % ids.len()] == id)
                    .count()
            );
            kill_at = None;
        }
        tokio::time::sleep_until(next.into()).await;
        let d = c.deliveries.load(Ordering::Relaxed);
        let prev = last;
        per_sec.push(d - prev);
        last = d;
        if per_sec.len() % 5 == 0 {
            println!(
                "  t+{:>3} s: {} sent, {} delivered in the last second, {} clients ended",
                per_sec.len(),
                c.sent.load(Ordering::Relaxed) - sent0,
                d - prev,
                c.ended.load(Ordering::Relaxed)
            );
        }
    }
    tokio::time::sleep_until(send_end.into()).await;
    let cpu1 = cpu_snap(&pids);
    let (sent1, deliv1) = (
        c.sent.load(Ordering::Relaxed),
        c.deliveries.load(Ordering::Relaxed),
    );
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64();

    // Drain: every send answered, then every client holds every seq.
    let t = Instant::now();
    while c.acked.load(Ordering::Relaxed) + c.nacked.load(Ordering::Relaxed)
        < c.sent.load(Ordering::Relaxed)
        && t.elapsed() < args.drain_timeout
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seq_after = last_seq(cluster).await?;
    let _ = phase_tx.send(Phase {
        plan: Some(plan.clone()),
        drain: Some((seq_before, seq_after)),
        stop: false,
    });
    while c.complete.load(Ordering::Relaxed) + c.ended.load(Ordering::Relaxed) < subscribed
        && t.elapsed() < args.drain_timeout
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = t.elapsed();
    let after_load: Vec<Rss> = pids.iter().map(|p| rss(*p)).collect();
    let _ = phase_tx.send(Phase {
        plan: Some(plan),
        drain: Some((seq_before, seq_after)),
        stop: true,
    });
    let mut reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => reports.push(r),
            Err(e) => println!("  a client task failed: {e}"),
        }
    }

    // Report.
    let msgs_in = (sent1 - sent0) as f64 / window;
    let deliveries = (deliv1 - deliv0) as f64 / window;
    println!(
        "\nmeasured window {window:.2} s: {msgs_in:.1} msgs/s sent, {deliveries:.0} deliveries/s \
         (ideal {:.0} = msgs/s x {subscribed} subscribed clients)",
        msgs_in * subscribed as f64
    );
    if let (Some(min), Some(max)) = (per_sec.iter().min(), per_sec.iter().max()) {
        println!("  deliveries per 1-s interval: min {min}, max {max}");
    }
    let ticks = clock_ticks_per_sec();
    let mut cpu_line = String::from("  CPU during the window (% of one core):");
    let names: Vec<String> = ids
        .iter()
        .map(|id| format!("node {id}"))
        .chain(["load generator".to_owned()])
        .collect();
    let mut cpu_total = 0.0;
    for (k, name) in names.iter().enumerate() {
        if let (Some(a), Some(b)) = (cpu0.ticks[k], cpu1.ticks[k]) {
            let pct = (b - a) as f64 / ticks / window * 100.0;
            cpu_total += pct;
            cpu_line.push_str(&format!(" {name} {pct:.0}%,"));
        }
    }
    cpu_line.push_str(&format!(" together {cpu_total:.0}%"));
    println!("{cpu_line}");
    if let (Some(m0), Some(m1)) = (cpu0.machine, cpu1.machine) {
        let d: Vec<f64> = m0
            .iter()
            .zip(m1)
            .map(|(a, b)| (b - a) as f64 / ticks / window * 100.0)
            .collect();
        let busy = d.iter().sum::<f64>() - d[3] - d[4];
        println!(
            "  machine (% of one core): user {:.0}, system {:.0}, softirq {:.0}, steal {:.0}, idle {:.0}; \
             busy {busy:.0}, of which not accounted to the four processes above {:.0}",
            d[0] + d[1],
            d[2],
            d[6],
            d[7],
            d[3] + d[4],
            (busy - cpu_total).max(0.0)
        );
    }
    let leader = cluster.leader_id().await;
    println!(
        "\ndelivery latency, send -> receipt, messages sent in the window (leader: node {}):",
        leader.map_or("?".to_owned(), |l| l.to_string())
    );
    let mut all: Vec<u32> = Vec::new();
    let mut by_node: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    let (mut acks, mut late) = (Vec::new(), Vec::new());
    for r in &reports {
        all.extend_from_slice(&r.latencies_us);
        by_node
            .entry(r.node)
            .or_default()
            .extend_from_slice(&r.latencies_us);
        acks.extend_from_slice(&r.ack_latencies_us);
        late.extend_from_slice(&r.lateness_us);
    }
    lat_line("all clients", &mut all);
    for (n, v) in by_node.iter_mut() {
        lat_line(&format!("clients on node {}", ids[*n]), v);
    }
    lat_line("send -> ack (senders)", &mut acks);
    lat_line("sender tick lateness", &mut late);
    if let Some(id) = kill {
        stampede_report(&reports, &ids, id, args.kill_after);
    }

    // Exactly once, by seq.
    let expected = seq_after - seq_before;
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    let acked: u64 = reports.iter().map(|r| r.acked).sum();
    let nacks: Vec<&String> = reports.iter().flat_map(|r| &r.nacks).collect();
    println!(
        "\ncorrectness: {sent} sent, {acked} acked, {} nacked; channel seq {seq_before} -> {seq_after} ({expected} messages); drain took {:.1} s",
        c.nacked.load(Ordering::Relaxed),
        drained.as_secs_f64()
    );
    for n in nacks.iter().take(5) {
        println!("  nack: {n}");
    }
    let live: Vec<&ClientReport> = reports.iter().filter(|r| r.setup_error.is_none()).collect();
    let mut missing_total = 0u64;
    let mut dup_total = 0u64;
    let mut clients_missing = 0usize;
    let mut clients_dup = 0usize;
    let mut out_of_range = 0u64;
    let mut problems = Vec::new();
    for r in &live {
        let have = r.count_in(seq_before, seq_after);
        let missing = expected - have;
        let extra = r
            .seen
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum::<u64>()
            - have;
        out_of_range += extra;
        missing_total += missing;
        dup_total += r.dups;
        clients_missing += usize::from(missing > 0);
        clients_dup += usize::from(r.dups > 0);
        if (missing > 0 || r.dups > 0 || r.ended.is_some()) && problems.len() < 10 {
            let first_missing = (seq_before + 1..=seq_after).find(|s| !r.has(*s));
            problems.push(format!(
                "client {} (node {}): {} events, missing {missing} (first {:?}), duplicates {}, ended: {}",
                r.index,
                ids[r.node],
                r.message_events,
                first_missing,
                r.dups,
                r.ended.as_deref().unwrap_or("no")
            ));
        }
    }
    println!(
        "  {} clients checked: missing deliveries {missing_total} (in {clients_missing} clients), duplicates {dup_total} (in {clients_dup} clients), seqs outside the range {out_of_range}",
        live.len()
    );
    for p in &problems {
        println!("  {p}");
    }
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reports {
        if let Some(e) = &r.ended {
            *ends.entry(e.clone()).or_default() += 1;
        }
    }
    for (e, n) in &ends {
        println!("  {n} connections ended by the server or network during the run: {e}");
    }
    let mut setup_errors: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reports {
        if let Some(e) = &r.setup_error {
            *setup_errors.entry(e.clone()).or_default() += 1;
        }
    }
    for (e, n) in &setup_errors {
        println!("  {n} clients failed to set up: {e}");
    }
    let unparsed: u64 = reports.iter().map(|r| r.unparsed).sum();
    let mismatch: u64 = reports.iter().map(|r| r.parse_mismatch).sum();
    let other: u64 = reports.iter().map(|r| r.other_frames).sum();
    println!(
        "  other frames {other}, foreign bodies {unparsed}, scanner/JSON mismatches {mismatch}"
    );

    println!("\nVmRSS after the load (KiB):");
    for (n, id) in ids.iter().enumerate() {
        println!(
            "  node {id}: {} (idle with clients {}, before clients {})",
            after_load[n].vm_rss, idle_after[n].vm_rss, before[n].vm_rss
        );
    }
    println!("  load generator: {} KiB", rss(None).vm_rss);

    if missing_total > 0 || dup_total > 0 || !ends.is_empty() || !setup_errors.is_empty() {
        bail!(
            "delivery problems: {missing_total} missing, {dup_total} duplicates, {} connections ended, {} failed setup",
            ends.values().sum::<usize>(),
            setup_errors.values().sum::<usize>()
        );
    }
    Ok(())
}

/// The stampede: how fast the killed node's clients resumed, and the latency curve (per second
/// of the window, by send time) of the moved clients and of the others.
fn stampede_report(reports: &[ClientReport], ids: &[u64], killed: u64, kill_after: Duration) {
    let moved: Vec<&ClientReport> = reports
        .iter()
        .filter(|r| ids[r.node] == killed && r.setup_error.is_none())
        .collect();
    let mut resumes: Vec<u32> = moved
        .iter()
        .flat_map(|r| {
            r.resumes_us
                .iter()
                .map(|us| (*us).min(u64::from(u32::MAX)) as u32)
        })
        .collect();
    let resumed = moved.iter().filter(|r| !r.resumes_us.is_empty()).count();
    let within_5s = moved
        .iter()
        .filter(|r| r.resumes_us.first().is_some_and(|us| *us <= 5_000_000))
        .count();
    let others_moved = reports
        .iter()
        .filter(|r| ids[r.node] != killed && !r.resumes_us.is_empty())
        .count();
    println!(
        "\nstampede: node {killed} SIGKILLed {:.1} s into the window; {} of its {} clients resumed on a survivor ({within_5s} within 5 s); {others_moved} other clients had to reconnect",
        kill_after.as_secs_f64(),
        resumed,
        moved.len()
    );
    lat_line("lost -> subscribed again", &mut resumes);
    let secs = reports
        .iter()
        .flat_map(|r| r.latency_secs.iter())
        .max()
        .map_or(0, |m| usize::from(*m) + 1);
    let mut curve: Vec<[Vec<u32>; 2]> = (0..secs).map(|_| [Vec::new(), Vec::new()]).collect();
    for r in reports {
        let k = usize::from(ids[r.node] == killed);
        for (lat, sec) in r.latencies_us.iter().zip(&r.latency_secs) {
            curve[usize::from(*sec)][k].push(*lat);
        }
    }
    println!(
        "  latency curve by second of the window (send time), ms: others p50 / p99 | moved p50 / p99"
    );
    for (sec, [others, moved]) in curve.iter_mut().enumerate() {
        others.sort_unstable();
        moved.sort_unstable();
        println!(
            "    t+{sec:>3} s: {:>7} / {:>7} | {:>7} / {:>7}",
            pct_ms(others, 50.0),
            pct_ms(others, 99.0),
            pct_ms(moved, 50.0),
            pct_ms(moved, 99.0)
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let want = args.clients as u64 + 4096;
    match raise_nofile(want) {
        Ok(n) if n < want => println!(
            "warning: open-file limit {n} is below the {want} this run may need; raise the hard limit (ulimit -Hn)"
        ),
        Ok(_) => {}
        Err(e) => println!("warning: could not raise the open-file limit: {e:#}"),
    }
    // The server takes at most 16 WebSocket connections per user per node (the default of
    // `limits.ws_max_per_user`); a stampede puts a dead node's clients on the two others.
    let per_user = args.clients.div_ceil(args.users.max(1));
    let after_kill = match args.kill_node {
        Some(_) => per_user.div_ceil(2),
        None => per_user.div_ceil(3),
    };
    if after_kill > 16 {
        println!(
            "warning: {} clients over {} users is up to {after_kill} connections per user on a node, over the server's 16: some will be refused (close 4030); raise --users",
            args.clients, args.users
        );
    }
    let threads = args.threads;
    bench_main::run("ws-bench", threads, run(args))
}
