// Rooms: which one the address names, the recent ones (kept in localStorage), and opening one:
// its history first, then its stream from the newest message the history held.

import { hideLock, refusal } from "./auth.js";
import { connect, lockRoom, setState } from "./connection.js";
import { DEFAULT_ROOM, ROOM_PATTERN } from "./names.js";
import { clearScreen, show, showNotice } from "./render.js";
import { KEYS, readJson, writeJson } from "./storage.js";
import { setComposer, ui } from "./ui.js";
import { beginView, current, isCurrent } from "./view.js";

const HISTORY_LIMIT = 100;
const RECENT_ROOMS_KEPT = 8;

/** The room `?room=` names: {room, invalid} (invalid: a name that is not one, else null). */
export function roomFromUrl() {
  const requested = new URLSearchParams(location.search).get("room");
  if (requested === null || requested === "") return { room: DEFAULT_ROOM, invalid: null };
  return ROOM_PATTERN.test(requested)
    ? { room: requested, invalid: null }
    : { room: DEFAULT_ROOM, invalid: requested };
}

function recentRooms() {
  const rooms = readJson(KEYS.rooms, []);
  return Array.isArray(rooms) ? rooms.filter((r) => typeof r === "string" && ROOM_PATTERN.test(r)) : [];
}

function rememberRoom(room) {
  const rooms = [room, ...recentRooms().filter((r) => r !== room)].slice(0, RECENT_ROOMS_KEPT);
  writeJson(KEYS.rooms, rooms);
  renderRecentRooms(room);
}

function renderRecentRooms(current) {
  ui.recentRooms.replaceChildren(
    ...recentRooms().map((room) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = `?room=${encodeURIComponent(room)}`;
      link.textContent = `#${room}`;
      link.dataset.room = room;
      if (room === current) link.setAttribute("aria-current", "page");
      item.append(link);
      return item;
    }),
  );
}

/** Show the room's recent messages; the HTTP status (401 and 403 show nothing). */
async function loadHistory(view) {
  const response = await fetch(
    `/rooms/${encodeURIComponent(view.room)}/messages?limit=${HISTORY_LIMIT}`,
    { signal: view.abort.signal },
  );
  if (response.status === 401 || response.status === 403) return response.status;
  if (!response.ok) throw new Error(`history: ${response.status}`);
  const body = await response.json();
  if (!isCurrent(view)) return response.status;
  view.loadingHistory = true;
  ui.messages.setAttribute("aria-busy", "true");
  try {
    for (const message of body.messages) show(message, { fromStream: true });
  } finally {
    view.loadingHistory = false;
    ui.messages.setAttribute("aria-busy", "false");
  }
  view.historyLoaded = true;
  return response.status;
}

export function openRoom(room) {
  const view = beginView(room);
  clearScreen(room);
  hideLock();
  setComposer({ locked: false });
  rememberRoom(room);
  setState("connecting");

  loadHistory(view)
    .then((status) => {
      if (!isCurrent(view)) return;
      if (status === 401 || status === 403) lockRoom(view, refusal(status));
      else startStream(view);
    })
    .catch((error) => {
      if (!isCurrent(view) || error.name === "AbortError") return;
      showNotice("Earlier messages could not be loaded.");
      startStream(view);
    });
}

function startStream(view) {
  // With nothing in history, resume from the very start: whatever was posted between the
  // history request and the stream opening is then replayed instead of lost.
  view.lastId ??= "0-0";
  connect(view);
}

export function switchRoom(room) {
  if (room === current()?.room) return;
  history.pushState(null, "", `?room=${encodeURIComponent(room)}`);
  openRoom(room);
}

/** After a token is accepted: a room already shown goes on from its last message (nothing
 * missed, nothing twice); one never shown opens afresh. */
export function resumeRoom() {
  const view = current();
  if (!view) return;
  if (!view.historyLoaded) {
    openRoom(view.room);
    return;
  }
  view.locked = null;
  hideLock();
  setComposer({ locked: false });
  setState("connecting");
  startStream(view);
}
