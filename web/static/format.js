// Formatted messages: a small, safe Markdown subset rendered into DOM nodes.
//
// Owns the message syntax the client understands: **bold** / __bold__, *italics* / _italics_,
// `inline code`, fenced code blocks (```lang … ```; the language hint is shown as a label, never
// executed or highlighted), > quotes, "- " / "* " / "1. " lists, [label](url) links and bare URLs (http and https
// only), and @mentions. Anything else is shown as the text it is.
//
// Must never build HTML from message text: every node is made with createElement and filled
// with textContent, and link targets are only ever http: or https: URLs parsed by `URL` (no
// javascript:, data:, relative or protocol-less targets). The stored body stays the raw text;
// this is display only. Runs in linear time in the body length (a 16 KiB message of unmatched
// markers must not freeze the page), see `findCloser`.

const MENTION_NAME = /^[a-z0-9][a-z0-9_.-]{0,31}/;
const PUNCT = /[!-/:-@[-`{-~]/; // ASCII punctuation: what a backslash may escape
const WORD = /[\p{L}\p{N}_]/u;
const MAX_DEPTH = 6; // nesting of quotes and emphasis

/**
 * A message body as a DocumentFragment. `me` is the current username (its mentions, and
 * @channel / @here, get the `mention-me` class).
 */
export function renderMarkdown(text, me) {
  const frag = document.createDocumentFragment();
  renderBlocks(frag, String(text || '').replace(/\r\n?/g, '\n').split('\n'), me, 0);
  return frag;
}

/** Plain-text reading of a formatted body (notifications): markers dropped, code kept. */
export function plainText(text) {
  return String(text || '')
    .replace(/```[^\n]*\n?/g, '')
    .replace(/`([^`]*)`/g, '$1')
    .replace(/\*\*([^*]+)\*\*|__([^_]+)__/g, '$1$2')
    .replace(/\[([^\]]*)\]\((https?:\/\/[^)\s]+)\)/g, '$1 ($2)')
    .replace(/^\s{0,3}>\s?/gm, '')
    .replace(/\s+/g, ' ')
    .trim();
}

// ---- blocks ------------------------------------------------------------------------------------

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const ORDERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;

function renderBlocks(parent, lines, me, depth) {
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) parent.appendChild(paragraph(para, me, depth));
    para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      flush();
      const fence = m[1];
      const lang = m[2];
      const body = [];
      i += 1;
      while (i < lines.length && !isClosingFence(lines[i], fence)) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of the message)
      parent.appendChild(codeBlock(body.join('\n'), lang));
      continue;
    }
    if (depth < MAX_DEPTH && QUOTE.test(line)) {
      flush();
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i += 1;
      }
      const q = document.createElement('blockquote');
      q.className = 'md-quote';
      renderBlocks(q, inner, me, depth + 1);
      parent.appendChild(q);
      continue;
    }
    if (BULLET.test(line) || ORDERED.test(line)) {
      flush();
      const ordered = !BULLET.test(line);
      const re = ordered ? ORDERED : BULLET;
      const list = document.createElement(ordered ? 'ol' : 'ul');
      list.className = 'md-list';
      if (ordered) {
        const start = Number(ORDERED.exec(line)[1]);
        if (start !== 1) list.start = start;
      }
      while (i < lines.length && (m = re.exec(lines[i]))) {
        const li = document.createElement('li');
        inline(li, ordered ? m[2] : m[1], me, depth + 1);
        list.appendChild(li);
        i += 1;
      }
      parent.appendChild(list);
      continue;
    }
    if (!line.trim()) {
      flush();
      i += 1;
      continue;
    }
    para.push(line);
    i += 1;
  }
  flush();
}

function isClosingFence(line, fence) {
  const t = line.trim();
  return t.length >= fence.length && t[0] === fence[0] && /^(`+|~+)$/.test(t);
}

function codeBlock(text, lang) {
  const wrap = document.createElement('div');
  wrap.className = 'md-code';
  if (lang) {
    const label = document.createElement('span');
    label.className = 'md-code-lang';
    label.textContent = lang.slice(0, 32);
    wrap.appendChild(label);
  }
  const pre = document.createElement('pre');
  // Long lines scroll sideways: the block must be reachable (and scrollable) by keyboard.
  pre.tabIndex = 0;
  const code = document.createElement('code');
  if (lang) code.dataset.lang = lang.slice(0, 32);
  code.textContent = text;
  pre.appendChild(code);
  wrap.appendChild(pre);
  return wrap;
}

function paragraph(lines, me, depth) {
  const p = document.createElement('p');
  p.className = 'md-p';
  lines.forEach((l, n) => {
    if (n) p.appendChild(document.createElement('br'));
    inline(p, l, me, depth);
  });
  return p;
}

// ---- inline ------------------------------------------------------------------------------------

