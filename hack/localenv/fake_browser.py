"""A stand-in for the person's browser, for tests of the CLI's browser login.

Set BROWSER="python fake_browser.py %s" (LocalIdP.browser_env builds it) and
Python's webbrowser runs this with the authorize URL. It logs in as
$FAKE_BROWSER_USERNAME / $FAKE_BROWSER_PASSWORD, trusting only the CA in
$FAKE_BROWSER_CA, then delivers the IdP's redirect to the CLI's loopback
listener and exits. A device verification URL works too: it enters the code,
logs in, confirms and stops at the success page.

webbrowser waits for this command, so every step has a timeout and it always
exits: 0 when the login went through, 1 with the reason on stderr if not.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

if __package__ in (None, ""):  # run as a script: make `localenv` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from localenv.idp import IdPError, tls_context, walk_login

TIMEOUT = 10.0


def _fail(message: str) -> int:
    print(f"fake_browser: {message}", file=sys.stderr)
    return 1


def run(url: str, env: dict[str, str]) -> int:
    missing = [name for name in ("FAKE_BROWSER_USERNAME", "FAKE_BROWSER_PASSWORD",
                                 "FAKE_BROWSER_CA") if not env.get(name)]
    if missing:
        return _fail(f"set {', '.join(missing)} (LocalIdP.browser_env gives all of them)")
    parts = urlsplit(url)
    if parts.scheme != "https":
        return _fail(f"expected an https IdP URL, got a {parts.scheme or 'relative'} URL")
    issuer = f"{parts.scheme}://{parts.netloc}"
    try:
        with httpx.Client(verify=tls_context(Path(env["FAKE_BROWSER_CA"])), timeout=TIMEOUT,
                          trust_env=False) as idp:
            callback = walk_login(idp, url, issuer=issuer, username=env["FAKE_BROWSER_USERNAME"],
                                  password=env["FAKE_BROWSER_PASSWORD"])
    except IdPError as err:
        return _fail(str(err))
    except (httpx.HTTPError, OSError) as err:
        return _fail(f"cannot talk to the IdP at {issuer}: {type(err).__name__}: {err}")
    if callback is None:
        print("fake_browser: device login approved", file=sys.stderr)
        return 0
    target = urlsplit(callback)
    where = f"{target.scheme}://{target.netloc}{target.path}"  # the query holds the code
    if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost", "::1"):
        return _fail(f"the IdP redirected to {where}, which is not a loopback callback")
    try:
        # A fresh client: the CLI's listener must not see the IdP's cookies.
        with httpx.Client(timeout=TIMEOUT, trust_env=False) as loopback:
            answer = loopback.get(callback)
    except httpx.HTTPError as err:
        return _fail(f"cannot deliver the login to the CLI at {where}: {type(err).__name__}: {err}")
    if answer.status_code >= 400:
        return _fail(f"the CLI's callback at {where} answered HTTP {answer.status_code}")
    refused = parse_qs(target.query).get("error")
    outcome = f"the IdP's refusal ({refused[0]})" if refused else "the login"
    print(f"fake_browser: delivered {outcome} to {where} (HTTP {answer.status_code})",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        return _fail("usage: fake_browser.py URL")
    return run(args[0], dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
