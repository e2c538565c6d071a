// The resource owner password grant (RFC 6749 4.3) for CI logins, which
// oidc-provider does not ship: client_id + username + password + scope in,
// access token, ID token and (with offline_access) refresh token out. It
// creates a Grant like a browser login would, so the built-in refresh_token
// grant works on what it returns.

import { errors } from 'oidc-provider';

const GRANT_TYPE = 'password';

export function registerPasswordGrant(provider, users, supportedScopes, log) {
  async function passwordGrant(ctx) {
    const { client, params } = ctx.oidc;
    if (!params.username || !params.password) {
      throw new errors.InvalidRequest('username and password are required');
    }
    const user = users.authenticate(params.username, params.password);
    if (!user) {
      log(`password grant refused: client=${client.clientId}`);
      // A custom error so the description reaches the client: InvalidGrant
      // would only say "grant request is invalid".
      throw new errors.CustomOIDCProviderError('invalid_grant', 'invalid username or password');
    }

    const requested = new Set((params.scope ?? 'openid').split(' ').filter(Boolean));
    if (!client.grantTypeAllowed('refresh_token')) requested.delete('offline_access');
    const scope = [...requested].filter((s) => supportedScopes.includes(s)).join(' ');

    const accountId = user.username;
    const account = users.account(accountId);
    const grant = new provider.Grant({ accountId, clientId: client.clientId });
    grant.addOIDCScope(scope);
    const grantId = await grant.save();
    ctx.oidc.entity('Grant', grant);
    ctx.oidc.entity('Account', account);

    const authTime = Math.floor(Date.now() / 1000);
    // What the authorization endpoint asks for when the client has
    // require_auth_time (server.mjs sets it for every client by default): the
    // ID token carries auth_time, and so does each one refreshed from this
    // grant, with this same time.
    const idTokenClaims = client.requireAuthTime ? { auth_time: { essential: true } } : {};
    const common = {
      accountId, client, grantId, gty: GRANT_TYPE, scope, expiresWithSession: false,
    };

    const at = new provider.AccessToken(common);
    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    let refreshToken;
    if (requested.has('offline_access')) {
      const rt = new provider.RefreshToken({
        ...common, authTime, rotations: 0, claims: { id_token: idTokenClaims },
      });
      ctx.oidc.entity('RefreshToken', rt);
      refreshToken = await rt.save();
    }

    let idToken;
    if (requested.has('openid')) {
      const claims = await account.claims('id_token', scope, {}, []);
      const token = new provider.IdToken({ ...claims, sub: accountId, auth_time: authTime }, { ctx });
      token.scope = grant.getOIDCScopeFiltered(requested);
      token.mask = idTokenClaims;
      idToken = await token.issue({ use: 'idtoken' });
    }

    log(`password grant: client=${client.clientId} user=${accountId} scope="${scope}"`);
    ctx.body = Object.fromEntries(Object.entries({
      access_token: accessToken,
      expires_in: at.expiration,
      token_type: at.tokenType,
      id_token: idToken,
      refresh_token: refreshToken,
      scope: at.scope,
    }).filter(([, value]) => value !== undefined));
  }

  provider.registerGrantType(GRANT_TYPE, passwordGrant, ['username', 'password', 'scope']);
}
