"""The posting engine and planner as a unit, against an in-memory LedgerSink (no HTTP, no Dagster, no files)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from ledger_pipeline.ledger.sink import (
    CanonicalEntry,
    CanonicalLine,
    CreateResult,
    RemoteEntry,
    SinkError,
    custom_id_for,
    memo_for,
)
from ledger_pipeline.posting import PostingEngine, plan_tenant
from ledger_pipeline.reconcile import FINGERPRINT_KEY, Policy, RemoteChange, entry_fingerprint, remote_fingerprint
from ledger_pipeline_tests.helpers import MemoryStore

JAN, FEB = dt.date(2025, 1, 1), dt.date(2025, 2, 1)
WINDOW = (JAN, dt.date(2025, 3, 1))


def entry(tenant: str, period: dt.date, amount: int, content: str = "v1") -> CanonicalEntry:
    last = (period.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    return CanonicalEntry(tenant, period, custom_id_for(tenant, period), last, memo_for(period), "IDR",
                          f"{content}-{amount}", (CanonicalLine(1, "10", "3-30100", amount, 0, "net"),
                                                  CanonicalLine(2, "20", "4-40000", 0, amount, "revenue")))


class MemorySink:
    """A LedgerSink whose behaviour a test scripts: failures per call, dropped lines, workflow states."""

    name = "memory"
    max_batch = 10

    def __init__(self) -> None:
        self.entries: dict[str, RemoteEntry] = {}
        self.calls: list[str] = []
        self.fail_next: list[SinkError] = []  # raised by the next write calls, in order
        self.drop_line = False  # answer 2xx but keep one line fewer
        self.state = "posted"
        self.next_id = 1

    def _remote(self, e: CanonicalEntry, remote_id: str | None = None) -> RemoteEntry:
        lines = tuple((str(i), ln.account_id, ln.debit_minor, ln.credit_minor) for i, ln in enumerate(e.lines))
        if self.drop_line:
            lines = lines[:-1]
        if remote_id is None:
            remote_id, self.next_id = str(self.next_id), self.next_id + 1
        return RemoteEntry(remote_id, e.custom_id, e.transaction_date, e.memo, sum(x[2] for x in lines),
                           sum(x[3] for x in lines), lines, state=self.state)

    def _write(self, what: str) -> None:
        self.calls.append(what)
        if self.fail_next:
            raise self.fail_next.pop(0)

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        self.calls.append("find")
        return self.entries.get(custom_id)

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        self.calls.append("list")
        return [r for r in self.entries.values() if start <= r.transaction_date < end]

    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        self._write("create")
        out = []
        for e in entries:
            if e.custom_id in self.entries:
                out.append(CreateResult(e.custom_id, error=SinkError("duplicate", "custom id already used")))
            else:
                self.entries[e.custom_id] = self._remote(e)
                out.append(CreateResult(e.custom_id, remote=self.entries[e.custom_id]))
        return out

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        self._write("update")
        self.entries[entry.custom_id] = self._remote(entry, remote.remote_id)
        return self.entries[entry.custom_id]

    def delete(self, tenant_id: str, remote: RemoteEntry) -> None:
        self._write("delete")
        self.entries = {k: v for k, v in self.entries.items() if v.remote_id != remote.remote_id}


def run(sink: MemorySink, store: MemoryStore, entries: list[CanonicalEntry], held: set = frozenset(),
        max_rounds: int = 6):
    engine = PostingEngine(sink, store, max_rounds=max_rounds, backoff=0, sleep=lambda s: None)
    return engine.post_tenant("t1", entries, dict(store.rows), WINDOW, held)


def test_create_then_unchanged_rerun_makes_no_call() -> None:
    sink, store = MemorySink(), MemoryStore()
    out = run(sink, store, [entry("t1", JAN, 100), entry("t1", FEB, 200)])
    assert out.counts == {"create": 2} and sink.calls == ["create"], "two months, one batch call"
    assert {r.status for r in store.rows.values()} == {"posted"} and all(r.verified_at for r in store.rows.values())
    sink.calls.clear()
    out = run(sink, store, [entry("t1", JAN, 100), entry("t1", FEB, 200)])
    assert out.counts == {"skip": 2} and sink.calls == []


def test_intent_is_saved_before_the_write() -> None:
    sink, store = MemorySink(), MemoryStore()
    seen: list[str] = []
    real_create = sink.create

    def create(tenant_id, entries):  # noqa: ANN001, ANN202
        seen.append(store.rows[entries[0].custom_id].status)
        return real_create(tenant_id, entries)

    sink.create = create  # type: ignore[method-assign]
    run(sink, store, [entry("t1", JAN, 100)])
    assert seen == ["pending"]


def test_duplicate_is_adopted_after_a_look_up() -> None:
    sink, store = MemorySink(), MemoryStore()
    e = entry("t1", JAN, 100)
    sink.entries[e.custom_id] = sink._remote(e)  # posted by an earlier run whose state was lost
    out = run(sink, store, [e])
    assert out.counts == {"adopted": 1} and sink.calls == ["create", "find"]
    assert store.rows[e.custom_id].status == "posted" and len(sink.entries) == 1


def test_uncertain_write_is_looked_up_not_resent() -> None:
    sink, store = MemorySink(), MemoryStore()
    e = entry("t1", JAN, 100)
    real_create = sink.create

    def applied_then_lost(tenant_id, entries):  # noqa: ANN001, ANN202
        real_create(tenant_id, entries)
        raise SinkError("uncertain", "connection dropped after the write")

    sink.create = applied_then_lost  # type: ignore[method-assign]
    out = run(sink, store, [e])
    assert out.counts == {"adopted": 1} and len(sink.entries) == 1
    assert sink.calls.count("create") == 1


def test_a_2xx_that_dropped_a_line_is_a_failure_kept_for_update() -> None:
    sink, store = MemorySink(), MemoryStore()
    sink.drop_line = True
    e = entry("t1", JAN, 100)
    out = run(sink, store, [e])
    assert [k for _, _, k in out.failures] == ["mismatch"]
    row = store.rows[e.custom_id]
    assert row.status == "failed" and row.remote_id == "1" and "dropped a line" in row.error
    sink.drop_line = False
    assert plan_tenant("t1", [e], store.rows)[0].action == "update"
    out = run(sink, store, [e])
    assert out.counts == {"update": 1} and store.rows[e.custom_id].status == "posted" and len(sink.entries) == 1


def test_running_out_of_rounds_when_nothing_was_sent_fails_for_a_retry() -> None:
    sink, store = MemorySink(), MemoryStore()
    sink.fail_next = [SinkError("retryable", "429 rate limited")] * 10
    e = entry("t1", JAN, 100)
    out = run(sink, store, [e], max_rounds=3)
    assert [k for _, _, k in out.failures] == ["retryable"] and "after 3 rounds" in out.failures[0][1]
    assert "429 rate limited" in out.failures[0][1] and store.rows[e.custom_id].status == "failed"
    assert sink.calls == ["create"] * 3 and plan_tenant("t1", [e], store.rows)[0].action == "create"


def test_running_out_of_rounds_after_an_uncertain_write_leaves_it_pending() -> None:
    sink, store = MemorySink(), MemoryStore()
    sink.fail_next = [SinkError("uncertain", "502 after the write")]
    e = entry("t1", JAN, 100)
    real_find = sink.find

    def find_fails(tenant_id, custom_id, hint=None):  # noqa: ANN001, ANN202
        real_find(tenant_id, custom_id, hint)
        raise SinkError("retryable", "503 on the look-up")

    sink.find = find_fails  # type: ignore[method-assign]
    out = run(sink, store, [e], max_rounds=3)
    assert [k for _, _, k in out.failures] == ["uncertain"] and store.rows[e.custom_id].status == "pending"
    assert sink.calls.count("create") == 1, "never re-sent while the outcome is unknown"
    assert plan_tenant("t1", [e], store.rows)[0].action == "recover"


def test_needs_reauth_stops_the_tenant_without_further_calls() -> None:
    sink, store = MemorySink(), MemoryStore()
    sink.fail_next = [SinkError("needs_reauth", "grant revoked: run connect")]
    out = run(sink, store, [entry("t1", JAN, 100), entry("t1", FEB, 200)])
    assert {k for _, _, k in out.failures} == {"needs_reauth"} and len(out.failures) == 2
    assert sink.calls == ["create"] and not sink.entries


def test_deferred_tenant_is_not_retried_in_a_loop() -> None:
    sink, store = MemorySink(), MemoryStore()
    sink.fail_next = [SinkError("deferred", "daily API limit spent")]
    out = run(sink, store, [entry("t1", JAN, 100)])
    assert sink.calls == ["create"] and "deferred to the next run" in out.failures[0][1]


def test_posted_month_rejected_upstream_keeps_its_remote_entry() -> None:
    sink, store = MemorySink(), MemoryStore()
    run(sink, store, [entry("t1", JAN, 100), entry("t1", FEB, 200)])
    sink.calls.clear()
    out = run(sink, store, [entry("t1", FEB, 200)], held={JAN})
    assert out.counts == {"hold": 1, "skip": 1} and sink.calls == [] and len(sink.entries) == 2
    out = run(sink, store, [entry("t1", FEB, 200)])  # the month is gone from the ledger, not rejected
    assert out.counts == {"delete": 1, "skip": 1} and len(sink.entries) == 1


def test_changed_entry_updates_in_place() -> None:
    sink, store = MemorySink(), MemoryStore()
    run(sink, store, [entry("t1", JAN, 100)])
    out = run(sink, store, [entry("t1", JAN, 150, "v2")])
    assert out.counts == {"update": 1} and len(sink.entries) == 1
    assert next(iter(sink.entries.values())).total_debit_minor == 150


def test_awaiting_approval_is_a_state_of_its_own_then_posted_without_writes() -> None:
    sink, store = MemorySink(), MemoryStore()
    sink.state = "awaiting_approval"
    e = entry("t1", JAN, 100)
    out = run(sink, store, [e])
    assert out.counts == {"awaiting_approval": 1} and not out.failures
    assert store.rows[e.custom_id].status == "awaiting_approval"
    sink.entries[e.custom_id] = replace(sink.entries[e.custom_id], state="posted")  # a person approved it
    sink.calls.clear()
    out = run(sink, store, [e])
    assert out.counts == {"refresh": 1} and sink.calls == ["find"] and store.rows[e.custom_id].status == "posted"


def test_rejected_by_an_approver_is_reported_once_and_not_resubmitted() -> None:
    sink, store = MemorySink(), MemoryStore()
    sink.state = "awaiting_approval"
    e = entry("t1", JAN, 100)
    run(sink, store, [e])
    sink.entries[e.custom_id] = replace(sink.entries[e.custom_id], state="rejected", state_detail="wrong month")
    out = run(sink, store, [e])
    assert out.failures[0][2] == "rejected" and "wrong month" in out.failures[0][1]
    sink.calls.clear()
    out = run(sink, store, [e])
    assert out.counts == {"skip": 1} and sink.calls == []


def test_pending_upload_is_resolved_by_the_next_run() -> None:
    sink, store = MemorySink(), MemoryStore()
    e = entry("t1", JAN, 100)

    def submit(tenant_id, entries):  # noqa: ANN001, ANN202
        sink.calls.append("create")
        return [CreateResult(x.custom_id, pending={"job_id": "j1"}) for x in entries]

    sink.create = submit  # type: ignore[method-assign]
    out = run(sink, store, [e])
    assert out.counts == {"submitted": 1} and store.rows[e.custom_id].remote_state == {"job_id": "j1"}
    sink.entries[e.custom_id] = MemorySink._remote(sink, e)  # the job finished
    sink.calls.clear()
    out = run(sink, store, [e])
    assert out.counts == {"refresh": 1} and sink.calls == ["find"] and store.rows[e.custom_id].status == "posted"


@pytest.mark.parametrize("kind", ["locked", "rejected", "account"])
def test_refused_entries_fail_with_their_kind(kind: str) -> None:
    sink, store = MemorySink(), MemoryStore()
    sink.fail_next = [SinkError(kind, f"{kind}: period closed or account archived")]
    out = run(sink, store, [entry("t1", JAN, 100)])
    assert [k for _, _, k in out.failures] == [kind] and store.rows[custom_id_for("t1", JAN)].status == "failed"


# -- changes made by hand in the system (reconcile.py): classified by the engine's own reads, acted on by policy ------
def edited(remote: RemoteEntry, factor: int = 2, date: dt.date | None = None) -> RemoteEntry:
    """A person's edit in the system: the first line's amount scaled (and/or the entry re-dated)."""
    first, *rest = remote.lines
    lines = ((first[0], first[1], first[2] * factor, first[3] * factor), *rest)
    return replace(remote, lines=lines, total_debit_minor=sum(x[2] for x in lines),
                   total_credit_minor=sum(x[3] for x in lines), transaction_date=date or remote.transaction_date)


def posted(entries: list[CanonicalEntry]) -> tuple[MemorySink, MemoryStore]:
    sink, store = MemorySink(), MemoryStore()
    run(sink, store, entries)
    sink.calls.clear()
    return sink, store


def run_with(sink: MemorySink, store: MemoryStore, entries: list[CanonicalEntry], **kw: object):  # noqa: ANN201
    engine = PostingEngine(sink, store, max_rounds=6, backoff=0, sleep=lambda s: None, title="Memory Books")
    return engine.post_tenant("t1", entries, dict(store.rows), WINDOW, set(), **kw)


def test_the_fingerprint_of_what_we_left_is_kept_but_never_sent_to_the_sink() -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    row = store.rows[e.custom_id]
    assert row.remote_state[FINGERPRINT_KEY] == entry_fingerprint(e) == remote_fingerprint(sink.entries[e.custom_id])
    hints: list[dict | None] = []
    real_find = sink.find
    sink.find = lambda t, c, hint=None: hints.append(hint) or real_find(t, c, hint)  # type: ignore[method-assign]
    out = run_with(sink, store, [entry("t1", JAN, 150, "v2")])  # late rows: the update re-reads the entry first
    assert out.counts == {"update": 1} and sink.calls == ["find", "update"]
    assert all(FINGERPRINT_KEY not in (h or {}) for h in hints)
    assert store.rows[e.custom_id].remote_state[FINGERPRINT_KEY] == entry_fingerprint(entry("t1", JAN, 150, "v2"))


def test_an_edit_found_by_the_reread_before_an_update_is_held_by_default() -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    sink.entries[e.custom_id] = edited(sink.entries[e.custom_id])
    out = run_with(sink, store, [entry("t1", JAN, 150, "v2")])
    assert out.counts == {"hold": 1} and sink.calls == ["find"], "never overwritten unseen"
    [change] = out.changes
    assert (change.kind, change.action, change.found_by) == ("edited", "held", "close")
    assert "line 1 account 3-30100: debit 1.50 -> debit 2.00" in change.diff, "against what we would post now"
    assert sink.entries[e.custom_id].lines[0][2] == 200


def test_overwrite_policy_updates_against_the_entry_as_it_is_now() -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    sink.entries[e.custom_id] = replace(edited(sink.entries[e.custom_id]), remote_id="1")
    seen: list[RemoteEntry] = []
    real_update = sink.update
    sink.update = lambda t, remote, x: seen.append(remote) or real_update(t, remote, x)  # type: ignore[method-assign]
    out = run_with(sink, store, [entry("t1", JAN, 150, "v2")], policy=Policy(on_edit="overwrite"))
    assert out.counts == {"update": 1} and out.changes[0].action == "overwritten"
    assert seen[0].lines[0][2] == 200, "the update went against the re-read entry, not the posting state's stub"
    assert sink.entries[e.custom_id].total_debit_minor == 150


@pytest.mark.parametrize(("policy", "counts", "calls"), [
    (Policy(), {"create": 1}, ["find", "create"]),
    (Policy(on_delete="hold"), {"hold": 1}, ["find"]),
])
def test_an_entry_deleted_by_hand_is_recreated_or_held(policy: Policy, counts: dict, calls: list) -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    del sink.entries[e.custom_id]
    out = run_with(sink, store, [entry("t1", JAN, 150, "v2")], policy=policy)
    assert out.counts == counts and sink.calls == calls
    assert out.changes[0].kind == "deleted"


def test_an_entry_redated_by_hand_into_another_month_is_moved() -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    sink.entries[e.custom_id] = edited(sink.entries[e.custom_id], 1, dt.date(2024, 12, 31))
    out = run_with(sink, store, [entry("t1", JAN, 150, "v2")])
    assert out.changes[0].kind == "moved" and "date 2025-01-31 -> 2024-12-31" in out.changes[0].diff
    assert out.counts == {"hold": 1}


def test_known_changes_decide_before_the_posting_state() -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    base = RemoteChange("memory", "t1", JAN, e.custom_id, "deleted", found_at=dt.datetime(2025, 2, 1))
    del sink.entries[e.custom_id]  # found by the drift read; the close re-creates it (look-up first)
    out = run_with(sink, store, [e], known={e.custom_id: base})
    assert out.counts == {"create": 1} and sink.calls == ["find", "create"]
    sink.calls.clear()
    held = replace(base, kind="edited", diff="line 1 ...")
    out = run_with(sink, store, [e], known={e.custom_id: held})
    assert out.counts == {"hold": 1} and sink.calls == []
    accepted = replace(held, status="accepted", content_hash=e.content_hash)
    assert run_with(sink, store, [e], known={e.custom_id: accepted}).counts == {"skip": 1} and sink.calls == []
    plan = plan_tenant("t1", [entry("t1", JAN, 150, "v2")], store.rows, known={e.custom_id: accepted})
    assert plan[0].action == "hold" and "accepted" in plan[0].reason, "the ledger changed since: decide again"
    out = run_with(sink, store, [entry("t1", JAN, 150, "v2")], known={e.custom_id: accepted})
    assert out.counts == {"hold": 1} and sink.calls == [] and out.changes[0].status == "open", "listed again"


def test_an_operators_reread_acts_whatever_the_policy() -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    out = run_with(sink, store, [e], reread={e.custom_id})
    assert out.counts == {"adopted": 1} and sink.calls == ["find"], "matches: nothing written"
    sink.entries[e.custom_id] = edited(sink.entries[e.custom_id])
    sink.calls.clear()
    out = run_with(sink, store, [e], reread={e.custom_id})  # policy hold, but the operator asked
    assert out.counts == {"update": 1} and out.changes[0].found_by == "repost"
    assert sink.entries[e.custom_id].total_debit_minor == 100


def test_rows_posted_before_fingerprints_update_as_before() -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    row = store.rows[e.custom_id]
    store.rows[e.custom_id] = replace(row, remote_state={})  # posted by an earlier release
    out = run_with(sink, store, [entry("t1", JAN, 150, "v2")])
    assert out.counts == {"update": 1} and sink.calls == ["update"] and not out.changes


def test_an_uncertain_update_whose_remote_still_holds_our_old_entry_is_ours() -> None:
    e = entry("t1", JAN, 100)
    sink, store = posted([e])
    sink.fail_next = [SinkError("uncertain", "502 after the update")]  # nothing applied, outcome unknown
    out = run_with(sink, store, [entry("t1", JAN, 150, "v2")])
    assert out.counts == {"update": 1} and not out.changes, "the old version is what we left: not an edit"
