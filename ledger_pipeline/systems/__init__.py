"""The accounting systems, one package each (client, auth, sink, chart), listed here and nowhere else.

Adding a system: copy a package, implement `open_connection(settings, options) -> Connection` in its
`__init__.py`, add one line to SYSTEMS. The pipeline (assets, posting engine, reconciliation) does not change.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ledger_pipeline.ledger.sink import LedgerSink
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.vault import TokenVault


@dataclass(frozen=True)
class SystemInfo:
    name: str
    title: str
    sandbox_prefix: str  # where `ledger-pipeline sandbox` serves its emulation ("" = the root, Jurnal's paths)


SYSTEMS: dict[str, SystemInfo] = {s.name: s for s in [
    SystemInfo("jurnal", "Jurnal.id (Mekari)", ""),
    SystemInfo("quickbooks", "QuickBooks Online", "/quickbooks"),
    SystemInfo("zoho", "Zoho Books", "/zoho"),
    SystemInfo("aden", "Aden general ledger", "/aden"),
    SystemInfo("rootfi", "Rootfi unified accounting API", "/rootfi"),
]}

Priority = Literal["posting", "background"]


@dataclass(frozen=True)
class ChartAccount:
    """One account of a tenant's chart, as every system's chart maps onto it."""

    account_id: str
    number: str
    name: str
    category: str | None = None
    parent_id: str | None = None
    archived: bool = False


@dataclass(frozen=True)
class OpenOptions:
    database_url: str  # the operational database: tokens, OAuth states
    rate_limit_scale: float = 1.0  # the client's pacing clock (match the sandbox's --rate-limit-scale)
    backoff_initial: float = 0.5
    timeout: float = 30.0
    priority: Priority = "posting"  # background reads (charts, drift) yield to posting on the host's budget


class Connection(Protocol):
    """One system, opened for a run: its sink, its chart reader, its auth flow, one pooled HTTP client."""

    system: str
    sink: LedgerSink
    vault: TokenVault

    @property
    def requests(self) -> int:
        """API requests sent so far (the budget that matters at month-end)."""

    def fetch_chart(self, tenant_id: str) -> list[ChartAccount]:
        """The tenant's whole chart, inactive accounts included. Raises SinkError (needs_reauth, retryable, ...)."""

    def connect_tenant(self, tenant_id: str, open_url: Callable[[str], None]) -> None:
        """The system's own authorisation flow for one tenant; credentials land encrypted in the vault."""

    def close(self) -> None: ...


def title(system: str) -> str:
    """The system's name as its users know it ("QuickBooks Online"), for every message about a tenant; an unknown
    name as given."""
    return SYSTEMS[system].title if system in SYSTEMS else (system or "its accounting system")


def titles() -> dict[str, str]:
    """{system: its title} for every system of the registry (the posting engine's messages)."""
    return {name: info.title for name, info in SYSTEMS.items()}


def get(name: str) -> SystemInfo:
    if name not in SYSTEMS:
        raise ValueError(f"unknown accounting system {name!r}; known: {', '.join(SYSTEMS)}")
    return SYSTEMS[name]


def open_connection(system: str, settings: Settings, options: OpenOptions) -> Connection:
    get(system)
    module = importlib.import_module(f"ledger_pipeline.systems.{system}")
    return module.open_connection(settings, options)


class Connections:
    """The systems a run talks to, each opened on first use and closed together (a context manager)."""

    def __init__(self, settings: Settings, options: OpenOptions):
        self.settings, self.options = settings, options
        self._open: dict[str, Connection] = {}

    def __call__(self, system: str) -> Connection:
        if system not in self._open:
            self._open[system] = open_connection(system, self.settings, self.options)
        return self._open[system]

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self._open.values())

    def requests_by_system(self) -> dict[str, int]:
        return {name: c.requests for name, c in self._open.items()}

    def close(self) -> None:
        for c in self._open.values():
            c.close()
        self._open.clear()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
