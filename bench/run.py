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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
LOADGEN_CPU = "1"


@dataclass(frozen=True)
class Scenario:
    """One load shape; `messages == 0` holds idle connections only.

    `burst`: the streams open all at once, not in a ramp. `storm`: they open all at once while
    POSTs go at `rate`/s until every stream is ready. `reconnect`: once all are open, that many
    are closed and reopened at once. `open_timeout`: seconds for the streams to be ready."""

    name: str
    title: str
    subscribers: int
    messages: int = 0
    rate: float = 1.0
    replicas: int = 1
    burst: bool = False
    storm: bool = False
    reconnect: int = 0
    open_timeout: float = 60.0

    def scaled(self, factor: float) -> Scenario:
        """The same shape with `factor` times the streams (for a quick smoke run)."""
        if factor == 1:
            return self
        return replace(
            self,
            subscribers=max(1, round(self.subscribers * factor)),
            reconnect=round(self.reconnect * factor),
            title=f"{self.title} x{factor:g}",
        )


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("a", "(a) 1k subs, 200 msg @50/s", 1000, 200, 50),
        Scenario("b", "(b) 5k subs at once, 100 msg @20/s", 5000, 100, 20, burst=True),
        Scenario("c1k", "(c) idle 1k", 1000),
        Scenario("c5k", "(c) idle 5k", 5000),
        Scenario("d", "(d) as (a), 3 replicas*", 1000, 200, 50, replicas=3),
        Scenario("storm", "storm: 5k streams at once, POSTs @20/s", 5000, rate=20, storm=True),
        Scenario(
            "reconnect12k",
            "reconnect12k: 12k idle, 4k reconnect",
            12000,
            reconnect=4000,
            open_timeout=180,
        ),
    )
}
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
    scenario: Scenario, urls: list[str], pids: list[int], room: str, protocol: str
) -> dict[str, Any]:
    """Run the load generator on its own CPU; its JSON result."""
    command = ["taskset", "-c", LOADGEN_CPU, "node", str(BENCH / "loadgen.mjs")]
    command += ["--room", room, "--subscribers", str(scenario.subscribers)]
    command += ["--messages", str(scenario.messages), "--rate", str(scenario.rate)]
    command += ["--protocol", protocol, "--open-timeout", str(scenario.open_timeout)]
    for url in urls:
        command += ["--url", url]
    for pid in pids:
        command += ["--pid", str(pid)]
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


def run_one(
    scenario: Scenario,
    server: str,
    redis_port: int,
    logs: Path,
    serial: int,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """Fresh servers, one load generator run, servers stopped."""
    import procfs
    import servers
    from servers import redis_command

    busy = procfs.wait_until_quiet()
    redis_command(redis_port, "FLUSHALL")
    replicas = scenario.replicas if server == "sse-chat" else 1
    with servers.servers(server, replicas, redis_port, sys.executable, logs) as running:
        time.sleep(0.5)
        urls = [s.url for s in running]
        pids = [pid for s in running for pid in s.pids()]
        protocol = "nchan" if server == "nchan" else "sse-chat"
        before = sse_chat_metrics(urls) if server == "sse-chat" else None
        spy = profile(running[0].pid, profile_to) if profile_to else None
        try:
            result = loadgen(scenario, urls, pids, f"r{serial}", protocol)
        finally:
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
        # A server that died during the run leaves figures that mean nothing (an RSS of 0).
        exited = [code for s in running if (code := s.process.poll()) is not None]
        if exited:
            print(f"{server} exited ({exited}) during the run: see {logs}", file=sys.stderr)
        elif server == "sse-chat":
            result["server_metrics"] = metrics_change(before, sse_chat_metrics(urls))
    run = {"scenario": scenario.name, "server": server, "busy_before": busy, "result": result}
    if exited:
        run["server_exited"] = exited
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--servers", default=",".join(SERVER_KINDS), help="comma-separated")
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
    unknown = [name for name in args.scenarios.split(",") if name not in SCENARIOS]
    unknown += [kind for kind in kinds if kind not in SERVER_KINDS]
    if unknown or args.scale <= 0:
        parser.error(
            f"unknown: {', '.join(unknown) or '--scale must be positive'} "
            f"(scenarios: {', '.join(SCENARIOS)}; servers: {', '.join(SERVER_KINDS)})"
        )
    missing = [tool for tool in ("node", "taskset", "redis-server") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"bench/run.py needs {', '.join(missing)} on PATH (see bench/README.md)")
    ensure_venv()
    sys.path.insert(0, str(BENCH))
    import report
    import servers

    if "nchan" in kinds:
        servers.install_nchan()
    raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out / f"logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    chosen = [SCENARIOS[name].scaled(args.scale) for name in args.scenarios.split(",")]
    runs: list[dict[str, Any]] = []
    with servers.redis_server(logs) as redis_port:
        serial = 0
        for repeat in range(args.repeats):
            for scenario in chosen:
                for server in kinds:
                    serial += 1
                    print(
                        f"[{repeat + 1}/{args.repeats}] {scenario.title}: {server}",
                        file=sys.stderr,
                        flush=True,
                    )
                    run = run_one(scenario, server, redis_port, logs, serial)
                    run["repeat"] = repeat
                    runs.append(run)
        if args.profile:
            raw = args.out / f"profile-{args.profile}-{stamp}.txt"
            print(f"profiling sse-chat through ({args.profile})", file=sys.stderr, flush=True)
            scenario = SCENARIOS[args.profile].scaled(args.scale)
            run_one(scenario, "sse-chat", redis_port, logs, serial + 1, raw)
            summary_path = args.out / f"profile-{args.profile}-{stamp}-top.txt"
            summary_path.write_text(top_functions(raw) + "\n")
            print(f"profile: {summary_path}", file=sys.stderr)
    summary = report.summarise(runs)
    titles = {s.name: s.title for s in chosen}
    text = report.table(summary, titles)
    print(text)
    print("* (d): sse-chat runs 3 replicas on CPU 0 sharing one Redis; the others one process.")
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


if __name__ == "__main__":
    main()
