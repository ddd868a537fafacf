// The browser's one stream: a single EventSource of every room its tabs need (`/events?rooms=`),
// in the SharedWorker (stream-worker.js) for all the browser's tabs, or inside a tab where
// SharedWorker is missing. No DOM: its clients are MessagePorts (or anything with postMessage).
//
// From a client: {type: "want", rooms, user}  every room it needs now, and its name (presence)
//                {type: "unlock"} a token was given   {type: "reconnect"} the network is back
//                {type: "bye"} the tab is going away
// To a client:   {type: "ready", replica, rooms, live, replay}  the stream is open with `rooms`
//                    (replay: it was open already, so nothing can have been missed meanwhile)
//                {type: "message" | "presence" | "gap", data}  an event of room `data.room`
//                {type: "state", state}  "reconnecting" or "offline"
//                {type: "refused", room, status}  401/403: the room is left out until "unlock"
//                {type: "hello"}  (from the worker: it runs)
//
// Resuming: each message event's id is a cursor of every room it covers; a new stream gets the
// last one, so those rooms resume exactly and new ones start live. Tabs reload a room's recent
// history on each ready that is not a replay, which covers rooms that started live.

const MAX_ROOMS = 50; // the server's default cap per stream
const GATHER_MS = 25; // tabs opening together send their wants at once: one reopen for all
const OFFLINE_AFTER_MS = 20000;
const ROOM_EVENTS = ["message", "presence", "gap"];

/** The status a read of the room gets now (0: no answer): why a stream was refused. */
async function accessStatus(room) {
  try {
    return (await fetch(`/rooms/${encodeURIComponent(room)}/messages?limit=1`)).status;
  } catch {
    return 0;
  }
}

export class StreamHub {
  constructor() {
    this.clients = new Map(); // client -> the rooms it wants
    this.user = null; // the name the stream is present as (the last want's)
    this.refused = new Map(); // room -> 401 or 403: left out until a token is given
    this.cursor = null; // the id of the last message event
    this.source = null;
    this.key = ""; // which rooms and user `source` was opened with
    this.rooms = [];
    this.ready = null; // the data of `source`'s ready event, while it is open
    this.presence = new Map(); // room -> its last presence event: for a tab that opens it
    this.failures = 0;
    this.failingSince = null;
    this.timer = 0;
  }

  receive(client, message) {
    switch (message?.type) {
      case "want":
        this.clients.set(client, Array.isArray(message.rooms) ? message.rooms : []);
        this.user = message.user || null;
        this.greet(client);
        this.schedule();
        break;
      case "bye":
        this.clients.delete(client);
        this.schedule();
        break;
      case "unlock":
        // A new token may open refused rooms and change what the open stream may read.
        this.refused.clear();
        this.apply(true);
        break;
      case "reconnect":
        if (this.ready) this.greet(client);
        else this.apply(true);
        break;
      default:
    }
  }

  /** Tell a client what it missed by coming late: its refused rooms, who is in its rooms, and
   * the stream if open. */
  greet(client) {
    const rooms = this.clients.get(client) ?? [];
    for (const room of rooms) {
      const status = this.refused.get(room);
      if (status) client.postMessage({ type: "refused", room, status });
      const presence = this.presence.get(room);
      if (presence) client.postMessage({ type: "presence", data: presence });
    }
    const covered = rooms.every((room) => this.refused.has(room) || this.rooms.includes(room));
    if (this.ready && covered) {
      client.postMessage({ type: "ready", ...this.ready, replay: true });
    } else if (this.failingSince !== null) {
      client.postMessage({ type: "state", state: this.failingState() });
    }
  }

  broadcast(message) {
    for (const client of this.clients.keys()) client.postMessage(message);
  }

  /** To the clients that want `room`. */
  tell(room, message) {
    for (const [client, rooms] of this.clients) {
      if (rooms.includes(room)) client.postMessage(message);
    }
  }

