// The chat page: a room's history over fetch, then live messages and presence of all the
// user's rooms over one stream per browser, shared by its tabs (a SharedWorker's EventSource),
// which resumes every room after a reconnect (no gap, no duplicate).
// This module only wires the page's controls to the modules that do the work:
//   rooms.js (which room, its history)  sidebar.js, unread.js (the rooms, their unread counts)
//   connection.js (this tab's end of the stream)  stream-hub.js, stream-worker.js (the stream)
//   follow.js (the stream's events)  render.js (the screen)  send.js (posting, retried)
//   auth.js (tokens)  ui.js, view.js, names.js, storage.js (state)

import { giveToken, takeFragmentToken } from "./auth.js";
import { reconnect, setState, startStream } from "./connection.js";
import { onStreamEvent } from "./follow.js";
import { DEFAULT_ROOM, ROOM_PATTERN, validUser } from "./names.js";
import { clearUnread, isAtBottom, markOwnMessages, scrollToBottom } from "./render.js";
import { leaveRoom, openRoom, resumeRoom, roomFromUrl, switchRoom, wantRooms } from "./rooms.js";
import { send } from "./send.js";
import { renderCount, renderRooms } from "./sidebar.js";
import { KEYS, readText, writeText } from "./storage.js";
import { currentUser, showError, ui } from "./ui.js";
import { marksChanged, onUnreadChange } from "./unread.js";
import { current } from "./view.js";

function nameChanged() {
  const user = currentUser();
  ui.user.setAttribute("aria-invalid", user || ui.user.value === "" ? "false" : "true");
  if (!user) return;
  const renamed = user !== readText(KEYS.user);
  writeText(KEYS.user, user);
  markOwnMessages();
  if (renamed) wantRooms(); // presence follows the stream's ?user=: it reopens, resuming
}

function submit() {
  nameChanged();
  send();
}

/** Hand a token to the server; once the cookie holds it, the room opens (or goes on). */
async function acceptToken(token, { fromLink = false } = {}) {
  const result = await giveToken(token);
  if (!result.ok) {
    if (fromLink) showError(`The link's token: ${result.message}`, null);
    else ui.tokenError.textContent = result.message;
    return false;
  }
  ui.tokenInput.value = "";
  // Posting with a token posts as its user: take that name so what is sent matches it.
  if (result.user && validUser(result.user) === result.user && result.user !== currentUser()) {
    ui.user.value = result.user;
    writeText(KEYS.user, result.user);
    markOwnMessages();
  }
  showError("", null);
  return true;
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});

ui.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey
      && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    submit();
  }
});

ui.user.addEventListener("change", nameChanged);

ui.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const room = ui.roomInput.value.trim();
  if (!ROOM_PATTERN.test(room)) {
    ui.roomInput.setAttribute("aria-invalid", "true");
    showError("Room names are 1-64 letters, digits, _ or -, starting with a letter or digit.");
    ui.roomInput.focus();
    return;
  }
  ui.roomInput.setAttribute("aria-invalid", "false");
  showError("", null);
  switchRoom(room);
  ui.text.focus();
});

ui.roomList.addEventListener("click", (event) => {
  const leave = event.target.closest("button.room-leave");
  if (leave) {
    leaveRoom(leave.dataset.room);
    return;
  }
  const link = event.target.closest("a[data-room]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  switchRoom(link.dataset.room);
});

ui.tokenForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  ui.tokenError.textContent = "";
  if (await acceptToken(ui.tokenInput.value)) {
    resumeRoom();
    ui.text.focus();
  }
});

window.addEventListener("popstate", () => {
  const { room } = roomFromUrl();
  if (room !== current()?.room) openRoom(room);
});

// A `#token=` link opened in a tab already showing the page changes only the fragment.
window.addEventListener("hashchange", async () => {
  const token = takeFragmentToken();
  if (token !== null && (await acceptToken(token, { fromLink: true }))) resumeRoom();
});

ui.scroller.addEventListener("scroll", () => {
  if (isAtBottom()) clearUnread();
});
ui.newMessages.addEventListener("click", () => {
  scrollToBottom();
  ui.scroller.focus();
});

window.addEventListener("offline", () => {
  if (!current()?.locked) setState("offline");
});
// The stream says "ready" again if it is open, or comes back at once (resuming) if it is not.
window.addEventListener("online", reconnect);

// Other tabs of this browser changed what all share: the rooms, how far they were read, the name.
window.addEventListener("storage", (event) => {
  if (event.key === KEYS.rooms || event.key === null) {
    renderRooms();
    wantRooms();
  }
  if (event.key === KEYS.read || event.key === null) marksChanged();
  const user = event.key === KEYS.user ? validUser(event.newValue ?? "") : null;
  if (user && user !== currentUser()) {
    ui.user.value = user;
    markOwnMessages();
    wantRooms();
  }
});
onUnreadChange(renderCount);

// --- start --------------------------------------------------------------------------------------

ui.user.value = readText(KEYS.user) ?? "";
startStream(onStreamEvent);
const start = roomFromUrl();
const linkToken = takeFragmentToken();
if (linkToken !== null) await acceptToken(linkToken, { fromLink: true }); // before the room asks
openRoom(start.room);
if (start.invalid !== null) {
  showError(`"${start.invalid}" is not a room name; showing #${DEFAULT_ROOM}.`, null);
}
(currentUser() ? ui.text : ui.user).focus();
