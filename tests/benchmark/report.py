"""The figures as a person reads them (stdout), and the goals each one is held to."""

from __future__ import annotations

from typing import Any

from tests.benchmark import (
    concierge_new_users,
    kubectl_overhead,
    plugin_hot_path,
    scenario,
    stats,
)

RS256_GOAL = 5_000
ES256_GOAL = 3_000
CPU_GOAL_MS = 3.0
RATIO_GOAL = 1.3
RETURNING_CALLS_GOAL = 2


def _say(text: str = "") -> None:
    print(text, flush=True)


def _ms(summary: dict[str, Any]) -> str:
    return f"p50 {summary['median']:7.2f} ms  p99 {summary['p99']:7.2f} ms"


def machine(info: dict[str, Any]) -> None:
    _say("== machine")
    _say(f"   {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; load (1 min) "
         f"{info['load_average_1m']}; Linux {info['kernel']}")
    _say(f"   Python {info['python']}, kubectl {info['kubectl']}, kube-apiserver "
         f"{info['kube_apiserver']}")


def plugin(data: dict[str, Any]) -> None:
    _say(f"== 1. plugin, cached credential ({data['runs']} interleaved runs each)")
    for name, entry in data["commands"].items():
        _say(f"   {name:32s} {_ms(entry['wall_ms'])}  x{entry['ratio_to_python_c_pass']:.2f}  "
             f"peak RSS p50 {entry['peak_rss_mb']['median']} MB max "
             f"{entry['peak_rss_mb']['max']} MB")
    imports = data.get("imports") or {}
    if imports.get("top"):
        _say(f"   imports of {imports['command']} (-X importtime): {imports['total_ms']} ms in "
             "all; " + ", ".join(f"{m['module']} {m['cumulative_ms']} ms"
                                 for m in imports["top"][:6]))
    for entry in (data.get("cprofile") or {}).get("top", [])[:8]:
        _say(f"   cProfile cumulative {entry['cumulative_ms']:6.1f} ms  {entry['function']}")
    _say(f"   goal: ratio <= {plugin_hot_path.MAX_RATIO}, peak RSS <= "
         f"{plugin_hot_path.MAX_RSS_MB:g} MB (RSS floor of the launcher: "
         f"{data['rss_floor_mb']} MB; nothing reads below it)")


def kubectl(data: dict[str, Any]) -> None:
    _say(f"== 2. kubectl get --raw /version ({data['runs']} interleaved runs each)")
    for name, entry in data["commands"].items():
        _say(f"   {name:32s} {_ms(entry['wall_ms'])}  x{entry['ratio_to_static']:.2f}")
    floor = data.get("floor")
    if floor:
        beyond = ", ".join(f"{name} +{ms} ms"
                           for name, ms in floor["generated_over_python_floor_ms"].items())
        _say(f"   floor: kubectl running any Python exec plugin is x"
             f"{floor['python_c_ratio_to_static']:.2f} the static token (/bin/cat: "
             f"x{floor['cat_ratio_to_static']:.2f}; a pip-style console script: "
             f"x{floor.get('console_script_ratio_to_static', '-')}); beyond the python -c "
             f"floor: {beyond}")
    _say(f"   goal: ratio <= {kubectl_overhead.MAX_RATIO}")


def returning(data: dict[str, Any]) -> None:
    _say(f"== 3. concierge, returning users ({data['pool_users']} users; batches of concierge "
         "and direct logins taking turns)")
    for level in data["levels"]:
        _say(f"   {level['concurrency']:>2} clients: concierge {_ms(level['concierge_ms'])} "
             f"{level['concierge_per_second']:7.1f}/s | direct {_ms(level['direct_ms'])} "
             f"{level['direct_per_second']:7.1f}/s | p50 ratio {level['p50_ratio']:.2f} | "
             f"concierge CPU {level['concierge_cpu_ms_per_login']:.2f} ms/login")
    calls = data["kube_api_calls_per_login"]
    _say(f"   concierge CPU per login {data['concierge_cpu_ms_per_login']} ms (idle: "
         f"{data['concierge_idle_cpu_ms_per_second']} ms/s); API calls per returning login "
         f"median {calls['median']} max {calls['max']} (n {calls['n']})")
    _say(f"   goal: p50 ratio <= {RATIO_GOAL}, CPU <= {CPU_GOAL_MS:g} ms/login, "
         f"<= {RETURNING_CALLS_GOAL} API calls")


