// One subscription with the reference graphql-transport-ws client (graphql-ws over ws), as an
// outside program runs it. Prints what the client sees, one JSON object a line:
//   {"event": "connected"} {"event": "next", "payload": …} {"event": "error", "errors": […]}
//   {"event": "complete"} {"event": "closed", "code": 4403, "reason": "…"}
// Usage: node subscribe.mjs <ws url> <authorization> <query> [<variables as JSON>]
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, authorization, query, variables = "{}"] = process.argv.slice(2);
const print = (event) => process.stdout.write(JSON.stringify(event) + "\n");
setTimeout(() => {
  print({ event: "timeout" });
  process.exit(2);
}, 180_000).unref();

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  lazy: false,
  retryAttempts: 0,
  connectionParams: { Authorization: authorization },
  on: {
    connected: () => print({ event: "connected" }),
    closed: (event) => {
      print({ event: "closed", code: event.code, reason: event.reason });
      process.exit(0);
    },
  },
});

client.subscribe(
  { query, variables: JSON.parse(variables) },
  {
    next: (payload) => print({ event: "next", payload }),
    error: (errors) =>
      print({ event: "error", errors: Array.isArray(errors) ? errors : [{ message: String(errors?.message ?? errors) }] }),
    complete: () => {
      print({ event: "complete" });
      client.dispose();
    },
  },
);
