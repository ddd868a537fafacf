// The sidebar: the rooms this browser follows (kept in localStorage, shared by its tabs), each a
// link with its unread count and a button to leave it. Joining a room (the room form, a link)
// adds it; the counts come from unread.js.

import { ROOM_PATTERN } from "./names.js";
import { KEYS, readJson, writeJson } from "./storage.js";
import { ui } from "./ui.js";
import { unreadCount } from "./unread.js";
import { current } from "./view.js";

// With the rooms open in tabs besides, a stream of them all stays within the server's 50.
const ROOMS_KEPT = 40;

const locked = new Set(); // rooms the server refuses this browser, until a token is given

/** The sidebar's rooms, in the order they were joined. */
export function myRooms() {
  const rooms = readJson(KEYS.rooms, []);
  return Array.isArray(rooms)
    ? [...new Set(rooms.filter((r) => typeof r === "string" && ROOM_PATTERN.test(r)))]
    : [];
}

export function addRoom(room) {
  const rooms = myRooms();
  if (!rooms.includes(room)) writeJson(KEYS.rooms, [...rooms, room].slice(-ROOMS_KEPT));
}

export function removeRoom(room) {
  writeJson(KEYS.rooms, myRooms().filter((r) => r !== room));
}

export function setLocked(room, isLocked) {
  if (isLocked) locked.add(room);
  else locked.delete(room);
  renderCount(room);
}

export function clearLocked() {
  for (const room of [...locked]) setLocked(room, false);
}

/** What a screen reader says for the room's link. */
function label(room) {
  const count = unreadCount(room);
  const parts = [`#${room}`];
  if (count > 0) parts.push(count === 1 ? "1 unread message" : `${count} unread messages`);
  if (locked.has(room)) parts.push("locked");
  return parts.join(", ");
}

function update(item) {
  const room = item.dataset.room;
  const count = unreadCount(room);
  const link = item.querySelector("a");
  const shown = count > 99 ? "99+" : String(count);
  link.querySelector(".unread").textContent = count === 0 ? "" : shown;
  link.setAttribute("aria-label", label(room));
  item.dataset.unread = String(count);
  item.toggleAttribute("data-locked", locked.has(room));
}

function entry(room, open) {
  const item = document.createElement("li");
  item.className = "room";
  item.dataset.room = room;

  const link = document.createElement("a");
  link.href = `?room=${encodeURIComponent(room)}`;
  link.dataset.room = room;
  if (room === open) link.setAttribute("aria-current", "page");
  const name = document.createElement("span");
  name.className = "room-label";
  name.textContent = `#${room}`;
  const badge = document.createElement("span");
  badge.className = "unread";
  badge.setAttribute("aria-hidden", "true"); // the link's label says it in words
  link.append(name, badge);

  const leave = document.createElement("button");
  leave.type = "button";
  leave.className = "room-leave";
  leave.dataset.room = room;
  leave.setAttribute("aria-label", `Leave #${room}`);
  leave.title = `Leave #${room}`;
  leave.textContent = "×";

  item.append(link, leave);
  update(item);
  return item;
}

/** Draw the list again (it changed), keeping the keyboard focus in it where it was. */
export function renderRooms() {
  const active = document.activeElement;
  const inList = ui.roomList.contains(active);
  const index = inList ? [...ui.roomList.children].indexOf(active.closest("li")) : -1;
  const selector = inList ? (active.tagName === "BUTTON" ? "button" : "a") : null;

  const rooms = myRooms();
  ui.roomList.replaceChildren(...rooms.map((room) => entry(room, current()?.room)));

  if (!inList) return;
  const again = ui.roomList.querySelector(`li[data-room="${CSS.escape(active.dataset.room)}"] ${selector}`);
  const near = ui.roomList.children[Math.min(index, rooms.length - 1)]?.querySelector("a");
  (again ?? near ?? ui.roomInput).focus();
}

export function renderCount(room) {
  const item = ui.roomList.querySelector(`li[data-room="${CSS.escape(room)}"]`);
  if (item) update(item);
}
