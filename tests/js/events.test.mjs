import { test } from "node:test";
import assert from "node:assert/strict";
import { AckTimeout, RealtimeAckError, RealtimeError } from "../../starlette_realtime/static/client.js";
import { setup, handshake, tick } from "./helpers.mjs";

async function connected(options) {
  const ctx = setup(options);
  const connecting = ctx.client.connect();
  await handshake(ctx.WS);
  await connecting;
  return { ...ctx, ws: ctx.WS.last };
}

test("call sends an EVENT with an id and resolves with the ACK data", async () => {
  const { client, ws } = await connected();
  const rooms = client.call("join", "lobby", { namespace: "/chat" });
  assert.deepEqual(ws.take(), [[5, "/chat", "join", "lobby", 1]]);
  assert.equal(client.queued, 1);
  ws.receive([6, "/chat", 1, ["lobby"]]);
  assert.deepEqual(await rooms, ["lobby"]);
  assert.equal(client.queued, 0);
});

test("ids increase strictly per namespace", async () => {
  const { client, ws } = await connected({ namespaces: ["/chat", "/news"] });
  client.emit("a");
  client.emit("b", { x: 1 });
  client.emit("c", null, { namespace: "/news" });
  client.call("d");
  assert.deepEqual(ws.take(), [
    [5, "/chat", "a", null, 1],
    [5, "/chat", "b", { x: 1 }, 2],
    [5, "/news", "c", null, 1],
    [5, "/chat", "d", null, 3],
  ]);
});

test("an ACK error rejects with RealtimeAckError carrying the code and message", async () => {
  const { client, ws } = await connected();
  const reply = client.call("say", { room: 7 });
  ws.receive([6, "/chat", 1, null, ["invalid_payload", "Expected `str`, got `int` - at `$.room`"]]);
  await assert.rejects(reply, (err) => err instanceof RealtimeAckError && err.code === "invalid_payload" && /Expected/.test(err.message));
  const emitted = client.emit("say", {});
  ws.receive([6, "/chat", 2, null, ["forbidden"]]);
  await assert.rejects(emitted, (err) => err instanceof RealtimeAckError && err.code === "forbidden");
});

test("a duplicate ACK error never resolves as a success, for call or emit", async () => {
  const { client, ws } = await connected();
  const emitted = client.emit("say", {});
  const called = client.call("join", "x");
  ws.receive([6, "/chat", 1, null, ["duplicate", "already handled"]]);
  ws.receive([6, "/chat", 2, null, ["duplicate", "already handled"]]);
  await assert.rejects(emitted, (err) => err instanceof RealtimeAckError && err.code === "duplicate");
  await assert.rejects(called, (err) => err instanceof RealtimeAckError && err.code === "duplicate");
  assert.equal(client.queued, 0);
});

test("a call whose reply was lost is resent with its id and settled by the answer to that id", async () => {
  const { client, ws, WS, clock } = await connected();
  const paid = client.call("pay", 42);
  const refused = client.call("pay", 43);
  const unknown = client.call("pay", 44);
  assert.deepEqual(ws.take().map((f) => f[4]), [1, 2, 3]);
  ws.serverClose(1006); // the replies are lost with the connection
  clock.advance(1000);
  await handshake(WS, { recovered: true });
  assert.deepEqual(WS.last.take(), [[5, "/chat", "pay", 42, 1], [5, "/chat", "pay", 43, 2], [5, "/chat", "pay", 44, 3]]);
  WS.last.receive([6, "/chat", 1, { charged: 42 }]); // the handler's real value ...
  WS.last.receive([6, "/chat", 2, null, ["declined", "card declined"]]); // ... or its real error
  WS.last.receive([6, "/chat", 3, null, ["duplicate", "already handled"]]); // ... or: answer no longer known
  assert.deepEqual(await paid, { charged: 42 });
  await assert.rejects(refused, (err) => err.code === "declined" && err.message === "card declined");
  await assert.rejects(unknown, (err) => err.code === "duplicate");
});

