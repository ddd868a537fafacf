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
 * delays the next post. A message's text is `b <sequence> <send time ns>`; latency is receive
 * time minus send time, both from process.hrtime.bigint() (CLOCK_MONOTONIC), read once per read
 * event, kept as ns in a Float64Array (exact while uptime < 104 days, 2^53 ns). Streams are read
 * through one shared buffer (net's `onread`), so a read allocates only its latin1 string; frames
 * are found with a global regex over that string, never de-chunked.
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

const OPEN_BATCH = 100; // below hypercorn's default listen backlog, so no SYN is dropped
const CONNECT_TIMEOUT_MS = 5000; // a connect that takes longer fails
const READ_BUFFER = Buffer.allocUnsafe(262144); // shared by every stream; read synchronously

// counting -------------------------------------------------------------------------------------

/** A chat frame whose text is `b <sequence> <send time ns>`. */
const FRAME = /id: (\d+)-(\d+)\r?\nevent: message\r?\ndata: [^\n]*?"text": ?"b (\d+) (\d+)"/g;
const READY = 'event: ready';

/** The text of benchmark message `sequence`, sent at `sentNs` (a BigInt from hrtime). */
function messageText(sequence, sentNs) {
  return `b ${sequence} ${sentNs}`;
}

/** Now on the generator's clock, in ns, as a Number. */
function hrNow() {
  return Number(process.hrtime.bigint());
}

/** Counts over every subscriber. */
class Totals {
  constructor(expected) {
    // ns, the first `deliveries` used; sized for the expected count (at most 32 MiB), then doubled
    this.latencies = new Float64Array(Math.min(Math.max(1024, expected), 1 << 22));
    this.deliveries = 0;
    this.duplicates = 0;
    this.orderViolations = 0;
    this.firstNs = 0;
    this.lastNs = 0;
  }

  /** The latencies so far, sorted ascending. */
  sortedLatencies() {
    return this.latencies.slice(0, this.deliveries).sort();
  }
}

/** One stream's progress: unparsed tail, last id, which sequences it has seen. */
class Subscriber {
  constructor(messages) {
    this.tail = '';
    this.ready = false;
    this.lastMs = 0; // the last id: lastMs-lastSeq
    this.lastSeq = 0;
    this.seen = new Uint8Array(messages);
    this.got = 0; // how many of `seen` are set
  }

  /** Count the complete frames in `tail + data` (latin1 strings); keep the incomplete rest. */
  feed(data, nowNs, totals) {
    const buffer = this.tail ? this.tail + data : data;
    const cut = buffer.lastIndexOf('\n\n');
    if (cut < 0) {
      this.tail = buffer;
      return;
    }
    this.tail = cut + 2 < buffer.length ? buffer.slice(cut + 2) : '';
    if (!this.ready) {
      const at = buffer.indexOf(READY); // first occurrence: if it is not before the cut, none is
      if (at >= 0 && at + READY.length <= cut) this.ready = true;
    }
    // Scan buffer[:cut] without slicing: no match can span the cut (a frame holds no "\n\n"), so
    // the matches that start before it are exactly those in buffer[:cut].
    const seen = this.seen;
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
      if (index >= seen.length) continue;
      if (seen[index]) {
        totals.duplicates++;
        continue;
      }
      seen[index] = 1;
      this.got++;
      const ms = Number(m[1]);
      const seq = Number(m[2]);
      if (ms < this.lastMs || (ms === this.lastMs && seq <= this.lastSeq)) totals.orderViolations++;
      this.lastMs = ms;
      this.lastSeq = seq;
    }
    FRAME.lastIndex = 0;
  }

  /** How many distinct benchmark messages this stream got. */
  received() {
    return this.got;
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

/** Owns the sockets and the counts of one run. */
class LoadGenerator {
  constructor(urls, room, messages, pids, subscribers) {
    this.addrs = urls.map(address);
    this.room = room;
    this.messages = messages;
    this.pids = pids;
    this.subscribers = new Map(); // live streams: socket -> Subscriber
    this.dropped = []; // closed mid-run; what they got still counts
    this.readyLive = 0; // live streams that are ready, kept up to date
    this.connecting = 0; // streams whose connect has not settled yet
    this.postsInFlight = 0;
    this.totals = new Totals(subscribers * messages);
    this.connectionErrors = 0;
    this.postsOk = 0;
    this.postsFailed = 0;
    this.postLatenciesNs = [];
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

  /** Open `count` streams in batches, each batch ready before the next starts. */
  async openSubscribers(count, timeout) {
    const deadline = hrNow() + timeout * 1e9;
    for (let start = 0; start < count; start += OPEN_BATCH) {
      for (let index = start; index < Math.min(count, start + OPEN_BATCH); index++) {
        this.openStream(this.addrs[index % this.addrs.length]);
      }
      // Past the deadline, still let this batch's connects settle (each is made or failed).
      await this.waitFor(
        (late) => this.connecting === 0 && (late || this.readyLive >= this.subscribers.size),
        deadline,
      );
    }
  }

  /** One `GET .../events` stream; a subscriber once connected, a connection error if not. */
  openStream([host, port]) {
    const request =
      `GET /rooms/${this.room}/events HTTP/1.1\r\nHost: ${host}:${port}\r\n` +
      'Accept: text/event-stream\r\n\r\n';
    const sub = new Subscriber(this.messages);
    const totals = this.totals;
    let header = ''; // the response so far while its header is incomplete; null after it
    let state = 'connecting'; // -> 'live' -> 'gone'
    this.connecting++;
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
              drop();
              return;
            }
            data = data.slice(end + 4);
          }
          const wasReady = sub.ready;
          sub.feed(data, now, totals);
          if (!wasReady && sub.ready) this.readyLive++;
          this.notify();
        },
      },
    });
    /** Count an error unless closing; keep what it got. */
    const drop = () => {
      if (state !== 'live') return;
      state = 'gone';
      if (!this.closing) this.connectionErrors++;
      if (sub.ready) this.readyLive--;
      this.subscribers.delete(sock);
      this.dropped.push(sub);
      sock.destroy();
      this.notify();
    };
    sock.setNoDelay(true);
    sock.setTimeout(CONNECT_TIMEOUT_MS, () => sock.destroy());
    sock.once('connect', () => {
      sock.setTimeout(0);
      state = 'live';
      this.connecting--;
      this.subscribers.set(sock, sub);
      this.notify();
    });
    sock.on('error', () => {}); // 'close' follows; counted there
    sock.on('end', drop); // EOF
    sock.on('close', () => {
      if (state === 'connecting') {
        state = 'gone';
        this.connecting--;
        this.connectionErrors++;
        this.notify();
      } else {
        drop();
      }
    });
    sock.write(request);
  }

  /** POST benchmark message `sequence`, round-robin over the servers. */
  post(sequence) {
    const [host, port] = this.addrs[sequence % this.addrs.length];
    const sentNs = process.hrtime.bigint();
    const started = Number(sentNs);
    const text = JSON.stringify(messageText(sequence, sentNs));
    const body = Buffer.from(`{"user": "bench", "text": ${text}}`); // json.dumps's separators
    const head =
      `POST /rooms/${this.room}/messages HTTP/1.1\r\nHost: ${host}:${port}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n` +
      'Connection: close\r\n\r\n';
    let response = '';
    let finished = false;
    this.postsInFlight++;
    const sock = net.connect({ host, port });
    /** The end: EOF, an error, or a complete response. */
    const finish = (now) => {
      if (finished) return;
      finished = true;
      sock.destroy();
      this.postsInFlight--;
      if (response.startsWith('HTTP/1.1 201')) {
        this.postsOk++;
        this.postLatenciesNs.push(now - started);
      } else {
        this.postsFailed++; // also a refused or timed-out connect
      }
      this.notify();
    };
    sock.setNoDelay(true);
    sock.setTimeout(CONNECT_TIMEOUT_MS, () => sock.destroy());
    sock.once('connect', () => sock.setTimeout(0));
    sock.on('data', (chunk) => {
      const now = hrNow();
      response += chunk.toString('latin1');
      if (responseComplete(response)) finish(now);
    });
    sock.on('error', () => {});
    sock.on('end', () => finish(hrNow()));
    sock.on('close', () => finish(hrNow()));
    sock.write(Buffer.concat([Buffer.from(head), body]));
  }

  /** POST every message at `rate`/s, then wait for deliveries; [CPU s of servers, wall s]. */
  async send(rate, drainTimeout) {
    const cpu0 = serverCpuSeconds(this.pids);
    const start = hrNow();
    await new Promise((resolve) => {
      let sequence = 0;
      // Message i is due at start + i/rate: a late timer catches up, it never shifts the schedule.
      const tick = () => {
        while (sequence < this.messages) {
          const wait = start + (sequence * 1e9) / rate - hrNow();
          if (wait > 0) {
            setTimeout(tick, Math.ceil(wait / 1e6));
            return;
          }
          this.post(sequence++);
        }
        resolve();
      };
      tick();
    });
    const expected = this.subscribers.size;
    const deadline = hrNow() + drainTimeout * 1e9;
    await this.waitFor(
      (late) =>
        late || (this.postsInFlight === 0 && this.totals.deliveries >= expected * this.postsOk),
      deadline,
    );
    const wall = (hrNow() - start) / 1e9;
    return [serverCpuSeconds(this.pids) - cpu0, wall];
  }

  close() {
    this.closing = true;
    for (const sock of this.subscribers.keys()) sock.destroy();
  }
}

