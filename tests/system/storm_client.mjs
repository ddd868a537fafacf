#!/usr/bin/env node
/**
 * The reconnect-storm client: thousands of browser-like EventSource streams on one event loop.
 *
 *     node tests/system/storm_client.mjs --url http://127.0.0.1:PORT --room storm --streams 4500
 *
 * Steered by the test over stdin, one JSON command a line; each command is answered by one JSON
 * line on stdout (nothing else is written there). Node with core modules only: one process holds
 * every stream for little CPU, which the replicas, Redis and HAProxy need more.
 *
 * Each stream behaves as a browser's EventSource: it honours `retry:` (capped), and after any
 * end or error it waits that long and reconnects through the same URL (the load balancer) with
 * `Last-Event-ID`. An answer other than 200 makes EventSource give up for good; the page
 * (static/app.js) then starts a new one with backoff (1 s, doubling up to 15 s), and so does
 * this client. Such answers are counted as failures, and the stream goes on, so one failure
 * does not hide the others.
 *
 * File descriptors: Node cannot call setrlimit; the caller raises RLIMIT_NOFILE before it starts.
 */

import net from 'node:net';
import process from 'node:process';
import readline from 'node:readline';
import { parseArgs } from 'node:util';

const { values: options } = parseArgs({
  options: {
    url: { type: 'string' },
    room: { type: 'string', default: 'storm' },
    streams: { type: 'string', default: '100' },
    'open-batch': { type: 'string', default: '150' }, // streams opened together, then awaited
    'retry-cap-ms': { type: 'string', default: '5000' }, // a `retry:` longer than this is capped
    'initial-retry-ms': { type: 'string', default: '3000' }, // a browser's default, until told
    'max-connects': { type: 'string', default: '100' }, // per stream: a broken cluster ends
    'idle-ms': { type: 'string', default: '15000' }, // keepalives come every second: silence is a hang
  },
});
const URL_MATCH = /^http:\/\/([^:/]+):(\d+)\/?$/.exec(options.url ?? '');
if (!URL_MATCH) {
  process.stderr.write(`storm_client: --url http://HOST:PORT is required\n`);
  process.exit(2);
}
const HOST = URL_MATCH[1];
const PORT = Number(URL_MATCH[2]);
const ROOM = options.room;
const STREAMS = Number(options.streams);
const OPEN_BATCH = Number(options['open-batch']);
const RETRY_CAP_MS = Number(options['retry-cap-ms']);
const INITIAL_RETRY_MS = Number(options['initial-retry-ms']);
const MAX_CONNECTS = Number(options['max-connects']);
const IDLE_MS = Number(options['idle-ms']);
const ANSWER_TIMEOUT_MS = 10000; // no answer by then: counted as a connection error
const NO_ANSWER = `no answer in ${ANSWER_TIMEOUT_MS / 1000} s`;
const EXAMPLES = 10; // how many streams a report names for each kind of fault

// what every stream saw, counted ------------------------------------------------------------

/** Counts by name, reported as a plain object. */
class Tally {
  constructor() {
    this.counts = new Map();
  }
  add(name, n = 1) {
    this.counts.set(name, (this.counts.get(name) ?? 0) + n);
  }
  toJSON() {
    return Object.fromEntries([...this.counts].sort());
  }
}

const tallies = {
  statuses: new Tally(), // each stream answer: "200", or e.g. "503 from r2", "503 from haproxy"
  connectionErrors: new Tally(), // connects that got no answer: ECONNREFUSED, ECONNRESET...
  endings: new Tally(), // how answered streams ended: "ended", "eof mid-chunk", "reset"...
  events: new Tally(), // named events: ready, unavailable, gap...
};
let readyNow = 0; // streams whose current connection said `ready` and is still open
let readyNotLive = 0; // `ready` events that said `"live": false` (held until the backplane is back)
const refusalRetries = []; // the `retry:` of each `unavailable` answer (ms; null: none given)

/** Every message id any stream saw, numbered in order of first sight (the per-stream tables
 * are indexed by that number), with its text. */
const messageIndex = new Map(); // id -> number
const messageIds = [];
const messageTexts = [];

