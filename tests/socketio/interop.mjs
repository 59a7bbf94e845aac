// The official socket.io-client against a starlette-realtime server serving tests/socketio/app.py.
// Usage: node interop.mjs <http url> <polling|websocket>
// "polling" is the client's default (HTTP long-polling, then the upgrade to WebSocket); "websocket" skips polling.
// Prints one line per passed check and exits non-zero on the first failure.
import assert from "node:assert/strict";
import { io } from "socket.io-client";

const [url, mode] = process.argv.slice(2);
const options = mode === "websocket" ? { transports: ["websocket"] } : {};
const TIMEOUT = 5000;

function once(socket, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), TIMEOUT);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

function connect(nsp, extra = {}) {
  const socket = io(url + nsp, { ...options, forceNew: true, reconnection: false, ...extra });
  return socket;
}

async function check(name, fn) {
  await fn();
  console.log(`ok ${name}`);
}

const main = connect("/", { auth: { token: "abc", user: "node" } });
try {
  await check("connect with auth", async () => {
    await once(main, "connect");
    const auth = await main.timeout(TIMEOUT).emitWithAck("handshake");
    assert.deepEqual(auth, { token: "abc", user: "node" });
    assert.equal(typeof main.id, "string");
    assert.equal(main.connected, true);
  });

  await check("ack with one argument", async () => {
    const reply = await main.timeout(TIMEOUT).emitWithAck("echo", { a: [1, "b"] });
    assert.deepEqual(reply, { a: [1, "b"] });
  });

  await check("several arguments to typed parameters, ack with several", async () => {
    const replies = await new Promise((resolve, reject) => {
      main.timeout(TIMEOUT).emit("sum", 6, 7, (err, ...args) => (err ? reject(err) : resolve(args)));
    });
    assert.deepEqual(replies, [13, 42]);
  });

  await check("an error ack", async () => {
    const reply = await main.timeout(TIMEOUT).emitWithAck("refuse");
    assert.deepEqual(reply, { error: { code: "nope", message: "refused on purpose" } });
  });

  await check("binary both ways", async () => {
    const replies = await new Promise((resolve, reject) => {
      main.timeout(TIMEOUT).emit("upload", "f.bin", Buffer.from([1, 2, 3, 250]), (err, ...args) =>
        err ? reject(err) : resolve(args),
      );
    });
    assert.equal(replies[0], "f.bin");
    assert.equal(replies[1], 4);
    assert.ok(Buffer.isBuffer(replies[2]), "the third argument arrives as binary");
    assert.deepEqual([...replies[2]], [250, 3, 2, 1]);
  });

  await check("server calls the client, client acks with several arguments", async () => {
    main.on("question", (text, n, ack) => ack(text.toUpperCase(), n * 2));
    const reply = await main.timeout(TIMEOUT).emitWithAck("ask", "hi");
    assert.deepEqual(reply, ["HI", 4]);
  });

  await check("a namespace on the same connection", async () => {
    const admin = connect("/admin", { auth: { token: "admin" } });
    try {
      await once(admin, "connect");
      const reply = await admin.timeout(TIMEOUT).emitWithAck("whoami");
      assert.equal(reply, "admin");
    } finally {
      admin.disconnect();
    }
  });

  await check("a refused connect surfaces as connect_error", async () => {
    const refused = connect("/admin", { auth: { token: "wrong" } });
    const [err] = await once(refused, "connect_error");
    assert.equal(err.message, "admin only");
    assert.deepEqual(err.data, { code: "FORBIDDEN_NS", retryable: false });
    refused.close();
  });

  await check("an unknown namespace surfaces as connect_error", async () => {
    const unknown = connect("/nowhere");
    const [err] = await once(unknown, "connect_error");
    assert.ok(err.message.length > 0);
    unknown.close();
  });

  await check("room emits reach every member", async () => {
    const other = connect("/", { auth: { token: "abc", user: "other" } });
    try {
      await once(other, "connect");
      assert.deepEqual(await main.timeout(TIMEOUT).emitWithAck("join", "r1"), ["r1"]);
      assert.deepEqual(await other.timeout(TIMEOUT).emitWithAck("join", "r1"), ["r1"]);
      const got = once(other, "said");
      const mine = once(main, "said");
      await main.timeout(TIMEOUT).emitWithAck("say", "r1", "hello");
      const [said] = await got;
      assert.deepEqual(said, { text: "hello" });
      const [echoed] = await mine;
      assert.deepEqual(echoed, { text: "hello" });
    } finally {
      other.disconnect();
    }
  });

  if (mode !== "websocket") {
    await check("upgraded from polling to websocket", async () => {
      const deadline = Date.now() + TIMEOUT;
      while (main.io.engine.transport.name !== "websocket") {
        assert.ok(Date.now() < deadline, "no upgrade");
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(await main.timeout(TIMEOUT).emitWithAck("echo", "after upgrade"), "after upgrade");
    });
  }

  await check("the server disconnects the socket", async () => {
    const gone = once(main, "disconnect");
    main.emit("kick");
    const [reason] = await gone;
    assert.equal(reason, "io server disconnect");
  });
} finally {
  main.close();
}
console.log("done");
process.exit(0);
