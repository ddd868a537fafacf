#!/usr/bin/env node
/**
 * A stub SSE chat server, to measure the load generator alone (core modules only, no Redis).
 *
 *     node bench/loadgen_stub.mjs [--port P]      (P = 0 or none: a free port, printed)
 *
 * The two routes the benchmark uses, on 127.0.0.1, HTTP/1.1 parsed just enough for them:
 * - `GET /rooms/<room>/events`: 200, `Transfer-Encoding: chunked`, an `event: ready` frame, then
 *   every message POSTed to the room, one frame per chunk;
 * - `POST /rooms/<room>/messages` with `{"user", "text"}`: 201 with the message as JSON (id
 *   `<ms>-<seq>` as a Redis stream would give), `Content-Length`, `Connection: close`; then the
 *   frame `id: <id>\nevent: message\ndata: <json>\n\n` goes to every stream of the room, built
 *   once and written as one chunk per stream.
 * Anything else gets 404. Slow streams are not cut: Node buffers what a socket cannot take.
 */

import net from 'node:net';
import process from 'node:process';
import { parseArgs } from 'node:util';

const EVENTS = /^\/rooms\/([^/?]+)\/events(?:\?.*)?$/;
const MESSAGES = /^\/rooms\/([^/?]+)\/messages(?:\?.*)?$/;
const STREAM_HEAD =
  'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n' +
  'Transfer-Encoding: chunked\r\n\r\n';

const rooms = new Map(); // room -> Set of stream sockets
let lastMs = 0;
let lastSeq = 0;

/** The next stream id: `<ms>-<seq>`, strictly increasing. */
function nextId() {
  const ms = Date.now();
  if (ms > lastMs) {
    lastMs = ms;
    lastSeq = 0;
  } else {
    lastSeq++;
  }
  return `${lastMs}-${lastSeq}`;
}

/** One HTTP/1.1 chunk holding `frame`. */
function chunk(frame) {
  return `${Buffer.byteLength(frame).toString(16)}\r\n${frame}\r\n`;
}

/** Answer and close: a status, a JSON body, `Connection: close`. */
function reply(sock, status, payload) {
  sock.end(
    `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(payload)}\r\nConnection: close\r\n\r\n${payload}`,
  );
}

/** Keep `sock` as a stream of `room`, starting with the ready frame. */
function subscribe(sock, room) {
  let streams = rooms.get(room);
  if (!streams) rooms.set(room, (streams = new Set()));
  streams.add(sock);
  sock.on('close', () => streams.delete(sock));
  sock.write(STREAM_HEAD + chunk('event: ready\ndata: {}\n\n'));
}

/** Store nothing, answer 201, fan the frame out to the room's streams. */
function publish(sock, room, body) {
  let message;
  try {
    message = JSON.parse(body.toString('utf8'));
  } catch {
    message = null;
  }
  if (!message || typeof message.user !== 'string' || typeof message.text !== 'string') {
    reply(sock, '400 Bad Request', '{"error":"malformed_json"}');
    return;
  }
  const id = nextId();
  const { user, text } = message;
  const payload = JSON.stringify({ id, room, user, text, ts: Date.now() / 1000 });
  reply(sock, '201 Created', payload);
  // encoded once, written to every stream
  const frame = Buffer.from(chunk(`id: ${id}\nevent: message\ndata: ${payload}\n\n`));
  for (const stream of rooms.get(room) ?? []) stream.write(frame);
}

/** Read one request (head, then its Content-Length body) and route it. */
function serve(sock) {
  sock.setNoDelay(true);
  sock.on('error', () => {});
  let pending = Buffer.alloc(0);
  const onData = (data) => {
    pending = Buffer.concat([pending, data]);
    const end = pending.indexOf('\r\n\r\n');
    if (end < 0) return;
    const lines = pending.subarray(0, end).toString('latin1').split('\r\n');
    const [method, path] = lines[0].split(' ');
    let length = 0;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === 'content-length') {
        length = Number(line.slice(colon + 1));
      }
    }
    if (pending.length - end - 4 < length) return;
    sock.off('data', onData); // one request per connection; a stream ignores what follows
    let match;
    if (method === 'GET' && (match = EVENTS.exec(path))) {
      subscribe(sock, match[1]);
    } else if (method === 'POST' && (match = MESSAGES.exec(path))) {
      publish(sock, match[1], pending.subarray(end + 4, end + 4 + length));
    } else {
      reply(sock, '404 Not Found', '{"error":"not_found"}');
    }
  };
  sock.on('data', onData);
}

function main() {
  let port = '';
  try {
    ({ port } = parseArgs({ options: { port: { type: 'string', default: '0' } } }).values);
  } catch {} // an unknown option or a missing value: the usage below
  if (!/^\d+$/.test(port) || Number(port) > 65535) {
    process.stderr.write('usage: node bench/loadgen_stub.mjs [--port P]\n');
    process.exit(2);
  }
  const server = net.createServer(serve);
  server.listen({ host: '127.0.0.1', port: Number(port), backlog: 1024 }, () => {
    process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
  });
  const stop = () => process.exit(0); // the streams would hold server.close() open forever
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main();
