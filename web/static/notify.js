// Attention: desktop notifications, the unread count in the title and on the app badge,
// per-channel mute, and the polite screen-reader announcement of new messages.
//
// Owns when the user is interrupted: a mention of them (or @channel / @here) or a direct
// message from someone else, while the page is hidden, in a channel they have not muted, once
// they allowed notifications from a button (never asked on load). Notifications go through the
// service worker (`registration.showNotification`), so they also work from an installed app;
// clicking one focuses the conversation. There is no push service on an air-gapped LAN: nothing
// is shown unless a page of the app is open (or installed and running).
//
// Mute is a per-user setting kept by the cluster (`PUT /api/v1/channels/{c}/mute`, the
// `channel_muted` frame updates the other tabs and devices); this module only reads it from the
// channel objects app.js keeps. Must never put message text into the DOM as HTML and never
// request permission without a user gesture.

import { h, icon, toast } from './ui.js';
import { plainText } from './format.js';

// "on" | "off": the user's own switch, per browser. Off until they turn it on with the bell,
// even where the site already has the permission (another profile, a policy).
const PREF_KEY = 'conclave.notify';
const FRESH_MS = 5 * 60 * 1000; // older messages (a replay after a reconnect) never notify

let ctx = null;
const notified = new Set(); // "channel:seq" already shown
let lastBadge = -1;

/**
 * Wires the notification controls. `c` provides: `api`, `me()`, `current()` (the channel
 * shown), `channel(name)`, `displayName(u)`, `isDm(c)`, `channelLabel(c)`, `openChannel(name)`,
 * `setMuted(name, muted)`, `errorText(e)`.
 */
export function initNotify(c) {
  ctx = c;
  const bell = document.getElementById('btn-notify');
  if (bell) bell.addEventListener('click', onBellClick);
  const mute = document.getElementById('btn-mute');
  if (mute) mute.addEventListener('click', () => toggleMute());
  // A click on a notification, relayed by the service worker to this page.
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.addEventListener('message', (e) => {
      const d = e.data || {};
      if (d.type === 'open-channel' && typeof d.channel === 'string') {
        window.focus();
        ctx.openChannel(d.channel);
      }
    });
  }
  renderBell();
}

// ---- permission and the user's switch ----------------------------------------------------------

function supported() {
  return typeof Notification !== 'undefined';
}

function prefOn() {
  try {
    return localStorage.getItem(PREF_KEY) === 'on';
  } catch {
    return false;
  }
}

function setPref(on) {
  try {
    localStorage.setItem(PREF_KEY, on ? 'on' : 'off');
  } catch {
    // Storage disabled: the switch lasts until reload.
  }
}

/** Whether notifications would be shown now (permission granted and the switch on). */
export function notificationsOn() {
  return supported() && Notification.permission === 'granted' && prefOn();
}

async function onBellClick() {
  if (!supported()) {
    toast('This browser cannot show desktop notifications.', 'error');
    return;
  }
  if (Notification.permission === 'denied') {
    toast('Notifications are blocked for this site. Allow them in the browser’s site settings.', 'error', 7000);
  } else if (Notification.permission === 'granted') {
    setPref(!prefOn());
    toast(prefOn() ? 'Desktop notifications are on.' : 'Desktop notifications are off.');
  } else {
    // Asked here only: a click is the user gesture browsers require.
    const answer = await Notification.requestPermission();
    setPref(answer === 'granted');
    if (answer === 'granted') toast('Desktop notifications are on. They need Conclave open in a tab or installed.');
  }
  renderBell();
}

export function renderBell() {
  const bell = document.getElementById('btn-notify');
  if (!bell) return;
  const on = notificationsOn();
  const label = !supported()
    ? 'Desktop notifications are not supported by this browser'
    : Notification.permission === 'denied'
      ? 'Desktop notifications are blocked by the browser'
      : on
        ? 'Desktop notifications on (turn off)'
        : 'Turn on desktop notifications';
  bell.setAttribute('aria-label', label);
  bell.title = label;
  bell.setAttribute('aria-pressed', on ? 'true' : 'false');
  bell.dataset.state = on ? 'on' : 'off';
  bell.replaceChildren(icon(on ? 'bell' : 'bellOff', 18));
}

// ---- mute --------------------------------------------------------------------------------------

