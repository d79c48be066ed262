// Conclave web client: state, rendering and user actions. Connection, failover and resume
// live in conn.js; DOM helpers in ui.js; the modal dialogs (channels, DMs, settings, admin) in
// dialogs.js. No framework, no build step; user content only ever reaches the DOM through
// textContent.

import { ApiError, Cluster, Connection, normalizeAddr } from './conn.js';
import {
  avatar,
  confirmDialog,
  dayKey,
  fmtDay,
  fmtFull,
  fmtTime,
  h,
  icon,
  iconButton,
  reconcile,
  renderBody,
  toast,
  utf8Length,
} from './ui.js';
import * as dialogs from './dialogs.js';
import { initFiles, mountComposer, sendStaged, stagedCount, syncTray, updateAttachments } from './files.js';
import * as notify from './notify.js';
import { initKeys } from './keys.js';
import { initSearch } from './search.js';

const PAGE = 50; // messages per history page
const MAX_BODY_BYTES = 16384;
const GROUP_WINDOW_MS = 5 * 60 * 1000;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_TTL_MS = 6000;
const NEWEST = Number.MAX_SAFE_INTEGER; // `before` meaning "the newest messages"
const EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢', '👀', '✅'];

const $ = (id) => document.getElementById(id);

// ---- state -------------------------------------------------------------------------------------

const S = {
  workspace: null,
  /** @type {Cluster|null} */
  cluster: null,
  /** @type {Connection|null} */
  conn: null,
  me: null, // {username, display_name, role}
  users: new Map(), // username → {username, display_name, role, disabled}
  channels: new Map(), // name → channel object + {member, last_read, unread, mentions, counted, mentionSeq}
  views: new Map(), // name → per-channel timeline state (see viewFor)
  current: null,
  panel: null, // {kind: 'thread'|'members'|'pins', channel, root?, loading?, error?, pins?}
  editing: null, // {channel, seq}
  typing: new Map(), // channel → Map(user → expiresAt)
  presence: new Map(), // username → online|away|offline
  drafts: new Map(),
  synced: false,
  lastTypingSent: 0,
};

function viewFor(name) {
  let v = S.views.get(name);
  if (!v) {
    v = {
      name,
      bySeq: new Map(), // seq → message (main timeline and replies)
      seqByCmid: new Map(), // client_msg_id → seq, once known
      replies: new Map(), // root seq → Set of reply seqs
      els: new Map(), // main timeline element cache: "s:<seq>" | "p:<client_msg_id>"
      panelEls: new Map(), // thread panel element cache
      seps: new Map(), // day key → separator element
      oldest: null, // lowest seq of the contiguous loaded window
      maxSeq: 0,
      hasMore: true,
      loaded: false,
      loading: false,
      error: null,
      newMarker: null, // last_read when the channel was opened: "new messages" divider
    };
    S.views.set(name, v);
  }
  return v;
}

const isDm = (c) => c && (c.kind === 'direct' || c.kind === 'dm' || String(c.name).startsWith('dm:'));
const me = () => (S.me ? S.me.username : null);
const isAdmin = () => S.me && S.me.role === 'admin';
const chPath = (name) => `/api/v1/channels/${encodeURIComponent(name)}`;

function displayName(username) {
  const u = S.users.get(username);
  return (u && u.display_name) || username;
}

function dmOthers(c) {
  let members = Array.isArray(c.members) && c.members.length ? c.members : String(c.name).split(':').slice(1);
  members = members.filter((u) => u !== me());
  return members;
}

function channelLabel(c) {
  if (!c) return '';
  if (isDm(c)) {
    const others = dmOthers(c);
    return others.length ? others.map(displayName).join(', ') : `${displayName(me())} (you)`;
  }
  return c.title && c.title !== c.name ? c.title : c.name;
}

// ---- storage (per workspace) -------------------------------------------------------------------

const LS_LAST = 'conclave.workspace';
const lsKey = (ws) => `conclave.session:${ws}`;

function loadStored(ws) {
  try {
    return JSON.parse(localStorage.getItem(lsKey(ws)) || 'null') || {};
  } catch {
    return {};
  }
}

function store(ws, patch) {
  try {
    localStorage.setItem(lsKey(ws), JSON.stringify({ ...loadStored(ws), ...patch }));
    localStorage.setItem(LS_LAST, ws);
  } catch {
    // Storage full or disabled: the session still works until reload.
  }
}

// ---- API ---------------------------------------------------------------------------------------

async function api(method, path, body) {
  try {
    return await S.cluster.request(method, path, body === undefined ? {} : { body });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && (e.code === 'unauthorized' || e.code === 'session_expired')) {
      sessionLost('Your session has ended. Please sign in again.');
    } else if (e instanceof ApiError && e.code === 'password_change_required') {
      sessionLost('An admin set your password: sign in and choose your own.');
    }
    throw e;
  }
}

function errorText(e) {
  if (!(e instanceof ApiError)) return String(e && e.message ? e.message : e);
  switch (e.code) {
    case 'unreachable':
      return 'The server cannot be reached. Check your connection.';
    case 'unavailable':
      return 'The cluster is not available right now (no quorum). Try again in a moment.';
    case 'forbidden':
      return e.message || 'You are not allowed to do that.';
    case 'archived':
      return 'This channel is archived.';
    default:
      return e.message || e.code;
  }
}

// ---- rendering scheduler -----------------------------------------------------------------------

const dirty = new Set();
let flushTimer = null;

function mark(...parts) {
  for (const p of parts) dirty.add(p);
  if (!flushTimer) flushTimer = setTimeout(flush, 0);
}

function flush() {
  flushTimer = null;
  const d = new Set(dirty);
  dirty.clear();
  if (d.has('sidebar')) renderSidebar();
  if (d.has('header')) renderHeader();
  if (d.has('timeline')) renderTimeline();
  if (d.has('panel')) renderPanel();
  if (d.has('typing')) renderTyping();
  if (d.has('status')) renderStatus();
  if (d.has('composer')) renderComposer();
  updateReady();
}

// ---- boot --------------------------------------------------------------------------------------

function boot() {
  exposeDebug();
  wireStaticUi();
  notify.initNotify(notifyCtx);
  initKeys();
  registerServiceWorker();
  const ws = localStorage.getItem(LS_LAST) || location.host;
  const stored = loadStored(ws);
  if (stored.token) startSession(ws, stored);
  else showLogin(ws, stored.username || '');
}

function showView(name) {
  document.body.dataset.view = name;
}

// ---- login -------------------------------------------------------------------------------------

let loginTimer = null;

function showLogin(workspace, username = '', message = '') {
  showView('login');
  document.body.dataset.ready = '0';
  $('login-workspace').value = workspace || location.host;
  if (username) $('login-username').value = username;
  $('login-password').value = '';
  $('login-new-password').value = '';
  $('login-new-field').hidden = true;
  // The button was left disabled by the sign-in that started the session that just ended.
  if (!loginTimer) {
    $('login-submit').disabled = false;
    $('login-submit').textContent = 'Sign in';
  }
  setLoginError(message);
  (username ? $('login-password') : $('login-username')).focus();
}

function setLoginError(message) {
  const el = $('login-error');
  el.textContent = message || '';
  el.hidden = !message;
}

async function onLoginSubmit(ev) {
  ev.preventDefault();
  const workspace = normalizeAddr($('login-workspace').value || location.host);
  const username = $('login-username').value.trim().toLowerCase();
  const password = $('login-password').value;
  const newPassword = $('login-new-password').value;
  if (!workspace) return setLoginError('Enter the workspace address, for example 10.0.0.5:8080.');
  if (!username || !password) return setLoginError('Enter your username and password.');
  if (!$('login-new-field').hidden && !newPassword) return setLoginError('Choose a new password.');
  const btn = $('login-submit');
  btn.disabled = true;
  btn.textContent = 'Signing in…';
  setLoginError('');
  const stored = loadStored(workspace);
  const cluster = new Cluster(workspace, stored.nodes || []);
  try {
    const res = await cluster.request('POST', '/api/v1/login', { body: { username, password }, auth: false, attempts: 2 });
    if (res.must_change_password) {
      // An admin chose this password: nothing else is allowed until it is replaced.
      if (!newPassword) {
        btn.disabled = false;
        $('login-new-field').hidden = false;
        $('login-new-password').focus();
        setLoginError('An admin set your password. Choose a new one to continue.');
        return;
      }
      cluster.token = res.token;
      await cluster.request('POST', '/api/v1/me/password', {
        body: { current_password: password, new_password: newPassword },
        attempts: 1,
      });
    }
    $('login-new-field').hidden = true;
    $('login-new-password').value = '';
    store(workspace, { token: res.token, username: res.username || username, role: res.role, nodes: cluster.nodes });
    startSession(workspace, loadStored(workspace));
  } catch (e) {
    btn.disabled = false;
    if (e instanceof ApiError && e.code === 'too_many_attempts') {
      const secs = e.retryAfter ?? parseRetry(e.message);
      if (secs) {
        countdown(secs);
        return;
      }
      setLoginError(`Too many sign-in attempts. ${e.message || 'Try again later.'}`);
    } else if (e instanceof ApiError && e.code === 'weak_password') {
      setLoginError(`New password refused: ${e.message}`);
      $('login-new-password').select();
    } else if (e instanceof ApiError && e.code === 'invalid_credentials') {
      setLoginError('Wrong username or password.');
      $('login-password').select();
    } else if (e instanceof ApiError && e.code === 'unreachable') {
      setLoginError(`Cannot reach ${workspace}. Check the address and that the server is running.`);
    } else {
      setLoginError(errorText(e));
    }
  } finally {
    if (!loginTimer) btn.textContent = 'Sign in';
  }
}

