"""Jurnal client and emulator against Mekari's own references (shared/reference/fidelity.md rows 8, 9, 15 and the
exactly-once rules): batch_create results, PATCH bodies, status and category shapes, never adopting someone else's
entry, custom ids that are not URL-safe, and updates after the lines changed in Jurnal. Real HTTP, real sandbox."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import httpx
import pytest

from ledger_pipeline.ledger.sink import CanonicalEntry, CanonicalLine, custom_id_for, memo_for
from ledger_pipeline.posting import PostingEngine
from ledger_pipeline.sandboxes.jurnal import API
from ledger_pipeline.settings import load_settings
from ledger_pipeline.systems import OpenOptions, open_connection
from ledger_pipeline.systems.jurnal.session import JurnalSession
from ledger_pipeline.systems.jurnal.sink import (
    KEY_MAX,
    JurnalSink,
    NotOurEntry,
    created_entry,
    jurnal_key,
    named,
    parse_remote,
)
from ledger_pipeline_tests.helpers import MemoryStore, connect, reset_stats, sandbox_entries, sandbox_stats, session

JAN = dt.date(2025, 1, 1)
WINDOW = (JAN, dt.date(2025, 3, 1))


def canonical(sess: JurnalSession, tenant: str, lines: list[tuple[str, int, int]], period: dt.date = JAN,
              content: str = "v1") -> CanonicalEntry:
    """Our entry for a tenant-month: (account number, debit minor, credit minor) per line."""
    ids = {a["number"]: str(a["id"]) for a in sess.client.accounts(tenant)}
    last = (period.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    return CanonicalEntry(tenant, period, custom_id_for(tenant, period), last, memo_for(period), "IDR", content,
                          tuple(CanonicalLine(i, ids[n], n, d, c, f"line {i}")
                                for i, (n, d, c) in enumerate(lines, 1)))


TWO = [("6-60101", 1_500_000_00, 0), ("1-10001", 0, 1_500_000_00)]
THREE = [("6-60101", 1_000_000_00, 0), ("6-60217", 750_000_50, 0), ("1-10001", 0, 1_750_000_50)]


class Recorder:
    """Every request the client sends and every answer, captured with httpx event hooks (our code untouched)."""

    def __init__(self, http: httpx.Client):
        self.exchanges: list[tuple[str, str, dict | None, int, object]] = []
        http.event_hooks["response"].append(self._response)

    def _response(self, response: httpx.Response) -> None:
        response.read()
        req = response.request
        body = json.loads(req.content) if req.content else None
        answer = json.loads(response.content) if response.content else None
        self.exchanges.append((req.method, req.url.raw_path.decode(), body, response.status_code, answer))

    def sent(self, method: str) -> list[tuple[str, dict | None, int, object]]:
        return [(path, body, status, answer) for m, path, body, status, answer in self.exchanges if m == method]


@pytest.fixture
def jurnal(settings, sandbox) -> Iterator[tuple[JurnalSession, JurnalSink, Recorder]]:  # noqa: ANN001
    connect(["t1"])
    sess = session()
    recorder = Recorder(sess.client.http)
    try:
        yield sess, JurnalSink(sess.client), recorder
    finally:
        sess.close()


def api(sandbox, tenant: str = "t1") -> httpx.Client:  # noqa: ANN001
    """A raw partner-API client for one tenant (its access token from a fresh OAuth grant)."""
    http = httpx.Client(base_url=sandbox.url)
    auth = http.get("/auth", params={"client_id": "ledger-pipeline-sandbox", "response_type": "code",
                                     "login_hint": tenant, "redirect_uri": "http://127.0.0.1:9/cb"})
    code = httpx.URL(auth.headers["location"]).params["code"]
    token = http.post("/auth/oauth2/token", json={
        "client_id": "ledger-pipeline-sandbox", "client_secret": "sandbox-secret-not-for-production",
        "grant_type": "authorization_code", "code": code}).json()["access_token"]
    return httpx.Client(base_url=sandbox.url + API, headers={"Authorization": f"Bearer {token}"}, timeout=10)


# -- row 8: batch_create results --------------------------------------------------------------------------------
def test_batch_create_reads_the_result_from_content_not_the_echoed_body(jurnal, sandbox) -> None:  # noqa: ANN001
    sess, sink, rec = jurnal
    feb, mar = dt.date(2025, 2, 1), dt.date(2025, 3, 1)
    entries = [canonical(sess, "t1", TWO), canonical(sess, "t1", THREE, feb), canonical(sess, "t1", TWO, mar)]
    assert all(r.remote is not None for r in sink.create("t1", entries[:1]))
    results = sink.create("t1", entries)  # the first one is already there: a 409 in the batch
    assert results[0].error is not None and results[0].error.kind == "duplicate"
    for e, r in zip(entries[1:], results[1:], strict=True):
        assert r.remote is not None and r.remote.matches(e) and r.remote.custom_id == e.custom_id
    # the emulator answers as Mekari's Swagger example does: `body` echoes the request, `content` holds the result
    (_, body, status, answer), = rec.sent("POST")[-1:]
    items = [i["journal_entry"] for i in answer["journal_entries"]]
    assert status == 200 and [i["status"] for i in items] == [409, 201, 201]
    assert items[1]["body"] == body["journal_entries"][1] and "id" not in items[1]["body"]["journal_entry"]
    assert items[1]["content"]["journal_entry"]["custom_id"] == jurnal_key(entries[1].custom_id)
    assert "custom_id" in items[0]["content"]
    # and the client reads either reading of the item
    created = items[1]["content"]["journal_entry"]
    assert created_entry({"status": 201, "body": created}) == created  # an older reading: the entry in `body`
    assert created_entry({"status": 201, "body": body["journal_entries"][1], "content": created}) == created
    assert created_entry({"status": 201, "body": body["journal_entries"][1]}) is None  # only the echo: look it up


# -- row 9: PATCH bodies ----------------------------------------------------------------------------------------
def test_patch_sends_what_the_spec_requires_and_replaces_lines_without_destroy(jurnal, sandbox) -> None:  # noqa: ANN001
    sess, sink, rec = jurnal
    first = canonical(sess, "t1", TWO)
    remote = sink.create("t1", [first])[0].remote
    raw = api(sandbox)
    for missing in ("transaction_date", "transaction_no"):  # the emulator enforces the spec's `required`
        body = {"transaction_date": "2025-01-31", "transaction_no": "JE/00001", "memo": "x"}
        body.pop(missing)
        refused = raw.patch(f"/journal_entries/{remote.remote_id}", json={"journal_entry": body})
        assert refused.status_code == 422 and missing in refused.json(), refused.text
    # same line count, more lines, fewer lines: each time Jurnal holds exactly our entry, under one custom_id
    for lines in (TWO[::-1], THREE, TWO):
        wanted = canonical(sess, "t1", [(n, d * 2, c * 2) for n, d, c in lines], content=str(lines))
        remote = sink.update("t1", remote, wanted)
        assert remote.matches(wanted)
        held = sandbox_entries(sandbox.url, "t1")
        assert len(held) == 1 and held[0]["custom_id"] == first.custom_id
        assert sorted(ln["account"]["id"] for ln in held[0]["transaction_account_lines"]) == sorted(
            int(ln.account_id) for ln in wanted.lines)
        assert held[0]["tags_string"] == "r2a"
    patches = [body["journal_entry"] for _, body, _, _ in rec.sent("PATCH")]
    assert len(patches) == 2, "fewer lines: deleted and created again (the API cannot remove a line)"
    for p in patches:
        assert p["transaction_date"] == "2025-01-31" and p["transaction_no"] and p["tag_name"] == ["r2a"]
        assert "tags" not in p and all("_destroy" not in ln for ln in p["transaction_account_lines_attributes"])
        assert all({"account_id", "debit", "credit"} <= set(ln) for ln in p["transaction_account_lines_attributes"])
    assert [("id" in ln) for ln in patches[1]["transaction_account_lines_attributes"]] == [True, True, False]
    assert len(rec.sent("DELETE")) == 1


# -- row 15: transaction_status and account.category ------------------------------------------------------------
def test_status_and_category_are_objects_and_both_shapes_parse(jurnal, sandbox) -> None:  # noqa: ANN001
    sess, sink, _ = jurnal
    remote = sink.create("t1", [canonical(sess, "t1", TWO)])[0].remote
    data = api(sandbox).get(f"/journal_entries/{remote.remote_id}").json()["journal_entry"]
    assert data["transaction_status"] == {"id": 2, "name": "Closed", "name_bahasa": "Selesai"}
    category = data["transaction_account_lines"][0]["account"]["category"]
    assert category == {"id": category["id"], "name": "Beban"} and isinstance(category["id"], int)
    assert data["tags"] == [{"id": data["tags"][0]["id"], "name": "r2a"}] and data["tags_string"] == "r2a"
    assert data["total_debit"] == 1_500_000 and isinstance(data["total_debit"], int), "whole amounts as integers"
    # the client reads the spec's shapes and the older string shapes alike
    older = {**data, "transaction_status": "Approved", "transaction_account_lines": [
        {**ln, "account": {**ln["account"], "category": "Beban"}} for ln in data["transaction_account_lines"]]}
    assert parse_remote(data).lines == parse_remote(older).lines == remote.lines
    assert parse_remote(data).state_detail == "Jurnal status Closed"
    assert named({"id": 3, "name": "Kas & Bank"}) == named("Kas & Bank") == "Kas & Bank"
    s = load_settings()
    connection = open_connection("jurnal", s, OpenOptions(s.ops_database_url, s.rate_limit_scale, 0.01, 5))
    try:
        assert {a.number: a.category for a in connection.fetch_chart("t1")}["6-60101"] == "Beban"
    finally:
        connection.close()


# -- never adopt an entry that is not ours ----------------------------------------------------------------------
def test_lookups_that_answer_someone_elses_entry_are_never_adopted(jurnal, sandbox) -> None:  # noqa: ANN001
    sess, sink, rec = jurnal
    control = f"{sandbox.url}/_sandbox/companies/t1"
    other = {"transaction_date": "02-01-2025", "custom_id": "typed-by-hand-1", "memo": "someone else's",
             "transaction_account_lines_attributes": [{"account_name": "Gaji", "debit": 70000},
                                                      {"account_name": "Kas", "credit": 70000}]}
    assert httpx.post(f"{control}/entries", json={"create": other}).status_code == 200
    ours = canonical(sess, "t1", TWO)
    store = MemoryStore()
    engine = PostingEngine(sink, store, backoff=0, sleep=lambda s: None)
    assert engine.post_tenant("t1", [ours], {}, WINDOW).counts == {"create": 1}
    before = sandbox_entries(sandbox.url, "t1")
    for mode in ("others_first", "ignore_filters"):
        httpx.post(f"{control}/lookup", json={"mode": mode})
        reset_stats(sandbox.url)
        if mode == "others_first":
            with pytest.raises(NotOurEntry, match="typed-by-hand-1.*not ours.*t1") as err:
                sink.find("t1", ours.custom_id)
            assert err.value.kind == "rejected" and "r2a-pl-t1-202501" in str(err.value)
            # changed -> update from the posting state (a stub): the entry is read first, found foreign, left alone
            changed = canonical(sess, "t1", THREE, content="v2")
            out = engine.post_tenant("t1", [changed], store.state("t1"), WINDOW)
            assert out.failures and "not ours" in out.failures[0][1]
            # gone from the ledger -> delete: the same
            out = engine.post_tenant("t1", [], store.state("t1"), WINDOW)
            assert out.failures and "not ours" in out.failures[0][1]
        # a listing that ignores its filters hands us nothing of another month and maps only our own entry
        listed = sink.list_period("t1", dt.date(2025, 1, 1), dt.date(2025, 1, 2))
        assert listed == []
        listed = sink.list_period("t1", *WINDOW)
        assert {r.custom_id for r in listed} == {ours.custom_id, "typed-by-hand-1"}
        assert sandbox_stats(sandbox.url)["api_writes"] == 0, "nothing written while look-ups misbehave"
    assert sandbox_entries(sandbox.url, "t1") == before
    assert not [p for p, *_ in rec.sent("PATCH")] and not rec.sent("DELETE")


# -- identifiers that are not URL-safe --------------------------------------------------------------------------
ODD = ["acme/eu#1?x=%20 y", ("PT Maju Jaya Sejahtera — Cabang Bandung (ñ) " + "x" * 64)[:64], "12345", "toko.id"]


def test_jurnal_keys_are_safe_unique_stable_and_readable() -> None:
    cids = [custom_id_for(t, JAN) for t in [*ODD, "t1", "t001", "a" * 200, "a" * 201]]
    keys = [jurnal_key(c) for c in cids]
    assert len(set(keys)) == len(keys), "unique"
    assert keys == [jurnal_key(c) for c in cids], "stable"
    for key in keys:
        assert len(key) <= KEY_MAX and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in key)
        assert key.startswith("r2a-pl-") and "-202501" in key, "readable: our prefix and the month"
    assert jurnal_key("r2a-pl-t1-202501") == "r2a-pl-t1-202501", "ids that fit are kept as they are"
    assert jurnal_key(cids[0]).startswith("r2a-pl-acme-eu-1-x-20-y-202501-")
    assert not jurnal_key("20250101").isdigit(), "never a number (Jurnal would read it as its own id)"


def test_odd_tenant_ids_post_exactly_once_through_a_dropped_reply(settings, sandbox) -> None:  # noqa: ANN001
    connect(ODD)
    sess = session()
    rec = Recorder(sess.client.http)
    sink = JurnalSink(sess.client)
    try:
        entries = {t: canonical(sess, t, TWO) for t in ODD}
        for t, e in entries.items():
            assert sink.find(t, e.custom_id) is None, "a 404 on a look-up is 'not found'"
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={"drop_after_commit_rate": 1.0, "writes_only": True})
        store = MemoryStore()
        engine = PostingEngine(sink, store, backoff=0, sleep=lambda s: None)
        for t, e in entries.items():
            out = engine.post_tenant(t, [e], {}, WINDOW)
            assert out.counts == {"adopted": 1} and not out.failures, (t, out)
            assert store.rows[e.custom_id].status == "posted"
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={})
        for t, e in entries.items():
            held = sandbox_entries(sandbox.url, t)
            assert [h["custom_id"] for h in held] == [jurnal_key(e.custom_id)], "no duplicate"
            assert sink.find(t, e.custom_id).matches(e)
        lookups = [p for p, _, status, _ in rec.sent("GET") if "/journal_entries/" in p and status == 200]
        assert lookups and all("/" not in p.split("/journal_entries/")[1] for p in lookups), "one path segment"
    finally:
        sess.close()


def test_entries_keyed_before_keys_were_mapped_are_still_found(jurnal, sandbox) -> None:  # noqa: ANN001
    connect(["toko.id"])
    sess, sink, _ = jurnal
    e = canonical(sess, "toko.id", TWO)
    assert jurnal_key(e.custom_id) != e.custom_id
    legacy = {"transaction_date": "31-01-2025", "custom_id": e.custom_id, "memo": e.memo,
              "transaction_account_lines_attributes": [
                  {"account_id": int(ln.account_id), "debit": ln.debit_minor // 100, "credit": ln.credit_minor // 100}
                  for ln in e.lines]}
    assert httpx.post(f"{sandbox.url}/_sandbox/companies/toko.id/entries", json={"create": legacy}).status_code == 200
    found = sink.find("toko.id", e.custom_id)
    assert found is not None and found.matches(e)
    updated = sink.update("toko.id", found, canonical(sess, "toko.id", THREE))
    assert sandbox_entries(sandbox.url, "toko.id")[0]["custom_id"] == jurnal_key(e.custom_id), "re-keyed"
    assert sink.find("toko.id", e.custom_id).remote_id == updated.remote_id


# -- an update after the lines changed in Jurnal ----------------------------------------------------------------
def test_update_after_lines_changed_remotely_rereads_and_retries_once(jurnal, sandbox) -> None:  # noqa: ANN001
    sess, sink, rec = jurnal
    first = canonical(sess, "t1", TWO)
    sink.create("t1", [first])
    remote = sink.find("t1", first.custom_id)
    stale = set(remote.line_ids)
    httpx.post(f"{sandbox.url}/_sandbox/companies/t1/entries", json={"custom_id": first.custom_id, "relines": True})
    wanted = canonical(sess, "t1", [(n, d and d + 100, c and c + 100) for n, d, c in TWO], content="v2")
    updated = sink.update("t1", remote, wanted)
    assert updated.matches(wanted) and not stale & set(updated.line_ids)
    (_, first_try, s1, answer), (_, second_try, s2, _) = rec.sent("PATCH")
    assert s1 == 422 and "not found" in json.dumps(answer) and s2 == 200
    assert {ln["id"] for ln in first_try["journal_entry"]["transaction_account_lines_attributes"]} == {
        int(i) for i in stale}
    assert not {ln["id"] for ln in second_try["journal_entry"]["transaction_account_lines_attributes"]} & {
        int(i) for i in stale}, "never the stale line ids again"
    # through the engine, from the posting state's (now stale) line ids: read first, then one PATCH
    store = MemoryStore()
    engine = PostingEngine(sink, store, backoff=0, sleep=lambda s: None)
    assert engine.post_tenant("t1", [wanted], {}, WINDOW).counts == {"adopted": 1}
    httpx.post(f"{sandbox.url}/_sandbox/companies/t1/entries", json={"custom_id": first.custom_id, "relines": True})
    again = canonical(sess, "t1", THREE, content="v3")
    out = engine.post_tenant("t1", [again], store.state("t1"), WINDOW)
    assert out.counts == {"update": 1} and not out.failures, out
    assert sink.find("t1", first.custom_id).matches(again)
