import { test } from "node:test";
import assert from "node:assert/strict";
import { RealtimeClient, RealtimeError, ConnectError } from "../../starlette_realtime/static/client.js";
import { setup, handshake, tick, makeFakeWebSocket } from "./helpers.mjs";

test("needs a WebSocket constructor and a known encoding", () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    assert.throws(() => new RealtimeClient("ws://x"), /WebSocket/);
  } finally {
    globalThis.WebSocket = saved;
  }
  assert.throws(() => new RealtimeClient("ws://x", { WebSocket: makeFakeWebSocket(), encoding: "xml" }), /encoding/);
});

test("connect offers the subprotocol, sends CONNECT per namespace and resolves when all are CONNECTED", async () => {
  const { client, WS, states } = setup({ namespaces: ["/chat", "/news"] });
  assert.equal(client.state, "closed");
  let resolved = false;
  const connecting = client.connect().then(() => (resolved = true));
  const ws = WS.last;
  assert.equal(ws.url, "ws://test/realtime/"); // the slash the router needs at its mount point
  assert.deepEqual(ws.protocols, ["rt.v1.json"]);
  assert.equal(client.state, "connecting");
  ws.open();
  await tick();
  // CONNECT goes out before HELLO; no session or positions on a first connect.
  assert.deepEqual(ws.take(), [[1, "/chat", null], [1, "/news", null]]);
  ws.receive([0, 1, "node-1", 25, 20, 1048576]);
  ws.receive([2, "/chat", "s-chat", "sess-chat"]);
  await tick();
  assert.equal(resolved, false);
  assert.equal(client.state, "connecting");
  ws.receive([2, "/news", "s-news", "sess-news"]);
  await connecting;
  assert.equal(client.state, "connected");
  assert.equal(client.sid("/chat"), "s-chat");
  assert.equal(client.sid("/news"), "s-news");
  assert.equal(client.recovered("/chat"), false);
  assert.deepEqual(client.server, { node: "node-1", pingInterval: 25, pingTimeout: 20, maxMessageSize: 1048576 });
  assert.deepEqual(states.map((s) => s.state), ["connecting", "connected"]);
  assert.equal(await client.connect(), undefined); // already connected
});

test("msgpack encoding uses binary frames and its own subprotocol", async () => {
  const { client, WS } = setup({ encoding: "msgpack" });
  const connecting = client.connect();
  const ws = WS.last;
  assert.deepEqual(ws.protocols, ["rt.v1.msgpack"]);
  assert.equal(ws.binaryType, "arraybuffer");
  await handshake(WS);
  await connecting;
  const reply = client.call("join", "lobby");
  assert.ok(ws.sent.at(-1) instanceof Uint8Array);
  assert.deepEqual(ws.take(), [[5, "/chat", "join", "lobby", 1]]);
  ws.receive([6, "/chat", 1, ["lobby"]]);
  assert.deepEqual(await reply, ["lobby"]);
});

test("connect events reach the app handlers of the namespace", async () => {
  const { client, WS } = setup();
  const seen = [];
  client.on("connect", (data, meta) => seen.push(["connect", data, meta.namespace]), { namespace: "/chat" });
  client.on("disconnect", (data) => seen.push(["disconnect", data]));
  const connecting = client.connect();
  await handshake(WS, { sid: "abc" });
  await connecting;
  WS.last.serverClose(1006);
  assert.deepEqual(seen, [
    ["connect", { sid: "abc", recovered: false, recoveryFailed: false }, "/chat"],
    ["disconnect", { reason: "connection closed", code: 1006 }],
  ]);
});

test("HELLO fields missing at the end take their defaults; extra frame fields are ignored", async () => {
  const { client, WS } = setup();
  const connecting = client.connect();
  WS.last.open();
  await tick();
  WS.last.receive([0, 1, "n", 10]);
  assert.deepEqual(client.server, { node: "n", pingInterval: 10, pingTimeout: 20, maxMessageSize: 1048576 });
  WS.last.receive([2, "/chat", "sid", "sess", false, false, "a future field"]);
  await connecting;
  assert.equal(client.state, "connected");
});

