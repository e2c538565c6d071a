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

#: Temporary elevated access (`pinniped_apis.elevation`): policies an administrator applies
#: (cluster-scoped), and requests only the concierge creates and changes (in its namespace).
ELEVATION_GROUP: Final = "elevation.concierge.pinniped.dev"
ELEVATION_API_VERSION: Final = "elevation.concierge.pinniped.dev/v1alpha1"
ELEVATION_POLICY_KIND: Final = "ElevationPolicy"
ELEVATION_POLICY_PLURAL: Final = "elevationpolicies"
ELEVATION_REQUEST_KIND: Final = "ElevationRequest"
ELEVATION_REQUEST_PLURAL: Final = "elevationrequests"
#: POST: ask for a group; GET: the requests the caller made or may decide on.
ELEVATION_REQUESTS_PATH = f"/apis/{ELEVATION_GROUP}/{VERSION}/{ELEVATION_REQUEST_PLURAL}"
#: POST {ELEVATION_REQUESTS_PATH}/{id}/{action}, action one of these.
ELEVATION_ACTIONS: Final = ("approve", "deny", "revoke")
#: GET: the caller's own open requests (pending, or approved and not ended): the plugin's check.
ELEVATION_STATE_PATH = f"/apis/{ELEVATION_GROUP}/{VERSION}/elevationstate"
#: The id of a request is its object's name: this prefix and 16 hex digits.
ELEVATION_ID_PREFIX: Final = "elev-"
ELEVATION_ID_PATTERN: Final = r"^elev-[0-9a-f]{16}$"
#: Why someone asks, or why they deny or revoke: a sentence, not a document.
MAX_REASON_LENGTH = 512
#: An elevation lasts at least this long and at most a day (a policy may say less).
MIN_ELEVATION_SECONDS = 10
MAX_ELEVATION_SECONDS = 86_400
#: Users and groups named in one policy's requesters or approvers, each.
MAX_POLICY_SUBJECTS = 64
#: Distinct approvals a policy may require.
MAX_APPROVALS_REQUIRED = 10
