// Connection state recovery across nodes, done by socket.io-client itself.  The client connects to one address, a
// TCP proxy in this script that forwards to node 0 (as a load balancer would).  While a room streams (pumped through
// node 1, on the same Redis), the proxy is pointed at node 1 and the client's transport is dropped abruptly: "cut"
// closes every proxied TCP connection (node 0 stays up and sees its socket vanish), "kill" SIGKILLs node 0.  The
// client reconnects on its own, through the same address, to node 1, presenting the pid and offset it kept; it must
// see socket.recovered === true, keep its socket id, be served by node 1, and get every message once, in order.
// The proxy refuses connections after the drop until 20 more messages went to the room (the pumper, in the room
// too, counts them), so that the recovery has messages to replay however the machine's timing goes.
// Usage: node recovery_cluster.mjs <http url of node 0> <http url of node 1> <websocket|polling> <cut|kill>
//        <pid of node 0> <count>
import assert from "node:assert/strict";
import net from "node:net";
import { io } from "socket.io-client";

const [url0, url1, mode, how, pidArg, countArg] = process.argv.slice(2);
const count = Number(countArg);
const timer = setTimeout(() => {
  console.error("timed out", JSON.stringify(state()));
  process.exit(2);
}, 45000);
const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The one address the client knows.  Each TCP connection goes to the node `target` names when it opens.
let target = new URL(url0);
let blocked = false; // failing over: connections are refused
let droppedAt = 0; // messages the client had when it was dropped
const open = new Set();
const proxy = net.createServer((downstream) => {
  if (blocked) {
    downstream.destroy();
    return;
  }
  const upstream = net.connect(Number(target.port), target.hostname);
  open.add(downstream);
  open.add(upstream);
  const end = () => {
    downstream.destroy();
    upstream.destroy();
    open.delete(downstream);
    open.delete(upstream);
  };
  for (const s of [downstream, upstream]) {
    s.on("error", end);
    s.on("close", end);
  }
  downstream.pipe(upstream);
  upstream.pipe(downstream);
});
await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
const via = `http://127.0.0.1:${proxy.address().port}`;

const transports = mode === "websocket" ? ["websocket"] : ["polling"];
const main = io(via, { transports, forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 300 });
const pumper = io(url1, { transports: ["websocket"], forceNew: true });
const got = [];
const pumped = []; // what the pumper, in the room too, got: the room's messages as they were sent
const connects = [];
const reasons = [];
let dropped = false;
let missed = null; // messages sent to the room while the client was away (at its reconnect)
const state = () => ({ got: got.length, pumped: pumped.length, connects, reasons, dropped, missed });

function drop() {
  dropped = true;
  blocked = true;
  droppedAt = got.length;
  target = new URL(url1); // from now on, the address leads to node 1
  if (how === "kill") {
    process.kill(Number(pidArg), "SIGKILL"); // its sockets die with it
  } else {
    for (const s of open) s.destroy(); // no close frame, no DISCONNECT: an abrupt drop
  }
}

main.on("tick", (i, offset) => {
  assert.equal(typeof offset, "string", "room events carry their position");
  got.push(i);
  if (got.length === Math.floor(count / 4) && !dropped) drop();
});
main.on("disconnect", (reason) => reasons.push(reason));
pumper.on("tick", (i) => {
  pumped.push(i);
  if (blocked && pumped.length >= droppedAt + 20) blocked = false;
});

await new Promise((resolve) => main.once("connect", resolve));
connects.push(main.recovered);
const sid = main.id;
main.on("connect", () => {
  connects.push(main.recovered);
  missed = pumped.length - got.length;
});
await new Promise((resolve) => (pumper.connected ? resolve() : pumper.once("connect", resolve)));
const node0 = await main.timeout(5000).emitWithAck("whereami");
const node1 = await pumper.timeout(5000).emitWithAck("whereami");
assert.notEqual(node0, node1, "the client starts on the other node than the pumper");
assert.deepEqual(await main.timeout(5000).emitWithAck("join", "feed"), ["feed"]);
assert.deepEqual(await pumper.timeout(5000).emitWithAck("join", "feed"), ["feed"]);
pumper.timeout(30000).emit("pump", "feed", count, () => {});

while (got.length < count) await wait(20);
await wait(300); // anything extra (a duplicate) would arrive by now
assert.ok(dropped, "the transport was dropped");
assert.equal(reasons.length, 1, `one disconnect: ${reasons}`);
assert.notEqual(reasons[0], "io server disconnect", "a drop, not a server DISCONNECT");
assert.deepEqual(connects, [false, true], "the first connect is new, the automatic reconnect is recovered");
assert.equal(main.id, sid, "the same socket id");
assert.equal(await main.timeout(5000).emitWithAck("whereami"), node1, "now served by node 1");
assert.equal(await main.timeout(5000).emitWithAck("recovered"), true, "the server says recovered too");
assert.ok(missed >= 20, `messages were sent while the client was away: ${missed}`);
assert.deepEqual(got, [...Array(count).keys()], "every message once, in order");
clearTimeout(timer);
console.log(JSON.stringify({ mode, how, received: got.length, missed, connects, reasons, nodes: [node0, node1] }));
main.close();
pumper.close();
proxy.close();
for (const s of open) s.destroy();
process.exit(0);
