// The physician's page signs in: OpenID Connect authorization code flow with PKCE (S256).
//
// window.pacsfedAuth = {ready, required(), token(), signIn(), signOut(), user(), renew(), error()}
// - Configuration from GET /page/config.json: {mode: "oidc", issuer, client_id, scope} | {mode: "none"}
//   (--insecure-dev) | {mode: "demo", token} (pacsfed demo: signed in, no form) | {mode: "unavailable"}.
//   Endpoints from the issuer's discovery document (OIDC Discovery 1.0, 4).
// - The redirect URI is the page itself: the root this module is served under ("/", or "/pacsfed/"
//   behind a proxy when server.public_url has a path), found from import.meta.url like the
//   configuration's URL, so the answer lands on the page. Tokens live in this module's memory only; the PKCE
//   verifier, state and nonce sit in sessionStorage only between signIn() and the redirect back, and
//   the code and state are removed from the address bar (history.replaceState) once read.
// - Renewal before expiry, on a timer (a quarter of the token's lifetime before it ends, at most a
//   minute before) and whenever token() finds it due: the refresh_token grant when the provider gave
//   one (kept in memory; a rotated one replaces it), else a silent re-authorization (prompt=none) in
//   a hidden iframe on the same redirect URI. A failed renewal is tried again before expiry.
// - Changes are announced on window as the event "pacsfedauth" (detail: {signedIn, user, error}).

// This module is served at <page root>page/assets/auth.js: the page and its configuration are found from it.
const PAGE_ROOT = new URL("../../", import.meta.url).href;
const CONFIG_URL = new URL("page/config.json", PAGE_ROOT).href;
const PENDING_KEY = "pacsfed.auth.pending";
const RENEW_BEFORE_S = 60; // at most; a short-lived token is renewed a quarter of its lifetime early
const RETRY_MS = 5000;
const SILENT_TIMEOUT_MS = 10000;

let session = null; // {accessToken, refreshToken, idToken, expiresAt, renewAt (ms), claims}
let renewTimer = null;
let renewing = null;
let lastError = null;

const redirectUri = () => PAGE_ROOT;

function b64url(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString() {
  return b64url(crypto.getRandomValues(new Uint8Array(32)));
}

async function challengeOf(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return b64url(new Uint8Array(digest));
}

function decodeJwtPayload(jwt) {
  const part = String(jwt).split(".")[1];
  if (!part) throw new Error("the ID token is not a JWT");
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

async function fetchJson(url, init) {
  const response = await fetch(url, { credentials: "omit", cache: "no-store", ...init });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error_description || body.error || `HTTP ${response.status}`);
    error.code = body.error || "http_error";
    throw error;
  }
  return body;
}

const config = fetchJson(CONFIG_URL, { credentials: "same-origin" });
let discovery = null;

async function provider() {
  const cfg = await config;
  if (cfg.mode !== "oidc") throw new Error(`sign-in is not available (mode ${cfg.mode})`);
  if (!discovery) {
    const issuer = cfg.issuer.replace(/\/+$/, "");
    discovery = fetchJson(`${issuer}/.well-known/openid-configuration`).then((doc) => {
      if (doc.issuer !== cfg.issuer) throw new Error("the provider's discovery names another issuer");
      const methods = doc.code_challenge_methods_supported;
      if (Array.isArray(methods) && !methods.includes("S256")) throw new Error("the provider lacks PKCE S256");
      return doc;
    });
    discovery.catch(() => {
      discovery = null; // try again next time
    });
  }
  return { cfg, doc: await discovery };
}

function announce() {
  window.dispatchEvent(
    new CustomEvent("pacsfedauth", {
      detail: { signedIn: session !== null, user: session ? session.claims : null, error: lastError },
    }),
  );
}

function schedule(at) {
  clearTimeout(renewTimer);
  if (!session) return;
  renewTimer = setTimeout(() => {
    renew().catch(() => {});
  }, Math.max(0, at - Date.now()));
}

