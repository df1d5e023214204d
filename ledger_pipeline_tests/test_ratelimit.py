"""The host-shared limiter: window arithmetic and priority on a fake clock, crash safety, cost per acquire, and
processes on one host against the Jurnal sandbox under one per-IP limit (and one limit per source address)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ledger_pipeline.ratelimit import HostLimiter, Rule, address_key, scaled_rules, state_path
from ledger_pipeline.sandboxes.base import SandboxLimits
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import Settings, load_settings
from ledger_pipeline.systems.http import http_client
from ledger_pipeline.systems.jurnal.client import JurnalLimits, jurnal_rules
from ledger_pipeline_tests.helpers import connect, reset_stats, sandbox_stats

SCALE = 30.0  # Jurnal's minute lasts 2 s: 38 requests per 2 s per address after headroom, 40 at the sandbox
WINDOW = 60 / SCALE
IP_CAP = int(JurnalLimits().per_ip_minute * JurnalLimits().headroom)  # 38


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def fake_limiter(tmp_path: Path, linger: float = 1.0) -> tuple[HostLimiter, FakeClock]:
    clock = FakeClock()
    return HostLimiter(tmp_path / "rl.sqlite", linger=linger, clock=clock, sleep=clock.sleep), clock


# -- the core, on a fake clock ------------------------------------------------------------------------------------
def test_window_counts_every_rule_and_slides(tmp_path: Path) -> None:
    host, clock = fake_limiter(tmp_path)
    rules = [Rule("ip:x", 3, 10.0), Rule("ip:x", 5, 100.0)]  # one key, two windows: counted apart
    assert [host.try_acquire(rules) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert host.try_acquire(rules) == pytest.approx(10.0), "3 in 10 s: wait for the first to leave"
    clock.now += 4
    assert host.try_acquire(rules) == pytest.approx(6.0)
    clock.now += 6
    assert host.try_acquire(rules) == 0.0 and host.try_acquire(rules) == 0.0
    assert host.try_acquire(rules) == pytest.approx(90.0), "now the 100 s window binds: 5 sends since t=0"
    assert host.try_acquire([Rule("ip:y", 3, 10.0)]) == 0.0, "another key has its own budget"


def test_sliding_window_never_exceeds_and_keeps_pace(tmp_path: Path) -> None:
    host, clock = fake_limiter(tmp_path)
    rules = scaled_rules("ip:default", [(40, 60), (2500, 3600)]) + scaled_rules("token:t1", [(1000, 60)])
    stamps = []
    for _ in range(300):
        host.acquire(rules)
        stamps.append(clock.now)
    for i, t in enumerate(stamps):
        assert sum(1 for u in stamps[: i + 1] if u > t - 60) <= IP_CAP
    # fixed minute buckets (the sandbox's way of counting) stay under 40 too
    buckets: dict[int, int] = {}
    for t in stamps:
        buckets[int(t // 60)] = buckets.get(int(t // 60), 0) + 1
    assert max(buckets.values()) <= 40
    assert stamps[-1] - stamps[0] <= (300 / IP_CAP) * 60, "close to the allowed rate"


def test_clock_stepping_back_does_not_block_for_long(tmp_path: Path) -> None:
    host, clock = fake_limiter(tmp_path)
    rules = [Rule("k", 1, 10.0)]
    clock.now = 5_000.0
    assert host.try_acquire(rules) == 0.0
    clock.now = 1_000.0  # an hour back: the row is dated in the future
    assert host.try_acquire(rules) == pytest.approx(10.0), "clamped to now: one window, not an hour"


def test_background_yields_while_a_posting_caller_waits(tmp_path: Path) -> None:
    host, clock = fake_limiter(tmp_path, linger=1.0)
    rules = [Rule("ip:x", 2, 10.0)]
    assert host.try_acquire(rules, "background", owner="bg") == 0.0, "alone, background uses the budget"
    assert host.try_acquire(rules, "posting", owner="post") == 0.0
    assert host.try_acquire(rules, "posting", owner="post") > 0, "full: the posting caller now waits (registered)"
    clock.now += 9.9
    assert host.try_acquire(rules, "posting", owner="post") > 0  # still waiting, heartbeat renewed
    clock.now += 0.2  # a slot is free again
    assert host.try_acquire(rules, "background", owner="bg") > 0, "background yields to the posting waiter"
    assert host.try_acquire(rules, "posting", owner="post") == 0.0, "posting takes the slot"
    clock.now += 10.1  # both slots free, the posting caller has been quiet for longer than `linger`
    assert host.try_acquire(rules, "background", owner="bg") == 0.0, "an idle or dead posting caller stops counting"


def test_posting_goes_first_among_threads(tmp_path: Path) -> None:
    """Real clock, threads of one process: a posting thread and a background thread compete for 20 sends/0.5 s."""
    host = HostLimiter(tmp_path / "rl.sqlite", linger=0.2)
    rules = [Rule("ip:x", 10, 0.25)]
    got: dict[str, list[float]] = {"posting": [], "background": []}
    stop = time.time() + 2.0

    host.on_grant = lambda _rules, priority, now: got[priority].append(now)

    def run(priority: str) -> None:
        while time.time() < stop:
            host.acquire(rules, priority)  # type: ignore[arg-type]

    threads = [threading.Thread(target=run, args=(p,)) for p in ("posting", "background")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps = sorted(got["posting"] + got["background"])
    assert all(sum(1 for u in stamps if t - 0.25 < u <= t) <= 10 for t in stamps)
    assert len(got["posting"]) >= 0.9 * len(stamps), got


def test_crashed_process_leaves_nothing_that_blocks(tmp_path: Path) -> None:
    """SIGKILL a process in the middle of acquiring in a tight loop: the file is neither locked nor corrupt."""
    path = tmp_path / "rl.sqlite"
    code = ("import sys; from ledger_pipeline.ratelimit import HostLimiter, Rule\n"
            f"h = HostLimiter({str(path)!r}); r = [Rule('k', 10**9, 0.5)]\n"
            "print('go', flush=True)\nwhile True: h.acquire(r)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "go"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    host = HostLimiter(path, busy_timeout=2.0)
    start = time.perf_counter()
    assert host.acquire([Rule("k", 10**9, 0.5)]) == 0.0
    assert time.perf_counter() - start < 1.0
    time.sleep(0.6)  # the killed process's sends have left the window
    assert host.try_acquire([Rule("k", 1, 0.5)]) == 0.0


def test_acquire_costs_about_a_millisecond(tmp_path: Path) -> None:
    """Jurnal's four rules with the hour window filling up (month-end: ~10,000 acquires at up to ~70/s)."""
    host = HostLimiter(tmp_path / "rl.sqlite")
    rules = jurnal_rules("t1", JurnalLimits(per_ip_minute=10**6, per_token_minute=10**6, per_token_hour=10**6))
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        host.acquire(rules)
    per = (time.perf_counter() - start) / n
    print(f"acquire: {per * 1e3:.3f} ms")
    assert per < 0.005


