#!/usr/bin/env node
/**
 * The load generator: N SSE subscribers and a paced poster on one event loop; JSON on stdout.
 *
 *     node bench/loadgen.mjs --url http://127.0.0.1:8000 [--url ...] [options]  (--help lists them)
 *
 * Node with core modules only (no npm packages). Why Node: it needs less CPU per delivery than
 * the Python epoll generator it replaced (figures in bench/README.md); most of what is left is
 * the kernel's receive path, one read() and one ACK per frame.
 *
 * Each stream is one GET; each POST has its own `Connection: close` socket, so a slow answer never
 * delays the next post. Streams open in a ramp (batches of 100, each ready before the next) or as
 * a burst (all at once, as fast as this loop can issue connects: a reconnect storm). Three shapes
 * of run: open, then post `--messages` at `--rate` (or hold the streams idle); `--storm`: open
 * every stream at once while a thread of its own posts at `--rate` until every stream is ready or
 * failed; `--reconnect K`: hold the streams, then close K of them and reopen K at once.
 *
 * Rooms (`--rooms a,b,c`): message i goes to room i % K. Each stream follows one room (stream j
 * room j % K; a room's streams and messages go through every server in turn), or, with
 * `--multi-room`, every room on one `GET /events?rooms=a,b,c` stream (sse-chat's multi-room
 * stream, whose `id:` is an opaque cursor: such frames are ordered per room by the message id in
 * their data). Lost, duplicated and out-of-order messages are counted per room.
 *
 * A message's text is `b <sequence> <send time ns>`; latency is receive time minus send time,
 * both from process.hrtime.bigint() (CLOCK_MONOTONIC), read once per read event, kept as ns in a
 * Float64Array (exact while uptime < 104 days, 2^53 ns). Streams are read through one shared
 * buffer (net's `onread`), so a read allocates only its latin1 string; frames are found with a
 * global regex over that string, never de-chunked. How frames, readiness and a stored POST look
 * differs between sse-chat (and the Starlette peer) and nchan: `--protocol`.
 *
 * File descriptors: Node cannot call setrlimit, so this cannot raise its own RLIMIT_NOFILE. The
 * caller must: bench/run.py raises its soft limit to the hard limit (raise_fd_limit) before it
 * spawns anything, and children inherit it; from a shell, `ulimit -n`. A limit below the stream
 * count is reported on stderr; each socket refused for lack of descriptors is a connection error.
 */

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import process from 'node:process';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const OPEN_BATCH = 100; // below hypercorn's default listen backlog, so no SYN is dropped
const READ_BUFFER = Buffer.allocUnsafe(262144); // shared by every stream; read synchronously
let connectTimeoutMs = 5000; // a connect that takes longer fails (--connect-timeout)

// counting -------------------------------------------------------------------------------------

const READY = 'event: ready';

/** What differs between the servers: how a chat frame looks, when a stream is ready, which POST
 * answers mean stored. In each frame regex: the id's two numbers, then the text's `b <sequence>
 * <send time ns>`. */
