"""Gather the benchmarks' results into one table: ``bench/results/report.md`` and ``report.json``.

Reads each benchmark's JSON under ``bench/results/`` (the intake benchmark prints only; its captured output
``intake.out`` is parsed), describes the machine, and writes a row per figure: value, the baseline measured in the
same run, their ratio, the target and whether it is met. ``python -m bench.report`` rebuilds the report from the
files already there.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    met: str


def _read(name: str) -> Any:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "n/a"


_LINE = re.compile(
    r"^(?P<label>.+?)\s+(?P<rate>\d+)/s\s+p50\s+(?P<p50>[\d.]+) ms\s+p95\s+[\d.]+ ms\s+p99\s+(?P<p99>[\d.]+) ms"
)


def intake_lines(text: str) -> dict[str, dict[str, float]]:
    """``{label: {rate, p50, p99}}`` from bench.intake's printed lines."""
    found: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if match := _LINE.match(line.strip()):
            found[match["label"].strip()] = {k: float(match[k]) for k in ("rate", "p50", "p99")}
    return found


def intake_rows() -> list[Row]:
    path = RESULTS / "intake.out"
    if not path.exists():
        return []
    lines = intake_lines(path.read_text())
    rows: list[Row] = []
    bare, intake = lines.get("bare endpoint (saturated)"), lines.get("intake (saturated)")
    if bare and intake:
        ok = intake["rate"] >= 1000 and intake["rate"] >= 0.5 * bare["rate"]
        rows.append(
            Row(
                "webhook intake throughput (saturated)",
                f"{intake['rate']:.0f}/s",
                f"bare endpoint {bare['rate']:.0f}/s",
                _ratio(intake["rate"], bare["rate"]),
                ">= 1000/s and >= 0.5x bare",
                _met(ok),
            )
        )
    paced_bare, paced = lines.get("bare endpoint @300/s"), lines.get("intake @300/s")
    if paced_bare and paced:
        rows.append(
            Row(
                "webhook intake p99 at 300/s",
                f"{paced['p99']:.1f} ms",
                f"bare endpoint {paced_bare['p99']:.1f} ms",
                _ratio(paced["p99"], paced_bare["p99"]),
                "<= 50 ms",
                _met(paced["p99"] <= 50),
            )
        )
    rows += before_after_rows(lines)
    rows += cpu_rows(path.read_text())
    return rows


_CPU_LINE = re.compile(
    r"^(?P<label>.*)server CPU per request \(saturated\): bare (?P<bare>\d+) us, intake (?P<intake>\d+) us"
)


def cpu_lines(text: str) -> dict[str, dict[str, float]]:
    """``{label prefix: {bare, intake}}`` (microseconds of server CPU per request) from bench.intake's output."""
    return {
        m["label"]: {"bare": float(m["bare"]), "intake": float(m["intake"])}
        for line in text.splitlines()
        if (m := _CPU_LINE.match(line.strip()))
    }


def cpu_rows(text: str) -> list[Row]:
    found = cpu_lines(text)
    now = found.get("")
    rows: list[Row] = []
    for label, before in found.items():
        if not label or now is None:
            continue
        worker = label.removeprefix("before (").partition("): ")[0]
        rows.append(
            Row(
                f"intake server CPU per delivery (saturated), this worker vs {worker}",
                f"{now['intake']:.0f} us",
                f"{worker} {before['intake']:.0f} us",
                _ratio(now["intake"], before["intake"]),
                "<= 1.0x before",
                _met(now["intake"] <= before["intake"]),
            )
        )
    return rows


def before_after_rows(lines: dict[str, dict[str, float]]) -> list[Row]:
    """The intake on the service's worker beside the same run on the worker it had before (``bench.intake`` runs
    both, ``before (<worker>): `` labels the earlier one): throughput must not fall."""
    rows: list[Row] = []
    for label, before in lines.items():
        if not label.startswith("before (") or "): " not in label:
            continue
        worker, _, what = label.removeprefix("before (").partition("): ")
        now = lines.get(what)
        if now is None or what not in ("intake (saturated)", "bare endpoint (saturated)", "intake @300/s"):
            continue
        if what == "intake @300/s":
            value, base, target, ok = now["p99"], before["p99"], "<= 50 ms", now["p99"] <= 50
            figure, unit = f"{what} p99, this worker vs {worker}", "ms"
        else:
            value, base, target, ok = now["rate"], before["rate"], ">= 1.0x before", now["rate"] >= before["rate"]
            figure, unit = f"{what}, this worker vs {worker}", "/s"
            if what.startswith("bare"):
                target, ok = "none (information)", True
        rows.append(
            Row(
                figure,
                f"{value:.1f} {unit}" if unit == "ms" else f"{value:.0f}{unit}",
                f"{worker} {base:.1f} {unit}" if unit == "ms" else f"{worker} {base:.0f}{unit}",
                _ratio(value, base),
                target,
                _met(ok) if target != "none (information)" else "n/a",
            )
        )
    return rows


