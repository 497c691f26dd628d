"""The printed report: the results table, bulk and recovery rows, targets and profiles of misses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["markdown", "render", "table"]


def _verdict(passed: bool | None) -> str:
    return "—" if passed is None else ("PASS" if passed else "MISS")


def _rt(count: Mapping[str, Any] | None) -> str:
    if count is None:
        return "—"
    value = count["round_trips"]
    return "n/a" if value is None else f"{value:g}"


def _ops(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


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


def _phase_cells(result: Mapping[str, Any] | None) -> list[str]:
    if result is None:
        return ["—"] * 4
    ops = result["ops_per_s"]["taskcore"]
    cells = [_ops(ops), f"{result['ratio_vs_raw']:.2f}"]
    tutorial = result.get("ratio_vs_tutorial")
    cells.append("—" if tutorial is None else f"{tutorial:.1f}")
    target = result.get("target_ratio_vs_raw")
    cells.append("—" if target is None else f"≥{target:g} {_verdict(result['pass'])}")
    return cells


def _one_shot_table(results: Mapping[str, Any]) -> str:
    header = [
        "operation",
        "round trips",
        "(raw / tut)",
        "loop ops/s",
        "x raw",
        "x tut",
        "target",
        "2ms ops/s",
        "x raw",
        "x tut",
        "target",
    ]
    rows = []
    for row in results["one_shots"]:
        rts = row["round_trips"]
        rows.append(
            [
                row["operation"],
                f"{_rt(rts['taskcore'])} {_verdict(row['round_trips_pass'])}",
                f"({_rt(rts['raw_psycopg2'])} / {_rt(rts['tutorial'])})",
                *_phase_cells(row.get("loopback")),
                *_phase_cells(row.get("link")),
            ]
        )
    return table(header, rows)


def _baseline_table(results: Mapping[str, Any]) -> str:
    header = [
        "operation",
        "raw loop ops/s",
        "tut loop ops/s",
        "raw 2ms ops/s",
        "tut 2ms ops/s",
        "loop µs/op tc / raw",
        "CPU µs/op loop tc / raw",
        "CPU µs/op 2ms tc / raw",
    ]
    rows = []
    for row in results["one_shots"]:
        loop, link = row["loopback"], row["link"]
        rows.append(
            [
                row["operation"],
                _ops(loop["ops_per_s"]["raw_psycopg2"]),
                _ops(loop["ops_per_s"]["tutorial"]),
                _ops(link["ops_per_s"]["raw_psycopg2"]),
                _ops(link["ops_per_s"]["tutorial"]),
                _pair(loop["us_per_op"]),
                _pair(loop["cpu_us_per_op"]),
                _pair(link["cpu_us_per_op"]),
            ]
        )
    return table(header, rows)


def _pair(values: Mapping[str, float]) -> str:
    return f"{values['taskcore']:.0f} / {values['raw_psycopg2']:.0f}"


def _unit_table(results: Mapping[str, Any]) -> str:
    header = [
        "unit of work",
        "round trips",
        "target",
        "(raw)",
        "no protection",
        "loop units/s",
        "x raw",
        "2ms units/s",
        "x raw",
    ]
    rows = []
    for row in results["units_of_work"]:
        relation = "≤" if row["read_only"] else "="
        loop, link = row.get("loopback"), row.get("link")
        rows.append(
            [
                row["unit"],
                f"{_rt(row['round_trips']['taskcore'])} {_verdict(row['round_trips_pass'])}",
                f"{relation} {row['round_trips_target']}",
                f"({_rt(row['round_trips']['raw_psycopg2'])})",
                _rt(row.get("round_trips_without_commit_protection")),
                _ops(loop["ops_per_s"]["taskcore"]) if loop else "—",
                f"{loop['ratio_vs_raw']:.2f}" if loop else "—",
                _ops(link["ops_per_s"]["taskcore"]) if link else "—",
                f"{link['ratio_vs_raw']:.2f}" if link else "—",
            ]
        )
    return table(header, rows)


def _bulk_lines(bulk: Mapping[str, Any]) -> list[str]:
    rts = bulk["round_trips"]
    off = bulk.get("round_trips_without_commit_protection")
    why = " incl. +1 commit ticket" if bulk.get("commit_protection") else ""
    lines = [
        f"Bulk: {bulk['n']:,} tasks in one unit of work (uow.tasks.create_many) vs "
        "psycopg2 execute_values(page_size=1000, RETURNING id) in one transaction",
        f"  round trips: taskcore {rts['taskcore']['round_trips']}"
        + (f" ({off['round_trips']} without commit protection)" if off else "")
        + f", execute_values {rts['raw_psycopg2']['round_trips']}  "
        f"(target ≤ {bulk['round_trips_target_max']}{why}) {_verdict(bulk['round_trips_pass'])}",
    ]
    loop = bulk.get("loopback")
    if loop:
        lines.append(
            f"  time (loopback, median): taskcore {loop['seconds']['taskcore']:.3f} s, "
            f"execute_values {loop['seconds']['raw_psycopg2']:.3f} s -> "
            f"{loop['time_ratio_vs_raw']:.2f}x (target ≤ {loop['target_time_ratio_max']:g}x) "
            f"{_verdict(loop['pass'])}"
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
        f"{step['base_s']:g} s + jitter {step['jitter_s']:.3f} s)  target ≤ one step "
        f"{_verdict(rec['pass'])}"
    )
    lines.append("  waits (s): " + ", ".join(f"{w:.3f}" for w in rec["waits_s"]))
    return lines


def _profile_lines(title: str, prof: Mapping[str, Any], top: int = 20) -> list[str]:
    shares = ", ".join(
        f"{lib} {pct:g}%" for lib, pct in list(prof["exclusive_time_by_library_pct"].items())[:7]
    )
    lines = [
        f"Profile: {title} ({prof['calls']} calls, {prof['us_per_call_profiled']:.0f} µs/call "
        "under cProfile)",
        f"  own time by library: {shares}",
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
    for entry in prof["top_own"][: top // 2]:
        lines.append(
            f"    {entry['own_us_per_op']:9.1f} / {entry['cum_us_per_op']:8.1f}  "
            f"x{entry['calls_per_op']:<6g} {entry['function']}"
        )
    return lines


def render(results: Mapping[str, Any]) -> str:
    """The whole report as text."""
    m, c = results["machine"], results["config"]
    out = [
        f"taskcore benchmark, {m['date']} | {m['platform']} | {m['cpu_count']} CPUs ({m['cpu']}) "
        f"| {m['python']} | {results['database']}",
        f"mode {c['mode']}: loopback {c['loop_ops']} calls x {c['loop_rounds']} rounds, "
        f"2ms link {c['link_ops']} x {c['link_rounds']} (FlakyProxy process adding "
        f"{c['link_one_way_s'] * 1e3:g} ms each way, all three through it)",
        "ops/s: medians over interleaved rounds; x raw = taskcore ops/s ÷ raw psycopg2 ops/s "
        "(same SQL statement); x tut = taskcore ops/s ÷ SQLModel tutorial pattern ops/s",
        "",
        "One-shot operations (round trips counted on the wire, steady state):",
        _one_shot_table(results),
        "",
        "Baselines (same run):",
        _baseline_table(results),
        "",
        "Units of work (round trips: BEGIN + k + COMMIT, + 1 commit ticket when commit "
        "protection is on):",
        _unit_table(results),
        "",
        *_bulk_lines(results["bulk"]),
        "",
        *_recovery_lines(results["recovery"]),
        "",
        "Targets (issue 5):",
        table(
            ["target", "required", "measured", "verdict"],
            [
                [t["name"], t["target"], f"{t['value']}", _verdict(t["pass"])]
                for t in results["targets"]
            ],
            right=2,
        ),
    ]
    misses = [t["name"] for t in results["targets"] if t["pass"] is False]
    out.append(
        f"{len(results['targets']) - len(misses)} of {len(results['targets'])} targets met"
        + (f"; missed: {', '.join(misses)}" if misses else "")
    )
    for row in results["one_shots"]:
        for phase, label in (("loopback", "loopback"), ("link", "2 ms link")):
            prof = row.get(phase, {}).get("profile")
            if prof:
                out += ["", *_profile_lines(f"taskcore {row['operation']}, {label}", prof)]
    bulk_prof = results["bulk"].get("loopback", {}).get("profile")
    if bulk_prof:
        out += ["", *_profile_lines(f"taskcore create_many of {results['bulk']['n']:,}", bulk_prof)]
    return "\n".join(out)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _md_phase(result: Mapping[str, Any]) -> list[str]:
    target = result["target_ratio_vs_raw"]
    return [
        _ops(result["ops_per_s"]["taskcore"]),
        f"{result['ratio_vs_raw']:.2f}",
        f"{result['ratio_vs_tutorial']:.1f}",
        f"≥ {target:g}: **{_verdict(result['pass'])}**",
    ]


def markdown(results: Mapping[str, Any]) -> str:
    """The results tables as Markdown (for README / specs)."""
    m = results["machine"]
    out = [
        f"Measured {m['date']} on {m['platform']}, {m['cpu_count']} CPUs ({m['cpu']}), "
        f"{m['python']}, SQLAlchemy {m['packages'].get('sqlalchemy')}, "
        f"psycopg2 {m['packages'].get('psycopg2-binary')}, {results['database']}; "
        f"load average at start {m.get('load_average_at_start')}, at end "
        f"{m.get('load_average_at_end')}; mode {results['config']['mode']}.",
        "",
        _md_table(
            [
                "operation",
                "round trips (raw / tutorial)",
                "loopback ops/s",
                "x raw",
                "x tutorial",
                "target",
                "2 ms link ops/s",
                "x raw",
                "x tutorial",
                "target",
            ],
            [
                [
                    f"`{row['operation']}`",
                    f"**{_rt(row['round_trips']['taskcore'])}** "
                    f"({_rt(row['round_trips']['raw_psycopg2'])} / "
                    f"{_rt(row['round_trips']['tutorial'])})",
                    *_md_phase(row["loopback"]),
                    *_md_phase(row["link"]),
                ]
                for row in results["one_shots"]
            ],
        ),
        "",
        _md_table(
            [
                "unit of work",
                "round trips (raw)",
                "target",
                "without commit protection",
                "loopback units/s",
                "x raw",
                "2 ms link units/s",
                "x raw",
            ],
            [
                [
                    row["unit"],
                    f"**{_rt(row['round_trips']['taskcore'])}** "
                    f"({_rt(row['round_trips']['raw_psycopg2'])})",
                    f"{'≤' if row['read_only'] else '='} {row['round_trips_target']}: "
                    f"**{_verdict(row['round_trips_pass'])}**",
                    _rt(row.get("round_trips_without_commit_protection")),
                    _ops(row["loopback"]["ops_per_s"]["taskcore"]),
                    f"{row['loopback']['ratio_vs_raw']:.2f}",
                    _ops(row["link"]["ops_per_s"]["taskcore"]),
                    f"{row['link']['ratio_vs_raw']:.2f}",
                ]
                for row in results["units_of_work"]
            ],
        ),
        "",
        *(f"- {line.strip()}" for line in _bulk_lines(results["bulk"])[1:]),
        *(f"- {line.strip()}" for line in _recovery_lines(results["recovery"])[:2]),
    ]
    return "\n".join(out)