function parseRetry(message) {
  const m = /(\d+)\s*s/.exec(message || '');
  return m ? Number(m[1]) : null;
}

function countdown(secs) {
  const btn = $('login-submit');
  clearInterval(loginTimer);
  let left = Math.max(1, Math.ceil(secs));
  const tick = () => {
    if (left <= 0) {
      clearInterval(loginTimer);
      loginTimer = null;
      btn.disabled = false;
      btn.textContent = 'Sign in';
      setLoginError('');
      return;
    }
    setLoginError(`Too many sign-in attempts. Try again in ${left} s.`);
    btn.disabled = true;
    btn.textContent = `Wait ${left} s`;
    left -= 1;
  };
  tick();
  loginTimer = setInterval(tick, 1000);
}

// ---- session -----------------------------------------------------------------------------------

function startSession(workspace, stored) {
  resetState();
  S.workspace = workspace;
  S.me = { username: stored.username, display_name: '', role: stored.role || 'member' };
  S.cluster = new Cluster(workspace, stored.nodes || []);
  S.cluster.token = stored.token;
  S.cluster.onNodesChanged = (nodes) => store(workspace, { nodes });
  S.conn = new Connection(S.cluster, {
    onState: () => mark('status', 'composer', 'timeline', 'panel'),
    onHello,
    onEvent,
    onSubscribed: (channel) => {
      if (channel === S.current) mark('timeline');
      updateReady();
    },
    onAck,
    onNack: (entry) => {
      mark('timeline', 'panel');
      toast(`Message not sent: ${entry.error ? entry.error.message : 'refused'}`, 'error');
    },
    onOutbox: (outbox) =>
      store(workspace, {
        outboxUser: me(),
        outbox: outbox.map(({ client_msg_id, channel, body, thread_root, created, state, error }) => ({ client_msg_id, channel, body, thread_root, created, state, error })),
      }),
    onFrame,
    onAuthLost: (code) =>
      sessionLost(
        code === 4003
          ? 'Your account was disabled.'
          : code === 4012
            ? 'An admin set your password: sign in and choose your own.'
            : 'Your session has ended (it expired, or was ended elsewhere). Please sign in again; unsent messages will be sent.',
      ),
  });
  if (stored.outbox && stored.outboxUser === stored.username) S.conn.restoreOutbox(stored.outbox);
  $('workspace-name').textContent = workspace;
  showView('app');
  // Phones show the conversation, with the channel list in a drawer (`pane = list`).
  document.body.dataset.pane = 'chat';
  S.conn.presence(document.visibilityState === 'visible' ? 'online' : 'away');
  S.conn.start();
  mark('sidebar', 'header', 'timeline', 'status', 'composer');
}

function resetState() {
  if (S.conn) S.conn.stop();
  S.conn = null;
  S.cluster = null;
  S.me = null;
  S.users.clear();
  S.channels.clear();
  S.views.clear();
  S.current = null;
  S.panel = null;
  S.editing = null;
  S.typing.clear();
  S.presence.clear();
  S.drafts.clear();
  S.synced = false;
  navEls.clear();
  $('channel-list').replaceChildren();
  $('dm-list').replaceChildren();
  $('messages').replaceChildren();
  $('panel-body').replaceChildren();
  $('panel').hidden = true;
  document.body.dataset.panel = '';
  document.body.dataset.ready = '0';
  const d = $('dialog');
  if (d.open) d.close();
}

function sessionLost(message) {
  if (!S.conn && !S.cluster) return;
  const ws = S.workspace;
  const username = me();
  store(ws, { token: null });
  resetState();
  showLogin(ws, username, message);
}

async function logout() {
  const ws = S.workspace;
  const username = me();
  try {
    await S.cluster.request('POST', '/api/v1/logout', { attempts: 1, timeoutMs: 4000 });
  } catch {
    // The token is forgotten locally anyway.
  }
  store(ws, { token: null });
  resetState();
  showLogin(ws, username);
}

// ---- connection callbacks ----------------------------------------------------------------------

async function onHello(hello) {
  if (hello.user) S.me = { ...S.me, ...hello.user };
  store(S.workspace, { username: me(), role: S.me.role });
  mark('status', 'sidebar');
  await syncAll();
}

/** Loads me, the user directory and the channel list; subscribes every member channel. */
async function syncAll() {
  const conn = S.conn;
  try {
    const [meRes, users, channels] = await Promise.all([
      api('GET', '/api/v1/me'),
      api('GET', '/api/v1/users').catch(() => null),
      api('GET', '/api/v1/channels'),
    ]);
    if (conn !== S.conn) return;
    S.me = { ...S.me, ...meRes };
    if (users && Array.isArray(users.users)) for (const u of users.users) S.users.set(u.username, u);
    applyChannelList(channels.channels || []);
    S.synced = true;
    ensureCurrent();
    const v = S.current && viewFor(S.current);
    if (v && (v.error || !v.loaded)) retryLoad(S.current);
    mark('sidebar', 'header', 'timeline', 'composer', 'panel');
  } catch (e) {
    if (conn !== S.conn || (e instanceof ApiError && e.status === 401)) return;
    // Try again shortly; the socket may already be on another node.
    setTimeout(() => {
      if (conn === S.conn && conn.connected) syncAll();
    }, 2000);
  }
}

function isMember(c) {
  if (typeof c.member === 'boolean') return c.member;
  return Array.isArray(c.members) && c.members.includes(me());
}

function applyChannelList(list) {
  const names = new Set();
  for (const c of list) {
    names.add(c.name);
    upsertChannel(c, true);
  }
  for (const name of [...S.channels.keys()]) {
    if (!names.has(name)) {
      S.channels.delete(name);
      S.conn.forget(name);
    }
  }
  for (const c of S.channels.values()) {
    if (c.member) {
      S.conn.initCursor(c.name, c.last_ev);
      S.conn.subscribe(c.name);
    }
  }
}

/** Merges a channel object. `withCounts`: it carries the caller's authoritative read state. */
function upsertChannel(c, withCounts = false) {
  const prev = S.channels.get(c.name);
  const next = { ...(prev || { unread: 0, mentions: 0, last_read: 0, counted: 0, mentionSeq: 0 }), ...c };
  next.member = isMember(next);
  if (withCounts) {
    next.unread = c.unread || 0;
    next.mentions = c.mentions || 0;
    next.last_read = c.last_read || 0;
  } else if (prev) {
    next.unread = prev.unread;
    next.mentions = prev.mentions;
    next.last_read = prev.last_read;
  }
  next.counted = Math.max(prev ? prev.counted : 0, c.last_seq || 0);
  next.mentionSeq = Math.max(prev ? prev.mentionSeq : 0, next.last_read || 0);
  S.channels.set(c.name, next);
  mark('sidebar');
  if (c.name === S.current) mark('header', 'composer');
  return next;
}

function onEvent(f) {
  const c = S.channels.get(f.channel);
  switch (f.kind) {
    case 'message':
    case 'edited':
    case 'deleted':
    case 'reaction':
    case 'pinned': {
      const m = f.message;
      if (!m) break;
      upsertMessage(m);
      if (f.kind === 'message' && c) {
        countNewMessage(c, m);
        notify.onNewMessage(m, c);
      }
      if (f.kind === 'message') {
        // Their message arrived: they are no longer typing it.
        const t = S.typing.get(f.channel);
        if (t && t.delete(m.author)) mark('typing');
      }
      if (f.kind === 'pinned' && S.panel && S.panel.kind === 'pins' && S.panel.channel === f.channel) loadPins(f.channel);
      break;
    }
    case 'member_joined':
    case 'member_left': {
      if (!c) break;
      const members = new Set(c.members || []);
      if (f.kind === 'member_joined') members.add(f.user);
      else members.delete(f.user);
      upsertChannel({ name: c.name, members: [...members], member: f.user === me() ? f.kind === 'member_joined' : c.member });
      if (S.panel && S.panel.kind === 'members' && S.panel.channel === c.name) mark('panel');
      break;
    }
    case 'channel_updated':
      if (f.info) upsertChannel({ ...f.info, member: c ? c.member : undefined });
      break;
    default:
      break;
  }
}

/** Unread accounting for a new message in a channel (each seq counted once). */
function countNewMessage(c, m) {
  if (m.seq <= c.counted) return;
  c.counted = m.seq;
  c.last_seq = Math.max(c.last_seq || 0, m.seq);
  const watching = c.name === S.current && document.visibilityState === 'visible' && isAtBottom();
  if (m.author !== me() && m.seq > (c.last_read || 0) && !watching) {
    c.unread = (c.unread || 0) + 1;
    if (c.name === S.current) showNewPill();
  }
  mark('sidebar');
  scheduleMarkRead();
}

function onAck(entry, f) {
  const v = viewFor(entry.channel);
  v.seqByCmid.set(entry.client_msg_id, f.seq);
  if (!v.bySeq.has(f.seq)) {
    upsertMessage({
      channel: entry.channel,
      seq: f.seq,
      author: me(),
      body: entry.body,
      ts_ms: f.ts_ms || Date.now(),
      client_msg_id: entry.client_msg_id,
      thread_root: entry.thread_root ?? null,
      reply_count: 0,
      edited_at_ms: null,
      deleted: false,
      pinned: false,
      reactions: {},
      mentions: [],
    });
  } else {
    adoptPending(v, entry.client_msg_id, f.seq);
  }
  const c = S.channels.get(entry.channel);
  if (c && f.seq > c.counted) {
    c.counted = f.seq;
    c.last_seq = Math.max(c.last_seq || 0, f.seq);
  }
  mark('timeline', 'panel', 'status');
  scheduleMarkRead();
}

