"""Process and port helpers for tests, benchmarks and the one-machine cluster: a free loopback port, polling until a
probe answers. One home (tests, bench/ and cluster.py import them from here)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it; a race is possible but rare)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Call `probe` every `every` seconds until it returns something truthy (returned) or `timeout` seconds pass.
    Raises AssertionError naming `what` on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := probe():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
