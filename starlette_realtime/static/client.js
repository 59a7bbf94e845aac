/**
 * starlette-realtime browser client, wire protocol v1 (docs/protocol.md is the contract).
 *
 * A dependency-free ES module for browsers and Node >= 20 (pass `WebSocket` there: Node 20 has no global one).
 * One WebSocket carries several namespaces; the client reconnects with backoff, resumes sessions without gaps
 * (a position per room), and delivers its own events at least once (ids, resent until acknowledged).
 *
 * @module
 */

export const PROTOCOL_VERSION = 1;
const MAX_ACK_ID = 2 ** 31 - 1;
const OPEN = 1; // WebSocket.OPEN, written out so that test doubles need not define it
const F = { HELLO: 0, CONNECT: 1, CONNECTED: 2, CONNECT_ERROR: 3, DISCONNECT: 4, EVENT: 5, ACK: 6, PING: 7, PONG: 8, ERROR: 9 };
const HELLO_DEFAULTS = { node: "", pingInterval: 25, pingTimeout: 20, maxMessageSize: 1048576 };
// Close codes after which reconnecting cannot help (status.py); unlisted 4500-4999 stop as well.
const TERMINAL_CLOSE = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010, 4501, 4503]);
// The reserved events a client may send: the server's built-in handlers (auth.py, presence.py).
const CLIENT_RESERVED = new Set(["$auth", "$presence.list"]);
// The DISCONNECT reason of the client's own close(): the server's on_disconnect gets it.
const CLIENT_DISCONNECT = "client disconnect";

/**
 * The router answers at its mount point with a trailing slash: a Starlette `Mount("/realtime")` refuses the
 * handshake of `ws://host/realtime` (403) and takes `ws://host/realtime/`. Add the slash, as the Python client does.
 * @param {string} url
 */
