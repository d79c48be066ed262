// Conclave service worker: caches the application shell so the client opens (and can fail over
// to another node) even when the node that served it is down, and shows the desktop notifications
// of notify.js (a click focuses the conversation). Never caches the API.
//
// The server replaces the version placeholder below with a hash of every embedded file, so
// any upgrade installs a fresh cache and deletes the old one.

const VERSION = '__CONCLAVE_ASSET_HASH__';
const CACHE = `conclave-shell-${VERSION}`;
const SHELL = [
  '/',
  '/index.html',
  '/app.js',
  '/conn.js',
  '/ui.js',
  '/dialogs.js',
  '/files.js',
  '/format.js',
  '/notify.js',
  '/keys.js',
  '/search.js',
  '/style.css',
  '/format.css',
  '/manifest.webmanifest',
  '/icon.svg',
  '/icon-192.png',
  '/icon-512.png',
  '/icon-maskable-512.png',
  '/apple-touch-icon.png',
];

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      // `reload` bypasses the HTTP cache so the new version never caches stale files.
      await cache.addAll(SHELL.map((url) => new Request(url, { cache: 'reload' })));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      const names = await caches.keys();
      await Promise.all(names.filter((n) => n.startsWith('conclave-shell-') && n !== CACHE).map((n) => caches.delete(n)));
      await self.clients.claim();
    })(),
  );
});

/** Paths that must always go to the network: the API, health checks, the WebSocket. */
function isDynamic(url) {
  return url.pathname.startsWith('/api/') || url.pathname === '/readyz' || url.pathname === '/healthz' || url.pathname.startsWith('/raft/');
}

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  // Other nodes' origins (failover) and every dynamic path: not ours to cache.
  if (url.origin !== self.location.origin || isDynamic(url)) return;

  if (req.mode === 'navigate' || url.pathname === '/' || url.pathname === '/index.html') {
    // Network first, so an upgraded server shows up at once; the cached shell when offline.
    event.respondWith(
      (async () => {
        const cache = await caches.open(CACHE);
        try {
          const res = await fetch(req); // index.html is served with Cache-Control: no-cache
          if (res.ok && url.search === '') cache.put('/index.html', res.clone());
          return res;
        } catch {
          return (await cache.match('/index.html')) || (await cache.match('/')) || Response.error();
        }
      })(),
    );
    return;
  }

  if (SHELL.includes(url.pathname)) {
    // Cache first: the cache is versioned, so it only ever holds files of this version.
    event.respondWith(
      (async () => {
        const cache = await caches.open(CACHE);
        const hit = await cache.match(url.pathname);
        if (hit) return hit;
        const res = await fetch(req);
        if (res.ok) cache.put(url.pathname, res.clone());
        return res;
      })(),
    );
  }
});

// A click on a notification (shown by notify.js through this worker): focus a window of the app
// and open the conversation there, or open a new window on it.
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  const channel = typeof data.channel === 'string' ? data.channel : null;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      const mine = windows.find((w) => new URL(w.url).origin === self.location.origin);
      if (mine) {
        await mine.focus();
        if (channel) mine.postMessage({ type: 'open-channel', channel });
        return;
      }
      await self.clients.openWindow(channel ? `/#/c/${encodeURIComponent(channel)}` : '/');
    })(),
  );
});