test("a HELLO with another protocol version stops the client", async () => {
  const { client, WS } = setup();
  const connecting = client.connect();
  WS.last.open();
  WS.last.receive([0, 2, "n", 25, 20, 1048576]);
  await assert.rejects(connecting, (err) => err.code === "unsupported_version");
  assert.equal(client.state, "closed");
  assert.equal(WS.last.closed.code, 1000);
});

for (const code of [1001, 1006, 1011, 1012, 1013, 4003, 4004, 4005, 4006, 4321]) {
  test(`close code ${code} reconnects with backoff`, async () => {
    const { client, WS, clock, states } = setup();
    const connecting = client.connect();
    await handshake(WS);
    await connecting;
    WS.last.serverClose(code, "bye");
    assert.equal(client.state, "offline");
    assert.deepEqual(states.at(-1), { state: "offline", queued: 0, dropped: 0, attempt: 1, lastCloseCode: code, delay: 1000 });
    clock.advance(999);
    assert.equal(WS.instances.length, 1);
    clock.advance(1);
    assert.equal(WS.instances.length, 2);
    assert.equal(client.state, "reconnecting");
    await handshake(WS);
    assert.equal(client.state, "connected");
  });
}

for (const code of [1000, 1008, 1009, 4501, 4503, 4500, 4999]) {
  test(`close code ${code} is terminal`, async () => {
    const { client, WS, clock, states } = setup();
    const connecting = client.connect();
    await handshake(WS);
    await connecting;
    const pending = client.call("slow");
    const waiting = client.connect(); // already connected: resolves at once
    await waiting;
    WS.last.serverClose(code, "no");
    assert.equal(client.state, "closed");
    await assert.rejects(pending, (err) => err instanceof RealtimeError && err.code === "connection_closed" && err.closeCode === code);
    assert.equal(states.at(-1).error.closeCode, code);
    assert.equal(states.at(-1).lastCloseCode, code);
    clock.advance(120_000);
    assert.equal(WS.instances.length, 1);
  });
}

test("a terminal close during the first connect rejects connect()", async () => {
  const { client, WS } = setup();
  const connecting = client.connect();
  WS.last.serverClose(1008, "origin");
  await assert.rejects(connecting, (err) => err.code === "connection_closed" && /1008: origin/.test(err.message));
});

test("retryable failures before the first CONNECTED keep connect() waiting", async () => {
  const { client, WS, clock, states } = setup();
  const connecting = client.connect();
  WS.last.serverClose(1006);
  clock.advance(1000);
  WS.last.serverClose(1006);
  clock.advance(2000);
  await handshake(WS);
  await connecting;
  assert.deepEqual(states.map((s) => s.state), ["connecting", "offline", "reconnecting", "offline", "reconnecting", "connected"]);
  assert.deepEqual(states.filter((s) => s.state === "offline").map((s) => s.delay), [1000, 2000]);
});

test("delays grow while reconnects fail and reset after a successful connect", async () => {
  const { client, WS, clock, states } = setup({ reconnectionDelay: 100, reconnectionDelayMax: 500 });
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  for (let i = 0; i < 5; i++) {
    WS.last.serverClose(1006);
    clock.advance(states.at(-1).delay);
  }
  assert.deepEqual(states.filter((s) => s.state === "offline").map((s) => s.delay), [100, 200, 400, 500, 500]);
  await handshake(WS);
  WS.last.serverClose(1006);
  assert.equal(states.at(-1).delay, 100);
});

test("reconnection stops after reconnectionAttempts", async () => {
  const { client, WS, clock, states } = setup({ reconnectionAttempts: 2 });
  const connecting = client.connect();
  WS.last.serverClose(1006);
  clock.advance(1000);
  WS.last.serverClose(1006);
  clock.advance(2000);
  WS.last.serverClose(1006);
  await assert.rejects(connecting, (err) => err.code === "reconnect_failed");
  assert.equal(WS.instances.length, 3);
  assert.equal(client.state, "closed");
  assert.equal(states.at(-1).attempt, 2);
});

test("reconnection: false stops after the first lost connection", async () => {
  const { client, WS } = setup({ reconnection: false });
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  WS.last.serverClose(1006);
  assert.equal(client.state, "closed");
  assert.equal(WS.instances.length, 1);
});

