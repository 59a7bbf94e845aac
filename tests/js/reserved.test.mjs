import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, handshake } from "./helpers.mjs";

// "$presence.list" (presence.py) and "$auth" (auth.py) are reserved events the server handles for clients;
// the other reserved names ("$presence", "$resync"...) only ever come from the server.
test("a client may call the server's built-in reserved events, and no other reserved name", async () => {
  const { client, WS } = setup();
  const connecting = client.connect();
  await handshake(WS);
  await connecting;
  const ws = WS.last;
  const listing = client.call("$presence.list", { room: "lobby" });
  const refreshed = client.call("$auth", { token: "fresh" });
  assert.deepEqual(ws.take(), [[5, "/chat", "$presence.list", { room: "lobby" }, 1], [5, "/chat", "$auth", { token: "fresh" }, 2]]);
  ws.receive([6, "/chat", 1, { room: "lobby", seq: 3, members: [{ user: "ada", meta: {} }] }]);
  ws.receive([6, "/chat", 2, null]);
  assert.deepEqual(await listing, { room: "lobby", seq: 3, members: [{ user: "ada", meta: {} }] });
  assert.equal(await refreshed, null);
  for (const name of ["$presence", "$resync", "$auth2", "$presence.list.x", "$"]) {
    assert.throws(() => client.emit(name, {}), /reserved/, name);
  }
  client.close();
});
