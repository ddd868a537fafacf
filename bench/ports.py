"""Free ports for private Redis nodes (no dependencies: both bench venvs import it)."""

from __future__ import annotations

import random
import socket


def free_cluster_port(taken: set[int]) -> int:
    """A free port below 30000 whose cluster bus port (port + 10000) is free too: node ports
    stay clear of every bus port, and all of them of the ephemeral range's start (32768)."""
    while True:
        port = random.randrange(20000, 30000)
        if port in taken:
            continue
        try:
            with socket.socket() as sock, socket.socket() as bus:
                sock.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        taken.add(port)
        return port