def profile(data: dict[str, Any]) -> None:
    _say(f"== 3b. where the concierge's CPU goes ({data.get('tool')}, "
         f"{data.get('samples', 0)} samples, {data.get('logins_during_profile', 0)} logins, "
         f"GIL busy {data.get('gil_busy', 0):.0%})")
    if "error" in data:
        _say(f"   the profile failed: {data['error']}")
        return
    shares = ", ".join(f"{name} {share:.0%}"
                       for name, share in list(data["libraries_inclusive"].items())[:12])
    _say(f"   inclusive: {shares}")
    owned = ", ".join(f"{name} {share:.0%}"
                      for name, share in list(data["libraries_self"].items())[:12])
    _say(f"   innermost library: {owned}")
    _say("   threads: " + ", ".join(f"{name} {share:.0%}"
                                   for name, share in data["threads"].items()))
    for entry in data["top_self"][:10]:
        _say(f"   self {entry['share']:5.1%}  {entry['function']}")


def kube_clients(data: dict[str, Any]) -> None:
    _say(f"== 3c. the floor of the returning-login ratio ({data['pool_users']} users; every row "
         "taking turns in one run; CPU per login or per pair of API calls)")
    for level in data["levels"]:
        _say(f"   {level['concurrency']:>2} clients ({level['rounds']} rounds of "
             f"{level['batch']}):")
        for name, row in level["rows"].items():
            _say(f"      {name:32s} {_ms(row['ms'])} {row['per_second']:7.1f}/s  CPU "
                 f"{row['cpu_ms_per_op']:5.2f} ms  x{row['p50_ratio_to_direct']:.2f} direct")
    for concurrency, floor in data["floor"].items():
        _say(f"   floor at {concurrency:>2} clients: HTTP layer + {floor['best_library']} "
             f"x{floor['p50_ratio_floor']:.2f} direct, {floor['cpu_ms_floor']} ms CPU "
             f"(official client x{floor['official_p50_ratio_floor']:.2f}, "
             f"{floor['official_cpu_ms_floor']} ms; thin http.client "
             f"x{floor['thin_client_p50_ratio_floor']:.2f}, "
             f"{floor['thin_client_cpu_ms_floor']} ms; HTTP layer alone "
             f"{floor['http_layer_cpu_ms']} ms; concierge x{floor['concierge_p50_ratio']:.2f}, "
             f"{floor['concierge_cpu_ms']} ms)")


def new_users(data: dict[str, Any]) -> None:
    calls = data["kube_api_calls_per_login"]
    _say(f"== 4. concierge, new users ({data['users']} first logins, {data['concurrency']} "
         "clients)")
    _say(f"   {data['logins_per_second']}/s, {_ms(data['latency_ms'])}; API calls per login "
         f"median {calls['median']} max {calls['max']}; concierge CPU "
         f"{data['concierge_cpu_ms_per_login']} ms/login")
    _say(f"   goal: <= {concierge_new_users.MAX_CALLS} API calls per new user")


def token_validation(data: dict[str, Any]) -> None:
    _say(f"== 5. token validation, one core (CPU {data['cpu']}, {data['rounds']} rounds)")
    for alg, entry in data["algorithms"].items():
        top = entry["profile_top"][0]
        _say(f"   {alg}: {entry['per_second']:>7}/CPU-s (rounds {entry['per_second_rounds']}; "
             f"{entry['per_wall_second']}/s of wall time), "
             f"p50 {entry['latency_us']['median']} us p99 {entry['latency_us']['p99']} us; "
             f"most own time: {top['function']} {top['us_per_validation']} us")
    _say(f"   goal: >= {RS256_GOAL} RS256, >= {ES256_GOAL} ES256")