test("connect() while offline reconnects at once; close() then connect() starts again", async () => {
  const { client, WS, clock } = setup();
  const first = client.connect();
  await handshake(WS);
  await first;
  WS.last.serverClose(1006);
  const again = client.connect();
  assert.equal(WS.instances.length, 2);
  await handshake(WS);
  await again;
  assert.deepEqual(clock.pending(), [45000]); // only the heartbeat watchdog: the backoff timer was cleared
  client.close();
  assert.equal(client.state, "closed");
  assert.equal(WS.last.closed.code, 1000);
  const third = client.connect();
  assert.equal(client.state, "connecting");
  const connects = await handshake(WS);
  await third;
  assert.deepEqual(connects, [[1, "/chat", null, "sess1"]]); // the session is kept for a later resume
});

test("close() rejects pending connect() calls and queued events", async () => {
  const { client, WS } = setup();
  const connecting = client.connect();
  const queued = client.call("later");
  client.close();
  await assert.rejects(connecting, (err) => err.code === "closed");
  await assert.rejects(queued, (err) => err.code === "closed");
  assert.equal(client.queued, 0);
  assert.equal(WS.last.closed.code, 1000);
  assert.equal(WS.last.onmessage, null);
});

test("an invalid URL is a terminal failure", async () => {
  const Throwing = class {
    constructor() {
      throw new SyntaxError("bad url");
    }
  };
  const client = new RealtimeClient("nope", { WebSocket: Throwing });
  await assert.rejects(client.connect(), (err) => err.code === "invalid_url");
});

test("PING is answered with PONG", async () => {
  const { client, WS } = setup();
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  WS.last.receive([7]);
  assert.deepEqual(WS.last.take(), [[8]]);
});

test("silence for ping_interval + ping_timeout closes with 4005 and reconnects", async () => {
  const { client, WS, clock, states } = setup();
  const connecting = client.connect();
  await handshake(WS, { hello: [0, 1, "n", 5, 3, 1048576] });
  await connecting;
  const ws = WS.last;
  clock.advance(7000);
  ws.receive([7]); // any frame counts as a sign of life
  clock.advance(7999);
  assert.equal(client.state, "connected");
  clock.advance(1);
  assert.equal(ws.closed.code, 4005);
  assert.equal(client.state, "offline");
  assert.equal(states.at(-1).lastCloseCode, 4005);
  clock.advance(1000);
  assert.equal(WS.instances.length, 2);
});

test("a handshake that never completes is given up after connectTimeout (default 20 s) and retried", async () => {
  const { client, WS, clock, states } = setup();
  const errors = [];
  client.on("connect_error", (data) => errors.push(data));
  const connecting = client.connect();
  clock.advance(19_999);
  assert.equal(WS.instances.length, 1);
  clock.advance(1);
  assert.equal(WS.instances[0].closed.code, 4000);
  assert.equal(client.state, "offline");
  assert.deepEqual(errors, [{ code: "timeout", message: "not connected within 20000 ms", retryable: true }]);
  clock.advance(states.at(-1).delay);
  await handshake(WS); // the retry works: connect() was still waiting
  await connecting;
  assert.equal(client.state, "connected");
});

test("connectTimeout bounds each attempt: socket open and every namespace CONNECTED", async () => {
  const { client, WS, clock } = setup({ namespaces: ["/a", "/b"], connectTimeout: 3000 });
  const connecting = client.connect();
  WS.last.open();
  await tick();
  WS.last.receive([0, 1, "n", 25, 20, 1048576]);
  WS.last.receive([2, "/a", "sid", "sess"]); // /b never answers
  clock.advance(2999);
  assert.equal(WS.instances.length, 1);
  clock.advance(1);
  assert.equal(WS.instances[0].closed.code, 4000);
  clock.advance(1000);
  await handshake(WS);
  await connecting;
  clock.advance(10_000); // connected: the timer is gone
  assert.equal(client.state, "connected");
  assert.deepEqual(clock.pending(), [35_000]); // only the heartbeat watchdog
});