def e2e_rows() -> list[Row]:
    data = _read("e2e_lag.json")
    if not data:
        return []
    lag, direct = data["receipt_to_commit"], data["direct_apply_call"]
    rate = data["setup"]["rate_per_s"]
    return [
        Row(
            f"end-to-end lag p50 (receipt to committed row, {rate:.0f}/s)",
            f"{lag['p50_ms']:.1f} ms",
            f"direct events.apply call {direct['p50_ms']:.1f} ms",
            _ratio(lag["p50_ms"], direct["p50_ms"]),
            "<= 100 ms",
            _met(lag["p50_ms"] <= 100),
        ),
        Row(
            f"end-to-end lag p99 ({rate:.0f}/s)",
            f"{lag['p99_ms']:.1f} ms",
            f"direct events.apply call {direct['p99_ms']:.1f} ms",
            _ratio(lag["p99_ms"], direct["p99_ms"]),
            "<= 1000 ms",
            _met(lag["p99_ms"] <= 1000),
        ),
    ]


def security_event_rows() -> list[Row]:
    """The role-change and session-revocation events of the same e2e_lag run, beside its user events."""
    data = _read("e2e_lag.json")
    if not data or "role_change_receipt_to_commit" not in data:
        return []
    users = data["receipt_to_commit"]
    rows = []
    for key, label in (
        ("role_change_receipt_to_commit", "role change"),
        ("session_revocation_receipt_to_commit", "session revocation"),
    ):
        lag = data.get(key) or {}
        if not lag.get("p50_ms"):
            continue
        rows.append(
            Row(
                f"end-to-end lag p50 / p99, {label} (receipt to applied)",
                f"{lag['p50_ms']:.1f} / {lag['p99_ms']:.1f} ms",
                f"user events {users['p50_ms']:.1f} / {users['p99_ms']:.1f} ms",
                _ratio(lag["p50_ms"], users["p50_ms"]),
                "<= 100 ms p50, <= 1000 ms p99",
                _met(lag["p50_ms"] <= 100 and lag["p99_ms"] <= 1000),
            )
        )
    return rows


def broker_rows() -> list[Row]:
    """Redis and RabbitMQ side by side (bench.brokers): each RabbitMQ figure against Redis's from the same run."""
    data = _read("brokers.json")
    if not data or not data.get("redis") or not data.get("rabbitmq"):
        return []
    redis, rabbit = data["redis"], data["rabbitmq"]
    rows = []
    if redis.get("intake") and rabbit.get("intake"):
        rows.append(
            Row(
                "broker: intake throughput (saturated), RabbitMQ",
                f"{rabbit['intake']['rate']:.0f}/s",
                f"Redis {redis['intake']['rate']:.0f}/s",
                _ratio(rabbit["intake"]["rate"], redis["intake"]["rate"]),
                ">= 1000/s",
                _met(rabbit["intake"]["rate"] >= 1000),
            )
        )
    for pct in ("p50", "p99"):
        value, base = rabbit["e2e_lag"][f"{pct}_ms"], redis["e2e_lag"][f"{pct}_ms"]
        target = 100 if pct == "p50" else 1000
        rows.append(
            Row(
                f"broker: end-to-end lag {pct}, RabbitMQ",
                f"{value:.1f} ms",
                f"Redis {base:.1f} ms",
                _ratio(value, base),
                f"<= {target} ms",
                _met(value <= target),
            )
        )
    return rows


