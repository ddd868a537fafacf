// What the server accepts as a room or user name, checked before asking it (pure).

export const ROOM_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
export const DEFAULT_ROOM = "lobby";

/** The name trimmed, or null when the server would refuse it (1-40 characters, no controls). */
export function validUser(raw) {
  const user = raw.trim();
  // eslint-disable-next-line no-control-regex
  return user.length >= 1 && user.length <= 40 && !/[\u0000-\u001f\u007f-\u009f]/.test(user)
    ? user
    : null;
}

/** Compare two `<ms>-<seq>` message ids in their order. */
export function compareIds(a, b) {
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}
