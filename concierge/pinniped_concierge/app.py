"""The concierge's HTTP API, built from services handed in (so tests can swap any of them).

    POST TOKEN_CREDENTIAL_REQUEST_PATH  ID token -> cluster credential (always 200 once
                                        parsed; failures carry only "authentication failed")
    POST WHOAMI_REQUEST_PATH            bearer cluster credential -> who the cluster sees
    POST LOGOUT_REQUEST_PATH            bearer cluster credential -> its session Secret deleted
    POST ELEVATION_REQUESTS_PATH        ask for a governed group (`elevation_service`), and
    GET  ELEVATION_REQUESTS_PATH        the caller's requests and those they may decide;
    POST .../{id}/approve|deny|revoke   decide one; GET ELEVATION_STATE_PATH: the caller's
                                        own pending and active ones (the plugin's check, on
                                        every kubectl call: one TokenReview and no other
                                        API call while the watches are up). All
                                        bearer-authenticated, served only
                                        when `Services.elevation` is set
    GET  /healthz                       the process is alive
    GET  /readyz                        the Kubernetes API answers, every file authenticator's
                                        keys are usable and the JWTAuthenticator objects have
                                        been listed (answers "ok" or "not ready"; what is
                                        missing goes to the log; re-checked at most every 5 s)
    GET  /metrics                       Prometheus metrics (`metrics`), unless `serve_metrics`
                                        is False (they are served on a port of their own)

Requests that cannot be answered get a Kubernetes `Status` object: 400 naming
the wrong field, 413 above `wire.MAX_REQUEST_BYTES`, 408 for a body not sent
within `requestBodyTimeoutSeconds` (a slow sender must not hold a worker),
415 for a body without a JSON Content-Type (application/json or
application/*+json; refused before it is read when the headers announce it),
429 with `Retry-After` for a client address over its `rateLimit` (checked
before the body is read; probes are never limited), 401 for a missing or
rejected bearer credential, 403/404/409 for an elevation the caller may not
ask for or decide (`errors.Refused`, its message saying what to do), 503
with `Retry-After` when Kubernetes or an issuer is unreachable, 500 when the
concierge itself is misconfigured. Every request to the APIs gets exactly one
audit line, refused ones included.

Every JSON answer is written with non-ASCII characters escaped: answers echo
what clients sent (the authenticator's name, an unknown field's name in a
400), and a Python string from a JSON document may hold an unpaired UTF-16
surrogate (`"\\udc80"`), which no UTF-8 encoder accepts; escaped, it is
valid JSON whatever it holds, so no client string can turn an answer into a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute

from pinniped_apis import models, validation, wire
from pinniped_apis.constants import ELEVATION_REQUESTS_PATH, ELEVATION_STATE_PATH
from pinniped_apis.elevation import (
    ElevationCreate,
    ElevationDecision,
    ElevationList,
    ElevationState,
    ElevationView,
)
from pinniped_apis.version import version
from pinniped_concierge.audit import AuditEvent, AuditLog, token_digest
from pinniped_concierge.credential_review import (
    CredentialReviewer,
    ReviewedAccount,
    ReviewedCredential,
)
from pinniped_concierge.elevation_service import ElevationService
from pinniped_concierge.errors import Reason, Refused, Rejected, ServerError, Unavailable
from pinniped_concierge.kubeapi import KubeAPI, counting_calls
from pinniped_concierge.login import LoginService
from pinniped_concierge.metrics import CONTENT_TYPE, ConciergeMetrics
from pinniped_concierge.ratelimit import RateLimiter
from pinniped_concierge.sessions import Sessions

log = logging.getLogger("concierge.app")

NO_STORE = {"Cache-Control": "no-store"}
#: Probes and load balancers may poll /readyz often; each check costs an API call.
READINESS_CACHE_SECONDS = 5.0


@dataclass
class Services:
    login: LoginService
    reviewer: CredentialReviewer
    sessions: Sessions
    kube: KubeAPI
    namespace: str
    audit: AuditLog
    #: A client must have sent its whole request body within this many seconds.
    body_timeout_seconds: float = 10.0
    #: /readyz re-checks its dependencies at most this often.
    readiness_cache_seconds: float = READINESS_CACHE_SECONDS
    #: Long-running loops (key refresh, session sweep) started with the server.
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    #: Called once when the server stops (close HTTP clients, the audit file).
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: More for /readyz: each returns what is missing, or None (e.g. the JWTAuthenticator
    #: objects not listed yet).
    readiness_checks: Sequence[Callable[[], Awaitable[str | None]]] = ()
    #: Counted in `_audited`; served at /metrics when `serve_metrics`.
    metrics: ConciergeMetrics = field(default_factory=ConciergeMetrics)
    serve_metrics: bool = True
    #: Temporary elevated access; None: its API is not served.
    elevation: ElevationService | None = None


class _BadRequest(Exception):
    def __init__(self, code: int, reason: str, message: str, field_path: str | None = None, *,
                 audit_reason: Reason = Reason.MALFORMED_REQUEST,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.field_path = field_path
        self.audit_reason = audit_reason
        self.headers = headers


def create_app(services: Services, *, rate_limiter: RateLimiter | None = None) -> FastAPI:
    """The app; `rate_limiter` (None: no limit) applies to the three APIs and /metrics, not
    to the probes."""
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(loop()) for loop in services.background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for closer in services.on_shutdown:
                with contextlib.suppress(Exception):
                    await closer()

    # The OpenAPI document is public: it says no more than this module's docstring,
    # and clients in other languages (and fuzzers) are generated from it.
    app = FastAPI(title="pinniped concierge", version=version(), lifespan=lifespan,
                  openapi_url="/openapi.json", docs_url=None, redoc_url=None,
                  separate_input_output_schemas=False)
    app.state.services = services
    app.state.rate_limiter = rate_limiter
    api = APIRouter(route_class=_AuditedRoute)

    @api.post(wire.TOKEN_CREDENTIAL_REQUEST_PATH, name="login",
              summary="Trade an ID token for a short-lived cluster credential",
              responses=_responses(models.TokenCredentialRequestResponse))
    async def token_credential_request(body: models.TokenCredentialRequest,
                                       request: Request) -> Response:
        return await _login(services, body, _event(request))

    @api.post(wire.WHOAMI_REQUEST_PATH, name="whoami",
              summary="Who the bearer cluster credential acts as, and until when",
              responses=_responses(models.WhoAmIRequestResponse, bearer=True))
    async def whoami(request: Request, body: models.WhoAmIRequest | None = None) -> Response:
        return await _whoami(services, request, _event(request))

    @api.post(wire.LOGOUT_REQUEST_PATH, name="logout",
              summary="End the session the bearer cluster credential belongs to",
              responses=_responses(models.LogoutRequestResponse, bearer=True))
    async def logout(request: Request, body: models.LogoutRequest | None = None) -> Response:
        return await _logout(services, request, _event(request))

    if services.elevation is not None:
        _elevation_routes(api, services, services.elevation)
    app.include_router(api)
    _publish_only_real_answers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    readiness = _Readiness(services)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if await readiness.ready():
            return PlainTextResponse("ok")
        return PlainTextResponse("not ready\n", status_code=503)

    if services.serve_metrics:
        # Public like /healthz: aggregate counts only, no username, token or client address.
        # Unlike the probes it costs a render, so it shares the address's rate limit: a
        # scraper comes every few seconds, a flood of it slowed everyone's logins.
        @app.get("/metrics", include_in_schema=False)
        async def metrics(request: Request) -> Response:
            retry_after = (rate_limiter.check(request.client.host if request.client else "")
                           if rate_limiter is not None else None)
            if retry_after is not None:
                services.metrics.rate_limited("metrics")
                return PlainTextResponse("too many requests\n", status_code=429,
                                         headers={"Retry-After": str(retry_after)})
            return Response(services.metrics.render(), media_type=CONTENT_TYPE,
                            headers=NO_STORE)

    return app


#: The refusals an elevation API may answer with, for the OpenAPI document.
_ELEVATION_REFUSALS = {
    403: "Not allowed: not a requester or approver of the group, or your own request",
    404: "No such request that the caller may see (or no such id)",
    409: "Already approved by the caller, already open, or already ended",
}


def _elevation_routes(api: APIRouter, services: Services, elevation: ElevationService) -> None:
    """The six elevation API routes; each reviews the bearer credential first."""
    def answers(model: type[models.Tolerant]) -> dict[int | str, Any]:
        return _responses(model, bearer=True, refusals=_ELEVATION_REFUSALS)

    async def as_caller(request: Request,
                        call: Callable[[wire.Identity, AuditEvent], Awaitable[models.Tolerant]]
                        ) -> Response:
        event = _event(request)
        reviewed = await _review_caller(services, request, event)
        if isinstance(reviewed, Response):
            return reviewed
        return _answer(event, await call(reviewed.identity, event))

    @api.post(ELEVATION_REQUESTS_PATH, name="elevation.create",
              summary="Ask for a group an ElevationPolicy governs, for a while",
              responses=answers(ElevationView))
    async def create(body: ElevationCreate, request: Request) -> Response:
        return await as_caller(request, lambda caller, event: elevation.create(
            caller, body, event))

    @api.get(ELEVATION_REQUESTS_PATH, name="elevation.list",
             summary="The caller's elevation requests and those they may decide, newest first",
             responses=answers(ElevationList))
    async def list_requests(request: Request) -> Response:
        return await as_caller(request, elevation.list)

    def decision(action: str, summary: str) -> None:
        @api.post(f"{ELEVATION_REQUESTS_PATH}/{{request_id}}/{action}",
                  name=f"elevation.{action}", summary=summary, responses=answers(ElevationView))
        async def decide(request_id: str, request: Request,
                         body: ElevationDecision | None = None) -> Response:
            return await as_caller(request, lambda caller, event: elevation.decide(
                caller, request_id, action, body, event))

    decision("approve", "Approve a pending request (never one's own)")
    decision("deny", "Deny a pending request (its approvers only)")
    decision("revoke", "End a pending or active elevation (its requester or an approver)")

    @api.get(ELEVATION_STATE_PATH, name="elevation.state",
             summary="The caller's own pending and active elevations (the plugin's check)",
             responses=answers(ElevationState))
    async def state(request: Request) -> Response:
        # The TokenReview only (no ServiceAccount or ClusterRole read): this runs on every
        # kubectl call of a user with an elevation open, and needs no more than whose it is.
        event = _event(request)
        account = await _review_caller(services, request, event, full=False)
        if isinstance(account, Response):
            return account
        return _answer(event, await elevation.state(account.service_account, event))


def _answer(event: AuditEvent, answer: models.Tolerant) -> Response:
    event.outcome, event.reason = "success", Reason.OK
    return _json(answer.to_wire())


#: The Status `reason` for each code a `Refused` carries.
_STATUS_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
                   429: "TooManyRequests"}


def _publish_only_real_answers(app: FastAPI) -> None:
    """Drop the 422 FastAPI documents for every route: validation errors here are 400s."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for operations in document["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                document["components"]["schemas"].pop(unused, None)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _responses(model: type[models.Tolerant], *, bearer: bool = False,
               refusals: dict[int, str] | None = None) -> dict[int | str, Any]:
    """The answers an API can give, for the OpenAPI document."""
    answers: dict[int | str, Any] = {
        200: {"model": model},
        400: {"model": models.Status, "description": "Malformed request; names the field"},
        408: {"model": models.Status, "description": "Body not sent in time"},
        413: {"model": models.Status, "description": "Body too large"},
        415: {"model": models.Status, "description": "Body not JSON"},
        429: {"model": models.Status,
              "description": "Too many requests from this address; see Retry-After"},
        503: {"model": models.Status, "description": "Kubernetes or an issuer unreachable"},
    }
    if bearer:
        answers[401] = {"model": models.Status, "description": "No valid cluster credential"}
    for code, description in (refusals or {}).items():
        answers[code] = {"model": models.Status, "description": description}
    return answers


