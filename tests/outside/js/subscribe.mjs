// Subscribes once with graphql-ws (the reference graphql-transport-ws client) over ws, and prints
// {"events": [...]} or {"events": [...], "error": ...} as one JSON line when the subscription ends.
// Usage: node subscribe.mjs <ws url> <bearer token> <query> [variables as JSON]
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, query, variables] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
});
const events = [];

function describe(error) {
  if (Array.isArray(error)) return { graphql: error };
  if (error && typeof error.code === "number") return { close: error.code, reason: error.reason };
  return { message: String(error && error.message ? error.message : error) };
}

try {
  await new Promise((resolve, reject) => {
    client.subscribe(
      { query, variables: JSON.parse(variables || "{}") },
      { next: (value) => events.push(value), error: reject, complete: resolve },
    );
  });
  console.log(JSON.stringify({ events }));
} catch (error) {
  console.log(JSON.stringify({ events, error: describe(error) }));
  process.exitCode = 1;
} finally {
  await client.dispose();
}
