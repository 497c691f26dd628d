"""The printed report and its Markdown twin: the same tables, built once.

Absolute numbers are printed as ``min / median`` over the repetitions; ratios as
``median (min-max)`` of per-repetition ratios (each taken within one repetition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["markdown", "render", "table"]

Rows = list[list[str]]
Table = tuple[list[str], Rows]


def _verdict(passed: bool | None) -> str:
    return "—" if passed is None else ("PASS" if passed else "MISS")


def _rt(count: Mapping[str, Any] | None) -> str:
    if count is None:
        return "—"
    value = count["round_trips"]
    return "n/a" if value is None else f"{value:g}"


def _ops(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _mm(s: Mapping[str, float] | None, digits: int = 1, *, ops: bool = False) -> str:
    """min / median."""
    if not s:
        return "—"
    if ops:
        return f"{_ops(s['min'])} / {_ops(s['median'])}"
    return f"{_num(s['min'], digits)} / {_num(s['median'], digits)}"


def _ratio(s: Mapping[str, float] | None) -> str:
    """median (min-max)."""
    if not s:
        return "—"
    if s.get("runs", 2) == 1:
        return f"{s['median']:.2f}"
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: int = 1) -> str:
    """A plain-text table; columns from index ``right`` on are right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(str(cell).rjust(widths[i]) if i >= right else str(cell).ljust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- single client ------------------------------------------------------------------------------


def _one_shot_table(results: Mapping[str, Any]) -> Table:
    header = [
        "operation",
        "round trips (raw / tut)",
        "loopback ops/s",
        "x raw",
        "target",
        "x tutorial",
        "2 ms ops/s",
        "x raw",
        "target",
    ]
    rows = []
    for row in results["one_shots"]:
        rts, loop, link = row["round_trips"], row["loopback"], row["link"]
        rows.append(
            [
                row["operation"],
                f"{_rt(rts['taskcore'])} {_verdict(row['round_trips_pass'])} "
                f"({_rt(rts['raw_psycopg2'])} / {_rt(rts['tutorial'])})",
                _mm(loop["ops_per_s"]["taskcore"], ops=True),
                _ratio(loop["ratio_vs_raw"]),
                f">= {loop['target_ratio_vs_raw']:g} {_verdict(loop['pass'])}",
                _ratio(loop["ratio_vs_tutorial"]),
                _mm(link["ops_per_s"]["taskcore"], ops=True),
                _ratio(link["ratio_vs_raw"]),
                f">= {link['target_ratio_vs_raw']:g} {_verdict(link['pass'])}",
            ]
        )
    return header, rows


def _cpu_table(results: Mapping[str, Any]) -> Table:
    header = [
        "operation",
        "taskcore µs/call",
        "raw µs/call",
        "raw + wait callback",
        "x raw",
        "target",
        "loopback µs/call wall tc / raw",
    ]
    rows = []
    for row in results["one_shots"]:
        loop = row["loopback"]
        cpu = loop["cpu"]
        us = cpu["us_per_op"]
        rows.append(
            [
                row["operation"],
                _mm(us["taskcore"], 0),
                _mm(us["raw_psycopg2"], 0),
                _mm(us.get("raw_wait_callback"), 0),
                _ratio(cpu["ratio_vs_raw"]),
                f"<= {cpu['target_ratio_max']:g} {_verdict(cpu['pass'])}",
                f"{loop['us_per_op']['taskcore']:.0f} / {loop['us_per_op']['raw_psycopg2']:.0f}",
            ]
        )
    return header, rows


def _shared_table(results: Mapping[str, Any]) -> Table:
    header = [
        "operation",
        "loopback ops/s",
        "x raw",
        "target (not judged)",
        "taskcore CPU µs/call",
        "raw CPU µs/call",
        "CPU x raw",
        "µs/call wall tc / raw",
    ]
    rows = []
    for row in results["one_shots"]:
        shared = row.get("loopback_shared")
        if shared is None:
            continue
        cpu = shared["cpu"]
        rows.append(
            [
                row["operation"],
                _mm(shared["ops_per_s"]["taskcore"], ops=True),
                _ratio(shared["ratio_vs_raw"]),
                f">= {shared['target_ratio_vs_raw']:g} {_verdict(shared['pass'])}",
                _mm(cpu["us_per_op"]["taskcore"], 0),
                _mm(cpu["us_per_op"]["raw_psycopg2"], 0),
                _ratio(cpu["ratio_vs_raw"]),
                f"{shared['us_per_op']['taskcore']:.0f} / "
                f"{shared['us_per_op']['raw_psycopg2']:.0f}",
            ]
        )
    return header, rows


def _placement_text(results: Mapping[str, Any], phase: str) -> str:
    where = results.get("placements", {}).get(phase)
    if where is None:
        return ""
    if not where["controlled"]:
        return f"; CPU placement left to the scheduler ({where['reason']})"
    if where["placement"] == "split":
        return (
            f"; benchmark pinned to CPU {where['client_cpu']}, server to CPU {where['server_cpu']}"
        )
    return f"; benchmark and server pinned to one CPU ({where['client_cpu']})"


def _baseline_table(results: Mapping[str, Any]) -> Table:
    header = [
        "operation",
        "raw loopback ops/s",
        "raw+callback ops/s",
        "tutorial loopback ops/s",
        "raw 2 ms ops/s",
        "tutorial 2 ms ops/s",
    ]
    rows = []
    for row in results["one_shots"]:
        loop, link = row["loopback"]["ops_per_s"], row["link"]["ops_per_s"]
        rows.append(
            [
                row["operation"],
                _mm(loop["raw_psycopg2"], ops=True),
                _mm(loop.get("raw_wait_callback"), ops=True),
                _mm(loop["tutorial"], ops=True),
                _mm(link["raw_psycopg2"], ops=True),
                _mm(link["tutorial"], ops=True),
            ]
        )
    return header, rows


def _unit_table(results: Mapping[str, Any]) -> Table:
    header = [
        "unit of work",
        "round trips (raw)",
        "target",
        "no protection",
        "loopback units/s",
        "x raw",
        "2 ms units/s",
        "x raw",
    ]
    rows = []
    for row in results["units_of_work"]:
        relation = "<=" if row["read_only"] else "="
        loop, link = row.get("loopback"), row.get("link")
        rows.append(
            [
                row["unit"],
                f"{_rt(row['round_trips']['taskcore'])} ({_rt(row['round_trips']['raw_psycopg2'])})",
                f"{relation} {row['round_trips_target']} {_verdict(row['round_trips_pass'])}",
                _rt(row.get("round_trips_without_commit_protection")),
                _mm(loop["ops_per_s"]["taskcore"], ops=True) if loop else "—",
                _ratio(loop["ratio_vs_raw"]) if loop else "—",
                _mm(link["ops_per_s"]["taskcore"], ops=True) if link else "—",
                _ratio(link["ratio_vs_raw"]) if link else "—",
            ]
        )
    return header, rows


def _bulk_lines(bulk: Mapping[str, Any]) -> list[str]:
    rts = bulk["round_trips"]
    off = bulk.get("round_trips_without_commit_protection")
    why = " incl. +1 commit ticket" if bulk.get("commit_protection") else ""
    lines = [
        f"create_many of {bulk['n']:,} tasks (db.create_many) vs psycopg2 "
        "execute_values(page_size=1000, RETURNING id) in one transaction",
        f"  round trips: taskcore {rts['taskcore']['round_trips']}"
        + (f" ({off['round_trips']} without commit protection)" if off else "")
        + f", execute_values {rts['raw_psycopg2']['round_trips']}  "
        f"(target <= {bulk['round_trips_target_max']}{why}) {_verdict(bulk['round_trips_pass'])}",
    ]
    loop = bulk.get("loopback")
    if loop:
        seconds = loop["seconds"]
        lines.append(
            f"  time (loopback, s, min / median): taskcore {_mm(seconds['taskcore'], 3)}, "
            f"execute_values {_mm(seconds['raw_psycopg2'], 3)} -> "
            f"{_ratio(loop['time_ratio_vs_raw'])}x "
            f"(target <= {loop['target_time_ratio_max']:g}x) {_verdict(loop['pass'])}"
        )
        if "raw_returning_all" in seconds:
            lines.append(
                f"  for comparison, execute_values RETURNING every column (create_many returns "
                f"whole tasks): {_mm(seconds['raw_returning_all'], 3)} s -> taskcore "
                f"{_ratio(loop.get('time_ratio_vs_raw_returning_all'))}x that"
            )
    return lines


def _recovery_lines(rec: Mapping[str, Any]) -> list[str]:
    head = f"Recovery: {rec['operation']}() issued as a {rec['outage_s']:g} s outage begins "
    if not rec.get("ok"):
        return [head + f"failed with {rec.get('error')}  MISS"]
    lines = [
        head + f"(pool disposed, real retry waits): succeeded after {rec['attempts']} attempts, "
        f"{rec['call_s']:.2f} s in all",
    ]
    if rec.get("step_s") is None:
        lines.append(
            f"  returned {rec['recovery_s']:.3f} s after the database accepted again "
            f"{_verdict(rec['pass'])}"
        )
        return lines
    step = rec["step"]
    lines.append(
        f"  returned {rec['recovery_s']:.3f} s after the database accepted again; backoff step "
        f"in force then: {rec['step_s']:.3f} s (wait after attempt {step['after_attempt']}: "
        f"{step['base_s']:g} s + jitter {step['jitter_s']:.3f} s)  target <= one step "
        f"{_verdict(rec['pass'])}"
    )
    lines.append("  waits (s): " + ", ".join(f"{w:.3f}" for w in rec["waits_s"]))
    return lines


# -- many clients -------------------------------------------------------------------------------


_SHORT = {"get_task": "get", "get_tasks": "list", "create_task": "create"}
_SHORT.update({"toggle_complete": "toggle", "update_task": "update"})


def _load_title(load: Mapping[str, Any], kind: str) -> str:
    if kind == "think":
        what = (
            f"{load['clients']:,} clients with exponential think time (mean "
            f"{load['think_mean_s']:g} s, ~{load['clients'] / load['think_mean_s']:,.0f} ops/s "
            "offered)"
        )
    else:
        what = f"{load['clients']:,} clients, closed loop"
    size = load.get("pool_size_per_process")
    pool = (
        f"{size} connections per process ({size * load['processes']} server connections)"
        if size
        else load.get("pool_size_note", "")
    )
    return (
        f"{what}, {load['target']} ({load['via']}): {load['processes']} processes x "
        f"{load['threads_per_process']} threads, one user each; {pool}; "
        f"{len(load['runs'])} runs of {load['duration_s']:g} s after {load['warmup_s']:g} s warm-up"
    )


def _load_table(load: Mapping[str, Any]) -> Table:
    header = [
        "implementation",
        "ops/s",
        "x raw",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p99 x raw",
        "errors",
        "client CPU µs/call",
        "sessions opened /30 s",
        "server sessions active %",
        "machine CPU %",
    ]
    rows = []
    for impl, s in load["summary"].items():
        rows.append(
            [
                impl,
                _mm(s["ops_per_s"], ops=True),
                _ratio(s.get("ratio_vs_raw")),
                _mm(s["p50_ms"]),
                _mm(s["p99_ms"]),
                _mm(s["max_ms"]),
                _ratio(s.get("p99_ratio_vs_raw")),
                str(s["errors"]),
                _mm(s["client_cpu_us_per_op"], 0),
                _mm(s["sessions_opened_per_30s"], 0),
                _mm(s.get("server_sessions_active_pct"), 0),
                _mm(s["machine_cpu_busy_pct"], 0),
            ]
        )
    return header, rows


def _load_by_op_table(load: Mapping[str, Any]) -> Table:
    header = ["p99 ms by operation (min / median)", *(_SHORT.get(op, op) for op in _ops_of(load))]
    rows = []
    for impl, s in load["summary"].items():
        by_op = s["p99_ms_by_operation"]
        rows.append([impl, *(_mm(by_op[op]) for op in _ops_of(load))])
    return header, rows


def _ops_of(load: Mapping[str, Any]) -> list[str]:
    first = next(iter(load["summary"].values()))
    return list(first["p99_ms_by_operation"])


def _load_errors(load: Mapping[str, Any]) -> list[str]:
    lines = []
    for run in load["runs"]:
        for impl in run["order"]:
            errors = run[impl]["errors"]
            if errors:
                shown = ", ".join(f"{name} x{count}" for name, count in errors.items())
                lines.append(f"  run {run['run']} {impl}: {shown}")
    return lines


def _load_sections(results: Mapping[str, Any]) -> list[tuple[str, list[Table], list[str]]]:
    """(title, tables, notes) of each many-clients scenario that ran."""
    sections: list[tuple[str, list[Table], list[str]]] = []
    for where in ("direct", "pgbouncer"):
        load = results.get("load", {}).get(where)
        if not load:
            continue
        if load.get("skipped"):
            sections.append(
                (f"{load['clients']:,} clients, {where}: skipped", [], [load["skipped"]])
            )
            continue
        sections.append(
            (
                _load_title(load, "closed"),
                [_load_table(load), _load_by_op_table(load)],
                _load_errors(load),
            )
        )
    think = results.get("think_time")
    if think and not think.get("skipped"):
        sections.append(
            (
                _load_title(think, "think"),
                [_load_table(think), _load_by_op_table(think)],
                _load_errors(think),
            )
        )
    return sections


# -- profiles -----------------------------------------------------------------------------------


def _profile_lines(title: str, prof: Mapping[str, Any], top: int = 20) -> list[str]:
    shares = ", ".join(
        f"{lib} {pct:g}%" for lib, pct in list(prof["exclusive_time_by_library_pct"].items())[:10]
    )
    lines = [
        f"Profile: {title} ({prof['calls']} calls, {prof['us_per_call_profiled']:.0f} µs/call "
        "under cProfile)",
        f"  own time by library/module: {shares}",
        "  stages (µs per call, cumulative; the driver's share includes the server and waits):",
        *(f"    {us:9.1f}  {label}" for label, us in prof.get("stages_us_per_call", {}).items()),
        "  top by cumulative time (µs per call: cumulative / own, calls per op):",
    ]
    for entry in prof["top_cumulative"][:top]:
        lines.append(
            f"    {entry['cum_us_per_op']:9.1f} / {entry['own_us_per_op']:8.1f}  "
            f"x{entry['calls_per_op']:<6g} {entry['function']}"
        )
    lines.append("  top by own time (µs per call: own / cumulative, calls per op):")
    for entry in prof["top_own"][: top // 2 + 5]:
        lines.append(
            f"    {entry['own_us_per_op']:9.1f} / {entry['cum_us_per_op']:8.1f}  "
            f"x{entry['calls_per_op']:<6g} {entry['function']}"
        )
    return lines


def _profiles(results: Mapping[str, Any]) -> list[list[str]]:
    out = []
    for row in results.get("one_shots", []):
        for phase, label in (("loopback", "loopback"), ("link", "2 ms link")):
            prof = row.get(phase, {}).get("profile")
            if prof:
                out.append(_profile_lines(f"taskcore {row['operation']}, {label}", prof))
    bulk_prof = results.get("bulk", {}).get("loopback", {}).get("profile")
    if bulk_prof:
        out.append(_profile_lines(f"taskcore create_many of {results['bulk']['n']:,}", bulk_prof))
    return out


# -- the whole report ---------------------------------------------------------------------------


def _intro(results: Mapping[str, Any]) -> list[str]:
    m, c = results["machine"], results["config"]
    src = m.get("taskcore", {})
    commit = str(src.get("commit", "?"))[:10] + (
        " + uncommitted changes" if src.get("dirty") else ""
    )
    return [
        f"taskcore benchmark, {m['date']} | {m['platform']} | {m['cpu_count']} CPUs ({m['cpu']}) "
        f"| {m['python']} | SQLAlchemy {m['packages'].get('sqlalchemy')}, psycopg2 "
        f"{m['packages'].get('psycopg2-binary')} | {results['database']}",
        f"mode {c['mode']}, scenarios {', '.join(results['scenarios'])}; load average at start "
        f"{m.get('load_average_at_start')}, at end {m.get('load_average_at_end')}; "
        f"{results.get('duration_s', '?')} s in all; taskcore {src.get('version', '?')} at "
        f"commit {commit} ({src.get('source', '?')})",
        "Absolute numbers: min / median over the repetitions. Ratios: median (min-max) of "
        "per-repetition ratios, each measured back to back in the same repetition. x raw = "
        "taskcore ÷ raw psycopg2 sending the same SQL statement without taskcore's wait "
        "callback (a program without taskcore has none).",
    ]


def _single_sections(results: Mapping[str, Any]) -> list[tuple[str, Table | None, list[str]]]:
    c = results["config"]
    if "one_shots" not in results:
        return []
    return [
        (
            f"One-shot operations, single client: round trips counted on the wire; loopback "
            f"{c['loop_ops']} calls x {c['loop_rounds']} rounds; 2 ms link (FlakyProxy process "
            f"adding {c['link_one_way_s'] * 1e3:g} ms each way) {c['link_ops']} x "
            f"{c['link_rounds']}{_placement_text(results, 'loopback')}",
            _one_shot_table(results),
            [],
        ),
        (
            "Client CPU per call (process CPU time ÷ calls, single client, loopback, same "
            "rounds as above)",
            _cpu_table(results),
            [],
        ),
        (
            "The same loopback calls with the benchmark and the server on one CPU (reported, "
            f"not judged: every µs of client CPU also delays the server)"
            f"{_placement_text(results, 'loopback_shared')}",
            _shared_table(results),
            [],
        ),
        ("Baselines (same rounds)", _baseline_table(results), []),
        (
            "Units of work (round trips: BEGIN + k + COMMIT, + 1 commit ticket when commit "
            "protection is on)",
            _unit_table(results),
            [],
        ),
        ("", None, [*_bulk_lines(results["bulk"]), "", *_recovery_lines(results["recovery"])]),
    ]


def _targets_table(results: Mapping[str, Any]) -> Table:
    return (
        ["target", "required", "measured: median (min-max)", "verdict"],
        [
            [t["name"], t["target"], f"{t['value']}", _verdict(t["pass"])]
            for t in results["targets"]
        ],
    )


def _targets_line(results: Mapping[str, Any]) -> str:
    misses = [t["name"] for t in results["targets"] if t["pass"] is False]
    return f"{len(results['targets']) - len(misses)} of {len(results['targets'])} targets met" + (
        f"; missed: {', '.join(misses)}" if misses else ""
    )


def _load_log(results: Mapping[str, Any]) -> str:
    entries = results.get("load_average_log") or []
    shown = "; ".join(
        f"{e['phase'].split(' (')[0].split(':')[0][:40]} {e['load_average'][0]:g}" for e in entries
    )
    return f"1-minute load average as each phase started: {shown}" if shown else ""


def render(results: Mapping[str, Any]) -> str:
    """The whole report as text."""
    out = [*_intro(results), _load_log(results)]
    for title, tab, notes in _single_sections(results):
        out.append("")
        if title:
            out.append(title + ":")
        if tab is not None:
            out.append(table(*tab))
        out += notes
    for title, tables, notes in _load_sections(results):
        out += ["", title + ":"]
        for i, tab in enumerate(tables):
            if i:
                out.append("")
            out.append(table(*tab))
        if notes:
            out += ["errors by type:", *notes] if tables else notes
    out += ["", "Targets (issue 10; the 2 ms link: issue 5):"]
    out.append(table(*_targets_table(results), right=2))
    out.append(_targets_line(results))
    for lines in _profiles(results):
        out += ["", *lines]
    return "\n".join(out)


def markdown(results: Mapping[str, Any]) -> str:
    """The results tables as Markdown (for README / specs)."""
    out = [" ".join(_intro(results)), "", _load_log(results)]
    for title, tab, notes in _single_sections(results):
        out.append("")
        if title:
            out += [f"**{title}**", ""]
        if tab is not None:
            out.append(_md_table(*tab))
        if notes:
            out += [f"- {line.strip()}" for line in notes if line.strip()]
    for title, tables, notes in _load_sections(results):
        out += ["", f"**{title}**", ""]
        for i, tab in enumerate(tables):
            if i:
                out.append("")
            out.append(_md_table(*tab))
        if notes:
            out += ["", *(f"- {line.strip()}" for line in notes)]
    out += ["", "**Targets**", "", _md_table(*_targets_table(results)), "", _targets_line(results)]
    return "\n".join(out)