class _BoundedRequest(Request):
    """A request whose JSON body was taken in within the size and time limits before FastAPI
    reads it, so that FastAPI's model validation never waits on, or buffers, more than that."""

    _raw: bytes = b""
    _parsed: Any = None

    async def read_within(self, timeout_seconds: float) -> None:
        self._raw = await _read_body(self, timeout_seconds)
        if self._raw:
            try:
                self._parsed = json.loads(self._raw)
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                raise _BadRequest(400, "BadRequest", "body: must be valid JSON", "body") from None

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed


class _AuditedRoute(APIRoute):
    """One of the three APIs: a bounded body, then FastAPI's validation with the models,
    then the endpoint; every failure becomes a Kubernetes Status, and every request gets
    exactly one audit line (named by the route's `name`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        validate_and_run = super().get_route_handler()
        kind = self.name

        async def handler(request: Request) -> Response:
            services: Services = request.app.state.services
            limiter: RateLimiter | None = request.app.state.rate_limiter
            bounded = _BoundedRequest(request.scope, request.receive)

            async def run(event: AuditEvent) -> Response:
                bounded.state.audit_event = event
                if limiter is not None:
                    _within_rate(limiter, request, kind, services.metrics)
                await bounded.read_within(services.body_timeout_seconds)
                try:
                    return await validate_and_run(bounded)
                except RequestValidationError as exc:
                    raise _invalid(exc) from None

            return await _audited(services.audit, services.metrics, request, kind, run)

        return handler


def _within_rate(limiter: RateLimiter, request: Request, kind: str,
                 metrics: ConciergeMetrics) -> None:
    """Take a token from the TCP peer's bucket, or refuse the request with 429."""
    retry_after = limiter.check(request.client.host if request.client else "")
    if retry_after is not None:
        metrics.rate_limited(kind)
        raise _BadRequest(429, "TooManyRequests", "too many requests from your address; "
                          f"retry after {retry_after} s (Retry-After)",
                          audit_reason=Reason.RATE_LIMITED,
                          headers={"Retry-After": str(retry_after)})


