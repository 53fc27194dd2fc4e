// A real OpenID provider (the `oidc-provider` npm package) for crates/trellis/tests/extauth_oidc.rs.
//
// One confidential client, the authorization code flow with PKCE, and oidc-provider's development
// interactions: HTML forms (login with any name and password, then consent) that the test drives
// with plain HTTP requests. Everything comes from the environment so the test picks the port:
//   PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI (all required)
// Prints "listening <issuer>" once it accepts connections.

import Provider from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('PORT'));
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: required('CLIENT_ID'),
    client_secret: required('CLIENT_SECRET'),
    redirect_uris: [required('REDIRECT_URI')],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  // Any login name is an account; its claims are derived from the name.
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.org`, email_verified: true };
      },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  // Fixed keys: these cookies only protect the provider's own test interactions.
  cookies: { keys: ['trellis-test-provider-cookie-key'] },
});

// Tell the test when the provider stops for an unexpected reason.
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