function onFrame(f) {
  switch (f.type) {
    case 'typing': {
      if (f.user === me()) break;
      let t = S.typing.get(f.channel);
      if (!t) S.typing.set(f.channel, (t = new Map()));
      t.set(f.user, Date.now() + TYPING_TTL_MS);
      if (f.channel === S.current || (S.panel && S.panel.channel === f.channel)) mark('typing');
      setTimeout(() => mark('typing'), TYPING_TTL_MS + 50);
      break;
    }
    case 'presence':
      S.presence.set(f.user, f.status);
      renderPresenceDots();
      break;
    case 'read_marker': {
      const c = S.channels.get(f.channel);
      if (!c) break;
      c.last_read = Math.max(c.last_read || 0, f.seq || 0);
      if (Number.isFinite(f.unread)) c.unread = f.unread;
      if (Number.isFinite(f.mentions)) c.mentions = f.mentions;
      c.mentionSeq = Math.max(c.mentionSeq, c.last_read);
      mark('sidebar');
      break;
    }
    case 'mention': {
      const c = S.channels.get(f.channel);
      if (!c) break;
      if (f.seq > (c.last_read || 0) && f.seq > c.mentionSeq) {
        c.mentionSeq = f.seq;
        c.mentions = (c.mentions || 0) + 1;
        mark('sidebar');
        if (f.channel !== S.current || document.visibilityState !== 'visible') {
          toast(`${displayName(f.by)} mentioned you in ${isDm(c) ? 'a direct message' : `#${c.name}`}`, 'info');
        }
        scheduleMarkRead();
      }
      break;
    }
    case 'channel_muted':
      if (S.channels.has(f.channel)) upsertChannel({ name: f.channel, muted: !!f.muted });
      break;
    case 'channel_added': {
      const ch = f.channel;
      if (!ch || !ch.name) break;
      // A channel summary: it carries the caller's member flag and unread counts.
      const c = upsertChannel(ch, typeof ch.unread === 'number');
      if (c.member) {
        S.conn.initCursor(c.name, c.last_ev);
        S.conn.subscribe(c.name);
      }
      break;
    }
    case 'channel_removed':
    case 'unsubscribed': {
      const name = typeof f.channel === 'string' ? f.channel : f.channel && f.channel.name;
      if (name) removeMembership(name);
      break;
    }
    case 'user_updated': {
      const u = f.user;
      if (!u || !u.username) break;
      S.users.set(u.username, { ...(S.users.get(u.username) || {}), ...u });
      if (u.username === me()) S.me = { ...S.me, ...u };
      mark('sidebar', 'header', 'timeline', 'panel');
      break;
    }
    case 'error':
      if (f.channel && f.channel === S.current) {
        viewFor(f.channel).error = new ApiError(403, f.code, f.message || f.code);
        mark('timeline');
      } else if (!f.channel) {
        console.warn('conclave: server error frame', f);
      }
      break;
    default:
      break;
  }
}

function removeMembership(name) {
  const c = S.channels.get(name);
  if (!c) return;
  if (c.kind === 'public' && !isDm(c)) {
    upsertChannel({ name, member: false, members: (c.members || []).filter((u) => u !== me()) });
    if (name !== S.current) S.conn.unsubscribe(name);
  } else {
    S.channels.delete(name);
    S.conn.forget(name);
    if (name === S.current) {
      S.current = null;
      ensureCurrent();
    }
  }
  mark('sidebar', 'header', 'composer', 'timeline');
}

// ---- messages ----------------------------------------------------------------------------------

function upsertMessage(m) {
  if (!m || !m.channel || !Number.isFinite(m.seq)) return;
  const v = viewFor(m.channel);
  // Outside the loaded window (an old message edited): loading older history brings it in.
  if (v.loaded && v.oldest !== null && m.seq < v.oldest && m.thread_root == null) return;
  const prev = v.bySeq.get(m.seq);
  v.bySeq.set(m.seq, prev ? { ...prev, ...m } : { ...m });
  if (m.seq > v.maxSeq) v.maxSeq = m.seq;
  if (m.client_msg_id && m.author === me()) {
    v.seqByCmid.set(m.client_msg_id, m.seq);
    adoptPending(v, m.client_msg_id, m.seq);
  }
  if (m.thread_root != null) {
    let s = v.replies.get(m.thread_root);
    if (!s) v.replies.set(m.thread_root, (s = new Set()));
    s.add(m.seq);
  }
  if (m.channel === S.current) mark('timeline');
  if (S.panel && S.panel.channel === m.channel) mark('panel');
}

/** The element shown for a pending message becomes the element of its seq. */
function adoptPending(v, cmid, seq) {
  for (const cache of [v.els, v.panelEls]) {
    const el = cache.get(`p:${cmid}`);
    if (el) {
      cache.delete(`p:${cmid}`);
      if (!cache.has(`s:${seq}`)) cache.set(`s:${seq}`, el);
    }
  }
}

function messageState(m) {
  if (m.client_msg_id && m.author === me()) {
    const e = S.conn && S.conn.pendingEntry(m.client_msg_id);
    if (e) return e.state;
  }
  return 'sent';
}

function replyCount(v, m) {
  const s = v.replies.get(m.seq);
  return Math.max(m.reply_count || 0, s ? s.size : 0);
}

/** Pending (not yet sequenced) messages of a channel, optionally of one thread. */
function pendingFor(name, threadRoot) {
  if (!S.conn) return [];
  const v = viewFor(name);
  return S.conn.outbox.filter(
    (e) => e.channel === name && (e.thread_root ?? null) === threadRoot && !v.seqByCmid.has(e.client_msg_id),
  );
}

function pendingAsMessage(e) {
  return {
    channel: e.channel,
    seq: null,
    author: me(),
    body: e.body,
    ts_ms: e.created,
    client_msg_id: e.client_msg_id,
    thread_root: e.thread_root ?? null,
    reactions: {},
  };
}

/**
 * Returns the (cached) element for a message, re-rendered only when something visible changed.
 * `ctx`: 'main' (timeline) or 'thread' (side panel).
 */
function messageEl(v, cache, key, m, { grouped = false, ctx = 'main' } = {}) {
  let el = cache.get(key);
  if (!el) {
    el = createMessageEl();
    cache.set(key, el);
  }
  const entry = m.client_msg_id ? S.conn.pendingEntry(m.client_msg_id) : null;
  const state = m.seq == null ? (entry || { state: 'pending' }).state : messageState(m);
  const editing = !!(S.editing && S.editing.channel === m.channel && S.editing.seq === m.seq && m.seq != null);
  const rc = ctx === 'main' && m.seq != null ? replyCount(v, m) : 0;
  const sig = JSON.stringify([
    m.seq, m.body, m.deleted, m.edited_at_ms, m.pinned, m.reactions, m.ts_ms, state, entry && entry.error,
    grouped, editing, rc, ctx, displayName(m.author), me(), isAdmin(), memberOf(m.channel), m.attachments,
    state === 'pending' && S.conn.connected,
  ]);
  if (el._sig === sig) return el;
  el._sig = sig;
  const p = el._parts;

  el.className = ['message', grouped && 'grouped', m.deleted && 'deleted', m.pinned && 'pinned', mentionsMe(m) && 'mentions-me', state !== 'sent' && `is-${state}`]
    .filter(Boolean)
    .join(' ');
  el.dataset.channel = m.channel;
  if (m.seq != null) el.dataset.seq = String(m.seq);
  else delete el.dataset.seq;
  el.dataset.state = state;
  if (m.client_msg_id) el.dataset.clientMsgId = m.client_msg_id;
  el.dataset.author = m.author;

  // Children keep their identity across updates (only their content changes), so references
  // held by scripts and WebDriver stay valid.
  const gutterKey = grouped ? `t:${m.ts_ms}` : `a:${m.author}:${displayName(m.author)}`;
  if (p.gutter._key !== gutterKey) {
    p.gutter._key = gutterKey;
    p.gutter.replaceChildren(
      grouped
        ? h('time', { class: 'gutter-time', text: fmtTime(m.ts_ms), title: fmtFull(m.ts_ms) })
        : avatar(m.author, displayName(m.author)),
    );
  }

  p.meta.hidden = grouped;
  if (!grouped) {
    p.author.textContent = displayName(m.author);
    p.username.textContent = displayName(m.author) !== m.author ? `@${m.author}` : '';
    p.username.hidden = displayName(m.author) === m.author;
    p.time.textContent = fmtTime(m.ts_ms);
    p.time.title = fmtFull(m.ts_ms);
    p.time.dateTime = new Date(m.ts_ms).toISOString();
  }
  p.pin.hidden = !(m.pinned && !m.deleted);

  p.bodyRow.hidden = editing;
  const bodyKey = m.deleted ? '\u0000deleted' : m.body || '';
  if (p.body._key !== bodyKey) {
    p.body._key = bodyKey;
    p.body.className = m.deleted ? 'body tombstone' : 'body';
    if (m.deleted) p.body.textContent = 'message deleted';
    else p.body.replaceChildren(renderBody(m.body || '', me()));
  }
  p.edited.hidden = !(m.edited_at_ms && !m.deleted);
  updateAttachments(p.files, m);
  if (m.edited_at_ms) p.edited.title = fmtFull(m.edited_at_ms);

  if (editing) p.edit.replaceChildren(editBox(m));
  else p.edit.replaceChildren();
  p.edit.hidden = !editing;

  const reactions = !m.deleted && m.reactions ? Object.entries(m.reactions).filter(([, users]) => users && users.length) : [];
  p.reactions.hidden = !reactions.length;
  p.reactions.replaceChildren(
    ...reactions.map(([emoji, users]) => {
      const mine = users.includes(me());
      return h(
        'button',
        {
          type: 'button',
          class: mine ? 'reaction mine' : 'reaction',
          dataset: { emoji },
          'aria-pressed': mine ? 'true' : 'false',
          title: users.map(displayName).join(', '),
          on: { click: () => toggleReaction(m, emoji) },
        },
        h('span', { class: 'reaction-emoji', text: emoji }),
        h('span', { class: 'reaction-count', text: String(users.length) }),
      );
    }),
  );
  if (reactions.length && memberOf(m.channel)) {
    p.reactions.appendChild(iconButton('smile', 'Add reaction', (e) => openEmojiPicker(e.currentTarget, m), { class: 'reaction add-reaction', size: 14 }));
  }

  p.thread.hidden = rc === 0;
  if (rc > 0) {
    p.thread.replaceChildren(icon('message', 14), `${rc} ${rc === 1 ? 'reply' : 'replies'}`);
    p.thread.onclick = () => openThread(m.channel, m.seq);
  }

  p.status.hidden = state === 'sent';
  p.status.className = state === 'failed' ? 'send-status failed' : 'send-status';
  if (state === 'pending') {
    p.status.removeAttribute('role');
    p.status.textContent = S.conn.connected ? 'Sending…' : 'Sending… (waiting for connection)';
  } else if (state === 'failed') {
    p.status.setAttribute('role', 'alert');
    p.status.replaceChildren(
      `Not sent: ${entry && entry.error ? entry.error.message || entry.error.code : 'refused'}. `,
      h('button', { type: 'button', class: 'link-btn retry', text: 'Retry', on: { click: () => retryPending(m) } }),
      ' · ',
      h('button', { type: 'button', class: 'link-btn discard', text: 'Discard', on: { click: () => discardPending(m) } }),
    );
  }

  const showActions = m.seq != null && !m.deleted && !editing;
  p.actions.hidden = !showActions;
  p.actions.replaceChildren(...(showActions ? messageActions(m, ctx) : []));
  return el;
}

/** The fixed skeleton of a message element; `messageEl` fills it. */
function createMessageEl() {
  const p = {};
  p.gutter = h('div', { class: 'gutter' });
  p.author = h('span', { class: 'author' });
  p.username = h('span', { class: 'username' });
  p.time = h('time', { class: 'time' });
  p.meta = h('div', { class: 'meta' }, p.author, p.username, p.time);
  p.pin = h('div', { class: 'pin-label' }, icon('pin', 12), 'Pinned');
  p.body = h('div', { class: 'body' });
  p.edited = h('span', { class: 'edited', text: ' (edited)' });
  p.bodyRow = h('div', { class: 'body-row' }, p.body, p.edited);
  p.files = h('div', { class: 'attachments', hidden: true });
  p.edit = h('div', { class: 'edit-slot' });
  p.reactions = h('div', { class: 'reactions' });
  p.thread = h('button', { type: 'button', class: 'thread-link' });
  p.status = h('div', { class: 'send-status' });
  p.content = h('div', { class: 'content' }, p.meta, p.pin, p.bodyRow, p.files, p.edit, p.reactions, p.thread, p.status);
  p.actions = h('div', { class: 'actions', role: 'toolbar', 'aria-label': 'Message actions' });
  const el = h('div', { class: 'message', role: 'article' }, p.gutter, p.content, p.actions);
  el._parts = p;
  return el;
}

function mentionsMe(m) {
  if (!m || m.author === me() || m.deleted) return false;
  if (m.channel_mention) return true;
  return Array.isArray(m.mentions) && (m.mentions.includes(me()) || m.mentions.includes('channel') || m.mentions.includes('here'));
}

function memberOf(name) {
  const c = S.channels.get(name);
  return !!(c && c.member);
}

function messageActions(m, ctx) {
  const own = m.author === me();
  const member = memberOf(m.channel);
  const out = [];
  if (member) out.push(iconButton('smile', 'Add reaction', (e) => openEmojiPicker(e.currentTarget, m), { class: 'act-react' }));
  if (member && ctx === 'main' && m.thread_root == null) out.push(iconButton('reply', 'Reply in thread', () => openThread(m.channel, m.seq), { class: 'act-reply' }));
  if (own) out.push(iconButton('edit', 'Edit', () => startEdit(m), { class: 'act-edit' }));
  if (member) out.push(iconButton('pin', m.pinned ? 'Unpin' : 'Pin', () => togglePin(m), { class: 'act-pin' }));
  if (own || isAdmin()) out.push(iconButton('trash', 'Delete', () => deleteMessage(m), { class: 'act-delete danger' }));
  return out;
}

function retryPending(m) {
  S.conn.retry(m.client_msg_id);
  mark('timeline', 'panel', 'status');
}

function discardPending(m) {
  S.conn.discard(m.client_msg_id);
  const v = viewFor(m.channel);
  v.els.delete(`p:${m.client_msg_id}`);
  v.panelEls.delete(`p:${m.client_msg_id}`);
  mark('timeline', 'panel', 'status');
}

// ---- timeline ----------------------------------------------------------------------------------

const timeline = () => $('timeline');

function isAtBottom(el = timeline()) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 48;
}

