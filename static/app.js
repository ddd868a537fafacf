// The chat page: history over fetch, then live messages and presence over EventSource, resuming
// after every reconnect from the last message id the stream delivered (no gap, no duplicate).
// Every user-supplied string goes into the page as text (textContent), never as markup.

const ROOM_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const DEFAULT_ROOM = "lobby";
const HISTORY_LIMIT = 100;
const RECENT_ROOMS_KEPT = 8;
const AT_BOTTOM_SLACK_PX = 48;
const OFFLINE_AFTER_MS = 20000;
const STORAGE = { user: "sse-chat.user", rooms: "sse-chat.rooms" }; // user: plain, rooms: JSON

const $ = (id) => document.getElementById(id);
const ui = {
  roomName: $("room-name"),
  connection: $("connection"),
  replica: $("replica"),
  roomForm: $("room-form"),
  roomInput: $("room-input"),
  recentRooms: $("recent-rooms"),
  scroller: $("scroller"),
  messages: $("messages"),
  newMessages: $("new-messages"),
  online: $("online"),
  onlineCount: $("online-count"),
  composer: $("composer"),
  user: $("user"),
  text: $("text"),
  send: $("send"),
  error: $("error"),
};

// Everything about the room on screen; replaced as a whole when the room changes.
let view = null;

// --- small pure helpers -----------------------------------------------------------------------

/** Compare two `<ms>-<seq>` ids in their order. */
function compareIds(a, b) {
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

function validUser(raw) {
  const user = raw.trim();
  // eslint-disable-next-line no-control-regex
  return user.length >= 1 && user.length <= 40 && !/[\u0000-\u001f\u007f-\u009f]/.test(user)
    ? user
    : null;
}

function roomFromUrl() {
  const requested = new URLSearchParams(location.search).get("room");
  if (requested === null || requested === "") return { room: DEFAULT_ROOM, invalid: null };
  return ROOM_PATTERN.test(requested)
    ? { room: requested, invalid: null }
    : { room: DEFAULT_ROOM, invalid: requested };
}

function readStored(key, fallback) {
  try {
    const value = localStorage.getItem(key);
    return value === null ? fallback : JSON.parse(value);
  } catch {
    return fallback;
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the page works, it just forgets
  }
}

function storedUser() {
  try {
    return localStorage.getItem(STORAGE.user) ?? "";
  } catch {
    return "";
  }
}

function storeUser(user) {
  try {
    localStorage.setItem(STORAGE.user, user);
  } catch {
    // as above
  }
}

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

// --- connection state ---------------------------------------------------------------------------

const STATE_LABELS = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  offline: "offline",
};

function setState(state) {
  if (ui.connection.dataset.state === state) return;
  ui.connection.dataset.state = state;
  ui.connection.textContent = STATE_LABELS[state];
  document.body.dataset.connection = state;
}

// --- messages -----------------------------------------------------------------------------------

function isAtBottom() {
  const s = ui.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight <= AT_BOTTOM_SLACK_PX;
}

function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
  clearUnread();
}

function clearUnread() {
  if (!view) return;
  view.unread = 0;
  ui.newMessages.hidden = true;
}

function noteUnread(item) {
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
  const you = document.createElement("span");
  you.className = "you";
  you.textContent = " (you)";
  const time = document.createElement("time");
  const when = localTime(message.ts);
  time.dateTime = message.ts;
  time.textContent = when.short;
  time.title = message.replica ? `${when.full} · via ${message.replica}` : when.full;
  meta.append(user, you, time);

  const text = document.createElement("p");
  text.className = "text";
  text.textContent = message.text;

  item.append(meta, text);
  markOwn(item);
  return item;
}

function markOwn(item) {
  const own = item.dataset.user === currentUser();
  item.classList.toggle("own", own);
}

/** Put a message on screen once, in id order; `fromStream` ids also advance the resume point. */
function show(message, { fromStream, own = false } = {}) {
  if (!view || message.room !== view.room) return;
  if (fromStream && (view.lastId === null || compareIds(message.id, view.lastId) > 0)) {
    view.lastId = message.id;
  }
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
  else noteUnread(item);
}

function showNotice(text) {
  const item = document.createElement("li");
  item.className = "notice";
  item.textContent = text;
  const stick = isAtBottom();
  ui.messages.append(item);
  if (stick) scrollToBottom();
}

// --- presence -----------------------------------------------------------------------------------

