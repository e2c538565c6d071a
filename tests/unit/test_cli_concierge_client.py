"""The CLI's concierge client refuses, before sending, what the concierge would refuse."""

from __future__ import annotations

import httpx
import pytest

from pinniped_apis import wire
from pinniped_cli.concierge_client import ConciergeClient
from pinniped_cli.errors import ConciergeError


def _never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"nothing should be sent, but {request.url} was")


@pytest.mark.parametrize(("token", "authenticator", "advice"), [
    ("eyJhbGciOiJSUzI1NiJ9." + "SECRETPAYLOAD" * 3000 + ".sig", "corp", "smaller"),
    ("eyJ.a.b", "", "--concierge-authenticator"),
    ("eyJ.a.b", "x" * (wire.MAX_NAME_LENGTH + 1), "--concierge-authenticator"),
])
def test_an_unsendable_login_says_who_can_fix_it(token: str, authenticator: str,
                                                 advice: str) -> None:
    with httpx.Client(transport=httpx.MockTransport(_never_called)) as http:
        client = ConciergeClient(http, "https://concierge.test", authenticator)
        with pytest.raises(ConciergeError) as caught:
            client.exchange(token)
    message = str(caught.value)
    assert advice in message
    assert "SECRETPAYLOAD" not in message
    assert ".sig" not in message
    assert caught.value.__cause__ is None  # no chained pydantic error quoting the token
