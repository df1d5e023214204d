"""JSON-schema checks written from Rootfi's published reference: every request our client sends and every answer
the sandbox gives during a full run (link, chart, uploads final and running, job polls on both documented paths,
look-ups, listings, an update refused and retried, a delete) is validated against the schema of its endpoint.

Sources (docs.integrationlabs.co/api-reference/...), one schema each:
- [JE-ALL] v2/accounting/journal-entries/get-all-journal-entries: list request {take, skip, orderBy, filter
  {field: {eq}}} and the nested answer {data: {data: [entry], total_count}, request_timestamp, response_timestamp,
  request_id} (the three envelope fields "required").
- [AC-ALL] v2/accounting/accounts/get-all-accounts: same envelope; account category ASSET | EXPENSE | LIABILITY |
  EQUITY | INCOME | BANK | UNKNOWN, status ACTIVE | ARCHIVED | UNKNOWN.
- [JE-NEW] v2/accounting/journal-entries/create-journal-entries: request {company_id (integer), data: [{
  document_number, posted_date, description, currency_id, journal_lines: [{account_id, type DEBIT | CREDIT,
  net_amount, ...}]}]}; answer {data: {status, upload_job_id, data: [{job_id, status ("success"), response,
  error}]}, ...}.
- [JOB2] v2/core/jobs/get-job: {data: {rootfi_id, rootfi_company_id, status, job_type PULL | PUSH, config_mode,
  data_model, start_time, end_time, error, sync_id, parent_job_id, ...}, request_timestamp, response_timestamp,
  request_id}; status CREATED | RUNNING | SUCCESS | FAILED (fidelity.md row 5).
- [JOB3] v3/core/sync/get-job: {data: {rootfi_id, rootfi_company_id, status, job_type, config_mode, data_model,
  sync_id, parent_job_id, ...}}.
- [V3-ALL] v3/accounting/accounts/get-all-accounts: the filter operators (`field[operator]`: eq, gte, ...).
- Seed 004 (/work/shared/seeds/004_*): the journal-entry data model and its required attributes.
Our own assumptions, marked where used: document_number at most 21 characters of [A-Za-z0-9._-] (sink.py), the
error shape {"error": {code, message}}, and PUT/DELETE on /api/write/journal_entries/{id} (not in the reference).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from ledger_pipeline_tests.test_rootfi_fidelity import connect, env  # noqa: F401 - the fixture
from ledger_pipeline_tests.test_system_rootfi import MONTHS, WINDOW, control, ids, link, make_entry

SEEDS = Path("/work/shared/seeds")
DATE_TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"}
STR_OR_NULL = {"type": ["string", "null"]}
ENVELOPE = ["request_timestamp", "response_timestamp", "request_id"]  # [JE-ALL], [JOB2]: "required"
JOB_STATUS = ["CREATED", "RUNNING", "SUCCESS", "FAILED"]  # [JOB2] example "SUCCESS"; fidelity.md row 5

LINE = {  # seed 004 "Journal Lines", [JE-ALL]
    "type": "object", "required": ["account_id", "type", "net_amount"],
    "properties": {"platform_id": STR_OR_NULL, "journal_entry_id": STR_OR_NULL, "account_id": {"type": "string"},
                   "type": {"enum": ["DEBIT", "CREDIT"]}, "net_amount": {"type": "number", "minimum": 0},
                   "tax_amount": {"type": ["number", "null"]}, "description": STR_OR_NULL,
                   "tracking_category_ids": {"type": "array", "items": {"type": "string"}}}}
ENTRY_MODEL = {  # seed 004: the journal-entry data model, its "required" attributes
    "type": "object",
    "required": ["platform_id", "account_id", "amount", "currency", "currency_rate", "posted_date", "updated_at"],
    "properties": {"platform_id": {"type": "string"}, "account_id": {"type": "string"},
                   "currency_id": STR_OR_NULL, "amount": {"type": "number"},
                   "currency": {"type": "object", "properties": {"data": {"type": "object"}}},
                   "currency_rate": {"type": "number"}, "document_number": STR_OR_NULL,
                   "journal_entry_type": STR_OR_NULL, "description": STR_OR_NULL, "posted_date": DATE_TIME,
                   "updated_at": {"type": ["string", "null"]},
                   "journal_lines": {"type": "object", "required": ["data"],
                                     "properties": {"data": {"type": "array", "items": LINE}}}}}
ENTRY = {"allOf": [ENTRY_MODEL, {  # [JE-ALL]: a record adds Rootfi's own ids
    "required": ["rootfi_id", "rootfi_company_id"],
    "properties": {"rootfi_id": {"type": "integer"}, "rootfi_company_id": {"type": "integer"},
                   "rootfi_created_at": DATE_TIME, "rootfi_updated_at": DATE_TIME}}]}
CREATED_ENTRY = {  # [JE-NEW]: the created entry in an item's `response`, its lines a plain array
    "type": "object", "required": ["platform_id", "document_number", "posted_date", "journal_lines"],
    "properties": {"platform_id": {"type": "string"}, "document_number": STR_OR_NULL, "posted_date": DATE_TIME,
                   "amount": {"type": "number"}, "journal_lines": {"type": "array", "items": LINE}}}
ACCOUNT = {  # [AC-ALL]
    "type": "object", "required": ["rootfi_id", "platform_id", "name", "category", "status"],
    "properties": {"rootfi_id": {"type": "integer"}, "platform_id": {"type": "string"}, "name": {"type": "string"},
                   "nominal_code": STR_OR_NULL,
                   "category": {"enum": ["ASSET", "EXPENSE", "LIABILITY", "EQUITY", "INCOME", "BANK", "UNKNOWN"]},
                   "status": {"enum": ["ACTIVE", "ARCHIVED", "UNKNOWN"]}}}


def list_reply(record: dict) -> dict:  # [JE-ALL], [AC-ALL]
    return {"type": "object", "required": ["data", *ENVELOPE],
            "properties": {"request_id": {"type": "string"}, "request_timestamp": DATE_TIME,
                           "response_timestamp": DATE_TIME,
                           "data": {"type": "object", "required": ["data", "total_count"],
                                    "properties": {"data": {"type": "array", "items": record},
                                                   "total_count": {"type": "integer", "minimum": 0}}}}}


LIST_REQUEST = {  # [JE-ALL]/[AC-ALL] body; operators: eq [JE-ALL], the rest of v3's syntax [V3-ALL]
    "type": "object", "required": ["take", "skip"],
    "properties": {"company_id": {"type": "integer"}, "take": {"type": "integer", "minimum": 1},
                   "skip": {"type": "integer", "minimum": 0},
                   "orderBy": {"type": "object", "additionalProperties": {"enum": ["asc", "desc"]}},
                   "filter": {"type": "object", "additionalProperties": {
                       "type": "object", "minProperties": 1,
                       "propertyNames": {"enum": ["eq", "neq", "gt", "gte", "lt", "lte", "in"]}}}}}
ITEM = {  # [JE-NEW] data item; document_number's length and characters: our assumption (sink.py)
    "type": "object", "required": ["document_number", "posted_date", "journal_lines"],
    "properties": {"document_number": {"type": "string", "maxLength": 21, "pattern": r"^[A-Za-z0-9._-]+$"},
                   "posted_date": DATE_TIME, "description": STR_OR_NULL, "currency_id": {"type": "string"},
                   "journal_lines": {"type": "array", "minItems": 2, "items": {
                       "allOf": [LINE, {"properties": {"net_amount": {"exclusiveMinimum": 0}}}]}}}}
CREATE_REQUEST = {"type": "object", "required": ["company_id", "data"],  # [JE-NEW]: company_id an integer
                  "properties": {"company_id": {"type": "integer"},
                                 "data": {"type": "array", "minItems": 1, "items": ITEM}}}
CREATE_REPLY = {  # [JE-NEW]
    "type": "object", "required": ["data", *ENVELOPE],
    "properties": {"data": {
        "type": "object", "required": ["status", "upload_job_id", "data"],
        "properties": {"status": {"enum": JOB_STATUS}, "upload_job_id": {"type": "string"},
                       "data": {"type": "array", "items": {
                           "type": "object", "required": ["job_id", "status", "response", "error"],
                           "properties": {"job_id": {"type": "string"},
                                          "status": {"enum": [s.lower() for s in JOB_STATUS]},
                                          "response": {"anyOf": [{"type": "null"}, CREATED_ENTRY]},
                                          "error": {"type": ["object", "null"]}}}}}}}}
JOB = {"type": "object",  # [JOB2], [JOB3]
       "required": ["rootfi_id", "rootfi_company_id", "status", "job_type", "config_mode", "data_model", "sync_id",
                    "parent_job_id"],
       "properties": {"rootfi_id": {"type": "integer"}, "rootfi_company_id": {"type": "integer"},
                      "status": {"enum": JOB_STATUS}, "job_type": {"enum": ["PULL", "PUSH"]},
                      "config_mode": {"type": "string"}, "data_model": {"type": "string"},
                      "start_time": DATE_TIME, "end_time": {"anyOf": [{"type": "null"}, DATE_TIME]},
                      "error": {"type": ["object", "null"]}, "sync_id": {"type": "string"},
                      "parent_job_id": STR_OR_NULL}}
JOB2_REPLY = {"type": "object", "required": ["data", *ENVELOPE], "properties": {
    "data": {"allOf": [JOB, {"required": ["start_time", "end_time", "error"]}]}}}
JOB3_REPLY = {"type": "object", "required": ["data"], "properties": {"data": JOB}}
UPDATE_REQUEST = {"type": "object", "required": ["company_id", "data"],  # our reading: a create item, plus the
                  "properties": {"company_id": {"type": "integer"},  # updated_at it was based on
                                 "data": {"allOf": [ITEM, {"properties": {"updated_at": DATE_TIME}}]}}}
ERROR = {"type": "object", "required": ["error", "request_id"],  # our shape (Rootfi publishes none)
         "properties": {"error": {"type": "object", "required": ["code", "message"]}}}

# (method, path after /rootfi) -> (kind, request schema, answer schema)
ROUTES = [
    ("POST", r"/accounting/accounts/all", "list accounts", LIST_REQUEST, list_reply(ACCOUNT)),
    ("POST", r"/accounting/journal_entries/all", "list entries", LIST_REQUEST, list_reply(ENTRY)),
    ("POST", r"/accounting/upload_jobs/all", "list uploads (sandbox stand-in)", LIST_REQUEST,
     list_reply({"type": "object"})),
    ("POST", r"/(api/write|accounting)/journal_entries", "create", CREATE_REQUEST, CREATE_REPLY),
    ("GET", r"/jobs/[^/]+", "job v2", None, JOB2_REPLY),
    ("GET", r"/v3/core/syncs/jobs/[^/]+", "job v3", None, JOB3_REPLY),
    ("PUT", r"/(api/write|accounting)/journal_entries/[^/]+", "update", UPDATE_REQUEST,
     {"type": "object", "required": ["data", *ENVELOPE], "properties": {"data": ENTRY}}),
    ("DELETE", r"/(api/write|accounting)/journal_entries/[^/]+", "delete", None,
     {"type": "object", "required": ["data", *ENVELOPE]}),
]


def check(schema: dict, instance: object, what: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: e.path)
    assert not errors, f"{what}: " + "; ".join(f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5])


def route(method: str, path: str) -> tuple:
    for m, pattern, *rest in ROUTES:
        if m == method and re.fullmatch(pattern, path.removeprefix("/rootfi")):
            return tuple(rest)
    raise AssertionError(f"{method} {path}: a request to an endpoint the reference does not have")


def record(exchanges: list) -> object:
    def hook(resp) -> None:  # noqa: ANN001 - httpx.Response
        resp.read()
        req = resp.request
        exchanges.append((req.method, req.url.path, json.loads(req.content) if req.content else None,
                          resp.status_code, json.loads(resp.content) if resp.content else None))
    return hook


def test_schemas_accept_the_reference_and_refuse_what_we_used_to_do() -> None:
    check(LIST_REQUEST, {"take": 10, "skip": 0, "orderBy": {"amount": "asc"},  # [JE-ALL]'s example body
                         "filter": {"account_id": {"eq": "1234567890123456789"}}}, "[JE-ALL] example")
    check(CREATE_REQUEST, {"company_id": 1, "data": [{  # the shape of [JE-NEW]'s example
        "document_number": "ROOTFI01", "posted_date": "2021-09-28T15:00:00.000Z", "description": "Test",
        "currency_id": "GBP", "journal_lines": [
            {"account_id": "123456", "type": "DEBIT", "net_amount": 100, "tracking_category_ids": []},
            {"account_id": "123456", "type": "CREDIT", "net_amount": 100, "tracking_category_ids": []}]}]},
          "[JE-NEW] example")
    for wrong in ({"take": 10, "skip": 0, "filter": {"document_number": {"equals": "x"}}},):  # Prisma's operator
        with pytest.raises(AssertionError):
            check(LIST_REQUEST, wrong, "old filter")
    with pytest.raises(AssertionError):  # the flat list answer of before
        check(list_reply(ENTRY), {"data": [], "total_count": 0, "request_id": "r"}, "flat list")
    with pytest.raises(AssertionError):  # job statuses of before
        check(JOB, {"rootfi_id": 1, "rootfi_company_id": 1, "status": "COMPLETED", "job_type": "PUSH",
                    "config_mode": "WRITE", "data_model": "JOURNAL_ENTRIES", "sync_id": "s",
                    "parent_job_id": None}, "old status")
    seed = sorted(SEEDS.glob("004_*"))
    if not seed:
        pytest.skip("seed 004 (Rootfi's journal-entry data model) is not in /work/shared/seeds")
    sample, _ = json.JSONDecoder().raw_decode(seed[0].read_text())
    check(ENTRY_MODEL, sample, "seed 004's sample entry")


def test_every_request_and_answer_of_a_full_run_matches_the_reference(env, monkeypatch) -> None:  # noqa: ANN001, F811
    server, conn = env
    exchanges: list = []
    conn.client.http.event_hooks["response"].append(record(exchanges))
    link(conn, ["t1", "t2"])
    conn.client.page_size = 9
    acc = ids(conn, "t1")
    entries = [make_entry("t1", p, acc) for p in MONTHS]
    assert all(r.remote for r in conn.sink.create("t1", entries[:2]))  # final at once
    control(server, "t1", "jobs", {"job_delay_seconds": 0.3})
    conn.sink.poll_budget, conn.sink.poll_initial = 10, 0.05
    assert conn.sink.create("t1", entries[2:])[0].remote  # polled, then read back
    assert conn.sink.find("t1", entries[0].custom_id).matches(entries[0])
    assert conn.sink.find("t1", entries[1].custom_id, {"upload_job_id": "gone", "job_id": "gone"}).matches(
        entries[1])  # 404 on both job paths, then the listing
    remotes = {r.custom_id: r for r in conn.sink.list_period("t1", *WINDOW)}
    control(server, "t1", "entries", {"custom_id": entries[0].custom_id, "scale_line": 2})
    late = make_entry("t1", MONTHS[0], acc, bump=5)
    assert conn.sink.update("t1", remotes[entries[0].custom_id], late).matches(late)  # 409, re-read, retry
    conn.sink.delete("t1", remotes[entries[1].custom_id])
    assert conn.sink.find("t1", entries[1].custom_id) is None  # also lists the uploads still in flight

    control(server, "t2", "paths", {"api_write": False, "v2_jobs": False})  # the other documented paths
    control(server, "t2", "jobs", {"job_delay_seconds": 0.3})
    other = connect(monkeypatch, server)
    try:
        other.client.http.event_hooks["response"].append(record(exchanges))
        other.sink.poll_budget, other.sink.poll_initial = 10, 0.05
        e2 = make_entry("t2", MONTHS[0], ids(other, "t2"))
        assert other.sink.create("t2", [e2])[0].remote.matches(e2)
    finally:
        other.close()

    kinds: Counter = Counter()
    for method, path, body, status, answer in exchanges:
        kind, request_schema, answer_schema = route(method, path)
        what = f"{method} {path} ({kind}) -> {status}"
        if request_schema is not None:
            check(request_schema, body, what + " request")
        check(answer_schema if status < 300 else ERROR, answer, what + " answer")
        kinds[(kind, status < 300)] += 1
    assert {k for k, ok in kinds if ok} == {r[2] for r in ROUTES}, kinds
    assert kinds[("update", False)] == 1 and kinds[("job v2", False)] == 2 and kinds[("create", False)] == 1
