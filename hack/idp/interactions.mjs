// Our own interaction endpoints (instead of oidc-provider's devInteractions):
// a username/password form checked against the users file, and consent that
// is granted automatically for whatever the client asked. Both the browser
// (authorization code) flow and the device flow land here.

import { loginPage, errorPage } from './pages.mjs';

const ROUTE = /^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/;
const MAX_FORM_BYTES = 16 * 1024;

async function readForm(req) {
  const type = req.headers['content-type'] ?? '';
  if (!type.startsWith('application/x-www-form-urlencoded')) {
    const err = new Error('expected an application/x-www-form-urlencoded form');
    err.status = 415;
    throw err;
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) {
      const err = new Error('form too large');
      err.status = 413;
      throw err;
    }
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Grants exactly what the consent prompt found missing (scopes, claims,
// resource scopes), keeping anything granted before.
async function grantConsent(provider, details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

function redirect(ctx, location) {
  ctx.status = 303;
  ctx.redirect(location);
}

export function interactionRoutes(provider, users, log) {
  return async function interactions(ctx, next) {
    const match = ROUTE.exec(ctx.path);
    if (!match) return next();
    const [, uid, login] = match;
    ctx.set('Cache-Control', 'no-store');
    try {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      if (details.uid !== uid) throw Object.assign(new Error('interaction does not match this browser session; start the login again'), { status: 400 });
      const { prompt, params } = details;
      const action = `/interaction/${uid}/login`;

      if (ctx.method === 'GET' && !login) {
        if (prompt.name === 'login') {
          ctx.type = 'html';
          ctx.body = loginPage({ action, clientId: params.client_id });
          return undefined;
        }
        if (prompt.name === 'consent') {
          const grantId = await grantConsent(provider, details);
          const consent = details.grantId ? {} : { grantId };
          log(`consent granted automatically: client=${params.client_id} user=${details.session.accountId}`);
          redirect(ctx, await provider.interactionResult(ctx.req, ctx.res, { consent }, { mergeWithLastSubmission: true }));
          return undefined;
        }
        throw Object.assign(new Error(`unsupported prompt ${prompt.name}`), { status: 400 });
      }

      if (ctx.method === 'POST' && login) {
        if (prompt.name !== 'login') throw Object.assign(new Error('this login is already done; start again'), { status: 400 });
        const form = await readForm(ctx.req);
        const username = form.get('username') ?? '';
        const user = users.authenticate(username, form.get('password'));
        if (!user) {
          // A mistyped username can be a password, so only known names are logged.
          const who = users.find(username) ? username : '(unknown user)';
          log(`login failed: client=${params.client_id} user=${who}`);
          ctx.status = 401;
          ctx.type = 'html';
          ctx.body = loginPage({ action, clientId: params.client_id, username, error: 'Wrong username or password.' });
          return undefined;
        }
        log(`login succeeded: client=${params.client_id} user=${user.username}`);
        const result = { login: { accountId: user.username, amr: ['pwd'] } };
        redirect(ctx, await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false }));
        return undefined;
      }

      ctx.status = 405;
      ctx.type = 'html';
      ctx.body = errorPage({ error: 'method_not_allowed', error_description: `${ctx.method} is not allowed here` });
      return undefined;
    } catch (err) {
      ctx.status = err.status ?? err.statusCode ?? 500;
      ctx.type = 'html';
      ctx.body = errorPage({ error: err.error ?? 'interaction_failed', error_description: err.error_description ?? err.message });
      if (ctx.status >= 500) console.error(err);
      return undefined;
    }
  };
}
