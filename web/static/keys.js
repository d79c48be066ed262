// Keyboard access to the message lists (the timeline and the thread panel).
//
// Owns the roving focus of messages: each list is one Tab stop (the message last focused, or
// the newest one), ArrowUp / ArrowDown / Home / End move between messages, and Tab from a
// focused message reaches its actions (shown while focus is inside it, see
// `.message:focus-within .actions`). Must never change what is rendered or steal focus from
// the composer: it only sets `tabindex` and moves focus in answer to a key press inside a list.

const LISTS = ['messages', 'thread-list'];

export function initKeys() {
  for (const id of LISTS) watch(id);
  // The thread list is rebuilt whenever the panel opens: watch the panel for it.
  const panel = document.getElementById('panel-body');
  if (panel) {
    new MutationObserver(() => {
      const list = document.getElementById('thread-list');
      if (list && !list._keys) watch('thread-list');
    }).observe(panel, { childList: true });
  }
}

function watch(id) {
  const list = document.getElementById(id);
  if (!list || list._keys) return;
  list._keys = { active: null };
  new MutationObserver(() => sync(list)).observe(list, { childList: true });
  list.addEventListener('focusin', (e) => {
    const msg = e.target.closest('.message');
    if (msg && list.contains(msg)) {
      list._keys.active = msg;
      sync(list);
    }
  });
  list.addEventListener('keydown', (e) => onKey(list, e));
  sync(list);
}

function messages(list) {
  return [...list.querySelectorAll(':scope > .message')];
}

/** Exactly one message of the list is in the Tab order. */
function sync(list) {
  const all = messages(list);
  let active = list._keys.active;
  if (!active || !active.isConnected || !list.contains(active)) active = all[all.length - 1] || null;
  list._keys.active = active;
  for (const m of all) {
    const t = m === active ? '0' : '-1';
    if (m.getAttribute('tabindex') !== t) m.setAttribute('tabindex', t);
  }
}

function onKey(list, e) {
  // Only on a message itself: arrows inside an edit box or a button keep their meaning.
  if (!e.target.classList || !e.target.classList.contains('message')) return;
  const all = messages(list);
  const i = all.indexOf(e.target);
  let next = null;
  if (e.key === 'ArrowUp') next = all[Math.max(0, i - 1)];
  else if (e.key === 'ArrowDown') next = all[Math.min(all.length - 1, i + 1)];
  else if (e.key === 'Home') next = all[0];
  else if (e.key === 'End') next = all[all.length - 1];
  if (!next) return;
  e.preventDefault();
  list._keys.active = next;
  sync(list);
  next.focus();
  next.scrollIntoView({ block: 'nearest' });
}