function scrollToBottom() {
  const el = timeline();
  el.scrollTop = el.scrollHeight;
  hideNewPill();
}

function renderTimeline() {
  const name = S.current;
  const list = $('messages');
  const top = $('timeline-top');
  if (!name) {
    reconcile(list, [emptyState()]);
    top.replaceChildren();
    return;
  }
  const v = viewFor(name);
  const tl = timeline();
  const atBottom = isAtBottom(tl);
  const fromBottom = tl.scrollHeight - tl.scrollTop;

  const nodes = [];
  const seqs = [...v.bySeq.keys()].filter((s) => v.bySeq.get(s).thread_root == null && (v.oldest === null || s >= v.oldest)).sort((a, b) => a - b);
  let prev = null;
  let lastDay = null;
  let dividerPlaced = false;
  const items = seqs.map((s) => v.bySeq.get(s));
  for (const p of pendingFor(name, null)) items.push(pendingAsMessage(p));
  for (const m of items) {
    const day = dayKey(m.ts_ms);
    if (day !== lastDay) {
      nodes.push(daySeparator(v, day, m.ts_ms));
      lastDay = day;
      prev = null;
    }
    if (!dividerPlaced && v.newMarker !== null && m.seq != null && m.seq > v.newMarker && m.author !== me()) {
      nodes.push(newDivider(v));
      dividerPlaced = true;
      prev = null;
    }
    const grouped = !!(prev && prev.author === m.author && !prev.deleted && !m.deleted && m.ts_ms - prev.ts_ms < GROUP_WINDOW_MS && replyCount(v, prev) === 0);
    const key = m.seq != null ? `s:${m.seq}` : `p:${m.client_msg_id}`;
    nodes.push(messageEl(v, v.els, key, m, { grouped, ctx: 'main' }));
    prev = m;
  }
  if (!items.length && v.loaded) nodes.push(h('div', { class: 'timeline-empty', text: 'No messages yet. Say hello!' }));
  reconcile(list, nodes);

  // Top of the timeline: loading, error, or the beginning of the channel.
  if (v.error) {
    top.replaceChildren(
      h('div', { class: 'timeline-note error', role: 'alert' }, errorText(v.error), ' ', h('button', { type: 'button', class: 'link-btn', text: 'Retry', on: { click: () => retryLoad(name) } })),
    );
  } else if (v.loading) {
    top.replaceChildren(h('div', { class: 'timeline-note', text: 'Loading…' }));
  } else if (v.loaded && !v.hasMore) {
    const c = S.channels.get(name);
    top.replaceChildren(
      h(
        'div',
        { class: 'channel-intro' },
        h('h3', { text: isDm(c) ? channelLabel(c) : `Welcome to #${name}` }),
        h('p', { text: isDm(c) ? 'This is the beginning of your direct message history.' : `This is the very beginning of #${name}.${c && c.topic ? ` Topic: ${c.topic}` : ''}` }),
      ),
    );
  } else {
    top.replaceChildren();
  }

  if (v.stickBottom || atBottom) {
    v.stickBottom = false;
    tl.scrollTop = tl.scrollHeight;
  } else if (v.preserve) {
    tl.scrollTop = tl.scrollHeight - fromBottom;
  }
  v.preserve = false;
  // Not enough messages to scroll: fetch older ones right away.
  if (v.loaded && v.hasMore && !v.loading && !v.error && tl.scrollHeight <= tl.clientHeight + 200) loadOlder(name);
  scheduleMarkRead();
}

function daySeparator(v, day, ts) {
  let el = v.seps.get(day);
  const label = fmtDay(ts);
  if (!el) {
    el = h('div', { class: 'day-sep', role: 'separator' }, h('span', { text: label }));
    v.seps.set(day, el);
  } else if (el.textContent !== label) {
    el.firstChild.textContent = label;
  }
  return el;
}

function newDivider(v) {
  if (!v.newEl) v.newEl = h('div', { class: 'new-sep', role: 'separator' }, h('span', { text: 'New' }));
  return v.newEl;
}

function emptyState() {
  if (!S.emptyEl) {
    S.emptyEl = h(
      'div',
      { class: 'empty-state' },
      h('h3', { text: 'No channel selected' }),
      h('p', { text: 'Pick a channel on the left, or browse the channels of this workspace.' }),
      h('button', { type: 'button', class: 'btn primary', text: 'Browse channels', on: { click: () => dialogs.browseChannels(ctx) } }),
    );
  }
  return S.emptyEl;
}

function showNewPill() {
  $('new-pill').hidden = false;
}

function hideNewPill() {
  $('new-pill').hidden = true;
}

function onTimelineScroll() {
  const name = S.current;
  if (!name) return;
  const tl = timeline();
  if (tl.scrollTop < 300) loadOlder(name);
  if (isAtBottom(tl)) hideNewPill();
  scheduleMarkRead();
}

