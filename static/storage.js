// localStorage that never throws: with storage full or disabled the page works, it just forgets.
// It keeps the name, the rooms, how far each was read and whose token the cookie holds; never a
// token itself. Every tab of the browser shares it (a `storage` event tells the others).

export const KEYS = {
  user: "sse-chat.user", // plain text
  rooms: "sse-chat.rooms", // JSON: the sidebar's room names, in the order they were joined
  read: "sse-chat.read", // JSON: {room: the newest message id read there}
  session: "sse-chat.session", // JSON: {user, expires} of the token given to POST /session
};

export function readText(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

export function writeText(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage full or disabled
  }
}

export function readJson(key, fallback) {
  try {
    const value = readText(key);
    return value === null ? fallback : JSON.parse(value);
  } catch {
    return fallback;
  }
}

export function writeJson(key, value) {
  writeText(key, JSON.stringify(value));
}

export function forget(key) {
  try {
    localStorage.removeItem(key);
  } catch {
    // as above
  }
}
