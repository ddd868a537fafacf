"""Medians over repeats, the side-by-side table, and the plot (pure, except for writing the PNG)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

Record = dict[str, Any]
SERVERS = ("sse-chat", "peer")

LOAD_METRICS: list[tuple[str, Callable[[Record], float]]] = [
    ("deliveries/s", lambda r: r["deliveries_per_s"]),
    ("latency p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("latency p95 ms", lambda r: r["latency_ms"]["p95"]),
    ("latency p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("latency max ms", lambda r: r["latency_ms"]["max"]),
    ("lost", lambda r: r["lost"]),
    ("duplicated", lambda r: r["duplicates"]),
    ("order violations", lambda r: r["order_violations"]),
    ("connection errors", lambda r: r["connection_errors"] + r["not_ready"] + r["posts_failed"]),
    ("POST p99 ms", lambda r: r["post_ms"]["p99"]),
    ("server CPU %", lambda r: r["server_cpu_percent"]),
    ("server RSS MiB", lambda r: r["rss_after_kib"] / 1024),
    ("loadgen CPU %", lambda r: r["loadgen_cpu_percent"]),
]
IDLE_METRICS: list[tuple[str, Callable[[Record], float]]] = [
    ("KiB per idle connection", lambda r: r["kib_per_idle_connection"]),
    ("server RSS MiB", lambda r: r["rss_idle_kib"] / 1024),
    ("connection errors", lambda r: r["connection_errors"] + r["not_ready"]),
]


def metrics_for(records: list[Record]) -> list[tuple[str, Callable[[Record], float]]]:
    return LOAD_METRICS if "deliveries_per_s" in records[0] else IDLE_METRICS


def summarise(runs: list[Record]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """scenario -> metric -> server -> {median, min, max, n}."""
    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for scenario in dict.fromkeys(run["scenario"] for run in runs):
        mine = [run for run in runs if run["scenario"] == scenario]
        for name, metric in metrics_for([run["result"] for run in mine]):
            row = summary.setdefault(scenario, {}).setdefault(name, {})
            for server in SERVERS:
                values = [metric(run["result"]) for run in mine if run["server"] == server]
                if values:
                    row[server] = {
                        "median": statistics.median(values),
                        "min": min(values),
                        "max": max(values),
                        "n": len(values),
                    }
    return summary


def _cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "-"
    median, low, high = stats["median"], stats["min"], stats["max"]
    text = f"{median:,.1f}" if abs(median) < 100 else f"{median:,.0f}"
    if stats["n"] > 1 and low != high:
        text += f" [{low:,.4g}-{high:,.4g}]"
    return text


def table(summary: dict[str, Any], titles: dict[str, str]) -> str:
    """The side-by-side table: median [min-max] per server and the sse-chat/peer ratio."""
    header = ("scenario", "metric", "sse-chat", "peer", "sse-chat/peer")
    rows: list[tuple[str, ...]] = [header]
    for scenario, metrics in summary.items():
        for index, (name, row) in enumerate(metrics.items()):
            ours, peer = row.get("sse-chat"), row.get("peer")
            ratio = "-"
            if ours and peer and peer["median"]:
                ratio = f"{ours['median'] / peer['median']:.2f}"
            label = titles.get(scenario, scenario) if index == 0 else ""
            rows.append((label, name, _cell(ours), _cell(peer), ratio))
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Latency percentiles and deliveries/s per load scenario, both servers, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [name for name, metrics in summary.items() if "deliveries/s" in metrics]
    figure, (latency, rate) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.12
    for offset, server in enumerate(SERVERS):
        for step, percentile in enumerate(("p50", "p95", "p99")):
            values = [
                summary[s][f"latency {percentile} ms"].get(server, {}).get("median", 0)
                for s in scenarios
            ]
            x = [i + (offset * 3 + step - 2.5) * width for i in range(len(scenarios))]
            latency.bar(x, values, width, label=f"{server} {percentile}")
        values = [summary[s]["deliveries/s"].get(server, {}).get("median", 0) for s in scenarios]
        rate.bar(
            [i + (offset - 0.5) * 0.35 for i in range(len(scenarios))], values, 0.35, label=server
        )
    for axes, title in ((latency, "end-to-end latency (ms, log)"), (rate, "deliveries/s")):
        axes.set_xticks(range(len(scenarios)), scenarios)
        axes.set_title(title)
        axes.legend(fontsize="small")
    latency.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