/** Retries a failed history load (after an error, or once the connection is back). */
function retryLoad(name) {
  const v = viewFor(name);
  if (v.loading) return;
  v.error = null;
  if (v.loaded) loadOlder(name);
  else loadLatest(name);
}

/** The newest page of a channel (`before` = newest). */
async function loadLatest(name) {
  const v = viewFor(name);
  if (v.loading) return;
  v.loading = true;
  v.error = null;
  mark('timeline');
  try {
    const res = await fetchPage(name, null);
    const msgs = res.messages || [];
    v.loaded = true;
    v.oldest = msgs.length ? msgs[0].seq : null;
    v.hasMore = typeof res.has_more === 'boolean' ? res.has_more : msgs.length >= PAGE;
    if (!msgs.length) v.hasMore = false;
    // Events that arrived before the page may reach below it: keep the window contiguous.
    if (v.oldest !== null) {
      for (const s of [...v.bySeq.keys()]) if (s < v.oldest && v.bySeq.get(s).thread_root == null) v.bySeq.delete(s);
    } else {
      const seqs = [...v.bySeq.keys()];
      v.oldest = seqs.length ? Math.min(...seqs) : null;
    }
    for (const m of msgs) upsertMessage({ ...m, channel: m.channel || name });
    const c = S.channels.get(name);
    if (c && Number.isFinite(res.last_seq)) c.last_seq = Math.max(c.last_seq || 0, res.last_seq);
    if (Number.isFinite(res.last_ev)) S.conn.initCursor(name, res.last_ev);
    v.stickBottom = true;
  } catch (e) {
    v.error = e;
  } finally {
    v.loading = false;
    mark('timeline');
  }
}

async function loadOlder(name) {
  const v = viewFor(name);
  if (!v.loaded || !v.hasMore || v.loading || v.error || v.oldest === null) return;
  v.loading = true;
  mark('timeline');
  try {
    const res = await fetchPage(name, v.oldest);
    const msgs = res.messages || [];
    if (msgs.length) v.oldest = Math.min(v.oldest, msgs[0].seq);
    v.hasMore = typeof res.has_more === 'boolean' ? res.has_more : msgs.length >= PAGE;
    if (!msgs.length) v.hasMore = false;
    for (const m of msgs) upsertMessage({ ...m, channel: m.channel || name });
    v.preserve = true;
  } catch (e) {
    v.error = e;
  } finally {
    v.loading = false;
    mark('timeline');
  }
}

async function fetchPage(name, before) {
  const q = (b) => `${chPath(name)}/messages?before=${b}&limit=${PAGE}`;
  try {
    return await api('GET', q(before ?? NEWEST));
  } catch (e) {
    // A server that refuses a `before` past the end: ask for the channel's last seq instead.
    if (before === null && e instanceof ApiError && e.code === 'invalid_request') {
      const ch = await api('GET', chPath(name));
      return api('GET', q((ch.last_seq || 0) + 1));
    }
    throw e;
  }
}

// ---- read markers ------------------------------------------------------------------------------

let readTimer = null;
function scheduleMarkRead() {
  if (readTimer) return;
  readTimer = setTimeout(() => {
    readTimer = null;
    markCurrentRead();
  }, 250);
}

/** Marks the visible channel read when the page is visible and scrolled to the bottom. */
function markCurrentRead() {
  const name = S.current;
  const c = name && S.channels.get(name);
  if (!c || !c.member || !S.conn) return;
  if (document.visibilityState !== 'visible' || document.body.dataset.view !== 'app') return;
  const v = viewFor(name);
  if (!v.loaded || !isAtBottom()) return;
  const top = Math.max(v.maxSeq, c.last_seq || 0, c.counted || 0);
  if (top > (c.last_read || 0)) {
    S.conn.markRead(name, top);
    c.last_read = top;
  }
  if (c.unread || c.mentions) {
    c.unread = 0;
    c.mentions = 0;
    mark('sidebar');
  }
}

// ---- channel selection -------------------------------------------------------------------------

