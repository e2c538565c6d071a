"""The device login (RFC 8628): for machines without a browser.

The person opens the verification URL on any device and enters the code;
meanwhile we poll the token endpoint at the interval the IdP asked for,
slowing down by 5 s whenever it says `slow_down` (RFC 8628 3.5), and never
sleeping past --login-timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from pinniped_cli.errors import LoginError
from pinniped_cli.oidc.provider import OAuthError, Provider, TokenResponse
from pinniped_cli.redact import printable

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0


def login(provider: Provider, *, scopes: tuple[str, ...], timeout: float,
          say: Callable[[str], None], sleep: Callable[[float], None],
          clock: Callable[[], float]) -> TokenResponse:
    endpoint = provider.metadata.device_authorization_endpoint
    if endpoint is None:
        raise LoginError("the identity provider does not offer the device flow; use "
                         "--flow browser (on a machine with a browser) or --flow password.")
    started = provider.post_form(endpoint, {"client_id": provider.client_id,
                                            "scope": " ".join(scopes)}, "device authorization")
    device_code = started.get("device_code")
    user_code = started.get("user_code")
    uri = started.get("verification_uri")
    if not (isinstance(device_code, str) and isinstance(user_code, str)
            and isinstance(uri, str) and urlsplit(uri).scheme == "https"
            and _shows_cleanly(user_code) and _shows_cleanly(uri)):
        raise LoginError("the identity provider's device authorization answer is incomplete; "
                         "ask its administrator, or use --flow browser.")
    complete = started.get("verification_uri_complete")
    interval = _number(started.get("interval"), DEFAULT_INTERVAL)
    expires_in = _number(started.get("expires_in"), timeout)
    deadline = clock() + min(timeout, expires_in)
    lines = [f"To log in, open {uri} on any device and enter the code: {user_code}"]
    if isinstance(complete, str) and urlsplit(complete).scheme == "https" \
            and _shows_cleanly(complete):
        lines.append(f"(or open {complete} directly)")
    lines.append(f"Waiting up to {min(timeout, expires_in):g}s for you to finish...")
    say("\n".join(lines))
    while (left := deadline - clock()) > 0:
        # Never past the deadline: the last poll comes at it, not an interval after.
        sleep(min(interval, left))
        try:
            return provider.token_request({"grant_type": GRANT_TYPE, "device_code": device_code},
                                          "device login")
        except OAuthError as exc:
            if exc.error == "authorization_pending":
                pass
            elif exc.error == "slow_down":
                interval += SLOW_DOWN_STEP
            elif exc.error == "access_denied":
                raise LoginError("the device login was denied at the identity provider. "
                                 "Run the command again to start over.") from exc
            elif exc.error == "expired_token":
                raise LoginError("the device code expired before the login finished. "
                                 "Run the command again for a new code.") from exc
            else:
                raise
    raise LoginError(f"the device login did not finish within {min(timeout, expires_in):g}s. "
                     "Run the command again for a new code.")


def _shows_cleanly(text: str) -> bool:
    """Printed for the person as is, so no control characters and a sane length."""
    return printable(text, 2048) == text


def _number(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default