const PROTOCOLS = {
  // sse-chat and the Starlette peer: `id: <ms>-<seq>` first, and an `event: ready` frame.
  'sse-chat': {
    name: 'sse-chat',
    frame: /id: (\d+)-(\d+)\r?\nevent: message\r?\ndata: [^\n]*?"text": ?"b (\d+) (\d+)"/g,
    /** The complete `event: ready` frame is in `buffer[:cut]`. */
    ready: (buffer, cut) => {
      const at = buffer.indexOf(READY); // first occurrence: if it is not before the cut, none is
      return at >= 0 && at + READY.length <= cut;
    },
    // A multi-room stream's frame: `id: <cursor>`, so the message id is taken from the data
    // (sse-chat's message JSON starts with it).
    roomsFrame:
      /event: message\r?\ndata: \{"id": ?"(\d+)-(\d+)"[^\n]*?"text": ?"b (\d+) (\d+)"/g,
    postOk: /^HTTP\/1\.[01] 201 /,
  },
  // nchan: `event:` before `id: <unix s>:<index in that second>`, the data is the POST body as
  // sent; no ready event: a stream is ready at the first byte of its body (nchan's `: hi` comment,
  // written once the subscriber is enqueued); a POST answers 201, or 202 when nobody listened.
  nchan: {
    name: 'nchan',
    frame: /event: message\r?\nid: (\d+):(\d+)\r?\ndata: [^\n]*?"text": ?"b (\d+) (\d+)"/g,
    ready: (buffer) => buffer.length > 0,
    postOk: /^HTTP\/1\.[01] 20[12] /,
  },
};
let protocol = PROTOCOLS['sse-chat']; // --protocol

/** The text of benchmark message `sequence`, sent at `sentNs` (a BigInt from hrtime). */
function messageText(sequence, sentNs) {
  return `b ${sequence} ${sentNs}`;
}

/** Now on the generator's clock, in ns, as a Number. */
function hrNow() {
  return Number(process.hrtime.bigint());
}

/** Counts over every subscriber; duplicates and order violations also per room. */
class Totals {
  constructor(expected, rooms) {
    // ns, the first `deliveries` used; sized for the expected count (at most 32 MiB), then doubled
    this.latencies = new Float64Array(Math.min(Math.max(1024, expected), 1 << 22));
    this.deliveries = 0;
    this.duplicates = 0;
    this.orderViolations = 0;
    this.duplicatesByRoom = new Uint32Array(rooms);
    this.orderViolationsByRoom = new Uint32Array(rooms);
    this.misrouted = 0; // frames of a room the stream does not follow
    this.firstNs = 0;
    this.lastNs = 0;
  }

  /** The latencies so far, sorted ascending. */
  sortedLatencies() {
    return this.latencies.slice(0, this.deliveries).sort();
  }
}

/** One stream's progress: unparsed tail, which messages it has seen, and per room it follows
 * the last message id (`lastMs`-`lastSeq`). `room`: the index of the one room it
 * follows, or -1 for every room of the run (`roomCount` of them) on one multi-room stream. */
class Subscriber {
  constructor(messages, room, roomCount) {
    this.tail = '';
    this.ready = false;
    this.readyNs = 0; // when it became ready, on hrNow()'s clock
    this.room = room;
    this.roomCount = roomCount;
    const followed = room < 0 ? roomCount : 1;
    this.lastMs = new Float64Array(followed);
    this.lastSeq = new Float64Array(followed);
    // Message i is seen[i] on a stream of every room, else seen[i / roomCount] (its room's i-th).
    this.seen = new Uint8Array(room < 0 ? messages : Math.ceil(messages / roomCount));
  }

  /** Count the complete frames in `tail + data` (latin1 strings); keep the incomplete rest. */
  feed(data, nowNs, totals) {
    const buffer = this.tail ? this.tail + data : data;
    const cut = buffer.lastIndexOf('\n\n');
    if (!this.ready && protocol.ready(buffer, cut)) {
      this.ready = true;
      this.readyNs = nowNs;
    }
    if (cut < 0) {
      this.tail = buffer;
      return;
    }
    this.tail = cut + 2 < buffer.length ? buffer.slice(cut + 2) : '';
    // Scan buffer[:cut] without slicing: no match can span the cut (a frame holds no "\n\n"), so
    // the matches that start before it are exactly those in buffer[:cut].
    const FRAME = this.room < 0 ? protocol.roomsFrame : protocol.frame;
    const seen = this.seen;
    const roomCount = this.roomCount;
    let latencies = totals.latencies;
    FRAME.lastIndex = 0;
    let m;
    while ((m = FRAME.exec(buffer)) !== null && m.index < cut) {
      if (totals.deliveries === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        totals.latencies = latencies = grown;
      }
      latencies[totals.deliveries++] = nowNs - Number(m[4]);
      if (!totals.firstNs) totals.firstNs = nowNs;
      totals.lastNs = nowNs;
      const index = Number(m[3]);
      const room = index % roomCount;
      let slot = room; // which of this stream's rooms
      let at = index; // where in `seen`
      if (this.room >= 0) {
        if (room !== this.room) {
          totals.misrouted++;
          continue;
        }
        slot = 0;
        at = (index - room) / roomCount;
      }
      if (at >= seen.length) continue;
      if (seen[at]) {
        totals.duplicates++;
        totals.duplicatesByRoom[room]++;
        continue;
      }
      seen[at] = 1;
      const ms = Number(m[1]);
      const seq = Number(m[2]);
      const lastMs = this.lastMs[slot];
      if (ms < lastMs || (ms === lastMs && seq <= this.lastSeq[slot])) {
        totals.orderViolations++;
        totals.orderViolationsByRoom[room]++;
      }
      this.lastMs[slot] = ms;
      this.lastSeq[slot] = seq;
    }
    FRAME.lastIndex = 0;
  }

  /** Add to `lost[r]` how many messages of room r this stream missed among those the server
   * answered as stored (`stored[i]` for message i; one whose POST failed yet arrived is not
   * counted either way). */
  addLost(stored, lost) {
    const seen = this.seen;
    const k = this.roomCount;
    if (this.room < 0) {
      for (let i = 0; i < seen.length; i++) if (stored[i] && !seen[i]) lost[i % k]++;
      return;
    }
    for (let at = 0; at < seen.length; at++) {
      if (stored[at * k + this.room] && !seen[at]) lost[this.room]++;
    }
  }
}

/** Round half to even (as Python's round(), which the percentiles have always used). */
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** The nearest-rank percentile of already sorted values (0 when empty). */
function percentile(sorted, fraction) {
  if (sorted.length === 0) return 0;
  const rank = roundHalfEven(fraction * sorted.length) - 1;
  return sorted[Math.max(0, Math.min(sorted.length - 1, rank))];
}

// /proc ----------------------------------------------------------------------------------------

let clockTicks = 0;

/** sysconf(SC_CLK_TCK), asked of getconf once (Node has no sysconf). */
function ticksPerSecond() {
  if (!clockTicks) {
    clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'latin1' }));
  }
  return clockTicks;
}

/** User plus system CPU time that `pid` has used so far, in seconds. */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/);
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

/** Resident set size of `pid` in KiB. */
function rssKib(pid) {
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'latin1').split('\n')) {
    if (line.startsWith('VmRSS:')) return Number(line.split(/\s+/)[1]);
  }
  return 0;
}