  wanted() {
    const rooms = new Set();
    for (const list of this.clients.values()) {
      for (const room of list) if (!this.refused.has(room)) rooms.add(room);
    }
    return [...rooms].slice(0, MAX_ROOMS);
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.apply(false), GATHER_MS);
  }

  /** Open the stream the clients need, unless it is open already (or `force`). */
  apply(force) {
    clearTimeout(this.timer);
    const rooms = this.wanted();
    const key = `${[...rooms].sort().join(",")} ${this.user ?? ""}`;
    const alive = this.source !== null && this.source.readyState !== EventSource.CLOSED;
    if (alive && !force && key === this.key) return;
    this.close();
    if (rooms.length > 0) this.open(rooms, key);
  }

  close() {
    this.source?.close();
    this.source = null;
    this.ready = null;
  }

  open(rooms, key) {
    const query = new URLSearchParams({ rooms: rooms.join(",") });
    if (this.user) query.set("user", this.user);
    // Only for a new EventSource; its own reconnects send Last-Event-ID, which the server prefers.
    if (this.cursor) query.set("lastEventId", this.cursor);
    const source = new EventSource(`/events?${query}`);
    Object.assign(this, { source, key, rooms, ready: null });
    const mine = () => this.source === source;

    source.addEventListener("ready", (event) => {
      if (!mine()) return;
      this.ready = JSON.parse(event.data);
      this.failures = 0;
      this.failingSince = null;
      this.broadcast({ type: "ready", ...this.ready, replay: false });
    });
    for (const type of ROOM_EVENTS) {
      source.addEventListener(type, (event) => {
        if (!mine()) return;
        const data = JSON.parse(event.data);
        if (type === "message" && event.lastEventId) this.cursor = event.lastEventId;
        if (type === "presence") this.presence.set(data.room, data);
        // To every tab, not only those that asked for the room: a tab that has just heard of
        // a room (another tab joined it) counts it before its own ask arrives.
        this.broadcast({ type, data });
      });
    }
    source.addEventListener("unavailable", (event) => {
      // A full or draining replica ends the stream with a retry and EventSource comes back by
      // itself; a token's expiry ends it for good: find the rooms that now refuse this browser.
      if (!mine() || JSON.parse(event.data).error !== "token_expired") return;
      source.close();
      this.failed(source);
    });
    source.addEventListener("error", () => {
      if (mine()) this.failed(source);
    });
  }

  failingState() {
    const long = this.failingSince !== null && Date.now() - this.failingSince > OFFLINE_AFTER_MS;
    return !navigator.onLine || long ? "offline" : "reconnecting";
  }

  failed(source) {
    this.ready = null;
    this.failures += 1;
    this.failingSince ??= Date.now();
    this.broadcast({ type: "state", state: this.failingState() });
    // EventSource comes back by itself after a stream ends; it gives up for good only on a
    // refusal, and only then is each room asked why.
    if (source.readyState === EventSource.CLOSED) this.afterRefusal(source);
  }

  async afterRefusal(source) {
    const rooms = this.rooms;
    const statuses = await Promise.all(rooms.map(accessStatus));
    if (this.source !== source) return; // reopened meanwhile
    let refused = false;
    rooms.forEach((room, index) => {
      const status = statuses[index];
      if (status !== 401 && status !== 403) return;
      refused = true;
      this.refused.set(room, status);
      this.tell(room, { type: "refused", room, status });
    });
    if (refused) {
      this.apply(true); // the other rooms go on at once; retrying cannot help these, a token can
      return;
    }
    // Refused for another reason: again, with backoff. A cursor the server cannot read (400)
    // would fail every time: after a few tries, go on without it (tabs reload recent history).
    if (this.failures >= 3) this.cursor = null;
    const delay = Math.min(1000 * 2 ** Math.min(this.failures - 1, 4), 15000);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.apply(true), delay);
  }
}
