"""Run the benchmark: sse-chat against the Starlette peer and nginx + nchan, side by side; see
bench/README.md.

Makes bench/.venv from bench/requirements.txt on first use and re-runs itself in it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scenarios import NOTES, REDIS_KINDS, SCENARIOS, Scenario, rooms_for

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
LOADGEN_CPU = "1"
# Every server kind: the sse-chat replicas, the Starlette peer, nginx + nchan.
SERVER_KINDS = ("sse-chat", "peer", "nchan")


def ensure_venv() -> None:
    """Create or update bench/.venv, then re-exec this script inside it."""
    requirements = BENCH / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.write_text(digest)
    if Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])


def raise_fd_limit() -> None:
    """Servers and the load generator inherit this limit; thousands of streams need over 1024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def loadgen(
    scenario: Scenario,
    urls: list[str],
    pids: list[int],
    rooms: list[str],
    protocol: str,
    redis_ports: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Run the load generator on its own CPU; its JSON result (with the CPU seconds of each
    Redis in `redis_ports` over the sending)."""
    command = ["taskset", "-c", LOADGEN_CPU, "node", str(BENCH / "loadgen.mjs")]
    command += ["--rooms", ",".join(rooms), "--subscribers", str(scenario.subscribers)]
    command += ["--messages", str(scenario.messages), "--rate", str(scenario.rate)]
    command += ["--protocol", protocol, "--open-timeout", str(scenario.open_timeout)]
    for url in urls:
        command += ["--url", url]
    for pid in pids:
        command += ["--pid", str(pid)]
    for port in redis_ports:
        command += ["--redis-port", str(port)]
    if scenario.multi_room:
        command += ["--multi-room"]
    if scenario.burst:
        command += ["--burst"]
    if scenario.storm:
        command += ["--storm"]
    if scenario.reconnect:
        command += ["--reconnect", str(scenario.reconnect)]
    if not scenario.messages and not scenario.storm:
        command += ["--settle", "3"]
    # Bounded: opening (twice for a reconnect), 30 s to drain, the sending, settling.
    limit = 2 * scenario.open_timeout + 180
    done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    if done.returncode:
        raise RuntimeError(f"loadgen.mjs exited with {done.returncode}: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def sse_chat_metrics(urls: list[str]) -> list[dict[str, float]] | None:
    """Each sse-chat replica's `/metrics`, or None if one cannot be read."""
    import servers

    try:
        return [servers.read_metrics(url) for url in urls]
    except (OSError, ValueError) as error:
        print(f"cannot read /metrics: {error}", file=sys.stderr)
        return None


def metrics_change(
    before: list[dict[str, float]] | None, after: list[dict[str, float]] | None
) -> dict[str, float | None]:
    """What the run did to sse-chat's metrics: backplane reconnects over all replicas (a gauge
    counting since start; 0 expected), and the longest GC pause of any replica, if exposed."""
    if before is None or after is None:
        return {"backplane_reconnects": None, "gc_pause_seconds_max": None}
    reconnects = "sse_chat_backplane_reconnects"
    gc_pause = "sse_chat_gc_pause_seconds_max"
    pauses = [replica[gc_pause] for replica in after if gc_pause in replica]
    return {
        "backplane_reconnects": sum(
            a.get(reconnects, 0.0) - b.get(reconnects, 0.0)
            for b, a in zip(before, after, strict=True)
        ),
        "gc_pause_seconds_max": max(pauses) if pauses else None,
    }


def profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Start py-spy sampling `pid` without pausing it (written when it gets SIGINT)."""
    py_spy = str(VENV / "bin" / "py-spy")
    command = [py_spy, "record", "--nonblocking", "--format", "raw", "-o", str(out)]
    command += ["--rate", "200", "-p", str(pid)]
    return subprocess.Popen(
        ["taskset", "-c", LOADGEN_CPU, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _short(frame: str) -> str:
    """`func (/long/path/file.py:12)` -> `func (file.py:12)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def top_functions(collapsed: Path, count: int = 25) -> str:
    """Self and inclusive share of samples per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = [_short(frame) for frame in stack.split(";")]
        n = int(samples)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "self%  function"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in own.most_common(count)]
    lines += ["", "incl%  function"]
    lines += [f"{100 * n / total:5.1f}  {name}" for name, n in inclusive.most_common(count)]
    return "\n".join(lines)


class ClusterRunFailed(RuntimeError):
    """A run on the Redis Cluster could not be made; the message says why."""


def redis_cpu(by_port: dict[str, float], labels: dict[int, str]) -> dict[str, Any]:
    """The load generator's CPU seconds per Redis port, by node label (in `labels`' order), and
    the busiest primary's (the one Redis's)."""
    by_label = {label: by_port[str(port)] for port, label in labels.items()}
    primaries = [s for label, s in by_label.items() if not label.startswith("replica")]
    return {"redis_cpu_s": by_label, "redis_cpu_busiest_primary_s": max(primaries)}


def run_one(
    scenario: Scenario,
    server: str,
    redis_port: int,
    logs: Path,
    serial: int,
    profile_to: Path | None = None,
    redis: str = "one",
) -> dict[str, Any]:
    """Fresh servers (on a fresh Redis Cluster when `redis` is `cluster`, else on the Redis at
    `redis_port`, emptied), one load generator run; everything it started is stopped."""
    import procfs
    import redis_cluster
    import servers

    with ExitStack() as stack:
        layout = None
        cpu = None if scenario.redis_floats else servers.SERVER_CPU
        if redis == "cluster":
            try:
                layout = stack.enter_context(redis_cluster.redis_cluster(logs, cpu))
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                raise ClusterRunFailed(f"no Redis Cluster: {error}") from None
            labels = layout.labels()
        else:
            if cpu != servers.SERVER_CPU:  # a Redis placed as the scenario's cluster would be
                log = f"redis-{scenario.name}.log"
                redis_port = stack.enter_context(servers.redis_server(logs, cpu, log))
            labels = {redis_port: REDIS_KINDS["one"]}
        busy = procfs.wait_until_quiet()
        if layout is None:
            servers.redis_command(redis_port, "FLUSHALL")
        replicas = scenario.replicas if server == "sse-chat" else 1
        url = layout.url if layout else None
        try:
            running = stack.enter_context(
                servers.servers(server, replicas, redis_port, sys.executable, logs, url)
            )
        except RuntimeError as error:
            if layout is None:
                raise
            raise ClusterRunFailed(
                f"the Redis Cluster is up ({', '.join(labels.values())}), but sse-chat did not "
                f"start with SSE_CHAT_REDIS_URL={url} (this needs redis+cluster:// support, "
                f"issue #12): {error}"
            ) from None
        time.sleep(0.5)
        urls = [s.url for s in running]
        pids = [pid for s in running for pid in s.pids()]
        protocol = "nchan" if server == "nchan" else "sse-chat"
        before = sse_chat_metrics(urls) if server == "sse-chat" else None
        spy = profile(running[0].pid, profile_to) if profile_to else None
        rooms = rooms_for(scenario, serial, layout)
        measured = tuple(labels) if scenario.shards else ()
        machine = procfs.busy_and_total()
        try:
            result = loadgen(scenario, urls, pids, rooms, protocol, measured)
            busy_during = procfs.busy_since(machine)
        finally:
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
        if "redis_cpu_s" in result:
            result.update(redis_cpu(result.pop("redis_cpu_s"), labels))
        # A server that died during the run leaves figures that mean nothing (an RSS of 0).
        exited = [code for s in running if (code := s.process.poll()) is not None]
        if exited:
            print(f"{server} exited ({exited}) during the run: see {logs}", file=sys.stderr)
        elif server == "sse-chat":
            result["server_metrics"] = metrics_change(before, sse_chat_metrics(urls))
    key = scenario.key(redis)
    run = {"scenario": key, "server": server, "busy_before": busy, "result": result}
    # Both CPUs over the load generator's run: ours use CPU 0 and part of CPU 1; far more than
    # that says other work shared the machine.
    run["busy_during"] = busy_during
    if exited:
        run["server_exited"] = exited
    return run


def plan(
    scenarios: list[Scenario], kinds: list[str], redis_kinds: list[str]
) -> list[tuple[Scenario, str, str]]:
    """(scenario, server, redis) of each run of one repeat, in order: the peers only where they
    have something to compare, each scenario on what it runs on that `redis_kinds` allows."""
    runs = []
    for scenario in scenarios:
        for server in kinds:
            if server != "sse-chat" and scenario.sse_chat_only:
                continue
            for redis in scenario.redis:
                if len(scenario.redis) == 1 or redis in redis_kinds:
                    runs.append((scenario, server, redis))
    return runs


def pair_with_one_redis(runs: list[dict[str, Any]]) -> None:
    """Give each run on a Redis Cluster its busiest primary's CPU seconds over those of the one
    Redis in the same repeat (`busiest_primary_over_one_redis`), when both ran."""
    one = {
        (run["scenario"].rpartition("/")[0], run["repeat"]): run["result"]
        for run in runs
        if run["scenario"].endswith("/one") and "result" in run
    }
    for run in runs:
        if not run["scenario"].endswith("/cluster") or "result" not in run:
            continue
        single = one.get((run["scenario"].rpartition("/")[0], run["repeat"]))
        busiest = run["result"].get("redis_cpu_busiest_primary_s")
        if single and busiest is not None and single.get("redis_cpu_busiest_primary_s"):
            ratio = busiest / single["redis_cpu_busiest_primary_s"]
            run["result"]["busiest_primary_over_one_redis"] = ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--servers", default=",".join(SERVER_KINDS), help="comma-separated")
    parser.add_argument(
        "--redis",
        default=",".join(REDIS_KINDS),
        help="what cluster300 runs on: one (Redis), cluster (Redis Cluster), or both, in turn",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every scenario's stream count (e.g. 0.1 for a smoke run)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="b",
        choices=["a", "b", "d"],
        help="afterwards, py-spy sse-chat through one extra run of this scenario (default b)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops the processes this run started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    kinds = args.servers.split(",")
    redis_kinds = args.redis.split(",")
    unknown = [name for name in args.scenarios.split(",") if name not in SCENARIOS]
    unknown += [kind for kind in kinds if kind not in SERVER_KINDS]
    unknown += [kind for kind in redis_kinds if kind not in REDIS_KINDS]
    if unknown or args.scale <= 0:
        parser.error(
            f"unknown: {', '.join(unknown) or '--scale must be positive'} "
            f"(scenarios: {', '.join(SCENARIOS)}; servers: {', '.join(SERVER_KINDS)}; "
            f"redis: {', '.join(REDIS_KINDS)})"
        )
    missing = [tool for tool in ("node", "taskset", "redis-server") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"bench/run.py needs {', '.join(missing)} on PATH (see bench/README.md)")
    ensure_venv()
    sys.path.insert(0, str(BENCH))
    import report
    import servers

    chosen = [SCENARIOS[name].scaled(args.scale) for name in args.scenarios.split(",")]
    if "nchan" in kinds and not all(scenario.sse_chat_only for scenario in chosen):
        servers.install_nchan()
    raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out / f"logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    with servers.redis_server(logs) as redis_port:
        serial = 0
        for repeat in range(args.repeats):
            for scenario, server, redis in plan(chosen, kinds, redis_kinds):
                serial += 1
                title = scenario.title_on(redis)
                print(
                    f"[{repeat + 1}/{args.repeats}] {title}: {server}", file=sys.stderr, flush=True
                )
                try:
                    run = run_one(scenario, server, redis_port, logs, serial, redis=redis)
                except ClusterRunFailed as error:
                    print(f"{title} failed: {error}", file=sys.stderr, flush=True)
                    failures.append(f"{title}: {error}")
                    run = {"scenario": scenario.key(redis), "server": server, "failed": str(error)}
                run["repeat"] = repeat
                runs.append(run)
        pair_with_one_redis(runs)
        if args.profile:
            raw = args.out / f"profile-{args.profile}-{stamp}.txt"
            print(f"profiling sse-chat through ({args.profile})", file=sys.stderr, flush=True)
            scenario = SCENARIOS[args.profile].scaled(args.scale)
            run_one(scenario, "sse-chat", redis_port, logs, serial + 1, raw)
            summary_path = args.out / f"profile-{args.profile}-{stamp}-top.txt"
            summary_path.write_text(top_functions(raw) + "\n")
            print(f"profile: {summary_path}", file=sys.stderr)
    summary = report.summarise(runs)
    titles = {s.key(redis): s.title_on(redis) for s in chosen for redis in s.redis}
    lines = [report.table(summary, titles)]
    if "a" in summary and "a5" in summary:
        lines.append(report.versus(summary, "a5", "a", ["deliveries/s", "latency p99 ms"]))
    lines += [NOTES[s.name] for s in chosen if s.name in NOTES]
    text = "\n".join(lines)
    print(text)
    document = {
        "scenarios": [asdict(s) for s in chosen],
        "repeats": args.repeats,
        "scale": args.scale,
        "summary": summary,
        "runs": runs,
    }
    (args.out / f"bench-{stamp}.json").write_text(json.dumps(document, indent=1))
    (args.out / f"bench-{stamp}.txt").write_text(text + "\n")
    plotted = report.plot(summary, args.out / f"bench-{stamp}.png")
    written = "json,txt,png" if plotted else "json,txt"
    print(f"wrote {args.out}/bench-{stamp}.{{{written}}}", file=sys.stderr)
    if failures:
        raise SystemExit("bench/run.py: some runs failed:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
