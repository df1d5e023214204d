"""Rootfi against its published reference (docs.integrationlabs.co v2/v3; fidelity.md rows 4-6), through the real
sandbox over HTTP: the nested list envelope, the documented write and job paths and statuses, the `eq` filter and
a server that ignores it, one request per fresh upload, odd tenant ids, and an update refused after a remote edit."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from ledger_pipeline.ledger.sink import SinkError, custom_id_for
from ledger_pipeline.money import dumps_exact
from ledger_pipeline.posting import PostingEngine
from ledger_pipeline.reconcile import reconcile_tenant
from ledger_pipeline.sandboxes.base import SandboxLimits
from ledger_pipeline.sandboxes.rootfi import SANDBOX_API_KEY
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import load_settings
from ledger_pipeline.systems import OpenOptions
from ledger_pipeline.systems.rootfi import RootfiConnection, open_connection
from ledger_pipeline.systems.rootfi.client import RootfiError, list_page
from ledger_pipeline.systems.rootfi.sink import DOC_NUMBER_MAX, document_number, entry_body
from ledger_pipeline_tests.helpers import MemoryStore
from ledger_pipeline_tests.test_system_rootfi import (
    MONTHS,
    UPLOAD,
    WINDOW,
    assert_exactly_once,
    calls,
    control,
    ids,
    link,
    make_entry,
    remote_entries,
    stats,
)

JOB = ("GET", "/rootfi/jobs/{id}")
JOB_V3 = ("GET", "/rootfi/v3/core/syncs/jobs/{id}")
# a slash, a hash, a question mark, a percent sign, spaces, non-ASCII, and an id far over the key's length
ODD_TENANTS = ["acme/eu#1?x=1%", "café ünï 東京", "tenant-" + "x" * 57]


def connect(monkeypatch: pytest.MonkeyPatch, server: SandboxServer) -> RootfiConnection:
    monkeypatch.setenv("LEDGER_SANDBOX_URL", server.url)
    s = load_settings()
    return open_connection(s, OpenOptions(database_url=s.r2a_database_url, rate_limit_scale=1000,
                                          backoff_initial=0.01, timeout=5))


@pytest.fixture
def env(settings, tmp_path, monkeypatch) -> Iterator[tuple[SandboxServer, RootfiConnection]]:  # noqa: ANN001
    with SandboxServer(tmp_path / "sb.sqlite", limits=SandboxLimits(scale=1000)) as server:
        conn = connect(monkeypatch, server)
        try:
            yield server, conn
        finally:
            conn.close()


def post(http: httpx.Client, path: str, body: dict) -> httpx.Response:
    """A JSON POST with exact amounts (Decimal as JSON numbers)."""
    return http.post(path, content=dumps_exact(body), headers={"Content-Type": "application/json"})


def add_entry(server: SandboxServer, login: str, body: dict) -> None:
    """What a person (or another integration) books on the tenant's platform."""
    resp = httpx.post(f"{server.url}/_sandbox/rootfi/companies/{login}/entries", content=dumps_exact({"create": body}))
    assert resp.status_code == 200, resp.text


def api(server: SandboxServer) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/rootfi", headers={"api_key": SANDBOX_API_KEY}, timeout=10)


def by_status(server: SandboxServer, method: str, endpoint: str) -> Counter:
    return Counter({r["status"]: r["count"] for r in stats(server)["requests"]
                    if r["system"] == "rootfi" and (r["method"], r["endpoint"]) == (method, endpoint)})


