// A real OpenID Connect authorization server (oidc-provider) for the OAuth tests; started by tests/oauth_server.py.
//
// Usage: node provider.mjs <port> <resource URL>
// - Access tokens for <resource URL> are JWTs (RFC 9068) with aud = the resource and the scopes granted.
// - Clients: "openmemory-page" (the memory browser, public, PKCE) with redirect <resource>/auth/oauth/callback;
//   "test-agent" (public, PKCE, redirect http://127.0.0.1/callback); dynamic registration is on (MCP clients use it).
// - "openmemory-server" (secret introspection-secret-123) may call the introspection endpoint; tokens for the
//   resource <resource>/introspected are opaque (the introspection tests use them).
// - Dev interactions: any login name is accepted (it becomes `sub`), consent by form POST.
// - POST /test/mint {claims, key?: "other"}: signs arbitrary claims with the provider's own key (or an unknown one)
//   so the tests can present expired / wrong-issuer / wrong-audience tokens that only the claim checks refuse.
// Prints "listening <issuer>" on stdout when ready.
import { generateKeyPair, exportJWK, SignJWT } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const resource = process.argv[3];
const issuer = `http://127.0.0.1:${port}`;
const SCOPES = 'memories:read memories:write';

async function signingKey(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

const key = await signingKey('test-key-1');
const otherKey = await signingKey('unknown-key');

const provider = new Provider(issuer, {
  jwks: { keys: [key] },
  cookies: { keys: ['openmemory-test-cookie-key'] },
  scopes: ['openid', 'offline_access', 'memories:read', 'memories:write'],
  clients: [
    {
      client_id: 'openmemory-page',
      token_endpoint_auth_method: 'none',
      redirect_uris: [`${resource.replace(/\/$/, '')}/auth/oauth/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
    {
      client_id: 'test-agent',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
    {
      client_id: 'openmemory-server', // the resource server itself, for RFC 7662 introspection
      client_secret: 'introspection-secret-123',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, indicator) => ({
        scope: SCOPES,
        audience: indicator,
        accessTokenTTL: 600,
        // <resource>/introspected gets opaque tokens: the introspection tests use them (JWTs are not introspectable)
        accessTokenFormat: indicator.endsWith('/introspected') ? 'opaque' : 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  pkce: { required: () => true },
  ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 600, Interaction: 600, Session: 600 },
});
provider.proxy = false;

provider.use(async (ctx, next) => {
  if (ctx.path === '/test/mint' && ctx.method === 'POST') {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const use = body.key === 'other' ? otherKey : key;
    const privateKey = await (await import('jose')).importJWK(use, 'RS256');
    const token = await new SignJWT(body.claims)
      .setProtectedHeader({ alg: 'RS256', kid: use.kid, typ: 'at+jwt' })
      .sign(privateKey);
    ctx.type = 'json';
    ctx.body = { token };
    return;
  }
  await next();
});

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
