"""The HTTP client every system uses: pooled connections, timeouts, and the host's source address."""

from __future__ import annotations

import httpx


def http_client(source_address: str | None = None, timeout: float = 30.0) -> httpx.Client:
    """A pooled httpx client whose connections leave from `source_address` (None: the OS chooses), so the per-address
    budget counted by the systems is the one our limiter counts (LEDGER_SOURCE_ADDRESS)."""
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    transport = httpx.HTTPTransport(local_address=source_address, limits=limits) if source_address else None
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), limits=limits, transport=transport)
