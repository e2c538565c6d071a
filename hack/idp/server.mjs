// The local test/demo OpenID Connect provider: oidc-provider with static
// clients, users from a JSON file, our own login pages, the device flow and a
// password grant for CI. HTTPS only, on 127.0.0.1.
//
//   node server.mjs CONFIG.json
//
// CONFIG.json is written by hack/localenv/idp.py (see there for the fields).
// Keys are fixed for the life of the process: to rotate, restart with the new
// key first in jwks.keys and the old one still listed (it stays published).

import { readFileSync } from 'node:fs';
import https from 'node:https';

import Provider from 'oidc-provider';

import { interactionRoutes } from './interactions.mjs';
import * as pages from './pages.mjs';
import { registerPasswordGrant } from './password_grant.mjs';
import { UserStore } from './users.mjs';

const SCOPES = ['openid', 'offline_access', 'email', 'groups', 'profile'];
const CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  groups: ['groups'],
  profile: ['preferred_username'],
};

function log(message) {
  console.log(`${new Date().toISOString()} idp: ${message}`);
}

function fail(message) {
  console.error(`idp: ${message}`);
  process.exit(2);
}

function loadConfig(path) {
  if (!path) fail('usage: node server.mjs CONFIG.json');
  let config;
  try {
    config = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    fail(`cannot read config ${path}: ${err.message}`);
  }
  const need = (cond, what) => { if (!cond) fail(`${path}: ${what}`); };
  need(Number.isInteger(config.port) && config.port > 0, 'port must be a positive integer');
  need(typeof config.issuer === 'string' && config.issuer.startsWith('https://'), 'issuer must be an https URL');
  need(typeof config.tls?.cert === 'string' && typeof config.tls?.key === 'string', 'tls.cert and tls.key must be file paths');
  need(typeof config.usersFile === 'string', 'usersFile must be a file path');
  need(Array.isArray(config.clients) && config.clients.length > 0, 'clients must be a non-empty list');
  need(Array.isArray(config.jwks?.keys) && config.jwks.keys.length > 0, 'jwks.keys must be a non-empty list of private JWKs');
  need(Array.isArray(config.cookieKeys) && config.cookieKeys.length > 0, 'cookieKeys must be a non-empty list');
  for (const name of ['idToken', 'accessToken', 'refreshToken', 'deviceCode']) {
    need(Number.isInteger(config.ttl?.[name]) && config.ttl[name] > 0, `ttl.${name} must be a positive integer (seconds)`);
  }
  need(Number.isInteger(config.deviceFlowInterval) && config.deviceFlowInterval > 0, 'deviceFlowInterval must be a positive integer (seconds)');
  return config;
}

// oidc-provider drops offline_access from a browser authorization request
// unless it also says prompt=consent (OIDC Core 11). Our login always ends in
// a consent step anyway (native clients always get one), so asking for it
// here lets a CLI get a refresh token just by asking for offline_access.
async function keepOfflineAccess(ctx, next) {
  if (ctx.method === 'GET' && ctx.path === '/auth') {
    const query = new URLSearchParams(ctx.querystring);
    const scopes = (query.get('scope') ?? '').split(' ');
    const prompts = (query.get('prompt') ?? '').split(' ').filter(Boolean);
    if (scopes.includes('offline_access') && !prompts.includes('consent') && !prompts.includes('none')) {
      query.set('prompt', [...prompts, 'consent'].join(' '));
      ctx.querystring = query.toString();
    }
  }
  return next();
}

// RFC 8628 clients wait `interval` seconds between polls (5 when absent);
// oidc-provider leaves it out, so tests would crawl without this.
function advertisePollingInterval(seconds) {
  return async function devicePollingInterval(ctx, next) {
    await next();
    if (ctx.method === 'POST' && ctx.path === '/device/auth' && ctx.status === 200
        && ctx.body && typeof ctx.body === 'object' && 'device_code' in ctx.body) {
      ctx.body.interval = seconds;
    }
  };
}

function buildProvider(config, users) {
  const provider = new Provider(config.issuer, {
    clients: config.clients,
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: 'RS256',
      // Every ID token says when the person last authenticated, refreshed ones
      // included (they keep the original time): the concierge's revoke-user
      // refuses tokens from before the revocation by it, so a refresh token
      // taken with a laptop cannot outlive one. A client may opt out with
      // require_auth_time: false (the concierge then falls back to iat).
      require_auth_time: true,
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    jwks: config.jwks,
    cookies: { keys: config.cookieKeys },
    findAccount: (_ctx, sub) => users.account(sub),
    scopes: SCOPES,
    claims: CLAIMS,
    // Put the scope claims (email, groups, preferred_username) in the ID
    // token itself, which is what the concierge validates.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { required: () => true },
    clientBasedCORS: () => false,
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: config.ttl.accessToken,
      AuthorizationCode: 60,
      DeviceCode: config.ttl.deviceCode,
      Grant: config.ttl.refreshToken,
      IdToken: config.ttl.idToken,
      Interaction: 600,
      RefreshToken: config.ttl.refreshToken,
      Session: config.ttl.refreshToken,
    },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        userCodeInputSource: async (ctx, form, _out, err) => {
          let message;
          if (err && (err.userCode || err.name === 'NoCodeError')) message = 'That code is not valid. Try again.';
          else if (err && err.name === 'AbortedError') message = 'The sign-in was aborted.';
          else if (err) message = 'Something went wrong. Try again.';
          ctx.type = 'html';
          ctx.body = pages.deviceInputPage(form, message);
        },
        userCodeConfirmSource: async (ctx, form, client, _deviceInfo, userCode) => {
          ctx.type = 'html';
          ctx.body = pages.deviceConfirmPage(form, client.clientId, userCode);
        },
        successSource: async (ctx) => {
          ctx.type = 'html';
          ctx.body = pages.deviceSuccessPage(ctx.oidc.client.clientId);
        },
      },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => { ctx.type = 'html'; ctx.body = pages.logoutPage(form, ctx.host); },
        postLogoutSuccessSource: async (ctx) => { ctx.type = 'html'; ctx.body = pages.logoutDonePage(); },
      },
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = pages.errorPage(out);
    },
  });

  provider.use(keepOfflineAccess);
  provider.use(advertisePollingInterval(config.deviceFlowInterval));
  provider.use(interactionRoutes(provider, users, log));
  registerPasswordGrant(provider, users, SCOPES, log);

  provider.on('server_error', (_ctx, err) => console.error('idp: server error', err));
  provider.on('grant.error', (_ctx, err) => log(`token request refused: ${err.error ?? err.name}: ${err.error_detail ?? err.error_description ?? err.message}`));
  return provider;
}

function main() {
  const config = loadConfig(process.argv[2]);
  const users = new UserStore(config.usersFile);
  const provider = buildProvider(config, users);
  const server = https.createServer({
    cert: readFileSync(config.tls.cert),
    key: readFileSync(config.tls.key),
  }, provider.callback());
  server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${config.port}: ${err.message}`));
  server.listen(config.port, '127.0.0.1', () => {
    const kids = config.jwks.keys.map((k) => `${k.alg ?? k.kty}:${k.kid ?? '?'}`).join(', ');
    log(`listening on ${config.issuer} (pid ${process.pid}); keys: ${kids}`);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      server.closeAllConnections();
      server.close(() => process.exit(0));
    });
  }
}

main();
