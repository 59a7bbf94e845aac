// The same client with one deliberate type error: `room` must be a string. tsc --strict must reject it.
import { RealtimeClient } from "./client.js";
import type { TypedRealtimeClient } from "./types.js";

export async function wrong(url: string): Promise<void> {
  const client: TypedRealtimeClient<"/chat"> = new RealtimeClient(url, { namespaces: ["/chat"] });
  await client.emit("say", { room: 7, text: "hi" }); // DELIBERATE: number is not assignable to string
}