function showPresence(data) {
  if (!view || data.room !== view.room || !Array.isArray(data.users)) return;
  ui.online.replaceChildren(
    ...data.users.map((name) => {
      const item = document.createElement("li");
      item.className = `person hue-${hueSlot(name)}`;
      item.dataset.user = name;
      item.textContent = name;
      if (name === currentUser()) {
        item.classList.add("own");
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = " (you)";
        item.append(you);
      }
      return item;
    }),
  );
  ui.onlineCount.textContent = String(data.users.length);
}

// --- the stream ---------------------------------------------------------------------------------

function streamUrl() {
  const query = new URLSearchParams();
  if (view.streamUser) query.set("user", view.streamUser);
  // Only for a new EventSource; its own reconnects send Last-Event-ID, which the server prefers.
  if (view.lastId) query.set("lastEventId", view.lastId);
  const qs = query.toString();
  return `/rooms/${encodeURIComponent(view.room)}/events${qs ? `?${qs}` : ""}`;
}

function connect() {
  const current = view;
  clearTimeout(current.retryTimer);
  current.source?.close();
  current.streamUser = currentUser();
  const source = new EventSource(streamUrl());
  current.source = source;
  const live = () => view === current && current.source === source;

  source.addEventListener("ready", (event) => {
    if (!live()) return;
    current.failures = 0;
    current.failingSince = null;
    ui.replica.textContent = JSON.parse(event.data).replica ?? "?";
    setState("connected");
  });
  source.addEventListener("message", (event) => {
    if (live()) show(JSON.parse(event.data), { fromStream: true });
  });
  source.addEventListener("presence", (event) => {
    if (live()) showPresence(JSON.parse(event.data));
  });
  source.addEventListener("gap", () => {
    if (live()) showNotice("Some messages from while you were away are no longer available.");
  });
  source.addEventListener("error", () => {
    if (!live()) return;
    current.failures += 1;
    current.failingSince ??= Date.now();
    // Reconnecting is normal (a replica restarts); offline is when it has not worked for a while.
    const offline = !navigator.onLine || Date.now() - current.failingSince > OFFLINE_AFTER_MS;
    setState(offline ? "offline" : "reconnecting");
    if (source.readyState === EventSource.CLOSED) {
      // The server refused the stream (503 while draining or without Redis, or another error):
      // EventSource gives up, so start a new one, resuming from the last id, with backoff.
      const delay = Math.min(1000 * 2 ** Math.min(current.failures - 1, 4), 15000);
      current.retryTimer = setTimeout(() => live() && connect(), delay);
    }
  });
}

// --- rooms --------------------------------------------------------------------------------------

function recentRooms() {
  const rooms = readStored(STORAGE.rooms, []);
  return Array.isArray(rooms) ? rooms.filter((r) => typeof r === "string" && ROOM_PATTERN.test(r)) : [];
}

function rememberRoom(room) {
  const rooms = [room, ...recentRooms().filter((r) => r !== room)].slice(0, RECENT_ROOMS_KEPT);
  store(STORAGE.rooms, rooms);
  renderRecentRooms(room);
}

function renderRecentRooms(current) {
  ui.recentRooms.replaceChildren(
    ...recentRooms().map((room) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = `?room=${encodeURIComponent(room)}`;
      link.textContent = `#${room}`;
      link.dataset.room = room;
      if (room === current) link.setAttribute("aria-current", "page");
      item.append(link);
      return item;
    }),
  );
}

async function loadHistory(current) {
  const response = await fetch(
    `/rooms/${encodeURIComponent(current.room)}/messages?limit=${HISTORY_LIMIT}`,
    { signal: current.abort.signal },
  );
  if (!response.ok) throw new Error(`history: ${response.status}`);
  const body = await response.json();
  if (view !== current) return;
  current.loadingHistory = true;
  ui.messages.setAttribute("aria-busy", "true");
  try {
    for (const message of body.messages) show(message, { fromStream: true });
  } finally {
    current.loadingHistory = false;
    ui.messages.setAttribute("aria-busy", "false");
  }
}