/** The streams that still lack a wanted id, when the test waits for ids. */
let wanted = null; // Uint8Array over message numbers: 1 = wanted
let streamsLacking = 0;
const waiters = new Set(); // functions re-checked after every change that may satisfy them

function notify() {
  for (const check of [...waiters]) check();
}

function compareIds(a, b) {
  const [am, as] = a.split('-').map(Number);
  const [bm, bs] = b.split('-').map(Number);
  return am - bm || as - bs;
}

/** The text of a message's JSON data (only parsed the first time any stream sees the id). */
function messageText(data) {
  try {
    return JSON.parse(Buffer.from(data, 'latin1').toString('utf8')).text ?? null;
  } catch {
    return null;
  }
}

// one stream --------------------------------------------------------------------------------

class Stream {
  constructor(index) {
    this.index = index;
    this.lastEventId = '';
    this.retryMs = INITIAL_RETRY_MS;
    this.connects = 0;
    this.state = 'idle'; // -> 'connecting' -> 'answered' -> ('ready') -> 'waiting' -> ...
    this.replica = null; // the replica of the current stream once `ready`
    this.live = null; // what that `ready` said: live, or held until the backplane is back
    this.readyEvents = 0;
    this.seen = new Uint8Array(1024); // by message number: times received
    this.lastId = null; // the last message id received, for the order check
    this.duplicates = [];
    this.misordered = []; // [previous id, id] pairs received out of order
    this.gaps = 0;
    this.lacking = 0; // wanted ids not received yet (while the test waits for ids)
    this.refusals = 0; // answers other than 200 since the last `ready`, for the backoff
    this.gaveUp = false;
  }

  connect() {
    if (this.connects >= MAX_CONNECTS) {
      this.gaveUp = true;
      this.state = 'gone';
      notify();
      return;
    }
    this.connects++;
    this.state = 'connecting';
    new Connection(this);
  }

  /** The connection ended (however): wait the retry delay, then reconnect. */
  ended() {
    if (this.state === 'ready') {
      this.replica = null;
      readyNow--;
    }
    this.state = 'waiting';
    notify();
    if (!closing) setTimeout(() => this.connect(), Math.min(this.retryMs, RETRY_CAP_MS));
  }

  /** The answer was not an event stream: come back as the page does, with backoff. */
  refused() {
    this.refusals++;
    this.state = 'waiting';
    notify();
    const delay = Math.min(1000 * 2 ** Math.min(this.refusals - 1, 4), 15000);
    if (!closing) setTimeout(() => this.connect(), delay);
  }

  ready(data) {
    if (this.state !== 'ready') readyNow++;
    this.state = 'ready';
    this.refusals = 0;
    this.readyEvents++;
    try {
      const ready = JSON.parse(Buffer.from(data, 'latin1').toString('utf8'));
      this.replica = String(ready.replica);
      this.live = ready.live ?? null;
      if (ready.live === false) readyNotLive++;
    } catch {
      this.replica = '?';
    }
    notify();
  }

  message(id, data) {
    let number = messageIndex.get(id);
    if (number === undefined) {
      number = messageIds.length;
      messageIndex.set(id, number);
      messageIds.push(id);
      messageTexts.push(messageText(data));
    }
    if (number >= this.seen.length) {
      const grown = new Uint8Array(Math.max(number + 1, this.seen.length * 2));
      grown.set(this.seen);
      this.seen = grown;
    }
    if (this.seen[number]++ > 0) {
      if (this.duplicates.length < EXAMPLES) this.duplicates.push(id);
      return;
    }
    if (this.lastId !== null && compareIds(id, this.lastId) <= 0) {
      if (this.misordered.length < EXAMPLES) this.misordered.push([this.lastId, id]);
    }
    this.lastId = id;
    if (wanted !== null && wanted[number] && --this.lacking === 0) {
      streamsLacking--;
      notify();
    }
  }
}

/**
 * One HTTP/1.1 GET of the stream and its answer: the status and headers, then the body
 * (chunked, or read to the end), parsed as an event stream by the WHATWG rules.
 */
