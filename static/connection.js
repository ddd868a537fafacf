// The room's live stream: one EventSource that resumes from the last message id after every
// reconnect (no gap, no duplicate). EventSource comes back by itself after a stream ends; it
// gives up for good only on a refusal, and only then does the page ask why (a token, or not).

import { refusal, showLock } from "./auth.js";
import { show, showNotice, showPresence } from "./render.js";
import { currentUser, setComposer, ui } from "./ui.js";
import { isCurrent } from "./view.js";

const OFFLINE_AFTER_MS = 20000;

const STATE_LABELS = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  offline: "offline",
  "needs-token": "needs a token",
  forbidden: "no access",
  "token-expired": "token expired",
};

export function setState(state) {
  if (ui.connection.dataset.state === state) return;
  ui.connection.dataset.state = state;
  ui.connection.textContent = STATE_LABELS[state];
  document.body.dataset.connection = state;
}

function streamUrl(view) {
  const query = new URLSearchParams();
  if (view.streamUser) query.set("user", view.streamUser);
  // Only for a new EventSource; its own reconnects send Last-Event-ID, which the server prefers.
  if (view.lastId) query.set("lastEventId", view.lastId);
  const qs = query.toString();
  return `/rooms/${encodeURIComponent(view.room)}/events${qs ? `?${qs}` : ""}`;
}

/** Stop the room's stream: the server refuses this browser the room (see auth.js `refusal`). */
export function lockRoom(view, kind) {
  clearTimeout(view.retryTimer);
  view.source?.close();
  view.locked = kind;
  setState(kind);
  setComposer({ locked: true });
  showLock(kind, view.room);
}

export function connect(view) {
  clearTimeout(view.retryTimer);
  view.source?.close();
  view.streamUser = currentUser();
  const source = new EventSource(streamUrl(view));
  view.source = source;
  const live = () => isCurrent(view) && view.source === source;

  source.addEventListener("ready", (event) => {
    if (!live()) return;
    view.failures = 0;
    view.failingSince = null;
    ui.replica.textContent = JSON.parse(event.data).replica ?? "?";
    setState("connected");
  });
  source.addEventListener("message", (event) => {
    if (live()) show(JSON.parse(event.data), { fromStream: true });
  });
  source.addEventListener("presence", (event) => {
    if (live()) showPresence(JSON.parse(event.data));
  });
  source.addEventListener("gap", () => {
    if (live()) showNotice("Some messages from while you were away are no longer available.");
  });
  source.addEventListener("unavailable", (event) => {
    // A full or draining replica ends the stream with a retry and EventSource comes back by
    // itself; a token's expiry ends it for good: coming back needs a new token.
    if (live() && JSON.parse(event.data).error === "token_expired") lockRoom(view, "token-expired");
  });
  source.addEventListener("error", () => {
    if (!live()) return;
    view.failures += 1;
    view.failingSince ??= Date.now();
    // Reconnecting is normal (a replica restarts); offline is when it has not worked for a while.
    const offline = !navigator.onLine || Date.now() - view.failingSince > OFFLINE_AFTER_MS;
    setState(offline ? "offline" : "reconnecting");
    if (source.readyState === EventSource.CLOSED) afterRefusal(view, source);
  });
}

/** The status a read of the room gets now (0: no answer), to learn why a stream was refused. */
async function accessStatus(view) {
  const url = `/rooms/${encodeURIComponent(view.room)}/messages?limit=1`;
  try {
    return (await fetch(url, { signal: view.abort.signal })).status;
  } catch {
    return 0;
  }
}

async function afterRefusal(view, source) {
  const status = await accessStatus(view);
  if (!isCurrent(view) || view.source !== source) return;
  if (status === 401 || status === 403) {
    lockRoom(view, refusal(status)); // retrying cannot help: a token can
    return;
  }
  // Anything else may pass: start a new stream, resuming from the last id, with backoff.
  const delay = Math.min(1000 * 2 ** Math.min(view.failures - 1, 4), 15000);
  view.retryTimer = setTimeout(() => isCurrent(view) && connect(view), delay);
}
