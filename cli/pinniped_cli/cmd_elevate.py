"""`pinniped elevate`: ask for a governed group for a while, and approve, deny or revoke.

A group an ElevationPolicy governs is never granted by a login alone: the
user asks (`request`, with a reason), another person the policy names
approves (`approve`), and the group is part of the user's credential until
the elevation's duration ends or someone revokes it. Each command calls the
concierge with the cluster credential of the kubeconfig's login (as whoami
does); the concierge takes who is asking from that credential, never from
anything sent. After a request, this machine's cached credential is marked
so that kubectl checks the state on each call (`pinniped_cli.elevation_check`)
and picks the group up as soon as it is approved, without a browser.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import TYPE_CHECKING

from pinniped_cli.errors import UsageError
from pinniped_cli.kubeconfig import add_kubeconfig_flags
from pinniped_cli.runtime import Runtime

if TYPE_CHECKING:
    from pinniped_apis.elevation import ElevationList, ElevationView
    from pinniped_cli.elevation_client import ElevationClient

ACTIONS = ("request", "list", "approve", "deny", "revoke")
#: Past tense, for the confirmation line.
DONE = {"approve": "approved", "deny": "denied", "revoke": "revoked"}
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_TABLE = ("ID", "GROUP", "REQUESTER", "PHASE", "APPROVALS", "EXPIRES", "REASON")
_REASON_COLUMN = 60


def add_flags(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    formatter = parser.formatter_class
    request = actions.add_parser(
        "request", help="ask for a group for a while (prints the request's id)",
        formatter_class=formatter, description=(
            "Ask for GROUP, which an ElevationPolicy governs, for --duration. Prints the "
            "request's id on stdout; an approver runs `pinniped elevate approve ID`. Once "
            "approved, your next kubectl call picks the group up by itself."))
    request.add_argument("group", metavar="GROUP", help="the (prefixed) group to ask for")
    request.add_argument("--reason", required=True, metavar="TEXT",
                         help="why you need it (approvers and the audit log see this)")
    request.add_argument("--duration", metavar="DURATION", type=_duration_arg,
                         help="how long, once approved: 90s, 30m, 1h, 1h30m or seconds "
                         "(default: the policy's longest)")
    actions.add_parser("list", help="list your requests and those you may decide",
                       formatter_class=formatter, description=(
                           "List your own elevation requests and those you may approve or "
                           "deny, newest first."))
    for action, help_text in (("approve", "approve someone else's request"),
                              ("deny", "deny a pending request"),
                              ("revoke", "end a request or an active elevation now")):
        command = actions.add_parser(action, help=help_text, formatter_class=formatter,
                                     description=f"{help_text[0].upper()}{help_text[1:]}.")
        command.add_argument("id", metavar="ID", help="the request's id (elev-...)")
        if action != "approve":
            command.add_argument("--reason", metavar="TEXT", help="why (optional)")
    for command in actions.choices.values():
        add_kubeconfig_flags(command)
        command.add_argument("-o", "--output", choices=("text", "json"), default="text",
                             help="output format (default: %(default)s)")


def parse_duration(text: str) -> int:
    """Seconds in `text`: 90s, 30m, 1h, 1h30m, or a plain number of seconds."""
    from pinniped_apis.constants import MAX_ELEVATION_SECONDS, MIN_ELEVATION_SECONDS

    match = _DURATION.fullmatch(text.strip())
    if text.strip().isdigit():
        seconds = int(text)
    elif match is not None and any(match.groups()):
        hours, minutes, secs = (int(part or 0) for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError(f"{text!r} is not a duration; write it like 90s, 30m, 1h, 1h30m, or "
                         "a number of seconds")
    if not MIN_ELEVATION_SECONDS <= seconds <= MAX_ELEVATION_SECONDS:
        raise ValueError(f"must be from {MIN_ELEVATION_SECONDS} s to "
                         f"{MAX_ELEVATION_SECONDS // 3600} h (the policy may allow less)")
    return seconds


def _duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace, rt: Runtime) -> int:
    from pinniped_cli.cluster_credential import get_credential, mark_checking
    from pinniped_cli.elevation_client import ElevationClient
    from pinniped_cli.kubeconfig import resolve_login

    body = _body(args)  # before logging in: a typo costs no login
    target = resolve_login(args.kubeconfig, args.kubeconfig_context, rt.env)
    options = target.options
    credential = get_credential(options, target.cluster, rt.stdin_is_tty, rt)
    with rt.new_http(options.concierge_ca_bundle.pem("--concierge-ca-bundle")) as http:
        client = ElevationClient(http, options.concierge_endpoint)
        if args.action == "list":
            _show_list(client.list(credential.token), args.output, rt)
            return 0
        view = _send(client, credential.token, args, body)
    if args.action == "request":
        # Check from the next kubectl call on, without waiting for a login to say so.
        mark_checking(options, target.cluster, rt, True)
    _show_view(view, args, rt)
    return 0


def _body(args: argparse.Namespace) -> object:
    """The request document for `args`, validated as the concierge will (UsageError if not)."""
    from pinniped_apis import wire
    from pinniped_apis.elevation import ElevationCreate, ElevationDecision

    try:
        if args.action == "request":
            return ElevationCreate.from_wire({"group": args.group, "reason": args.reason,
                                              **({"durationSeconds": args.duration}
                                                 if args.duration is not None else {})})
        if args.action == "list":
            return None
        from pinniped_apis.constants import ELEVATION_ID_PATTERN

        if not re.fullmatch(ELEVATION_ID_PATTERN, args.id):
            raise UsageError(f"{args.id!r} is not an elevation request id (they look like "
                             "elev-0123456789abcdef); run `pinniped elevate list` to see them.")
        reason = getattr(args, "reason", None)
        return None if reason is None else ElevationDecision.from_wire({"reason": reason})
    except wire.WireError as exc:
        flag = {"group": "GROUP", "reason": "--reason"}.get(exc.field, exc.field)
        raise UsageError(f"{flag} {exc.problem}.") from None


def _send(client: ElevationClient, token: str, args: argparse.Namespace,
          body: object) -> ElevationView:
    from pinniped_apis.elevation import ElevationCreate, ElevationDecision

    if args.action == "request":
        assert isinstance(body, ElevationCreate)
        return client.create(token, body)
    assert body is None or isinstance(body, ElevationDecision)
    return client.decide(token, args.id, args.action, body)


def _show_view(view: ElevationView, args: argparse.Namespace, rt: Runtime) -> None:
    if args.output == "json":
        rt.stdout.write(json.dumps(view.to_wire(), indent=2) + "\n")
    elif args.action == "request":
        rt.stdout.write(f"{view.id}\n")
    else:
        rt.stdout.write(f"{DONE[args.action]} {view.id}: {_describe(view)}\n")
    if args.action == "request":
        rt.say(f"requested {view.group} for {_minutes(view.duration_seconds)} as {view.id} "
               f"({_approvals(view)} approvals); an approver runs `pinniped elevate approve "
               f"{view.id}`, and your next kubectl call after that has the group.")


def _describe(view: ElevationView) -> str:
    from pinniped_apis.rfc3339 import format_time
    from pinniped_cli.redact import printable

    text = f"{printable(view.group, 80)} for {printable(view.requester, 80)} is now {view.phase}"
    if view.phase == "Pending":
        text += f" ({_approvals(view)} approvals)"
    elif view.phase == "Approved" and view.expires_at is not None:
        text += f" until {format_time(view.expires_at)}"
    return text


def _show_list(listing: ElevationList, output: str, rt: Runtime) -> None:
    from pinniped_apis.rfc3339 import format_time
    from pinniped_cli.redact import printable

    if output == "json":
        rt.stdout.write(json.dumps(listing.to_wire(), indent=2) + "\n")
        return
    if not listing.items:
        rt.say("no elevation requests of yours, and none you may decide.")
        return
    rows = [_TABLE] + [(
        printable(v.id, 40), printable(v.group, 80), printable(v.requester, 80), v.phase,
        _approvals(v),
        format_time(v.expires_at) if v.expires_at is not None else "-",
        printable(v.reason, _REASON_COLUMN)) for v in listing.items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        rt.stdout.write("   ".join([*cells, row[-1]]).rstrip() + "\n")
    if listing.omitted:
        rt.say(f"{listing.omitted} older request(s) not shown: the concierge lists the newest "
               "only; see its audit log, or ask your cluster administrator, for the rest.")


def _approvals(view: ElevationView) -> str:
    return f"{len(view.approvals)}/{view.approvals_required}"


def _minutes(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 or seconds % 60 else f"{seconds // 60} min"
