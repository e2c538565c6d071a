"""Schemathesis against the running concierge's own /openapi.json, backed by the real apiserver.

Every operation of the published document gets generated requests, valid
ones and invalid ones (schemathesis' positive and negative modes), and a
share of them carries real material instead of random strings: a valid ID
token from a `MintingIssuer` and from the real IdP, an expired one, a forged
one, and a real cluster credential as the bearer of whoami and logout. What
must hold: no 5xx, the process never crashes (same PID, still ready), every
request is audited (so they really reached the API: the count is checked
against the audit log), and no token that was sent or returned ever appears
in the concierge's logs, plain, JSON-escaped or base64.

Bounded for CI: a fixed number of examples per operation and mode, no
shrinking, and a wall-clock budget past which generated cases are not sent.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from localenv import pki
from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.logins import login, tls
from pinniped_apis import wire

pytestmark = pytest.mark.integration

#: Examples per operation and generation mode (3 operations x 2 modes).
EXAMPLES = 100
#: Cases generated after this many seconds are not sent (the test stays within CI's budget).
BUDGET_SECONDS = 45


#: Strings a JSON client can send that generators rarely make: a lone UTF-16 surrogate (valid
#: JSON as an escape, unencodable as UTF-8), NUL and other controls, bidi overrides, a BOM,
#: non-characters, combining marks, and very long ones.
NASTY = ["\udc80", "a\ud800b", "\x00", "\x1b[31m", "\u202eevil", "\ufeff", "\uffff",
         "e\u0301" * 50, "x" * 70_000, "..%2f..%2f", "${jndi:ldap://x}", "\n\r\t", "🦭" * 300]


#: A secret counts as leaked if any WINDOW consecutive characters of it are in the logs: each
#: window of it at every STRIDE-th position is looked for, so any run of WINDOW + STRIDE - 1
#: of its characters is found (a token's tail, say, not only the whole token).
WINDOW, STRIDE = 24, 8


def _leaks(secret: str, logs: str, *, pieces: bool = True) -> bool:
    """`secret`, or with `pieces` any part of it (`WINDOW`), in the logs as it is,
    JSON-escaped, or base64 (standard or URL-safe)."""
    raw = secret.encode("utf-8", "surrogatepass")
    forms = {secret, json.dumps(secret)[1:-1], base64.b64encode(raw).decode(),
             base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    if pieces:
        forms |= {secret[i:i + WINDOW] for i in range(0, max(1, len(secret) - WINDOW + 1),
                                                       STRIDE)}
    return any(form in logs for form in forms if len(form) >= 16)


def _worth_looking_for(value: str) -> bool:
    """A generated string long and varied enough that finding it in a log is no accident."""
    return len(value) >= 24 and len(set(value)) >= 8


def test_schemathesis_on_the_published_api_finds_no_5xx_crash_or_leaked_token(
        tmp_path: Path, local_ca: pki.CA, idp: LocalIdP,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    with MintingIssuer.start(tmp_path / "issuer", local_ca) as issuer:
        concierge = concierge_factory(idp, extra_issuers=[issuer], maxSessionsPerUser=5)
        pid = concierge.pid
        valid = issuer.mint(email="fuzz@example.com")
        credential = login(concierge, valid, authenticator="minted")
        now = int(time.time())
        id_tokens = {
            "minted": [valid, issuer.mint({"exp": now - 3600, "iat": now - 7200}),
                       issuer.mint_hs256_with_public_key(), issuer.mint_unsigned(),
                       issuer.mint(key=issuer.impostor_key())],
            "corp": [idp.password_grant("alice")["id_token"]],
        }
        bearers = [credential.token, valid, "not-a-token", credential.token + "x"]
        sent_secrets = {credential.token, *(t for tokens in id_tokens.values() for t in tokens)}
        returned: set[str] = set()
        generated: set[str] = set()
        named: set[str] = set()  # every other string sent, which the audit log may name
        statuses: Counter[tuple[str, int]] = Counter()
        failures: list[str] = []
        audited_before = len(concierge.audit_lines())

        schema = schemathesis.openapi.from_url(f"{concierge.url}/openapi.json",
                                               verify=str(concierge.ca_file), timeout=10)
        operations = [schema[path]["POST"] for path in (wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                                                        wire.WHOAMI_REQUEST_PATH,
                                                        wire.LOGOUT_REQUEST_PATH)]
        stop_sending_at = time.monotonic() + BUDGET_SECONDS

        def send(case: Case[Any], *, plant: int, authenticator: str, token_pick: int,
                 bearer: str, leaf: int, nasty: str) -> None:
            if time.monotonic() > stop_sending_at:
                return
            is_login = case.operation.path == wire.TOKEN_CREDENTIAL_REQUEST_PATH
            if is_login and plant & 1:  # a whole, well-formed login with real material
                tokens = id_tokens[authenticator]
                case.body = _login_request(tokens[token_pick % len(tokens)], authenticator)
            if not is_login and plant & 2:
                case.headers["Authorization"] = f"Bearer {bearer}"
            _note_generated(case, generated, named)
            name = case.operation.path.rsplit("/", 1)[-1]
            if plant & 4 and isinstance(case.body, dict | list):
                # Sent by hand: schemathesis' own re-validation cannot encode a lone
                # surrogate. json.dumps escapes it, as any JSON client would.
                nasty_body = json.dumps(_with_nasty_leaf(case.body, leaf, nasty))
                answer = http.post(case.operation.path, content=nasty_body,
                                   headers={**case.headers, "Content-Type": "application/json"})
                statuses[(name, answer.status_code)] += 1
                assert answer.status_code < 500, (nasty_body[:300], answer.text)
                return
            response = case.call(verify=str(concierge.ca_file), timeout=15)
            statuses[(name, response.status_code)] += 1
            _note_returned(response.text, returned)
            case.validate_response(response, checks=[not_a_server_error])

        with httpx.Client(base_url=concierge.url, verify=tls(concierge), timeout=15) as http:
            for operation in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None,
                                    phases=[Phase.explicit, Phase.generate],
                                    suppress_health_check=list(HealthCheck))(
                        given(case=operation.as_strategy(generation_mode=mode),
                              plant=st.integers(0, 7),
                              authenticator=st.sampled_from(sorted(id_tokens)),
                              token_pick=st.integers(0, 4),
                              bearer=st.sampled_from(bearers), leaf=st.integers(0, 15),
                              nasty=st.sampled_from(NASTY))(send))
                    fuzz()
            # Then every string of a well-formed body of each API, made each nasty string in
            # turn: what random generation reaches only by luck.
            for path, body in ((wire.TOKEN_CREDENTIAL_REQUEST_PATH, _login_request(valid)),
                               (wire.WHOAMI_REQUEST_PATH, wire.whoami_request()),
                               (wire.LOGOUT_REQUEST_PATH, wire.logout_request())):
                bearer = {} if path == wire.TOKEN_CREDENTIAL_REQUEST_PATH else {
                    "Authorization": f"Bearer {credential.token}"}
                for index in range(len(_string_leaves(body))):
                    for nasty in NASTY:
                        sent_body = json.dumps(_with_nasty_leaf(body, index, nasty))
                        answer = http.post(path, content=sent_body, headers={
                            **bearer, "Content-Type": "application/json"})
                        statuses[(path.rsplit("/", 1)[-1], answer.status_code)] += 1
                        _note_returned(answer.text, returned)
                        if answer.status_code >= 500:
                            failures.append(f"{answer.status_code} for {sent_body[:200]}")

        audit = concierge.audit_lines()[audited_before:]
        assert concierge.pid == pid  # never crashed or restarted
        assert concierge.is_ready()
        logs = concierge.all_logs()

    sent = sum(statuses.values())
    print(f"\nfuzz: {sent} requests, by (operation, status): {dict(sorted(statuses.items()))}; "
          f"{len(returned)} credentials returned; audit reasons "
          f"{dict(Counter(line['reason'] for line in audit))}")
    assert failures == []
    assert sent >= 3 * 2 * EXAMPLES // 2, "most generated cases were never sent"
    assert len(audit) == sent  # every request reached the API and was audited once
    assert returned, "no fuzzed login got a credential: the valid material never worked"
    leaked = [f"{kind} {value[:12]}..." for kind, values, pieces in (
        ("sent", sent_secrets, True), ("returned", returned, True),
        ("generated", _not_named(generated, named), False))
        for value in values if _leaks(value, logs, pieces=pieces)]
    assert leaked == []


def _string_leaves(body: Any) -> list[tuple[dict[str, Any] | list[Any], Any]]:
    """(container, key) of every string value in `body`, depth first."""
    leaves: list[tuple[dict[str, Any] | list[Any], Any]] = []
    items = (body.items() if isinstance(body, dict)
             else enumerate(body) if isinstance(body, list) else ())
    for key, value in items:
        if isinstance(value, str):
            leaves.append((body, key))
        leaves += _string_leaves(value)
    return leaves


def _with_nasty_leaf(body: Any, index: int, nasty: str) -> Any:
    """A copy of `body` with its string value number `index` (modulo their count) made
    `nasty`; a body without strings is copied as it is."""
    body = copy.deepcopy(body)
    leaves = _string_leaves(body)
    if leaves:
        container, key = leaves[index % len(leaves)]
        container[key] = nasty
    return body


def _login_request(token: str, authenticator: str = "minted") -> dict[str, Any]:
    return wire.TokenCredentialRequest.create(token=token,
                                              authenticator_name=authenticator).to_wire()


def _note_generated(case: Case[Any], into: set[str], named: set[str]) -> None:
    """Remember the generated token and bearer credential, when long enough to look for,
    and in `named` every other string of the request.

    Only those: the other fields (an authenticator's name, say) are not secret, and the
    audit log rightly names them.
    """
    body = case.body
    spec = body.get("spec") if isinstance(body, dict) else None
    token = spec.get("token") if isinstance(spec, dict) else None
    headers: Mapping[str, Any] = case.headers or {}
    _, _, bearer = str(headers.get("Authorization", "")).partition(" ")
    named.update(container[key] for container, key in _string_leaves(body)
                 if not (container is spec and key == "token"))
    into.update(value for value in (token, bearer)
                if isinstance(value, str) and _worth_looking_for(value))


def _not_named(generated: set[str], named: set[str]) -> set[str]:
    """The generated secrets never also sent where they are rightly logged: hypothesis
    reuses a string across fields and examples (as a token here, an authenticator's name
    there)."""
    return {value for value in generated if not any(value in other for other in named)}


def _note_returned(text: str, into: set[str]) -> None:
    """A cluster credential in a login's answer."""
    try:
        answer: Any = json.loads(text)
        token = answer["status"]["credential"]["token"]
    except (ValueError, KeyError, TypeError):
        return
    if isinstance(token, str):
        into.add(token)
