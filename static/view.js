// The room on screen: everything about it lives in one object, replaced whole when the room
// changes, so that a late answer meant for a room left behind can tell (`isCurrent`).

let view = null;

export function current() {
  return view;
}

export function isCurrent(candidate) {
  return candidate !== null && candidate === view;
}

/** Leave the room on screen (its requests end) and start the state of `room`. */
export function beginView(room) {
  view?.abort.abort();
  view = {
    room,
    seen: new Set(), // the ids on screen
    unread: 0, // messages below the part scrolled to
    divider: null,
    loadingHistory: false,
    historyLoaded: false,
    locked: null, // while the server refuses this browser the room: why (see auth.js)
    abort: new AbortController(),
  };
  return view;
}
