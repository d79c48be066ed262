// Message search: the search box in the conversation header, the results list, and the jump to
// a result in its channel.
//
// Owns the #search-form / #search-results elements and the `GET /api/v1/search` calls. Snippets
// are built as DOM: text nodes and <mark> elements cut at the UTF-16 offsets the server gives
// (JavaScript string indices), never parsed as markup, so a message can never inject markup. Must never
// touch the timeline's state directly: it goes through the hooks app.js hands to initSearch.

const PAGE = 20;

let hooks = null;
let lastQuery = '';
let nextCursor = null;
let loading = false;

const $ = (id) => document.getElementById(id);

/** `text` with the `[start, end)` UTF-16 ranges wrapped in <mark>, as a DocumentFragment. */
export function highlighted(text, ranges) {
  const frag = document.createDocumentFragment();
  let at = 0;
  for (const r of ranges || []) {
    const [a, b] = r;
    if (!(a >= at && b >= a && b <= text.length)) continue;
    if (a > at) frag.append(document.createTextNode(text.slice(at, a)));
    const m = document.createElement('mark');
    m.textContent = text.slice(a, b);
    frag.append(m);
    at = b;
  }
  if (at < text.length) frag.append(document.createTextNode(text.slice(at)));
  return frag;
}

function when(ts) {
  try {
    return new Date(ts).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  } catch {
    return new Date(ts).toISOString();
  }
}

function channelName(name) {
  const c = hooks.channels().get(name);
  return c ? hooks.label(c) : name;
}

function setStatus(text) {
  $('search-status').textContent = text;
}

function open() {
  $('search-results').hidden = false;
}

export function closeSearch({ focusInput = false } = {}) {
  $('search-results').hidden = true;
  if (focusInput) $('search-input').focus();
}

function resultItem(r) {
  const m = r.message;
  const li = document.createElement('li');
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.className = 'search-hit';
  btn.dataset.channel = m.channel;
  btn.dataset.seq = String(m.seq);
  const head = document.createElement('span');
  head.className = 'search-hit-head';
  const where = document.createElement('span');
  where.className = 'search-hit-channel';
  where.textContent = channelName(m.channel);
  const who = document.createElement('span');
  who.className = 'search-hit-author';
  who.textContent = hooks.displayName(m.author);
  const time = document.createElement('time');
  time.className = 'search-hit-time';
  time.dateTime = new Date(m.ts_ms).toISOString();
  time.textContent = when(m.ts_ms);
  head.append(where, who, time);
  const body = document.createElement('span');
  body.className = 'search-hit-text';
  body.append(highlighted(r.snippet.text, r.snippet.highlights));
  btn.append(head, body);
  btn.addEventListener('click', () => jump(m.channel, m.seq));
  li.append(btn);
  return li;
}

async function run(q, { more = false } = {}) {
  if (loading) return;
  const list = $('search-list');
  if (!more) {
    list.replaceChildren();
    nextCursor = null;
    lastQuery = q;
  }
  $('search-more').hidden = true;
  open();
  loading = true;
  setStatus('Searching…');
  try {
    let path = `/api/v1/search?q=${encodeURIComponent(q)}&limit=${PAGE}`;
    if (more && nextCursor) path += `&cursor=${encodeURIComponent(nextCursor)}`;
    const res = await hooks.api('GET', path);
    if (q !== lastQuery) return; // a newer search replaced this one
    for (const r of res.results || []) list.append(resultItem(r));
    nextCursor = res.next_cursor || null;
    $('search-more').hidden = !nextCursor;
    const n = list.children.length;
    setStatus(n === 0 ? `No messages match “${q}”.` : `${n}${nextCursor ? '+' : ''} result${n === 1 ? '' : 's'} for “${q}”.`);
  } catch (e) {
    setStatus(e && e.message ? `Search failed: ${e.message}` : 'Search failed.');
  } finally {
    loading = false;
  }
}

/** Opens `channel` and scrolls to message `seq`, loading older pages until it is there. */
export async function jump(channel, seq) {
  closeSearch();
  if (!hooks.channels().has(channel)) return;
  hooks.openChannel(channel);
  const sel = `#messages .message[data-channel="${CSS.escape(channel)}"][data-seq="${seq}"]`;
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    const el = document.querySelector(sel);
    if (el) {
      const v = hooks.viewFor(channel);
      v.stickBottom = false;
      el.scrollIntoView({ block: 'center' });
      el.classList.add('search-target');
      if (!el.hasAttribute('tabindex')) el.setAttribute('tabindex', '-1');
      el.focus({ preventScroll: true });
      setTimeout(() => el.classList.remove('search-target'), 4000);
      return;
    }
    const v = hooks.viewFor(channel);
    if (v.loaded && !v.loading && !v.error && v.hasMore && v.oldest !== null && v.oldest > seq) {
      await hooks.loadOlder(channel);
    } else if (v.loaded && !v.loading && (!v.hasMore || v.error)) {
      // Not in the channel's history any more (deleted since), or the page failed.
      await new Promise((r) => setTimeout(r, 100));
      if (!document.querySelector(sel)) return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function hits() {
  return [...$('search-list').querySelectorAll('.search-hit')];
}

/** Wires the search box; `h` gives access to app.js (api, channels, openChannel, ...). */
export function initSearch(h) {
  hooks = h;
  const form = $('search-form');
  const input = $('search-input');
  if (!form || !input) return;
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = input.value.trim();
    if (!q) return;
    run(q);
  });
  $('search-more').addEventListener('click', () => run(lastQuery, { more: true }));
  $('search-close').addEventListener('click', () => closeSearch({ focusInput: true }));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown' && !$('search-results').hidden) {
      const first = hits()[0];
      if (first) {
        e.preventDefault();
        first.focus();
      }
    } else if (e.key === 'Escape') {
      closeSearch();
    }
  });
  $('search-results').addEventListener('keydown', (e) => {
    const list = hits();
    const i = list.indexOf(document.activeElement);
    if (e.key === 'ArrowDown' && i >= 0) {
      e.preventDefault();
      (list[i + 1] || list[i]).focus();
    } else if (e.key === 'ArrowUp' && i >= 0) {
      e.preventDefault();
      if (i === 0) input.focus();
      else list[i - 1].focus();
    } else if (e.key === 'Escape') {
      e.preventDefault();
      closeSearch({ focusInput: true });
    }
  });
}