def _invalid(exc: RequestValidationError) -> _BadRequest:
    """FastAPI's validation error as a 400 naming the field, without quoting any input."""
    error = exc.errors()[0]
    loc = error["loc"][1:] if error["loc"][:1] == ("body",) else error["loc"]
    where = validation.field_path(loc)
    return _BadRequest(400, "BadRequest", f"{where}: {validation.problem(error)}", where)


def _event(request: Request) -> AuditEvent:
    event: AuditEvent = request.state.audit_event
    return event


async def _audited(audit: AuditLog, metrics: ConciergeMetrics, request: Request, kind: str,
                   handler: Callable[[AuditEvent], Awaitable[Response]]) -> Response:
    """Run one API request, translate every failure into a response, write one audit line
    and count it in the metrics."""
    started = time.perf_counter()
    client = request.client
    event = AuditEvent(request=kind, client=f"{client.host}:{client.port}" if client else "")
    with counting_calls() as calls:
        try:
            response = await handler(event)
        except _BadRequest as exc:
            event.outcome, event.reason = "error", exc.audit_reason
            event.extra["detail"] = exc.message
            response = _status(exc.code, exc.reason, exc.message, exc.field_path,
                               headers=exc.headers)
        except Refused as exc:
            event.outcome, event.reason = "failure", exc.reason
            event.extra["detail"] = exc.message
            response = _status(exc.code, _STATUS_REASONS.get(exc.code, "BadRequest"),
                               exc.message, headers=None if exc.retry_after is None
                               else {"Retry-After": str(exc.retry_after)})
        except Unavailable as exc:
            event.outcome, event.reason = "error", exc.reason
            response = _status(exc.http_status, "TooManyRequests" if exc.http_status == 429
                               else "ServiceUnavailable", exc.message,
                               headers={"Retry-After": str(exc.retry_after_seconds)})
        except ServerError as exc:
            event.outcome, event.reason = "error", exc.reason
            event.extra["detail"] = exc.detail
            log.error("%s request failed: %s: %s", kind, exc.reason, exc.detail)
            response = _status(500, "InternalError", "the concierge could not complete the "
                               "request; ask the cluster administrator to check its logs")
        except Exception as exc:  # never let a traceback (or its locals) reach the client
            event.outcome, event.reason = "error", Reason.INTERNAL_ERROR
            log.error("%s request failed: unexpected %s", kind, type(exc).__name__)
            response = _status(500, "InternalError", "the concierge hit an internal error; "
                               "ask the cluster administrator to check its logs")
    event.kube_api_calls = calls.value
    event.http_status = response.status_code
    audit.record(event)
    metrics.observe_request(event, time.perf_counter() - started)
    return response


