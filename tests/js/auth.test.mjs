import { test } from "node:test";
import assert from "node:assert/strict";
import { ConnectError, RealtimeAckError } from "../../starlette_realtime/static/client.js";
import { setup, handshake, tick } from "./helpers.mjs";

async function firstConnects(options) {
  const ctx = setup(options);
  const connecting = ctx.client.connect();
  ctx.WS.last.open();
  await tick();
  return { ...ctx, connecting, frames: ctx.WS.last.take() };
}

test("a string token is sent as {token}", async () => {
  const { frames } = await firstConnects({ auth: "t0k3n" });
  assert.deepEqual(frames, [[1, "/chat", { token: "t0k3n" }]]);
});

test("a payload object that is not a namespace map goes to every namespace", async () => {
  const { frames } = await firstConnects({ namespaces: ["/a", "/b"], auth: { token: "x", device: 2 } });
  assert.deepEqual(frames, [[1, "/a", { token: "x", device: 2 }], [1, "/b", { token: "x", device: 2 }]]);
});

test("per-namespace providers: value, sync function, async function, none", async () => {
  const { frames } = await firstConnects({
    namespaces: ["/a", "/b", "/c", "/d"],
    auth: { "/a": "plain", "/b": () => ({ token: "sync" }), "/c": async (ns) => `async for ${ns}` },
  });
  assert.deepEqual(
    frames.sort((x, y) => x[1].localeCompare(y[1])),
    [[1, "/a", { token: "plain" }], [1, "/b", { token: "sync" }], [1, "/c", { token: "async for /c" }], [1, "/d", null]],
  );
});

test("the provider is called on every connect and reconnect", async () => {
  let n = 0;
  const { WS, clock, connecting } = await firstConnects({ auth: { "/chat": async () => `token-${++n}` } });
  WS.last.receive([2, "/chat", "sid", "sess"]);
  await connecting;
  WS.last.serverClose(4003, "token expired");
  clock.advance(1000);
  const connects = await handshake(WS);
  assert.deepEqual(connects, [[1, "/chat", { token: "token-2" }, "sess"]]);
  assert.equal(n, 2);
});

test("INVALID_TOKEN asks the provider for a fresh token and retries CONNECT", async () => {
  let n = 0;
  const { client, WS, connecting, frames } = await firstConnects({ auth: () => `token-${++n}` });
  assert.deepEqual(frames, [[1, "/chat", { token: "token-1" }]]);
  const errors = [];
  client.on("connect_error", (data) => errors.push(data.code));
  WS.last.receive([3, "/chat", "INVALID_TOKEN", "expired", true]);
  await tick();
  assert.deepEqual(WS.last.take(), [[1, "/chat", { token: "token-2" }]]);
  WS.last.receive([2, "/chat", "sid", "sess"]);
  await connecting;
  assert.deepEqual(errors, ["INVALID_TOKEN"]);
  assert.equal(client.state, "connected");
});

test("INVALID_TOKEN gives up after authRetries retries", async () => {
  const { client, WS, connecting } = await firstConnects({ auth: "bad", authRetries: 2 });
  for (let i = 0; i < 2; i++) {
    WS.last.receive([3, "/chat", "INVALID_TOKEN", "bad token"]);
    await tick();
    assert.deepEqual(WS.last.take(), [[1, "/chat", { token: "bad" }]]);
  }
  WS.last.receive([3, "/chat", "INVALID_TOKEN", "bad token"]);
  await assert.rejects(connecting, (err) => err instanceof ConnectError && err.code === "INVALID_TOKEN" && err.message === "bad token");
  assert.equal(client.state, "closed");
});

test("the retry budget starts again on every new connection", async () => {
  const { client, WS, clock, connecting } = await firstConnects({ auth: "t", authRetries: 1 });
  WS.last.receive([3, "/chat", "INVALID_TOKEN", ""]);
  await tick();
  WS.last.receive([2, "/chat", "sid", "sess"]);
  await connecting;
  WS.last.serverClose(1006);
  clock.advance(1000);
  WS.last.open();
  await tick();
  WS.last.take();
  WS.last.receive([3, "/chat", "INVALID_TOKEN", ""]);
  await tick();
  assert.deepEqual(WS.last.take(), [[1, "/chat", { token: "t" }, "sess"]]);
  assert.equal(client.state, "reconnecting");
});