/** One benchmark run, as a JSON-ready object. */
async function run(args) {
  if (args.pid.length) ticksPerSecond(); // fork getconf now, before thousands of sockets exist
  const limit = openFileLimit();
  if (limit < args.subscribers + 64) {
    const streams = args.subscribers;
    process.stderr.write(`loadgen.mjs: open-file limit ${limit} is low for ${streams} streams\n`);
  }
  const gen = new LoadGenerator(args.url, args.room, args.messages, args.pid, args.subscribers);
  const rssBefore = serverRssKib(args.pid);
  await gen.openSubscribers(args.subscribers, args.open_timeout);
  await new Promise((resolve) => setTimeout(resolve, args.settle * 1000));
  const ready = gen.readyLive;
  const rssIdle = serverRssKib(args.pid);
  const result = {
    subscribers: args.subscribers,
    ready,
    rss_before_kib: rssBefore,
    rss_idle_kib: rssIdle,
    kib_per_idle_connection: (rssIdle - rssBefore) / Math.max(1, ready),
  };
  if (args.messages) {
    const usage0 = process.cpuUsage();
    const [serverCpu, wall] = await gen.send(args.rate, args.drain_timeout);
    const usage = process.cpuUsage(usage0);
    const totals = gen.totals;
    const everyone = [...gen.subscribers.values(), ...gen.dropped];
    const received = everyone.reduce((sum, sub) => sum + (sub.ready ? sub.received() : 0), 0);
    const latencies = totals.sortedLatencies();
    const span =
      totals.deliveries > 1 ? Math.max(1, totals.lastNs - totals.firstNs) / 1e9 : 1;
    const loadgenCpu = (usage.user + usage.system) / 1e6;
    const posts = Float64Array.from(gen.postLatenciesNs).sort();
    Object.assign(result, {
      messages: args.messages,
      posts_ok: gen.postsOk,
      posts_failed: gen.postsFailed,
      deliveries: totals.deliveries,
      deliveries_per_s: totals.deliveries / span,
      lost: ready * gen.postsOk - received,
      duplicates: totals.duplicates,
      order_violations: totals.orderViolations,
      latency_ms: Object.fromEntries(
        [['p50', 0.5], ['p95', 0.95], ['p99', 0.99], ['max', 1.0]].map(([name, q]) => [
          name,
          percentile(latencies, q) / 1e6,
        ]),
      ),
      post_ms: { p50: percentile(posts, 0.5) / 1e6, p99: percentile(posts, 0.99) / 1e6 },
      server_cpu_percent: (100 * serverCpu) / wall,
      loadgen_cpu_percent: (100 * loadgenCpu) / wall,
      rss_after_kib: serverRssKib(args.pid),
    });
  }
  result.connection_errors = gen.connectionErrors;
  result.not_ready = args.subscribers - ready;
  gen.close();
  return result;
}