function serverRssKib(pids) {
  return pids.reduce((sum, pid) => sum + rssKib(pid), 0);
}

function serverCpuSeconds(pids) {
  return pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

/** CPU seconds (`used_cpu_sys` + `used_cpu_user` of `INFO cpu`) that the Redis on `port` has
 * used so far: the figure Redis itself gives, to the microsecond. */
function redisCpuSeconds(port) {
  return new Promise((resolve, reject) => {
    let reply = '';
    const sock = net.connect({ host: '127.0.0.1', port });
    const fail = (why) => {
      sock.destroy();
      reject(new Error(`INFO cpu of the Redis on port ${port}: ${why}`));
    };
    sock.setTimeout(5000, () => fail('no answer in 5 s'));
    sock.on('error', (error) => fail(error.message));
    sock.on('close', () => fail('connection closed'));
    sock.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      const head = /^\$(\d+)\r\n/.exec(reply); // a bulk string: $<length>, the text, \r\n
      if (!head || reply.length < head[0].length + Number(head[1])) return;
      const field = (name) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(reply)?.[1]);
      const seconds = field('used_cpu_sys') + field('used_cpu_user');
      sock.removeAllListeners('close');
      sock.destroy();
      if (Number.isNaN(seconds)) reject(new Error(`INFO cpu of port ${port}: ${reply.trim()}`));
      else resolve(seconds);
    });
    sock.write('*2\r\n$4\r\nINFO\r\n$3\r\ncpu\r\n');
  });
}

/** `redisCpuSeconds` of each port, as {port: seconds}. */
async function redisCpu(ports) {
  const seconds = await Promise.all(ports.map(redisCpuSeconds));
  return Object.fromEntries(ports.map((port, i) => [port, seconds[i]]));
}

/** The soft RLIMIT_NOFILE, from /proc (Node has no getrlimit); Infinity when unlimited. */
function openFileLimit() {
  const limits = fs.readFileSync('/proc/self/limits', 'latin1').split('\n');
  const line = limits.find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
}

// the run --------------------------------------------------------------------------------------