export function withTrailingSlash(url) {
  const [, path, rest] = /^([^?#]*)(.*)$/s.exec(String(url));
  return path.endsWith("/") ? String(url) : `${path}/${rest}`;
}

/**
 * Tell whether to reconnect after a close with `code` (the table in docs/protocol.md).
 * @param {number | null | undefined} code
 */
export function isRetryable(code) {
  if (code == null) return true;
  return !(code >= 4500 && code <= 4999) && !TERMINAL_CLOSE.has(code);
}

// ------------------------------------------------------------------------------------------------------ errors

/** Base class of the client's errors; `code` is stable and machine-readable. */
export class RealtimeError extends Error {
  constructor(code, message = code, extra = undefined) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
    Object.assign(this, extra);
  }
}

/** The server did not acknowledge an event in time. */
export class AckTimeout extends RealtimeError {
  constructor(event, timeout) {
    super("timeout", `no ack for "${event}" within ${timeout} ms`, { event, timeout });
    this.name = "AckTimeout";
  }
}

/** The server answered an event with an error ACK (`invalid_payload`, `forbidden`, an application code...). */
export class RealtimeAckError extends RealtimeError {
  constructor(code, message) {
    super(code, message);
    this.name = "RealtimeAckError";
  }
}

/** A namespace refused the connection (CONNECT_ERROR) and retrying did not help. */
export class ConnectError extends RealtimeError {
  constructor(namespace, code, message, retryable) {
    super(code, message || code, { namespace, retryable });
    this.name = "ConnectError";
  }
}

// ------------------------------------------------------------------------------------------------------ codecs

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/**
 * Encode a value as MessagePack. Like JSON: undefined members are skipped, `toJSON` is honoured. Typed arrays and
 * ArrayBuffers become bin, safe integers the smallest int format, other numbers float64, BigInt int64/uint64.
 * @param {unknown} value
 * @returns {Uint8Array}
 */
export function encodeMsgpack(value) {
  let buf = new Uint8Array(128);
  let view = new DataView(buf.buffer);
  let pos = 0;
  const ensure = (n) => {
    if (pos + n <= buf.length) return;
    const bigger = new Uint8Array(Math.max(buf.length * 2, pos + n));
    bigger.set(buf);
    buf = bigger;
    view = new DataView(buf.buffer);
  };
  const byte = (b) => (ensure(1), (buf[pos++] = b));
  const put = (code, size, setter, v) => (ensure(1 + size), (buf[pos++] = code), view[setter](pos, v), (pos += size));
  const raw = (bytes) => (ensure(bytes.length), buf.set(bytes, pos), (pos += bytes.length));
  // A length header: the fix form when it fits, else the 8/16/32-bit form (c8 = 0: there is no 8-bit form).
  const head = (n, fixBase, fixMax, c8, c16, c32) => {
    if (n <= fixMax) byte(fixBase | n);
    else if (c8 && n < 256) put(c8, 1, "setUint8", n);
    else if (n < 65536) put(c16, 2, "setUint16", n);
    else put(c32, 4, "setUint32", n);
  };
  const int = (v) => {
    if (v >= 0) {
      if (v < 128) byte(v);
      else if (v < 256) put(0xcc, 1, "setUint8", v);
      else if (v < 65536) put(0xcd, 2, "setUint16", v);
      else if (v < 2 ** 32) put(0xce, 4, "setUint32", v);
      else put(0xcf, 8, "setBigUint64", BigInt(v));
    } else if (v >= -32) byte(v & 0xff);
    else if (v >= -128) put(0xd0, 1, "setInt8", v);
    else if (v >= -32768) put(0xd1, 2, "setInt16", v);
    else if (v >= -(2 ** 31)) put(0xd2, 4, "setInt32", v);
    else put(0xd3, 8, "setBigInt64", BigInt(v));
  };
  const write = (v) => {
    switch (typeof v) {
      case "boolean": return byte(v ? 0xc3 : 0xc2);
      case "number": return Number.isSafeInteger(v) ? int(v) : put(0xcb, 8, "setFloat64", v);
      case "bigint": return v >= 0n ? put(0xcf, 8, "setBigUint64", v) : put(0xd3, 8, "setBigInt64", v);
      case "string": {
        const bytes = textEncoder.encode(v);
        return head(bytes.length, 0xa0, 31, 0xd9, 0xda, 0xdb), raw(bytes);
      }
      case "object": {
        if (v === null) return byte(0xc0);
        if (v instanceof ArrayBuffer) v = new Uint8Array(v);
        if (ArrayBuffer.isView(v)) {
          const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
          return head(bytes.length, 0, -1, 0xc4, 0xc5, 0xc6), raw(bytes);
        }
        if (Array.isArray(v)) return head(v.length, 0x90, 15, 0, 0xdc, 0xdd), v.forEach(write);
        if (typeof v.toJSON === "function") return write(v.toJSON());
        const keys = Object.keys(v).filter((k) => v[k] !== undefined && typeof v[k] !== "function");
        head(keys.length, 0x80, 15, 0, 0xde, 0xdf);
        for (const k of keys) write(k), write(v[k]);
        return;
      }
      default: return byte(0xc0); // undefined, function, symbol: nil, as JSON writes null in arrays
    }
  };
  write(value);
  return buf.slice(0, pos);
}

const INTS = [[1, "Uint8"], [2, "Uint16"], [4, "Uint32"], [8, "BigUint64"], [1, "Int8"], [2, "Int16"], [4, "Int32"], [8, "BigInt64"]];

/**
 * Decode one MessagePack value. 64-bit integers beyond 2^53 become BigInt, the timestamp extension (-1) a Date,
 * other extensions `{type, data}`. Throws RangeError on malformed input.
 * @param {ArrayBuffer | ArrayBufferView} input
 * @returns {unknown}
 */
export function decodeMsgpack(input) {
  const buf = input instanceof ArrayBuffer ? new Uint8Array(input) : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  const need = (n) => {
    if (pos + n > buf.length) throw new RangeError("msgpack: truncated input");
  };
  const get = (size, type) => (need(size), (pos += size), view[`get${type}`](pos - size));
  const len = (size) => get(size, `Uint${size * 8}`);
  const bytes = (n) => (need(n), buf.slice(pos, (pos += n)));
  const str = (n) => (need(n), textDecoder.decode(buf.subarray(pos, (pos += n))));
  const safe = (v) => (typeof v === "bigint" && v >= -(2n ** 53n) && v <= 2n ** 53n ? Number(v) : v);
  const array = (n) => {
    need(n); // each element takes a byte or more: refuse absurd lengths before allocating
    return Array.from({ length: n }, read);
  };
  const map = (n) => {
    need(2 * n);
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = String(read());
      const value = read();
      // "__proto__" must stay a plain key, as with JSON.parse, not replace the prototype.
      if (key === "__proto__") Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      else out[key] = value;
    }
    return out;
  };
  const ext = (n) => {
    const type = get(1, "Int8");
    const data = bytes(n);
    return type === -1 ? timestamp(data) : { type, data };
  };
  const read = () => {
    const b = get(1, "Uint8");
    if (b < 0x80) return b;
    if (b < 0x90) return map(b & 0x0f);
    if (b < 0xa0) return array(b & 0x0f);
    if (b < 0xc0) return str(b & 0x1f);
    if (b >= 0xe0) return b - 256;
    if (b >= 0xcc && b <= 0xd3) return safe(get(...INTS[b - 0xcc]));
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: case 0xc5: case 0xc6: return bytes(len(1 << (b - 0xc4)));
      case 0xc7: case 0xc8: case 0xc9: return ext(len(1 << (b - 0xc7)));
      case 0xca: return get(4, "Float32");
      case 0xcb: return get(8, "Float64");
      case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return ext(1 << (b - 0xd4));
      case 0xd9: case 0xda: case 0xdb: return str(len(1 << (b - 0xd9)));
      case 0xdc: case 0xdd: return array(len(2 << (b - 0xdc)));
      case 0xde: case 0xdf: return map(len(2 << (b - 0xde)));
    }
    throw new RangeError(`msgpack: invalid byte 0x${b.toString(16)}`);
  };
  const value = read();
  if (pos !== buf.length) throw new RangeError("msgpack: trailing bytes");
  return value;
}