def drain_rows() -> list[Row]:
    """The worker alone on a backlog (bench.drain), beside the task's own function called in a loop."""
    data = _read("drain.json")
    if not data:
        return []
    worker, direct = data["worker"], data["direct"]
    concurrency = data["args"]["concurrency"]
    return [
        Row(
            f"worker apply throughput (backlog, celery -c {concurrency})",
            f"{worker['per_second']:.0f} events/s",
            f"direct apply_events loop {direct['per_second']:.0f}/s",
            _ratio(worker["per_second"], direct["per_second"]),
            ">= 200/s (the soak's rate)",
            _met(worker["per_second"] >= 200),
        ),
        Row(
            "worker CPU per applied event",
            f"{worker['cpu_ms_per_event']:.2f} ms",
            f"direct apply_events {direct['cpu_ms_per_event']:.2f} ms",
            _ratio(worker["cpu_ms_per_event"], direct["cpu_ms_per_event"]),
            "none (information)",
            "n/a",
        ),
    ]


def login_rows() -> list[Row]:
    data = _read("login_callback.json")
    if not data:
        return []
    own, bare = data["callback_own"]["p50_ms"], data["baseline_healthz"]["p50_ms"]
    return [
        Row(
            "login callback, own server time p50",
            f"{own:.2f} ms",
            f"GET /healthz {bare:.2f} ms; session lookup {data['baseline_session_lookup']['p50_ms']:.2f} ms",
            _ratio(own, bare),
            f"<= {data['target_p50_ms']:.0f} ms",
            _met(own <= data["target_p50_ms"]),
        )
    ]


def reconcile_rows() -> list[Row]:
    data = _read("reconcile.json")
    if not data:
        return []
    rows: list[Row] = []
    for size, figures in data.get("sizes", {}).items():
        run, floor, loop = figures["reconcile"], figures["raw_floor"], figures["per_user_loop"]
        rows.append(
            Row(
                f"reconciliation of {int(size):,} users",
                f"{run['users_per_s']:.0f} users/s ({run['seconds']:.1f} s)",
                f"raw batched upsert {floor['users_per_s']:.0f}/s; per-user loop {loop['users_per_s']:.0f}/s",
                f"{figures['ratio_vs_raw_floor']:.2f}x floor; {figures['ratio_vs_per_user_loop']:.1f}x loop",
                ">= 0.3x floor, >= 10x loop" + (", <= 10 s" if int(size) >= 100_000 else ""),
                _met(
                    figures["ratio_vs_raw_floor"] >= 0.3
                    and figures["ratio_vs_per_user_loop"] >= 10
                    and (int(size) < 100_000 or run["seconds"] <= 10)
                ),
            )
        )
    for size, figures in data.get("sizes", {}).items():
        again, first = figures.get("rerun_unchanged"), figures["reconcile"]
        if again:
            rows.append(
                Row(
                    f"nightly re-run over {int(size):,} unchanged users",
                    f"{again['users_per_s']:.0f} users/s ({again['seconds']:.1f} s, {again['unchanged']:,} unchanged)",
                    f"first sync {first['users_per_s']:.0f} users/s",
                    _ratio(again["users_per_s"], first["users_per_s"]),
                    "none (information)",
                    "n/a",
                )
            )
    sizes = data.get("sizes", {})
    if {"10000", "100000"} <= set(sizes):
        small, large = sizes["10000"]["reconcile"], sizes["100000"]["reconcile"]
        rows.append(
            Row(
                "reconciliation peak memory growth, 100,000 vs 10,000 users",
                f"{large['peak_rss_growth_mb']:+.1f} MB",
                f"10,000 users {small['peak_rss_growth_mb']:+.1f} MB",
                f"{large['peak_rss_growth_mb'] - small['peak_rss_growth_mb']:+.1f} MB",
                "within 50 MB (flat)",
                _met(large["peak_rss_growth_mb"] - small["peak_rss_growth_mb"] <= 50),
            )
        )
    limited = data.get("rate_limited")
    if limited:
        rows.append(
            Row(
                f"reconciliation under the 200/min budget ({limited['users']:,} users)",
                f"{limited['requests_per_minute']:.0f} requests/min, {limited['rate_limited_429']} x 429",
                f"budget {limited['budget_per_minute']}/min",
                f"{limited['budget_used']:.2f}x",
                ">= 0.9x and <= 1.0x budget, no 429",
                _met(0.9 <= limited["budget_used"] <= 1.0 and limited["rate_limited_429"] == 0),
            )
        )
    return rows