# -- 1: the nested list envelope ------------------------------------------------------------------------------------
def test_every_list_answers_the_nested_envelope_and_every_read_pages_through_it(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1"])
    company_id = int(conn.vault.details("t1")[0])
    with api(server) as http:
        for path in ("/accounting/accounts/all", "/accounting/journal_entries/all"):
            body = http.post(path, json={"company_id": company_id, "take": 5, "skip": 0}).json()
            assert {"data", "request_id", "request_timestamp", "response_timestamp"} <= set(body), body
            assert isinstance(body["data"]["data"], list) and isinstance(body["data"]["total_count"], int)
    conn.client.page_size = 2  # every read goes page by page through the envelope
    acc = ids(conn, "t1")  # the chart
    assert len(acc) == 38
    entries = [make_entry("t1", p, acc) for p in MONTHS]
    assert all(r.remote and r.remote.matches(e) for r, e in zip(conn.sink.create("t1", entries), entries,
                                                                 strict=True))
    for e in entries:  # find
        assert conn.sink.find("t1", e.custom_id).matches(e)
    listed = conn.sink.list_period("t1", *WINDOW)  # periods
    assert {r.custom_id for r in listed} == {e.custom_id for e in entries}
    assert calls(server, "POST", "/rootfi/accounting/journal_entries/all") == 1 + 3 + 2  # raw, finds, 2 pages


def test_list_answers_are_read_in_either_documented_shape_or_refused_by_name() -> None:
    nested = {"data": {"data": [{"rootfi_id": 1}], "total_count": 1}, "request_id": "r"}  # v2 [JE-ALL]
    flat = {"data": [{"rootfi_id": 1}], "total_count": 1, "next": None}  # v3 [V3-ALL]
    assert list_page("t1", "/x/all", nested) == list_page("t1", "/x/all", flat) == ([{"rootfi_id": 1}], 1)
    with pytest.raises(RootfiError, match=r"tenant t1: POST /x/all: the answer is not a Rootfi list"):
        list_page("t1", "/x/all", {"data": {"rows": []}})


# -- 2: documented write and job paths, job statuses ----------------------------------------------------------------
def test_writes_and_jobs_at_the_documented_paths_with_the_documented_statuses(env, monkeypatch) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1", "t2"])
    acc = ids(conn, "t1")
    control(server, "t1", "jobs", {"job_delay_seconds": 0.4})
    conn.sink.poll_budget, conn.sink.poll_initial = 10, 0.05
    polled: list[str] = []
    conn.client.http.event_hooks["request"].append(
        lambda req: polled.append(req.url.path.rsplit("/", 1)[1]) if "/jobs/" in req.url.path else None)
    entries = [make_entry("t1", p, acc) for p in MONTHS]
    results = conn.sink.create("t1", entries)
    assert all(r.remote and r.remote.matches(e) for r, e in zip(results, entries, strict=True))
    assert calls(server, *UPLOAD) == 1 and calls(server, "POST", "/rootfi/accounting/journal_entries") == 0
    assert polled and set(polled) == {results[0].remote.extra["upload_job_id"]}, "the upload job, not each item"
    assert calls(server, *JOB) == len(polled) and calls(server, *JOB_V3) == 0
    assert_exactly_once(server, entries)

    # the protocol itself: the [JE-NEW] header path answers too; a job goes CREATED/RUNNING -> SUCCESS or FAILED
    company_id = int(conn.vault.details("t1")[0])
    late = make_entry("t1", dt.date(2025, 4, 1), acc)
    with api(server) as http:
        reply = post(http, "/accounting/journal_entries", {"company_id": company_id,
                                                           "data": [entry_body(late)]}).json()["data"]
        assert reply["status"] == "CREATED" and [i["status"] for i in reply["data"]] == ["created"]
        job_id, seen = reply["data"][0]["job_id"], []
        for _ in range(100):
            seen.append(http.get(f"/jobs/{job_id}").json()["data"]["status"])
            if seen[-1] == "SUCCESS":
                break
            time.sleep(0.05)
        assert seen[-1] == "SUCCESS" and set(seen) <= {"CREATED", "RUNNING", "SUCCESS"}, seen
        assert http.get(f"/v3/core/syncs/jobs/{job_id}").json()["data"]["status"] == "SUCCESS"
        parent = http.get(f"/jobs/{reply['upload_job_id']}").json()["data"]
        assert parent["status"] == "SUCCESS" and parent["job_type"] == "PUSH" and parent["parent_job_id"] is None
        control(server, "t1", "jobs", {"job_delay_seconds": 0, "fail_next": 1})
        failed = post(http, "/api/write/journal_entries", {"company_id": company_id,
                                                           "data": [entry_body(late)]}).json()["data"]
        assert failed["status"] == "FAILED" and failed["data"][0]["status"] == "failed"  # final at once
        job = http.get(f"/jobs/{failed['data'][0]['job_id']}").json()["data"]
        assert job["status"] == "FAILED" and job["error"]["code"] == "PLATFORM_ERROR"
        assert http.get("/jobs/no-such-job").status_code == 404

    # a Rootfi answering only the other documented paths (/accounting/<model>, the v3 job path): same outcome
    control(server, "t2", "paths", {"api_write": False, "v2_jobs": False})
    control(server, "t2", "jobs", {"job_delay_seconds": 0.3})
    other = connect(monkeypatch, server)
    try:
        other.sink.poll_budget, other.sink.poll_initial = 10, 0.05
        e2 = [make_entry("t2", p, ids(other, "t2")) for p in MONTHS[:2]]
        assert all(r.remote and r.remote.matches(e) for r, e in zip(other.sink.create("t2", e2), e2, strict=True))
    finally:
        other.close()
    assert by_status(server, *UPLOAD)[404] == 1, "the /api/write path tried once, then never again"
    assert calls(server, "POST", "/rootfi/accounting/journal_entries") == 1 + 1
    assert by_status(server, *JOB)[404] == 1 + 1 and calls(server, *JOB_V3) >= 2  # (+1: no-such-job above)
    assert Counter(e["custom_id"] for e in remote_entries(server) if e["company_login"] == "t2") == Counter(
        {e.custom_id: 1 for e in e2})


# -- 3: the eq filter, and a server that ignores it -----------------------------------------------------------------
def test_a_server_ignoring_filters_never_makes_us_adopt_or_overwrite_another_entry(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1"])
    acc = ids(conn, "t1")
    e1, e2 = make_entry("t1", MONTHS[0], acc), make_entry("t1", MONTHS[1], acc)
    # entries of someone else on the same platform, older than ours: another number, none, ours plus a suffix,
    # and one dated outside our window
    for doc in ("OTHER-1", None, e1.custom_id + "x"):
        add_entry(server, "t1", {**entry_body(e1), "document_number": doc, "description": "not ours"})
    add_entry(server, "t1", {**entry_body(e2), "document_number": "OTHER-OLD",
                             "posted_date": "2024-06-30T00:00:00.000Z"})
    control(server, "t1", "filters", {"ignore_filters": True})
    theirs = {e["rootfi_id"]: e for e in remote_entries(server)}

    assert conn.sink.find("t1", e1.custom_id) is None, "the company's oldest entry is not ours"
    store = MemoryStore()
    engine = PostingEngine(conn.sink, store, backoff=0.01)
    assert engine.post_tenant("t1", [e1, e2], {}, WINDOW).counts == {"create": 2}
    ours = {cid: row.remote_id for cid, row in store.rows.items()}
    found = conn.sink.find("t1", e1.custom_id)
    assert found.remote_id == ours[e1.custom_id] and found.matches(e1), "found behind the others"
    # a recovery (both uploads' answers lost) looks both up and adopts ours, nothing else
    pending = {cid: replace(row, status="pending", action="create") for cid, row in store.rows.items()}
    out = engine.post_tenant("t1", [e1, e2], pending, WINDOW)
    assert out.counts == {"adopted": 2} and {c: r.remote_id for c, r in store.rows.items()} == ours
    # somebody else's entry handed to update/delete: refused by name, nothing sent
    foreign = next(r for r in conn.sink.list_period("t1", *WINDOW) if r.custom_id == "OTHER-1")
    for action in (lambda: conn.sink.update("t1", foreign, e1), lambda: conn.sink.delete("t1", foreign)):
        with pytest.raises(SinkError, match=r"carries document_number 'OTHER-1', not (ours|one of ours)") as err:
            action()
        assert err.value.kind == "rejected"
    assert calls(server, "PUT", "/rootfi/api/write/journal_entries/{id}") == 0
    assert calls(server, "DELETE", "/rootfi/api/write/journal_entries/{id}") == 0
    now = {e["rootfi_id"]: e for e in remote_entries(server)}
    assert all(now[rid] == e for rid, e in theirs.items()), "the other entries are untouched"
    # the listing keeps the window and maps ours back, whatever the server answers
    listed = conn.sink.list_period("t1", *WINDOW)
    assert all(WINDOW[0] <= r.transaction_date < WINDOW[1] for r in listed)
    assert Counter(r.custom_id for r in listed) == Counter({e1.custom_id: 1, e2.custom_id: 1, "OTHER-1": 1,
                                                             e1.custom_id + "x": 1, None: 1})
    assert {r.custom_id: r.status for r in reconcile_tenant("t1", [e1, e2], listed)} == {
        e1.custom_id: "match", e2.custom_id: "match", e1.custom_id + "x": "unexpected_remote"}
    with api(server) as http:  # the operator Rootfi documents is `eq`; Prisma's `equals` is refused by name
        control(server, "t1", "filters", {"ignore_filters": False})
        resp = http.post("/accounting/journal_entries/all", json={
            "company_id": int(conn.vault.details("t1")[0]), "filter": {"document_number": {"equals": "x"}}})
        assert resp.status_code == 400 and "unsupported filter operator 'equals'" in resp.json()["error"]["message"]


# -- 4: fewer requests ----------------------------------------------------------------------------------------------
def test_fresh_entries_cost_one_request_when_the_reply_is_final(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1", "t2"])
    charts = {t: ids(conn, t) for t in ("t1", "t2")}
    store = MemoryStore()
    engine = PostingEngine(conn.sink, store, backoff=0.01)
    before, served = conn.requests, stats(server)["by_system"]["rootfi"]["api_requests"]
    entries = [make_entry("t1", p, charts["t1"]) for p in MONTHS]
    assert engine.post_tenant("t1", entries, {}, WINDOW).counts == {"create": 3}
    assert conn.requests - before == 1 == stats(server)["by_system"]["rootfi"]["api_requests"] - served
    assert calls(server, *JOB) == 0, "no job poll: the upload's reply was already final"
    # a slow platform: the job is polled with backoff, and a job still running is resumed next run, once
    control(server, "t2", "job_delay_seconds", {"job_delay_seconds": 1.0})
    conn.sink.poll_budget = 0.2
    slow = [make_entry("t2", p, charts["t2"]) for p in MONTHS]
    assert engine.post_tenant("t2", slow, {}, WINDOW).counts == {"submitted": 3}
    assert calls(server, *JOB) >= 1
    time.sleep(1.1)
    assert sum(engine.post_tenant("t2", slow, store.state("t2"), WINDOW).counts.values()) == 3
    assert {r.status for r in store.rows.values()} == {"posted"} and calls(server, *UPLOAD) == 2
    assert_exactly_once(server, entries + slow)


# -- 5: identifiers -------------------------------------------------------------------------------------------------
def test_document_number_is_bounded_stable_unique_and_readable() -> None:
    plain = custom_id_for("t00001", dt.date(2025, 1, 1))
    assert document_number(plain) == plain == "r2a-pl-t00001-202501", "ids posted before keep their key"
    assert document_number("r2a-pl-acme/eu#1?x=1%-202501") == "r2a-pl-acm-1905974d0a", "the scheme never drifts"
    keys = {}
    for tenant in [*ODD_TENANTS, "t" * 64, "t" * 63, "ü", "u"]:
        for month in range(1, 13):
            cid = custom_id_for(tenant, dt.date(2025, month, 1))
            key = document_number(cid)
            assert len(key) <= DOC_NUMBER_MAX and re.fullmatch(r"[A-Za-z0-9._-]+", key), key
            assert key.startswith("r2a-pl-") and key == document_number(cid)
            keys[key] = cid
    assert len(keys) == 7 * 12, "one key per custom_id"


def test_odd_tenant_ids_post_find_and_reconcile_end_to_end(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ODD_TENANTS)
    assert sorted(conn.vault.connected_tenants()) == sorted(ODD_TENANTS)
    store = MemoryStore()
    engine = PostingEngine(conn.sink, store, backoff=0.01)
    entries = {t: [make_entry(t, p, ids(conn, t)) for p in MONTHS[:2]] for t in ODD_TENANTS}
    for t in ODD_TENANTS:
        assert engine.post_tenant(t, entries[t], {}, WINDOW).counts == {"create": 2}
    remote = remote_entries(server)
    assert {e["company_login"] for e in remote} == set(ODD_TENANTS)
    assert sorted(e["custom_id"] for e in remote) == sorted(
        document_number(e.custom_id) for es in entries.values() for e in es)
    for t in ODD_TENANTS:
        for e in entries[t]:
            assert conn.sink.find(t, e.custom_id).matches(e)
        recon = reconcile_tenant(t, entries[t], conn.sink.list_period(t, *WINDOW))
        assert {r.status for r in recon} == {"match"}, recon
    before = conn.requests
    for t in ODD_TENANTS:
        assert engine.post_tenant(t, entries[t], store.state(t), WINDOW).counts == {"skip": 2}
    assert conn.requests == before
    # a look-up by a job id that is not there (and needs encoding) is "not found", then the listing decides
    paths: list[bytes] = []
    conn.client.http.event_hooks["request"].append(lambda req: paths.append(req.url.raw_path.split(b"?")[0]))
    t, e = ODD_TENANTS[0], entries[ODD_TENANTS[0]][0]
    found = conn.sink.find(t, e.custom_id, {"upload_job_id": "up/1", "job_id": "no such/job?#%é"})
    assert found.matches(e) and found.remote_id == store.rows[e.custom_id].remote_id
    assert paths[:2] == [b"/rootfi/jobs/no%20such%2Fjob%3F%23%25%C3%A9",
                         b"/rootfi/v3/core/syncs/jobs/no%20such%2Fjob%3F%23%25%C3%A9"], paths
    assert by_status(server, *JOB)[404] == 1 and by_status(server, *JOB_V3)[404] == 1


# -- 6: an update refused after a remote edit -----------------------------------------------------------------------
def test_update_refused_after_a_remote_edit_is_retried_once_against_what_is_there(env) -> None:  # noqa: ANN001
    server, conn = env
    link(conn, ["t1"])
    acc = ids(conn, "t1")
    entries = [make_entry("t1", p, acc) for p in MONTHS]
    store = MemoryStore()
    engine = PostingEngine(conn.sink, store, backoff=0.01)
    assert engine.post_tenant("t1", entries, {}, WINDOW).counts == {"create": 3}
    put = ("PUT", "/rootfi/api/write/journal_entries/{id}")
    # the engine re-reads before it updates (remote changes are held or overwritten by policy, test_remote_changes);
    # this is the race left: someone edits February's lines after our read, before our PUT
    seen = conn.sink.find("t1", entries[1].custom_id)
    control(server, "t1", "entries", {"custom_id": entries[1].custom_id, "scale_line": 3})
    late = make_entry("t1", MONTHS[1], acc, bump=777)
    final = [late if e.custom_id == late.custom_id else e for e in entries]
    updated = conn.sink.update("t1", seen, late)
    assert updated.matches(late)
    assert by_status(server, *put) == Counter({409: 1, 200: 1}), "refused once, re-read, retried once"
    synced = engine.post_tenant("t1", final, store.state("t1"), WINDOW)  # the close finds it already updated
    assert not synced.failures and "update" not in synced.counts and by_status(server, *put)[200] == 1
    assert_exactly_once(server, final)
    # no remote edit: one PUT
    later = make_entry("t1", MONTHS[1], acc, bump=778)
    final = [later if e.custom_id == later.custom_id else e for e in entries]
    assert engine.post_tenant("t1", final, store.state("t1"), WINDOW).counts == {"update": 1, "skip": 2}
    assert by_status(server, *put) == Counter({409: 1, 200: 2})
    assert_exactly_once(server, final)
