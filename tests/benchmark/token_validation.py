"""Figure 5: ID-token validations per second on one core, through the concierge's own
`JWTAuthenticator.verify`, keys already cached (no network).

    BENCH_VENV/bin/python -I token_validation.py [--rounds 5] [--seconds 1.0]

Run by the benchmark with the benchmark venv's interpreter (`-I`: nothing from
the checkout or PYTHONPATH, only the installed wheel), pinned to one CPU.
RS256 (2048-bit) and ES256 (P-256) take turns, round after round, each
verifying a few hundred distinct tokens in a loop; the figure is the median
over rounds of validations per CPU second of the verifying thread (what one
core does; on a shared machine the wall-clock rate, reported too, is lower).
A cProfile of each shows where one validation's time goes. Prints one JSON
document.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import pstats
import statistics
import sys
import time
from typing import Any

ISSUER = "https://issuer.bench.invalid"
AUDIENCE = "bench-audience"
DISTINCT_TOKENS = 200


def _percentile(samples: list[float], fraction: float) -> float:
    """Nearest rank, as `tests.benchmark.stats` (this file imports nothing from the checkout)."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


async def _main(rounds: int, seconds: float) -> dict[str, Any]:
    from joserfc import jwt
    from joserfc.jwk import ECKey, RSAKey

    from pinniped_concierge.config import JWTAuthenticatorConfig
    from pinniped_concierge.jwt_authenticator import JWTAuthenticator, discovery_url

    keys: dict[str, RSAKey | ECKey] = {
        "RS256": RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"},
                                     auto_kid=True),
        "ES256": ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"},
                                    auto_kid=True)}
    documents: dict[str, object] = {
        discovery_url(ISSUER): {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"},
        f"{ISSUER}/jwks": {"keys": [dict(k.as_dict(private=False)) for k in keys.values()]}}

    async def fetch(url: str) -> object:
        return documents[url]

    config = JWTAuthenticatorConfig.model_validate({
        "name": "bench", "issuer": ISSUER, "audience": AUDIENCE,
        "claims": {"username": "email", "groups": "groups"},
        "usernamePrefix": "corp:", "groupsPrefix": "corp:"})
    verifier = JWTAuthenticator(config, fetch, clock_skew_seconds=30,
                                min_refresh_interval_seconds=10)
    await verifier.refresh_keys()
    now = int(time.time())
    tokens = {alg: [jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, {
        "iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{n}", "email": f"user-{n}@example.com",
        "email_verified": True, "groups": ["devs", f"team-{n % 10}", f"user-{n}-group"],
        "iat": now, "nbf": now, "exp": now + 600}, key, algorithms=[alg])
        for n in range(DISTINCT_TOKENS)] for alg, key in keys.items()}
    for alg, batch in tokens.items():  # each must really verify, or nothing is measured
        claims = await verifier.verify(batch[1])
        if claims.get("sub") != "user-1":
            raise SystemExit(f"{alg}: verify returned the wrong claims")

    rates: dict[str, list[float]] = {alg: [] for alg in keys}
    wall_rates: dict[str, list[float]] = {alg: [] for alg in keys}
    latencies: dict[str, list[float]] = {alg: [] for alg in keys}
    for _ in range(rounds):
        for alg, batch in tokens.items():
            done = 0
            started, cpu_started = time.perf_counter(), time.thread_time()
            deadline = started + seconds
            while True:
                before = time.perf_counter()
                if before >= deadline:
                    break
                await verifier.verify(batch[done % DISTINCT_TOKENS])
                latencies[alg].append(time.perf_counter() - before)
                done += 1
            # Per CPU second of this thread: what one core does, even when other
            # processes share it (the wall-clock rate is reported beside it).
            rates[alg].append(done / (time.thread_time() - cpu_started))
            wall_rates[alg].append(done / (time.perf_counter() - started))
    profiles = {alg: await _profile(verifier, batch) for alg, batch in tokens.items()}
    return {alg: {"per_second": round(statistics.median(rates[alg])),
                  "per_second_rounds": [round(r) for r in rates[alg]],
                  "per_wall_second": round(statistics.median(wall_rates[alg])),
                  "latency_us": {"median": round(statistics.median(latencies[alg]) * 1e6, 1),
                                 "p99": round(_percentile(latencies[alg], 0.99) * 1e6, 1),
                                 "n": len(latencies[alg])},
                  "profile_top": profiles[alg]} for alg in keys}


async def _profile(verifier: Any, batch: list[str], count: int = 2000,
                   top: int = 8) -> list[dict[str, Any]]:
    """The functions with the most own time over `count` validations (cProfile)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for n in range(count):
        await verifier.verify(batch[n % len(batch)])
    profiler.disable()
    table: Any = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, ...)}
    total = sum(entry[2] for entry in table.values()) or 1.0
    ranked = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [{"function": f"{name} ({os.path.basename(file)}:{line})",
             "self_share": round(entry[2] / total, 3),
             "us_per_validation": round(entry[2] / count * 1e6, 1)}
            for (file, line, name), entry in ranked]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per algorithm per round")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: last)")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu is not None else cpus[-1]
    os.sched_setaffinity(0, {cpu})
    result = asyncio.run(_main(args.rounds, args.seconds))
    print(json.dumps({"cpu": cpu, "rounds": args.rounds, "seconds_per_round": args.seconds,
                      "python": sys.version.split()[0], "algorithms": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
