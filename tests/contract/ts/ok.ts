// A small client of tests/contract_app.py, typed by the generated types.d.ts; must compile with tsc --strict.
import { RealtimeClient } from "./client.js";
import type {
  AckErrorCode, ChatClientToServerEvents, ChatServerToClientEvents, CloseCode, Said, TypedRealtimeClient,
} from "./types.js";
import { io, type Socket } from "socket.io-client";

export async function browser(url: string): Promise<void> {
  const client: TypedRealtimeClient<"/chat"> = new RealtimeClient(url, {
    namespaces: ["/chat", "/"],
    auth: { "/chat": { token: "t" } },
  });
  const rooms: string[] = await client.call("join", "lobby");
  const nothing: null = await client.emit("say", { room: rooms[0] ?? "lobby", text: "hi" });
  const sent: boolean = await client.emit("say", { room: "lobby", text: "hi" }, { volatile: true });
  const page = await client.call("$presence.list", { room: "lobby" });
  const first: string | undefined = page.members[0]?.user;
  const pong: number = await client.call("ping", null, { namespace: "/" });
  client.on("said", (msg: Said, meta) => {
    const text: string = msg.text;
    console.log(text, meta.offset, nothing, sent, first, pong);
  });
  client.on("$presence", (p) => console.log(p.status === "online" ? p.user : p.seq));
  client.on("connect_error", (err) => console.log(err.code, err.retryable));
  const stop = client.on("$resync", (r) => console.log(r.room, r.epoch), { namespace: "/" });
  stop();
  const code: AckErrorCode = "invalid_payload";
  const mine: AckErrorCode = "my_own_code";
  const close: CloseCode = 4005;
  console.log(code, mine, close);
}

export async function socketio(url: string): Promise<void> {
  const socket: Socket<ChatServerToClientEvents, ChatClientToServerEvents> = io(url + "/chat");
  socket.on("said", (msg) => console.log(msg.user, msg.text));
  socket.emit("say", { room: "lobby", text: "hi" }, (ack) => console.log(ack));
  const rooms: string[] = await socket.emitWithAck("join", "lobby");
  console.log(rooms);
}
