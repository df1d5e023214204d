"""Progress of long steps, for whoever shows it: the CLI's progress bar listens in the same process (runs execute
in-process), the Dagster UI gets log lines from the asset itself."""

from __future__ import annotations

from collections.abc import Callable

from ledger_pipeline.posting import Progress

_LISTENERS: list[Callable[[str, Progress], None]] = []


def listen(callback: Callable[[str, Progress], None]) -> Callable[[], None]:
    """Register a listener; returns the function that unregisters it."""
    _LISTENERS.append(callback)
    return lambda: _LISTENERS.remove(callback) if callback in _LISTENERS else None


def report_progress(stage: str, progress: Progress) -> None:
    for callback in list(_LISTENERS):
        callback(stage, progress)
