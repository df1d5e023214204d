"""QuickBooks against its sandbox over HTTP: faults in both of Intuit's shapes, 6210 for a closed period and for a
duplicate DocNumber, never someone else's entry (a hostile search, a re-keyed entry), and tenant ids of every shape
reaching QuickBooks within its DocNumber rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from ledger_pipeline.ledger.sink import RemoteEntry, SinkError
from ledger_pipeline.sandboxes.base import SandboxLimits
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import Settings
from ledger_pipeline.systems.core import ApiCore
from ledger_pipeline.systems.quickbooks.client import (
    QuickBooksClient,
    QuickBooksDialect,
    QuickBooksError,
    fault_errors,
)
from ledger_pipeline.systems.quickbooks.sink import (
    DOC_NUMBER_MAX,
    NotOurEntry,
    classify,
    classify_fault,
    doc_number,
)
from ledger_pipeline_tests.helpers import MemoryStore as MemStore
from ledger_pipeline_tests.test_system_quickbooks import (
    MONTHS,
    WINDOW,
    _start,
    connect,
    control,
    entries_for,
    open_conn,
    post,
    remote_entries,
)

# the gateway's 401 as routablehq/python-quickbooks#250 quotes it, the 403 as intuit/oauth-jsclient#2 does, the
# data services' fault as developer.intuit.com documents it, and an XML fault (python-quickbooks#120)
LOWER_401 = {"warnings": None, "intuitObject": None, "fault": {"error": [{
    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
    "detail": "Malformed bearer token: too short or too long", "code": "3200", "element": None}],
    "type": "AUTHENTICATION"}, "report": None, "queryResponse": None, "batchItemResponse": [],
    "attachableResponse": [], "syncErrorResponse": None, "requestId": None, "time": 1633520295688, "status": None,
    "cdcresponse": []}
LOWER_403 = {"fault": {"error": [{"message": "message=AuthorizationFailed; errorCode=003100; statusCode=403",
                                  "detail": None, "code": "3100", "element": None}], "type": "SERVICE"}}
UPPER_6210 = {"Fault": {"Error": [{"Message": "Account Period Closed", "Detail": "The account period has closed and "
                                   "the account books cannot be updated through the QBO Services API.",
                                   "code": "6210", "element": ""}], "type": "ValidationFault"}, "time": "x"}
XML_401 = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?><IntuitResponse xmlns="http://schema.intuit.com/'
           'finance/v3"><Fault type="AuthenticationFault"><Error code="100"><Message>General Authentication Error'
           '</Message><Detail>AuthenticationErrorGeneral: SRV-110-Authentication Failure , statusCode: 401</Detail>'
           '</Error></Fault></IntuitResponse>')


@pytest.fixture
def qbo(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    server = _start(tmp_path, monkeypatch, limits=SandboxLimits(scale=1000))
    yield server
    server.stop()


def test_fault_bodies_in_every_shape_are_parsed() -> None:
    assert [(e["code"], e["Message"]) for e in fault_errors(LOWER_401)] == [
        ("3200", "message=AuthenticationFailed; errorCode=003200; statusCode=401")]
    assert fault_errors(LOWER_403)[0]["code"] == "3100" and fault_errors(LOWER_403)[0]["Detail"] == ""
    assert fault_errors(UPPER_6210)[0]["code"] == "6210"
    assert fault_errors(XML_401) == [{"Message": "General Authentication Error", "Detail": "AuthenticationErrorGeneral"
                                      ": SRV-110-Authentication Failure , statusCode: 401", "code": "100",
                                      "element": ""}]
    assert classify(QuickBooksError("rejected", "t1", "x", 403, LOWER_403)).kind == "needs_reauth"
    assert classify(QuickBooksError("rejected", "t1", "x", 400, UPPER_6210)).kind == "locked"
    # one code, two meanings (Intuit's 2017 list): the message decides
    dup = [{"Message": "Duplicate Document Number Error", "Detail": "You must specify a different number.",
            "code": "6210"}]
    assert classify_fault(dup, 400).kind == "duplicate"
    assert classify_fault([{"Message": "Duplicate Doc Num", "code": "6140"}], 400).kind == "duplicate"


def test_401_and_403_bodies_are_the_gateways_and_the_client_reads_them(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, ["t1", "t2"])
        realm, other = conn.vault.details("t1")[0], conn.vault.details("t2")[0]
        base = f"{qbo.url}/quickbooks/v3/company"
        bad = httpx.get(f"{base}/{realm}/journalentry/1", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        assert bad.json()["fault"]["type"] == "AUTHENTICATION" and bad.json()["fault"]["error"][0]["code"] == "3200"
        assert "Fault" not in bad.json(), "the gateway's shape, not the data services'"
        token = conn.client.dialect.token("t1", None)
        wrong = httpx.get(f"{base}/{other}/journalentry/1", headers={"Authorization": f"Bearer {token}"})
        assert wrong.status_code == 403 and wrong.json()["fault"]["error"][0]["code"] == "3100"

        # our client on a realm the grant does not cover: 403 read from the lower-case body -> needs_reauth
        dialect = QuickBooksDialect(conn.client.dialect.base, conn.client.dialect.token, lambda t: other)
        client = QuickBooksClient(ApiCore(dialect, limiter=conn.client.core.limiter, attempts=2,
                                          backoff_initial=0.01))
        try:
            with pytest.raises(QuickBooksError) as err:
                client.get_entry("t1", "1")
        finally:
            client.close()
        assert err.value.status == 403 and err.value.code == "3100"
        assert classify(err.value).kind == "needs_reauth" and "code 3100" in classify(err.value).message

        # every request 401 (a token QuickBooks keeps refusing): refreshed once per try, then a retryable error
        # that quotes QuickBooks' own words
        httpx.post(f"{qbo.url}/_sandbox/faults", json={"unauthorized_rate": 1.0, "systems": ["quickbooks"]})
        with pytest.raises(SinkError) as refused:
            conn.fetch_chart("t1")
        assert refused.value.kind == "retryable" and "AuthenticationFailed" in refused.value.message
        assert "(code 3200)" in refused.value.message
    finally:
        conn.close()


def test_6210_closed_period_and_duplicate_doc_number(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, ["t1", "t2"])
        # closed books: Intuit's 6210 wording, classified as a lock
        control(qbo.url, "t2", "lock_date", {"lock_date": "2025-01-31"})
        jan = entries_for("t2", conn.fetch_chart("t2"))[0]
        [locked] = conn.sink.create("t2", [jan])
        assert locked.error is not None and locked.error.kind == "locked"
        assert "The account period has closed and the account books cannot be updated" in locked.error.message

        # the company warns on a repeated DocNumber: QuickBooks answers 6210 "Duplicate Document Number Error"
        control(qbo.url, "t1", "preferences", {"warn_duplicate_doc_number": True})
        chart = conn.fetch_chart("t1")
        entries = entries_for("t1", chart)
        assert post(conn, MemStore(), "t1", entries).counts == {"create": 3}
        changed = entries_for("t1", chart, bump={MONTHS[0]: 5_000})
        [dup] = conn.sink.create("t1", changed[:1])  # a new requestid (new content): QuickBooks itself refuses
        assert dup.error is not None and dup.error.kind == "duplicate" and "(code 6210)" in dup.error.message

        # the posting state was lost: the creates meet 6210, the engine looks the months up and adopts/updates ours
        out = post(conn, MemStore(), "t1", changed)
        assert out.counts == {"adopted": 2, "update": 1} and not out.failures, out
        mine = remote_entries(qbo.url, "t1")
        assert sorted(r["custom_id"] for r in mine) == sorted(e.custom_id for e in changed), "no second entry"
        jan_remote = next(r for r in mine if r["custom_id"] == changed[0].custom_id)
        assert Decimal(str(jan_remote["total_debit"])) == Decimal(changed[0].total_debit_minor) / 100
    finally:
        conn.close()


def _foreign(ids: dict[str, str], doc: str, note: str, amount: str) -> dict:
    return {"TxnDate": "2025-01-31", "DocNumber": doc, "PrivateNote": note, "Line": [
        {"Amount": amount, "DetailType": "JournalEntryLineDetail",
         "JournalEntryLineDetail": {"PostingType": "Debit", "AccountRef": {"value": ids["5-50000"]}}},
        {"Amount": amount, "DetailType": "JournalEntryLineDetail",
         "JournalEntryLineDetail": {"PostingType": "Credit", "AccountRef": {"value": ids["1-10001"]}}}]}


def test_a_hostile_search_never_makes_someone_elses_entry_ours(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, ["t1"])
        chart = conn.fetch_chart("t1")
        ids = {a.number: a.account_id for a in chart}
        entries = entries_for("t1", chart)
        # a bookkeeper's entry, and a copy that took our January DocNumber but names another custom_id
        control(qbo.url, "t1", "entries", {"create": _foreign(ids, "INV-0001", "typed by the bookkeeper", "12.34")})
        control(qbo.url, "t1", "entries", {"create": _foreign(ids, doc_number(entries[0].custom_id),
                                                             "r2a-pl-someone-else-202501 | copied", "56.78")})
        foreign = {r["id"]: r for r in remote_entries(qbo.url, "t1")}
        mode = control(qbo.url, "t1", "search", {"ignore_filters": True})
        assert mode["ignore_filters"] is True
        realm = conn.vault.details("t1")[0]
        listed = conn.client.query("t1", "select * from JournalEntry where DocNumber = 'nothing-like-it'")
        assert [e["Id"] for e in listed["JournalEntry"]] == sorted(foreign), "the mode ignores the where clause"

        assert [conn.sink.find("t1", e.custom_id) for e in entries] == [None] * 3, "nothing of ours is there yet"
        store = MemStore()
        assert post(conn, store, "t1", entries).counts == {"create": 3}
        # a fresh process, no hints: each month is found through the hostile search, and it is ours
        fresh = open_conn()
        try:
            for e in entries:
                found = fresh.sink.find("t1", e.custom_id)
                assert found is not None and found.remote_id == store.rows[e.custom_id].remote_id
        finally:
            fresh.close()
        # the posting state lost its remote ids: recovery lists the window (filters ignored) and adopts only ours
        lost = MemStore()
        lost.rows = {cid: replace(r, status="pending", action="create", remote_id=None, remote_state={})
                     for cid, r in store.rows.items()}
        assert post(conn, lost, "t1", entries).counts == {"adopted": 3}
        assert {lost.rows[e.custom_id].remote_id for e in entries} == {store.rows[e.custom_id].remote_id
                                                                       for e in entries}
        # late data updates ours; the foreign entries are untouched
        late = entries_for("t1", chart, bump={m: 700 for m in MONTHS})
        assert post(conn, store, "t1", late).counts == {"update": 3}
        after = {r["id"]: r for r in remote_entries(qbo.url, "t1")}
        for fid, before in foreign.items():
            assert after[fid] == before, f"entry {fid} is someone else's"
        assert realm == conn.vault.details("t1")[0]
    finally:
        conn.close()


def test_an_entry_rekeyed_by_a_person_is_never_updated_or_deleted(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, ["t1"])
        chart = conn.fetch_chart("t1")
        entries = entries_for("t1", chart)
        store = MemStore()
        assert post(conn, store, "t1", entries).counts == {"create": 3}
        jan = entries[0]
        jan_id = store.rows[jan.custom_id].remote_id
        control(qbo.url, "t1", "entries", {"custom_id": jan.custom_id, "doc_number": "MANUAL-7"})  # re-keyed
        before = next(r for r in remote_entries(qbo.url, "t1") if r["id"] == jan_id)

        late = entries_for("t1", chart, bump={MONTHS[0]: 999})
        out = post(conn, store, "t1", late)  # SyncToken moved (5010) -> re-read -> not ours: a named error
        assert out.counts == {"skip": 2}
        [(cid, message, kind)] = out.failures
        assert cid == jan.custom_id and kind == "rejected"
        assert "tenant t1, period 2025-01" in message and "no longer carries our key" in message
        assert "set its DocNumber back to 'r2a-pl-t1-202501'" in message

        with pytest.raises(NotOurEntry):  # the hint of our own write now names a re-keyed entry
            conn.sink.find("t1", jan.custom_id, {"Id": jan_id})
        stub = RemoteEntry(jan_id, jan.custom_id, jan.transaction_date, None, 0, 0, ())
        fresh = open_conn()
        try:
            with pytest.raises(NotOurEntry):  # no SyncToken known: read first, refused before any write
                fresh.sink.delete("t1", stub)
            with pytest.raises(NotOurEntry):  # an old SyncToken: 5010, re-read, refused
                fresh.sink.delete("t1", replace(stub, extra={"SyncToken": "0"}))
        finally:
            fresh.close()
        after = next(r for r in remote_entries(qbo.url, "t1") if r["id"] == jan_id)
        assert after == before, "nothing was written to the re-keyed entry"
    finally:
        conn.close()


TENANTS = ["a/b#c?d%e f", "Ünïcödé テナント", "O'Brien & Sons; --", "L" * 150, "t7"]


def test_tenant_ids_of_every_shape_reach_quickbooks(settings, qbo) -> None:  # noqa: ANN001
    conn = open_conn()
    try:
        connect(conn, TENANTS)
        store, wanted = MemStore(), {}
        for t in TENANTS:
            wanted[t] = entries_for(t, conn.fetch_chart(t), months=MONTHS[:2])
            assert post(conn, store, t, wanted[t]).counts == {"create": 2}, t
        every = remote_entries(qbo.url)
        docs = [r["doc_number"] for r in every]
        assert len(every) == 10 and len(set(docs)) == 10 and all(len(d) <= DOC_NUMBER_MAX for d in docs)
        assert doc_number("r2a-pl-t7-202501") == "r2a-pl-t7-202501", "a short plain id is its own key"
        for t in TENANTS:
            mine = remote_entries(qbo.url, t)  # the login as a query value
            assert sorted(r["custom_id"] for r in mine) == sorted(e.custom_id for e in wanted[t]), t
            for r in mine:
                assert r["doc_number"] == doc_number(r["custom_id"]) and r["private_note"].startswith(r["custom_id"])
        assert doc_number(wanted["L" * 150][0].custom_id) == "LLLLLL-202501~" + doc_number(
            wanted["L" * 150][0].custom_id)[-7:], "a readable prefix, the period and a short hash"

        fresh = open_conn()  # no hints: every month found by its DocNumber through the query string
        try:
            for t in TENANTS:
                for e in wanted[t]:
                    found = fresh.sink.find(t, e.custom_id, {"Id": "99999"})  # a stale hint: gone, then searched
                    assert found is not None and found.remote_id == store.rows[e.custom_id].remote_id
                    assert found.custom_id == e.custom_id
                listed = fresh.sink.list_period(t, *WINDOW)
                assert sorted(x.custom_id for x in listed) == sorted(e.custom_id for e in wanted[t])
                assert fresh.client.get_entry(t, "no/such#id?x=1 %") is None, "a 404 look-up is 'not found'"
                assert post(fresh, store, t, wanted[t]).counts == {"skip": 2}
        finally:
            fresh.close()
        assert dt.date(2025, 1, 31) == wanted["t7"][0].transaction_date
    finally:
        conn.close()