/** [host, port] of `url` (port 80 if none); only 127.0.0.1 is allowed. */
function address(url) {
  const netloc = /^(?:[A-Za-z][A-Za-z0-9+.-]*:)?\/\/([^/?#]*)/.exec(url)?.[1] ?? '';
  const hostport = netloc.slice(netloc.lastIndexOf('@') + 1);
  const colon = hostport.lastIndexOf(':');
  const host = colon < 0 ? hostport : hostport.slice(0, colon);
  const port = colon < 0 ? '' : hostport.slice(colon + 1);
  if (host !== '127.0.0.1') {
    process.stderr.write('the benchmark only talks to 127.0.0.1\n');
    process.exit(1);
  }
  if (port !== '' && !/^\d+$/.test(port)) usageError(`bad port in --url ${url}`);
  return [host, port === '' ? 80 : Number(port)];
}

/** Whether `response` (latin1) holds its headers and the whole `Content-Length` body: the
 * answer is complete at Content-Length; no need to wait for EOF. */
function responseComplete(response) {
  const end = response.indexOf('\r\n\r\n');
  if (end < 0) return false;
  for (const line of response.slice(0, end).split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    const name = (colon < 0 ? line : line.slice(0, colon)).trim().toLowerCase();
    if (name === 'content-length') {
      return response.length - end - 4 >= Number(line.slice(colon + 1));
    }
  }
  return false;
}

/** Which of `servers` item i (message or stream) of room i % `rooms` goes through: round-robin,
 * shifted by one server each round over the rooms, so that a room's items go through every
 * server in turn (plain round-robin would send them all through one when `servers` divides
 * `rooms`), and every room gets an item before any gets a second. */
function spread(i, rooms, servers) {
  return ((i % rooms) + Math.floor(i / rooms)) % servers;
}

/** Summary of ns values in ms: p50, p99, max; null when there are none. */
function msPercentiles(values) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return {
    p50: percentile(sorted, 0.5) / 1e6,
    p99: percentile(sorted, 0.99) / 1e6,
    max: percentile(sorted, 1.0) / 1e6,
  };
}

/** Streams opened together (one burst, or a ramp of batches): how fast their connects were
 * issued and made, when each became ready, what failed. A stream is settled once it is ready or
 * has failed. */
class Wave {
  constructor(burst) {
    this.burst = burst;
    this.startNs = hrNow(); // the first connect
    this.issuedNs = 0; // when the last connect() had been issued
    this.lastConnectedNs = 0;
    this.opened = 0;
    this.connecting = 0;
    this.settled = 0;
    this.notReady = 0; // live when the wait for the wave ended, yet never ready
    this.readyNs = []; // each ready stream's time to ready, ns after startNs
    this.connectErrors = 0; // refused, reset or timed out before connecting
    this.statuses = {}; // answers other than 200: status code -> count
    this.ended = 0; // closed by the server after connecting, unless refused with a status
  }

  /** Answers other than 200, all codes together. */
  non200() {
    return Object.values(this.statuses).reduce((sum, n) => sum + n, 0);
  }

  /** The JSON-ready figures. */
  summary() {
    const since = (ns) => (ns ? (ns - this.startNs) / 1e9 : 0);
    return {
      mode: this.burst ? 'burst' : 'ramp',
      streams: this.opened,
      ready: this.readyNs.length,
      issued_per_s: this.opened / Math.max(1e-9, since(this.issuedNs)),
      connected_s: since(this.lastConnectedNs),
      all_ready_s: this.readyNs.reduce((most, ns) => Math.max(most, ns), 0) / 1e9,
      ready_ms: msPercentiles(this.readyNs),
      connect_errors: this.connectErrors,
      non_200: this.non200(),
      statuses: this.statuses,
      ended: this.ended,
      not_ready: this.notReady,
    };
  }
}

/** The POSTs of a run: each on its own `Connection: close` socket, timed until its answer. */
class Poster {
  constructor(addrs, rooms, onSettled = () => {}) {
    this.addrs = addrs;
    this.rooms = rooms;
    this.onSettled = onSettled; // called as each POST ends
    this.inFlight = 0;
    this.ok = 0;
    this.okByRoom = new Uint32Array(rooms.length);
    this.stored = new Uint8Array(0); // stored[i]: message i was answered as stored (grown)
    this.failed = 0;
    this.failures = {}; // why: the status, the socket error's code, or how it ended
    this.latenciesNs = [];
  }

  /** POST benchmark message `sequence` to room `sequence % K`, through server `spread(...)`. */
  post(sequence) {
    const roomIndex = sequence % this.rooms.length;
    const [host, port] = this.addrs[spread(sequence, this.rooms.length, this.addrs.length)];
    const sentNs = process.hrtime.bigint();
    const started = Number(sentNs);
    const text = JSON.stringify(messageText(sequence, sentNs));
    const body = Buffer.from(`{"user": "bench", "text": ${text}}`); // json.dumps's separators
    const head =
      `POST /rooms/${this.rooms[roomIndex]}/messages HTTP/1.1\r\nHost: ${host}:${port}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n` +
      'Connection: close\r\n\r\n';
    let response = '';
    let finished = false;
    let connected = false;
    let error = null; // the socket error's code, if any
    this.inFlight++;
    const sock = net.connect({ host, port });
    /** The end: EOF, an error, or a complete response. */
    const finish = (now) => {
      if (finished) return;
      finished = true;
      sock.destroy();
      this.inFlight--;
      if (protocol.postOk.test(response)) {
        this.ok++;
        this.okByRoom[roomIndex]++;
        this.markStored(sequence);
        this.latenciesNs.push(now - started);
      } else {
        this.failed++; // also a refused or timed-out connect
        const status = /^HTTP\/1\.[01] (\d{3}) /.exec(response)?.[1];
        const why = status ?? error ?? (connected ? 'closed, no answer' : 'connect timeout');
        this.failures[why] = (this.failures[why] ?? 0) + 1;
      }
      this.onSettled();
    };
    sock.setNoDelay(true);
    sock.setTimeout(connectTimeoutMs, () => sock.destroy());
    sock.once('connect', () => {
      connected = true;
      sock.setTimeout(0);
    });
    sock.on('data', (chunk) => {
      const now = hrNow();
      response += chunk.toString('latin1');
      if (responseComplete(response)) finish(now);
    });
    sock.on('error', (e) => {
      error = e.code ?? e.message;
    });
    sock.on('end', () => finish(hrNow()));
    sock.on('close', () => finish(hrNow()));
    sock.write(Buffer.concat([Buffer.from(head), body]));
  }

  /** Message `sequence` was stored (the server answered so). */
  markStored(sequence) {
    if (sequence >= this.stored.length) {
      const grown = new Uint8Array(Math.max(1024, 2 * sequence));
      grown.set(this.stored);
      this.stored = grown;
    }
    this.stored[sequence] = 1;
  }

  /** POST messages 0, 1, ... at `rate`/s until `count` are sent or `stop()` holds when the next
   * is due; resolves to how many were sent. Message i is due at start + i/rate: a late timer
   * catches up, it never shifts the schedule. */
  pace(rate, count, stop = () => false) {
    const start = hrNow();
    return new Promise((resolve) => {
      let sequence = 0;
      const tick = () => {
        while (sequence < count && !stop()) {
          const wait = start + (sequence * 1e9) / rate - hrNow();
          if (wait > 0) {
            setTimeout(tick, Math.ceil(wait / 1e6));
            return;
          }
          this.post(sequence++);
        }
        resolve(sequence);
      };
      tick();
    });
  }

  /** How many succeeded and failed, and their latency p50/p99 in ms. */
  summary() {
    const times = msPercentiles(this.latenciesNs);
    const postMs = times && { p50: times.p50, p99: times.p99 };
    return {
      posts_ok: this.ok,
      posts_failed: this.failed,
      post_failures: this.failures,
      post_ms: postMs,
    };
  }
}

/** Posts at `rate`/s on a thread of its own from the message 'start' to the message 'stop', then
 * waits for the answers (at most `drainTimeout` s) and sends back its summary. On its own event
 * loop, a POST's answer is read when it arrives, not after the main loop's work on a storm of
 * thousands of streams (it only shares the CPU). */
async function posterThread({ addrs, rooms, protocolName, connectTimeout, rate, drainTimeout }) {
  protocol = PROTOCOLS[protocolName];
  connectTimeoutMs = connectTimeout * 1000;
  let drained = () => {};
  const poster = new Poster(addrs, rooms, () => {
    if (poster.inFlight === 0) drained();
  });
  const message = (expected) =>
    new Promise((resolve) => {
      parentPort.once('message', (got) => {
        if (got !== expected) throw new Error(`poster thread: ${got}, not ${expected}`);
        resolve();
      });
    });
  const started = message('start');
  parentPort.postMessage('ready');
  await started;
  let stop = false;
  message('stop').then(() => {
    stop = true;
  });
  await poster.pace(rate, Infinity, () => stop);
  if (poster.inFlight) {
    await Promise.race([new Promise((resolve) => (drained = resolve)), sleep(drainTimeout)]);
  }
  parentPort.postMessage(poster.summary());
}

/** Owns the sockets and the counts of one run. */
class LoadGenerator {
  constructor({ urls, rooms, multiRoom, messages, pids, redisPorts, expectedDeliveries }) {
    this.addrs = urls.map(address);
    this.rooms = rooms;
    this.multiRoom = multiRoom; // each stream follows every room on one /events?rooms= stream
    this.messages = messages;
    this.pids = pids;
    this.redisPorts = redisPorts; // whose CPU (INFO cpu) is taken over the sending
    this.subscribers = new Map(); // live streams: socket -> Subscriber
    this.dropped = []; // closed mid-run by the server; what they got still counts
    this.retired = new Set(); // sockets this generator closed on purpose (a reconnect)
    this.waves = [];
    this.streamsOpened = 0; // for the round-robin over the servers
    this.readyLive = 0; // live streams that are ready, kept up to date
    this.poster = new Poster(this.addrs, rooms, () => this.notify());
    this.totals = new Totals(expectedDeliveries, rooms.length);
    this.closing = false;
    this.wake = null; // re-checks what the run is waiting for; called after every event
  }

  /** Resolve once `done(late)` holds, re-checked after every event; `late` from `deadlineNs` on. */
  waitFor(done, deadlineNs) {
    return new Promise((resolve) => {
      let late = false;
      let timer = null;
      const check = () => {
        if (!done(late)) return;
        this.wake = null;
        clearTimeout(timer);
        resolve();
      };
      const onTimer = () => {
        const left = deadlineNs - hrNow();
        if (left > 0) {
          timer = setTimeout(onTimer, Math.ceil(left / 1e6)); // woke early (ms timer granularity)
          return;
        }
        late = true;
        check();
      };
      this.wake = check;
      timer = setTimeout(onTimer, Math.max(0, Math.ceil((deadlineNs - hrNow()) / 1e6)));
      check();
    });
  }

  notify() {
    if (this.wake !== null) this.wake();
  }

  /** Open `count` streams as one wave: all at once if `burst`, else in batches, each settled
   * before the next; resolves once all are settled, or past `timeout` s once the connects are. */
  async open(count, timeout, burst) {
    const wave = new Wave(burst);
    this.waves.push(wave);
    const deadline = wave.startNs + timeout * 1e9;
    const batch = burst ? Math.max(1, count) : OPEN_BATCH;
    for (let start = 0; start < count; start += batch) {
      this.openStreams(Math.min(batch, count - start), wave);
      await this.settleWave(wave, deadline);
    }
    return wave;
  }

  /** Wait until every stream of `wave` is settled; from `deadline` on, until its connects are. */
  async settleWave(wave, deadline) {
    await this.waitFor(
      (late) => wave.connecting === 0 && (late || wave.settled === wave.opened),
      deadline,
    );
    wave.notReady = wave.opened - wave.settled;
  }

  /** Issue `count` stream connects at once; stream j follows room j % K (or, multi-room, every
   * room) on server `spread(...)`. */
  openStreams(count, wave) {
    const k = this.multiRoom ? 1 : this.rooms.length;
    for (let i = 0; i < count; i++) {
      const j = this.streamsOpened++;
      const server = this.addrs[spread(j, k, this.addrs.length)];
      this.openStream(server, this.multiRoom ? -1 : j % k, wave);
    }
    // net.connect() to an address makes its connect() on the next tick, in order: this tick
    // runs after the last of them.
    process.nextTick(() => {
      wave.issuedNs = hrNow();
    });
  }

  /** One `GET .../events` stream of `wave`, of room index `room` (-1: every room). */
  openStream([host, port], room, wave) {
    const path =
      room < 0 ? `/events?rooms=${this.rooms.join(',')}` : `/rooms/${this.rooms[room]}/events`;
    const request =
      `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n` +
      'Accept: text/event-stream\r\n\r\n';
    const sub = new Subscriber(this.messages, room, this.rooms.length);
    const totals = this.totals;
    let header = ''; // the response so far while its header is incomplete; null after it
    let state = 'connecting'; // -> 'live' -> 'gone'
    wave.opened++;
    wave.connecting++;
    const sock = net.connect({
      host,
      port,
      onread: {
        buffer: READ_BUFFER,
        callback: (nread, buf) => {
          const now = hrNow();
          let data = buf.toString('latin1', 0, nread);
          if (header !== null) {
            data = header + data;
            const end = data.indexOf('\r\n\r\n');
            if (end < 0) {
              header = data;
              return;
            }
            header = null;
            if (!data.startsWith('HTTP/1.1 200') && !data.startsWith('HTTP/1.0 200')) {
              const status = data.slice(9, 12);
              wave.statuses[status] = (wave.statuses[status] ?? 0) + 1;
              drop(false);
              return;
            }
            data = data.slice(end + 4);
          }
          const wasReady = sub.ready;
          sub.feed(data, now, totals);
          if (!wasReady && sub.ready) {
            this.readyLive++;
            wave.settled++;
            wave.readyNs.push(sub.readyNs - wave.startNs);
          }
          this.notify();
        },
      },
    });
    /** Forget a live stream; `byServer`: the server closed it (an error unless we were closing
     * it ourselves). What it got still counts. */
    const drop = (byServer) => {
      if (state !== 'live') return;
      state = 'gone';
      const ours = this.closing || this.retired.has(sock);
      if (byServer && !ours) wave.ended++;
      if (sub.ready) this.readyLive--;
      else if (!ours) wave.settled++; // failed before it was ready
      this.subscribers.delete(sock);
      if (!ours) this.dropped.push(sub);
      sock.destroy();
      this.notify();
    };
    sock.setNoDelay(true);
    sock.setTimeout(connectTimeoutMs, () => sock.destroy());
    sock.once('connect', () => {
      sock.setTimeout(0);
      state = 'live';
      wave.connecting--;
      wave.lastConnectedNs = hrNow();
      this.subscribers.set(sock, sub);
      this.notify();
    });
    sock.on('error', () => {}); // 'close' follows; counted there
    sock.on('end', () => drop(true)); // EOF
    sock.on('close', () => {
      if (state === 'connecting') {
        state = 'gone';
        wave.connecting--;
        wave.connectErrors++;
        wave.settled++;
        this.notify();
      } else {
        drop(true);
      }
    });
    sock.write(request);
  }

  /** POST every message at `rate`/s, then wait for deliveries; the CPU s of the servers, of
   * each Redis ({port: s}) and the wall s it took. */
  async send(rate, drainTimeout) {
    const redis0 = await redisCpu(this.redisPorts);
    const cpu0 = serverCpuSeconds(this.pids);
    const start = hrNow();
    const poster = this.poster;
    await poster.pace(rate, this.messages);
    const expected = this.expectedDeliveries();
    const deadline = hrNow() + drainTimeout * 1e9;
    await this.waitFor(
      (late) => late || (poster.inFlight === 0 && this.totals.deliveries >= expected()),
      deadline,
    );
    const wall = (hrNow() - start) / 1e9;
    const serverCpu = serverCpuSeconds(this.pids) - cpu0;
    const redis1 = await redisCpu(this.redisPorts);
    const redisCpuS = Object.fromEntries(
      Object.entries(redis1).map(([port, seconds]) => [port, seconds - redis0[port]]),
    );
    return { serverCpu, redisCpuS, wall };
  }

  /** A function giving how many deliveries the live streams should have had, by the POSTs
   * stored so far in the rooms each follows. */
  expectedDeliveries() {
    const poster = this.poster;
    const byRoom = new Uint32Array(this.rooms.length); // live single-room streams per room
    let everyRoom = 0; // live multi-room streams
    for (const sub of this.subscribers.values()) {
      if (sub.room < 0) everyRoom++;
      else byRoom[sub.room]++;
    }
    return () => {
      let sum = everyRoom * poster.ok;
      for (let r = 0; r < byRoom.length; r++) sum += byRoom[r] * poster.okByRoom[r];
      return sum;
    };
  }

  /** Open `count` streams at once while a poster thread posts at `rate`/s, until every stream
   * is settled (or `timeout` s); the poster's summary once its posts are answered (or
   * `drainTimeout` s). */
  async storm(count, rate, timeout, drainTimeout) {
    const thread = new Worker(new URL(import.meta.url), {
      workerData: {
        addrs: this.addrs,
        rooms: this.rooms,
        protocolName: protocol.name,
        connectTimeout: connectTimeoutMs / 1000,
        rate,
        drainTimeout,
      },
    });
    const reply = () =>
      new Promise((resolve, reject) => {
        thread.once('message', resolve);
        thread.once('error', reject);
      });
    await reply(); // 'ready'
    const summary = reply();
    thread.postMessage('start');
    const wave = new Wave(true);
    this.waves.push(wave);
    this.openStreams(count, wave);
    await this.settleWave(wave, wave.startNs + timeout * 1e9);
    thread.postMessage('stop');
    const posts = await summary;
    await thread.terminate();
    return posts;
  }

  /** Close `count` live streams, then open as many at once (the same clients coming back); the
   * new wave, timed from its first connect, once settled (or `timeout` s). */
  async reconnect(count, timeout) {
    const leaving = [...this.subscribers.keys()].slice(0, count);
    for (const sock of leaving) {
      this.retired.add(sock);
      sock.destroy();
    }
    const wave = new Wave(true);
    this.waves.push(wave);
    this.openStreams(leaving.length, wave);
    await this.settleWave(wave, wave.startNs + timeout * 1e9);
    return wave;
  }

  /** Errors over every wave: connect errors, answers other than 200, streams ended. */
  errors() {
    const statuses = {};
    for (const wave of this.waves) {
      for (const [status, n] of Object.entries(wave.statuses)) {
        statuses[status] = (statuses[status] ?? 0) + n;
      }
    }
    const sum = (field) => this.waves.reduce((total, wave) => total + wave[field], 0);
    return {
      connect_errors: sum('connectErrors'),
      non_200: this.waves.reduce((total, wave) => total + wave.non200(), 0),
      statuses,
      ended: sum('ended'),
    };
  }

  close() {
    this.closing = true;
    for (const sock of this.subscribers.keys()) sock.destroy();
  }
}

function sleep(seconds) {
  return new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}

/** One benchmark run, as a JSON-ready object. */
async function run(args) {
  if (args.pid.length) ticksPerSecond(); // fork getconf now, before thousands of sockets exist
  const limit = openFileLimit();
  if (limit < args.subscribers + 64) {
    const streams = args.subscribers;
    process.stderr.write(`loadgen.mjs: open-file limit ${limit} is low for ${streams} streams\n`);
  }
  const messages = args.storm ? 0 : args.messages; // a storm's posts are not followed one by one
  const perStream = args.multi_room ? messages : Math.ceil(messages / args.rooms.length);
  const gen = new LoadGenerator({
    urls: args.url,
    rooms: args.rooms,
    multiRoom: args.multi_room,
    messages,
    pids: args.pid,
    redisPorts: args.redis_port,
    expectedDeliveries: args.subscribers * perStream,
  });
  const rssBefore = serverRssKib(args.pid);
  const result = { subscribers: args.subscribers, rss_before_kib: rssBefore };
  if (args.storm) {
    const posts = await gen.storm(
      args.subscribers,
      args.rate,
      args.open_timeout,
      args.drain_timeout,
    );
    await sleep(args.settle);
    const rssAfter = serverRssKib(args.pid);
    const totals = gen.totals;
    result.storm = {
      ...posts,
      rss_after_kib: rssAfter,
      kib_per_stream: (rssAfter - rssBefore) / Math.max(1, args.subscribers),
      deliveries: totals.deliveries,
      delivery_ms: msPercentiles(totals.latencies.subarray(0, totals.deliveries)),
    };
    result.ready = gen.readyLive;
  } else {
    await gen.open(args.subscribers, args.open_timeout, args.burst);
    await sleep(args.settle);
    const ready = gen.readyLive;
    const rssIdle = serverRssKib(args.pid);
    Object.assign(result, {
      ready,
      rss_idle_kib: rssIdle,
      kib_per_idle_connection: (rssIdle - rssBefore) / Math.max(1, ready),
    });
    if (args.reconnect) {
      const wave = await gen.reconnect(args.reconnect, args.open_timeout);
      await sleep(args.settle);
      result.reconnect = {
        ...wave.summary(),
        rss_before_kib: rssIdle,
        rss_after_kib: serverRssKib(args.pid),
      };
    }
    if (args.messages) {
      const usage0 = process.cpuUsage();
      const { serverCpu, redisCpuS, wall } = await gen.send(args.rate, args.drain_timeout);
      const usage = process.cpuUsage(usage0);
      const totals = gen.totals;
      const lostByRoom = new Float64Array(args.rooms.length);
      for (const sub of [...gen.subscribers.values(), ...gen.dropped]) {
        if (sub.ready) sub.addLost(gen.poster.stored, lostByRoom);
      }
      const latencies = totals.sortedLatencies();
      const span =
        totals.deliveries > 1 ? Math.max(1, totals.lastNs - totals.firstNs) / 1e9 : 1;
      const loadgenCpu = (usage.user + usage.system) / 1e6;
      Object.assign(result, {
        messages: args.messages,
        ...gen.poster.summary(),
        deliveries: totals.deliveries,
        deliveries_per_s: totals.deliveries / span,
        lost: lostByRoom.reduce((sum, n) => sum + n, 0),
        duplicates: totals.duplicates,
        order_violations: totals.orderViolations,
        latency_ms: Object.fromEntries(
          [['p50', 0.5], ['p95', 0.95], ['p99', 0.99], ['max', 1.0]].map(([name, q]) => [
            name,
            percentile(latencies, q) / 1e6,
          ]),
        ),
        server_cpu_percent: (100 * serverCpu) / wall,
        loadgen_cpu_percent: (100 * loadgenCpu) / wall,
        rss_after_kib: serverRssKib(args.pid),
      });
      if (args.redis_port.length) result.redis_cpu_s = redisCpuS;
      if (args.rooms.length > 1) {
        result.rooms = args.rooms.length;
        result.multi_room = args.multi_room;
        result.misrouted = totals.misrouted;
        result.per_room = args.rooms.map((room, r) => ({
          room,
          posts_ok: gen.poster.okByRoom[r],
          lost: lostByRoom[r],
          duplicates: totals.duplicatesByRoom[r],
          order_violations: totals.orderViolationsByRoom[r],
        }));
      }
    }
  }
  result.open = gen.waves[0].summary();
  const errors = gen.errors();
  Object.assign(result, errors);
  result.connection_errors = errors.connect_errors + errors.non_200 + errors.ended;
  result.not_ready = gen.waves[0].notReady;
  gen.close();
  return result;
}

// arguments --------------------------------------------------------------------------------------

const USAGE = `usage: node bench/loadgen.mjs --url URL [--url URL ...] [options]
  --url URL              server base URL, http://127.0.0.1:PORT (repeat: round-robin)
  --room ROOM            default bench
  --rooms A,B,...        several rooms instead: message i goes to room i % K; stream j follows
                         room j % K
  --multi-room           each stream follows every room of --rooms on one
                         GET /events?rooms=A,B,... stream (sse-chat only)
  --subscribers N        streams to open (default 1000)
  --messages N           messages to post (default 0: hold idle connections only)
  --rate R               messages per second (default 50)
  --pid PID              server pid, for its CPU and RSS (repeat)
  --redis-port PORT      a Redis (on 127.0.0.1) whose CPU (INFO cpu) to report over the
                         sending (repeat)
  --protocol P           sse-chat (also the Starlette peer) or nchan (default sse-chat)
  --burst                open every stream at once, not in batches of ${OPEN_BATCH}
  --storm                open every stream at once while posting at --rate until every stream
                         is ready or failed; report that (implies --burst; --messages unused)
  --reconnect K          after opening: close K streams and reopen K at once; report that
  --settle S             seconds idle before sending or measuring RSS (default 2)
  --connect-timeout S    a stream or POST connect slower than this fails (default 5)
  --open-timeout S       default 60
  --drain-timeout S      default 30
  -h, --help
`;

function usageError(message) {
  process.stderr.write(`loadgen.mjs: error: ${message}\n${USAGE}`);
  process.exit(2);
}

/** `text` of option `name` as a number: a whole one if `integer`, never negative, 0 if allowed. */
function number(name, text, integer, zero = true) {
  const value = text.trim() === '' ? NaN : Number(text);
  const ok = integer ? Number.isSafeInteger(value) : Number.isFinite(value);
  if (!ok || value < 0 || (!zero && value === 0)) {
    const kind = `${zero ? 'non-negative' : 'positive'} ${integer ? 'integer' : 'number'}`;
    usageError(`--${name} wants a ${kind}, not '${text}'`);
  }
  return value;
}

/** The command line, checked; exits 2 with a message when it is wrong. */
function parseCommandLine(argv) {
  const string = (fallback, multiple = false) => ({ type: 'string', default: fallback, multiple });
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        url: string([], true),
        room: string('bench'),
        rooms: string(''),
        'multi-room': { type: 'boolean', default: false },
        subscribers: string('1000'),
        messages: string('0'),
        rate: string('50'),
        pid: string([], true),
        'redis-port': string([], true),
        protocol: string('sse-chat'),
        burst: { type: 'boolean', default: false },
        storm: { type: 'boolean', default: false },
        reconnect: string('0'),
        settle: string('2'),
        'connect-timeout': string('5'),
        'open-timeout': string('60'),
        'drain-timeout': string('30'),
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    if (!error.code?.startsWith('ERR_PARSE_ARGS_')) throw error;
    usageError(error.message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (values.url.length === 0) usageError('--url is required');
  if (!Object.hasOwn(PROTOCOLS, values.protocol)) {
    usageError(`--protocol wants one of ${Object.keys(PROTOCOLS).join(', ')}`);
  }
  values.url.forEach(address); // refuse other hosts before anything starts
  const rooms = values.rooms ? values.rooms.split(',') : [values.room];
  if (rooms.some((room) => !/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(room))) {
    usageError('room names are 1-64 letters, digits, _ or -, starting with a letter or digit');
  }
  if (new Set(rooms).size !== rooms.length) usageError('--rooms lists a room twice');
  if (values['multi-room'] && !PROTOCOLS[values.protocol].roomsFrame) {
    usageError(`--protocol ${values.protocol} has no multi-room stream`);
  }
  return {
    url: values.url,
    rooms,
    multi_room: values['multi-room'],
    subscribers: number('subscribers', values.subscribers, true),
    messages: number('messages', values.messages, true),
    rate: number('rate', values.rate, false, false),
    pid: values.pid.map((pid) => number('pid', pid, true, false)),
    redis_port: values['redis-port'].map((port) => number('redis-port', port, true, false)),
    protocol: values.protocol,
    burst: values.burst,
    storm: values.storm,
    reconnect: number('reconnect', values.reconnect, true),
    settle: number('settle', values.settle, false),
    connect_timeout: number('connect-timeout', values['connect-timeout'], false, false),
    open_timeout: number('open-timeout', values['open-timeout'], false),
    drain_timeout: number('drain-timeout', values['drain-timeout'], false),
  };
}

if (isMainThread) {
  const args = parseCommandLine(process.argv.slice(2));
  protocol = PROTOCOLS[args.protocol];
  connectTimeoutMs = args.connect_timeout * 1000;
  const result = await run(args);
  process.stdout.write(`${JSON.stringify(result)}\n`); // synchronous for files, pipes, terminals
  process.exit(0); // posts still in flight after a drain timeout are left unfinished
} else {
  await posterThread(workerData);
}