// The timestamp extension (msgspec writes datetimes with it) in its 32, 64 and 96-bit forms.
function timestamp(data) {
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.length === 4) return new Date(v.getUint32(0) * 1000);
  if (data.length === 8) return new Date(((v.getUint32(0) & 3) * 2 ** 32 + v.getUint32(4)) * 1000 + Math.floor((v.getUint32(0) >>> 2) / 1e6));
  if (data.length === 12) return new Date(Number(v.getBigInt64(4)) * 1000 + Math.floor(v.getUint32(0) / 1e6));
  return { type: -1, data };
}

// UTF-8 size of a string without encoding it. JSON.stringify never emits lone surrogates, so each half of a
// surrogate pair counts 2 bytes (4 for the pair).
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    n += c < 0x80 ? 1 : c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 2 : 3;
  }
  return n;
}

/**
 * The two encodings of protocol v1: JSON in text frames, MessagePack in binary frames. Receiving the other kind
 * of frame is a protocol error, so decode() throws on it.
 */
export const codecs = {
  json: { name: "json", protocol: "rt.v1.json", binary: false, encode: (frame) => JSON.stringify(frame), size: utf8Length,
    decode(data) {
      if (typeof data !== "string") throw new TypeError("binary frame on a JSON connection");
      return JSON.parse(data);
    },
  },
  msgpack: { name: "msgpack", protocol: "rt.v1.msgpack", binary: true, encode: encodeMsgpack, size: (payload) => payload.length,
    decode(data) {
      if (typeof data === "string") throw new TypeError("text frame on a MessagePack connection");
      return decodeMsgpack(data);
    },
  },
};

// ------------------------------------------------------------------------------------------------------ helpers

// Wrapped: calling the global setTimeout as a method of another object is an "illegal invocation" in browsers.
const systemClock = { now: () => Date.now(), setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (t) => clearTimeout(t) };
const noop = () => {};
const closeQuietly = (ws, code, reason) => {
  try {
    ws.close(code, reason);
  } catch {
    // already closing, or a code the browser refuses: the socket is abandoned either way
  }
};

/** Exponential backoff with jitter: delay n is `min * factor^n`, capped at `max`, then spread by ±`jitter`. */
export class Backoff {
  constructor({ min = 1000, max = 30000, factor = 2, jitter = 0.5, random = Math.random } = {}) {
    Object.assign(this, { min, max, factor, jitter, random, attempts: 0 });
  }

  /** The delay before the next attempt, in ms; counts the attempt. */
  duration() {
    const base = Math.min(this.max, this.min * this.factor ** Math.min(this.attempts++, 64));
    // Jitter keeps the many clients of a server that just went away from reconnecting in lockstep.
    const spread = this.jitter * base * (2 * this.random() - 1);
    return Math.round(Math.min(this.max, Math.max(0, base + spread)));
  }

  reset() {
    this.attempts = 0;
  }
}

/**
 * Outgoing events waiting for their ACK: queued while offline, in flight once sent. A Map iterates in insertion
 * order, which is emit order and so id order per namespace: a resend never goes backwards in ids.
 * Entries waiting (not in flight) longer than `ttl` ms are dropped through `onExpire` and counted in `dropped`.
 */
export class OfflineQueue {
  constructor({ ttl = 60000, max = 1000, clock = systemClock, onExpire = noop } = {}) {
    Object.assign(this, { ttl, max, clock, onExpire, dropped: 0 });
    this._items = new Map();
    this._timer = null;
  }

  get size() {
    return this._items.size;
  }

  get full() {
    return this._items.size >= this.max;
  }

  /** Add an entry `{ns, id, ...}`, stamped with `createdAt` and not in flight. */
  push(entry) {
    Object.assign(entry, { createdAt: this.clock.now(), inFlight: false });
    this._items.set(`${entry.ns} ${entry.id}`, entry);
  }

  /** Remove and return the entry for (ns, id), if there is one. */
  take(ns, id) {
    const entry = this._items.get(`${ns} ${id}`);
    if (entry) this.remove(entry);
    return entry;
  }

  remove(entry) {
    this._items.delete(`${entry.ns} ${entry.id}`);
  }

  /** A snapshot in emit order: callers may remove entries while they iterate. */
  entries() {
    return [...this._items.values()];
  }

  /** Drop the waiting entries whose TTL ran out, then arm the timer for the next one. */
  expire() {
    const now = this.clock.now();
    for (const entry of this.entries()) {
      if (entry.inFlight || now - entry.createdAt < this.ttl) continue;
      this.remove(entry);
      this.dropped++;
      this.onExpire(entry);
    }
    this.schedule();
  }

  /** One timer, for the oldest waiting entry (the first one met: entries are in creation order). */
  schedule() {
    if (this._timer != null) this.clock.clearTimeout(this._timer);
    this._timer = null;
    const oldest = this.entries().find((entry) => !entry.inFlight);
    if (!oldest) return;
    const wait = Math.max(0, oldest.createdAt + this.ttl - this.clock.now());
    this._timer = this.clock.setTimeout(() => ((this._timer = null), this.expire()), wait);
  }

  /** Empty the queue and return what was in it. */
  clear() {
    const all = this.entries();
    this._items.clear();
    this.schedule();
    return all;
  }
}

