// Connection to a Conclave cluster: node discovery, REST calls with failover, and the
// resumable WebSocket (docs/protocol.md, "Failover").
//
// Two classes:
//   - `Cluster` knows every node's API address (learned from `GET /api/v1/cluster` and from
//     `hello`; on a page served over HTTPS, each node's `https_addr`), probes `GET /readyz`,
//     and performs REST requests that move to the next ready node on a network error or a 503.
//   - `Connection` owns the one WebSocket: auth, subscriptions with per-channel resume cursors
//     (`ev`), the outbox of unacknowledged sends (re-sent with their original `client_msg_id`
//     after every reconnect, in order), read markers, heartbeats and jittered reconnects.
//
// Nothing here touches the DOM. The UI observes a `Connection` through the callbacks passed
// to its constructor, and applies every channel event as an upsert keyed by (channel, seq).

/** Error from the REST API (`{"error":{"code","message"}}`), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from `Retry-After` when readable
  }
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;
const PROBE_TIMEOUT_MS = 1500;
const REQUEST_TIMEOUT_MS = 12000;
const CONNECT_TIMEOUT_MS = 6000;
const HELLO_TIMEOUT_MS = 10000;
// Consecutive failed connection attempts after which the UI says "offline" rather than
// "reconnecting…" (about 3 s of trying). Attempts continue every ~5 s regardless.
const OFFLINE_AFTER_ATTEMPTS = 6;
// An unacknowledged send older than this makes us question the node (it may have lost quorum).
const SEND_STALL_MS = 12000;
// Client-side rate limit, below the server's 20 frames/s sustained, burst 60 (close 4029).
const BUCKET_CAPACITY = 40;
const BUCKET_REFILL_PER_S = 15;

/** Jittered exponential backoff: 100 ms doubling up to 5 s, each delay ±50%. */
export function backoffDelay(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 16));
  return Math.round(base * (0.5 + Math.random()));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The page's schemes: every node is reached with the scheme the page was loaded with. */
function schemes() {
  const secure = location.protocol === 'https:';
  return { http: secure ? 'https:' : 'http:', ws: secure ? 'wss:' : 'ws:' };
}

/**
 * Normalizes what a user types as a workspace (a full URL with scheme and path, " chat.lan ") to a
 * bare `host[:port]`. Returns "" for an unusable value.
 */
export function normalizeAddr(input) {
  let s = String(input || '').trim();
  s = s.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  s = s.replace(/[/?#].*$/, '');
  s = s.replace(/^.*@/, '');
  if (!/^[A-Za-z0-9.\-[\]:]+$/.test(s)) return '';
  return s.toLowerCase();
}

/**
 * A node's `api_addr` may be a wildcard bind address (`0.0.0.0:8080`): reach such a node through
 * the host name the page was loaded from, on the node's port.
 */
function reachableAddr(apiAddr) {
  const m = /^(.*):(\d+)$/.exec(String(apiAddr || ''));
  if (!m) return normalizeAddr(apiAddr);
  const host = m[1];
  if (host === '0.0.0.0' || host === '[::]' || host === '::' || host === '') {
    return `${location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname}:${m[2]}`;
  }
  return `${host}:${m[2]}`.toLowerCase();
}

/**
 * Where to reach node `n` with the page's scheme. A stored entry (`addr`) was chosen already. On
 * an https page a node is reachable only through its `https_addr` (its `api_addr` is then the
 * plain-HTTP port, which only redirects and would be mixed content): a node without one is
 * skipped (""). On an http page, its `api_addr`.
 */
function nodeAddr(n) {
  if (n.addr) return reachableAddr(n.addr);
  if (location.protocol === 'https:') return n.https_addr ? reachableAddr(n.https_addr) : '';
  return reachableAddr(n.api_addr);
}

/** fetch() with a timeout; rejects with a TypeError-like error on network failure or timeout. */
async function fetchWithTimeout(url, init, timeoutMs) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    return await fetch(url, { ...init, signal: ctrl.signal });
  } finally {
    clearTimeout(timer);
  }
}

