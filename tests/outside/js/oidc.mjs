// A real OpenID Connect provider (the certified `oidc-provider` package) for the page's sign-in test.
//
// node oidc.mjs PORT PAGE_ORIGIN [ACCESS_TOKEN_TTL_S]
// Two public clients, "pacsfed-page" (code flow, PKCE S256, refresh tokens) and "pacsfed-page-frame"
// (the same without refresh tokens: it renews by prompt=none in a hidden iframe), redirecting to
// PAGE_ORIGIN + "/"; its development login form takes any login and password. Access tokens are
// JWTs (RS256, JWKS at /jwks) for the audience "pacsfed" with a `scope` claim of pacsfed's scopes,
// valid ACCESS_TOKEN_TTL_S seconds (600 by default). Refresh tokens rotate at each use (a public client).
// Prints "ready ISSUER" once listening.

import { generateKeyPairSync } from "node:crypto";

import Provider from "oidc-provider";

const [port, pageOrigin, accessTtl = "600"] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = "urn:pacsfed";
const PACSFED_SCOPES = "history:read history:emergency share:create";

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: "oidc-test-1", alg: "RS256", use: "sig" };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  clients: [
    {
      client_id: "pacsfed-page",
      token_endpoint_auth_method: "none",
      application_type: "web",
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      redirect_uris: [`${pageOrigin}/`],
      post_logout_redirect_uris: [`${pageOrigin}/`],
    },
    {
      client_id: "pacsfed-page-frame",
      token_endpoint_auth_method: "none",
      application_type: "web",
      grant_types: ["authorization_code"],
      response_types: ["code"],
      redirect_uris: [`${pageOrigin}/`],
      post_logout_redirect_uris: [`${pageOrigin}/`],
    },
  ],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== RESOURCE) throw new Error(`unknown resource ${resource}`);
        return {
          scope: PACSFED_SCOPES,
          audience: "pacsfed",
          accessTokenTTL: Number(accessTtl),
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        };
      },
    },
  },
  // A first-party client: the physician is not asked to consent, so a silent re-authorization works too.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope("openid profile");
    grant.addResourceScope(RESOURCE, PACSFED_SCOPES);
    await grant.save();
    return grant;
  },
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed("refresh_token"),
  ttl: { IdToken: 600, RefreshToken: 3600, Session: 3600, Grant: 3600, Interaction: 600 },
});
provider.proxy = false;

provider.listen(Number(port), "127.0.0.1", () => {
  process.stdout.write(`ready ${issuer}\n`);
});
