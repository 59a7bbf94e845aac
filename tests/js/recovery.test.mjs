import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, handshake } from "./helpers.mjs";

async function connected(options) {
  const ctx = setup(options);
  const connecting = ctx.client.connect();
  await handshake(ctx.WS);
  await connecting;
  return ctx;
}

const said = (text, room, epoch, offset, ns = "/chat") => [5, ns, "said", text, null, room, epoch, offset];

test("positions are kept per room and per namespace and sent with the session on reconnect", async () => {
  const { WS, clock } = await connected({ namespaces: ["/chat", "/news"] });
  const ws = WS.last;
  ws.receive(said("a", "lobby", "e1", 1));
  ws.receive(said("b", "lobby", "e1", 2));
  ws.receive(said("c", "#all", "e9", 40));
  ws.receive(said("d", "lobby", "e5", 7, "/news"));
  ws.receive([5, "/chat", "direct", "no position"]); // no room: nothing to store
  ws.serverClose(1001);
  clock.advance(1000);
  const connects = await handshake(WS, { recovered: true });
  assert.deepEqual(connects, [
    [1, "/chat", null, "sess1", { lobby: ["e1", 2], "#all": ["e9", 40] }],
    [1, "/news", null, "sess1", { lobby: ["e5", 7] }],
  ]);
});

test("replayed events at or before the stored offset of the same epoch are dropped", async () => {
  const { client, WS, clock } = await connected();
  const seen = [];
  client.on("said", (text, meta) => seen.push(`${text}@${meta.epoch}:${meta.offset}`));
  let ws = WS.last;
  ws.receive(said("1", "lobby", "e1", 1));
  ws.receive(said("2", "lobby", "e1", 2));
  ws.serverClose(1006);
  clock.advance(1000);
  await handshake(WS, { recovered: true });
  ws = WS.last;
  ws.receive(said("1", "lobby", "e1", 1)); // duplicate
  ws.receive(said("2", "lobby", "e1", 2)); // duplicate
  ws.receive(said("3", "lobby", "e1", 3));
  ws.receive(said("3", "lobby", "e1", 3)); // duplicate
  ws.receive(said("0", "lobby", "e2", 0)); // new epoch: history restarted, deliver
  ws.receive(said("x", "other", "e1", 1)); // another room has its own position
  assert.deepEqual(seen, ["1@e1:1", "2@e1:2", "3@e1:3", "0@e2:0", "x@e1:1"]);
  assert.equal(client.recovered("/chat"), true);
});

test("a handler that throws does not cause the event to be delivered again", async () => {
  const { client, WS, errors } = await connected();
  let calls = 0;
  client.on("said", () => {
    calls++;
    throw new Error("app bug");
  });
  WS.last.receive(said("1", "lobby", "e1", 1));
  WS.last.receive(said("1", "lobby", "e1", 1));
  assert.equal(calls, 1);
  assert.equal(errors.length, 1);
});

test("recovery_failed resets positions and is reported as an event and a state notification", async () => {
  const { client, WS, clock, states } = await connected();
  const events = [];
  client.on("recovery_failed", (data) => events.push(["recovery_failed", data]));
  client.on("connect", (data) => events.push(["connect", data]));
  client.on("said", (text) => events.push(["said", text]));
  WS.last.receive(said("old", "lobby", "e1", 5));
  WS.last.serverClose(1006);
  clock.advance(1000);
  const connects = await handshake(WS, { sid: "fresh", session: "sess2", recoveryFailed: true });
  assert.deepEqual(connects, [[1, "/chat", null, "sess1", { lobby: ["e1", 5] }]]);
  assert.equal(client.sid("/chat"), "fresh");
  assert.equal(client.recovered("/chat"), false);
  assert.deepEqual(events.slice(1), [["connect", { sid: "fresh", recovered: false, recoveryFailed: true }], ["recovery_failed", { sid: "fresh" }]]);
  const notice = states.at(-1);
  assert.equal(notice.state, "connected");
  assert.equal(notice.recoveryFailed, true);
  assert.equal(notice.namespace, "/chat");
  // Positions start over: offset 1 of the same epoch is new to this session.
  WS.last.receive(said("new", "lobby", "e1", 1));
  assert.deepEqual(events.at(-1), ["said", "new"]);
  // And the next CONNECT carries the new session with the new positions only.
  WS.last.serverClose(1006);
  clock.advance(1000);
  assert.deepEqual(await handshake(WS), [[1, "/chat", null, "sess2", { lobby: ["e1", 1] }]]);
});

test("$resync is delivered to the app and forgets the room's position", async () => {
  const { client, WS, clock } = await connected();
  const seen = [];
  client.on("$resync", (data, meta) => seen.push([data, meta.room]));
  WS.last.receive(said("a", "lobby", "e1", 9));
  WS.last.receive(said("b", "games", "e1", 3));
  WS.last.serverClose(1006);
  clock.advance(1000);
  await handshake(WS);
  WS.last.receive([5, "/chat", "$resync", { room: "lobby", epoch: "e2" }, null, "#sid:sid1", "s1", 1]);
  assert.deepEqual(seen, [[{ room: "lobby", epoch: "e2" }, "#sid:sid1"]]);
  WS.last.serverClose(1006);
  clock.advance(1000);
  assert.deepEqual(await handshake(WS), [[1, "/chat", null, "sess1", { games: ["e1", 3], "#sid:sid1": ["s1", 1] }]]);
});

test("$presence is delivered like any event", async () => {
  const { client, WS } = await connected();
  const seen = [];
  client.on("$presence", (data) => seen.push(data));
  const presence = { room: "lobby", user: "ada", status: "online", meta: null };
  WS.last.receive([5, "/chat", "$presence", presence, null, "lobby", "e1", 3]);
  assert.deepEqual(seen, [presence]);
});

test("the session is updated by every CONNECTED", async () => {
  const { WS, clock } = await connected();
  WS.last.serverClose(1006);
  clock.advance(1000);
  await handshake(WS, { session: "sess1-renewed", recovered: true });
  WS.last.serverClose(1006);
  clock.advance(1000);
  assert.deepEqual(await handshake(WS), [[1, "/chat", null, "sess1-renewed"]]);
});