/** Reads an error response into an ApiError. */
async function errorFrom(res) {
  let code = `http_${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  // `Retry-After` is readable cross-origin only when the server exposes it; the message is a
  // fallback for the UI in that case.
  const ra = Number.parseInt(res.headers.get('Retry-After') || '', 10);
  return new ApiError(res.status, code, message, Number.isFinite(ra) ? ra : null);
}

/**
 * The set of nodes of one workspace, and REST calls that fail over between them.
 *
 * `workspace` is the address the user signed in to (normally the page's own host). Node
 * addresses are kept as `host:port`; URLs are built with the page's scheme.
 */
export class Cluster {
  constructor(workspace, knownNodes = []) {
    this.workspace = workspace;
    /** @type {{id: number|null, addr: string}[]} */
    this.nodes = [];
    this.token = null;
    /** Address of the node the WebSocket is connected to, preferred for REST as well. */
    this.current = null;
    /** Last node that answered a REST request, used while the socket is down. */
    this.lastGood = null;
    /** Called with the node list whenever it changes (the app persists it). */
    this.onNodesChanged = () => {};
    this.setNodes(knownNodes.map((n) => ({ id: n.id ?? null, addr: n.addr ?? n.api_addr })), false);
  }

  httpBase(addr) {
    return `${schemes().http}//${addr}`;
  }

  wsUrl(addr) {
    return `${schemes().ws}//${addr}/api/v1/ws`;
  }

  /** Replaces the known nodes with `list` (`[{id, api_addr, https_addr}]`), ignoring a list
   *  with no node reachable over the page's scheme (see `nodeAddr`). */
  setNodes(list, notify = true) {
    const seen = new Set();
    const nodes = [];
    for (const n of list || []) {
      const addr = nodeAddr(n);
      if (!addr || seen.has(addr)) continue;
      seen.add(addr);
      nodes.push({ id: n.id ?? null, addr });
    }
    if (!nodes.length) return;
    const changed = JSON.stringify(nodes) !== JSON.stringify(this.nodes);
    this.nodes = nodes;
    if (changed && notify) this.onNodesChanged(this.nodes);
  }

  nodeId(addr) {
    const n = this.nodes.find((x) => x.addr === addr);
    return n ? n.id : null;
  }

  /** Every address worth trying, best first: the current node, the last good one, the
   *  workspace address, then the other members. */
  candidates() {
    const out = [];
    const add = (a) => {
      if (a && !out.includes(a)) out.push(a);
    };
    add(this.current);
    add(this.lastGood);
    add(this.workspace);
    for (const n of this.nodes) add(n.addr);
    return out;
  }

  /** `GET /readyz` on one node: true only for a 200 within the probe timeout. */
  async probe(addr, timeoutMs = PROBE_TIMEOUT_MS) {
    try {
      const res = await fetchWithTimeout(
        `${this.httpBase(addr)}/readyz`,
        { cache: 'no-store', credentials: 'omit' },
        timeoutMs,
      );
      return res.status === 200;
    } catch {
      return false;
    }
  }

  /**
   * Probes every known node in parallel and picks a ready one. Nodes in `avoid` (a Set of
   * addresses, e.g. the node that just failed) are chosen only if no other node is ready.
   * With nothing to avoid, the first ready candidate in order wins (the current/workspace
   * node). Otherwise a random one among the other nodes that answer within a short grace
   * period after the first, so that the clients of a dead node spread out, and so that a
   * frozen node's probe timeout does not delay the failover. Returns `{id, addr}` or null.
   */
  pickReady(avoid = new Set()) {
    const addrs = this.candidates();
    return new Promise((resolve) => {
      if (!addrs.length) {
        resolve(null);
        return;
      }
      let pending = addrs.length;
      let done = false;
      let grace = null;
      const ok = new Array(addrs.length).fill(false);
      const finish = (addr) => {
        if (done) return;
        done = true;
        clearTimeout(grace);
        resolve(addr ? { id: this.nodeId(addr), addr } : null);
      };
      const choose = () => {
        const ready = addrs.filter((_, i) => ok[i]);
        const preferred = ready.filter((a) => !avoid.has(a));
        if (avoid.size === 0) return ready[0] || null;
        if (preferred.length) return preferred[Math.floor(Math.random() * preferred.length)];
        return ready[0] || null;
      };
      addrs.forEach((addr, i) => {
        this.probe(addr).then((ready) => {
          ok[i] = ready;
          pending -= 1;
          if (done) return;
          if (pending === 0) {
            finish(choose());
          } else if (ready && avoid.size === 0 && i === 0) {
            // Nothing to avoid and the best-ranked node is ready: no need to wait for others.
            finish(addr);
          } else if (ready && avoid.size > 0 && !avoid.has(addr) && !grace) {
            grace = setTimeout(() => finish(choose()), 150);
          }
        });
      });
    });
  }

  /** Refreshes the node list from `GET /api/v1/cluster` on `addr` (errors are ignored). */
  async refresh(addr) {
    try {
      const res = await fetchWithTimeout(
        `${this.httpBase(addr)}/api/v1/cluster`,
        { cache: 'no-store', credentials: 'omit' },
        5000,
      );
      if (!res.ok) return false;
      const body = await res.json();
      this.setNodes(body.nodes || []);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * A REST request with failover. `path` starts with `/api/v1/`. On a network error or a 503
   * the request moves to the next ready node (the token is valid on every node); other errors
   * are thrown as ApiError. Resolves to the parsed JSON body, or null for 204.
   *
   * Options: `body` (JSON), `raw` (bytes sent as `application/octet-stream` instead, e.g. a
   * file chunk), `as: 'blob'` (resolve to the response body as a Blob, e.g. a file), `auth`
   * (default true), `timeoutMs`, `attempts` (rounds over the cluster before giving up, default 4).
   */
  async request(method, path, { body, raw, as = 'json', auth = true, timeoutMs = REQUEST_TIMEOUT_MS, attempts = 4 } = {}) {
    const headers = { Accept: as === 'blob' ? '*/*' : 'application/json' };
    if (raw !== undefined) headers['Content-Type'] = 'application/octet-stream';
    else if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth) {
      if (!this.token) throw new ApiError(401, 'unauthorized', 'not signed in');
      headers.Authorization = `Bearer ${this.token}`;
    }
    const init = {
      method,
      headers,
      body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      mode: 'cors',
    };
    const tried = new Set();
    let lastError = new ApiError(0, 'unreachable', `cannot reach ${this.workspace}`);
    // First try the preferred node directly (no probe: it is usually fine), then ready nodes.
    let addr = this.current || this.lastGood || this.workspace;
    for (let round = 0; round < attempts; ) {
      if (!addr) {
        const next = await this.pickReady(tried);
        if (!next || tried.has(next.addr)) {
          // Nobody new is ready: wait a little, then give every node another chance.
          round += 1;
          if (round >= attempts) break;
          tried.clear();
          await sleep(backoffDelay(round + 2));
          continue;
        }
        addr = next.addr;
      }
      let res;
      try {
        res = await fetchWithTimeout(this.httpBase(addr) + path, init, timeoutMs);
      } catch {
        lastError = new ApiError(0, 'unreachable', `cannot reach ${addr}`);
        tried.add(addr);
        addr = null;
        continue;
      }
      if (res.status === 503) {
        lastError = await errorFrom(res);
        tried.add(addr);
        addr = null;
        continue;
      }
      this.lastGood = addr;
      if (!res.ok) throw await errorFrom(res);
      if (res.status === 204) return null;
      if (as === 'blob') return await res.blob();
      const text = await res.text();
      return text ? JSON.parse(text) : null;
    }
    throw lastError;
  }
}

