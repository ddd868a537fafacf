"""Medians over repeats, the side-by-side table, and the plot (pure, except for writing the PNG)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

Record = dict[str, Any]
Metric = tuple[str, Callable[[Record], float | None]]
SERVERS = ("sse-chat", "peer", "nchan")  # the first is ours; a ratio column against each other
MIB = 1024


def _at(record: Record, *keys: str) -> float | None:
    """record[k1][k2]..., or None where a key is missing or the value is null."""
    value: Any = record
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value)


def _burst(record: Record, *keys: str) -> float | None:
    """A figure of the opening wave, only when it was a burst (a ramp's says little)."""
    opening = record.get("open")
    if not isinstance(opening, dict) or opening.get("mode") != "burst":
        return None
    return _at(opening, *keys)


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


ERRORS: list[Metric] = [
    ("connect errors", lambda r: r["connect_errors"]),
    ("non-200 answers", lambda r: r["non_200"]),
    ("streams ended", lambda r: r["ended"]),
    ("not ready", lambda r: r["not_ready"]),
]
BURST: list[Metric] = [
    ("connects issued/s", lambda r: _burst(r, "issued_per_s")),
    ("all ready s", lambda r: _burst(r, "all_ready_s")),
    ("ready p50 ms", lambda r: _burst(r, "ready_ms", "p50")),
    ("ready p99 ms", lambda r: _burst(r, "ready_ms", "p99")),
]
SSE_CHAT_METRICS: list[Metric] = [
    ("backplane reconnects", lambda r: _at(r, "server_metrics", "backplane_reconnects")),
    ("GC pause max ms", lambda r: _ms(_at(r, "server_metrics", "gc_pause_seconds_max"))),
]
LOAD_METRICS: list[Metric] = [
    ("deliveries/s", lambda r: r["deliveries_per_s"]),
    ("latency p50 ms", lambda r: _at(r, "latency_ms", "p50")),
    ("latency p95 ms", lambda r: _at(r, "latency_ms", "p95")),
    ("latency p99 ms", lambda r: _at(r, "latency_ms", "p99")),
    ("latency max ms", lambda r: _at(r, "latency_ms", "max")),
    ("lost", lambda r: r["lost"]),
    ("duplicated", lambda r: r["duplicates"]),
    ("order violations", lambda r: r["order_violations"]),
    *BURST,
    *ERRORS,
    ("POST failures", lambda r: r["posts_failed"]),
    ("POST p99 ms", lambda r: _at(r, "post_ms", "p99")),
    ("server CPU %", lambda r: r["server_cpu_percent"]),
    ("server RSS MiB", lambda r: r["rss_after_kib"] / MIB),
    ("loadgen CPU %", lambda r: r["loadgen_cpu_percent"]),
]
IDLE_METRICS: list[Metric] = [
    ("KiB per idle connection", lambda r: r["kib_per_idle_connection"]),
    ("server RSS MiB", lambda r: r["rss_idle_kib"] / MIB),
    *ERRORS,
]
STORM_METRICS: list[Metric] = [
    *BURST,
    ("ready max ms", lambda r: _burst(r, "ready_ms", "max")),
    *ERRORS,
    ("KiB per stream", lambda r: r["storm"]["kib_per_stream"]),
    ("server RSS MiB", lambda r: r["storm"]["rss_after_kib"] / MIB),
    ("POSTs ok", lambda r: r["storm"]["posts_ok"]),
    ("POST failures", lambda r: r["storm"]["posts_failed"]),
    ("POST p50 ms", lambda r: _at(r, "storm", "post_ms", "p50")),
    ("POST p99 ms", lambda r: _at(r, "storm", "post_ms", "p99")),
    *SSE_CHAT_METRICS,
]
RECONNECT_METRICS: list[Metric] = [
    ("KiB per idle connection", lambda r: r["kib_per_idle_connection"]),
    ("RSS after open MiB", lambda r: r["rss_idle_kib"] / MIB),
    ("RSS after reconnect MiB", lambda r: r["reconnect"]["rss_after_kib"] / MIB),
    ("reconnects issued/s", lambda r: r["reconnect"]["issued_per_s"]),
    ("reconnect all ready s", lambda r: r["reconnect"]["all_ready_s"]),
    ("reconnect ready p99 ms", lambda r: _at(r, "reconnect", "ready_ms", "p99")),
    *ERRORS,
    ("not ready after reconnect", lambda r: r["reconnect"]["not_ready"]),
    *SSE_CHAT_METRICS,
]


def redis_metrics(record: Record) -> list[Metric]:
    """Each Redis node's CPU seconds over the sending (its labels are the same in every run of
    a scenario), the busiest primary's, and that over the one Redis's of the same repeat."""
    rows: list[Metric] = [
        (f"Redis CPU s: {label}", lambda r, label=label: _at(r, "redis_cpu_s", label))
        for label in record["redis_cpu_s"]
    ]
    if len(record["redis_cpu_s"]) > 1:
        rows += [
            ("Redis CPU s: busiest primary", lambda r: _at(r, "redis_cpu_busiest_primary_s")),
            (
                "busiest primary / one Redis (target <= 0.45)",
                lambda r: _at(r, "busiest_primary_over_one_redis"),
            ),
        ]
    return rows


def metrics_for(records: list[Record]) -> list[Metric]:
    """The rows for a scenario, by the shape of its results."""
    first = records[0]
    if "storm" in first:
        return STORM_METRICS
    if "reconnect" in first:
        return RECONNECT_METRICS
    if "deliveries_per_s" not in first:
        return IDLE_METRICS
    if "redis_cpu_s" in first:
        return [*LOAD_METRICS, *redis_metrics(first)]
    return LOAD_METRICS


# Runs that left no figures: a server that died during it, or one that could not be made.
BROKEN = (("server_exited", "server died (runs)"), ("failed", "failed (runs)"))


def summarise(runs: list[Record]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """scenario -> metric -> server -> {median, min, max, n}; a metric no server has is left out.

    A run whose server died counts in the row `server died (runs)`, one that could not be made
    (`failed`) in `failed (runs)`, and nowhere else."""
    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for scenario in dict.fromkeys(run["scenario"] for run in runs):
        mine = [run for run in runs if run["scenario"] == scenario]
        for field, row_name in BROKEN:
            broken = [run for run in mine if run.get(field)]
            if not broken:
                continue
            row = summary.setdefault(scenario, {}).setdefault(row_name, {})
            for server in dict.fromkeys(run["server"] for run in mine):
                n = float(sum(run["server"] == server for run in broken))
                row[server] = {"median": n, "min": n, "max": n, "n": 1}
        mine = [run for run in mine if not any(run.get(field) for field, _ in BROKEN)]
        if not mine:
            continue
        for name, metric in metrics_for([run["result"] for run in mine]):
            row: dict[str, dict[str, float]] = {}
            for server in SERVERS:
                measured = [metric(run["result"]) for run in mine if run["server"] == server]
                values = [value for value in measured if value is not None]
                if values:
                    row[server] = {
                        "median": statistics.median(values),
                        "min": min(values),
                        "max": max(values),
                        "n": len(values),
                    }
            if row:
                summary.setdefault(scenario, {})[name] = row
    return summary


def _cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "-"
    median, low, high = stats["median"], stats["min"], stats["max"]
    text = f"{median:,.1f}" if abs(median) < 100 else f"{median:,.0f}"
    if stats["n"] > 1 and low != high:
        text += f" [{low:,.4g}-{high:,.4g}]"
    return text


def _ratio(ours: dict[str, float] | None, theirs: dict[str, float] | None) -> str:
    if ours and theirs and theirs["median"]:
        return f"{ours['median'] / theirs['median']:.2f}"
    return "-"


def servers_in(summary: dict[str, Any]) -> list[str]:
    """The servers that have a figure anywhere in `summary`, in SERVERS order."""
    present = {server for metrics in summary.values() for row in metrics.values() for server in row}
    return [server for server in SERVERS if server in present]


def table(summary: dict[str, Any], titles: dict[str, str]) -> str:
    """The side-by-side table: median [min-max] per server and sse-chat / each other's median."""
    ours, *others = SERVERS
    shown = servers_in(summary)
    versus = [other for other in others if other in shown and ours in shown]
    header = ("scenario", "metric", *shown, *(f"{ours}/{other}" for other in versus))
    rows: list[tuple[str, ...]] = [header]
    for scenario, metrics in summary.items():
        for index, (name, row) in enumerate(metrics.items()):
            label = titles.get(scenario, scenario) if index == 0 else ""
            cells = [_cell(row.get(server)) for server in shown]
            ratios = [_ratio(row.get(ours), row.get(other)) for other in versus]
            rows.append((label, name, *cells, *ratios))
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def versus(summary: dict[str, Any], ours: str, theirs: str, metrics: list[str]) -> str:
    """One line: scenario `ours` against `theirs`, sse-chat's medians of `metrics` and their
    ratio (e.g. five rooms per stream against one)."""
    server = SERVERS[0]
    parts = []
    for name in metrics:
        mine = summary[ours].get(name, {}).get(server)
        other = summary[theirs].get(name, {}).get(server)
        if mine and other:
            parts.append(f"{name} {_cell(mine)} vs {_cell(other)} ({_ratio(mine, other)})")
    return f"{ours} vs {theirs} ({server}): " + ("; ".join(parts) or "nothing to compare")


def plot(summary: dict[str, Any], path: Path) -> bool:
    """Latency percentiles and deliveries/s per load scenario, every server, as a PNG; False
    (nothing written) when no scenario posted messages."""
    scenarios = [name for name, metrics in summary.items() if "deliveries/s" in metrics]
    if not scenarios:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = servers_in(summary)
    figure, (latency, rate) = plt.subplots(1, 2, figsize=(12, 4.5))
    bars = 3 * len(shown)
    width = 0.8 / max(1, bars)
    for offset, server in enumerate(shown):
        for step, percentile in enumerate(("p50", "p95", "p99")):
            values = [
                summary[s].get(f"latency {percentile} ms", {}).get(server, {}).get("median", 0)
                for s in scenarios
            ]
            x = [i + (offset * 3 + step - (bars - 1) / 2) * width for i in range(len(scenarios))]
            latency.bar(x, values, width, label=f"{server} {percentile}")
        values = [summary[s]["deliveries/s"].get(server, {}).get("median", 0) for s in scenarios]
        span = 0.8 / max(1, len(shown))
        x = [i + (offset - (len(shown) - 1) / 2) * span for i in range(len(scenarios))]
        rate.bar(x, values, span, label=server)
    for axes, title in ((latency, "end-to-end latency (ms, log)"), (rate, "deliveries/s")):
        axes.set_xticks(range(len(scenarios)), scenarios)
        axes.set_title(title)
        axes.legend(fontsize="small")
    latency.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