test("other retryable CONNECT_ERRORs retry after a delay", async () => {
  const { client, WS, clock, connecting } = await firstConnects({ auth: "t" });
  WS.last.receive([3, "/chat", "BUSY", "try later", true]);
  await tick();
  assert.deepEqual(WS.last.take(), []);
  clock.advance(1000);
  await tick();
  assert.deepEqual(WS.last.take(), [[1, "/chat", { token: "t" }]]);
  WS.last.receive([2, "/chat", "sid", "sess"]);
  await connecting;
  assert.equal(client.state, "connected");
});

test("a retryable CONNECT_ERROR retry is not sent on a newer socket", async () => {
  const { WS, clock } = await firstConnects({ auth: "t", reconnectionDelay: 5000, reconnectionDelayMax: 5000 });
  WS.last.receive([3, "/chat", "BUSY", "", true]);
  WS.last.serverClose(1006);
  clock.advance(5000); // both the CONNECT retry timer and the reconnect fire
  WS.last.open();
  await tick();
  assert.deepEqual(WS.last.take(), [[1, "/chat", { token: "t" }]]); // one CONNECT, from onopen
});

test("a provider that throws drops the connection and retries with backoff", async () => {
  let fail = true;
  const { client, WS, clock, errors, connecting } = await firstConnects({
    auth: async () => {
      if (fail) throw new Error("token endpoint down");
      return "ok";
    },
  });
  assert.equal(errors[0].message, "token endpoint down");
  assert.equal(WS.last.closed.code, 4000);
  assert.equal(client.state, "offline");
  fail = false;
  clock.advance(1000);
  const connects = await handshake(WS);
  assert.deepEqual(connects, [[1, "/chat", { token: "ok" }]]);
  await connecting;
});

test("a socket that closes while the provider runs gets no CONNECT", async () => {
  let release;
  const { client, WS } = setup({ auth: () => new Promise((resolve) => (release = resolve)) });
  client.connect().catch(() => {});
  const first = WS.last;
  first.open();
  first.serverClose(1006);
  release("late");
  await tick();
  assert.deepEqual(first.sent, []);
});

test("a retryable CONNECT_ERROR that outlasts the quick retries reconnects instead of giving up", async () => {
  const { client, WS, clock } = await firstConnects({ auth: "t", authRetries: 1 });
  WS.last.receive([3, "/chat", "UNAVAILABLE", "backend down", true]);
  clock.advance(1000);
  await tick();
  assert.deepEqual(WS.last.take(), [[1, "/chat", { token: "t" }]]);
  WS.last.receive([3, "/chat", "UNAVAILABLE", "backend down", true]);
  await tick();
  assert.equal(WS.last.closed.code, 4000); // the socket is dropped ...
  assert.notEqual(client.state, "closed"); // ... and the client keeps trying with backoff
});

test("refreshAuth sends $auth with a fresh token from the provider and resolves true when accepted", async () => {
  let n = 0;
  const { client, WS, connecting } = await firstConnects({ auth: async () => `token-${++n}` });
  WS.last.receive([2, "/chat", "sid", "sess"]);
  await connecting;
  const refreshed = client.refreshAuth();
  await tick();
  assert.deepEqual(WS.last.take(), [[5, "/chat", "$auth", { token: "token-2" }, 1]]);
  WS.last.receive([6, "/chat", 1, null]);
  assert.equal(await refreshed, true);
});

test("refreshAuth rejects with the server's refusal, and resolves false while not connected", async () => {
  const { client, WS, connecting } = await firstConnects({ auth: "stale" });
  assert.equal(await client.refreshAuth("/chat"), false); // not CONNECTED yet: nothing sent
  WS.last.receive([2, "/chat", "sid", "sess"]);
  await connecting;
  WS.last.take();
  const refused = client.refreshAuth("/chat", { timeout: 500 });
  await tick();
  assert.deepEqual(WS.last.take(), [[5, "/chat", "$auth", { token: "stale" }, 1]]);
  WS.last.receive([6, "/chat", 1, null, ["INVALID_TOKEN", "expired"]]);
  await assert.rejects(refused, (err) => err instanceof RealtimeAckError && err.code === "INVALID_TOKEN");
});

test("namespaceAuth gives some namespaces their own provider; the others get auth", async () => {
  const { frames } = await firstConnects({
    namespaces: ["/a", "/admin"],
    auth: { token: "user", device: 2 },
    namespaceAuth: { "/admin": async () => "admin-token" },
  });
  assert.deepEqual(frames, [[1, "/a", { token: "user", device: 2 }], [1, "/admin", { token: "admin-token" }]]);
});