/** Appends the inline rendering of `s` to `parent`. */
function inline(parent, s, me, depth) {
  // Delimiters known to have no closer at or after a position (see `findCloser`).
  const none = new Map();
  let text = '';
  const flushText = () => {
    if (text) parent.appendChild(document.createTextNode(text));
    text = '';
  };
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length && PUNCT.test(s[i + 1])) {
      text += s[i + 1];
      i += 2;
      continue;
    }
    if (c === '`') {
      let n = 1;
      while (s[i + n] === '`') n += 1;
      const ticks = '`'.repeat(n);
      const end = findCloser(s, ticks, i + n, none, (at) => s[at + n] !== '`' && s[at - 1] !== '`');
      if (end > i + n) {
        flushText();
        const code = document.createElement('code');
        code.className = 'md-inline-code';
        let inner = s.slice(i + n, end);
        if (inner.length > 2 && inner.startsWith(' ') && inner.endsWith(' ')) inner = inner.slice(1, -1);
        code.textContent = inner;
        parent.appendChild(code);
        i = end + n;
        continue;
      }
      text += ticks;
      i += n;
      continue;
    }
    if ((c === '*' || c === '_') && depth < MAX_DEPTH) {
      const strong = s[i + 1] === c;
      const d = strong ? c + c : c;
      const open = i + d.length;
      const leftOk = c === '*' || i === 0 || !WORD.test(s[i - 1]);
      if (leftOk && open < s.length && !/\s/.test(s[open]) && s[open] !== c) {
        const end = findCloser(s, d, open + 1, none, (at) => {
          if (/\s/.test(s[at - 1])) return false;
          if (!strong && (s[at + 1] === c || s[at - 1] === c)) return false;
          return c === '*' || at + d.length >= s.length || !WORD.test(s[at + d.length]);
        });
        if (end > open) {
          flushText();
          const el = document.createElement(strong ? 'strong' : 'em');
          inline(el, s.slice(open, end), me, depth + 1);
          parent.appendChild(el);
          i = end + d.length;
          continue;
        }
      }
      text += d;
      i += d.length;
      continue;
    }
    if (c === '[') {
      const link = parseLink(s, i);
      if (link) {
        flushText();
        parent.appendChild(anchor(link.url, link.label));
        i = link.end;
        continue;
      }
    }
    if ((c === 'h' || c === 'H') && (i === 0 || !WORD.test(s[i - 1]))) {
      const m = /^https?:\/\/[^\s<>"]+/i.exec(s.slice(i, i + 2048));
      if (m) {
        // Trailing punctuation ends the sentence, not the URL.
        let raw = m[0];
        while (/[.,;:!?'")\]]$/.test(raw) && !(raw.endsWith(')') && raw.includes('('))) raw = raw.slice(0, -1);
        const url = safeUrl(raw);
        if (url) {
          flushText();
          parent.appendChild(anchor(url, raw));
          i += raw.length;
          continue;
        }
      }
    }
    if (c === '@' && (i === 0 || !/[A-Za-z0-9_.-]/.test(s[i - 1]))) {
      const m = MENTION_NAME.exec(s.slice(i + 1, i + 40));
      if (m) {
        let name = m[0];
        // A trailing dot is punctuation ("thanks @bob."), not part of the name.
        while (name.endsWith('.') || name.endsWith('-')) name = name.slice(0, -1);
        if (name) {
          flushText();
          const span = document.createElement('span');
          const mine = name === me || name === 'channel' || name === 'here';
          span.className = mine ? 'mention mention-me' : 'mention';
          span.textContent = `@${name}`;
          parent.appendChild(span);
          i += 1 + name.length;
          continue;
        }
      }
    }
    text += c;
    i += 1;
  }
  flushText();
}

/**
 * The index of the first `d` at or after `from` that `ok` accepts, or -1. A delimiter found to
 * have no closer from some position has none from any later one either (`ok` only looks at
 * the closer's surroundings), so that answer is remembered: the scan stays linear overall.
 */
function findCloser(s, d, from, none, ok) {
  const known = none.get(d);
  if (known !== undefined && from >= known) return -1;
  let at = s.indexOf(d, from);
  while (at !== -1 && !ok(at)) at = s.indexOf(d, at + 1);
  if (at === -1) none.set(d, known === undefined ? from : Math.min(known, from));
  return at;
}

/** `[label](url)` at `i`, when url is http(s). */
function parseLink(s, i) {
  const close = s.indexOf('](', i + 1);
  if (close === -1 || close - i > 512) return null;
  const label = s.slice(i + 1, close);
  if (!label.trim() || label.includes('[')) return null;
  const end = s.indexOf(')', close + 2);
  if (end === -1 || end - close > 2048) return null;
  const url = safeUrl(s.slice(close + 2, end).trim());
  return url ? { url, label, end: end + 1 } : null;
}

/** The URL when it is an absolute http(s) URL, else null. */
function safeUrl(raw) {
  if (!/^https?:\/\//i.test(raw)) return null;
  try {
    const u = new URL(raw);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

function anchor(href, label) {
  const a = document.createElement('a');
  a.href = href;
  a.textContent = label;
  a.className = 'md-link';
  a.target = '_blank';
  // No referrer, no window.opener for the target: a link must not leak where it was clicked.
  a.rel = 'noopener noreferrer nofollow';
  return a;
}