test("an event without ACK rejects with AckTimeout after the timeout", async () => {
  const { client, ws, clock } = await connected({ ackTimeout: 3000 });
  const byDefault = client.call("slow");
  const custom = client.call("slower", null, { timeout: 5000 });
  clock.advance(2999);
  assert.equal(client.queued, 2);
  clock.advance(1);
  await assert.rejects(byDefault, (err) => err instanceof AckTimeout && err.code === "timeout" && err.timeout === 3000);
  clock.advance(2000);
  await assert.rejects(custom, AckTimeout);
  assert.equal(client.queued, 0);
  ws.receive([6, "/chat", 1, "too late"]); // ignored
});

test("emit never causes an unhandled rejection", async () => {
  const unhandled = [];
  const onUnhandled = (reason) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  try {
    const { client, clock } = await connected({ ackTimeout: 10 });
    client.emit("fire-and-forget");
    clock.advance(10);
    await tick();
    await tick();
    assert.deepEqual(unhandled, []);
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
});

test("events emitted offline are queued and flushed in order after CONNECTED", async () => {
  const { client, WS } = setup();
  const connecting = client.connect();
  const first = client.emit("say", "one");
  const second = client.call("say", "two");
  assert.equal(client.queued, 2);
  WS.last.open();
  await tick();
  assert.deepEqual(WS.last.take(), [[1, "/chat", null]]); // nothing before CONNECTED
  WS.last.receive([2, "/chat", "sid", "sess"]);
  await connecting;
  assert.deepEqual(WS.last.take(), [[5, "/chat", "say", "one", 1], [5, "/chat", "say", "two", 2]]);
  WS.last.receive([6, "/chat", 2, "ok2"]);
  WS.last.receive([6, "/chat", 1, "ok1"]);
  assert.deepEqual(await Promise.all([first, second]), ["ok1", "ok2"]);
});

test("unacknowledged events are resent with the same ids after a reconnect, before newer ones", async () => {
  const { client, ws, WS, clock } = await connected();
  const a = client.call("a");
  const b = client.call("b");
  ws.receive([6, "/chat", 1, "A"]);
  ws.take();
  ws.serverClose(1006);
  const c = client.call("c"); // offline: queued behind b
  assert.equal(client.queued, 2);
  clock.advance(1000);
  const connects = await handshake(WS, { recovered: true });
  assert.deepEqual(connects, [[1, "/chat", null, "sess1"]]);
  assert.deepEqual(WS.last.take(), [[5, "/chat", "b", null, 2], [5, "/chat", "c", null, 3]]);
  WS.last.receive([6, "/chat", 2, "B"]);
  WS.last.receive([6, "/chat", 3, "C"]);
  assert.deepEqual(await Promise.all([a, b, c]), ["A", "B", "C"]);
});

test("the ack timer only runs while the event is on the wire", async () => {
  const { client, ws, WS, clock } = await connected({ ackTimeout: 5000, reconnectionDelay: 10_000, reconnectionDelayMax: 10_000 });
  const reply = client.call("x");
  clock.advance(4000);
  ws.serverClose(1006);
  clock.advance(10_000); // offline: no time-out
  await handshake(WS);
  clock.advance(4999);
  assert.equal(client.queued, 1);
  WS.last.receive([6, "/chat", 1, "fine"]);
  assert.equal(await reply, "fine");
});

test("events that wait offline longer than queueTtl are dropped and counted", async () => {
  const { client, ws, WS, clock, states } = await connected({ queueTtl: 5000, reconnectionDelay: 3000, reconnectionDelayMax: 3000 });
  ws.serverClose(1006);
  const old = client.emit("old");
  clock.advance(2000);
  const young = client.emit("young");
  clock.advance(1000); // reconnecting now, but this attempt fails
  WS.last.serverClose(1006);
  clock.advance(1999);
  assert.equal(client.dropped, 0);
  clock.advance(1);
  await assert.rejects(old, (err) => err instanceof RealtimeError && err.code === "expired");
  assert.equal(client.dropped, 1);
  assert.equal(client.queued, 1);
  clock.advance(1000);
  await handshake(WS);
  assert.deepEqual(WS.last.take(), [[5, "/chat", "young", null, 2]]);
  assert.equal(states.at(-1).dropped, 1);
  WS.last.receive([6, "/chat", 2, null]);
  assert.equal(await young, null);
});

test("expired events are dropped at CONNECTED even if their timer has not fired yet", async () => {
  const { client, ws, WS, clock } = await connected({ queueTtl: 2000, reconnectionDelay: 2500, reconnectionDelayMax: 2500 });
  ws.serverClose(1006);
  const stale = client.emit("stale");
  clock.advance(2500);
  await handshake(WS);
  await assert.rejects(stale, (err) => err.code === "expired");
  assert.deepEqual(WS.last.take(), []);
});

test("queueMax bounds queued and unacknowledged events", async () => {
  const { client } = setup({ queueMax: 2 });
  client.connect().catch(() => {});
  client.emit("1");
  client.emit("2");
  await assert.rejects(client.call("3"), (err) => err.code === "queue_full");
  assert.equal(client.queued, 2);
});

test("emits before connect() and after close() are refused", async () => {
  const { client } = setup();
  await assert.rejects(client.emit("x"), (err) => err.code === "closed");
  await assert.rejects(client.call("x"), (err) => err.code === "closed");
});

test("volatile events are sent without id when connected and dropped when offline", async () => {
  const { client, ws } = await connected();
  assert.equal(await client.emit("typing", { room: "lobby" }, { volatile: true }), true);
  assert.deepEqual(ws.take(), [[5, "/chat", "typing", { room: "lobby" }]]);
  assert.equal(client.queued, 0);
  ws.serverClose(1006);
  assert.equal(await client.emit("typing", {}, { volatile: true }), false);
  assert.equal(client.queued, 0);
});

test("events bigger than max_message_size are refused locally", async () => {
  const { client, ws } = await connected();
  ws.receive([0, 1, "n", 25, 20, 64]);
  const big = { text: "é".repeat(30) }; // 60 bytes of UTF-8 in the payload alone
  await assert.rejects(client.call("say", big), (err) => err.code === "message_too_large" && err.max === 64 && err.size > 64);
  await assert.rejects(client.emit("say", big, { volatile: true }), (err) => err.code === "message_too_large");
  assert.equal(client.queued, 0);
  assert.deepEqual(ws.take(), []);
  client.call("small", "ok");
  assert.deepEqual(ws.take(), [[5, "/chat", "small", "ok", 2]]); // the refused event used id 1
});

test("a queued event too big for the new server's limit is refused when flushed", async () => {
  const { client, WS } = setup();
  const connecting = client.connect();
  const refused = assert.rejects(client.call("say", "x".repeat(100)), (err) => err.code === "message_too_large");
  await handshake(WS, { hello: [0, 1, "n", 25, 20, 50] });
  await connecting;
  await refused;
  assert.deepEqual(WS.last.take(), []);
});

test("server events reach the handlers of their namespace with meta", async () => {
  const { client, ws } = await connected({ namespaces: ["/chat", "/news"] });
  const seen = [];
  client.on("said", (data, meta) => seen.push(["chat", data, meta]));
  const off = client.on("said", (data) => seen.push(["news", data]), { namespace: "/news" });
  ws.receive([5, "/chat", "said", { text: "hi" }, null, "lobby", "k1v9", 17]);
  ws.receive([5, "/news", "said", "plain"]);
  off();
  ws.receive([5, "/news", "said", "unheard"]);
  ws.receive([5, "/chat", "said"]); // data omitted: null
  assert.deepEqual(seen, [
    ["chat", { text: "hi" }, { room: "lobby", epoch: "k1v9", offset: 17, namespace: "/chat" }],
    ["news", "plain"],
    ["chat", null, { room: null, epoch: null, offset: null, namespace: "/chat" }],
  ]);
});

test("handler errors, sync or async, are reported and do not stop other handlers", async () => {
  const { client, ws, errors } = await connected();
  const seen = [];
  client.on("x", () => {
    throw new Error("sync");
  });
  client.on("x", async () => Promise.reject(new Error("async")));
  client.on("x", (data) => seen.push(data));
  ws.receive([5, "/chat", "x", 1]);
  await tick();
  assert.deepEqual(seen, [1]);
  assert.deepEqual(errors.map((e) => e.message).sort(), ["async", "sync"]);
});

test("server calls are answered with the handler's return value, async handlers included", async () => {
  const { client, ws } = await connected();
  client.on("add", ({ a, b }) => a + b);
  client.on("later", async (data) => {
    await tick();
    return { echo: data };
  });
  client.on("nothing", () => {});
  ws.receive([5, "/chat", "add", { a: 2, b: 3 }, 7]);
  ws.receive([5, "/chat", "later", "x", 8]);
  ws.receive([5, "/chat", "nothing", null, 9]);
  await tick();
  await tick();
  assert.deepEqual(ws.take().sort((x, y) => x[2] - y[2]), [
    [6, "/chat", 7, 5],
    [6, "/chat", 8, { echo: "x" }],
    [6, "/chat", 9, null],
  ]);
});

test("server calls without handler or with a failing handler get an error ACK", async () => {
  const { client, ws, errors } = await connected();
  client.on("deny", () => {
    throw new RealtimeError("forbidden", "not you");
  });
  client.on("crash", () => {
    throw new Error("secret detail");
  });
  ws.receive([5, "/chat", "nobody", null, 1]);
  ws.receive([5, "/chat", "deny", null, 2]);
  ws.receive([5, "/chat", "crash", null, 3]);
  await tick();
  assert.deepEqual(ws.take(), [
    [6, "/chat", 1, null, ["unknown_event", 'no handler for "nobody"']],
    [6, "/chat", 2, null, ["forbidden", "not you"]],
    [6, "/chat", 3, null, ["internal_error", "the client handler failed"]],
  ]);
  assert.equal(errors.length, 1);
});

test("a server call result that exceeds max_message_size is answered with limit_exceeded", async () => {
  const { client, ws } = await connected();
  ws.receive([0, 1, "n", 25, 20, 100]);
  client.on("dump", () => "x".repeat(200));
  ws.receive([5, "/chat", "dump", null, 4]);
  await tick();
  assert.deepEqual(ws.take(), [[6, "/chat", 4, null, ["limit_exceeded", "the result exceeds max_message_size"]]]);
});

test("the ACK of a server call is not sent on a newer connection", async () => {
  const { client, ws, WS, clock } = await connected();
  let release;
  client.on("slow", () => new Promise((resolve) => (release = resolve)));
  ws.receive([5, "/chat", "slow", null, 1]);
  ws.serverClose(1006);
  clock.advance(1000);
  await handshake(WS);
  release("done");
  await tick();
  assert.deepEqual(WS.last.take(), []);
});

test("an event that kills the connection every time is resent only until queueTtl runs out", async () => {
  const { client, ws, WS, clock } = await connected({ queueTtl: 5000, reconnectionDelay: 1000, reconnectionDelayMax: 1000 });
  const poison = client.emit("poison");
  let sends = 0;
  for (let socket = ws; ; socket = WS.last) {
    sends += socket.take().filter((f) => f[2] === "poison").length;
    socket.serverClose(1011);
    clock.advance(1000);
    if (client.queued === 0) break;
    await handshake(WS);
  }
  await assert.rejects(poison, (err) => err.code === "expired");
  assert.equal(sends, 5);
});

test("a server call result that cannot be encoded is answered with internal_error", async () => {
  const { client, ws, errors } = await connected();
  client.on("big", () => 10n ** 30n); // JSON has no BigInt
  ws.receive([5, "/chat", "big", null, 5]);
  await tick();
  assert.deepEqual(ws.take(), [[6, "/chat", 5, null, ["internal_error", "the result could not be encoded"]]]);
  assert.equal(errors.length, 1);
});