async def _login(services: Services, tcr: models.TokenCredentialRequest,
                 event: AuditEvent) -> Response:
    event.token_hash = token_digest(tcr.token)
    event.authenticator = tcr.authenticator_name
    try:
        credential = await services.login.login(tcr, event)
    except Rejected as exc:
        event.outcome, event.reason = "failure", exc.reason
        event.extra["detail"] = exc.detail
        return _json(wire.failure_response(tcr, wire.AUTHENTICATION_FAILED))
    event.outcome, event.reason = "success", Reason.OK
    return _json(wire.credential_response(tcr, credential))


async def _whoami(services: Services, request: Request, event: AuditEvent) -> Response:
    reviewed = await _review_caller(services, request, event)
    if isinstance(reviewed, Response):
        return reviewed
    event.outcome, event.reason = "success", Reason.OK
    return _json(wire.whoami_response(reviewed.identity, reviewed.expiration))


async def _logout(services: Services, request: Request, event: AuditEvent) -> Response:
    reviewed = await _review_caller(services, request, event)
    if isinstance(reviewed, Response):
        return reviewed
    ended = False
    if reviewed.session_secret is not None:
        ended = await services.sessions.end(reviewed.session_secret,
                                            reviewed.session_secret_uid)
    event.outcome = "success"
    event.reason = Reason.OK if ended else Reason.ALREADY_LOGGED_OUT
    return _json(wire.logout_response(ended))