/** The mute button in the channel header: its label, pressed state and visibility. */
export function renderMuteButton(c) {
  const btn = document.getElementById('btn-mute');
  if (!btn) return;
  btn.hidden = !(c && c.member);
  if (!c) return;
  const muted = !!c.muted;
  const label = muted ? 'Unmute channel' : 'Mute channel';
  btn.setAttribute('aria-pressed', muted ? 'true' : 'false');
  btn.setAttribute('aria-label', label);
  btn.title = muted ? 'Muted: no notifications or badge count. Unmute' : 'Mute: no notifications or badge count';
  btn.dataset.channel = c.name;
  btn.replaceChildren(icon(muted ? 'bellOff' : 'bell', 18));
}

/** Flips the mute setting of the channel shown (or `name`), stored in the cluster. */
export async function toggleMute(name) {
  const channel = name || document.getElementById('btn-mute')?.dataset.channel;
  const c = channel && ctx.channel(channel);
  if (!c) return;
  const muted = !c.muted;
  try {
    const res = await ctx.api('PUT', `/api/v1/channels/${encodeURIComponent(channel)}/mute`, { muted });
    ctx.setMuted(channel, !!res.muted);
    announce(res.muted ? `${label(c)} muted` : `${label(c)} unmuted`);
  } catch (e) {
    toast(`Could not ${muted ? 'mute' : 'unmute'}: ${ctx.errorText(e)}`, 'error');
  }
}

function label(c) {
  return ctx.isDm(c) ? ctx.channelLabel(c) : `#${c.name}`;
}

// ---- title and badge ---------------------------------------------------------------------------

/**
 * The count that asks for attention: mentions in channels plus unread direct messages, over
 * the channels the user has not muted. Shown in the title and on the app badge.
 */
export function updateAttention(channels) {
  let count = 0;
  let unread = false;
  for (const c of channels) {
    if (!c.member || c.muted) continue;
    count += ctx.isDm(c) ? Math.max(c.unread || 0, c.mentions || 0) : c.mentions || 0;
    if (c.unread > 0) unread = true;
  }
  document.title = count ? `(${count}) Conclave` : unread ? '• Conclave' : 'Conclave';
  if (count !== lastBadge) {
    lastBadge = count;
    // The Badging API (installed apps); absent elsewhere, and allowed to fail.
    if (count && 'setAppBadge' in navigator) navigator.setAppBadge(count).catch(() => {});
    else if (!count && 'clearAppBadge' in navigator) navigator.clearAppBadge().catch(() => {});
  }
  return count;
}

// ---- new messages ------------------------------------------------------------------------------

/**
 * A message event arrived: announce it to screen readers when it is in the conversation on
 * screen, and raise a desktop notification when it asks for the user's attention and the page
 * is hidden.
 */
export function onNewMessage(m, c) {
  const me = ctx.me();
  if (!m || !c || m.author === me || m.deleted || m.seq == null) return;
  const key = `${m.channel}:${m.seq}`;
  if (notified.has(key)) return;
  notified.add(key);
  if (notified.size > 2000) notified.delete(notified.values().next().value);
  const who = ctx.displayName(m.author);
  const text = plainText(m.body).slice(0, 200);
  const visible = document.visibilityState === 'visible';
  if (visible && m.channel === ctx.current()) announce(`${who}: ${text}`);
  if (visible || c.muted || m.seq <= (c.last_read || 0)) return;
  if (m.ts_ms && Date.now() - m.ts_ms > FRESH_MS) return;
  const mentioned = !!m.channel_mention || (Array.isArray(m.mentions) && [me, 'channel', 'here'].some((u) => m.mentions.includes(u)));
  if (!mentioned && !ctx.isDm(c)) return;
  showNotification(ctx.isDm(c) ? who : `${who} in ${label(c)}`, text || 'New message', m.channel, key);
}

async function showNotification(title, body, channel, tag) {
  if (!notificationsOn()) return;
  const options = { body, tag, icon: '/icon-192.png', badge: '/icon-192.png', data: { channel, url: `/#/c/${encodeURIComponent(channel)}` } };
  try {
    const reg = 'serviceWorker' in navigator ? await navigator.serviceWorker.getRegistration() : null;
    if (reg) {
      await reg.showNotification(title, options);
      return;
    }
    // No service worker (not a secure context): a page notification, clicked here.
    const n = new Notification(title, options);
    n.onclick = () => {
      window.focus();
      ctx.openChannel(channel);
      n.close();
    };
  } catch (e) {
    console.warn('conclave: notification not shown', e);
  }
}

// ---- screen readers ----------------------------------------------------------------------------

/** Says `text` through the polite live region (never interrupts what is being read). */
export function announce(text) {
  const el = document.getElementById('announcer');
  if (!el) return;
  // Replacing the node (not just its text) makes repeated identical messages heard again.
  el.replaceChildren(h('p', { text }));
}
