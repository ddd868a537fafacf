// The page's elements, looked up once, and the composer's own small state: which name is
// typed, what error it shows, and whether Send may be pressed.

import { validUser } from "./names.js";

const $ = (id) => document.getElementById(id);

export const ui = {
  roomName: $("room-name"),
  connection: $("connection"),
  replica: $("replica"),
  roomForm: $("room-form"),
  roomInput: $("room-input"),
  roomList: $("room-list"),
  scroller: $("scroller"),
  messages: $("messages"),
  newMessages: $("new-messages"),
  tokenPanel: $("token-panel"),
  tokenHeading: $("token-heading"),
  tokenReason: $("token-reason"),
  tokenForm: $("token-form"),
  tokenInput: $("token-input"),
  tokenError: $("token-error"),
  online: $("online"),
  onlineCount: $("online-count"),
  composer: $("composer"),
  user: $("user"),
  text: $("text"),
  send: $("send"),
  sendStatus: $("send-status"),
  error: $("error"),
};

/** The name in the Name field, or null when it is not one the server accepts. */
export function currentUser() {
  return validUser(ui.user.value);
}

export function showError(text, field) {
  ui.error.textContent = text;
  ui.user.setAttribute("aria-invalid", field === "user" ? "true" : "false");
  ui.text.setAttribute("aria-invalid", field === "text" ? "true" : "false");
}

// Send is off while a message is on its way, and while the room on screen refuses this browser.
const composer = { sending: false, locked: false };

export function setComposer(changes) {
  Object.assign(composer, changes);
  ui.send.disabled = composer.sending || composer.locked;
  ui.text.disabled = composer.locked;
  ui.composer.setAttribute("aria-busy", String(composer.sending));
}
