// The browser client (in Node, over a real server): a call whose reply is lost in an abrupt drop resolves,
// after the resend on a new WebSocket, with the handler's real value or real error.
// Usage: node lost_reply.mjs ws://127.0.0.1:PORT/realtime json|msgpack ; prints one JSON line of results.
import { createRequire } from "node:module";
import { RealtimeClient } from "../../starlette_realtime/static/client.js";

// `ws` comes with socket.io-client (tests/socketio, installed by scripts/test).
const require = createRequire(new URL("../socketio/package.json", import.meta.url));
const WS = require("ws");

let current = null;
class Tracked extends WS {
  constructor(url, protocols) {
    super(url, protocols);
    current = this; // the socket the client uses now, so that this script can cut it
  }
}

const [url, encoding] = process.argv.slice(2);
const client = new RealtimeClient(url, {
  namespaces: ["/pay"], encoding, WebSocket: Tracked, reconnectionDelay: 50, reconnectionDelayMax: 200,
  ackTimeout: 20000,
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const deadline = setTimeout(() => { console.error("timed out"); process.exit(2); }, 50000);

await client.connect();
const results = {};
for (const event of ["value", "fail", "slow_concurrent"]) {
  const pending = client.call(event, 0.6, { namespace: "/pay", timeout: 20000 }).then(
    (value) => value,
    (err) => err.code ?? String(err),
  );
  await sleep(200); // the handler runs on the server now (0.6 s)
  current.terminate(); // drop without a close frame: the reply goes to a dead socket
  results[event] = await pending;
  if (!client.recovered("/pay")) throw new Error(`not recovered after ${event}`);
}
clearTimeout(deadline);
client.close();
console.log(JSON.stringify(results));
process.exit(0);
