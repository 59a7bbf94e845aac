import { test } from "node:test";
import assert from "node:assert/strict";
import { RealtimeClient, withTrailingSlash } from "../../starlette_realtime/static/client.js";
import { makeFakeWebSocket } from "./helpers.mjs";

// A Starlette Mount("/realtime") answers the handshake of "/realtime" with 403 and takes "/realtime/".
test("withTrailingSlash adds the slash the router's mount point needs, before any query or fragment", () => {
  assert.equal(withTrailingSlash("ws://h/realtime"), "ws://h/realtime/");
  assert.equal(withTrailingSlash("ws://h/realtime/"), "ws://h/realtime/");
  assert.equal(withTrailingSlash("ws://h:8000"), "ws://h:8000/");
  assert.equal(withTrailingSlash("ws://h/realtime?v=1#x"), "ws://h/realtime/?v=1#x");
  assert.equal(withTrailingSlash("/realtime"), "/realtime/");
  assert.equal(withTrailingSlash("wss://h/a/b/?q=/x"), "wss://h/a/b/?q=/x");
});

test("the client opens its socket on the URL with the slash", () => {
  const WS = makeFakeWebSocket();
  const client = new RealtimeClient("ws://h/realtime?tenant=a", { WebSocket: WS });
  assert.equal(client.url, "ws://h/realtime/?tenant=a");
  client.connect().catch(() => {});
  assert.equal(WS.last.url, "ws://h/realtime/?tenant=a");
  client.close();
});
