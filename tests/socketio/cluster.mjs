// socket.io-client on two nodes of one Redis-backed cluster: a room spans the nodes.
// Usage: node cluster.mjs <http url of node 0> <http url of node 1>
import assert from "node:assert/strict";
import { io } from "socket.io-client";

const [url0, url1] = process.argv.slice(2);
const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(2);
}, 20000);

const a = io(url0, { forceNew: true, reconnection: false }); // polling, then the upgrade
const b = io(url1, { forceNew: true, reconnection: false, transports: ["websocket"] });
const got = { a: [], b: [] };
a.on("said", (msg) => got.a.push(msg.text));
b.on("said", (msg) => got.b.push(msg.text));
await Promise.all([a, b].map((s) => new Promise((resolve) => s.once("connect", resolve))));
for (const s of [a, b]) assert.deepEqual(await s.timeout(5000).emitWithAck("join", "across"), ["across"]);
await a.timeout(5000).emitWithAck("say", "across", "from node 0");
await b.timeout(5000).emitWithAck("say", "across", "from node 1");
while (got.a.length < 2 || got.b.length < 2) await new Promise((r) => setTimeout(r, 20));
const expected = ["from node 0", "from node 1"];
assert.deepEqual(got.a, expected);
assert.deepEqual(got.b, expected);
clearTimeout(timer);
console.log(JSON.stringify(got));
a.close();
b.close();
process.exit(0);
