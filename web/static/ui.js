// DOM helpers for the Conclave web client. Every piece of user content goes through
// textContent (never HTML parsing), so message bodies, names and topics cannot inject markup.

import { renderMarkdown } from './format.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Builds an element. `attrs` keys: `class`, `text` (textContent), `dataset` (object), `on`
 * (event → handler), `style` (object of CSS properties, set through the CSSOM), anything else
 * becomes a property when it exists on the element (e.g. `type`, `disabled`, `value`) or an
 * attribute otherwise. Children may be nodes, strings (text nodes), arrays, null or false.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'style') for (const [p, val] of Object.entries(v)) el.style.setProperty(p, val);
    else if (k.startsWith('aria-') || ['role', 'for', 'list', 'spellcheck', 'autocapitalize'].includes(k)) el.setAttribute(k, v === true ? '' : v);
    else if (k in el) el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// Small stroke icons (24x24 viewBox), built with createElementNS from constant path data.
const ICONS = {
  hash: ['M5 9h14', 'M4 15h14', 'M10 3 8 21', 'M16 3l-2 18'],
  lock: ['M6 11h12v10H6z', 'M8 11V7a4 4 0 0 1 8 0v4'],
  plus: ['M12 5v14', 'M5 12h14'],
  settings: [
    'M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6z',
    'M19.4 15a1.7 1.7 0 0 0 .3 1.8l.1.1a2 2 0 1 1-2.8 2.8l-.1-.1a1.7 1.7 0 0 0-1.8-.3 1.7 1.7 0 0 0-1 1.5V21a2 2 0 1 1-4 0v-.1a1.7 1.7 0 0 0-1.1-1.5 1.7 1.7 0 0 0-1.8.3l-.1.1a2 2 0 1 1-2.8-2.8l.1-.1a1.7 1.7 0 0 0 .3-1.8 1.7 1.7 0 0 0-1.5-1H3a2 2 0 1 1 0-4h.1a1.7 1.7 0 0 0 1.5-1.1 1.7 1.7 0 0 0-.3-1.8l-.1-.1a2 2 0 1 1 2.8-2.8l.1.1a1.7 1.7 0 0 0 1.8.3H9a1.7 1.7 0 0 0 1-1.5V3a2 2 0 1 1 4 0v.1a1.7 1.7 0 0 0 1 1.5 1.7 1.7 0 0 0 1.8-.3l.1-.1a2 2 0 1 1 2.8 2.8l-.1.1a1.7 1.7 0 0 0-.3 1.8V9a1.7 1.7 0 0 0 1.5 1H21a2 2 0 1 1 0 4h-.1a1.7 1.7 0 0 0-1.5 1z',
  ],
  users: [
    'M17 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2',
    'M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8z',
    'M23 21v-2a4 4 0 0 0-3-3.9',
    'M16 3.1a4 4 0 0 1 0 7.8',
  ],
  pin: ['M12 17v5', 'M9 3h6l-1 7 4 3v2H6v-2l4-3z'],
  back: ['M15 18l-6-6 6-6'],
  close: ['M18 6 6 18', 'M6 6l12 12'],
  send: ['M22 2 11 13', 'M22 2l-7 20-4-9-9-4z'],
  smile: [
    'M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20z',
    'M8 14s1.5 2 4 2 4-2 4-2',
    'M9 9h.01',
    'M15 9h.01',
  ],
  reply: ['M9 17l-5-5 5-5', 'M20 18v-2a4 4 0 0 0-4-4H4'],
  edit: ['M12 20h9', 'M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4z'],
  trash: ['M3 6h18', 'M8 6V4h8v2', 'M19 6l-1 14H6L5 6'],
  shield: ['M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z'],
  info: ['M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20z', 'M12 16v-4', 'M12 8h.01'],
  logout: ['M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4', 'M16 17l5-5-5-5', 'M21 12H9'],
  chevronDown: ['M6 9l6 6 6-6'],
  message: ['M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z'],
  bell: ['M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9', 'M13.7 21a2 2 0 0 1-3.4 0'],
  bellOff: ['M13.7 21a2 2 0 0 1-3.4 0', 'M18.6 13A17.9 17.9 0 0 1 18 8', 'M6.3 6.3A6 6 0 0 0 6 8c0 7-3 9-3 9h14', 'M18 8a6 6 0 0 0-9.3-5', 'M2 2l20 20'],
};

export function icon(name, size = 18) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', String(size));
  svg.setAttribute('height', String(size));
  svg.setAttribute('fill', 'none');
  svg.setAttribute('stroke', 'currentColor');
  svg.setAttribute('stroke-width', '2');
  svg.setAttribute('stroke-linecap', 'round');
  svg.setAttribute('stroke-linejoin', 'round');
  svg.setAttribute('aria-hidden', 'true');
  svg.classList.add('icon');
  for (const d of ICONS[name] || []) {
    const p = document.createElementNS(SVG_NS, 'path');
    p.setAttribute('d', d);
    svg.appendChild(p);
  }
  return svg;
}