// ------------------------------------------------------------------------------------------------------ client

const DEFAULTS = {
  namespaces: ["/"], auth: null, namespaceAuth: null, encoding: "json", reconnection: true, reconnectionAttempts: Infinity,
  reconnectionDelay: 1000, reconnectionDelayMax: 30000, randomizationFactor: 0.5, ackTimeout: 10000,
  queueTtl: 60000, queueMax: 1000, authRetries: 2, connectTimeout: 20000, WebSocket: undefined, clock: undefined, random: Math.random, onError: undefined,
};

/** A real-time client: one WebSocket, several namespaces, reconnection, recovery, at-least-once emits. */
export class RealtimeClient {
  /**
   * @param {string} url where the server's RealtimeRouter is mounted, e.g. `ws://host/realtime` (a trailing slash
   *   is added to the path)
   * @param {object} [options] see `RealtimeClientOptions` in client.d.ts
   */
  constructor(url, options = {}) {
    const o = (this.options = { ...DEFAULTS, ...options });
    this.url = withTrailingSlash(url);
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") throw new TypeError("no WebSocket available: pass options.WebSocket");
    this._codec = codecs[o.encoding];
    if (!this._codec) throw new TypeError(`unknown encoding ${JSON.stringify(o.encoding)}`);
    if (!o.namespaces.length) throw new TypeError("options.namespaces is empty");
    this._clock = o.clock ?? systemClock;
    // A plain object whose keys are all namespace paths maps namespaces to providers; anything else (a value, a
    // function, a payload object) is used for every namespace.
    const keys = o.auth?.constructor === Object ? Object.keys(o.auth) : [];
    this._authByNs = keys.length > 0 && keys.every((k) => k.startsWith("/"));
    this._backoff = new Backoff({ min: o.reconnectionDelay, max: o.reconnectionDelayMax, jitter: o.randomizationFactor, random: o.random });
    const expired = (e) => e.reject(new RealtimeError("expired", `"${e.event}" dropped after waiting ${o.queueTtl} ms offline`));
    this._queue = new OfflineQueue({ ttl: o.queueTtl, max: o.queueMax, clock: this._clock, onExpire: expired });
    this._ns = new Map();
    for (const name of o.namespaces) {
      this._ns.set(name, { name, active: true, connected: false, sid: null, session: null, recovered: false, positions: new Map(), nextId: 1, authTries: 0 });
    }
    this._handlers = new Map(); // ns -> event -> Set of handlers
    this._stateListeners = new Set();
    this._waiters = []; // connect() calls waiting for "connected"
    this._state = "closed";
    this._ws = null;
    this._hello = { ...HELLO_DEFAULTS };
    this._hasConnected = false;
    this._lastCloseCode = null;
    this._lastSeen = 0;
    this._watchdog = this._reconnectTimer = this._connectTimer = null;
  }

  // ---------------------------------------------------------------------------------------------- public API

  /** "connecting" | "connected" | "reconnecting" | "offline" | "closed" */
  get state() { return this._state; }

  /** Outgoing events queued offline or sent and not acknowledged yet. */
  get queued() { return this._queue.size; }

  /** Events dropped because they waited offline longer than `queueTtl`. */
  get dropped() { return this._queue.dropped; }

  /** The values of the server's HELLO (defaults until it arrives). */
  get server() { return { ...this._hello }; }

  /** The connection id in a namespace (null until CONNECTED). */
  sid(namespace) { return this._nsState(namespace).sid; }

  /** Whether the namespace's last CONNECTED resumed the earlier session with nothing lost. */
  recovered(namespace) { return this._nsState(namespace).recovered; }

  /**
   * Open the connection. Resolves when every namespace is CONNECTED; rejects on a terminal failure (terminal close
   * code, refused namespace, reconnection attempts used up, close()). While offline, it retries at once.
   * @returns {Promise<void>}
   */
  connect() {
    if (this._state === "connected") return Promise.resolve();
    const done = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (this._state === "closed") {
      this._hasConnected = false;
      this._backoff.reset();
      for (const st of this._ns.values()) st.active = true;
    }
    if (this._state === "closed" || this._state === "offline") this._open();
    return done;
  }

  /**
   * Close for good: a DISCONNECT (reason "client disconnect") for each connected namespace, so that the server's
   * `on_disconnect` can tell it from a network drop, then close 1000. The server forgets the sessions. Queued
   * events and waiting connect() calls reject with RealtimeError("closed").
   */
  close() {
    if (this._state === "closed") return;
    for (const st of this._ns.values()) {
      if (!st.connected) continue;
      this._send([F.DISCONNECT, st.name, CLIENT_DISCONNECT]);
      st.connected = false;
      this._dispatch(st.name, "disconnect", { reason: CLIENT_DISCONNECT, code: null });
    }
    this._fail(new RealtimeError("closed", "closed by the client"));
  }