// arguments --------------------------------------------------------------------------------------

const USAGE = `usage: node bench/loadgen.mjs --url URL [--url URL ...] [options]
  --url URL              server base URL, http://127.0.0.1:PORT (repeat: round-robin)
  --room ROOM            default bench
  --subscribers N        streams to open (default 1000)
  --messages N           messages to post (default 0: hold idle connections only)
  --rate R               messages per second (default 50)
  --pid PID              server pid, for its CPU and RSS (repeat)
  --settle S             seconds idle before sending (default 2)
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
        subscribers: string('1000'),
        messages: string('0'),
        rate: string('50'),
        pid: string([], true),
        settle: string('2'),
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
  values.url.forEach(address); // refuse other hosts before anything starts
  return {
    url: values.url,
    room: values.room,
    subscribers: number('subscribers', values.subscribers, true),
    messages: number('messages', values.messages, true),
    rate: number('rate', values.rate, false, false),
    pid: values.pid.map((pid) => number('pid', pid, true, false)),
    settle: number('settle', values.settle, false),
    open_timeout: number('open-timeout', values['open-timeout'], false),
    drain_timeout: number('drain-timeout', values['drain-timeout'], false),
  };
}

const result = await run(parseCommandLine(process.argv.slice(2)));
process.stdout.write(`${JSON.stringify(result)}\n`); // synchronous for files, pipes and terminals
process.exit(0); // posts still in flight after a drain timeout are left unfinished
