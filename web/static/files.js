// Files in the web client: attaching (button, drag and drop, pasted screenshots), chunked
// upload with per-chunk progress and failover, and the rendering of a message's attachments
// (image previews with a viewer dialog, file cards with a download link).
//
// Upload (docs/api.md, "Files"): the file is read once, in 8 MiB chunks. Each chunk is hashed
// (SHA-256) and PUT to `/api/v1/blobs/{sha256}` through the cluster's failover wrapper
// (conn.js `Cluster.request`), which moves to another node on a network error or a 503; a
// chunk is acknowledged only once a majority of the cluster has it on disk, so after a
// failover the upload simply continues with the next chunk on the new node. The whole-file
// hash is computed along the way with our own incremental SHA-256 (`Sha256` below):
// SubtleCrypto has no streaming digest, and hashing a 100 MiB file in one call would need it
// all in memory. Then `POST /api/v1/channels/{c}/files` commits the file and its message.
//
// Files are fetched with the session's bearer token (never cookies), so images are shown from
// `blob:` URLs made from authenticated fetches. Nothing here ever parses HTML: every name,
// type and caption reaches the DOM as text.

import { ApiError, newClientMsgId } from './conn.js';
import { h, iconButton, toast } from './ui.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
// Icons of this module (24x24 stroke paths, like ui.js's): a paperclip and a document.
const PATHS = {
  paperclip: ['M21.4 11.1l-9.2 9.2a6 6 0 0 1-8.5-8.5l9.2-9.2a4 4 0 0 1 5.7 5.7l-9.2 9.2a2 2 0 0 1-2.8-2.8l8.5-8.5'],
  file: ['M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z', 'M14 2v6h6'],
};

function fileIcon(name, size = 18) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  for (const [k, v] of [['viewBox', '0 0 24 24'], ['width', size], ['height', size], ['fill', 'none'], ['stroke', 'currentColor'], ['stroke-width', '2'], ['stroke-linecap', 'round'], ['stroke-linejoin', 'round'], ['aria-hidden', 'true'], ['focusable', 'false']]) {
    svg.setAttribute(k, String(v));
  }
  svg.classList.add('icon');
  for (const d of PATHS[name]) {
    const p = document.createElementNS(SVG_NS, 'path');
    p.setAttribute('d', d);
    svg.appendChild(p);
  }
  return svg;
}

/** Bytes per uploaded chunk (the server's `files.chunk_max`). */
export const CHUNK_SIZE = 8 * 1024 * 1024;
/** One chunk PUT: 8 MiB over slow Wi-Fi, replicated to a majority before the answer. */
const CHUNK_TIMEOUT_MS = 120000;
/** The POST may fetch missing chunks from peers, scan and thumbnail: allow for it. */
const COMMIT_TIMEOUT_MS = 180000;
/** Rounds of `Cluster.request` (itself trying every node) before a chunk is given up. */
const CHUNK_ATTEMPTS = 4;
/** Longest side of an inline preview, in CSS pixels (the server's thumbnails are ≤ 320 px). */
const PREVIEW_MAX = 320;

// ---- SHA-256 -----------------------------------------------------------------------------------

// prettier-ignore
const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/**
 * Incremental SHA-256 (FIPS 180-4): `update(bytes)` any number of times, then `digest()`
 * (32 bytes) or `hex()`. Pure JS, no allocation per block.
 */