  /**
   * Send a fresh credential from the `auth` provider on the open connection (the reserved event `$auth`), so that
   * the server moves the connection's expiry and does not close it with 4003. Call it before the token expires.
   * Resolves to `true` when the server accepted it, `false` when the namespace is not connected (its next CONNECT
   * asks the provider anyway); rejects with RealtimeAckError when the server refused it (`INVALID_TOKEN`,
   * `forbidden` for another user's token, `rate_limited`), AckTimeout, or the provider's own error.
   * @param {string} [namespace] default: the first of `options.namespaces`
   * @param {{timeout?: number}} [options]
   * @returns {Promise<boolean>}
   */
  async refreshAuth(namespace, { timeout } = {}) {
    const st = this._nsState(namespace);
    if (!st.connected) return false;
    const auth = await this._resolveAuth(st.name);
    await this.call("$auth", auth, { namespace: st.name, timeout });
    return true;
  }

  /**
   * Send an event. It gets an id, is queued while offline and resent after a reconnect with the same id until the
   * server acknowledges it (at-least-once; the server runs each id once). The promise resolves with the ACK data
   * and never raises an unhandled rejection (await it to see errors: an error ACK rejects, `duplicate` included,
   * which says the server handled the id already but no longer has its answer). A `volatile` event is sent only
   * when connected, without id or queueing, and resolves to whether it was sent.
   * @param {string} event
   * @param {unknown} [data]
   * @param {{namespace?: string, volatile?: boolean, timeout?: number}} [options]
   */
  emit(event, data = null, options = {}) {
    const result = options.volatile ? this._emitVolatile(event, data, options) : this._emit(event, data, options);
    result.catch(noop);
    return result;
  }

  /**
   * Call a server handler and return its result. Like emit(), but rejects with AckTimeout, RealtimeAckError (the
   * server's code) or RealtimeError (closed, expired, queue_full, message_too_large...).
   * @param {string} event
   * @param {unknown} [data]
   * @param {{namespace?: string, timeout?: number}} [options]
   */
  call(event, data = null, options = {}) {
    return this._emit(event, data, options);
  }

  /**
   * Handle an event of a namespace (default: the first one) with `handler(data, meta)`, where `meta` is
   * `{room, epoch, offset, namespace}`. For a call from the server (an EVENT with id) the first handler's return
   * value, or resolved promise, is the ACK; throw RealtimeError(code, message) to answer with an error.
   * Also delivered here: "connect", "disconnect", "connect_error", "recovery_failed", "error", "$resync", "$presence".
   * @returns {() => void} unsubscribe
   */
  on(event, handler, { namespace } = {}) {
    const ns = this._nsState(namespace).name;
    if (!this._handlers.has(ns)) this._handlers.set(ns, new Map());
    const byEvent = this._handlers.get(ns);
    if (!byEvent.has(event)) byEvent.set(event, new Set());
    byEvent.get(event).add(handler);
    return () => this.off(event, handler, { namespace: ns });
  }

  /** Remove a handler added with on(). */
  off(event, handler, { namespace } = {}) {
    this._handlers.get(this._nsState(namespace).name)?.get(event)?.delete(handler);
  }

  /**
   * Follow the connection state. `info` has `queued`, `dropped`, `attempt` and `lastCloseCode`, plus `delay` when
   * offline, `error` when closed by a failure, `namespace` and `recoveryFailed` when a session was not resumed.
   * @returns {() => void} unsubscribe
   */
  onState(listener) {
    this._stateListeners.add(listener);
    return () => this._stateListeners.delete(listener);
  }

  // ---------------------------------------------------------------------------------------------- sending

  _nsState(namespace) {
    const st = this._ns.get(namespace ?? this.options.namespaces[0]);
    if (!st) throw new TypeError(`namespace ${JSON.stringify(namespace)} is not in options.namespaces`);
    return st;
  }

  // Encode once, and refuse what the server would close the connection for (1009) instead of sending it.
  _encodeEvent(st, event, data, id) {
    if (typeof event !== "string" || event.length < 1 || event.length > 64) throw new TypeError("event names have 1 to 64 characters");
    if (event[0] === "$" && !CLIENT_RESERVED.has(event)) throw new TypeError(`"${event}": event names starting with "$" are reserved`);
    const payload = this._codec.encode(id == null ? [F.EVENT, st.name, event, data ?? null] : [F.EVENT, st.name, event, data ?? null, id]);
    return { payload, size: this._codec.size(payload) };
  }

  _tooLarge(size) {
    const max = this._hello.maxMessageSize;
    return new RealtimeError("message_too_large", `message of ${size} bytes exceeds max_message_size (${max})`, { size, max });
  }

  _emitVolatile(event, data, { namespace }) {
    const st = this._nsState(namespace);
    const { payload, size } = this._encodeEvent(st, event, data, null);
    if (size > this._hello.maxMessageSize) return Promise.reject(this._tooLarge(size));
    return Promise.resolve(st.connected && this._sendRaw(payload)); // offline: dropping is the point
  }

