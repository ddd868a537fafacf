// The chat page: history over fetch, then live messages and presence over EventSource, resuming
// after every reconnect from the last message id the stream delivered (no gap, no duplicate).
// This module only wires the page's controls to the modules that do the work:
//   rooms.js (which room, its history)  connection.js (its stream)  render.js (the screen)
//   send.js (posting, retried)  auth.js (tokens)  ui.js, view.js, names.js, storage.js (state)

import { giveToken, takeFragmentToken } from "./auth.js";
import { connect, setState } from "./connection.js";
import { DEFAULT_ROOM, ROOM_PATTERN, validUser } from "./names.js";
import { clearUnread, isAtBottom, markOwnMessages, scrollToBottom } from "./render.js";
import { openRoom, resumeRoom, roomFromUrl, switchRoom } from "./rooms.js";
import { send } from "./send.js";
import { KEYS, readText, writeText } from "./storage.js";
import { currentUser, showError, ui } from "./ui.js";
import { current } from "./view.js";

function nameChanged() {
  const user = currentUser();
  ui.user.setAttribute("aria-invalid", user || ui.user.value === "" ? "false" : "true");
  if (!user) return;
  writeText(KEYS.user, user);
  markOwnMessages();
  // Presence follows the stream's ?user=: reopen it (resuming, so nothing is missed).
  const view = current();
  if (view.source && !view.locked && view.streamUser !== user) connect(view);
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

ui.recentRooms.addEventListener("click", (event) => {
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

window.addEventListener("offline", () => setState("offline"));
window.addEventListener("online", () => {
  const view = current();
  if (!view || view.locked) return;
  // Come back at once rather than waiting out a backoff; resume covers what was missed.
  if (!view.source || view.source.readyState !== EventSource.OPEN) connect(view);
  else setState("connected");
});

// --- start --------------------------------------------------------------------------------------

ui.user.value = readText(KEYS.user) ?? "";
const start = roomFromUrl();
const linkToken = takeFragmentToken();
if (linkToken !== null) await acceptToken(linkToken, { fromLink: true }); // before the room asks
openRoom(start.room);
if (start.invalid !== null) {
  showError(`"${start.invalid}" is not a room name; showing #${DEFAULT_ROOM}.`, null);
}
(currentUser() ? ui.text : ui.user).focus();
