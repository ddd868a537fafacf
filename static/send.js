// Sending a message. It gets an Idempotency-Key when the person sends it and keeps that key on
// every retry, so a POST whose answer was lost can go again and is still stored once. Network
// errors and 502/503/504 are retried with backoff; anything else is the answer.

import { refusal, showLock } from "./auth.js";
import { lockRoom } from "./connection.js";
import { scrollToBottom, show } from "./render.js";
import { currentUser, setComposer, showError, ui } from "./ui.js";
import { markRead } from "./unread.js";
import { current, isCurrent } from "./view.js";

const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 8000, 8000]; // ~30 s in all
const RETRY_AFTER_CAP_MS = 10000; // a 503's Retry-After is honoured up to this
const ATTEMPT_TIMEOUT_MS = 10000; // an answer that takes longer is treated as lost
const TRANSIENT = new Set([502, 503, 504]);

let sending = false;
// A send whose fate is unknown (no answer, or the server busy): sending the same text again
// reuses its key, so the server stores it once even if the earlier attempt did get through.
let unsettled = null;

/** A fresh Idempotency-Key; crypto.randomUUID needs a secure context, getRandomValues not. */
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One POST: {response, body}, or {response: null} when no answer came. */
async function post(room, message, key) {
  try {
    const response = await fetch(`/rooms/${encodeURIComponent(room)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": key },
      body: JSON.stringify(message),
      signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
    });
    return { response, body: await response.json().catch(() => null) };
  } catch {
    return { response: null, body: null };
  }
}

/** POST until an answer that is not transient, or until the retries run out: the last outcome. */
async function deliver(room, message, key) {
  for (let retry = 0; ; retry += 1) {
    const outcome = await post(room, message, key);
    const transient = outcome.response === null || TRANSIENT.has(outcome.response.status);
    if (!transient || retry === RETRY_DELAYS_MS.length) return outcome;
    const retryAfter = Number(outcome.response?.headers.get("Retry-After")) * 1000 || 0;
    const delay = Math.max(RETRY_DELAYS_MS[retry], Math.min(retryAfter, RETRY_AFTER_CAP_MS));
    const why = outcome.response ? "the server is busy" : "the server cannot be reached";
    ui.sendStatus.textContent = `Sending… ${why}; trying again in ${Math.ceil(delay / 1000)} s.`;
    await sleep(delay);
    ui.sendStatus.textContent = `Sending… (attempt ${retry + 2})`;
  }
}

function describeFailure(response, body) {
  const reason = typeof body?.message === "string" ? body.message : "";
  const retry = response.headers.get("Retry-After");
  const wait = retry ? ` Try again in ${retry} s.` : "";
  switch (response.status) {
    case 401:
      return "Not sent: sending here needs a token.";
    case 403:
      return `Not sent: ${reason || "this token may not post here"}.`;
    case 422:
      return `Not sent: ${body?.field ? `${body.field} ` : ""}${reason || "is not valid"}.`;
    case 429:
      return `Not sent: you are sending too fast${reason ? ` (${reason})` : ""}.${retry ? wait : ""}`;
    case 503:
      return `Not sent: the server cannot store messages right now${reason ? ` (${reason})` : ""}. Your message is kept.${wait}`;
    case 413:
      return "Not sent: the message is too long.";
    default:
      return `Not sent: the server answered ${response.status}${reason ? ` (${reason})` : ""}.`;
  }
}

/** Send what the composer holds to the room on screen; the text stays until it is stored. */
export async function send() {
  const view = current();
  if (sending || !view || view.locked) return;
  const user = currentUser();
  const text = ui.text.value;
  if (!user) {
    showError("Pick a name first (1-40 characters).", "user");
    ui.user.focus();
    return;
  }
  if (!text.trim()) {
    showError("Type a message first.", "text");
    ui.text.focus();
    return;
  }
  const room = view.room;
  const same = unsettled?.room === room && unsettled.user === user && unsettled.text === text;
  const key = same ? unsettled.key : newKey();
  sending = true;
  setComposer({ sending: true });
  showError("", null);
  try {
    const { response, body } = await deliver(room, { user, text }, key);
    unsettled = response === null || TRANSIENT.has(response.status) ? { room, user, text, key } : null;
    if (response?.ok) {
      if (ui.text.value === text) ui.text.value = ""; // keep whatever was typed meanwhile
      if (body && isCurrent(view)) {
        show(body, { own: true });
        markRead(room, body.id);
        scrollToBottom(); // also when the stream delivered it first, while scrolled up
      }
    } else if (response === null) {
      showError("Not sent: the server cannot be reached. Your message is kept; try again.", null);
    } else {
      showError(describeFailure(response, body), body?.field);
      if (isCurrent(view) && response.status === 401) {
        // The stream still reads the room: only posting needs a (new) token.
        showLock(refusal(401) === "token-expired" ? "token-expired" : "post-needs-token", room);
      }
      if (isCurrent(view) && body?.error === "forbidden_room") lockRoom(view, "forbidden");
    }
  } finally {
    sending = false;
    ui.sendStatus.textContent = "";
    setComposer({ sending: false });
    if (document.activeElement === document.body || document.activeElement === ui.send) {
      ui.text.focus();
    }
  }
}