@overload
async def _review_caller(services: Services, request: Request,
                         event: AuditEvent) -> ReviewedCredential | Response: ...


@overload
async def _review_caller(services: Services, request: Request, event: AuditEvent, *,
                         full: Literal[False]) -> ReviewedAccount | Response: ...


async def _review_caller(services: Services, request: Request, event: AuditEvent, *,
                         full: bool = True) -> ReviewedAccount | Response:
    """Who sent this request, by the cluster's TokenReview (and, when `full`, their
    ServiceAccount and ClusterRole); a 401 response if nobody."""
    token = _bearer(request, event)
    try:
        reviewed = await (services.reviewer.review(token) if full
                          else services.reviewer.authenticate(token))
    except Rejected as exc:
        return _unauthorized(event, exc)
    if isinstance(reviewed, ReviewedCredential):
        event.username, event.groups = reviewed.identity.username, reviewed.identity.groups
    event.session = reviewed.session_id
    return reviewed


def _unauthorized(event: AuditEvent, exc: Rejected) -> Response:
    event.outcome, event.reason = "failure", exc.reason
    event.extra["detail"] = exc.detail
    return _status(401, "Unauthorized", wire.AUTHENTICATION_FAILED,
                   headers={"WWW-Authenticate": "Bearer"})


def _bearer(request: Request, event: AuditEvent) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise _BadRequest(401, "Unauthorized", "send your cluster credential as "
                          "'Authorization: Bearer <token>'", audit_reason=Reason.MISSING_CREDENTIAL)
    event.token_hash = token_digest(token)
    return token