export class Sha256 {
  constructor() {
    this.state = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]);
    this.buf = new Uint8Array(64);
    this.bufLen = 0;
    this.total = 0;
    this.w = new Uint32Array(64);
    this.done = false;
  }

  /** Adds `data` (Uint8Array or ArrayBuffer). */
  update(data) {
    if (this.done) throw new Error('Sha256: update after digest');
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const n = bytes.length;
    let i = 0;
    this.total += n;
    if (this.bufLen > 0) {
      const take = Math.min(64 - this.bufLen, n);
      this.buf.set(bytes.subarray(0, take), this.bufLen);
      this.bufLen += take;
      i = take;
      if (this.bufLen === 64) {
        this.block(this.buf, 0);
        this.bufLen = 0;
      }
    }
    for (; i + 64 <= n; i += 64) this.block(bytes, i);
    if (i < n) {
      this.buf.set(bytes.subarray(i), 0);
      this.bufLen = n - i;
    }
    return this;
  }

  block(d, off) {
    const w = this.w;
    for (let t = 0; t < 16; t++) {
      const j = off + 4 * t;
      w[t] = (d[j] << 24) | (d[j + 1] << 16) | (d[j + 2] << 8) | d[j + 3];
    }
    for (let t = 16; t < 64; t++) {
      const x = w[t - 15];
      const y = w[t - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    const st = this.state;
    let a = st[0] | 0;
    let b = st[1] | 0;
    let c = st[2] | 0;
    let e4 = st[3] | 0;
    let e = st[4] | 0;
    let f = st[5] | 0;
    let g = st[6] | 0;
    let hh = st[7] | 0;
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[t] + w[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (e4 + t1) | 0;
      e4 = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += e4;
    st[4] += e;
    st[5] += f;
    st[6] += g;
    st[7] += hh;
  }

  /** The 32-byte digest; the hasher cannot be updated afterwards. */
  digest() {
    if (!this.done) {
      const len = this.bufLen < 56 ? 64 : 128;
      const tail = new Uint8Array(len);
      tail.set(this.buf.subarray(0, this.bufLen));
      tail[this.bufLen] = 0x80;
      // Message length in bits, 64-bit big-endian (exact for any size below 2^53 bytes).
      const hi = Math.floor(this.total / 0x20000000);
      const lo = (this.total * 8) >>> 0;
      const dv = new DataView(tail.buffer);
      dv.setUint32(len - 8, hi);
      dv.setUint32(len - 4, lo);
      for (let off = 0; off < len; off += 64) this.block(tail, off);
      this.done = true;
      const out = new Uint8Array(32);
      const odv = new DataView(out.buffer);
      for (let i = 0; i < 8; i++) odv.setUint32(4 * i, this.state[i]);
      this.out = out;
    }
    return this.out;
  }

  hex() {
    return toHex(this.digest());
  }
}

export function toHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** SHA-256 of one chunk: SubtleCrypto where the page has it (secure contexts), else ours. */
export async function sha256Hex(bytes) {
  if (globalThis.crypto && crypto.subtle) {
    return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
  }
  return new Sha256().update(bytes).hex();
}

// ---- formatting --------------------------------------------------------------------------------

/** `1.4 MB`, `320 KB`, `12 B` (binary multiples, as file managers show them). */
export function humanSize(n) {
  const bytes = Number(n) || 0;
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** A readable type: the part a person recognises, with the exact type kept in the title. */
export function typeLabel(mime) {
  const m = String(mime || 'application/octet-stream').toLowerCase();
  const known = {
    'application/pdf': 'PDF',
    'application/zip': 'ZIP archive',
    'application/gzip': 'gzip archive',
    'text/plain': 'Text',
    'text/csv': 'CSV',
    'application/json': 'JSON',
    'application/octet-stream': 'Binary file',
  };
  if (known[m]) return known[m];
  const [top, sub] = m.split('/');
  if (top === 'image' || top === 'video' || top === 'audio') return `${sub.toUpperCase()} ${top}`;
  return m;
}

/** A pasted screenshot arrives as `image.png`: give it a name that says what and when. */
function pastedName(file) {
  if (file.name && !/^image\.(png|jpe?g|gif|webp)$/i.test(file.name)) return file.name;
  const d = new Date();
  const p = (x) => String(x).padStart(2, '0');
  const ext = (file.type.split('/')[1] || 'png').replace('jpeg', 'jpg');
  return `Screenshot ${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}.${p(d.getMinutes())}.${p(d.getSeconds())}.${ext}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- state -------------------------------------------------------------------------------------

/** Set by `initFiles`: what the app lends us (see app.js). */
let app = null;
/**
 * Files waiting for Send, and uploads in progress or failed:
 * `{id, target, channel, threadRoot, file, name, state, done, error}`. Keyed by where they will
 * be posted, `(channel, threadRoot)`: a file staged in a thread's reply box is a reply in that
 * thread, never a message in the channel, whichever composer is on screen when it is sent.
 */
const items = [];
let nextItem = 1;
/** file id → Promise of a `blob:` URL of its thumbnail (kept for the page's life). */
const thumbs = new Map();

const $ = (id) => document.getElementById(id);

/**
 * The composers that can carry files, by name: the main one under the conversation, and the
 * thread panel's reply box. One set of code serves both; a target names its elements (looked
 * up by id, because app.js rebuilds the thread panel's form when another thread opens) and
 * `where()` says where its files go: `{channel, threadRoot}`, or null when it has nowhere.
 */
const TARGETS = {
  main: {
    form: 'composer-form',
    textarea: 'composer',
    attach: 'composer-attach',
    attachLabel: 'Attach files',
    input: 'file-input',
    tray: 'file-tray',
    trayLabel: 'Attachments',
    drop: 'chat',
    where: () => (app.channel() ? { channel: app.channel(), threadRoot: null } : null),
  },
  thread: {
    form: 'thread-form',
    textarea: 'thread-composer',
    attach: 'thread-attach',
    attachLabel: 'Attach files to reply',
    input: 'thread-file-input',
    tray: 'thread-file-tray',
    trayLabel: 'Reply attachments',
    drop: 'panel-body',
    where: () => (app.thread ? app.thread() : null),
  },
};

/**
 * Wires the file UI into the page. `ctx`: `cluster()` (the `Cluster`), `channel()` (current
 * channel name), `thread()` (the open thread as `{channel, threadRoot}`, or null),
 * `upsertMessage(m)`, `errorText(e)`. The thread panel's composer is added with
 * `mountComposer('thread')` each time app.js builds it.
 */
export function initFiles(ctx) {
  app = ctx;
  const form = $('composer-form');
  form.parentNode.insertBefore(h('div', { id: 'file-announce', class: 'visually-hidden', role: 'status', 'aria-live': 'polite' }), form);
  mountComposer('main');
  // The drop zones outlive the forms (the thread's is rebuilt), so they are wired once here.
  dropZone(TARGETS.main);
  dropZone(TARGETS.thread);
}

/**
 * Adds the attach button, the hidden file input, the tray and paste handling to the composer
 * `name` (`'main'` or `'thread'`), whose form and textarea must be in the page.
 */
export function mountComposer(name) {
  const t = TARGETS[name];
  const form = $(t.form);
  const ta = $(t.textarea);
  if (!form || !ta || $(t.attach)) return;
  const input = h('input', {
    type: 'file',
    id: t.input,
    multiple: true,
    hidden: true,
    tabIndex: -1,
    'aria-hidden': 'true',
    on: {
      change: () => {
        stage(t, [...input.files]);
        input.value = '';
        ta.focus();
      },
    },
  });
  const attach = h(
    'button',
    { type: 'button', id: t.attach, class: 'icon-btn attach-btn', title: `${t.attachLabel} (or paste or drop them)`, 'aria-label': t.attachLabel, on: { click: () => input.click() } },
    fileIcon('paperclip'),
  );
  form.insertBefore(attach, ta);
  form.appendChild(input);
  const tray = h('div', { id: t.tray, class: 'file-tray', role: 'region', 'aria-label': t.trayLabel, hidden: true });
  form.parentNode.insertBefore(tray, form);
  ta.addEventListener('paste', (e) => {
    const files = clipboardFiles(e.clipboardData);
    if (!files.length) return;
    e.preventDefault();
    stage(t, files.map((f) => renamed(f)));
  });
  renderTray();
}

/** Drag and drop onto the element `t.drop` (the conversation, or the thread panel). */
function dropZone(t) {
  const zone = $(t.drop);
  if (!zone) return;
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes('Files');
  zone.addEventListener('dragenter', (e) => {
    if (!hasFiles(e) || !canAttach(t)) return;
    e.preventDefault();
    depth += 1;
    zone.classList.add('drop-active');
  });
  zone.addEventListener('dragover', (e) => {
    if (!hasFiles(e) || !canAttach(t)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove('drop-active');
  });
  zone.addEventListener('drop', (e) => {
    depth = 0;
    zone.classList.remove('drop-active');
    if (!hasFiles(e) || !canAttach(t)) return;
    e.preventDefault();
    stage(t, [...e.dataTransfer.files]);
    $(t.textarea).focus();
  });
}

function clipboardFiles(dt) {
  if (!dt) return [];
  if (dt.files && dt.files.length) return [...dt.files];
  const out = [];
  for (const item of dt.items || []) {
    if (item.kind === 'file') {
      const f = item.getAsFile();
      if (f) out.push(f);
    }
  }
  return out;
}

function renamed(f) {
  const name = pastedName(f);
  return name === f.name ? f : new File([f], name, { type: f.type, lastModified: f.lastModified });
}

function canAttach(t) {
  const form = $(t.form);
  const ta = $(t.textarea);
  return !!(app && t.where() && form && !form.hidden && ta && !ta.disabled);
}

/** Whether `item` goes to `where` (`{channel, threadRoot}`). */
function goesTo(item, where) {
  return !!where && item.channel === where.channel && item.threadRoot === (where.threadRoot ?? null);
}

/** Files chosen, dropped or pasted wait in the tray until Send (the text becomes the caption). */
function stage(t, files) {
  const where = t.where();
  if (!where || !canAttach(t)) return;
  for (const file of files) {
    if (!file.size) {
      toast(`${file.name || 'That file'} is empty and cannot be sent.`, 'error');
      continue;
    }
    items.push({ id: nextItem++, target: t, channel: where.channel, threadRoot: where.threadRoot ?? null, file, name: file.name || 'file', state: 'staged', done: 0, error: null });
  }
  renderTray();
}

/**
 * Files staged for `channel` (the main composer) or for the thread `threadRoot` in it.
 *
 * Staged files stay staged when the user switches channel or closes the thread, and come back
 * with its composer: they were chosen on purpose, and dropping them silently (or even with a
 * toast) would make the user find and attach them again for having glanced at another channel.
 * That is also how the main composer treats its files and drafts per channel.
 */
export function stagedCount(channel, threadRoot = null) {
  const where = { channel, threadRoot };
  return items.filter((i) => goesTo(i, where) && i.state === 'staged').length;
}

/**
 * Sends the files staged for `channel` (or its thread `threadRoot`), the first with `caption`
 * as its message text. Each file is its own message (one file per message, as the API has it).
 */
export function sendStaged(channel, caption, threadRoot = null) {
  const where = { channel, threadRoot };
  const batch = items.filter((i) => goesTo(i, where) && i.state === 'staged');
  batch.forEach((item, n) => {
    item.caption = n === 0 ? caption : '';
    item.clientMsgId = newClientMsgId();
    upload(item);
  });
  renderTray();
}

function remove(item) {
  const i = items.indexOf(item);
  if (i >= 0) items.splice(i, 1);
  renderTray();
  const ta = $(item.target.textarea);
  if (ta) ta.focus();
}

// ---- upload ------------------------------------------------------------------------------------

async function upload(item) {
  item.state = 'uploading';
  item.error = null;
  item.done = 0;
  renderTray();
  try {
    const { sha256, chunks } = await putChunks(item);
    item.state = 'committing';
    renderTray();
    const msg = await commit(item, sha256, chunks);
    if (msg && msg.channel) app.upsertMessage(msg);
    announce(`${item.name} sent.`);
    const i = items.indexOf(item);
    if (i >= 0) items.splice(i, 1);
  } catch (e) {
    item.state = 'failed';
    item.error = e;
    announce(`${item.name} was not sent: ${app.errorText(e)}`);
  }
  renderTray();
}

/** Reads the file once, chunk by chunk: hashes, uploads; returns the whole hash and the list. */
async function putChunks(item) {
  const file = item.file;
  const whole = new Sha256();
  const chunks = [];
  for (let off = 0; off < file.size; off += CHUNK_SIZE) {
    const bytes = new Uint8Array(await file.slice(off, off + CHUNK_SIZE).arrayBuffer());
    whole.update(bytes);
    const sha = await sha256Hex(bytes);
    await putChunk(item, sha, bytes);
    chunks.push(sha);
    item.done = off + bytes.length;
    renderTray();
  }
  return { sha256: whole.hex(), chunks };
}

/**
 * One chunk, until a majority has it. `Cluster.request` already moves to another ready node on
 * a network error or 503 (`no_quorum`); if every node failed for a while (an election, the
 * whole cluster briefly unreachable), the chunk is tried again after a pause.
 */
async function putChunk(item, sha, bytes) {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await app.cluster().request('PUT', `/api/v1/blobs/${sha}`, { raw: bytes, timeoutMs: CHUNK_TIMEOUT_MS });
      if (res && res.sha256 && res.sha256 !== sha) throw new ApiError(500, 'hash_mismatch', 'the server stored another chunk');
      item.retrying = false;
      return;
    } catch (e) {
      const transient = e instanceof ApiError && (e.status === 0 || e.status === 503);
      if (!transient || attempt >= CHUNK_ATTEMPTS) throw e;
      item.retrying = true;
      renderTray();
      await sleep(1000 * attempt);
    }
  }
}

/** The file message. Idempotent by `client_msg_id`, so a retry after a failover is safe. */
async function commit(item, sha256, chunks) {
  const body = {
    name: item.name,
    size: item.file.size,
    sha256,
    chunks,
    body: item.caption || '',
    client_msg_id: item.clientMsgId,
    thread_root: item.threadRoot ?? null,
  };
  const path = `/api/v1/channels/${encodeURIComponent(item.channel)}/files`;
  let reuploaded = false;
  for (let attempt = 1; ; attempt++) {
    try {
      return await app.cluster().request('POST', path, { body, timeoutMs: COMMIT_TIMEOUT_MS });
    } catch (e) {
      if (e instanceof ApiError && e.code === 'missing_chunk' && !reuploaded) {
        // No node has one of the chunks any more (e.g. collected after a long pause): send
        // them again, then commit once more.
        reuploaded = true;
        item.state = 'uploading';
        item.done = 0;
        await putChunks(item);
        item.state = 'committing';
        renderTray();
        continue;
      }
      const transient = e instanceof ApiError && (e.status === 0 || e.status === 503) && e.code !== 'scanner_unavailable';
      if (!transient || attempt >= CHUNK_ATTEMPTS) throw e;
      await sleep(1000 * attempt);
    }
  }
}

function announce(text) {
  const el = $('file-announce');
  if (el) el.textContent = text;
}

// ---- the tray ----------------------------------------------------------------------------------

function renderTray() {
  if (!app) return;
  for (const t of Object.values(TARGETS)) {
    const tray = $(t.tray);
    if (!tray) continue;
    const where = t.where();
    const mine = items.filter((i) => goesTo(i, where));
    const form = $(t.form);
    tray.hidden = !mine.length || !form || form.hidden;
    tray.replaceChildren(...mine.map(trayItem));
  }
}

/** Called by the app whenever a composer is re-rendered (channel switch, archive, join, thread). */
export function syncTray() {
  renderTray();
}

function trayItem(item) {
  const pct = item.file.size ? Math.floor((100 * item.done) / item.file.size) : 0;
  const meta = h('span', { class: 'file-chip-info' });
  const children = [fileIcon('file', 16), h('span', { class: 'file-chip-name', text: item.name, title: item.name }), meta];
  if (item.state === 'staged') {
    meta.textContent = humanSize(item.file.size);
    children.push(iconButton('close', `Remove ${item.name}`, () => remove(item), { class: 'small file-chip-remove', size: 14 }));
  } else if (item.state === 'uploading' || item.state === 'committing') {
    const label = item.state === 'committing' ? 'Finishing…' : item.retrying ? `${pct}% — reconnecting…` : `${pct}%`;
    meta.textContent = label;
    children.push(
      h('progress', {
        class: 'file-progress',
        max: item.file.size,
        value: item.done,
        'aria-label': `Uploading ${item.name}`,
        'aria-valuetext': label,
      }),
    );
  } else if (item.state === 'failed') {
    meta.textContent = `Not sent: ${app.errorText(item.error)}`;
    meta.classList.add('error');
    children.push(
      h('button', { type: 'button', class: 'link-btn', text: 'Retry', 'aria-label': `Retry ${item.name}`, on: { click: () => upload(item) } }),
      iconButton('close', `Dismiss ${item.name}`, () => remove(item), { class: 'small file-chip-remove', size: 14 }),
    );
  }
  return h('div', { class: `file-chip is-${item.state}`, dataset: { state: item.state } }, ...children);
}

// ---- attachments on messages -------------------------------------------------------------------

/** Fetches `/api/v1/files/{id}[/thumbnail]` with the session, as a `blob:` URL. */
async function blobUrl(path) {
  const blob = await app.cluster().request('GET', path, { as: 'blob', timeoutMs: COMMIT_TIMEOUT_MS });
  return URL.createObjectURL(blob);
}

function thumbUrl(file) {
  let p = thumbs.get(file.id);
  if (!p) {
    p = blobUrl(`/api/v1/files/${encodeURIComponent(file.id)}/thumbnail`);
    // A failure is not cached: the next render tries again.
    p.catch(() => thumbs.delete(file.id));
    thumbs.set(file.id, p);
  }
  return p;
}

/** Width and height of the preview box: the image's aspect ratio within PREVIEW_MAX. */
function previewSize(file) {
  const w = Number(file.width) || 0;
  const hgt = Number(file.height) || 0;
  if (!w || !hgt) return null;
  const scale = Math.min(1, PREVIEW_MAX / Math.max(w, hgt));
  return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(hgt * scale))];
}

/**
 * Fills `slot` (a message's attachment container) with `m.attachments`; re-renders only when
 * the list of files changed, so previews are not reloaded on every update of the message.
 */
export function updateAttachments(slot, m) {
  const list = !m.deleted && Array.isArray(m.attachments) ? m.attachments : [];
  const key = list.map((f) => `${f.id}:${f.has_thumbnail ? 1 : 0}`).join(',');
  slot.hidden = !list.length;
  if (slot._key === key) return;
  slot._key = key;
  slot.replaceChildren(...list.map((f) => (f.image && f.has_thumbnail ? imagePreview(f) : fileCard(f))));
}

function imagePreview(file) {
  const size = previewSize(file);
  const img = h('img', { alt: file.name, decoding: 'async', class: 'attachment-img' });
  if (size) {
    img.width = size[0];
    img.height = size[1];
  }
  const button = h(
    'button',
    {
      type: 'button',
      class: 'attachment-image',
      title: `${file.name} (${humanSize(file.size)}) — open`,
      'aria-haspopup': 'dialog',
      dataset: { fileId: file.id },
      on: { click: (e) => openViewer(file, e.currentTarget) },
    },
    img,
  );
  thumbUrl(file)
    .then((url) => {
      img.src = url;
    })
    .catch(() => {
      // No thumbnail after all (or not reachable): show the file as a card instead.
      if (button.isConnected) button.replaceWith(fileCard(file));
    });
  return button;
}

function fileCard(file) {
  const link = h(
    'a',
    {
      class: 'file-download',
      href: `/api/v1/files/${encodeURIComponent(file.id)}`,
      download: file.name,
      on: { click: (e) => download(e, file) },
    },
    'Download',
    h('span', { class: 'visually-hidden', text: ` ${file.name}` }),
  );
  return h(
    'div',
    { class: 'file-card', role: 'group', 'aria-label': `File ${file.name}`, dataset: { fileId: file.id } },
    h('span', { class: 'file-card-icon', 'aria-hidden': 'true' }, fileIcon('file', 22)),
    h(
      'span',
      { class: 'file-card-meta' },
      h('span', { class: 'file-card-name', text: file.name, title: file.name }),
      h('span', { class: 'file-card-info', text: `${humanSize(file.size)} · ${typeLabel(file.mime)}`, title: file.mime }),
    ),
    link,
  );
}

/** Downloads with the session's token, then hands the bytes to the browser under the file's name. */
async function download(e, file) {
  e.preventDefault();
  const link = e.currentTarget;
  if (link.dataset.busy) return;
  link.dataset.busy = '1';
  link.setAttribute('aria-busy', 'true');
  try {
    const url = await blobUrl(`/api/v1/files/${encodeURIComponent(file.id)}`);
    const a = h('a', { href: url, download: file.name, hidden: true });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    toast(`Download failed: ${app.errorText(err)}`, 'error');
  } finally {
    delete link.dataset.busy;
    link.removeAttribute('aria-busy');
  }
}

// ---- image viewer ------------------------------------------------------------------------------

/**
 * A modal dialog with the full image. Escape (the dialog's own cancel) or the close button
 * closes it, and focus returns to the preview that opened it.
 */
function openViewer(file, opener) {
  let dialog = $('file-viewer');
  if (!dialog) {
    dialog = h('dialog', { id: 'file-viewer', class: 'dialog viewer', 'aria-labelledby': 'file-viewer-title' });
    // Escape closes the viewer only (the dialog's own cancel), not also the page's side panel,
    // which the app closes on an Escape that reaches the document.
    dialog.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') e.stopPropagation();
    });
    document.body.appendChild(dialog);
  }
  if (dialog.open) dialog.close();
  const img = h('img', { class: 'viewer-img', alt: file.name });
  const status = h('p', { class: 'viewer-status', role: 'status', text: 'Loading…' });
  const close = iconButton('close', 'Close viewer', () => dialog.close(), { class: 'dialog-close' });
  const link = h(
    'a',
    { class: 'btn small', href: `/api/v1/files/${encodeURIComponent(file.id)}`, download: file.name, on: { click: (e) => download(e, file) } },
    'Download',
  );
  dialog.replaceChildren(
    h('div', { class: 'dialog-head' }, h('h2', { id: 'file-viewer-title', text: file.name }), close),
    h(
      'div',
      { class: 'dialog-body viewer-body' },
      h('figure', { class: 'viewer-figure' }, img, status),
      h(
        'div',
        { class: 'dialog-actions spread' },
        h('span', { class: 'muted', text: `${humanSize(file.size)} · ${typeLabel(file.mime)}${file.width ? ` · ${file.width}×${file.height}` : ''}` }),
        link,
      ),
    ),
  );
  let url = null;
  dialog.onclose = () => {
    dialog.onclose = null;
    if (url) URL.revokeObjectURL(url);
    if (opener && opener.isConnected) opener.focus();
  };
  dialog.showModal();
  close.focus();
  blobUrl(`/api/v1/files/${encodeURIComponent(file.id)}`)
    .then((u) => {
      if (!dialog.open) {
        URL.revokeObjectURL(u);
        return;
      }
      url = u;
      img.src = u;
      status.textContent = '';
      status.hidden = true;
    })
    .catch((err) => {
      status.textContent = `Could not load the image: ${app.errorText(err)}`;
    });
}
