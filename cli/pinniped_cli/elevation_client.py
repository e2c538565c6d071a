"""The concierge's elevation API, as the `pinniped elevate` commands and the full path call it.

Five calls (create, list, approve, deny, revoke) and the state the plugin
checks, each with the caller's cluster credential as the bearer: the
concierge reviews it and takes the caller's identity from it, so nothing
sent here names a user. Every answer is validated with the models of
`pinniped_apis.elevation` before it is used. A refusal (a Kubernetes Status
with 400, 403, 404, 409 or 429) becomes an `ElevationRefused` carrying the
concierge's message and what to do next; no message ever quotes the token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pinniped_apis import wire
from pinniped_apis.constants import ELEVATION_REQUESTS_PATH, ELEVATION_STATE_PATH
from pinniped_apis.elevation import (
    ElevationCreate,
    ElevationDecision,
    ElevationList,
    ElevationView,
)
from pinniped_cli import elevation_check
from pinniped_cli.errors import ConciergeError
from pinniped_cli.httpclient import exchange
from pinniped_cli.redact import printable, status_message

if TYPE_CHECKING:
    import httpx

    from pinniped_apis.models import Tolerant

Model = TypeVar("Model", bound="Tolerant")

#: What to do next, by the HTTP status of a refusal.
NEXT_STEP = {
    400: "Check the group, --duration and --reason, then try again.",
    403: "Ask your cluster administrator whether an ElevationPolicy lets you do this.",
    404: "Run `pinniped elevate list` to see the requests you may see.",
    409: "Run `pinniped elevate list` to see where it stands.",
}


class ElevationRefused(ConciergeError):
    """The concierge refused an elevation call; the message says why and what to do next."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ElevationClient:
    def __init__(self, http: httpx.Client, endpoint: str) -> None:
        self._http = http
        self._endpoint = endpoint.rstrip("/")

    def create(self, credential: str, body: ElevationCreate) -> ElevationView:
        return self._call("POST", ELEVATION_REQUESTS_PATH, credential, body.to_wire(),
                          ElevationView, what="elevation request")

    def list(self, credential: str) -> ElevationList:
        return self._call("GET", ELEVATION_REQUESTS_PATH, credential, None, ElevationList,
                          what="list of elevation requests")

    def decide(self, credential: str, request_id: str, action: str,
               body: ElevationDecision | None) -> ElevationView:
        """approve, deny or revoke `request_id`."""
        return self._call("POST", f"{ELEVATION_REQUESTS_PATH}/{request_id}/{action}", credential,
                          None if body is None else body.to_wire(), ElevationView,
                          what=f"{action} request")

    def check(self, credential: str, elevated: tuple[str, ...]) -> str:
        """The plugin's check (`elevation_check.outcome`), bounded as on the cached path."""
        try:
            answer = exchange(self._http, "GET", self._endpoint + ELEVATION_STATE_PATH,
                              what=f"the concierge at {self._endpoint}",
                              ca_flag="--concierge-ca-bundle", fail=ConciergeError,
                              max_bytes=elevation_check.MAX_RESPONSE_BYTES,
                              deadline=elevation_check.DEADLINE_SECONDS,
                              headers={"Authorization": f"Bearer {credential}"})
        except ConciergeError:
            return elevation_check.UNREACHABLE
        return elevation_check.outcome(answer.status, answer.body, elevated)

    def _call(self, method: str, path: str, credential: str, payload: dict[str, Any] | None,
              model: type[Model], *, what: str) -> Model:
        request: dict[str, Any] = {"headers": {"Authorization": f"Bearer {credential}"}}
        if payload is not None:
            request["json"] = payload
        answer = exchange(self._http, method, self._endpoint + path,
                          what=f"the concierge at {self._endpoint}",
                          ca_flag="--concierge-ca-bundle", fail=ConciergeError, **request)
        body, status = answer.body, answer.status
        if status == 401:
            raise ConciergeError(f"the concierge refused the {what} ({_message(body)}): your "
                                 "cluster credential is no longer valid. Run `pinniped logout`, "
                                 "then try again to log in.")
        if status in NEXT_STEP or status == 429:
            if not wire.is_status_error(body):  # e.g. a concierge without this API
                raise ConciergeError(
                    f"the concierge at {self._endpoint} answered the {what} with HTTP "
                    f"{status} and no Kubernetes Status: it may not offer temporary elevated "
                    "access. Check --concierge-endpoint, or ask your cluster administrator "
                    "to upgrade the concierge.")
            raise ElevationRefused(f"{_message(body)}. {_next_step(status, answer.headers)}",
                                   status)
        if status >= 400 or not body:
            raise ConciergeError(f"the concierge answered the {what} with HTTP {status} "
                                 f"({_message(body)}); try again later, or ask your cluster "
                                 "administrator.")
        try:
            return model.from_wire(body)
        except wire.WireError as exc:
            raise ConciergeError(f"the concierge's answer to the {what} is malformed ({exc}); "
                                 "check --concierge-endpoint points at a pinniped "
                                 "concierge.") from exc


def _next_step(status: int, headers: Any) -> str:
    if status == 429:
        retry = printable(headers.get("Retry-After", "a few"), 20)
        return (f"Retry in {retry} seconds, or revoke one of your open requests first "
                "(`pinniped elevate list`, `pinniped elevate revoke ID`).")
    return NEXT_STEP[status]


def _message(body: dict[str, Any]) -> str:
    """The Status message, without its full stop (our next step follows it)."""
    return status_message(body, 500).rstrip(".")
