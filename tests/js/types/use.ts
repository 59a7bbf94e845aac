// Compiled with tsc --strict against client.d.ts by tests/test_client_types.py: the options and methods the
// browser client documents are declared.
import { AckTimeout, RealtimeAckError, RealtimeClient, type ConnectionState, type EventMeta } from "./client.js";

const client = new RealtimeClient("/realtime", {
  namespaces: ["/chat", "/admin"],
  auth: async () => "token",
  namespaceAuth: { "/admin": { key: "k" } },
  connectTimeout: 5000,
});
client.on("connect_error", ({ code, retryable }) => console.log(code, retryable));
client.on("said", (msg: { text: string }, meta: EventMeta) => console.log(meta.room, msg.text));
client.onState((state: ConnectionState, info) => console.log(state, info.queued));

export async function main(): Promise<void> {
  await client.connect();
  const accepted: boolean = await client.refreshAuth("/chat", { timeout: 2000 });
  const again: boolean = await client.refreshAuth();
  try {
    const paid = await client.call<{ paid: number }>("pay", 1);
    console.log(paid.paid, accepted, again);
  } catch (err) {
    if (err instanceof RealtimeAckError && err.code === "duplicate") console.log("handled, answer unknown");
    else if (err instanceof AckTimeout) console.log(err.timeout);
  }
  client.close();
}