class Connection {
  constructor(stream) {
    this.stream = stream;
    this.head = ''; // the answer while its header is incomplete; null after
    this.chunked = false;
    this.chunkLeft = 0; // bytes left in the current chunk; -1: reading a size line
    this.sizeLine = '';
    this.finalChunk = false; // the zero-size chunk arrived: the body ended cleanly
    this.line = ''; // an incomplete event-stream line
    this.eventName = '';
    this.data = [];
    this.idBuffer = stream.lastEventId;
    this.unavailable = false;
    this.retryInAnswer = null;
    this.done = false;
    const headers = [
      `GET /rooms/${ROOM}/events HTTP/1.1`,
      `Host: ${HOST}:${PORT}`,
      'Accept: text/event-stream',
      'Cache-Control: no-cache',
    ];
    if (stream.lastEventId) headers.push(`Last-Event-ID: ${stream.lastEventId}`);
    const socket = net.connect({ host: HOST, port: PORT });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(ANSWER_TIMEOUT_MS, () => this.finish(NO_ANSWER));
    socket.on('data', (chunk) => this.receive(chunk.toString('latin1')));
    socket.on('end', () => this.finish(null));
    socket.on('error', (error) => this.finish(error.code ?? error.message));
    socket.on('close', () => this.finish(null));
    socket.write(`${headers.join('\r\n')}\r\n\r\n`);
  }

  /** The connection is over: count how it ended, once, and let the stream reconnect. */
  finish(error) {
    if (this.done) return;
    this.done = true;
    this.socket.destroy();
    if (this.head !== null) {
      tallies.connectionErrors.add(error ?? 'closed before an answer');
    } else if (this.unavailable) {
      refusalRetries.push(this.retryInAnswer);
      tallies.endings.add(this.finalChunk || !this.chunked ? 'unavailable' : 'unavailable, cut');
    } else if (error !== null) {
      tallies.endings.add(error === 'stalled' ? error : `reset (${error})`);
    } else if (this.chunked && !this.finalChunk) {
      tallies.endings.add('eof mid-stream'); // e.g. its replica was killed
    } else {
      tallies.endings.add('ended');
    }
    this.stream.ended();
  }

  receive(text) {
    if (this.done) return;
    if (this.head !== null) {
      const all = this.head + text;
      const end = all.indexOf('\r\n\r\n');
      if (end < 0) {
        this.head = all;
        return;
      }
      this.head = null;
      if (!this.answer(all.slice(0, end))) return;
      this.socket.setTimeout(IDLE_MS, () => this.finish('stalled'));
      text = all.slice(end + 4);
    }
    if (this.chunked) this.dechunk(text);
    else this.parse(text);
  }

  /** Check the status line and headers; false if the answer is not an event stream. */
  answer(head) {
    const lines = head.split('\r\n');
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1] ?? 'a bad status line';
    const headers = new Map();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const replica = headers.get('x-replica') ?? 'haproxy'; // every replica answer names it
    const type = headers.get('content-type') ?? '';
    if (status !== '200') {
      tallies.statuses.add(`${status} from ${replica}`);
      this.finishQuietly();
      return false;
    }
    if (!type.startsWith('text/event-stream')) {
      tallies.statuses.add(`200 ${type || 'without a content type'} from ${replica}`);
      this.finishQuietly();
      return false;
    }
    tallies.statuses.add('200');
    this.chunked = /chunked/i.test(headers.get('transfer-encoding') ?? '');
    this.chunkLeft = -1;
    this.stream.state = 'answered';
    return true;
  }

  /** A refused answer was counted (in `statuses`): end it without counting it twice. */
  finishQuietly() {
    this.done = true;
    this.socket.destroy();
    this.stream.refused();
  }

  dechunk(text) {
    let at = 0;
    while (at < text.length && !this.finalChunk) {
      if (this.chunkLeft === -1) {
        const eol = text.indexOf('\n', at);
        if (eol < 0) {
          this.sizeLine += text.slice(at);
          return;
        }
        const line = (this.sizeLine + text.slice(at, eol)).trim();
        this.sizeLine = '';
        at = eol + 1;
        if (line === '') continue; // the CRLF after a chunk's data
        const size = parseInt(line, 16);
        if (size === 0) {
          this.finalChunk = true;
          this.finish(null);
          return;
        }
        this.chunkLeft = size;
      } else {
        const take = Math.min(this.chunkLeft, text.length - at);
        this.parse(text.slice(at, at + take));
        at += take;
        this.chunkLeft -= take;
        if (this.chunkLeft === 0) this.chunkLeft = -1;
      }
    }
  }

  /** Event-stream lines (the server ends them with LF; a CR before it is dropped). */
  parse(text) {
    let start = 0;
    let eol;
    while ((eol = text.indexOf('\n', start)) >= 0) {
      let line = this.line ? this.line + text.slice(start, eol) : text.slice(start, eol);
      this.line = '';
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.field(line);
      start = eol + 1;
      if (this.done) return;
    }
    if (start < text.length) this.line += text.slice(start);
  }

  field(line) {
    if (line === '') return this.dispatch();
    if (line.charCodeAt(0) === 58) return; // ':' a comment (keepalive)
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (name === 'event') this.eventName = value;
    else if (name === 'data') this.data.push(value);
    else if (name === 'id' && !value.includes('\0')) this.idBuffer = value;
    else if (name === 'retry' && /^\d+$/.test(value)) {
      this.stream.retryMs = Number(value);
      this.retryInAnswer = Number(value);
    }
  }

  dispatch() {
    const stream = this.stream;
    stream.lastEventId = this.idBuffer;
    const name = this.eventName || 'message';
    const data = this.data.join('\n');
    const hadData = this.data.length > 0;
    this.eventName = '';
    this.data = [];
    if (!hadData) return;
    tallies.events.add(name);
    if (name === 'message') stream.message(this.idBuffer, data);
    else if (name === 'ready') stream.ready(data);
    else if (name === 'unavailable') this.unavailable = true;
    else if (name === 'gap') stream.gaps++;
  }
}