  _emit(event, data, { namespace, timeout = this.options.ackTimeout }) {
    const st = this._nsState(namespace);
    const { payload, size } = this._encodeEvent(st, event, data, st.nextId);
    if (this._state === "closed" || !st.active) return Promise.reject(new RealtimeError("closed", "the client is closed"));
    if (this._queue.full) return Promise.reject(new RealtimeError("queue_full", `${this.options.queueMax} events are waiting already`));
    if (st.nextId > MAX_ACK_ID) return Promise.reject(new RealtimeError("ids_exhausted", "no ack ids left in this namespace"));
    const id = st.nextId++; // taken even when refused below: ids need to increase, not to be contiguous
    if (size > this._hello.maxMessageSize) return Promise.reject(this._tooLarge(size));
    return new Promise((resolve, reject) => {
      const entry = { ns: st.name, id, event, payload, size, timeout, timer: null, resolve, reject };
      this._queue.push(entry);
      if (st.connected) this._sendEntry(entry);
      else this._queue.schedule();
    });
  }

  // The ack timer runs only while the event is on the wire: offline time is bounded by queueTtl instead.
  _sendEntry(entry) {
    if (entry.size > this._hello.maxMessageSize) { // a new server may have a lower limit than the last one
      this._queue.remove(entry);
      return entry.reject(this._tooLarge(entry.size));
    }
    if (!this._sendRaw(entry.payload)) return;
    entry.inFlight = true;
    entry.timer = this._clock.setTimeout(() => {
      this._queue.remove(entry);
      entry.reject(new AckTimeout(entry.event, entry.timeout));
    }, entry.timeout);
  }

  _send(frame) {
    return this._sendRaw(this._codec.encode(frame));
  }

  _sendRaw(payload) {
    if (this._ws?.readyState !== OPEN) return false;
    this._ws.send(payload);
    return true;
  }

  // ---------------------------------------------------------------------------------------------- connection

  _setState(state, extra) {
    if (state === this._state) return;
    this._state = state;
    this._notify(extra);
  }

  _notify(extra) {
    const info = { queued: this.queued, dropped: this.dropped, attempt: this._backoff.attempts, lastCloseCode: this._lastCloseCode, ...extra };
    for (const listener of [...this._stateListeners]) this._run(listener, this._state, info);
  }

  // Application code must not break the client: its errors are reported, never thrown into the frame loop.
  _run(fn, ...args) {
    try {
      const result = fn(...args);
      if (typeof result?.then === "function") result.then(undefined, (err) => this._report(err));
    } catch (err) {
      this._report(err);
    }
  }

  _report(err) {
    (this.options.onError ?? globalThis.reportError ?? console.error)(err);
  }

  _clearTimer(name) {
    if (this[name] != null) this._clock.clearTimeout(this[name]);
    this[name] = null;
  }

  _open() {
    this._clearTimer("_reconnectTimer");
    this._setState(this._hasConnected || this._backoff.attempts > 0 ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new this._WebSocket(this.url, [this._codec.protocol]);
    } catch (err) {
      return this._fail(new RealtimeError("invalid_url", err.message)); // bad URL or port: no retry fixes that
    }
    if (this._codec.binary) ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._hello = { ...HELLO_DEFAULTS };
    ws.onopen = () => ws === this._ws && this._onOpen();
    ws.onmessage = (ev) => ws === this._ws && this._onMessage(ev.data);
    ws.onclose = (ev) => ws === this._ws && this._onClose(ev.code, ev.reason);
    ws.onerror = noop; // a close event follows; and Node's `ws` package throws on an unhandled error event
    // Watch from now on, so that a handshake that hangs is given up too.
    this._lastSeen = this._clock.now();
    this._watch();
    // Every namespace CONNECTED within connectTimeout, or this attempt is given up and retried with backoff.
    this._connectTimer = this._clock.setTimeout(() => this._connectTimedOut(), this.options.connectTimeout);
  }

  _connectTimedOut() {
    this._connectTimer = null;
    const message = `not connected within ${this.options.connectTimeout} ms`;
    for (const st of this._ns.values()) {
      if (st.active && !st.connected) this._dispatch(st.name, "connect_error", { code: "timeout", message, retryable: true });
    }
    this._drop(4000, "connect timeout");
  }

  _onOpen() {
    for (const st of this._ns.values()) {
      st.authTries = 0;
      if (st.active) this._sendConnect(st);
    }
  }

  async _resolveAuth(ns) {
    const { auth, namespaceAuth } = this.options;
    const provider = namespaceAuth && Object.hasOwn(namespaceAuth, ns) ? namespaceAuth[ns] : this._authByNs ? auth[ns] : auth;
    const value = await (typeof provider === "function" ? provider(ns) : provider);
    return typeof value === "string" ? { token: value } : value ?? null;
  }

  // CONNECT goes out as soon as the socket is open (before HELLO is allowed), with the session and positions that
  // let the server resume this client. The auth provider is asked every time: tokens expire.
  async _sendConnect(st) {
    const ws = this._ws;
    let auth;
    try {
      auth = await this._resolveAuth(st.name);
    } catch (err) {
      if (ws !== this._ws) return;
      this._report(err);
      return this._drop(4000, "auth provider failed"); // try again later, with backoff, like a lost connection
    }
    if (ws !== this._ws || !st.active) return;
    const frame = [F.CONNECT, st.name, auth, st.session, st.positions.size ? Object.fromEntries(st.positions) : null];
    while (frame.length > 3 && frame.at(-1) == null) frame.pop();
    this._send(frame);
  }

