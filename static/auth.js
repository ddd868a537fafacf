// Tokens on the page. A token is given once (pasted, or in a `#token=` fragment of the link) and
// handed to POST /session, which keeps it in an HttpOnly cookie that EventSource and fetch then
// carry. The page never stores the token; it remembers only whose it was and when it expires,
// to tell an expired token from a missing one (the cookie is gone in both cases).

import { KEYS, readJson, writeJson } from "./storage.js";
import { ui } from "./ui.js";

// Why the server refuses this browser a room, and what the panel then says.
const LOCKS = {
  "needs-token": {
    heading: (room) => `#${room} needs a token`,
    reason: "This room is private: paste a token that opens it to read and post here.",
    hidesMessages: true,
  },
  forbidden: {
    heading: (room) => `Your token does not open #${room}`,
    reason: "The token this browser holds is valid, but not for this room. Paste one that is.",
    hidesMessages: true,
  },
  "token-expired": {
    heading: () => "Your token has expired",
    reason: "Paste a new token to go on; the messages sent meanwhile will be shown.",
    hidesMessages: false,
  },
  "post-needs-token": {
    heading: (room) => `Sending in #${room} needs a token`,
    reason: "You can read this room; paste a token to post in it.",
    hidesMessages: false,
  },
};

// A JWT is three base64url parts; anything else cannot go into a header.
const TOKEN_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** What a 401 or 403 answer means for this browser: a key of LOCKS. */
export function refusal(status) {
  if (status === 403) return "forbidden";
  const session = readJson(KEYS.session, null);
  const expired = typeof session?.expires === "number" && session.expires * 1000 <= Date.now();
  return expired ? "token-expired" : "needs-token";
}

export function showLock(kind, room) {
  const lock = LOCKS[kind];
  ui.tokenHeading.textContent = lock.heading(room);
  ui.tokenReason.textContent = lock.reason;
  ui.tokenPanel.dataset.lock = kind;
  ui.tokenPanel.hidden = false;
  ui.scroller.hidden = lock.hidesMessages;
  if (lock.hidesMessages) ui.newMessages.hidden = true;
  // The token field is the way on: focus it, unless the person is typing in another field.
  const active = document.activeElement;
  const typing = (active?.tagName === "INPUT" || active?.tagName === "TEXTAREA") && active.value;
  if (!typing) ui.tokenInput.focus();
}

export function hideLock() {
  ui.tokenPanel.hidden = true;
  ui.tokenError.textContent = "";
  ui.scroller.hidden = false;
}

/** The `sub` and `exp` a token claims (unverified: only to name the user and spot expiry). */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (char) => char.codePointAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return {
      user: typeof claims.sub === "string" ? claims.sub : null,
      expires: typeof claims.exp === "number" ? claims.exp : null,
    };
  } catch {
    return { user: null, expires: null };
  }
}

/** Give the server a token to keep in this browser's cookie: {ok, user} or {ok: false, message}. */
export async function giveToken(raw) {
  const token = raw.trim();
  if (!token) return { ok: false, message: "Paste a token first." };
  if (!TOKEN_SHAPE.test(token)) {
    return { ok: false, message: "That is not a token (a token looks like xxxxx.yyyyy.zzzzz)." };
  }
  let response;
  try {
    response = await fetch("/session", {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
    });
  } catch {
    return { ok: false, message: "The server cannot be reached; try again." };
  }
  if (response.ok) {
    const claims = claimsOf(token);
    writeJson(KEYS.session, claims);
    return { ok: true, user: claims.user };
  }
  const body = await response.json().catch(() => null);
  const reason = typeof body?.message === "string" ? `: ${body.message}` : "";
  return { ok: false, message: `That token was refused${reason}.` };
}

/** The token of a `#token=…` link, taken out of the address bar (and so out of the history). */
export function takeFragmentToken() {
  if (location.hash.length < 2) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  const url = `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`;
  history.replaceState(history.state, "", url);
  return token;
}
