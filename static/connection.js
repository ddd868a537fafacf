// This tab's end of the browser's one stream (stream-hub.js): through the SharedWorker that all
// the browser's tabs share, or, where SharedWorker is missing, through a stream of the tab's own.
// Either way the tab says which rooms it needs and gets their events (see follow.js).

import { showLock } from "./auth.js";
import { setLocked } from "./sidebar.js";
import { StreamHub } from "./stream-hub.js";
import { setComposer, ui } from "./ui.js";

const WORKER_URL = "/static/stream-worker.js";

const STATE_LABELS = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  offline: "offline",
  "needs-token": "needs a token",
  forbidden: "no access",
  "token-expired": "token expired",
};

let channel = null; // postMessage goes to the stream: the worker's port, or the tab's own hub
let handle = () => {};
let lastWant = null; // repeated to a stream that starts over (a fallback, a page back from cache)

export function setState(state) {
  if (ui.connection.dataset.state === state) return;
  ui.connection.dataset.state = state;
  ui.connection.textContent = STATE_LABELS[state];
  document.body.dataset.connection = state;
}

/** Stop showing the room: the server refuses this browser the room (see auth.js `refusal`). */
export function lockRoom(view, kind) {
  view.locked = kind;
  setLocked(view.room, true);
  setState(kind);
  setComposer({ locked: true });
  showLock(kind, view.room);
}

/** A stream of this tab's own, for browsers without SharedWorker (or when it fails to start). */
function ownChannel() {
  const hub = new StreamHub();
  // Asynchronous like a port, so that a handler may send to the stream again.
  const tab = { postMessage: (message) => queueMicrotask(() => handle(message)) };
  return { postMessage: (message) => hub.receive(tab, message) };
}

function sharedChannel() {
  let worker;
  try {
    worker = new SharedWorker(WORKER_URL, { type: "module", name: "sse-chat-stream" });
  } catch {
    return null;
  }
  let heard = false;
  worker.addEventListener("error", () => {
    if (heard) return; // it runs: its own failures come as "failure" messages
    console.warn("sse-chat: the shared stream worker did not start; this tab streams alone");
    channel = ownChannel();
    if (lastWant) channel.postMessage(lastWant);
  });
  worker.port.addEventListener("message", (event) => {
    heard = true;
    handle(event.data);
  });
  worker.port.start();
  return worker.port;
}

/** Connect this tab to the stream; `onEvent` gets each of its events (see stream-hub.js). */
export function startStream(onEvent) {
  handle = onEvent;
  channel = (typeof SharedWorker === "function" && sharedChannel()) || ownChannel();
  window.addEventListener("pagehide", () => channel.postMessage({ type: "bye" }));
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && lastWant) channel.postMessage(lastWant);
  });
}

/** The rooms this tab needs now (all of them) and the name to be present as; the stream
 * answers with "ready" once it has them all (at once if it had them already). */
export function want(rooms, user) {
  lastWant = { type: "want", rooms: [...new Set(rooms)], user };
  channel.postMessage(lastWant);
}

/** A token was given: the stream tries the rooms it was refused again. */
export function unlock() {
  channel.postMessage({ type: "unlock" });
}

/** The network is back: come back at once rather than waiting out a backoff. */
export function reconnect() {
  channel.postMessage({ type: "reconnect" });
}