def load_rows() -> list[Row]:
    data = _read("load.json")
    if not data:
        return []
    windows = data["windows"]
    first, last = windows[0], windows[-1]
    growth = data["rss_growth_mb"]
    setup = data["setup"]
    return [
        Row(
            f"load: intake p99, last vs first 5-s window ({setup['rate_per_s']:.0f}/s for {setup['seconds']:.0f} s)",
            f"{last['p99_ms']:.1f} ms",
            f"first window {first['p99_ms']:.1f} ms",
            f"{data['ratio_last_vs_first_window_p99']:.2f}x",
            "<= 2x (flat)",
            _met(data["ratio_last_vs_first_window_p99"] <= 2),
        ),
        Row(
            "load: memory growth over the run (web / worker, RSS of process trees)",
            f"{growth['web_mb']:+.1f} / {growth['worker_mb']:+.1f} MB",
            f"start {data['rss_start']['web_mb']:.0f} / {data['rss_start']['worker_mb']:.0f} MB",
            f"{data['rss_end']['web_mb'] / data['rss_start']['web_mb']:.2f}x / "
            f"{data['rss_end']['worker_mb'] / data['rss_start']['worker_mb']:.2f}x",
            "<= 50 MB each (bounded)",
            _met(max(growth.values()) <= 50),
        ),
    ]


def soak_rows() -> list[Row]:
    data = _read("soak.json")
    if not data:
        return []
    args, ledger = data["args"], data["ledger"]
    span = f"{args['rate']:.0f}/s for {args['seconds']:.0f} s"
    memory = data["memory_growth"]
    tables = data["after_retention_window"]
    flat = isinstance(tables, dict) and all(t["rows_max"] <= 1.25 * max(t["rows_min"], 1) + 50 for t in tables.values())
    return [
        Row(
            f"soak: worst 5-s window's intake p99 vs the median window ({span})",
            f"{data['worst_window_p99_ms']:.1f} ms",
            f"median window {data['median_window_p99_ms']:.1f} ms",
            f"{data['worst_vs_median_p99']:.2f}x",
            "<= 2x",
            _met(data["worst_vs_median_p99"] <= 2),
        ),
        Row(
            "soak: end-to-end lag p99, worst 5-s window",
            f"{data['lag_p99_worst_ms']:.0f} ms",
            "n/a",
            "n/a",
            "<= 1000 ms",
            _met(data["lag_p99_worst_ms"] is not None and data["lag_p99_worst_ms"] <= 1000),
        ),
        Row(
            "soak: memory growth, largest process (web / worker)",
            f"{memory['web']['largest_process_mb']:+.1f} / {memory['worker']['largest_process_mb']:+.1f} MB",
            f"trees {memory['web']['tree_mb']:+.1f} / {memory['worker']['tree_mb']:+.1f} MB",
            "n/a",
            "<= 50 MB per process",
            _met(max(memory["web"]["largest_process_mb"], memory["worker"]["largest_process_mb"]) <= 50),
        ),
        Row(
            "soak: inbox, sessions and runs rows once the retention window is reached",
            "; ".join(f"{k} {v['rows_min']}-{v['rows_max']}" for k, v in tables.items())
            if isinstance(tables, dict)
            else "not reached",
            f"inbox kept {args['inbox_retention_seconds']:.0f} s",
            "n/a",
            "flat",
            _met(flat) if isinstance(tables, dict) else "n/a (run shorter than the retention)",
        ),
        Row(
            "soak: ledger (accepted = applied, nothing pending or failed)",
            f"{ledger['accepted']} accepted, {ledger['applied_in_inbox'] + ledger['removed_by_housekeeping']} applied",
            f"{ledger['removed_by_housekeeping']} removed by housekeeping",
            "n/a",
            "balanced",
            _met(ledger["balanced"]),
        ),
    ]


def housekeeping_rows() -> list[Row]:
    data = _read("housekeeping.json")
    if not data:
        return []
    args, pooled = data["args"], data["pooled"]
    return [
        Row(
            f"housekeeping: intake p99 beside {args['rounds']} runs over {args['rows']:,} old inbox rows "
            f"({args['rate']:.0f}/s)",
            f"{pooled['beside']['p99_ms']:.1f} ms",
            f"alone {pooled['alone']['p99_ms']:.1f} ms",
            f"{data['p99_beside_vs_alone']:.2f}x",
            "<= 2x",
            _met(data["p99_beside_vs_alone"] <= 2),
        )
    ]