function channelFromHash() {
  const m = /^#\/c\/(.+)$/.exec(location.hash);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

function ensureCurrent() {
  if (S.current && S.channels.has(S.current)) return;
  const wanted = channelFromHash() || loadStored(S.workspace).lastChannel;
  const members = [...S.channels.values()].filter((c) => c.member && !c.archived).sort((a, b) => a.name.localeCompare(b.name));
  let pick = wanted && S.channels.has(wanted) ? wanted : null;
  if (!pick && S.channels.has('general') && S.channels.get('general').member) pick = 'general';
  if (!pick && members.length) pick = members[0].name;
  if (pick) openChannel(pick, { fromUser: false });
  else {
    document.body.dataset.pane = 'list';
    mark('timeline', 'header', 'composer');
  }
}

function openChannel(name, { fromUser = true } = {}) {
  const c = S.channels.get(name);
  if (!c) return;
  const prevName = S.current;
  if (prevName && prevName !== name) {
    S.drafts.set(prevName, $('composer').value);
    const pc = S.channels.get(prevName);
    // Viewing a public channel without being a member subscribes it only while it is shown.
    if (pc && !pc.member) S.conn.unsubscribe(prevName);
  }
  S.current = name;
  S.editing = null;
  if (location.hash !== `#/c/${encodeURIComponent(name)}`) history.replaceState(null, '', `#/c/${encodeURIComponent(name)}`);
  store(S.workspace, { lastChannel: name });
  const v = viewFor(name);
  v.newMarker = c.unread > 0 ? c.last_read || 0 : null;
  v.stickBottom = true;
  if (!S.conn.wanted.has(name)) {
    S.conn.initCursor(name, c.last_ev);
    S.conn.subscribe(name);
  }
  if (!v.loaded) loadLatest(name);
  $('composer').value = S.drafts.get(name) || '';
  autoGrow($('composer'));
  hideNewPill();
  if (S.panel && S.panel.channel !== name) closePanel();
  if (fromUser) {
    document.body.dataset.pane = 'chat';
    if (window.matchMedia('(min-width: 769px)').matches) $('composer').focus();
  }
  for (const el of v.els.values()) el._sig = null; // group/ctx may render differently
  mark('sidebar', 'header', 'timeline', 'composer', 'typing', 'panel');
}

// ---- sidebar -----------------------------------------------------------------------------------

const navEls = new Map();

function renderSidebar() {
  const all = [...S.channels.values()].filter((c) => c.member);
  const chans = all.filter((c) => !isDm(c)).sort((a, b) => Number(!!a.archived) - Number(!!b.archived) || a.name.localeCompare(b.name));
  const dms = all.filter(isDm).sort((a, b) => channelLabel(a).localeCompare(channelLabel(b)));
  reconcile($('channel-list'), chans.map(navItem));
  reconcile($('dm-list'), dms.length ? dms.map(navItem) : [emptyDmNote()]);
  $('admin-entry').hidden = !isAdmin();
  const meEl = $('me-name');
  meEl.textContent = S.me ? displayName(me()) || me() : '';
  $('me-username').textContent = S.me ? `@${me()}` : '';
  const av = $('me-avatar');
  const avKey = S.me ? `${me()}:${displayName(me())}` : '';
  if (S.me && av.dataset.key !== avKey) {
    av.replaceChildren(avatar(me(), displayName(me()), 32));
    av.dataset.key = avKey;
  }
  // Title and app badge: what asks for attention, muted channels left out (notify.js).
  const attention = notify.updateAttention(all);
  const unread = all.some((c) => c.unread > 0 && !c.muted);
  $('drawer-badge').hidden = !(attention || unread);
  $('drawer-badge').textContent = attention ? String(attention) : '';
}

let dmNote = null;
function emptyDmNote() {
  if (!dmNote) dmNote = h('li', { class: 'nav-note', text: 'No conversations yet' });
  return dmNote;
}

function navItem(c) {
  let li = navEls.get(c.name);
  if (!li) {
    const btn = h('button', { type: 'button', class: 'nav-item', dataset: { channel: c.name }, on: { click: () => openChannel(c.name) } });
    li = h('li', {}, btn);
    navEls.set(c.name, li);
  }
  const btn = li.firstChild;
  const label = channelLabel(c);
  const unread = c.unread || 0;
  const mentions = c.mentions || 0;
  const sig = JSON.stringify([label, unread, mentions, c.kind, c.archived, !!c.muted, S.current === c.name, isDm(c) ? dmOthers(c).map((u) => S.presence.get(u)) : 0]);
  if (btn._sig === sig) return li;
  btn._sig = sig;
  btn.classList.toggle('active', S.current === c.name);
  btn.classList.toggle('unread', unread > 0);
  btn.classList.toggle('archived', !!c.archived);
  btn.classList.toggle('is-muted', !!c.muted);
  if (S.current === c.name) btn.setAttribute('aria-current', 'page');
  else btn.removeAttribute('aria-current');
  btn.dataset.unread = String(unread);
  btn.dataset.mentions = String(mentions);
  let lead;
  if (isDm(c)) {
    const others = dmOthers(c);
    lead = others.length === 1 ? presenceDot(others[0]) : h('span', { class: 'group-count', text: String(others.length + 1) });
  } else {
    lead = icon(c.kind === 'private' ? 'lock' : 'hash', 16);
  }
  const badge = mentions > 0 ? h('span', { class: 'badge badge-mention', text: String(mentions), title: `${mentions} mention${mentions === 1 ? '' : 's'}` }) : unread > 0 ? h('span', { class: 'badge', text: String(unread), title: `${unread} unread` }) : null;
  const mutedMark = c.muted ? h('span', { class: 'nav-muted', title: 'Muted' }, icon('bellOff', 14), h('span', { class: 'visually-hidden', text: '(muted)' })) : null;
  btn.replaceChildren(...[h('span', { class: 'nav-lead' }, lead), h('span', { class: 'nav-label', text: label }), mutedMark, badge].filter(Boolean));
  btn.title = (isDm(c) ? label : `#${c.name}${c.archived ? ' (archived)' : ''}`) + (c.muted ? ' (muted)' : '');
  return li;
}

function presenceDot(username) {
  const status = S.presence.get(username) || 'offline';
  return h('span', { class: `presence ${status}`, dataset: { presenceUser: username }, title: status, 'aria-label': status });
}

function renderPresenceDots() {
  for (const el of document.querySelectorAll('[data-presence-user]')) {
    const status = S.presence.get(el.dataset.presenceUser) || 'offline';
    el.className = `presence ${status}`;
    el.title = status;
    el.setAttribute('aria-label', status);
  }
}

// ---- header, typing, composer, status ----------------------------------------------------------

function renderHeader() {
  const c = S.current && S.channels.get(S.current);
  const title = $('chat-title');
  const topic = $('chat-topic');
  const lead = $('chat-lead');
  if (!c) {
    title.textContent = S.synced ? 'Conclave' : 'Loading…';
    topic.textContent = '';
    lead.replaceChildren();
    $('chat-actions').hidden = true;
    return;
  }
  $('chat-actions').hidden = false;
  title.textContent = channelLabel(c);
  topic.textContent = c.archived ? `Archived${c.topic ? ` · ${c.topic}` : ''}` : c.topic || (isDm(c) ? 'Direct message' : '');
  if (isDm(c)) {
    const others = dmOthers(c);
    lead.replaceChildren(others.length === 1 ? presenceDot(others[0]) : icon('users', 18));
  } else {
    lead.replaceChildren(icon(c.kind === 'private' ? 'lock' : 'hash', 18));
  }
  $('members-count').textContent = String((c.members || []).length);
  notify.renderMuteButton(c);
}

function renderTyping() {
  const now = Date.now();
  const fmt = (channel) => {
    const t = S.typing.get(channel);
    if (!t) return '';
    const names = [];
    for (const [u, exp] of t) {
      if (exp > now) names.push(displayName(u));
      else t.delete(u);
    }
    if (!names.length) return '';
    if (names.length === 1) return `${names[0]} is typing…`;
    if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
    return 'Several people are typing…';
  };
  $('typing').textContent = S.current ? fmt(S.current) : '';
  const tt = $('thread-typing');
  if (tt) tt.textContent = S.panel && S.panel.kind === 'thread' ? fmt(S.panel.channel) : '';
}

function renderComposer() {
  const c = S.current && S.channels.get(S.current);
  const form = $('composer-form');
  const join = $('join-bar');
  const ta = $('composer');
  if (!c) {
    form.hidden = true;
    join.hidden = true;
    return;
  }
  if (!c.member) {
    form.hidden = true;
    join.hidden = false;
    $('join-text').textContent = c.kind === 'public' ? `You are viewing #${c.name}.` : 'You are not a member of this channel.';
    $('btn-join').hidden = c.kind !== 'public';
    return;
  }
  join.hidden = true;
  form.hidden = false;
  ta.disabled = !!c.archived;
  $('composer-send').disabled = !!c.archived;
  syncTray();
  ta.placeholder = c.archived ? 'This channel is archived' : isDm(c) ? `Message ${channelLabel(c)}` : `Message #${c.name}`;
}

function renderStatus() {
  const el = $('conn-status');
  const conn = S.conn;
  const st = conn ? conn.state : 'offline';
  const state = st === 'connected' ? 'connected' : st === 'offline' || st === 'stopped' ? 'offline' : 'reconnecting';
  el.dataset.state = state;
  const pending = conn ? conn.outbox.filter((e) => e.state === 'pending').length : 0;
  let text;
  if (state === 'connected') {
    el.dataset.nodeId = String(conn.node.id ?? '');
    text = `Connected to node ${conn.node.id ?? '?'} (${conn.node.addr})`;
  } else {
    delete el.dataset.nodeId;
    text = st === 'connecting' ? 'Connecting…' : state === 'reconnecting' ? 'Reconnecting…' : 'Offline — retrying';
  }
  $('conn-text').textContent = text;
  el.title = text;
  const banner = $('conn-banner');
  if (state === 'connected' || st === 'connecting') {
    banner.hidden = true;
  } else {
    banner.hidden = false;
    banner.dataset.state = state;
    banner.textContent =
      (state === 'offline' ? 'You are offline. ' : 'Connection lost. Reconnecting… ') +
      (pending ? `${pending} message${pending === 1 ? '' : 's'} will be sent when the connection is back.` : 'Messages you send will be delivered when the connection is back.');
  }
}

/** `body[data-ready]`: "1" once authenticated and the current channel is subscribed. */
function updateReady() {
  const conn = S.conn;
  const ready = !!(conn && conn.connected && S.synced && (!S.current || conn.isSubscribed(S.current)));
  const v = ready ? '1' : '0';
  if (document.body.dataset.ready !== v) document.body.dataset.ready = v;
}

function autoGrow(ta) {
  ta.style.height = 'auto';
  ta.style.height = `${Math.min(ta.scrollHeight, Math.round(window.innerHeight * 0.4))}px`;
}

/** Sends `body` to the current channel (or a thread); queued while offline. */
function submitMessage(ta, threadRoot = null, channel = S.current) {
  const body = ta.value;
  const withFiles = !!channel && stagedCount(channel, threadRoot) > 0;
  if (!channel || (!body.trim() && !withFiles)) return;
  if (utf8Length(body) > MAX_BODY_BYTES) {
    toast(`Message too long (${utf8Length(body)} bytes; the limit is ${MAX_BODY_BYTES}).`, 'error');
    return;
  }
  if (withFiles) {
    // Staged files go as file messages (files.js), replies when sent from a thread; the text
    // is the first one's caption.
    sendStaged(channel, body.trim() ? body : '', threadRoot);
    ta.value = '';
    autoGrow(ta);
    if (threadRoot === null) {
      S.drafts.delete(channel);
      viewFor(channel).stickBottom = true;
      mark('timeline');
    } else {
      S.panel.stickBottom = true;
      mark('panel');
    }
    return;
  }
  S.conn.send(channel, body, threadRoot);
  ta.value = '';
  autoGrow(ta);
  if (threadRoot === null) {
    S.drafts.delete(channel);
    viewFor(channel).stickBottom = true;
    viewFor(channel).newMarker = null;
  } else {
    S.panel.stickBottom = true;
  }
  mark('timeline', 'panel', 'status');
}

function onComposerKey(e, threadRoot) {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    submitMessage(e.currentTarget, threadRoot, threadRoot === null ? S.current : S.panel.channel);
    return;
  }
  if (e.key === 'ArrowUp' && !e.currentTarget.value && threadRoot === null) {
    // Edit my last message.
    const v = S.current && viewFor(S.current);
    if (!v) return;
    const mine = [...v.bySeq.values()].filter((m) => m.author === me() && !m.deleted && m.thread_root == null).sort((a, b) => b.seq - a.seq)[0];
    if (mine) {
      e.preventDefault();
      startEdit(mine);
    }
  }
}

function onComposerInput(e, channel) {
  autoGrow(e.currentTarget);
  const now = Date.now();
  if (e.currentTarget.value && now - S.lastTypingSent > TYPING_SEND_EVERY_MS) {
    S.lastTypingSent = now;
    S.conn.typing(channel);
  }
}

// ---- message actions ---------------------------------------------------------------------------

function startEdit(m) {
  S.editing = { channel: m.channel, seq: m.seq };
  mark('timeline', 'panel');
  setTimeout(() => {
    const ta = document.querySelector('.edit-box textarea');
    if (ta) {
      ta.focus();
      ta.setSelectionRange(ta.value.length, ta.value.length);
    }
  }, 20);
}

function editBox(m) {
  const ta = h('textarea', { class: 'edit-input', value: m.body || '', rows: 2, 'aria-label': 'Edit message' });
  const save = async () => {
    const body = ta.value;
    if (!body.trim()) return;
    if (body === m.body) {
      cancel();
      return;
    }
    try {
      const res = await api('PATCH', `${chPath(m.channel)}/messages/${m.seq}`, { body });
      S.editing = null;
      upsertMessage(res);
    } catch (e) {
      toast(`Could not edit: ${errorText(e)}`, 'error');
    }
    mark('timeline', 'panel');
  };
  const cancel = () => {
    S.editing = null;
    mark('timeline', 'panel');
  };
  ta.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      save();
    } else if (e.key === 'Escape') {
      e.preventDefault();
      cancel();
    }
  });
  ta.addEventListener('input', () => autoGrow(ta));
  return h(
    'div',
    { class: 'edit-box' },
    ta,
    h(
      'div',
      { class: 'edit-actions' },
      h('span', { class: 'edit-hint', text: 'Enter to save · Esc to cancel' }),
      h('button', { type: 'button', class: 'btn small', text: 'Cancel', on: { click: cancel } }),
      h('button', { type: 'button', class: 'btn small primary', text: 'Save', on: { click: save } }),
    ),
  );
}

async function deleteMessage(m) {
  const ok = await confirmDialog('Delete message', 'Delete this message for everyone? This cannot be undone.', 'Delete', true);
  if (!ok) return;
  try {
    upsertMessage(await api('DELETE', `${chPath(m.channel)}/messages/${m.seq}`));
  } catch (e) {
    toast(`Could not delete: ${errorText(e)}`, 'error');
  }
}

async function togglePin(m) {
  try {
    upsertMessage(await api(m.pinned ? 'DELETE' : 'PUT', `${chPath(m.channel)}/messages/${m.seq}/pin`));
    if (S.panel && S.panel.kind === 'pins') loadPins(m.channel);
  } catch (e) {
    toast(`Could not ${m.pinned ? 'unpin' : 'pin'}: ${errorText(e)}`, 'error');
  }
}