// the test's commands -------------------------------------------------------------------------

const streams = Array.from({ length: STREAMS }, (_, index) => new Stream(index));
let closing = false;

/** Resolve once `done()` holds (re-checked after every change) or at the deadline. */
function waitFor(done, timeoutS) {
  return new Promise((resolve) => {
    const check = () => {
      if (!done()) return;
      waiters.delete(check);
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      resolve(false);
    }, timeoutS * 1000);
    waiters.add(check);
    check();
  });
}

function status() {
  const states = new Tally();
  const replicas = new Tally();
  for (const stream of streams) {
    states.add(stream.state);
    if (stream.state === 'ready') replicas.add(stream.replica);
  }
  return {
    streams: STREAMS,
    ready: readyNow,
    states,
    replicas, // where the ready streams are
    connects: streams.reduce((n, stream) => n + stream.connects, 0),
    ...tallies,
    readyNotLive,
    refusalRetries: summarize(refusalRetries),
    gaveUp: streams.filter((stream) => stream.gaveUp).length,
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
    cpuSeconds: Math.round(Object.values(process.cpuUsage()).reduce((a, b) => a + b) / 1e5) / 10,
  };
}

function summarize(retries) {
  const given = retries.filter((retry) => retry !== null);
  return {
    count: retries.length,
    without: retries.length - given.length,
    min: given.length ? Math.min(...given) : null,
    max: given.length ? Math.max(...given) : null,
  };
}

/** Open every stream, a batch at a time, each batch ready (or failed) before the next. */
async function open(timeoutS) {
  const deadline = Date.now() + timeoutS * 1000;
  for (let start = 0; start < STREAMS; start += OPEN_BATCH) {
    const batch = streams.slice(start, start + OPEN_BATCH);
    for (const stream of batch) stream.connect();
    const left = (deadline - Date.now()) / 1000;
    if (!(await waitFor(() => batch.every((s) => s.state === 'ready'), Math.max(0, left)))) {
      return { ok: false, ...status() };
    }
  }
  return { ok: true, ...status() };
}

/** Wait until every stream holds an open stream that said `ready`. */
async function awaitReady(timeoutS) {
  const ok = await waitFor(() => readyNow === STREAMS, timeoutS);
  return { ok, ...status() };
}

