// Unread counts of the rooms not on screen. Each room has a read mark (the newest message id
// read there), kept in localStorage so that reading a room in one tab clears its count in every
// tab; a room's unread messages are the ids newer than its mark, gathered from the stream and
// from history as a set, so a message seen twice (replayed, or in both) still counts once.

import { compareIds } from "./names.js";
import { KEYS, readJson, writeJson } from "./storage.js";

const ID = /^\d+-\d+$/;

const unread = new Map(); // room -> Set of the ids newer than its mark
let marks = loadMarks();
let changed = () => {};

function loadMarks() {
  const stored = readJson(KEYS.read, {});
  return stored && typeof stored === "object" && !Array.isArray(stored) ? stored : {};
}

function markOf(room) {
  const mark = marks[room];
  return typeof mark === "string" && ID.test(mark) ? mark : null;
}

function isNewer(room, id) {
  const mark = markOf(room);
  return mark === null || compareIds(id, mark) > 0;
}

function prune(room) {
  const ids = unread.get(room);
  if (!ids) return;
  const before = ids.size;
  for (const id of ids) if (!isNewer(room, id)) ids.delete(id);
  if (ids.size !== before) changed(room);
}

/** Call `listener(room)` whenever a room's count changes. */
export function onUnreadChange(listener) {
  changed = listener;
}

export function unreadCount(room) {
  return unread.get(room)?.size ?? 0;
}

/** Whether this browser has read the room at all (it has a mark). */
export function hasMark(room) {
  return markOf(room) !== null;
}

/** A message of `room` not on screen: unread if newer than what was read there. */
export function noteUnread(room, id) {
  if (!ID.test(id) || !isNewer(room, id)) return;
  let ids = unread.get(room);
  if (!ids) unread.set(room, (ids = new Set()));
  if (ids.has(id)) return;
  ids.add(id);
  changed(room);
}

/** The room is read up to `id` (in this tab: every tab hears of it). */
export function markRead(room, id) {
  if (!ID.test(id)) return;
  marks = loadMarks(); // another tab may have moved the marks
  if (isNewer(room, id)) {
    marks[room] = id;
    writeJson(KEYS.read, marks);
  }
  prune(room);
}

/** Another tab moved the marks (a storage event). */
export function marksChanged() {
  marks = loadMarks();
  for (const room of unread.keys()) prune(room);
}

/** The room left the sidebar: its count and its mark go. */
export function forgetUnread(room) {
  unread.delete(room);
  marks = loadMarks();
  if (room in marks) {
    delete marks[room];
    writeJson(KEYS.read, marks);
  }
  changed(room);
}