test("close() sends DISCONNECT 'client disconnect' for each connected namespace before closing 1000", async () => {
  const { client, WS } = setup({ namespaces: ["/a", "/b"] });
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  const local = [];
  client.on("disconnect", (data) => local.push(data), { namespace: "/a" });
  WS.last.take();
  client.close();
  assert.deepEqual(WS.last.take(), [[4, "/a", "client disconnect"], [4, "/b", "client disconnect"]]);
  assert.equal(WS.last.closed.code, 1000);
  assert.deepEqual(local, [{ reason: "client disconnect", code: null }]);
});

test("state listeners can unsubscribe, and their errors are reported, not thrown", async () => {
  const { client, WS, errors } = setup();
  const seen = [];
  const off = client.onState((state) => seen.push(state));
  client.onState(() => {
    throw new Error("listener bug");
  });
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  off();
  client.close();
  assert.deepEqual(seen, ["connecting", "connected"]);
  assert.equal(errors.length, 3);
});

test("a CONNECT_ERROR that is not retryable stops the client with a ConnectError", async () => {
  const { client, WS } = setup();
  const seen = [];
  client.on("connect_error", (data) => seen.push(data));
  const connecting = client.connect();
  WS.last.open();
  await tick();
  WS.last.receive([3, "/chat", "UNKNOWN_NAMESPACE", "no such namespace"]);
  await assert.rejects(connecting, (err) => err instanceof ConnectError && err.code === "UNKNOWN_NAMESPACE" && err.namespace === "/chat");
  assert.deepEqual(seen, [{ code: "UNKNOWN_NAMESPACE", message: "no such namespace", retryable: false }]);
  assert.equal(client.state, "closed");
});

test("a server DISCONNECT closes that namespace for good; the last one closes the client", async () => {
  const { client, WS, clock } = setup({ namespaces: ["/chat", "/news"] });
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  const reasons = [];
  client.on("disconnect", (data) => reasons.push(data.reason), { namespace: "/news" });
  const pending = client.call("x", null, { namespace: "/news" });
  WS.last.receive([4, "/news", "logged out"]);
  await assert.rejects(pending, (err) => err.code === "disconnected");
  assert.deepEqual(reasons, ["logged out"]);
  assert.equal(client.state, "connected");
  await assert.rejects(client.call("x", null, { namespace: "/news" }), (err) => err.code === "closed");
  // After a reconnect only /chat is opened again.
  WS.last.serverClose(1006);
  clock.advance(1000);
  const connects = await handshake(WS);
  assert.deepEqual(connects.map((c) => c[1]), ["/chat"]);
  assert.equal(client.state, "connected");
  WS.last.receive([4, "/chat"]);
  assert.equal(client.state, "closed");
});

test("ERROR frames are delivered as an error event", async () => {
  const { client, WS } = setup({ namespaces: ["/chat", "/news"] });
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  const seen = [];
  client.on("error", (data) => seen.push(["chat", data]));
  client.on("error", (data) => seen.push(["news", data]), { namespace: "/news" });
  WS.last.receive([9, "not_connected", "not connected", "/news"]);
  WS.last.receive([9, "bad_frame"]);
  assert.deepEqual(seen, [
    ["news", { code: "not_connected", message: "not connected" }],
    ["chat", { code: "bad_frame", message: "" }],
    ["news", { code: "bad_frame", message: "" }],
  ]);
});

test("undecodable frames are reported and ignored", async () => {
  const { client, WS, errors } = setup();
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  WS.last.onmessage({ data: "{not json" });
  WS.last.onmessage({ data: '{"a": 1}' });
  WS.last.onmessage({ data: new ArrayBuffer(2) });
  assert.equal(errors.length, 3);
  assert.equal(client.state, "connected");
});

test("unknown namespaces and reserved or invalid event names are programming errors", () => {
  const { client } = setup();
  assert.throws(() => client.on("x", () => {}, { namespace: "/nope" }), TypeError);
  assert.throws(() => client.emit("$presence", {}), /reserved/);
  assert.throws(() => client.call("", {}), TypeError);
  assert.throws(() => client.call("x".repeat(65), {}), TypeError);
  assert.throws(() => client.sid("/nope"), TypeError);
});
