"""Zoho Books against its sandbox over HTTP: searches that see every date (filter_by=JournalDate.All against a
default window on the organization's clock), the organization id as a header, the daily cap without an invented
code, never someone else's journal (a hostile search, a re-keyed journal), an update whose lines are gone, and tenant
ids of every shape within reference_number's 100 characters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from ledger_pipeline.ledger.sink import RemoteEntry, SinkError, custom_id_for
from ledger_pipeline.money import to_minor
from ledger_pipeline.settings import Settings
from ledger_pipeline.systems.zoho.client import is_daily_limit
from ledger_pipeline.systems.zoho.sink import REFERENCE_MAX, NotOurEntry, reference_number
from ledger_pipeline_tests.helpers import MemoryStore as MemStore
from ledger_pipeline_tests.test_system_zoho import APR, FEB, JAN, MAR, Env, _make_env, chart_ids, entry, months, post


@pytest.fixture
def zoho(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with _make_env(tmp_path, monkeypatch) as env:
        yield env


def api(env: Env, tenant: str) -> tuple[str, dict, str]:
    """(Books API base, auth header, organization_id) of a connected tenant, for raw requests."""
    company_id, extra = env.conn.vault.details(tenant)
    token = env.conn.vault.access_token(tenant, lambda rt: env.conn.oauth.refresh(tenant, rt))
    return extra["api_domain"] + "/books/v3", {"Authorization": f"Zoho-oauthtoken {token}"}, company_id


def test_every_date_search_sends_journaldate_all_against_a_this_year_default(zoho: Env) -> None:
    zoho.connect(["y1"])
    ids = chart_ids(zoho.conn, "y1")
    assert zoho.control("y1", "clock", {"today": "2026-03-15"})["today"] == "2026-03-15"
    store = MemStore()
    last_year = months("y1", ids, [JAN])  # dated 2025-01-31: last year on the organization's clock
    assert post(zoho.conn, store, "y1", last_year, (JAN, FEB)).counts == {"create": 1}
    this_year = [entry("y1", dt.date(2026, 2, 1), ids, "10.00", "1.00", "1.00")]
    assert post(zoho.conn, MemStore(), "y1", this_year, (dt.date(2026, 2, 1), dt.date(2026, 3, 1))).counts == {
        "create": 1}

    base, auth, org = api(zoho, "y1")
    bare = httpx.get(f"{base}/journals", params={"organization_id": org}, headers=auth).json()
    assert [j["journal_date"] for j in bare["journals"]] == ["2026-02-28"], "no filter_by: this year only"
    ctx = bare["page_context"]
    assert (ctx["applied_filter"], ctx["start_date"], ctx["end_date"]) == ("JournalDate.ThisYear", "2026-01-01",
                                                                           "2026-12-31")
    by_ref = httpx.get(f"{base}/journals", headers=auth, params={
        "organization_id": org, "reference_number": last_year[0].custom_id}).json()
    assert by_ref["journals"] == [], "a reference_number search alone misses last year's journal"
    every = httpx.get(f"{base}/journals", headers=auth, params={
        "organization_id": org, "reference_number": last_year[0].custom_id, "filter_by": "JournalDate.All"}).json()
    assert [j["journal_date"] for j in every["journals"]] == ["2025-01-31"]
    month = httpx.get(f"{base}/journals", headers=auth, params={
        "organization_id": org, "filter_by": "JournalDate.ThisMonth"}).json()
    assert month["journals"] == [] and month["page_context"]["start_date"] == "2026-03-01"

    # the client's look-ups see last year's journal: found, and after a lost outcome adopted, never re-created
    found = zoho.conn.sink.find("y1", last_year[0].custom_id)
    assert found is not None and found.remote_id == store.rows[last_year[0].custom_id].remote_id
    lost = MemStore()
    lost.rows = {cid: replace(r, status="pending", action="create", remote_id=None)
                 for cid, r in store.rows.items()}
    out = post(zoho.conn, lost, "y1", last_year, (JAN, FEB))
    assert out.counts == {"adopted": 1} and zoho.count("POST", "/journals") == 2
    listed = zoho.conn.sink.list_period("y1", JAN, FEB)
    assert [x.custom_id for x in listed] == [last_year[0].custom_id]


def test_organization_id_header_and_the_daily_cap_without_an_invented_code(zoho: Env) -> None:
    zoho.connect(["h1", "h2"])
    base, auth, org = api(zoho, "h1")
    header = httpx.get(f"{base}/chartofaccounts", headers={**auth, "X-com-zoho-books-organizationid": org})
    assert header.status_code == 200 and header.json()["code"] == 0, header.text
    other = zoho.conn.vault.details("h2")[0]
    clash = httpx.get(f"{base}/chartofaccounts", params={"organization_id": org},
                      headers={**auth, "X-com-zoho-books-organizationid": other})
    assert clash.status_code == 400 and clash.json()["code"] == 6041
    assert httpx.get(f"{base}/chartofaccounts", headers=auth).json()["code"] == 6041

    plan = zoho.control("h1", "plan", {"daily_cap": 0})
    assert plan["daily_cap"] == 0
    capped = httpx.get(f"{base}/chartofaccounts", params={"organization_id": org}, headers=auth)
    body = capped.json()
    assert capped.status_code == 429 and body["code"] == 45 and "for the day" in body["message"]
    assert is_daily_limit(429, body["code"], body["message"])
    assert not is_daily_limit(429, 45, "You have made too many requests continuously. Please try again after some "
                                       "time.")
    with pytest.raises(SinkError) as deferred:
        zoho.conn.fetch_chart("h1")
    assert deferred.value.kind == "deferred"


def _foreign(ids: dict[str, str], ref: str, notes: str) -> dict:
    return {"journal_date": "2025-01-31", "reference_number": ref, "notes": notes, "status": "published",
            "line_items": [{"account_id": ids["5-50000"], "debit_or_credit": "debit", "amount": "12.34"},
                           {"account_id": ids["1-10001"], "debit_or_credit": "credit", "amount": "12.34"}]}


def test_a_hostile_search_never_makes_someone_elses_journal_ours(zoho: Env) -> None:
    zoho.connect(["x1"])
    ids = chart_ids(zoho.conn, "x1")
    entries = months("x1", ids, [JAN, FEB])
    zoho.control("x1", "entries", {"create": _foreign(ids, "7355", "Loan repayment")})
    zoho.control("x1", "entries", {"create": _foreign(ids, entries[0].custom_id,
                                                      "r2a-pl-someone-else-202501 | a copy")})
    foreign = {e["id"]: e for e in zoho.entries()}
    assert zoho.control("x1", "search", {"ignore_filters": True})["ignore_filters"] is True
    base, auth, org = api(zoho, "x1")
    listed = httpx.get(f"{base}/journals", headers=auth, params={"organization_id": org,
                                                                "reference_number": "nothing-like-it"}).json()
    assert len(listed["journals"]) == 2, "the mode ignores the filters"

    assert [zoho.conn.sink.find("x1", e.custom_id) for e in entries] == [None, None], "nothing of ours yet"
    store = MemStore()
    assert post(zoho.conn, store, "x1", entries, (JAN, MAR)).counts == {"create": 2}
    fresh = zoho.open()
    for e in entries:
        found = fresh.sink.find("x1", e.custom_id)
        assert found is not None and found.remote_id == store.rows[e.custom_id].remote_id
    lost = MemStore()
    lost.rows = {cid: replace(r, status="pending", action="create", remote_id=None) for cid, r in store.rows.items()}
    assert post(zoho.conn, lost, "x1", entries, (JAN, MAR)).counts == {"adopted": 2}
    late = months("x1", ids, [JAN, FEB], bump=7)
    assert post(zoho.conn, store, "x1", late, (JAN, MAR)).counts == {"update": 2}
    after = {e["id"]: e for e in zoho.entries()}
    for jid, before in foreign.items():
        assert after[jid] == before, f"journal {jid} is someone else's"


def test_a_journal_rekeyed_by_a_person_is_never_updated_or_deleted(zoho: Env) -> None:
    zoho.connect(["k1"])
    ids = chart_ids(zoho.conn, "k1")
    entries = months("k1", ids, [JAN, FEB])
    store = MemStore()
    assert post(zoho.conn, store, "k1", entries, (JAN, MAR)).counts == {"create": 2}
    jan_id = store.rows[entries[0].custom_id].remote_id
    zoho.control("k1", "entries", {"custom_id": entries[0].custom_id, "reference_number": "PETTY-CASH-1"})
    before = next(e for e in zoho.entries() if e["id"] == jan_id)

    late = months("k1", ids, [JAN, FEB], bump=3)
    out = post(zoho.conn, store, "k1", late[:1] + entries[1:], (JAN, MAR))
    assert out.counts == {"skip": 1}
    [(cid, message, kind)] = out.failures
    assert cid == entries[0].custom_id and kind == "rejected"
    assert "tenant k1, period 2025-01" in message and "no longer carries our key" in message
    assert f"set its reference number back to {entries[0].custom_id!r}" in message
    stub = RemoteEntry(jan_id, entries[0].custom_id, entries[0].transaction_date, None, 0, 0, ())
    with pytest.raises(NotOurEntry):
        zoho.conn.sink.delete("k1", stub)
    assert zoho.count("PUT", "/journals/{journal_id}") == 0 and zoho.count("DELETE", "/journals/{journal_id}") == 0
    assert next(e for e in zoho.entries() if e["id"] == jan_id) == before, "nothing was written"


def test_an_update_whose_lines_are_gone_rereads_and_retries_once(zoho: Env) -> None:
    zoho.connect(["l1"])
    ids = chart_ids(zoho.conn, "l1")
    [jan] = months("l1", ids, [JAN])
    store = MemStore()
    assert post(zoho.conn, store, "l1", [jan], (JAN, FEB)).counts == {"create": 1}
    remote = zoho.conn.sink.find("l1", jan.custom_id)
    assert remote is not None
    zoho.control("l1", "entries", {"custom_id": jan.custom_id, "replace_lines": True})  # a person re-entered them
    changed = entry("l1", JAN, ids, "1111.11", "400.10", "150.05", extra_expense="9.99")
    updated = zoho.conn.sink.update("l1", remote, changed)
    assert updated.matches(changed) and updated.remote_id == remote.remote_id
    assert zoho.count("PUT", "/journals/{journal_id}", 400) == 1, "refused: the line ids it sent are gone"
    assert zoho.count("PUT", "/journals/{journal_id}", 200) == 1, "one retry against the re-read journal"
    [held] = [e for e in zoho.entries() if e["id"] == remote.remote_id]
    assert to_minor(held["total_debit"]) == changed.total_debit_minor
    kept = {ln["id"] for ln in held["transaction_account_lines"]}
    again = zoho.conn.sink.update("l1", zoho.conn.sink.find("l1", jan.custom_id), months("l1", ids, [JAN])[0])
    assert set(again.line_ids) & kept, "an update keeps the line ids it names"


TENANTS = ["a/b#c?d%e f", "Ünïcödé テナント", "O'Brien & Sons; --", "L" * 150, "z7"]


def test_tenant_ids_of_every_shape_reach_zoho(zoho: Env) -> None:
    zoho.connect(TENANTS)
    store, wanted = MemStore(), {}
    for t in TENANTS:
        wanted[t] = months(t, chart_ids(zoho.conn, t), [JAN, FEB])
        assert post(zoho.conn, store, t, wanted[t], (JAN, MAR)).counts == {"create": 2}, t
    refs = [e["custom_id"] for e in zoho.entries()]  # the inspection's custom_id is the reference_number
    assert len(refs) == 10 and len(set(refs)) == 10 and all(len(r) <= REFERENCE_MAX for r in refs)
    for t in TENANTS:
        for e in wanted[t]:
            assert reference_number(e.custom_id) in refs
    long_id = custom_id_for("L" * 150, JAN)
    key = reference_number(long_id)
    assert len(long_id) > REFERENCE_MAX and len(key) == REFERENCE_MAX and key.startswith("r2a-pl-LLL")
    assert key[-18:-11] == "-202501" and key[-11] == "~" and key == reference_number(long_id), "stable"
    assert reference_number(custom_id_for("z7", JAN)) == "r2a-pl-z7-202501"

    fresh = zoho.open()
    for t in TENANTS:
        for e in wanted[t]:
            found = fresh.sink.find(t, e.custom_id)
            assert found is not None and found.remote_id == store.rows[e.custom_id].remote_id
            assert found.custom_id == e.custom_id, "the full id reads back (from notes when the key is shortened)"
        listed = fresh.sink.list_period(t, JAN, MAR)
        assert sorted(x.custom_id for x in listed) == sorted(e.custom_id for e in wanted[t])
        assert fresh.client.get_journal(t, "no/such#id?x=1 %") is None, "a 404 look-up is 'not found'"
        assert post(fresh, store, t, wanted[t], (JAN, MAR)).counts == {"skip": 2}
    assert APR > MAR
