// The HTML pages of the local IdP. Plain forms, no scripts and nothing fetched
// from elsewhere, so a person can use them in a real browser and the Python
// harness can walk them with httpx. Each page's <body> carries data-page=NAME
// so a driver knows where it is without guessing from the wording.

export function escapeHtml(value) {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(name, title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} - local test IdP</title>
<style>
body{font-family:sans-serif;max-width:26em;margin:3em auto;padding:0 1em}
label,input,button{display:block;width:100%;box-sizing:border-box;margin:.3em 0}
input{padding:.4em}button{padding:.5em;margin-top:1em}
.error{color:#b00020}.note{color:#555;font-size:.9em}
</style>
</head>
<body data-page="${escapeHtml(name)}">
<h1>${escapeHtml(title)}</h1>
${body}
<p class="note">Local test identity provider. Not for real accounts.</p>
</body>
</html>`;
}

function errorLine(message) {
  return message ? `<p class="error" id="error">${escapeHtml(message)}</p>` : '';
}

export function loginPage({ action, clientId, username = '', error = '' }) {
  return page('login', 'Sign in', `
<p>Sign in to continue to <strong>${escapeHtml(clientId)}</strong>.</p>
${errorLine(error)}
<form id="login" method="post" action="${escapeHtml(action)}" autocomplete="off">
<label for="username">Username</label>
<input id="username" name="username" type="text" value="${escapeHtml(username)}" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" required>
<button type="submit">Sign in</button>
</form>`);
}

// `form` is oidc-provider's own form (it carries the CSRF token); the buttons
// sit outside it and point at it by id.
export function deviceInputPage(form, error) {
  return page('device-input', 'Connect a device', `
${error ? errorLine(error) : '<p>Enter the code shown on your device.</p>'}
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
}

export function deviceConfirmPage(form, clientId, userCode) {
  return page('device-confirm', 'Confirm device', `
<p><strong>${escapeHtml(clientId)}</strong> asks to sign in. Check that your device shows this code:</p>
<p><code id="user-code">${escapeHtml(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
}

export function deviceSuccessPage(clientId) {
  return page('device-success', 'Device connected', `
<p>You are signed in on your device (<strong>${escapeHtml(clientId)}</strong>). You can close this page.</p>`);
}

export function errorPage(out) {
  const lines = Object.entries(out)
    .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: <span class="${escapeHtml(key)}">${escapeHtml(value)}</span></p>`)
    .join('\n');
  return page('error', 'Something went wrong', lines);
}

export function logoutPage(form, host) {
  return page('logout', 'Sign out', `
<p>Sign out of ${escapeHtml(host)}?</p>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
}

export function logoutDonePage() {
  return page('logout-done', 'Signed out', '<p>You are signed out.</p>');
}