async function toggleReaction(m, emoji) {
  const cur = viewFor(m.channel).bySeq.get(m.seq) || m;
  const mine = ((cur.reactions || {})[emoji] || []).includes(me());
  try {
    upsertMessage(await api(mine ? 'DELETE' : 'PUT', `${chPath(m.channel)}/messages/${m.seq}/reactions/${encodeURIComponent(emoji)}`));
  } catch (e) {
    toast(`Could not react: ${errorText(e)}`, 'error');
  }
}

function openEmojiPicker(anchor, m) {
  closeEmojiPicker();
  const picker = h(
    'div',
    { id: 'emoji-picker', class: 'emoji-picker', role: 'menu', 'aria-label': 'Pick a reaction' },
    EMOJI.map((emoji) =>
      h('button', {
        type: 'button',
        role: 'menuitem',
        class: 'emoji',
        dataset: { emoji },
        text: emoji,
        title: emoji,
        on: {
          click: () => {
            closeEmojiPicker();
            toggleReaction(m, emoji);
          },
        },
      }),
    ),
  );
  document.body.appendChild(picker);
  const r = anchor.getBoundingClientRect();
  const pw = picker.offsetWidth;
  const ph = picker.offsetHeight;
  const left = Math.max(8, Math.min(window.innerWidth - pw - 8, r.right - pw));
  const top = r.top - ph - 6 > 8 ? r.top - ph - 6 : r.bottom + 6;
  picker.style.left = `${left}px`;
  picker.style.top = `${top}px`;
  picker.querySelector('button').focus();
  setTimeout(() => document.addEventListener('pointerdown', outsidePicker, true), 0);
}

function outsidePicker(e) {
  const p = $('emoji-picker');
  if (p && !p.contains(e.target)) closeEmojiPicker();
}

function closeEmojiPicker() {
  const p = $('emoji-picker');
  if (p) p.remove();
  document.removeEventListener('pointerdown', outsidePicker, true);
}

async function joinCurrent() {
  const name = S.current;
  if (!name) return;
  try {
    const ch = await api('POST', `${chPath(name)}/join`);
    const c = upsertChannel({ ...ch, member: true });
    S.conn.initCursor(name, c.last_ev);
    S.conn.subscribe(name);
    mark('sidebar', 'composer', 'header');
  } catch (e) {
    toast(`Could not join: ${errorText(e)}`, 'error');
  }
}

// ---- side panel: thread, members, pins ---------------------------------------------------------

async function openThread(channel, root) {
  S.panel = { kind: 'thread', channel, root, loading: true, error: null, stickBottom: true };
  showPanel();
  try {
    const res = await api('GET', `${chPath(channel)}/threads/${root}`);
    if (res.root) upsertMessage({ ...res.root, channel: res.root.channel || channel });
    for (const r of res.replies || []) upsertMessage({ ...r, channel: r.channel || channel });
  } catch (e) {
    if (S.panel && S.panel.root === root) S.panel.error = e;
  }
  if (S.panel && S.panel.root === root) {
    S.panel.loading = false;
    S.panel.stickBottom = true;
  }
  mark('panel');
  setTimeout(() => {
    const ta = $('thread-composer');
    if (ta && window.matchMedia('(min-width: 769px)').matches) ta.focus();
  }, 30);
}

function openMembers() {
  if (!S.current) return;
  if (S.panel && S.panel.kind === 'members') return closePanel();
  S.panel = { kind: 'members', channel: S.current };
  showPanel();
}

function openPins() {
  if (!S.current) return;
  if (S.panel && S.panel.kind === 'pins') return closePanel();
  S.panel = { kind: 'pins', channel: S.current, pins: null, loading: true };
  showPanel();
  loadPins(S.current);
}

async function loadPins(channel) {
  try {
    const res = await api('GET', `${chPath(channel)}/pins`);
    if (S.panel && S.panel.kind === 'pins' && S.panel.channel === channel) {
      S.panel.pins = res.messages || [];
      S.panel.loading = false;
      S.panel.error = null;
    }
  } catch (e) {
    if (S.panel && S.panel.kind === 'pins') {
      S.panel.error = e;
      S.panel.loading = false;
    }
  }
  mark('panel');
}

function showPanel() {
  $('panel').hidden = false;
  document.body.dataset.panel = S.panel.kind;
  S.panelRendered = null;
  mark('panel', 'typing');
}

function closePanel() {
  S.panel = null;
  S.panelRendered = null;
  $('panel').hidden = true;
  document.body.dataset.panel = '';
  $('panel-body').replaceChildren();
}

function renderPanel() {
  const p = S.panel;
  if (!p) return;
  const body = $('panel-body');
  const title = $('panel-title');
  const c = S.channels.get(p.channel);
  if (p.kind === 'thread') {
    title.textContent = 'Thread';
    $('panel-sub').textContent = c ? (isDm(c) ? channelLabel(c) : `#${c.name}`) : '';
    renderThread(body, p, c);
  } else if (p.kind === 'members') {
    title.textContent = 'Members';
    $('panel-sub').textContent = c ? (isDm(c) ? channelLabel(c) : `#${c.name}`) : '';
    S.panelRendered = null;
    body.replaceChildren(membersView(c));
  } else if (p.kind === 'pins') {
    title.textContent = 'Pinned messages';
    $('panel-sub').textContent = c ? (isDm(c) ? channelLabel(c) : `#${c.name}`) : '';
    S.panelRendered = null;
    body.replaceChildren(pinsView(p));
  }
}

/** The thread panel keeps its scroller and composer across renders (only the list changes). */
function renderThread(body, p, c) {
  const key = `thread:${p.channel}:${p.root}`;
  if (S.panelRendered !== key) {
    S.panelRendered = key;
    const ta = h('textarea', { id: 'thread-composer', rows: 1, placeholder: 'Reply…', 'aria-label': 'Reply in thread' });
    ta.addEventListener('keydown', (e) => onComposerKey(e, p.root));
    ta.addEventListener('input', (e) => onComposerInput(e, p.channel));
    body.replaceChildren(
      h('div', { id: 'thread-scroll', class: 'thread-scroll' }, h('div', { id: 'thread-list', class: 'thread-list' })),
      h('div', { id: 'thread-typing', class: 'typing', 'aria-live': 'polite' }),
      h(
        'form',
        { id: 'thread-form', class: 'composer thread-composer', on: { submit: (e) => (e.preventDefault(), submitMessage(ta, p.root, p.channel)) } },
        ta,
        h('button', { type: 'submit', class: 'send-btn', title: 'Send', 'aria-label': 'Send reply' }, icon('send', 18)),
      ),
    );
    mountComposer('thread');
  }
  const form = $('thread-form');
  const hidden = !(c && c.member && !c.archived);
  if (form.hidden !== hidden) {
    form.hidden = hidden;
    syncTray();
  }
  const scroller = $('thread-scroll');
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
  const v = viewFor(p.channel);
  const nodes = [];
  const root = v.bySeq.get(p.root);
  if (p.error) nodes.push(h('div', { class: 'timeline-note error', text: errorText(p.error) }));
  if (root) {
    nodes.push(messageEl(v, v.panelEls, `s:${root.seq}`, root, { ctx: 'thread' }));
    const n = replyCount(v, root);
    nodes.push(h('div', { class: 'thread-count', text: n ? `${n} ${n === 1 ? 'reply' : 'replies'}` : 'No replies yet' }));
  } else if (p.loading) {
    nodes.push(h('div', { class: 'timeline-note', text: 'Loading…' }));
  }
  const replies = [...(v.replies.get(p.root) || [])].sort((a, b) => a - b).map((s) => v.bySeq.get(s));
  let prev = null;
  for (const m of replies) {
    const grouped = !!(prev && prev.author === m.author && !prev.deleted && m.ts_ms - prev.ts_ms < GROUP_WINDOW_MS);
    nodes.push(messageEl(v, v.panelEls, `s:${m.seq}`, m, { grouped, ctx: 'thread' }));
    prev = m;
  }
  for (const e of pendingFor(p.channel, p.root)) {
    nodes.push(messageEl(v, v.panelEls, `p:${e.client_msg_id}`, pendingAsMessage(e), { ctx: 'thread' }));
  }
  reconcile($('thread-list'), nodes);
  if (p.stickBottom || atBottom) scroller.scrollTop = scroller.scrollHeight;
  p.stickBottom = false;
}