function openRoom(room) {
  if (view) {
    view.abort.abort();
    view.source?.close();
    clearTimeout(view.retryTimer);
  }
  const current = {
    room,
    lastId: null,
    seen: new Set(),
    source: null,
    retryTimer: 0,
    failures: 0,
    failingSince: null,
    streamUser: null,
    unread: 0,
    divider: null,
    loadingHistory: false,
    abort: new AbortController(),
  };
  view = current;
  ui.messages.replaceChildren();
  ui.online.replaceChildren();
  ui.onlineCount.textContent = "0";
  ui.newMessages.hidden = true;
  ui.roomName.textContent = `#${room}`;
  ui.roomInput.value = room;
  document.title = `#${room} · sse-chat`;
  rememberRoom(room);
  setState("connecting");

  loadHistory(current)
    .catch((error) => {
      if (view === current && error.name !== "AbortError") {
        showNotice("Earlier messages could not be loaded.");
      }
    })
    .finally(() => {
      if (view !== current) return;
      // With nothing in history, resume from the very start: whatever was posted between the
      // history request and the stream opening is then replayed instead of lost.
      current.lastId ??= "0-0";
      connect();
    });
}

function switchRoom(room) {
  if (room === view?.room) return;
  history.pushState(null, "", `?room=${encodeURIComponent(room)}`);
  openRoom(room);
}

// --- name ---------------------------------------------------------------------------------------

function currentUser() {
  return validUser(ui.user.value);
}

function nameChanged() {
  const user = currentUser();
  ui.user.setAttribute("aria-invalid", user || ui.user.value === "" ? "false" : "true");
  if (!user) return;
  storeUser(user);
  for (const item of ui.messages.querySelectorAll("li.message")) markOwn(item);
  // Presence follows the stream's ?user=: reopen it (resuming, so nothing is missed).
  if (view.source && view.streamUser !== user) connect();
}

// --- sending ------------------------------------------------------------------------------------

function showError(text, field) {
  ui.error.textContent = text;
  ui.user.setAttribute("aria-invalid", field === "user" ? "true" : "false");
  ui.text.setAttribute("aria-invalid", field === "text" ? "true" : "false");
}

function describeFailure(response, body) {
  const reason = typeof body?.message === "string" ? body.message : "";
  const retry = response.headers.get("Retry-After");
  const wait = retry ? ` Try again in ${retry} s.` : "";
  switch (response.status) {
    case 422:
      return `Not sent: ${body?.field ? `${body.field} ` : ""}${reason || "is not valid"}.`;
    case 429:
      return `Not sent: you are sending too fast${reason ? ` (${reason})` : ""}.${retry ? wait : ""}`;
    case 503:
      return `Not sent: the server cannot store messages right now${reason ? ` (${reason})` : ""}.${wait}`;
    case 413:
      return "Not sent: the message is too long.";
    default:
      return `Not sent: the server answered ${response.status}${reason ? ` (${reason})` : ""}.`;
  }
}

async function send() {
  if (view.sending) return;
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
  nameChanged();
  const current = view;
  current.sending = true;
  ui.send.disabled = true;
  ui.composer.setAttribute("aria-busy", "true");
  showError("", null);
  try {
    const response = await fetch(`/rooms/${encodeURIComponent(current.room)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user, text }),
    });
    const body = await response.json().catch(() => null);
    if (response.ok) {
      if (ui.text.value === text) ui.text.value = ""; // keep whatever was typed meanwhile
      if (body && view === current) {
        show(body, { fromStream: false, own: true });
        scrollToBottom(); // also when the stream delivered it first, while scrolled up
      }
    } else {
      showError(describeFailure(response, body), body?.field);
    }
  } catch {
    showError("Not sent: the server cannot be reached. Your message is kept; try again.", null);
  } finally {
    current.sending = false;
    ui.send.disabled = false;
    ui.composer.setAttribute("aria-busy", "false");
    if (document.activeElement === document.body || document.activeElement === ui.send) {
      ui.text.focus();
    }
  }
}

// --- wiring -------------------------------------------------------------------------------------

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});

ui.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey
      && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    send();
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

window.addEventListener("popstate", () => {
  const { room } = roomFromUrl();
  if (room !== view?.room) openRoom(room);
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
  if (!view) return;
  // Come back at once rather than waiting out a backoff; resume covers what was missed.
  if (!view.source || view.source.readyState !== EventSource.OPEN) connect();
  else setState("connected");
});

// --- start --------------------------------------------------------------------------------------

ui.user.value = storedUser();
const start = roomFromUrl();
openRoom(start.room);
if (start.invalid !== null) {
  showError(`"${start.invalid}" is not a room name; showing #${DEFAULT_ROOM}.`, null);
}
(currentUser() ? ui.text : ui.user).focus();
