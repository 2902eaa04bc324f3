// The GraphQL-over-HTTP audit of graphql-http (auditServer) against one server, with a bearer token.
// Usage: node audit.mjs URL  (the token in the environment: PACSFED_TOKEN)
// Prints one JSON object: {"counts": {status: n}, "failures": [{id, name, status, reason}]}.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const token = process.env.PACSFED_TOKEN;
if (!url || !token) {
  console.error('usage: PACSFED_TOKEN=... node audit.mjs URL');
  process.exit(2);
}

// Every request carries the token, as a real client of a production server would.
function fetchFn(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

const results = await auditServer({ url, fetchFn });
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
const failures = [];
for (const result of results) {
  counts[result.status] += 1;
  if (result.status !== 'ok') {
    failures.push({ id: result.id, name: result.name, status: result.status, reason: result.reason });
  }
}
console.log(JSON.stringify({ counts, failures }, null, 2));
