// The page on the official socket.io-client (`?wire=socketio`), over the Socket.IO wire that the RealtimeRouter
// also serves (docs/socketio.md): the same handlers, rooms and presence, so it chats with pages on our client.
// The interface is the one wire-realtime.js describes.
//
// The bundle is not ours: the demo serves the file its user gave (--socketio-client), and this module loads it as a
// script of the page's own origin, which the page's CSP allows.
const BUNDLE = "vendor/socket.io.min.js";
const CALL_TIMEOUT = 30000; // ms a call waits for its ACK, offline (buffered by socket.io-client) included

function loadBundle() {
  if (window.io) return Promise.resolve(window.io);
  return new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src: new URL(BUNDLE, document.baseURI).href });
    script.onload = () => (window.io ? resolve(window.io) : reject(new Error(`${BUNDLE} did not define io()`)));
    script.onerror = () => reject(new Error(`could not load ${BUNDLE}`));
    document.head.append(script);
  });
}

export async function createWire({ namespace, auth, onError, reconnectionDelay, reconnectionDelayMax }) {
  const io = await loadBundle();
  const socket = io(location.origin + namespace, {
    path: new URL("realtime/socket.io", document.baseURI).pathname, // the router's mount, then /socket.io
    autoConnect: false,
    reconnectionDelay,
    reconnectionDelayMax,
    // Asked before every CONNECT, as our client asks its provider: tokens expire, a restarted demo has a new key.
    auth: (send) => auth().then(send, (err) => {
      onError(err);
      send({}); // refused by the server, then retried like any refusal
    }),
  });
  let state = "closed";
  const listeners = new Set();
  const setState = (next, info = {}) => {
    state = next;
    for (const listener of listeners) listener(next, info);
  };
  // "connect" and "recovery_failed" are the page's names for what socket.io-client tells with `socket.recovered`.
  const own = { connect: new Set(), recovery_failed: new Set() };
  let hadSession = false;
  socket.on("connect", () => {
    const recovered = Boolean(socket.recovered);
    setState("connected");
    for (const handler of own.connect) handler({ recovered });
    if (hadSession && !recovered) for (const handler of own.recovery_failed) handler({});
    hadSession = true;
  });
  // While `socket.active`, socket.io-client reconnects by itself; otherwise the server refused or closed the session.
  socket.on("disconnect", (reason) => {
    if (socket.active) setState("offline");
    else setState("closed", { error: new Error(reason) });
  });
  socket.on("connect_error", (err) => {
    if (socket.active) {
      setState("offline"); // the transport failed: socket.io-client retries
    } else if (err.data?.retryable) {
      setState("offline"); // refused for now (a limit): try again, as our client does
      setTimeout(() => socket.connect(), reconnectionDelay);
    } else {
      setState("closed", { error: err });
    }
  });
  socket.io.on("reconnect_attempt", () => setState("reconnecting"));
  socket.io.on("reconnect_error", () => setState("offline"));

  return {
    kind: "socketio",
    client: socket,
    get state() { return state; },
    onState(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    on(event, handler) {
      // With recovery on, room events carry their stream offset as a last argument: the page needs the data only.
      if (own[event]) own[event].add(handler);
      else socket.on(event, (data) => handler(data));
    },
    // The server answers a failed handler with {"error": {code, message}} (Socket.IO has no error ACK).
    async call(event, data) {
      const reply = await socket.timeout(CALL_TIMEOUT).emitWithAck(event, data);
      const error = reply?.error;
      if (error) throw Object.assign(new Error(error.message || error.code), { code: error.code });
      return reply;
    },
    emit(event, data, { volatile = false } = {}) {
      (volatile ? socket.volatile : socket).emit(event, data);
    },
    connect() {
      if (socket.connected) return Promise.resolve();
      setState("connecting");
      socket.connect();
      return new Promise((resolve) => socket.once("connect", resolve));
    },
    drop: () => socket.io.engine?.close(),
  };
}