/** Wait until every stream has received every one of `ids`; which lack which, if not. */
async function awaitIds(ids, timeoutS) {
  wanted = new Uint8Array(messageIds.length + ids.length);
  const unseen = [];
  for (const id of ids) {
    const number = messageIndex.get(id);
    if (number === undefined) unseen.push(id);
    else wanted[number] = 1;
  }
  // An id no stream has seen yet gets its number now, so that its arrival counts.
  for (const id of unseen) {
    messageIndex.set(id, messageIds.length);
    messageIds.push(id);
    messageTexts.push(null);
    wanted = growTo(wanted, messageIds.length);
    wanted[messageIds.length - 1] = 1;
  }
  const numbers = ids.map((id) => messageIndex.get(id));
  streamsLacking = 0;
  for (const stream of streams) {
    stream.lacking = 0;
    for (const number of numbers) if (!stream.seen[number]) stream.lacking++;
    if (stream.lacking) streamsLacking++;
  }
  const atStart = new Tally(); // where the streams that lacked some were, when the wait began
  for (const stream of streams) if (stream.lacking) atStart.add(stream.replica ?? stream.state);
  const began = Date.now();
  const ok = await waitFor(() => streamsLacking === 0, timeoutS);
  const lacking = streams.filter((stream) => stream.lacking > 0);
  wanted = null;
  return {
    ok,
    waitedS: (Date.now() - began) / 1000,
    lackingAtStart: atStart,
    streamsLacking: lacking.length,
    examples: lacking.slice(0, EXAMPLES).map((stream) => ({
      stream: stream.index,
      state: stream.state,
      replica: stream.replica,
      live: stream.live,
      connects: stream.connects,
      lastEventId: stream.lastEventId,
      lacks: ids.filter((id) => !stream.seen[messageIndex.get(id)]).slice(0, EXAMPLES),
      lacking: stream.lacking,
    })),
  };
}

function growTo(array, length) {
  if (length <= array.length) return array;
  const grown = new Uint8Array(Math.max(length, array.length * 2));
  grown.set(array);
  return grown;
}

/** Every fault of every stream against the accepted `ids`, and the counts of everything. */
function report(ids, refusedTexts) {
  const accepted = new Set(ids);
  const refused = new Set(refusedTexts);
  const faults = { lost: [], duplicated: [], misordered: [], gaps: [], gaveUp: [] };
  const counts = { lost: 0, duplicated: 0, misordered: 0, gaps: 0, gaveUp: 0 };
  for (const stream of streams) {
    const lost = ids.filter((id) => !stream.seen[messageIndex.get(id) ?? stream.seen.length]);
    const found = {
      lost: lost.length ? { count: lost.length, ids: lost.slice(0, EXAMPLES) } : null,
      duplicated: stream.duplicates.length ? stream.duplicates : null,
      misordered: stream.misordered.length ? stream.misordered : null,
      gaps: stream.gaps || null,
      gaveUp: stream.gaveUp || null,
    };
    for (const [kind, fault] of Object.entries(found)) {
      if (fault === null) continue;
      counts[kind]++;
      if (faults[kind].length < EXAMPLES) {
        faults[kind].push({ stream: stream.index, replica: stream.replica, [kind]: fault });
      }
    }
  }
  // Messages no 201 announced: only those of refused POSTs (their fate unknown) may appear.
  const unknown = [];
  for (let number = 0; number < messageIds.length; number++) {
    if (accepted.has(messageIds[number])) continue;
    const text = messageTexts[number];
    if (text !== null && !refused.has(text)) unknown.push([messageIds[number], text]);
  }
  return {
    ok: true,
    counts,
    faults,
    unknown: unknown.slice(0, EXAMPLES),
    unknownCount: unknown.length,
    ...status(),
  };
}

async function run(command) {
  switch (command.cmd) {
    case 'open':
      return open(command.timeout_s);
    case 'status':
      return { ok: true, ...status() };
    case 'await_ready':
      return awaitReady(command.timeout_s);
    case 'await_ids':
      return awaitIds(command.ids, command.timeout_s);
    case 'report':
      return report(command.ids, command.refused_texts ?? []);
    case 'close':
      closing = true;
      return { ok: true };
    default:
      return { ok: false, error: `unknown command ${JSON.stringify(command.cmd)}` };
  }
}

// Commands run one at a time, in order: the test waits for each answer before the next.
let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  queue = queue.then(async () => {
    let answer;
    try {
      answer = await run(JSON.parse(line));
    } catch (error) {
      answer = { ok: false, error: String(error?.stack ?? error) };
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
    if (closing) process.exit(0);
  });
});
process.stdin.on('end', () => queue.then(() => process.exit(0)));
