"""Names and limits of the concierge's API, with nothing but the standard library imported.

The groups, kinds and paths follow Pinniped's `*.concierge.pinniped.dev`
APIs, so existing Pinniped tooling recognises them.
"""

from __future__ import annotations

from typing import Final

LOGIN_GROUP: Final = "login.concierge.pinniped.dev"
IDENTITY_GROUP: Final = "identity.concierge.pinniped.dev"
AUTHENTICATOR_GROUP: Final = "authentication.concierge.pinniped.dev"
VERSION: Final = "v1alpha1"
#: Spelled out, not built from the group: the models' Literal types need the literal text.
LOGIN_API_VERSION: Final = "login.concierge.pinniped.dev/v1alpha1"
IDENTITY_API_VERSION: Final = "identity.concierge.pinniped.dev/v1alpha1"
JWT_AUTHENTICATOR_KIND: Final = "JWTAuthenticator"

TOKEN_CREDENTIAL_REQUEST_KIND: Final = "TokenCredentialRequest"
TOKEN_CREDENTIAL_REQUEST_PATH = f"/apis/{LOGIN_GROUP}/{VERSION}/tokencredentialrequests"
WHOAMI_REQUEST_KIND: Final = "WhoAmIRequest"
WHOAMI_REQUEST_PATH = f"/apis/{IDENTITY_GROUP}/{VERSION}/whoamirequests"
LOGOUT_REQUEST_KIND: Final = "LogoutRequest"
LOGOUT_REQUEST_PATH = f"/apis/{LOGIN_GROUP}/{VERSION}/logoutrequests"

#: The one message a client ever sees for a failed login; reasons go to the audit log.
AUTHENTICATION_FAILED = "authentication failed"

#: Bounds on what a client may send. An ID token is a few KiB; anything near
#: these limits is an attack or a bug, and refusing it early keeps memory flat.
MAX_REQUEST_BYTES = 64 * 1024
MAX_TOKEN_BYTES = 32 * 1024
MAX_NAME_LENGTH = 253
#: A concierge's explanation of a refusal, as a client shows it.
MAX_MESSAGE_LENGTH = 1024
#: Groups one identity may carry; more is a misconfigured IdP, and every group
#: costs an impersonation check on every request the user makes.
MAX_GROUPS = 256

#: The cluster-scoped objects an administrator applies, and the one the concierge publishes.
CONFIG_GROUP: Final = "config.concierge.pinniped.dev"
JWT_AUTHENTICATOR_PLURAL: Final = "jwtauthenticators"
CREDENTIAL_ISSUER_KIND: Final = "CredentialIssuer"
CREDENTIAL_ISSUER_PLURAL: Final = "credentialissuers"
