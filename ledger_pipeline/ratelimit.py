"""A host-shared sliding-window rate limiter: one budget for every process and thread on this host.

Why: Jurnal (and QuickBooks, Zoho) limit requests per source IP and per token. A per-process limiter lets two
processes on one host (a backfill and the daily GL job) exceed the per-IP limit together. Here the window's state is
a SQLite file (WAL, one short `BEGIN IMMEDIATE` transaction per attempt), so every process that opens the same file
shares one budget.

- Rules are generic: `Rule(key, limit, window_seconds)`; a send is allowed when, for every rule, fewer than `limit`
  sends were recorded under that (key, window) in the last `window_seconds`. Callers apply their own time scale and
  headroom (see `scaled_rules`).
- Priority: posting goes before background reads. A posting caller registers a heartbeat in `waiters` on every attempt
  (waiting or granted); a background caller takes a slot only when no other caller's posting heartbeat is younger than
  `linger` seconds. A posting process that is busy (waiting, or acquiring again within `linger`) therefore gets the
  whole budget; once it pauses for longer than `linger`, background callers use the budget.
- Crashes: a killed process leaves only committed rows (SQLite releases its locks with the process); its sends age
  out of the window and its heartbeat stops counting after `linger`.
- Cost: per rule, sends are numbered; the check is two primary-key seeks (the last send, and the `limit`-th most
  recent one), whatever the window's size: 0.4-0.6 ms per acquire with Jurnal's four rules, commit included.
- Clock: wall time (`time.time`), read while holding the write lock, so recorded times rise in commit order across
  processes and survive reboots; if the clock steps back, a rule's sends are shifted back with it (ages kept).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Priority = Literal["posting", "background"]
PRIORITIES: tuple[Priority, ...] = ("posting", "background")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (rule TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
                                  PRIMARY KEY (rule, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS waiters (owner TEXT PRIMARY KEY, priority TEXT NOT NULL, seen REAL NOT NULL);
"""


@dataclass(frozen=True)
class Rule:
    """At most `limit` sends under `key` in any `window_seconds` (real seconds, already scaled)."""

    key: str
    limit: int
    window_seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_seconds <= 0:
            raise ValueError(f"a rule needs limit >= 1 and a positive window: {self}")

    @property
    def id(self) -> str:
        """The stored identity: one key may carry several windows (per minute and per hour)."""
        return f"{self.key}@{self.window_seconds!r}"


def scaled_rules(key: str, limits: Iterable[tuple[int, float]], scale: float = 1.0,
                 headroom: float = 0.95) -> list[Rule]:
    """Rules for `key` from (limit, window in unscaled seconds) pairs: `headroom` under each limit, time / `scale`."""
    return [Rule(key, max(1, int(n * headroom)), window / scale) for n, window in limits]


def address_key(source_address: str | None) -> str:
    """The per-IP key and file-name part for a source address; unset (the OS chooses) is "default"."""
    return re.sub(r"[^0-9A-Za-z.-]", "_", source_address) if source_address else "default"


