"""The figures of one run as Markdown, for docs/performance.md ("The figures" section).

The runner writes it next to the JSON (`results.md`), so whoever reruns the
benchmark pastes the new figures instead of copying numbers by hand.
"""

from __future__ import annotations

from typing import Any


def _ms(summary: dict[str, Any]) -> str:
    return f"{summary['median']:.2f} / {summary['p99']:.2f}"


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    info = results.get("machine") or {}
    if info:
        add(f"Measured {results['started']} ({results['mode']} run, {results['seconds']} s) on "
            f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, Linux "
            f"{info['kernel']}; Python {info['python']}, kubectl {info['kubectl']}, "
            f"kube-apiserver {info['kube_apiserver']}. Load average (1 min) "
            f"{info['load_average_1m']} at the start, {results['load_average_1m_at_end']} at "
            "the end: other work shared the machine.")
        add("")
    add("| # | figure | value | goal | verdict |")
    add("|---|---|---|---|---|")
    for goal in results.get("goals", []):
        number, _, name = goal["name"].partition(". ")
        add(f"| {number} | {name} | {goal['value']} {goal['unit']} | {goal['goal']} | "
            f"{goal['verdict']} |")
    add("")
    plugin = results.get("plugin")
    if plugin:
        add(f"**1. Plugin, cached credential** ({plugin['runs']} interleaved runs; wall time "
            "p50 / p99 in ms; peak RSS p50 / max in MB, launcher floor "
            f"{plugin['rss_floor_mb']} MB)")
        add("")
        add("| command | wall ms p50 / p99 | x python -c pass | peak RSS MB |")
        add("|---|---|---|---|")
        for name, entry in plugin["commands"].items():
            rss = entry["peak_rss_mb"]
            add(f"| {name} | {_ms(entry['wall_ms'])} | {entry['ratio_to_python_c_pass']} | "
                f"{rss['median']} / {rss['max']} |")
        add("")
    kubectl = results.get("kubectl")
    if kubectl:
        add(f"**2. kubectl get --raw /version** ({kubectl['runs']} interleaved runs)")
        add("")
        add("| kubeconfig | wall ms p50 / p99 | x static |")
        add("|---|---|---|")
        for name, entry in kubectl["commands"].items():
            add(f"| {name} | {_ms(entry['wall_ms'])} | {entry['ratio_to_static']} |")
        add("")
        floor = kubectl.get("floor")
        if floor:
            beyond = ", ".join(f"{name} +{ms} ms" for name, ms
                               in floor["generated_over_python_floor_ms"].items())
            add(f"Floor: kubectl running any Python exec plugin (`python -c` printing a fixed "
                f"ExecCredential) is {floor['python_c_ratio_to_static']} x the static token; "
                f"`/bin/cat` of the same is {floor['cat_ratio_to_static']} x, a script shaped "
                f"like pip's console script (`import re, sys` first) "
                f"{floor.get('console_script_ratio_to_static', '-')} x. Beyond the "
                f"Python floor, p50: {beyond}.")
            add("")
    back = results.get("returning")
    if back:
        calls = back["kube_api_calls_per_login"]
        add(f"**3. Concierge, returning users** ({back['pool_users']} users; latency p50 / p99 "
            f"in ms). Concierge CPU {back['concierge_cpu_ms_per_login']} ms per login; API "
            f"calls per login median {calls['median']}, max {calls['max']} (n {calls['n']}).")
        add("")
        add("| clients | concierge ms | concierge /s | direct ms | direct /s | p50 ratio | "
            "concierge CPU ms/login | harness CPU ms/request |")
        add("|---|---|---|---|---|---|---|---|")
        for level in back["levels"]:
            harness = level["harness_cpu_ms_per_request"]
            add(f"| {level['concurrency']} | {_ms(level['concierge_ms'])} | "
                f"{level['concierge_per_second']} | {_ms(level['direct_ms'])} | "
                f"{level['direct_per_second']} | {level['p50_ratio']} | "
                f"{level['concierge_cpu_ms_per_login']} | {harness['concierge']} / "
                f"{harness['direct']} |")
        add("")
    clients = results.get("clients")
    if clients:
        add(f"**3c. The floor of the returning-login ratio** ({clients['pool_users']} users; "
            "latency p50 / p99 in ms; CPU ms per login or per pair of API calls; every row "
            "taking turns in one run)")
        add("")
        add("| clients | what | ms | /s | CPU ms | x direct |")
        add("|---|---|---|---|---|---|")
        for level in clients["levels"]:
            for name, row in level["rows"].items():
                add(f"| {level['concurrency']} | {name} | {_ms(row['ms'])} | "
                    f"{row['per_second']} | {row['cpu_ms_per_op']} | "
                    f"{row['p50_ratio_to_direct']} |")
        add("")
        add("| clients | floor: HTTP layer + best library | official | thin http.client | "
            "HTTP layer alone CPU | concierge |")
        add("|---|---|---|---|---|---|")
        for concurrency, floor in clients["floor"].items():
            add(f"| {concurrency} | {floor['best_library']} {floor['p50_ratio_floor']} x, "
                f"{floor['cpu_ms_floor']} ms | {floor['official_p50_ratio_floor']} x, "
                f"{floor['official_cpu_ms_floor']} ms | {floor['thin_client_p50_ratio_floor']} x, "
                f"{floor['thin_client_cpu_ms_floor']} ms | {floor['http_layer_cpu_ms']} ms | "
                f"{floor['concierge_p50_ratio']} x, {floor['concierge_cpu_ms']} ms |")
        add("")
    new = results.get("new_users")
    if new:
        calls = new["kube_api_calls_per_login"]
        add(f"**4. Concierge, new users**: {new['users']} first logins, {new['concurrency']} "
            f"clients: {new['logins_per_second']} logins/s, p50 / p99 "
            f"{_ms(new['latency_ms'])} ms, API calls per login median {calls['median']}, max "
            f"{calls['max']}; concierge CPU {new['concierge_cpu_ms_per_login']} ms per login.")
        add("")
    tokens = results.get("token_validation")
    if tokens:
        add(f"**5. Token validation**, one core (CPU {tokens['cpu']}, {tokens['rounds']} "
            "rounds): " + "; ".join(
                f"{alg} {entry['per_second']}/CPU-s ({entry['per_wall_second']}/s wall), "
                f"p50 {entry['latency_us']['median']} µs"
                for alg, entry in tokens["algorithms"].items()) + ".")
        add("")
    scale = results.get("scale")
    if scale:
        add(f"**6. Scale** ({scale['requests_per_step']} keep-alive requests per caller and "
            "step, interleaved; latency p50 / p99 in ms)")
        add("")
        add("| N users | ClusterRoleBindings | unrelated | logged-in (impersonating) | "
            "apiserver RSS MB | objects created /s |")
        add("|---|---|---|---|---|---|")
        for step in scale["steps"]:
            add(f"| {step['users']:,} | {step['clusterrolebindings']:,} | "
                f"{_ms(step['unrelated_ms'])} | {_ms(step['impersonating_ms'])} | "
                f"{step['apiserver_rss_mb']} | {step['objects_per_second'] or '-'} |")
        add("")
    worked = results.get("scenario")
    if worked:
        per = worked["p50_ms_per_1000_users"]
        add(f"p50 slope: +{per['unrelated']} ms (unrelated) and +{per['impersonating']} ms "
            "(impersonating) per 1,000 users.")
        add("")
        add("| logins of 20,000 people | idle clean-up | users present | unrelated p50 added |"
            " impersonating p50 added |")
        add("|---|---|---|---|---|")
        rows = [(worked["idle_timeout_seconds"], worked["cases"])]
        rows += [(int(idle), cases) for idle, cases in worked["other_idle_timeouts"].items()]
        for idle, cases in sorted(rows, key=lambda row: -row[0]):
            for case in cases:
                add(f"| {case['logins']} | {idle} s | {case['users_present']:,} | "
                    f"+{case['added_p50_ms']['unrelated']} ms | "
                    f"+{case['added_p50_ms']['impersonating']} ms |")
        add("")
    return "\n".join(out) + "\n"