def scale(data: dict[str, Any], worked: dict[str, Any]) -> None:
    _say(f"== 6. scale: GET configmap with N users' objects present "
         f"({data['requests_per_step']} keep-alive requests each, interleaved)")
    _say(f"   {'N users':>8} {'CRBs':>7} | {'unrelated':^32} | {'logged-in (impersonating)':^32}"
         f" | apiserver RSS")
    for step in data["steps"]:
        _say(f"   {step['users']:>8} {step['clusterrolebindings']:>7} | "
             f"{_ms(step['unrelated_ms'])} | {_ms(step['impersonating_ms'])} | "
             f"{step['apiserver_rss_mb']} MB")
    per = worked["p50_ms_per_1000_users"]
    _say(f"   p50 slope: +{per['unrelated']} ms (unrelated), +{per['impersonating']} ms "
         "(impersonating) per 1,000 users")
    if "plot" in data:
        _say(f"   plot: {data['plot']}")
    _say(f"== 6b. {worked['people']:,} people who log in once a day (objects held "
         f"{worked['objects_held_seconds_per_login']} s per login: credential "
         f"{worked['credential_ttl_seconds']} s + idle clean-up "
         f"{worked['idle_timeout_seconds']} s)")
    for case in worked["cases"]:
        _say(f"   {case['logins']:38s} {case['users_present']:>6} users present -> unrelated "
             f"+{case['added_p50_ms']['unrelated']} ms, impersonating "
             f"+{case['added_p50_ms']['impersonating']} ms at p50 ({case['verdict']})")
    _say(f"   without the idle clean-up (all {worked['people']:,} present): unrelated "
         f"+{worked['without_idle_cleanup_added_p50_ms']['unrelated']} ms")
    for idle, cases in worked["other_idle_timeouts"].items():
        _say(f"   with identityIdleTimeoutSeconds {idle}: " + "; ".join(
            f"{case['users_present']} users, +{case['added_p50_ms']['unrelated']} ms"
            for case in cases) + " (same three login windows)")
    _say(f"   goal: {worked['goal']}")


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure that has a goal, with its verdict."""
    found: list[dict[str, Any]] = []
    for name, entry in (results.get("plugin") or {}).get("commands", {}).items():
        if name.startswith("plugin"):
            found.append(stats.goal(f"1. {name}: wall time / python -c pass",
                                    entry["ratio_to_python_c_pass"], "x",
                                    at_most=plugin_hot_path.MAX_RATIO))
            found.append(stats.goal(f"1. {name}: peak RSS (max)", entry["peak_rss_mb"]["max"],
                                    "MB", at_most=plugin_hot_path.MAX_RSS_MB))
    for name, entry in (results.get("kubectl") or {}).get("commands", {}).items():
        if name.startswith("generated"):
            found.append(stats.goal(f"2. kubectl, {name} / static token",
                                    entry["ratio_to_static"], "x",
                                    at_most=kubectl_overhead.MAX_RATIO))
    back = results.get("returning")
    if back:
        for level in back["levels"]:
            found.append(stats.goal(f"3. returning login p50 / direct calls, "
                                    f"{level['concurrency']} clients", level["p50_ratio"], "x",
                                    at_most=RATIO_GOAL))
        found.append(stats.goal("3. concierge CPU per returning login",
                                back["concierge_cpu_ms_per_login"], "ms", at_most=CPU_GOAL_MS))
        calls = back["kube_api_calls_per_login"]
        found.append(stats.goal("4. API calls per returning login (median)", calls["median"],
                                "calls", at_most=RETURNING_CALLS_GOAL))
        found.append(stats.goal("4. API calls per returning login (max)", calls["max"],
                                "calls", at_most=RETURNING_CALLS_GOAL))
    new = results.get("new_users")
    if new:
        calls = new["kube_api_calls_per_login"]
        found.append(stats.goal("4. API calls per new user's login (median)", calls["median"],
                                "calls", at_most=concierge_new_users.MAX_CALLS))
        found.append(stats.goal("4. API calls per new user's login (max)", calls["max"],
                                "calls", at_most=concierge_new_users.MAX_CALLS))
    tokens = (results.get("token_validation") or {}).get("algorithms", {})
    for alg, bound in (("RS256", RS256_GOAL), ("ES256", ES256_GOAL)):
        if alg in tokens:
            found.append(stats.goal(f"5. {alg} validations per second, one core",
                                    tokens[alg]["per_second"], "/s", at_least=bound))
    worked = results.get("scenario")
    if worked:
        for case in worked["cases"]:
            found.append(stats.goal(f"6. 20,000 people, logins {case['logins']}: unrelated "
                                    f"request p50 added ({case['users_present']} users)",
                                    case["added_p50_ms"]["unrelated"], "ms",
                                    at_most=scenario.GOAL_MS))
    return found


def goal_table(found: list[dict[str, Any]], seconds: int, mode: str) -> None:
    _say(f"== goals ({mode} run, {seconds} s; provisional until rerun on a quiet machine)")
    for entry in found:
        _say(f"   {entry['verdict']:6s} {entry['name']:72s} {entry['value']:>9} "
             f"{entry['unit']:5s} (goal {entry['goal']})")