def test_source_address_names_the_state_file(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert address_key(None) == "default" and address_key("::1") == "__1"
    monkeypatch.setenv("LEDGER_SOURCE_ADDRESS", "127.0.0.2")
    s = load_settings()
    assert s.source_address == "127.0.0.2"
    assert state_path(s.lock_dir, s.source_address).name == "ratelimit-127.0.0.2.sqlite"
    client = http_client(s.source_address)
    client.close()


# -- processes on one host, against the sandbox --------------------------------------------------------------------
WORKER = """
import json, sys, time
from ledger_pipeline.settings import load_settings
from ledger_pipeline.systems.jurnal.session import open_session

tenants, priority, duration, scale = sys.argv[1].split(","), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
sess = open_session(load_settings(), rate_limit_scale=scale, backoff_initial=0.01, timeout=5)
client, stamps = sess.client, []
client.priority = priority
client.core.limiter.on_grant = lambda rules, prio, now: stamps.append(now)  # the times the limiter recorded
print("ready", flush=True)
sys.stdin.readline()
end, i = time.time() + duration, 0
while time.time() < end:
    client.accounts(tenants[i % len(tenants)])
    i += 1
sess.close()
print(json.dumps({"stamps": stamps, "requests": client.requests, "waited": client.core.waited}), flush=True)
"""


def run_workers(specs: list[tuple[list[str], str, float, str | None]]) -> list[dict]:
    """Start one process per (tenants, priority, duration, source address), release them together, collect."""
    procs = []
    for tenants, priority, duration, address in specs:
        env = {**os.environ, "LEDGER_SOURCE_ADDRESS": address or ""}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, ",".join(tenants), priority, str(duration),
                                       str(SCALE)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    for p in procs:
        assert p.stdout
        if p.stdout.readline().strip() != "ready":
            _, err = p.communicate(timeout=30)
            raise AssertionError(f"worker failed to start: {err[-3000:]}")
    for p in procs:
        assert p.stdin
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        stdout, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def max_in_window(stamps: list[float], window: float) -> int:
    stamps, best, lo = sorted(stamps), 0, 0
    for hi, t in enumerate(stamps):
        while stamps[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def max_in_bucket(stamps: list[float]) -> int:
    """The sandbox's fixed minute buckets (time.time() * scale // 60)."""
    buckets: dict[int, int] = {}
    for t in stamps:
        key = int(t * SCALE // 60)
        buckets[key] = buckets.get(key, 0) + 1
    return max(buckets.values())


@pytest.fixture
def scaled_sandbox(settings: Settings, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    with SandboxServer(settings.data_dir / "sandbox.sqlite", limits=SandboxLimits(scale=SCALE)) as server:
        monkeypatch.setenv("JURNAL_API_BASE_URL", server.api_url)
        monkeypatch.setenv("JURNAL_OAUTH_BASE_URL", server.url)
        monkeypatch.setenv("LEDGER_RATE_LIMIT_SCALE", str(SCALE))
        connect([f"a{i}" for i in range(3)] + [f"b{i}" for i in range(3)])
        reset_stats(server.url)
        yield server


def test_two_processes_share_one_per_ip_budget(scaled_sandbox: SandboxServer) -> None:
    duration = 8.0
    a, b = run_workers([([f"a{i}" for i in range(3)], "posting", duration, None),
                        ([f"b{i}" for i in range(3)], "posting", duration, None)])
    stats = sandbox_stats(scaled_sandbox.url)
    stamps = a["stamps"] + b["stamps"]
    assert stats["rate_limited"] == 0, "no 429 at the sandbox"
    assert stats["api_requests"] == len(stamps) == a["requests"] + b["requests"]
    assert max_in_window(stamps, WINDOW) <= IP_CAP, "within the per-IP limit together, on the limiter's own times"
    assert max_in_bucket(stamps) <= 40, "and in the sandbox's fixed minute buckets"
    allowed = IP_CAP * (duration / WINDOW)
    print(f"two processes: {len(a['stamps'])} + {len(b['stamps'])} of {allowed:.0f} allowed; "
          f"waited {a['waited']:.1f} s and {b['waited']:.1f} s")
    assert allowed + IP_CAP >= len(stamps) >= 0.7 * allowed, "the limit binds and is used"
    assert a["waited"] > 0 and b["waited"] > 0, "each was held back by the shared budget"
    assert min(len(a["stamps"]), len(b["stamps"])) >= 0.25 * len(stamps), "both made progress"


def test_posting_process_gets_the_budget_before_a_background_one(scaled_sandbox: SandboxServer) -> None:
    duration = 8.0
    post, bg = run_workers([([f"a{i}" for i in range(3)], "posting", duration, None),
                            ([f"b{i}" for i in range(3)], "background", duration + 4, None)])
    stats = sandbox_stats(scaled_sandbox.url)
    assert stats["rate_limited"] == 0
    assert max_in_window(post["stamps"] + bg["stamps"], WINDOW) <= IP_CAP
    end = max(post["stamps"])
    bg_during = [t for t in bg["stamps"] if t <= end]
    print(f"posting {len(post['stamps'])}, background {len(bg_during)} while posting, "
          f"{len(bg['stamps']) - len(bg_during)} after")
    assert len(post["stamps"]) >= 0.9 * (len(post["stamps"]) + len(bg_during)), (len(post["stamps"]), len(bg_during))
    assert len(post["stamps"]) >= 0.7 * IP_CAP * (duration / WINDOW), "posting ran at (about) the full rate"
    assert len(bg["stamps"]) - len(bg_during) >= 10, "background used the budget once posting stopped"


def test_each_source_address_has_its_own_budget(scaled_sandbox: SandboxServer) -> None:
    """127.0.0.1 and 127.0.0.2 each at the per-IP limit: together twice one address's limit, and no 429, so the
    sandbox counted them apart (it keys on the client address) and each client left from its own address."""
    duration = 8.0
    one, two = run_workers([([f"a{i}" for i in range(3)], "posting", duration, "127.0.0.1"),
                            ([f"b{i}" for i in range(3)], "posting", duration, "127.0.0.2")])
    stats = sandbox_stats(scaled_sandbox.url)
    assert stats["rate_limited"] == 0
    for w in (one, two):
        assert max_in_window(w["stamps"], WINDOW) <= IP_CAP
    together = one["stamps"] + two["stamps"]
    print(f"two addresses: {len(one['stamps'])} + {len(two['stamps'])}, "
          f"at most {max_in_window(together, WINDOW)} in one window")
    assert max_in_window(together, WINDOW) > 40, "more than one address's limit in one window"
    assert len(together) > IP_CAP * (duration / WINDOW), "more in total than one address may send"
    locks = load_settings().lock_dir
    assert (locks / "ratelimit-127.0.0.1.sqlite").exists() and (locks / "ratelimit-127.0.0.2.sqlite").exists()
