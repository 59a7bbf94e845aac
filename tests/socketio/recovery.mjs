// Connection state recovery with the official socket.io-client: an abrupt drop while a room is streaming,
// the automatic reconnection presents pid + offset, and the client must see recovered === true and every
// message exactly once, in order.
// Usage: node recovery.mjs <http url> <polling|websocket> <count>
import assert from "node:assert/strict";
import { io } from "socket.io-client";

const [url, mode, countArg] = process.argv.slice(2);
const count = Number(countArg);
const transports = mode === "websocket" ? { transports: ["websocket"] } : {};
const deadline = setTimeout(() => {
  console.error("timed out");
  process.exit(2);
}, 20000);

const main = io(url, { ...transports, forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
const pumper = io(url, { transports: ["websocket"], forceNew: true });
const got = [];
const connects = [];
let dropped = false;

main.on("tick", (i, offset) => {
  assert.equal(typeof offset, "string", "room events carry their position");
  got.push(i);
  if (got.length === Math.floor(count / 4) && !dropped) {
    dropped = true;
    main.io.engine.close(); // an abrupt drop of the underlying connection
  }
});

await new Promise((resolve) => main.once("connect", resolve));
connects.push(main.recovered);
main.on("connect", () => connects.push(main.recovered));
assert.deepEqual(await main.timeout(5000).emitWithAck("join", "feed"), ["feed"]);
await new Promise((resolve) => (pumper.connected ? resolve() : pumper.once("connect", resolve)));
pumper.timeout(15000).emit("pump", "feed", count, () => {});

while (got.length < count) await new Promise((r) => setTimeout(r, 20));
await new Promise((r) => setTimeout(r, 200)); // anything extra (a duplicate) would arrive by now
clearTimeout(deadline);
assert.ok(dropped, "the connection was dropped");
assert.deepEqual(connects, [false, true], "first connect is new, the reconnect is recovered");
assert.deepEqual(got, [...Array(count).keys()], "every message once, in order");
console.log(JSON.stringify({ received: got.length, connects }));
main.close();
pumper.close();
process.exit(0);
