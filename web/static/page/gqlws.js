// pacsfed's /graphql beside the page, under the same path (this module is <page root>page/assets/gqlws.js).
const GRAPHQL_URL = new URL("../../graphql", import.meta.url);

// A minimal GraphQL over WebSocket client (graphql-transport-ws): one subscription per socket.
export function subscribe(query, variables, token, { onNext, onError, onComplete }) {
  const url = (GRAPHQL_URL.protocol === "https:" ? "wss://" : "ws://") + GRAPHQL_URL.host + GRAPHQL_URL.pathname;
  const socket = new WebSocket(url, "graphql-transport-ws");
  let acknowledged = false;
  let finished = false;
  const finish = (callback, value) => {
    if (finished) return;
    finished = true;
    callback(value);
    if (socket.readyState <= WebSocket.OPEN) socket.close(1000, "done");
  };
  socket.onopen = () => {
    const payload = token ? { Authorization: "Bearer " + token } : {};
    socket.send(JSON.stringify({ type: "connection_init", payload }));
  };
  socket.onmessage = (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return finish(onError, { fatal: !acknowledged, message: "bad message" });
    }
    switch (message.type) {
      case "connection_ack":
        acknowledged = true;
        socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables } }));
        break;
      case "ping":
        socket.send(JSON.stringify({ type: "pong" }));
        break;
      case "next":
        if (message.payload.errors && !message.payload.data) {
          finish(onError, { fatal: false, errors: message.payload.errors });
        } else {
          onNext(message.payload.data);
        }
        break;
      case "error":
        finish(onError, { fatal: false, errors: message.payload });
        break;
      case "complete":
        finish(onComplete);
        break;
    }
  };
  socket.onerror = () => finish(onError, { fatal: !acknowledged, message: "socket error" });
  socket.onclose = (event) => {
    if (event.code === 4403) return finish(onError, { fatal: false, forbidden: true });
    finish(onError, { fatal: !acknowledged, message: "closed " + event.code });
  };
  return { close: () => finish(() => {}) };
}

// One GraphQL request over HTTP POST (the fallback, and for reports and sources).
export async function post(query, variables, token) {
  const headers = { "content-type": "application/json", accept: "application/json" };
  if (token) headers.authorization = "Bearer " + token;
  const response = await fetch(GRAPHQL_URL, {
    method: "POST", headers, body: JSON.stringify({ query, variables }), credentials: "omit",
  });
  const body = await response.json().catch(() => ({ errors: [{ message: "HTTP " + response.status }] }));
  return body;
}