async function accept(tokens, nonce) {
  const { cfg, doc } = await provider();
  if (!tokens.access_token) throw new Error("the provider returned no access token");
  let claims = session ? session.claims : null;
  let idToken = session ? session.idToken : null;
  if (tokens.id_token) {
    // Straight from the token endpoint over TLS (OIDC Core 3.1.3.7): the claims are checked, not the signature.
    const idClaims = decodeJwtPayload(tokens.id_token);
    const audiences = Array.isArray(idClaims.aud) ? idClaims.aud : [idClaims.aud];
    if (idClaims.iss !== doc.issuer || !audiences.includes(cfg.client_id)) {
      throw new Error("the ID token is for another issuer or client");
    }
    if (nonce !== undefined && idClaims.nonce !== nonce) throw new Error("the ID token's nonce does not match");
    if (claims && idClaims.sub !== claims.sub) throw new Error("renewal returned another user");
    claims = idClaims;
    idToken = tokens.id_token;
  }
  if (!claims) throw new Error("the provider returned no ID token");
  const lifetime = (Number(tokens.expires_in) > 0 ? Number(tokens.expires_in) : 300) * 1000;
  const expiresAt = Date.now() + lifetime;
  session = {
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token || (session ? session.refreshToken : null),
    idToken,
    expiresAt,
    renewAt: expiresAt - Math.min(RENEW_BEFORE_S * 1000, lifetime / 4),
    claims,
  };
  lastError = null;
  schedule(session.renewAt);
  announce();
}

async function exchange(params, pending) {
  const { cfg, doc } = await provider();
  if (params.get("state") !== pending.state) throw new Error("the sign-in answer's state does not match");
  if (params.has("error")) {
    const error = new Error(params.get("error_description") || params.get("error"));
    error.code = params.get("error");
    throw error;
  }
  const tokens = await fetchJson(doc.token_endpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code") || "",
      redirect_uri: redirectUri(),
      client_id: cfg.client_id,
      code_verifier: pending.verifier,
    }),
  });
  await accept(tokens, pending.nonce);
}

async function authorizeUrl(extra) {
  const { cfg, doc } = await provider();
  const pending = { verifier: randomString(), state: randomString(), nonce: randomString() };
  const url = new URL(doc.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: cfg.client_id,
    redirect_uri: redirectUri(),
    scope: cfg.scope,
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await challengeOf(pending.verifier),
    code_challenge_method: "S256",
    ...extra,
  }).toString();
  return { url: url.toString(), pending };
}

function silentReauthorize() {
  return new Promise((resolve, reject) => {
    authorizeUrl({ prompt: "none" }).then(({ url, pending }) => {
      const frame = document.createElement("iframe");
      frame.hidden = true;
      frame.title = "sign-in renewal";
      const done = (error, search) => {
        clearTimeout(timer);
        window.removeEventListener("message", onMessage);
        frame.remove();
        if (error) reject(error);
        else exchange(new URLSearchParams(search), pending).then(resolve, reject);
      };
      const onMessage = (event) => {
        if (event.origin !== window.location.origin || event.source !== frame.contentWindow) return;
        if (!event.data || typeof event.data.pacsfedAuthCallback !== "string") return;
        done(null, event.data.pacsfedAuthCallback);
      };
      const timer = setTimeout(() => done(new Error("silent renewal timed out")), SILENT_TIMEOUT_MS);
      window.addEventListener("message", onMessage);
      frame.src = url;
      document.body.appendChild(frame);
    }, reject);
  });
}