function membersView(c) {
  if (!c) return h('div');
  const members = [...(c.members || [])].sort((a, b) => displayName(a).localeCompare(displayName(b)));
  const list = h(
    'ul',
    { class: 'member-list' },
    members.map((u) =>
      h(
        'li',
        { class: 'member', dataset: { user: u } },
        h('span', { class: 'member-avatar' }, avatar(u, displayName(u), 32), presenceDot(u)),
        h('span', { class: 'member-names' }, h('span', { class: 'member-name', text: displayName(u) + (u === me() ? ' (you)' : '') }), h('span', { class: 'member-username', text: `@${u}` })),
        isAdmin() && u !== me() && !isDm(c)
          ? h('button', {
              type: 'button',
              class: 'btn small',
              text: 'Remove',
              on: {
                click: async () => {
                  if (!(await confirmDialog('Remove member', `Remove @${u} from #${c.name}?`, 'Remove', true))) return;
                  try {
                    upsertChannel(await api('DELETE', `${chPath(c.name)}/members/${encodeURIComponent(u)}`));
                    mark('panel');
                  } catch (e) {
                    toast(errorText(e), 'error');
                  }
                },
              },
            })
          : null,
      ),
    ),
  );
  const parts = [list];
  if (!isDm(c) && c.member && (c.kind === 'private' || isAdmin())) {
    const input = h('input', { type: 'text', id: 'add-member-input', placeholder: 'username', 'aria-label': 'Username to add', list: 'add-member-users', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false' });
    const dl = h(
      'datalist',
      { id: 'add-member-users' },
      [...S.users.values()].filter((u) => !u.disabled && !(c.members || []).includes(u.username)).map((u) => h('option', { value: u.username, text: displayName(u.username) })),
    );
    parts.push(
      h(
        'form',
        {
          class: 'add-member',
          on: {
            submit: async (e) => {
              e.preventDefault();
              const username = input.value.trim().replace(/^@/, '');
              if (!username) return;
              try {
                upsertChannel(await api('POST', `${chPath(c.name)}/members`, { username }));
                input.value = '';
                mark('panel');
              } catch (err) {
                toast(errorText(err), 'error');
              }
            },
          },
        },
        input,
        dl,
        h('button', { type: 'submit', class: 'btn primary small', text: 'Add' }),
      ),
    );
  }
  if (c.member && !isDm(c)) {
    parts.push(
      h(
        'div',
        { class: 'panel-footer' },
        h('button', { type: 'button', class: 'btn', text: 'Channel settings', on: { click: () => dialogs.channelSettings(ctx, c) } }),
        h('button', { type: 'button', class: 'btn danger-outline', text: 'Leave channel', on: { click: () => leaveChannel(c) } }),
      ),
    );
  }
  return h('div', { class: 'members-view' }, parts);
}

function pinsView(p) {
  if (p.loading) return h('div', { class: 'timeline-note', text: 'Loading…' });
  if (p.error) return h('div', { class: 'timeline-note error', text: errorText(p.error) });
  if (!p.pins || !p.pins.length) return h('div', { class: 'timeline-note', text: 'No pinned messages. Pin important messages from their menu.' });
  return h(
    'ul',
    { class: 'pin-list' },
    p.pins.map((m) =>
      h(
        'li',
        { class: 'pin-item' },
        h('div', { class: 'meta' }, h('span', { class: 'author', text: displayName(m.author) }), h('time', { class: 'time', text: `${fmtDay(m.ts_ms)} ${fmtTime(m.ts_ms)}` })),
        h('div', { class: 'body' }, renderBody(m.body || '', me())),
        memberOf(p.channel) ? h('button', { type: 'button', class: 'link-btn', text: 'Unpin', on: { click: () => togglePin({ ...m, channel: m.channel || p.channel, pinned: true }) } }) : null,
      ),
    ),
  );
}

async function leaveChannel(c) {
  if (!(await confirmDialog('Leave channel', `Leave #${c.name}?${c.kind === 'private' ? ' You will need an invitation to come back.' : ''}`, 'Leave', true))) return;
  try {
    await api('POST', `${chPath(c.name)}/leave`);
    closePanel();
    removeMembership(c.name);
  } catch (e) {
    toast(errorText(e), 'error');
  }
}

// ---- context for dialogs.js --------------------------------------------------------------------

const ctx = {
  api,
  errorText,
  get me() {
    return S.me;
  },
  get users() {
    return S.users;
  },
  get channels() {
    return S.channels;
  },
  displayName,
  isAdmin,
  isDm,
  channelLabel,
  presenceDot,
  /** A channel was created, joined or opened from a dialog: track it and show it. */
  adoptChannel(ch) {
    const c = upsertChannel({ ...ch, member: ch.member ?? true });
    if (c.member) {
      S.conn.initCursor(c.name, c.last_ev);
      S.conn.subscribe(c.name);
    }
    openChannel(c.name);
  },
  openChannel,
  setUser(u) {
    S.users.set(u.username, { ...(S.users.get(u.username) || {}), ...u });
    if (u.username === me()) S.me = { ...S.me, ...u };
    for (const v of S.views.values()) for (const el of v.els.values()) el._sig = null;
    mark('sidebar', 'header', 'timeline');
  },
  async reloadUsers() {
    const res = await api('GET', '/api/v1/users');
    for (const u of res.users || []) S.users.set(u.username, u);
    return res.users || [];
  },
  logout,
};

/** What notify.js reads and calls. */
const notifyCtx = {
  api,
  errorText,
  me,
  current: () => S.current,
  channel: (name) => S.channels.get(name),
  displayName,
  isDm,
  channelLabel,
  openChannel: (name) => {
    if (S.channels.has(name)) openChannel(name);
  },
  setMuted(name, muted) {
    if (S.channels.has(name)) upsertChannel({ name, muted });
  },
};

// ---- static wiring -----------------------------------------------------------------------------

function wireStaticUi() {
  $('login-form').addEventListener('submit', onLoginSubmit);
  // search.js: the header's search box and the jump to a result.
  initSearch({ api, channels: () => S.channels, label: channelLabel, displayName, openChannel, viewFor, loadOlder });
  $('login-workspace').placeholder = location.host;

  const ta = $('composer');
  ta.addEventListener('keydown', (e) => onComposerKey(e, null));
  ta.addEventListener('input', (e) => onComposerInput(e, S.current));
  $('composer-form').addEventListener('submit', (e) => {
    e.preventDefault();
    submitMessage(ta, null, S.current);
    ta.focus();
  });
  $('btn-join').addEventListener('click', joinCurrent);
  initFiles({
    cluster: () => S.cluster,
    channel: () => S.current,
    thread: () => (S.panel && S.panel.kind === 'thread' ? { channel: S.panel.channel, threadRoot: S.panel.root } : null),
    upsertMessage,
    errorText,
  });

  timeline().addEventListener('scroll', onTimelineScroll, { passive: true });
  $('new-pill').addEventListener('click', scrollToBottom);

  // Dialogs opened from the sidebar close the phone drawer behind them.
  const fromSidebar = (open) => () => {
    document.body.dataset.pane = 'chat';
    open(ctx);
  };
  $('btn-browse').addEventListener('click', fromSidebar(dialogs.browseChannels));
  $('btn-browse-more').addEventListener('click', fromSidebar(dialogs.browseChannels));
  $('btn-new-channel').addEventListener('click', fromSidebar(dialogs.createChannel));
  $('btn-new-dm').addEventListener('click', fromSidebar(dialogs.newDm));
  $('btn-settings').addEventListener('click', fromSidebar(dialogs.settings));
  $('me-button').addEventListener('click', fromSidebar(dialogs.settings));
  $('btn-admin').addEventListener('click', fromSidebar(dialogs.admin));
  $('btn-members').addEventListener('click', openMembers);
  $('btn-pins').addEventListener('click', openPins);
  $('btn-channel-info').addEventListener('click', () => {
    const c = S.current && S.channels.get(S.current);
    if (c && !isDm(c)) dialogs.channelSettings(ctx, c);
    else openMembers();
  });
  $('panel-close').addEventListener('click', closePanel);
  $('btn-drawer').addEventListener('click', () => {
    document.body.dataset.pane = 'list';
  });
  $('drawer-scrim').addEventListener('click', () => {
    document.body.dataset.pane = 'chat';
  });

  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    if ($('emoji-picker')) closeEmojiPicker();
    else if (S.editing) {
      S.editing = null;
      mark('timeline', 'panel');
    } else if (S.panel && !$('dialog').open) closePanel();
  });
  // Touch devices: tapping a message shows its action bar.
  $('messages').addEventListener('click', (e) => {
    const msg = e.target.closest('.message');
    if (!msg || e.target.closest('button, a, textarea')) return;
    for (const other of document.querySelectorAll('.message.show-actions')) if (other !== msg) other.classList.remove('show-actions');
    msg.classList.toggle('show-actions');
  });

  window.addEventListener('hashchange', () => {
    const name = channelFromHash();
    if (name && name !== S.current && S.channels.has(name)) openChannel(name);
  });
  document.addEventListener('visibilitychange', () => {
    if (!S.conn) return;
    S.conn.presence(document.visibilityState === 'visible' ? 'online' : 'away');
    if (document.visibilityState === 'visible') {
      scheduleMarkRead();
      S.conn.kick();
    }
  });
  window.addEventListener('online', () => S.conn && S.conn.kick());
  window.addEventListener('offline', () => mark('status'));
  window.addEventListener('resize', () => mark('timeline'));
  // The typing line and relative day labels age by themselves.
  setInterval(() => mark('typing'), 2000);
}

// ---- service worker ----------------------------------------------------------------------------

function registerServiceWorker() {
  if (!('serviceWorker' in navigator) || !window.isSecureContext) return;
  navigator.serviceWorker
    .register('/sw.js', { scope: '/' })
    .then((reg) => {
      reg.addEventListener('updatefound', () => {
        const w = reg.installing;
        if (!w) return;
        w.addEventListener('statechange', () => {
          if (w.state === 'installed' && navigator.serviceWorker.controller) {
            const bar = $('update-bar');
            bar.hidden = false;
          }
        });
      });
    })
    .catch(() => {
      // No offline shell; everything else works.
    });
  $('update-reload').addEventListener('click', () => location.reload());
}

// ---- debug hook (read-only) --------------------------------------------------------------------

function exposeDebug() {
  const info = {
    get node() {
      return S.conn && S.conn.node ? { ...S.conn.node } : null;
    },
    get state() {
      return S.conn ? S.conn.state : 'stopped';
    },
    get cursors() {
      return S.conn ? Object.fromEntries(S.conn.cursors) : {};
    },
    get nodes() {
      return S.cluster ? S.cluster.nodes.map((n) => ({ ...n })) : [];
    },
    get pending() {
      return S.conn ? S.conn.outbox.map((e) => ({ client_msg_id: e.client_msg_id, channel: e.channel, state: e.state })) : [];
    },
    get channel() {
      return S.current;
    },
    get user() {
      return me();
    },
  };
  Object.defineProperty(window, 'conclave', { value: Object.freeze(info), writable: false, configurable: false, enumerable: false });
}

boot();
