// What the page shows of the room: messages in id order, notices, who is online and where the
// unread messages begin. Every user-supplied string goes in as text, never markup.

import { compareIds } from "./names.js";
import { currentUser, ui } from "./ui.js";
import { current } from "./view.js";

const AT_BOTTOM_SLACK_PX = 48;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

function localTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return { short: "", full: iso };
  const today = new Date().toDateString() === date.toDateString();
  return {
    short: (today ? timeFormat : dateTimeFormat).format(date),
    full: fullFormat.format(date),
  };
}

/** A stable colour slot (0-7) for a name, so each person keeps one accent. */
function hueSlot(name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 8;
}

/** Empty the screen for `room`: no messages, nobody online, nothing unread. */
export function clearScreen(room) {
  ui.messages.replaceChildren();
  ui.messages.setAttribute("aria-busy", "true"); // until its history is in
  ui.online.replaceChildren();
  ui.onlineCount.textContent = "0";
  ui.newMessages.hidden = true;
  ui.roomName.textContent = `#${room}`;
  ui.roomInput.value = room;
  document.title = `#${room} · sse-chat`;
}

export function isAtBottom() {
  const s = ui.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight <= AT_BOTTOM_SLACK_PX;
}

export function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
  clearUnread();
}

export function clearUnread() {
  const view = current();
  if (!view) return;
  view.unread = 0;
  ui.newMessages.hidden = true;
}

function noteUnread(view, item) {
  if (view.unread === 0) {
    // Mark where the reader's unread messages begin: move the divider there.
    view.divider?.remove();
    const divider = document.createElement("li");
    divider.className = "divider";
    divider.setAttribute("role", "separator");
    divider.textContent = "New messages";
    item.before(divider);
    view.divider = divider;
  }
  view.unread += 1;
  ui.newMessages.textContent =
    view.unread === 1 ? "1 new message ↓" : `${view.unread} new messages ↓`;
  ui.newMessages.hidden = false;
}

function youMark() {
  const you = document.createElement("span");
  you.className = "you";
  you.textContent = " (you)";
  return you;
}

function renderMessage(message) {
  const item = document.createElement("li");
  item.className = `message hue-${hueSlot(message.user)}`;
  item.dataset.id = message.id;
  item.dataset.user = message.user;

  const meta = document.createElement("div");
  meta.className = "meta";
  const user = document.createElement("span");
  user.className = "user";
  user.textContent = message.user;
  const time = document.createElement("time");
  const when = localTime(message.ts);
  time.dateTime = message.ts;
  time.textContent = when.short;
  time.title = message.replica ? `${when.full} · via ${message.replica}` : when.full;
  meta.append(user, youMark(), time);

  const text = document.createElement("p");
  text.className = "text";
  text.textContent = message.text;

  item.append(meta, text);
  item.classList.toggle("own", message.user === currentUser());
  return item;
}

/** Mark as "own" exactly the messages of the name now in the Name field. */
export function markOwnMessages() {
  const user = currentUser();
  for (const item of ui.messages.querySelectorAll("li.message")) {
    item.classList.toggle("own", item.dataset.user === user);
  }
}

/** Put a message on screen once, in id order (from history, the stream or a POST's answer). */
export function show(message, { own = false } = {}) {
  const view = current();
  if (!view || message.room !== view.room) return;
  if (view.seen.has(message.id)) return;
  view.seen.add(message.id);

  const stick = own || isAtBottom();
  const item = renderMessage(message);
  // Usually the newest: append. A message we posted can arrive (from the POST) before older ones
  // from the stream; those go in before it.
  let after = ui.messages.lastElementChild;
  while (after?.dataset.id && compareIds(after.dataset.id, message.id) > 0) {
    after = after.previousElementSibling;
  }
  if (after) after.after(item);
  else ui.messages.prepend(item);

  if (stick || view.loadingHistory) scrollToBottom();
  else noteUnread(view, item);
}

export function showNotice(text) {
  const item = document.createElement("li");
  item.className = "notice";
  item.textContent = text;
  const stick = isAtBottom();
  ui.messages.append(item);
  if (stick) scrollToBottom();
}

export function showPresence(data) {
  const view = current();
  if (!view || data.room !== view.room || !Array.isArray(data.users)) return;
  const user = currentUser();
  ui.online.replaceChildren(
    ...data.users.map((name) => {
      const item = document.createElement("li");
      item.className = `person hue-${hueSlot(name)}`;
      item.dataset.user = name;
      item.textContent = name;
      if (name === user) item.append(youMark());
      item.classList.toggle("own", name === user);
      return item;
    }),
  );
  ui.onlineCount.textContent = String(data.users.length);
}