/** An icon-only button with an accessible label. */
export function iconButton(name, label, onClick, extra = {}) {
  return h(
    'button',
    { type: 'button', class: `icon-btn ${extra.class || ''}`.trim(), title: label, 'aria-label': label, on: { click: onClick }, ...extra.attrs },
    icon(name, extra.size || 18),
  );
}

// ---- text --------------------------------------------------------------------------------------

/**
 * A message body as DOM: the Markdown subset of format.js (code, emphasis, quotes, lists,
 * http(s) links) with `@mentions` highlighted, built from text nodes only.
 */
export function renderBody(text, me) {
  return renderMarkdown(text, me);
}

export function initials(name) {
  const parts = String(name || '?').trim().split(/[\s._-]+/).filter(Boolean);
  const s = parts.length >= 2 ? parts[0][0] + parts[1][0] : (parts[0] || '?').slice(0, 2);
  return s.toUpperCase();
}

/** A stable hue for a username (avatars). */
export function hueFor(name) {
  let x = 0;
  for (const ch of String(name)) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return x % 360;
}

export function avatar(username, display, size = 36) {
  return h('div', {
    class: 'avatar',
    'aria-hidden': 'true',
    text: initials(display || username),
    style: { '--hue': String(hueFor(username)), '--size': `${size}px` },
  });
}

// ---- dates -------------------------------------------------------------------------------------

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const dayYearFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric', year: 'numeric' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

export const fmtTime = (ms) => timeFmt.format(new Date(ms));
export const fmtFull = (ms) => fullFmt.format(new Date(ms));

export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

export function fmtDay(ms) {
  const d = new Date(ms);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(ms) === dayKey(today.getTime())) return 'Today';
  if (dayKey(ms) === dayKey(yesterday.getTime())) return 'Yesterday';
  return d.getFullYear() === today.getFullYear() ? dayFmt.format(d) : dayYearFmt.format(d);
}

// ---- DOM list reconciliation -------------------------------------------------------------------

/**
 * Makes `container`'s children exactly `nodes`, in order, moving existing nodes instead of
 * recreating them (keeps scroll position, focus and WebDriver element references stable).
 */
export function reconcile(container, nodes) {
  let cur = container.firstChild;
  for (const node of nodes) {
    if (node === cur) {
      cur = cur.nextSibling;
      continue;
    }
    container.insertBefore(node, cur);
  }
  while (cur) {
    const next = cur.nextSibling;
    container.removeChild(cur);
    cur = next;
  }
}

// ---- dialogs and toasts ------------------------------------------------------------------------

/**
 * Opens the shared modal `<dialog>` with a title and content. Returns `{dialog, close}`.
 * `onClose` runs once when it closes (Esc, close button or `close()`).
 */
export function openDialog(title, content, { wide = false, onClose } = {}) {
  const dialog = document.getElementById('dialog');
  if (dialog.open) dialog.close();
  dialog.className = wide ? 'dialog wide' : 'dialog';
  const close = () => {
    if (dialog.open) dialog.close();
  };
  dialog.replaceChildren(
    h(
      'div',
      { class: 'dialog-head' },
      h('h2', { text: title, id: 'dialog-title' }),
      iconButton('close', 'Close', close, { class: 'dialog-close' }),
    ),
    h('div', { class: 'dialog-body' }, content),
  );
  dialog.setAttribute('aria-labelledby', 'dialog-title');
  dialog.onclose = () => {
    // A close queued by replacing an open dialog arrives after the new one is shown: ignore it.
    if (dialog.open) return;
    dialog.onclose = null;
    onClose?.();
  };
  dialog.showModal();
  const first = dialog.querySelector('input:not([type=hidden]), textarea, select');
  if (first) first.focus();
  return { dialog, close };
}

/** A labelled form field. */
export function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label', text: label }), input, hint ? h('span', { class: 'field-hint', text: hint }) : null);
}

export function toast(message, kind = 'info', ms = 4500) {
  const host = document.getElementById('toasts');
  const t = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status', text: message });
  host.appendChild(t);
  setTimeout(() => {
    t.classList.add('leaving');
    setTimeout(() => t.remove(), 300);
  }, ms);
}

/** Asks for confirmation in the shared dialog. Resolves true/false. */
export function confirmDialog(title, message, confirmLabel = 'Confirm', danger = false) {
  return new Promise((resolve) => {
    let answered = false;
    const done = (v) => {
      if (answered) return;
      answered = true;
      resolve(v);
      d.close();
    };
    const d = openDialog(
      title,
      h(
        'div',
        {},
        h('p', { class: 'dialog-text', text: message }),
        h(
          'div',
          { class: 'dialog-actions' },
          h('button', { type: 'button', class: 'btn', text: 'Cancel', on: { click: () => done(false) } }),
          h('button', { type: 'button', class: danger ? 'btn danger' : 'btn primary', id: 'confirm-ok', text: confirmLabel, on: { click: () => done(true) } }),
        ),
      ),
      { onClose: () => done(false) },
    );
  });
}

export const utf8Length = (s) => new TextEncoder().encode(s).length;
