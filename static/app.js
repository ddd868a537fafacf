// The chat page: history over fetch, then live messages over EventSource (with resume).
const params = new URLSearchParams(location.search);
const room = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(params.get("room") || "")
  ? params.get("room")
  : "lobby";
const $ = (id) => document.getElementById(id);
const list = $("messages");
const seen = new Set();
let lastId = "";

$("room-name").textContent = `#${room}`;
$("user").value = localStorage.getItem("sse-chat.user") || "";

function show(message) {
  if (seen.has(message.id)) return;
  seen.add(message.id);
  lastId = message.id;
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.dateTime = message.ts;
  time.textContent = new Date(message.ts).toLocaleTimeString();
  const user = document.createElement("span");
  user.className = "user";
  user.textContent = message.user;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  item.append(time, user, text);
  list.append(item);
  item.scrollIntoView({ block: "end" });
}

function setState(state, label) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = label;
}

async function loadHistory() {
  const response = await fetch(`/rooms/${room}/messages?limit=100`);
  if (response.ok) (await response.json()).messages.forEach(show);
}

function connect() {
  const query = lastId ? `?lastEventId=${encodeURIComponent(lastId)}` : "";
  const source = new EventSource(`/rooms/${room}/events${query}`);
  source.addEventListener("ready", (event) => {
    $("replica").textContent = JSON.parse(event.data).replica;
    setState("open", "connected");
  });
  source.addEventListener("message", (event) => show(JSON.parse(event.data)));
  source.addEventListener("gap", () => {
    $("error").textContent = "Some older messages are no longer available.";
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // The server refused the stream (e.g. 503): start again after a pause, resuming.
      setState("reconnecting", "reconnecting…");
      setTimeout(connect, 2000);
    } else {
      setState("reconnecting", "reconnecting…");
    }
  });
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = $("user").value.trim();
  const text = $("text").value;
  localStorage.setItem("sse-chat.user", user);
  $("send").disabled = true;
  $("error").textContent = "";
  try {
    const response = await fetch(`/rooms/${room}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user, text }),
    });
    if (response.ok) {
      $("text").value = "";
    } else {
      const body = await response.json().catch(() => ({}));
      $("error").textContent = body.message || `Sending failed (${response.status}).`;
    }
  } catch {
    $("error").textContent = "Sending failed: the server cannot be reached.";
  } finally {
    $("send").disabled = false;
    $("text").focus();
  }
});

loadHistory().catch(() => {}).finally(connect);
