// A local OAuth 2.0 token endpoint for the drives' tests: oauth2-mock-server, which hands
// out a new (rotated) refresh token with every access token, and refuses any refresh token
// that starts with "revoked" the way Microsoft's does when consent was withdrawn.
//   node scripts/oauth-token-endpoint.mjs PORT /path/to/oauth2-mock-server/dist/index.mjs
const [port, modulePath] = process.argv.slice(2);
const { OAuth2Server } = await import(modulePath);
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeResponse', (response, request) => {
  const body = request.body ?? {};
  if (body.grant_type === 'refresh_token' && String(body.refresh_token ?? '').startsWith('revoked')) {
    response.statusCode = 400;
    response.body = {
      error: 'invalid_grant',
      error_description: 'AADSTS50173: The provided grant has expired due to it being revoked.',
    };
  }
});
await server.start(Number(port), '127.0.0.1');
console.log(`token endpoint ready on ${server.issuer.url}/token`);