def catchup_rows() -> list[Row]:
    """Per case of bench.catchup: the catch-up's users repaired per second beside a full run's users listed per
    second over the same directory, and the time to 0 differences after the outage (target: five minutes)."""
    data = _read("catchup.json")
    if not data:
        return []
    args = data["args"]
    span = f"{args['outage_seconds']:.0f}-s outage, {args['changes']} changes, {args['users']} users"
    rows: list[Row] = []
    for case in data["cases"]:
        label = {"honour": "filter honoured", "refuse": "filter refused: a full run"}.get(case["mode"], case["mode"])
        up, full = case["catch_up"], case["baseline_full_run"]
        rate, base = up["repaired_per_second"] or 0.0, full["users_per_second"] or 0.0
        rows.append(
            Row(
                f"catch-up ({label}): users repaired per second ({span})",
                f"{rate:.0f}/s ({up['repaired']} in {up['seconds']:.2f} s)",
                f"full run over the same directory {base:.0f} users listed/s",
                _ratio(rate, base),
                "n/a",
                "n/a",
            )
        )
        zero = case["zero_differences_after_s"]
        rows.append(
            Row(
                f"catch-up ({label}): time from the restart to 0 differences ({span})",
                f"{zero:.0f} s" if zero is not None else "not reached",
                f"only deletions left after {case['only_deletions_left_after_s']} s; "
                f"{case['differences_after_outage']} differences at the restart",
                "n/a",
                "<= 300 s, 0 x 429",
                _met(zero is not None and zero <= 300 and case["rate_limited_429"] == 0),
            )
        )
    return rows


SECTIONS: list[Callable[[], list[Row]]] = [
    intake_rows,
    e2e_rows,
    drain_rows,
    security_event_rows,
    broker_rows,
    login_rows,
    reconcile_rows,
    load_rows,
    soak_rows,
    housekeeping_rows,
    catchup_rows,
]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(versions: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        **(versions or {}),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def server_versions() -> dict[str, str]:
    """Postgres and Redis versions of the servers the benchmarks use (CI's, or embedded ones started here)."""
    sys.path.insert(0, str(RESULTS.parent.parent))
    from tests.services import TestServices, libpq_url  # noqa: PLC0415 - the repository root joins sys.path just above

    svc = TestServices()
    svc.start()
    try:
        with psycopg.connect(libpq_url(svc.database_url)) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            postgres = str(row[0]) if row else "unknown"
        info = redis.Redis.from_url(svc.redis_url).info("server")
        return {"postgres": postgres, "redis": str(info.get("redis_version", "unknown"))}
    finally:
        svc.stop()


def write(runs: dict[str, Any] | None = None, versions: dict[str, str] | None = None) -> tuple[Path, Path]:
    rows = [row for section in SECTIONS for row in section()]
    about = machine(versions)
    payload = {"machine": about, "runs": runs or {}, "rows": [asdict(r) for r in rows]}
    json_path, md_path = RESULTS / "report.json", RESULTS / "report.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Benchmark report",
        "",
        f"Rebuilt on {about['date']} from each benchmark's latest results (`python -m bench` runs them all, "
        f"`python -m bench.<name>` one): {about['cpu']}, {about['cores']} cores, "
        f"{about['ram_gb']} GB RAM, Python {about['python']}, Postgres {about.get('postgres', '?')}, "
        f"Redis {about.get('redis', '?')}. Each figure stands beside its baseline from the same run.",
        "",
        "| figure | value | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|",
        *(f"| {r.figure} | {r.value} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |" for r in rows),
        "",
    ]
    if runs:
        lines += ["| benchmark | command | seconds | exit |", "|---|---|---|---|"]
        lines += [f"| {n} | `{r['command']}` | {r['seconds']:.0f} | {r['exit']} |" for n, r in runs.items()]
        lines.append("")
    md_path.write_text("\n".join(lines))
    return md_path, json_path


if __name__ == "__main__":
    print(write(versions=server_versions())[0].read_text())
