// Node socket.io 4 peer. Usage: node benchmarks/servers/node_socketio.js PORT [HOST]
// Needs `npm ci` in benchmarks/node first. Same events as socketio_server.py:
//   join(room) -> ack true; publish(data) -> io.to("bench").emit("msg", data), ack true; echo(data) -> ack data.
// Heartbeat: pingInterval BENCH_PING_INTERVAL seconds (default 25), pingTimeout BENCH_PING_TIMEOUT (default 20).
"use strict";
const path = require("path");
const { Server } = require(path.join(__dirname, "..", "node", "node_modules", "socket.io"));

const port = parseInt(process.argv[2] || "8000", 10);
const host = process.argv[3] || "127.0.0.1";
const sec = (name, dflt) => Math.round(parseFloat(process.env[name] || dflt) * 1000);

const io = new Server({
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  pingInterval: sec("BENCH_PING_INTERVAL", "25"),
  pingTimeout: sec("BENCH_PING_TIMEOUT", "20"),
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("join", (room, cb) => {
    socket.join(room);
    if (typeof cb === "function") cb(true);
  });
  socket.on("publish", (data, cb) => {
    io.to("bench").emit("msg", data);
    if (typeof cb === "function") cb(true);
  });
  socket.on("echo", (data, cb) => {
    if (typeof cb === "function") cb(data);
  });
});

const httpServer = require("http").createServer();
io.attach(httpServer);
httpServer.listen({ port, host, backlog: 2048 }, () => {});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
