"""What the deployment checks share: the repository root, the tools, a stand-in /healthz."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """A command-line tool installed in the test environment (beside this Python)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed in {path.parent} (tests/run installs it)"
    return str(path)


def run(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to the end, keeping its output for the assert that reads it."""
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


@dataclass
class LivenessServer:
    """An HTTP server answering every GET with `status`, remembering the paths asked for."""

    port: int
    status: int = 200
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def liveness_server() -> Iterator[LivenessServer]:
    server_state = LivenessServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.paths.append(self.path)
            self.send_response(server_state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        server_state.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server_state
        finally:
            server.shutdown()
            thread.join()
