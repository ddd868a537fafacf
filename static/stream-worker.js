// The SharedWorker every tab of the browser shares (same origin, same script): it owns the one
// stream of all their rooms (stream-hub.js), so a browser holds one connection however many tabs
// it has open; each tab talks to it over its MessagePort.

import { StreamHub } from "./stream-hub.js";

const hub = new StreamHub();

self.addEventListener("connect", (event) => {
  const port = event.ports[0];
  port.addEventListener("message", (message) => hub.receive(port, message.data));
  port.start();
  port.postMessage({ type: "hello" });
});

// A failure in here would leave every tab waiting: tell them, so that it shows (and tests see it).
self.addEventListener("error", (event) => {
  hub.broadcast({ type: "failure", message: String(event.message) });
});
self.addEventListener("unhandledrejection", (event) => {
  hub.broadcast({ type: "failure", message: String(event.reason) });
});
