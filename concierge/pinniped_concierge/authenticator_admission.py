"""Which JWTAuthenticator objects may become authenticators, and why the others may not.

Pure decisions, made again on every change from the current objects alone:
- the spec is read with the model the CRD is generated from
  (`JWTAuthenticatorSpec`), whatever the apiserver let through: objects
  stored before a schema change, or a CRD applied by hand, are checked too;
- the name must be a DNS label, since clients send it as the authenticator's
  name;
- a name the config file uses belongs to the file's authenticator;
- prefixes must not overlap a file authenticator's (never shared), nor an
  earlier object's (`prefixes.overlap`, the rule the file itself obeys, plus
  the same `spec.tls`);
- at most `limit` objects are used.
Objects already in use (admitted before, same spec) come first, whatever
their age or name: adding or fixing an object never takes the place of one
logins use. The others follow oldest first (creationTimestamp, then name).
creationTimestamp has one-second resolution, so two new objects created in
the same second that overlap are both refused (their order would be a matter
of names): the admin deletes or changes one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    """Whether an object may be used, and why, in the words its status shows: the
    decision is made here once and both `cluster_authenticators` (what to build) and
    `authenticator_status` (what to write) read it."""

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
    key = cache_key(obj)
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


def cache_key(obj: Obj) -> tuple[str, object]:
    """The key `read_object` caches an object's reading under: uid and generation (or
    resourceVersion, for an object without generations)."""
    metadata = obj.get("metadata") or {}
    generation = metadata.get("generation")
    return (naming.metadata_field(obj, "uid") or "",
            generation if isinstance(generation, int) else metadata.get("resourceVersion"))


def _spec_problem(error: ErrorDetails) -> str:
    """One error in words that say what is accepted (never quoting the value)."""
    pattern = (error.get("ctx") or {}).get("pattern")
    if error["type"] == "extra_forbidden":
        return UNKNOWN_FIELD
    if error["type"] == "string_pattern_mismatch" and pattern in PATTERN_WORDS:
        return f"must be {PATTERN_WORDS[pattern]}"
    return validation.problem(error)


def admit(candidates: Iterable[Candidate], file: Mapping[str, JWTAuthenticatorFields],
          limit: int, in_use: Mapping[str, JWTAuthenticatorSpec] | None = None
          ) -> dict[str, Verdict]:
    """A verdict for every candidate, by name.

    `in_use` (uid -> spec) are the objects admitted by the previous pass: they keep
    their places (an unchanged one first, then one whose spec changed).
    """
    in_use = in_use or {}
    candidates = list(candidates)

    def rank(c: Candidate) -> int:
        return 2 if c.uid not in in_use else (0 if in_use[c.uid] == c.spec else 1)

    verdicts: dict[str, Verdict] = {}
    admitted: list[_Admitted] = []
    for candidate in sorted(candidates, key=lambda c: (rank(c), c.created, c.name)):
        verdict = _verdict(candidate, file, admitted, limit)
        if verdict.admitted and rank(candidate) == 2:
            verdict = _tie(candidate, candidates, file, admitted, rank) or verdict
        verdicts[candidate.name] = verdict
        if verdict.admitted and candidate.spec is not None:
            admitted.append(_Admitted(candidate.name, candidate.spec, rank(candidate) < 2))
    return verdicts


@dataclass(frozen=True)
class _Admitted:
    name: str
    spec: JWTAuthenticatorSpec
    in_use: bool


def _tie(candidate: Candidate, candidates: Sequence[Candidate],
         file: Mapping[str, JWTAuthenticatorFields], admitted: Sequence[_Admitted],
         rank: Callable[[Candidate], int]) -> Verdict | None:
    """A refusal when a new object overlaps another new one created in the same second
    that could be used but for it; the other is refused likewise when its turn comes,
    whichever name sorts first."""
    assert candidate.spec is not None
    in_use = [a for a in admitted if a.in_use]
    for other in candidates:
        if (other is candidate or other.spec is None or rank(other) < 2
                or other.created != candidate.created
                or not _verdict(other, file, in_use, len(candidates)).admitted):
            continue
        found = prefixes.overlap(other.spec, candidate.spec,
                                 may_share=other.spec.tls == candidate.spec.tls)
        if found is not None:
            return Verdict(False, "PrefixOverlap",
                           f"spec.{found.key}: {found.describe(candidate.name, other.name)}; "
                           f"{other.name!r} was created in the same second, so neither is "
                           "used: delete one of them, or change one's prefixes")
    return None


def _verdict(candidate: Candidate, file: Mapping[str, JWTAuthenticatorFields],
             admitted: Sequence[_Admitted], limit: int) -> Verdict:
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
    for other, fields in file.items():
        found = prefixes.overlap(fields, spec, may_share=False)
        if found is not None:
            return _overlap(found, name, other, prefixes.NEVER_RULE,
                            "in the concierge's config file")
    for earlier in admitted:
        found = prefixes.overlap(earlier.spec, spec, may_share=earlier.spec.tls == spec.tls)
        if found is not None:
            return _overlap(found, name, earlier.name, prefixes.OBJECT_RULE,
                            "a JWTAuthenticator in use" if earlier.in_use
                            else "an older JWTAuthenticator")
    if len(admitted) >= limit:
        return Verdict(False, "TooManyAuthenticators",
                       f"this concierge uses at most {limit} JWTAuthenticator objects "
                       "(jwtAuthenticators.maxObjects) and others fill them; delete "
                       "the ones no longer needed")
    return Verdict(True, "Success", "the spec is valid and its names are its own")


def _overlap(found: prefixes.Overlap, name: str, other: str, rule: str, where: str) -> Verdict:
    return Verdict(False, "PrefixOverlap",
                   f"spec.{found.key}: {found.describe(name, other, rule)}; {other!r} is "
                   f"{where}, so change this object's {found.key}")