class HostLimiter:
    """The shared window in one SQLite file. Thread-safe (one connection behind a lock) and fork-safe (reopens)."""

    def __init__(self, path: Path | str, *, linger: float = 1.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, busy_timeout: float = 30.0):
        self.path = Path(path)
        self.linger = linger  # how long a posting heartbeat keeps background callers out (real seconds)
        self._clock, self._sleep, self._busy_timeout = clock, sleep, busy_timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = -1
        self._calls = 0
        # called after each grant with (rules, priority, the recorded time): metrics, tests; must be quick
        self.on_grant: Callable[[list[Rule], Priority, float], None] | None = None

    # -- connection ------------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():  # a forked child must not share its parent's handle
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                                 check_same_thread=False)
            for _ in range(50):  # journal_mode=WAL needs a moment alone when several processes open at once
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    time.sleep(0.05)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes, no fsync each
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(stmt)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._db, self._pid = db, os.getpid()
        return self._db

    def close(self) -> None:
        """Drop this process's heartbeats and the connection (optional: stale rows age out anyway)."""
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                try:
                    self._db.execute("DELETE FROM waiters WHERE owner LIKE ?", (f"{os.getpid()}:%",))
                finally:
                    self._db.close()
            self._db = None

    # -- core ------------------------------------------------------------------------------------------------
    @staticmethod
    def owner() -> str:
        return f"{os.getpid()}:{threading.get_ident()}"

    def try_acquire(self, rules: list[Rule], priority: Priority = "posting", owner: str | None = None) -> float:
        """One attempt: 0.0 if a send was recorded under every rule, else the seconds worth waiting before retrying."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}")
        owner = owner or self.owner()
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                # read the clock holding the write lock: recorded times then rise in commit order across processes
                now = self._clock()
                wait = self._attempt(db, rules, priority, owner, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if wait <= 0 and self.on_grant is not None:
                self.on_grant(rules, priority, now)
            return wait

    def _attempt(self, db: sqlite3.Connection, rules: list[Rule], priority: Priority, owner: str,
                 now: float) -> float:
        self._calls += 1
        if self._calls % 256 == 1:  # forget heartbeats of callers long gone
            db.execute("DELETE FROM waiters WHERE seen < ?", (now - 60 * self.linger,))
        if priority == "posting":
            db.execute("INSERT INTO waiters (owner, priority, seen) VALUES (?, 'posting', ?) "
                       "ON CONFLICT (owner) DO UPDATE SET priority = excluded.priority, seen = excluded.seen",
                       (owner, now))
        else:
            row = db.execute("SELECT max(seen) FROM waiters WHERE priority = 'posting' AND owner != ? AND seen > ?",
                             (owner, now - self.linger)).fetchone()
            if row[0] is not None:  # posting first: come back once that heartbeat may have lapsed
                return max(row[0] + self.linger - now, self.linger / 4)
        strictest: dict[str, Rule] = {}
        for rule in rules:
            if rule.id not in strictest or rule.limit < strictest[rule.id].limit:
                strictest[rule.id] = rule
        wait, inserts = 0.0, []
        for rid, rule in strictest.items():
            # per rule, sends are numbered 1, 2, 3, ...: the limit-th most recent is one primary-key seek away
            last = db.execute("SELECT seq, ts FROM sends WHERE rule = ? ORDER BY seq DESC LIMIT 1", (rid,)).fetchone()
            if last is None:
                inserts.append((rid, 1, now))
                continue
            seq, last_ts = last
            if last_ts > now:  # the wall clock stepped back: shift this rule's sends, keeping their ages
                db.execute("UPDATE sends SET ts = ts - ? WHERE rule = ?", (last_ts - now, rid))
            # forget sends that are both outside the window and older than the last `limit` (a prefix in seq order)
            db.execute("DELETE FROM sends WHERE rule = ? AND seq <= ? AND ts <= ?",
                       (rid, seq - rule.limit, now - rule.window_seconds))
            nth = db.execute("SELECT ts FROM sends WHERE rule = ? AND seq = ?", (rid, seq - rule.limit + 1)).fetchone()
            if nth is not None and nth[0] > now - rule.window_seconds:
                wait = max(wait, nth[0] + rule.window_seconds - now)  # `limit` sends in the window: the oldest leaves
            inserts.append((rid, seq + 1, now))
        if wait > 0:
            return wait
        db.executemany("INSERT INTO sends (rule, seq, ts) VALUES (?, ?, ?)", inserts)
        return 0.0

    def acquire(self, rules: list[Rule], priority: Priority = "posting") -> float:
        """Block until a send is allowed under every rule and record it; returns the seconds waited."""
        owner, waited = self.owner(), 0.0
        # a posting waiter must renew its heartbeat before it lapses; a background one just rechecks
        poll = self.linger / 2
        while True:
            wait = self.try_acquire(rules, priority, owner)
            if wait <= 0:
                return waited
            step = min(wait, poll)
            self._sleep(step)
            waited += step


_HOSTS: dict[Path, HostLimiter] = {}
_HOSTS_GUARD = threading.Lock()


def host_limiter_at(path: Path | str, linger: float = 1.0) -> HostLimiter:
    """The process's one `HostLimiter` for a state file (one SQLite connection per file and process)."""
    key = Path(path).resolve()
    with _HOSTS_GUARD:
        found = _HOSTS.get(key)
        if found is None:
            found = _HOSTS[key] = HostLimiter(key, linger=linger)
        return found


def state_path(lock_dir: Path, source_address: str | None) -> Path:
    """`<lock_dir>/ratelimit-<source address or default>.sqlite`: one budget per egress address."""
    return Path(lock_dir) / f"ratelimit-{address_key(source_address)}.sqlite"
