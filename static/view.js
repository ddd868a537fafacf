// The room on screen: everything about it lives in one object, replaced whole when the room
// changes, so that a late answer meant for a room left behind can tell (`isCurrent`).

let view = null;

export function current() {
  return view;
}

export function isCurrent(candidate) {
  return candidate !== null && candidate === view;
}

/** Leave the room on screen (its requests and stream end) and start the state of `room`. */
export function beginView(room) {
  if (view) {
    view.abort.abort();
    view.source?.close();
    clearTimeout(view.retryTimer);
  }
  view = {
    room,
    lastId: null, // the newest id shown: where a new stream resumes
    seen: new Set(),
    source: null,
    retryTimer: 0,
    failures: 0,
    failingSince: null,
    streamUser: null, // the ?user= of the open stream (presence)
    unread: 0,
    divider: null,
    loadingHistory: false,
    historyLoaded: false,
    locked: null, // while the server refuses this browser the room: why (see auth.js)
    abort: new AbortController(),
  };
  return view;
}
