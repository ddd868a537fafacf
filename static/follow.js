// What the page does with each event of the browser's shared stream (see stream-hub.js): the
// room on screen shows its messages (and so has read them), presence and gaps; other rooms'
// messages are counted unread in the sidebar; the stream's state is the status line's.

import { refusal } from "./auth.js";
import { lockRoom, setState } from "./connection.js";
import { show, showNotice, showPresence } from "./render.js";
import { catchUp, countUnread, reopenRoom } from "./rooms.js";
import { myRooms, setLocked } from "./sidebar.js";
import { ui } from "./ui.js";
import { markRead, noteUnread } from "./unread.js";
import { current } from "./view.js";

let counted = false; // the sidebar's counts were taken from history once

function onReady(event) {
  if (!event.replay) {
    // The server just let this browser read these rooms (a token was given, maybe in another
    // tab): none of them is locked any more.
    for (const room of event.rooms) setLocked(room, false);
    if (current()?.locked && event.rooms.includes(current().room)) reopenRoom();
  }
  const view = current();
  if (view && !view.locked && event.rooms.includes(view.room)) {
    ui.replica.textContent = event.replica ?? "?";
    setState("connected");
    if (!event.replay) catchUp(view);
  }
  // A stream that (re)opened resumed only the rooms its cursor covers; the others started live
  // and may have missed messages: count those from history (a set: nothing counts twice).
  if (event.replay && counted) return;
  counted = true;
  for (const room of myRooms()) {
    if (room !== view?.room && event.rooms.includes(room)) countUnread(room);
  }
}

function onMessage(message) {
  const view = current();
  if (view?.room === message.room && !view.locked) {
    show(message);
    markRead(message.room, message.id);
  } else {
    noteUnread(message.room, message.id);
  }
}

function onRefused({ room, status }) {
  setLocked(room, true);
  const view = current();
  if (view?.room === room && !view.locked) lockRoom(view, refusal(status));
}

export function onStreamEvent(event) {
  const view = current();
  switch (event.type) {
    case "ready":
      onReady(event);
      break;
    case "state":
      if (!view?.locked) setState(navigator.onLine ? event.state : "offline");
      break;
    case "message":
      onMessage(event.data);
      break;
    case "presence":
      showPresence(event.data);
      break;
    case "gap":
      if (view?.room === event.data.room) {
        showNotice("Some messages from while you were away are no longer available.");
      }
      break;
    case "refused":
      onRefused(event);
      break;
    case "failure":
      // The worker failed: make it an error of this page, where it shows (and tests see it).
      setTimeout(() => {
        throw new Error(`stream worker: ${event.message}`);
      });
      break;
    default:
  }
}