  // One lazy timer: a received frame only records the time, which stays cheap at high message rates.
  _watch() {
    this._clearTimer("_watchdog");
    const limit = (this._hello.pingInterval + this._hello.pingTimeout) * 1000;
    const idle = this._clock.now() - this._lastSeen;
    if (idle >= limit) return this._drop(4005, "heartbeat timeout");
    this._watchdog = this._clock.setTimeout(() => this._watch(), limit - idle);
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    this._clearTimer("_watchdog");
    this._clearTimer("_connectTimer");
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null;
    return ws;
  }

  // Close from this side without waiting for the close event: a dead connection may take minutes to report it.
  _drop(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    this._onClose(code, reason);
    closeQuietly(ws, code, reason);
  }

  _onClose(code, reason = "") {
    this._detach();
    this._lastCloseCode = code ?? 1006;
    for (const entry of this._queue.entries()) {
      if (!entry.inFlight) continue;
      this._clock.clearTimeout(entry.timer);
      entry.inFlight = false; // resent, with the same id, after the next CONNECTED
    }
    this._lostNamespaces({ reason: reason || "connection closed", code });
    const o = this.options;
    if (!isRetryable(code)) {
      return this._fail(new RealtimeError("connection_closed", `closed by the server with ${code}${reason ? `: ${reason}` : ""}`, { closeCode: code }));
    }
    if (!o.reconnection || this._backoff.attempts >= o.reconnectionAttempts) {
      const what = o.reconnection ? "reconnect_failed" : "connection_lost";
      return this._fail(new RealtimeError(what, `connection lost (${code}), not reconnecting`, { closeCode: code }));
    }
    const delay = this._backoff.duration();
    this._queue.schedule();
    this._setState("offline", { delay });
    this._reconnectTimer = this._clock.setTimeout(() => this._open(), delay);
  }

  _lostNamespaces(info) {
    for (const st of this._ns.values()) {
      if (st.connected) (st.connected = false), this._dispatch(st.name, "disconnect", info);
    }
  }

  // Terminal: nothing is retried, everything that waits is rejected with `error`.
  _fail(error) {
    const ws = this._detach();
    this._clearTimer("_reconnectTimer");
    if (ws) closeQuietly(ws, 1000);
    this._lostNamespaces({ reason: error.message, code: null });
    for (const entry of this._queue.clear()) {
      this._clock.clearTimeout(entry.timer);
      entry.reject(error);
    }
    this._setState("closed", { error });
    for (const waiter of this._waiters.splice(0)) waiter.reject(error);
  }

  _checkConnected() {
    for (const st of this._ns.values()) if (st.active && !st.connected) return;
    this._clearTimer("_connectTimer");
    this._backoff.reset();
    this._hasConnected = true;
    this._setState("connected");
    for (const waiter of this._waiters.splice(0)) waiter.resolve();
  }

  // ---------------------------------------------------------------------------------------------- receiving

  _onMessage(raw) {
    this._lastSeen = this._clock.now();
    let f;
    try {
      f = this._codec.decode(raw);
      if (!Array.isArray(f)) throw new TypeError("a frame must be an array");
    } catch (err) {
      return this._report(err); // the server never sends these; dropping one beats guessing what it meant
    }
    // Decoded by index: trailing fields may be omitted (then they take their defaults), extra ones are ignored.
    switch (f[0]) {
      case F.HELLO: return this._onHello(f);
      case F.CONNECTED: return this._onConnected(f);
      case F.CONNECT_ERROR: return this._onConnectError(f);
      case F.DISCONNECT: return this._onDisconnect(f);
      case F.EVENT: return this._onEvent(f);
      case F.ACK: return this._onAck(f);
      case F.PING: return this._send([F.PONG]);
      case F.ERROR: return this._onError(f);
    }
  }

  _onHello([, version, node = "", pingInterval, pingTimeout, maxMessageSize]) {
    if (version !== PROTOCOL_VERSION) {
      return this._fail(new RealtimeError("unsupported_version", `the server speaks protocol ${version}, this client ${PROTOCOL_VERSION}`));
    }
    const d = HELLO_DEFAULTS;
    this._hello = { node, pingInterval: pingInterval ?? d.pingInterval, pingTimeout: pingTimeout ?? d.pingTimeout, maxMessageSize: maxMessageSize ?? d.maxMessageSize };
    this._watch(); // with the server's limit
  }

  _onConnected([, ns, sid, session, recovered = false, recoveryFailed = false]) {
    const st = this._ns.get(ns);
    if (!st?.active) return;
    Object.assign(st, { sid, session, recovered: !!recovered, connected: true, authTries: 0 });
    if (recoveryFailed) st.positions.clear(); // a new session: the old positions mean nothing to it
    // Resend before any handler runs, so that an emit from a "connect" handler cannot overtake older ids.
    this._queue.expire();
    for (const entry of this._queue.entries()) if (entry.ns === ns && !entry.inFlight) this._sendEntry(entry);
    this._checkConnected();
    this._dispatch(ns, "connect", { sid, recovered: !!recovered, recoveryFailed: !!recoveryFailed });
    if (recoveryFailed) {
      this._dispatch(ns, "recovery_failed", { sid });
      this._notify({ namespace: ns, recoveryFailed: true });
    }
  }

