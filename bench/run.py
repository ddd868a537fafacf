"""Run the benchmark: sse-chat against the Starlette peer, side by side; see bench/README.md.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
LOADGEN_CPU = "1"


@dataclass(frozen=True)
class Scenario:
    """One load shape; `messages == 0` holds idle connections only."""

    name: str
    title: str
    subscribers: int
    messages: int = 0
    rate: float = 1.0
    replicas: int = 1


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("a", "(a) 1k subs, 200 msg @50/s", 1000, 200, 50),
        Scenario("b", "(b) 5k subs, 100 msg @20/s", 5000, 100, 20),
        Scenario("c1k", "(c) idle 1k", 1000),
        Scenario("c5k", "(c) idle 5k", 5000),
        Scenario("d", "(d) as (a), 3 replicas*", 1000, 200, 50, replicas=3),
    )
}


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


def loadgen(scenario: Scenario, urls: list[str], pids: list[int], room: str) -> dict[str, Any]:
    """Run the load generator on its own CPU; its JSON result."""
    command = ["taskset", "-c", LOADGEN_CPU, "node", str(BENCH / "loadgen.mjs")]
    command += ["--room", room, "--subscribers", str(scenario.subscribers)]
    command += ["--messages", str(scenario.messages), "--rate", str(scenario.rate)]
    for url in urls:
        command += ["--url", url]
    for pid in pids:
        command += ["--pid", str(pid)]
    if not scenario.messages:
        command += ["--settle", "3"]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


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
        spy = profile(running[0].pid, profile_to) if profile_to else None
        try:
            result = loadgen(
                scenario, [s.url for s in running], [s.pid for s in running], f"r{serial}"
            )
        finally:
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
    return {"scenario": scenario.name, "server": server, "busy_before": busy, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--servers", default="sse-chat,peer", help="comma-separated")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="b",
        choices=["a", "b", "d"],
        help="afterwards, py-spy sse-chat through one extra run of this scenario (default b)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    missing = [tool for tool in ("node", "taskset", "redis-server") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"bench/run.py needs {', '.join(missing)} on PATH (see bench/README.md)")
    ensure_venv()
    sys.path.insert(0, str(BENCH))
    import report
    import servers

    raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out / f"logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    chosen = [SCENARIOS[name] for name in args.scenarios.split(",")]
    kinds = args.servers.split(",")
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
            run_one(SCENARIOS[args.profile], "sse-chat", redis_port, logs, serial + 1, raw)
            summary_path = args.out / f"profile-{args.profile}-{stamp}-top.txt"
            summary_path.write_text(top_functions(raw) + "\n")
            print(f"profile: {summary_path}", file=sys.stderr)
    summary = report.summarise(runs)
    titles = {s.name: s.title for s in SCENARIOS.values()}
    text = report.table(summary, titles)
    print(text)
    print("* (d): sse-chat runs 3 replicas on CPU 0 sharing one Redis; the peer runs one process.")
    document = {
        "scenarios": [asdict(s) for s in chosen],
        "repeats": args.repeats,
        "summary": summary,
        "runs": runs,
    }
    (args.out / f"bench-{stamp}.json").write_text(json.dumps(document, indent=1))
    (args.out / f"bench-{stamp}.txt").write_text(text + "\n")
    report.plot(summary, args.out / f"bench-{stamp}.png")
    print(f"wrote {args.out}/bench-{stamp}.{{json,txt,png}}", file=sys.stderr)


if __name__ == "__main__":
    main()
