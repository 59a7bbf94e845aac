// Connection state recovery across nodes: a socket.io-client on node 0 drops abruptly while its room streams; a new
// client presents its pid and offset (what socket.io-client sends when it reconnects) to node 1, on the same Redis.
// Node 1 resumes the session: the missed messages come first, in order, and the session says it was recovered.
// Usage: node recovery_cluster.mjs <http url of node 0> <http url of node 1>
import assert from "node:assert/strict";
import { io } from "socket.io-client";

const [url0, url1] = process.argv.slice(2);
const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(2);
}, 30000);
const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const first = io(url0, { forceNew: true, reconnection: false, transports: ["websocket"] });
const pumper = io(url1, { forceNew: true, reconnection: false, transports: ["websocket"] });
const before = [];
first.on("tick", (i) => before.push(i));
await Promise.all([first, pumper].map((s) => new Promise((resolve) => s.once("connect", resolve))));
assert.deepEqual(await first.timeout(5000).emitWithAck("join", "feed"), ["feed"]);
await pumper.timeout(5000).emitWithAck("pump", "feed", 10);
while (before.length < 10) await wait(20);
const pid = first._pid; // what the client keeps and sends back when it reconnects
const offset = first._lastOffset;
const sid = first.id;
assert.ok(pid && offset, "recovery fields received");
first.io.engine.close(); // an abrupt drop: no DISCONNECT, the session is kept for the recovery window
await wait(300);
await pumper.timeout(5000).emitWithAck("pump", "feed", 10); // sent while nobody from that session listens

const after = [];
const second = io(url1, { forceNew: true, reconnection: false, transports: ["websocket"], auth: { pid, offset } });
second.ids = first.ids; // ack ids go on, as on the one Socket object that reconnects (the server dedups ids)
second.on("tick", (i) => after.push(i));
await new Promise((resolve) => second.once("connect", resolve));
assert.equal(second.id, sid, "the same session id");
assert.equal(await second.timeout(5000).emitWithAck("recovered"), true);
while (after.length < 10) await wait(20);
await wait(200);
assert.deepEqual(after, [...Array(10).keys()], "exactly the missed messages, in order");
clearTimeout(timer);
console.log(JSON.stringify({ before, after }));
second.close();
pumper.close();
process.exit(0);
