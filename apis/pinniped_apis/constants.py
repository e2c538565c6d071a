"""Names and limits of the concierge's API, with nothing but the standard library imported.

The groups, kinds and paths follow Pinniped's `*.concierge.pinniped.dev`
APIs, so existing Pinniped tooling recognises them.
"""

from __future__ import annotations

LOGIN_GROUP = "login.concierge.pinniped.dev"
IDENTITY_GROUP = "identity.concierge.pinniped.dev"
AUTHENTICATOR_GROUP = "authentication.concierge.pinniped.dev"
VERSION = "v1alpha1"
JWT_AUTHENTICATOR_KIND = "JWTAuthenticator"

TOKEN_CREDENTIAL_REQUEST_KIND = "TokenCredentialRequest"
TOKEN_CREDENTIAL_REQUEST_PATH = f"/apis/{LOGIN_GROUP}/{VERSION}/tokencredentialrequests"
WHOAMI_REQUEST_KIND = "WhoAmIRequest"
WHOAMI_REQUEST_PATH = f"/apis/{IDENTITY_GROUP}/{VERSION}/whoamirequests"
LOGOUT_REQUEST_KIND = "LogoutRequest"
LOGOUT_REQUEST_PATH = f"/apis/{LOGIN_GROUP}/{VERSION}/logoutrequests"

#: The one message a client ever sees for a failed login; reasons go to the audit log.
AUTHENTICATION_FAILED = "authentication failed"

#: Bounds on what a client may send. An ID token is a few KiB; anything near
#: these limits is an attack or a bug, and refusing it early keeps memory flat.
MAX_REQUEST_BYTES = 64 * 1024
MAX_TOKEN_BYTES = 32 * 1024
MAX_NAME_LENGTH = 253