async function renew() {
  if (!session) return;
  if (!renewing) {
    renewing = (async () => {
      try {
        if (session.refreshToken) {
          const { cfg, doc } = await provider();
          const tokens = await fetchJson(doc.token_endpoint, {
            method: "POST",
            headers: { "content-type": "application/x-www-form-urlencoded" },
            body: new URLSearchParams({
              grant_type: "refresh_token",
              refresh_token: session.refreshToken,
              client_id: cfg.client_id,
            }),
          });
          await accept(tokens);
        } else {
          await silentReauthorize();
        }
      } catch (error) {
        lastError = error.message;
        if (session && session.expiresAt <= Date.now()) {
          session = null; // expired and not renewable: the page asks to sign in again
          announce();
        } else if (session) {
          schedule(Math.min(Date.now() + RETRY_MS, (Date.now() + session.expiresAt) / 2));
        }
      } finally {
        renewing = null;
      }
    })();
  }
  await renewing;
}

async function start() {
  const params = new URLSearchParams(window.location.search);
  const answer = params.has("state") && (params.has("code") || params.has("error"));
  if (answer && window.parent !== window) {
    // A silent renewal landed in its hidden iframe: hand the answer to the page, which holds the verifier.
    window.parent.postMessage({ pacsfedAuthCallback: window.location.search }, window.location.origin);
    return;
  }
  const cfg = await config;
  if (cfg.mode !== "oidc") return;
  const stored = sessionStorage.getItem(PENDING_KEY);
  if (!answer) return;
  // The code and state leave the address bar (and the history) before anything else happens.
  const received = new URLSearchParams(params);
  sessionStorage.removeItem(PENDING_KEY);
  for (const key of ["code", "state", "session_state", "iss", "error", "error_description"]) {
    params.delete(key);
  }
  const rest = params.toString();
  window.history.replaceState(null, "", `${window.location.pathname}${rest ? `?${rest}` : ""}`);
  if (!stored) return; // an answer this tab did not ask for
  await exchange(received, JSON.parse(stored));
}

const ready = start().catch((error) => {
  lastError = error.message;
  announce();
});

window.pacsfedAuth = {
  /** Resolves once the module has read its configuration and finished any sign-in answer. */
  ready,
  /** True when the page must sign in (auth mode jwt); false with --insecure-dev and in pacsfed demo. */
  async required() {
    const cfg = await config;
    return cfg.mode !== "none" && cfg.mode !== "demo";
  },
  /** A valid access token for the API, renewed first when close to expiry; null when not signed in. */
  async token() {
    await ready;
    const cfg = await config;
    if (cfg.mode === "demo") return cfg.token;
    if (!session) return null;
    if (Date.now() >= session.renewAt) await renew();
    return session && session.expiresAt > Date.now() ? session.accessToken : null;
  },
  /** Renews the tokens now (the refresh token, else a silent re-authorization); normally on a timer. */
  async renew() {
    await ready;
    await renew();
  },
  /** Leaves for the provider's sign-in; the page is loaded again (its root, under any path) once signed in. */
  async signIn() {
    const { url, pending } = await authorizeUrl({});
    sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
    window.location.assign(url);
  },
  /** Forgets the tokens and ends the provider's session (end_session_endpoint) when it has one. */
  async signOut() {
    const idToken = session ? session.idToken : null;
    session = null;
    clearTimeout(renewTimer);
    announce();
    const { cfg, doc } = await provider();
    if (!doc.end_session_endpoint) return;
    const url = new URL(doc.end_session_endpoint);
    const query = { client_id: cfg.client_id, post_logout_redirect_uri: redirectUri() };
    if (idToken) query.id_token_hint = idToken;
    url.search = new URLSearchParams(query).toString();
    window.location.assign(url.toString());
  },
  /** The signed-in user's ID token claims (sub, name, …), or null. */
  async user() {
    await ready;
    const cfg = await config;
    if (cfg.mode === "demo") return { ...decodeJwtPayload(cfg.token) };
    return session ? { ...session.claims } : null;
  },
  /** The last sign-in or renewal error's message, or null. */
  error() {
    return lastError;
  },
};

export default window.pacsfedAuth;
