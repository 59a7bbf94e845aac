// Test doubles for the browser client: a fake WebSocket driven by the test, a manual clock, and helpers.
import { RealtimeClient, codecs } from "../../starlette_realtime/static/client.js";

export { codecs };

/** Let pending promise callbacks (async auth providers, handlers) run. */
export const tick = () => new Promise((resolve) => setImmediate(resolve));

/** A clock whose time only moves when the test says so. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.t = start;
    this.timers = new Map();
    this.seq = 0;
  }

  now() {
    return this.t;
  }

  setTimeout(fn, ms) {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  /** Move time forward by `ms`, running due timers in order (timers they set run too when due). */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (!next || timer.at < next.at)) next = { id, ...timer };
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }

  /** Delays of the pending timers, sorted. */
  pending() {
    return [...this.timers.values()].map((timer) => timer.at - this.t).sort((a, b) => a - b);
  }
}

/** A WebSocket class for one test; `FakeWebSocket.instances` lists every socket the client opened. */
export function makeFakeWebSocket(codec = codecs.json) {
  return class FakeWebSocket {
    static instances = [];

    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.binaryType = "blob";
      this.sent = [];
      this.closed = null;
      FakeWebSocket.instances.push(this);
    }

    static get last() {
      return FakeWebSocket.instances.at(-1);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(data);
    }

    close(code, reason) {
      this.readyState = 3;
      this.closed = { code, reason };
    }

    // ---- the server's side

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(frame) {
      let data = codec.encode(frame);
      if (typeof data !== "string") data = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
      this.onmessage?.({ data });
    }

    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }

    /** Frames the client sent, decoded. */
    frames() {
      return this.sent.map((data) => codec.decode(data));
    }

    /** Frames the client sent since the last call of take(). */
    take() {
      const start = this._taken ?? 0;
      this._taken = this.sent.length;
      return this.frames().slice(start);
    }
  };
}

/** A client wired to fakes. `random: () => 0.5` makes backoff jitter zero unless a test overrides it. */
export function setup(options = {}) {
  const clock = new FakeClock();
  const WS = makeFakeWebSocket(codecs[options.encoding ?? "json"]);
  const errors = [];
  const states = [];
  const client = new RealtimeClient("ws://test/realtime", {
    namespaces: ["/chat"],
    WebSocket: WS,
    clock,
    random: () => 0.5,
    onError: (err) => errors.push(err),
    ...options,
  });
  client.onState((state, info) => states.push({ state, ...info }));
  return { client, clock, WS, errors, states };
}

/**
 * Play the server's side of a handshake on the newest socket: open, HELLO, and CONNECTED for every CONNECT.
 * Returns the CONNECT frames the client sent.
 */
export async function handshake(WS, { hello = [0, 1, "node-1", 25, 20, 1048576], sid = "sid1", session = "sess1", recovered = false, recoveryFailed = false } = {}) {
  const ws = WS.last;
  ws.open();
  await tick();
  ws.receive(hello);
  const connects = ws.take().filter((f) => f[0] === 1);
  for (const c of connects) ws.receive([2, c[1], sid, session, recovered, recoveryFailed]);
  await tick();
  return connects;
}
