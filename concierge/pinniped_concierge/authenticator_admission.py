"""Which JWTAuthenticator objects may become authenticators, and why the others may not.

Pure decisions, made again on every change from the current objects alone:
- the spec is read with the model the CRD is generated from
  (`JWTAuthenticatorSpec`), whatever the apiserver let through: objects
  stored before a schema change, or a CRD applied by hand, are checked too;
- the name must be a DNS label, since clients send it as the authenticator's
  name;
- a name the config file uses belongs to the file's authenticator;
- prefixes must not overlap a file authenticator's, nor an older object's
  (`prefixes.overlap`, the rule the file itself obeys);
- at most `limit` objects are used, the oldest first.
Objects are taken oldest first (creationTimestamp, then name), so adding an
object never takes the place of one already in use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from pinniped_apis import validation
from pinniped_apis.authentication import (
    DNS_LABEL,
    PATTERN_WORDS,
    JWTAuthenticatorFields,
    JWTAuthenticatorSpec,
)
from pinniped_concierge import naming, prefixes
from pinniped_concierge.kubeapi import Obj

_DNS_LABEL = re.compile(DNS_LABEL)
UNKNOWN_FIELD = "is not a field of a JWTAuthenticator's spec (check the spelling)"


@dataclass(frozen=True)
class Candidate:
    """One JWTAuthenticator object, read."""

    name: str
    uid: str
    generation: int | None
    created: str
    spec: JWTAuthenticatorSpec | None
    #: "spec.issuer: must be ..." when the spec is refused.
    problem: str | None
    #: Whether the problem is the issuer itself (the IssuerURLValid condition).
    issuer_refused: bool
    obj: Obj


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    #: The AuthenticatorValid condition's reason and message.
    reason: str
    message: str


def read_object(obj: Obj, cache: dict[tuple[str, object], Candidate] | None = None
                ) -> Candidate | None:
    """The object as a candidate; None for one without a name or on its way out.

    `cache` (uid and generation -> result) saves parsing an unchanged spec
    again: the generation changes exactly when the spec does.
    """
    name, uid = naming.metadata_field(obj, "name"), naming.metadata_field(obj, "uid") or ""
    if not name or naming.metadata_field(obj, "deletionTimestamp"):
        return None
    metadata = obj.get("metadata") or {}
    generation = metadata.get("generation")
    generation = generation if isinstance(generation, int) else None
    key = (uid, generation if generation is not None else metadata.get("resourceVersion"))
    cached = cache.get(key) if cache is not None else None
    if cached is not None and cached.name == name:
        return replace(cached, obj=obj)
    spec: JWTAuthenticatorSpec | None = None
    problem: str | None = None
    issuer_refused = False
    try:
        spec = JWTAuthenticatorSpec.model_validate(obj.get("spec"), by_alias=True,
                                                   by_name=False)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = validation.field_path(("spec", *error["loc"]))
        problem = f"{where}: {_spec_problem(error)}"
        issuer_refused = any(e["loc"][:1] == ("issuer",) for e in exc.errors())
    candidate = Candidate(name, uid, generation, naming.metadata_field(obj, "creationTimestamp")
                          or "", spec, problem, issuer_refused, obj)
    if cache is not None:
        cache[key] = candidate
    return candidate


def _spec_problem(error: ErrorDetails) -> str:
    """One error in words that say what is accepted (never quoting the value)."""
    pattern = (error.get("ctx") or {}).get("pattern")
    if error["type"] == "extra_forbidden":
        return UNKNOWN_FIELD
    if error["type"] == "string_pattern_mismatch" and pattern in PATTERN_WORDS:
        return f"must be {PATTERN_WORDS[pattern]}"
    return validation.problem(error)


def admit(candidates: Iterable[Candidate], file: Mapping[str, JWTAuthenticatorFields],
          limit: int) -> dict[str, Verdict]:
    """A verdict for every candidate, by name."""
    verdicts: dict[str, Verdict] = {}
    admitted: list[tuple[str, JWTAuthenticatorSpec]] = []
    for candidate in sorted(candidates, key=lambda c: (c.created, c.name)):
        verdicts[candidate.name] = _verdict(candidate, file, admitted, limit)
        if verdicts[candidate.name].admitted and candidate.spec is not None:
            admitted.append((candidate.name, candidate.spec))
    return verdicts


def _verdict(candidate: Candidate, file: Mapping[str, JWTAuthenticatorFields],
             admitted: Sequence[tuple[str, JWTAuthenticatorSpec]], limit: int) -> Verdict:
    name, spec = candidate.name, candidate.spec
    if spec is None:
        return Verdict(False, "InvalidSpec",
                       f"{candidate.problem}; fix the spec (kubectl edit jwtauthenticator {name})")
    if not _DNS_LABEL.fullmatch(name) or len(name) > 63:
        return Verdict(False, "InvalidName",
                       "metadata.name must be a DNS label (at most 63 lower case letters, "
                       "digits and '-'), because clients send it as the authenticator's name; "
                       "create the object under such a name")
    if name in file:
        return Verdict(False, "NameClash",
                       f"the concierge's config file has an authenticator named {name!r}, "
                       "and the file's is the one used; give this object another name")
    others = [(other, fields, "in the concierge's config file") for other, fields in file.items()]
    others += [(other, fields, "an older JWTAuthenticator") for other, fields in admitted]
    for other, fields, where in others:
        found = prefixes.overlap(fields, spec)
        if found is not None:
            return Verdict(False, "PrefixOverlap",
                           f"spec.{found.key}: {found.describe(name, other)}; {other!r} is "
                           f"{where}, so change this object's {found.key}")
    if len(admitted) >= limit:
        return Verdict(False, "TooManyAuthenticators",
                       f"this concierge uses at most {limit} JWTAuthenticator objects "
                       "(jwtAuthenticators.maxObjects) and older ones fill them; delete "
                       "the ones no longer needed")
    return Verdict(True, "Success", "the spec is valid and its names are its own")