async def _read_body(request: Request, timeout_seconds: float) -> bytes:
    """The request's body, at most MAX_REQUEST_BYTES of JSON within `timeout_seconds`;
    empty when there is none (or only white space)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > wire.MAX_REQUEST_BYTES):
        raise _too_large()
    announced = declared not in (None, "0") or "transfer-encoding" in request.headers
    if announced and not _is_json(request):  # refused before a byte of it is read
        raise _not_json()
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > wire.MAX_REQUEST_BYTES:
                    raise _too_large()
    except TimeoutError:
        # The rest of the body may still arrive: the connection cannot be reused.
        raise _BadRequest(408, "Timeout", f"body: not received within {timeout_seconds:g} s",
                          "body", audit_reason=Reason.REQUEST_TIMEOUT,
                          headers={"Connection": "close"}) from None
    if not body.strip():
        return b""
    if not _is_json(request):
        raise _not_json()
    return bytes(body)


def _is_json(request: Request) -> bool:
    """Content-Type application/json or application/*+json; a body without one is refused
    rather than guessed at."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json"))


def _not_json() -> _BadRequest:
    return _BadRequest(415, "UnsupportedMediaType", "body: send Content-Type: application/json",
                       "body")


def _too_large() -> _BadRequest:
    return _BadRequest(413, "RequestEntityTooLarge",
                       f"body: must be at most {wire.MAX_REQUEST_BYTES} bytes", "body",
                       audit_reason=Reason.REQUEST_TOO_LARGE)


class _Readiness:
    """/readyz's answer, computed at most every few seconds, its details logged not served.

    Details (which issuer, which API error) help an attacker map the
    deployment and belong in the operator's log, where each change is
    written once rather than at every probe.
    """

    def __init__(self, services: Services,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._services = services
        self._monotonic = monotonic
        self._checked_at: float | None = None
        self._problems: list[str] = []
        self._lock = asyncio.Lock()

    async def ready(self) -> bool:
        async with self._lock:  # concurrent probes share one check
            now = self._monotonic()
            if (self._checked_at is None
                    or now - self._checked_at >= self._services.readiness_cache_seconds):
                problems = await self._check()
                if problems != self._problems or self._checked_at is None:
                    if problems:
                        log.warning("not ready: %s", "; ".join(problems))
                    elif self._checked_at is not None:
                        log.info("ready again")
                self._problems, self._checked_at = problems, self._monotonic()
            return not self._problems

    async def _check(self) -> list[str]:
        services = self._services
        problems = []
        try:
            await services.kube.ping(services.namespace)
        except (Unavailable, ServerError) as exc:
            problems.append(f"kubernetes: {exc}")
        # The file's authenticators only: a JWTAuthenticator object that cannot be used says
        # so in its own status, and must not take the whole concierge out of service.
        for name, authenticator in services.login.authenticator_set.file.items():
            if not await authenticator.verifier.ready():
                problems.append(f"authenticator {name}: no usable signing keys (issuer "
                                "unreachable, or its keys not refreshed for maxKeyAgeSeconds)")
        for check in services.readiness_checks:
            problem = await check()
            if problem is not None:
                problems.append(problem)
        return problems


class _EscapedJSON(JSONResponse):
    """JSON with every non-ASCII character escaped, so that it encodes whatever it echoes
    (starlette's own writes UTF-8, and fails on an unpaired surrogate)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


def _json(body: dict[str, Any]) -> Response:
    return _EscapedJSON(body, headers=NO_STORE)


def _status(code: int, reason: str, message: str, field_path: str | None = None,
            headers: dict[str, str] | None = None) -> Response:
    return _EscapedJSON(wire.status_error(code, reason, message, field_path), status_code=code,
                        headers=NO_STORE | (headers or {}))
