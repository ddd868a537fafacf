// Rooms: which one the address names, opening one (its history, read up to its newest message),
// joining and leaving the sidebar's rooms, and what the page asks of the shared stream: every
// sidebar room (for the unread counts) and the room on screen.

import { hideLock, refusal } from "./auth.js";
import { lockRoom, setState, unlock, want } from "./connection.js";
import { DEFAULT_ROOM, ROOM_PATTERN } from "./names.js";
import { clearScreen, show, showNotice } from "./render.js";
import { addRoom, clearLocked, myRooms, removeRoom, renderRooms } from "./sidebar.js";
import { currentUser, setComposer, ui } from "./ui.js";
import { forgetUnread, hasMark, markRead, noteUnread } from "./unread.js";
import { beginView, current, isCurrent } from "./view.js";

const HISTORY_LIMIT = 100;

/** The room `?room=` names: {room, invalid} (invalid: a name that is not one, else null). */
export function roomFromUrl() {
  const requested = new URLSearchParams(location.search).get("room");
  if (requested === null || requested === "") return { room: DEFAULT_ROOM, invalid: null };
  return ROOM_PATTERN.test(requested)
    ? { room: requested, invalid: null }
    : { room: DEFAULT_ROOM, invalid: requested };
}

/** Ask the stream for the rooms this tab needs now, present as the name in the Name field. */
export function wantRooms() {
  const view = current();
  want(view ? [...myRooms(), view.room] : myRooms(), currentUser());
}

/** The room's recent messages, oldest first: {status, messages} (none for 401 and 403). */
async function fetchHistory(room, signal) {
  const url = `/rooms/${encodeURIComponent(room)}/messages?limit=${HISTORY_LIMIT}`;
  const response = await fetch(url, { signal });
  if (response.status === 401 || response.status === 403) {
    return { status: response.status, messages: [] };
  }
  if (!response.ok) throw new Error(`history: ${response.status}`);
  return { status: response.status, messages: (await response.json()).messages };
}

/** Show the room's recent messages (merged with what is on screen); the HTTP status. */
async function loadHistory(view, { initial }) {
  const { status, messages } = await fetchHistory(view.room, view.abort.signal);
  if (status === 401 || status === 403 || !isCurrent(view)) return status;
  // The first load starts at the bottom; a later one adds what the stream may have missed.
  view.loadingHistory = initial;
  ui.messages.setAttribute("aria-busy", "true");
  try {
    for (const message of messages) show(message);
  } finally {
    view.loadingHistory = false;
    ui.messages.setAttribute("aria-busy", "false");
  }
  view.historyLoaded = true;
  markRead(view.room, messages.at(-1)?.id ?? "0-0"); // "0-0": read, and empty so far
  return status;
}

export function openRoom(room) {
  const view = beginView(room);
  clearScreen(room);
  hideLock();
  setComposer({ locked: false });
  addRoom(room);
  renderRooms();
  setState("connecting"); // until the stream says it has the room
  wantRooms();

  loadHistory(view, { initial: true })
    .then((status) => {
      if (isCurrent(view) && (status === 401 || status === 403)) lockRoom(view, refusal(status));
    })
    .catch((error) => {
      if (isCurrent(view) && error.name !== "AbortError") {
        showNotice("Earlier messages could not be loaded.");
      }
    })
    .finally(() => {
      if (isCurrent(view)) ui.messages.setAttribute("aria-busy", "false");
    });
}

/** The stream (re)opened with the room on screen: add whatever it may have missed meanwhile. */
export function catchUp(view) {
  if (view.locked) return;
  loadHistory(view, { initial: false }).catch(() => {}); // the stream goes on regardless
}

/** Count the room's unread messages in its recent history (a room never read starts read). */
export async function countUnread(room) {
  let recent;
  try {
    recent = await fetchHistory(room);
  } catch {
    return;
  }
  if (recent.status !== 200 || current()?.room === room) return;
  if (!hasMark(room)) markRead(room, recent.messages.at(-1)?.id ?? "0-0");
  else for (const message of recent.messages) noteUnread(room, message.id);
}

export function switchRoom(room) {
  if (room === current()?.room) return;
  history.pushState(null, "", `?room=${encodeURIComponent(room)}`);
  openRoom(room);
}

/** Take the room off the sidebar; leaving the room on screen opens the next one. */
export function leaveRoom(room) {
  const index = myRooms().indexOf(room);
  removeRoom(room);
  forgetUnread(room);
  if (room === current()?.room) {
    const rooms = myRooms();
    switchRoom(rooms[Math.min(index, rooms.length - 1)] ?? DEFAULT_ROOM);
  } else {
    renderRooms();
    wantRooms();
  }
}

/** The room on screen may be read again (a token was given, here or in another tab): a room
 * already shown goes on (the stream's next ready fills in what it missed), one never shown
 * opens afresh. */
export function reopenRoom() {
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
  wantRooms();
}

/** After a token is accepted here: the stream tries the rooms it was refused again. */
export function resumeRoom() {
  clearLocked();
  unlock();
  reopenRoom();
}
