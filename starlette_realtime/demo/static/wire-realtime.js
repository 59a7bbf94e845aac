// The page's default wire: our own browser client, which the RealtimeRouter serves itself (docs/browser.md).
//
// A wire is what chat.js talks to, whichever client is under it (wire-socketio.js is the other one):
//   kind                        "realtime" | "socketio"
//   client                      the client library's own object, for the console (window.demo.client)
//   state, onState(fn)          "connecting" | "connected" | "reconnecting" | "offline" | "closed", and its changes
//   on(event, fn)               server events, plus "connect" ({recovered}) and "recovery_failed"
//   call(event, data)           the ACK's data; rejects with an Error that has the server's `code`
//   emit(event, data, {volatile})
//   connect(), drop()           open; close the socket as a network failure would
import { RealtimeClient } from "../realtime/client.js";

export function createWire({ namespace, auth, onError, reconnectionDelay, reconnectionDelayMax }) {
  const url = new URL("realtime", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const options = { namespaces: [namespace], auth, onError, reconnectionDelay, reconnectionDelayMax };
  const client = new RealtimeClient(url.href, options);
  return {
    kind: "realtime",
    client,
    get state() { return client.state; },
    onState: (listener) => client.onState(listener),
    on: (event, handler) => client.on(event, handler),
    call: (event, data) => client.call(event, data), // queued offline, resent until acknowledged
    emit: (event, data, options) => client.emit(event, data, options),
    connect: () => client.connect(),
    drop: () => client._ws?.close(4000, "dropped on purpose"),
  };
}