/** A fresh idempotency key: `web-` + 16 random hex digits + a counter (fits `[A-Za-z0-9._:-]{1,64}`). */
let idCounter = 0;
export function newClientMsgId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  idCounter += 1;
  return `web-${hex}-${idCounter.toString(36)}`;
}

/**
 * The WebSocket session. States (`state`): "connecting" (first attempt), "connected",
 * "reconnecting" (after a drop, trying), "offline" (several attempts failed; still trying),
 * "stopped" (signed out).
 *
 * Handlers (all optional):
 *   onState(state, info)    connection state changed; info = {node, attempt, pending}
 *   onHello(hello, node)    authenticated; subscriptions and re-sends are already queued
 *   onEvent(frame)          a channel `event`; the cursor advances after it returns
 *   onSubscribed(channel)   `subscribed` received: replay done for that channel
 *   onAck(entry, frame)     a pending message was acknowledged (entry removed from outbox)
 *   onNack(entry, frame)    a pending message was refused (entry.state = "failed")
 *   onOutbox(outbox)        the outbox changed (persist it)
 *   onFrame(frame)          every other server frame (typing, presence, read_marker, …)
 *   onAuthLost(code)        closed with 4001/4003/4011/4012: the session is over
 */
export class Connection {
  constructor(cluster, handlers = {}) {
    this.cluster = cluster;
    this.h = handlers;
    this.ws = null;
    this.state = 'stopped';
    /** `{id, addr}` of the node we are authenticated with, or null. */
    this.node = null;
    this.heartbeatMs = 15000;
    /** channel → last applied event number (`ev`): the resume cursor. */
    this.cursors = new Map();
    /** Channels to keep subscribed across reconnects. */
    this.wanted = new Set();
    /** Channels whose `subscribe` went out on the current socket. */
    this.requested = new Set();
    /** Channels confirmed (`subscribed`) on the current socket. */
    this.subscribed = new Set();
    /** Unacknowledged sends in the order typed:
     *  {client_msg_id, channel, body, thread_root, created, state: "pending"|"failed", error}. */
    this.outbox = [];
    /** channel → read marker seq not yet sent. */
    this.reads = new Map();
    this.attempt = 0;
    this.failed = new Set(); // addresses that failed since the last successful hello
    this.timers = {};
    this.queue = []; // outgoing frames waiting for rate-limit tokens
    this.tokens = BUCKET_CAPACITY;
    this.tokensAt = performance.now();
    this.lastRecv = 0;
    this.pingId = 0;
    this.unavailableStreak = 0;
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  /** Starts connecting (to the workspace node first). */
  start() {
    if (this.state !== 'stopped') return;
    this._setState('connecting');
    this._connect();
  }

  /** Closes the socket for good (sign-out). */
  stop() {
    this._setState('stopped');
    this._clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
  }

  /** Reconnects now instead of waiting for the backoff (e.g. the browser came back online). */
  kick() {
    if (this.state === 'stopped' || this.state === 'connected') return;
    if (this.timers.retry) {
      clearTimeout(this.timers.retry);
      this.timers.retry = null;
      this.attempt = 0;
      this._connect();
    }
  }

  get connected() {
    return this.state === 'connected';
  }

  // ---- subscriptions -----------------------------------------------------------------------

  /** Sets a channel's cursor if none is known yet (e.g. from the channel list's `last_ev`). */
  initCursor(channel, ev) {
    if (!this.cursors.has(channel) && Number.isFinite(ev)) this.cursors.set(channel, ev);
  }

  /** Keeps `channel` subscribed; resumes after its cursor (or "from now" without one). */
  subscribe(channel) {
    this.wanted.add(channel);
    if (this.connected && !this.requested.has(channel)) this._sendSubscribe(channel);
  }

  unsubscribe(channel) {
    this.wanted.delete(channel);
    if (this.connected && this.requested.has(channel)) {
      this._send({ type: 'unsubscribe', channel });
    }
    this.requested.delete(channel);
    this.subscribed.delete(channel);
  }

  /** Forgets a channel entirely (left or removed): no subscription, no cursor. */
  forget(channel) {
    this.unsubscribe(channel);
    this.cursors.delete(channel);
    this.reads.delete(channel);
  }

  isSubscribed(channel) {
    return this.connected && this.subscribed.has(channel);
  }

  _sendSubscribe(channel) {
    const frame = { type: 'subscribe', channel };
    const after = this.cursors.get(channel);
    if (Number.isFinite(after)) frame.after = after;
    this.requested.add(channel);
    this._send(frame);
  }

  // ---- sending -------------------------------------------------------------------------------

  /** Restores an outbox saved by a previous page load (all entries become pending again). */
  restoreOutbox(entries) {
    for (const e of entries || []) {
      if (!e || !e.client_msg_id || !e.channel || typeof e.body !== 'string') continue;
      if (this.outbox.some((x) => x.client_msg_id === e.client_msg_id)) continue;
      this.outbox.push({
        client_msg_id: e.client_msg_id,
        channel: e.channel,
        body: e.body,
        thread_root: e.thread_root ?? null,
        created: e.created || Date.now(),
        state: e.state === 'failed' ? 'failed' : 'pending',
        error: e.error || null,
      });
    }
  }

  /** Queues a message; it is transmitted now if connected, else after the next `hello`. */
  send(channel, body, threadRoot = null) {
    const entry = {
      client_msg_id: newClientMsgId(),
      channel,
      body,
      thread_root: threadRoot,
      created: Date.now(),
      state: 'pending',
      error: null,
    };
    this.outbox.push(entry);
    this._outboxChanged();
    if (this.connected) this._transmit(entry);
    return entry;
  }

  /** Re-queues a failed message with its original `client_msg_id`. */
  retry(clientMsgId) {
    const entry = this.outbox.find((e) => e.client_msg_id === clientMsgId);
    if (!entry) return;
    entry.state = 'pending';
    entry.error = null;
    this._outboxChanged();
    if (this.connected) this._transmit(entry);
  }

  /** Drops a failed (or pending) message from the outbox. */
  discard(clientMsgId) {
    const i = this.outbox.findIndex((e) => e.client_msg_id === clientMsgId);
    if (i < 0) return;
    const [entry] = this.outbox.splice(i, 1);
    if (entry.timer) clearTimeout(entry.timer);
    this._outboxChanged();
  }

  pendingEntry(clientMsgId) {
    return this.outbox.find((e) => e.client_msg_id === clientMsgId) || null;
  }

  _transmit(entry) {
    if (entry.timer) {
      clearTimeout(entry.timer);
      entry.timer = null;
    }
    entry.sentAt = Date.now();
    this._send({
      type: 'send',
      channel: entry.channel,
      body: entry.body,
      client_msg_id: entry.client_msg_id,
      thread_root: entry.thread_root ?? null,
    });
  }

  _outboxChanged() {
    this.h.onOutbox?.(this.outbox);
  }

  /** Moves the read marker forward; sent now or right after the next `hello`. */
  markRead(channel, seq) {
    const prev = this.reads.get(channel) || 0;
    if (seq <= prev) return;
    this.reads.set(channel, seq);
    if (this.connected) this._flushReads();
  }

  _flushReads() {
    for (const [channel, seq] of this.reads) this._send({ type: 'read', channel, seq });
    this.reads.clear();
  }

  /** Ephemeral frames are dropped when not connected: losing them costs nothing. */
  typing(channel) {
    if (this.connected) this._send({ type: 'typing', channel });
  }

  presence(status) {
    this.presenceStatus = status;
    if (this.connected) this._send({ type: 'presence', status });
  }

  // ---- the socket --------------------------------------------------------------------------

  async _connect() {
    this.timers.retry = null;
    // Find a ready node, preferring ones that have not just failed, and refresh the node list.
    const node = await this.cluster.pickReady(this.failed);
    if (this.state === 'stopped') return;
    if (!node) {
      this._retryLater();
      return;
    }
    this.cluster.refresh(node.addr);

    let ws;
    try {
      ws = new WebSocket(this.cluster.wsUrl(node.addr));
    } catch {
      this.failed.add(node.addr);
      this._retryLater();
      return;
    }
    this.ws = ws;
    this.pendingNode = node;
    this.timers.connect = setTimeout(() => {
      // No `hello` in time: give up on this node.
      if (this.ws === ws) this._drop(ws, 0, 'no hello');
    }, CONNECT_TIMEOUT_MS + HELLO_TIMEOUT_MS);

    ws.onopen = () => {
      if (this.ws !== ws) return;
      // The token goes in the first frame, never in the URL.
      ws.send(JSON.stringify({ type: 'auth', v: 1, token: this.cluster.token }));
    };
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      this.lastRecv = Date.now();
      if (typeof e.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      this._onFrame(ws, frame);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this._drop(ws, e.code, e.reason);
    };
    ws.onerror = () => {
      // A close event always follows.
    };
  }

  /** The socket is gone (closed by either side, or abandoned as dead). */
  _drop(ws, code, reason) {
    this.ws = null;
    clearTimeout(this.timers.connect);
    clearInterval(this.timers.heartbeat);
    this.timers.connect = this.timers.heartbeat = null;
    try {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close();
    } catch {
      // already closed
    }
    const addr = (this.node && this.node.addr) || (this.pendingNode && this.pendingNode.addr);
    this.node = null;
    this.requested.clear();
    this.subscribed.clear();
    this.queue = [];
    for (const e of this.outbox) {
      if (e.timer) {
        clearTimeout(e.timer);
        e.timer = null;
      }
    }
    if (this.state === 'stopped') return;
    // 4011: the session ended (expired, or ended elsewhere); 4012: the password must be
    // changed first. Reconnecting with this token cannot help: ask for the password. The
    // outbox stays (the app persists it) and is resent after sign-in with its client_msg_ids.
    if (code === 4001 || code === 4003 || code === 4011 || code === 4012) {
      this._setState('stopped');
      this.h.onAuthLost?.(code, reason);
      return;
    }
    if (addr) this.failed.add(addr);
    this._retryLater();
  }

  _retryLater() {
    if (this.state === 'stopped') return;
    const offline = this.attempt >= OFFLINE_AFTER_ATTEMPTS || navigator.onLine === false;
    this._setState(offline ? 'offline' : this.everConnected ? 'reconnecting' : 'connecting');
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    // After a full round where every node failed, forget the failures: maybe they are back.
    if (this.failed.size >= Math.max(1, this.cluster.candidates().length)) this.failed.clear();
    this.timers.retry = setTimeout(() => this._connect(), delay);
  }

  _onFrame(ws, f) {
    switch (f.type) {
      case 'hello':
        this._onHello(ws, f);
        break;
      case 'event': {
        this.h.onEvent?.(f);
        const cur = this.cursors.get(f.channel);
        if (Number.isFinite(f.ev) && !(cur >= f.ev)) this.cursors.set(f.channel, f.ev);
        break;
      }
      case 'subscribed': {
        const cur = this.cursors.get(f.channel);
        if (Number.isFinite(f.ev) && !(cur >= f.ev)) this.cursors.set(f.channel, f.ev);
        if (this.wanted.has(f.channel)) this.subscribed.add(f.channel);
        this.h.onSubscribed?.(f.channel);
        break;
      }
      case 'unsubscribed':
        this.wanted.delete(f.channel);
        this.requested.delete(f.channel);
        this.subscribed.delete(f.channel);
        this.h.onFrame?.(f);
        break;
      case 'ack':
        this._onAck(f);
        break;
      case 'nack':
        this._onNack(f);
        break;
      case 'pong':
        break;
      case 'error':
        // A refused subscription (forbidden / channel_not_found) must not be retried forever.
        if (f.channel && (f.code === 'forbidden' || f.code === 'channel_not_found')) {
          this.wanted.delete(f.channel);
          this.requested.delete(f.channel);
        }
        this.h.onFrame?.(f);
        break;
      default:
        this.h.onFrame?.(f);
    }
  }

  _onHello(ws, hello) {
    clearTimeout(this.timers.connect);
    this.timers.connect = null;
    const addr = this.pendingNode.addr;
    this.node = { id: hello.node_id ?? this.cluster.nodeId(addr), addr };
    this.cluster.current = addr;
    if (Array.isArray(hello.nodes)) this.cluster.setNodes(hello.nodes);
    this.heartbeatMs = hello.heartbeat_ms || 15000;
    this.attempt = 0;
    this.failed.clear();
    this.unavailableStreak = 0;
    this.everConnected = true;
    this.requested.clear();
    this.subscribed.clear();
    this.tokens = BUCKET_CAPACITY;
    this.tokensAt = performance.now();
    this._setState('connected');

    // Resume: every channel after its last applied event, then the pending messages in the
    // order they were typed (same client_msg_id: the server acks each exactly once).
    if (this.presenceStatus) this._send({ type: 'presence', status: this.presenceStatus });
    for (const channel of this.wanted) this._sendSubscribe(channel);
    this._flushReads();
    for (const entry of this.outbox) if (entry.state === 'pending') this._transmit(entry);

    this._startHeartbeat(ws);
    this.h.onHello?.(hello, this.node);
  }

  _onAck(f) {
    this.unavailableStreak = 0;
    const i = this.outbox.findIndex((e) => e.client_msg_id === f.client_msg_id);
    if (i < 0) return; // a duplicate ack of something already acknowledged
    const [entry] = this.outbox.splice(i, 1);
    if (entry.timer) clearTimeout(entry.timer);
    this._outboxChanged();
    this.h.onAck?.(entry, f);
  }

  _onNack(f) {
    const entry = this.outbox.find((e) => e.client_msg_id === f.client_msg_id);
    if (!entry) return;
    if (f.code === 'unavailable') {
      // Outcome unknown (no leader, timeout): re-send with the same id. If it keeps happening,
      // check whether this node is still ready and move elsewhere if not.
      this.unavailableStreak += 1;
      if (this.unavailableStreak >= 2) this._checkNode();
      const delay = backoffDelay(Math.min(this.unavailableStreak + 2, 6));
      entry.timer = setTimeout(() => {
        entry.timer = null;
        if (this.connected && this.outbox.includes(entry) && entry.state === 'pending') this._transmit(entry);
      }, delay);
      return;
    }
    entry.state = 'failed';
    entry.error = { code: f.code, message: f.message || f.code };
    this._outboxChanged();
    this.h.onNack?.(entry, f);
  }

  /** If the current node is not ready (e.g. cut off from the quorum), drop it and fail over. */
  async _checkNode() {
    const ws = this.ws;
    const node = this.node;
    if (!ws || !node || this.checking) return;
    this.checking = true;
    try {
      const ok = await this.cluster.probe(node.addr, 2500);
      if (!ok && this.ws === ws) this._drop(ws, 0, 'node not ready');
    } finally {
      this.checking = false;
    }
  }

  _startHeartbeat(ws) {
    clearInterval(this.timers.heartbeat);
    this.lastRecv = Date.now();
    // Our own pings (answered by `pong`) detect a dead node or path quickly, even when TCP
    // has not noticed (a frozen process, a pulled cable): a few missed answers and we move on.
    const every = Math.max(1000, Math.min(this.heartbeatMs / 3, 5000));
    this.timers.heartbeat = setInterval(() => {
      if (this.ws !== ws) return;
      const silent = Date.now() - this.lastRecv;
      if (silent > every * 3 + 2000) {
        this._drop(ws, 0, 'heartbeat lost');
        return;
      }
      this.pingId += 1;
      this._send({ type: 'ping', id: this.pingId });
      // A send without ack for long: the node may be in a minority; re-check it and re-send.
      const stalled = this.outbox.filter(
        (e) => e.state === 'pending' && !e.timer && e.sentAt && Date.now() - e.sentAt > SEND_STALL_MS,
      );
      if (stalled.length) {
        this._checkNode();
        for (const e of stalled) if (this.ws === ws) this._transmit(e);
      }
    }, every);
  }

  /** Sends a frame through the client-side token bucket (stays under the server's limit). */
  _send(frame) {
    this.queue.push(JSON.stringify(frame));
    this._pump();
  }

  _pump() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    this.tokens = Math.min(BUCKET_CAPACITY, this.tokens + ((now - this.tokensAt) / 1000) * BUCKET_REFILL_PER_S);
    this.tokensAt = now;
    while (this.queue.length && this.tokens >= 1) {
      ws.send(this.queue.shift());
      this.tokens -= 1;
    }
    if (this.queue.length && !this.timers.pump) {
      const wait = Math.ceil(((1 - this.tokens) / BUCKET_REFILL_PER_S) * 1000);
      this.timers.pump = setTimeout(() => {
        this.timers.pump = null;
        this._pump();
      }, Math.max(10, wait));
    }
  }

  _setState(state) {
    const changed = state !== this.state;
    this.state = state;
    if (changed || state !== 'connected') {
      this.h.onState?.(state, { node: this.node, attempt: this.attempt, pending: this.outbox.length });
    }
  }

  _clearTimers() {
    for (const k of Object.keys(this.timers)) {
      clearTimeout(this.timers[k]);
      clearInterval(this.timers[k]);
      this.timers[k] = null;
    }
  }
}