  _onConnectError([, ns, code, message = "", retryable = false]) {
    const st = this._ns.get(ns);
    if (!st?.active) return;
    this._dispatch(ns, "connect_error", { code, message, retryable: !!retryable });
    // INVALID_TOKEN: the provider may have a fresh token by now. Other retryable codes: same input, a bit later.
    if ((code === "INVALID_TOKEN" || retryable) && st.authTries < this.options.authRetries) {
      st.authTries++;
      if (code === "INVALID_TOKEN") return void this._sendConnect(st);
      const ws = this._ws;
      this._clock.setTimeout(() => ws === this._ws && this._sendConnect(st), this.options.reconnectionDelay * st.authTries);
      return;
    }
    // A retryable refusal (e.g. UNAVAILABLE while the server's backend is down) that outlasts the quick
    // retries: reconnect with the usual backoff, which reconnectionAttempts bounds, instead of giving up.
    if (retryable && code !== "INVALID_TOKEN") return void this._drop(4000, `${ns}: ${code}`);
    this._fail(new ConnectError(ns, code, message, !!retryable));
  }

  // The server closed one namespace on purpose (logout, kick): it is not reopened.
  _onDisconnect([, ns, reason = ""]) {
    const st = this._ns.get(ns);
    if (!st?.active) return;
    const wasConnected = st.connected;
    st.active = st.connected = false;
    const error = new RealtimeError("disconnected", reason || `${ns} was disconnected by the server`, { namespace: ns });
    for (const entry of this._queue.entries()) {
      if (entry.ns !== ns) continue;
      this._queue.remove(entry);
      this._clock.clearTimeout(entry.timer);
      entry.reject(error);
    }
    if (wasConnected) this._dispatch(ns, "disconnect", { reason, code: null });
    if ([...this._ns.values()].some((s) => s.active)) this._checkConnected();
    else this._fail(error);
  }

  _onEvent([, ns, event, data = null, id = null, room = null, epoch = null, offset = null]) {
    const st = this._ns.get(ns);
    if (!st?.active) return;
    if (room != null && offset != null) {
      const pos = st.positions.get(room);
      if (pos && pos[0] === epoch && offset <= pos[1]) return; // delivered already: a replay after recovery
      st.positions.set(room, [epoch, offset]);
    }
    // The room's history is gone: forget its position, so that the next CONNECT does not ask for it again.
    if (event === "$resync" && data?.room != null) st.positions.delete(data.room);
    const meta = { room, epoch, offset, namespace: ns };
    if (id == null) this._dispatch(ns, event, data, meta);
    else this._answer(ns, event, data, meta, id);
  }

  _dispatch(ns, event, data, meta = { room: null, epoch: null, offset: null, namespace: ns }) {
    for (const handler of [...(this._handlers.get(ns)?.get(event) ?? [])]) this._run(handler, data, meta);
  }

  // A call from the server, answered with the first handler's result. The ACK belongs to the socket the call came
  // on: a result that arrives after a reconnect is dropped.
  async _answer(ns, event, data, meta, id) {
    const ws = this._ws;
    const [first, ...rest] = this._handlers.get(ns)?.get(event) ?? [];
    let frame;
    if (!first) frame = [F.ACK, ns, id, null, ["unknown_event", `no handler for "${event}"`]];
    else {
      for (const handler of rest) this._run(handler, data, meta);
      try {
        frame = [F.ACK, ns, id, (await first(data, meta)) ?? null];
      } catch (err) {
        if (!(err instanceof RealtimeError)) this._report(err); // details stay here, as on the server
        const error = err instanceof RealtimeError ? [err.code, err.message] : ["internal_error", "the client handler failed"];
        frame = [F.ACK, ns, id, null, error];
      }
    }
    if (ws !== this._ws) return;
    let payload;
    try {
      payload = this._codec.encode(frame);
    } catch (err) { // e.g. a BigInt or a cycle in the result under JSON
      this._report(err);
      payload = this._codec.encode([F.ACK, ns, id, null, ["internal_error", "the result could not be encoded"]]);
    }
    if (this._codec.size(payload) > this._hello.maxMessageSize) {
      payload = this._codec.encode([F.ACK, ns, id, null, ["limit_exceeded", "the result exceeds max_message_size"]]);
    }
    this._sendRaw(payload);
  }

  _onAck([, ns, id, data = null, error = null]) {
    const entry = this._queue.take(ns, id);
    if (!entry) return; // late (after a time-out) or replayed
    this._clock.clearTimeout(entry.timer);
    if (!error) return entry.resolve(data);
    // "duplicate" too: the server handled this id already and no longer has the answer, which may have been an
    // error. It never resolves as a success (issue 12's dedup contract).
    const [code, message = ""] = error;
    entry.reject(new RealtimeAckError(code, message));
  }

  _onError([, code, message = "", ns = null]) {
    for (const name of ns == null ? this._ns.keys() : [ns]) this._dispatch(name, "error", { code, message });
  }
}
