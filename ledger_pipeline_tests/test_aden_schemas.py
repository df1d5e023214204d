"""JSON-schema checks of both sides of the Aden conversation, the schemas written from Aden's published pages: every
request our client sends and every answer the sandbox gives in a full scenario (connect, chart, create, approval,
late data on a posted entry, removal, reconciliation listing) must fit the documented shape. `additionalProperties:
false` on request bodies: we send nothing the docs do not name.

Pages (docs.adenhq.com): Q = /quickstart, D = /development, O = /api-reference/general-ledger/journal-entries/overview,
L = .../journal-entries/list, W = .../journal-entries/workflow, U = .../journal-entries/update,
V = .../journal-entries/void, R = .../journal-entries/reverse, P = .../accounting-periods/list."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator

import httpx
import pytest
from jsonschema import Draft202012Validator

from ledger_pipeline.money import loads_exact
from ledger_pipeline.sandboxes.aden import API
from ledger_pipeline.systems.aden.client import AdenError
from ledger_pipeline_tests.helpers import MemoryStore
from ledger_pipeline_tests.test_system_aden import FEB, JAN, WINDOW, Env, aden_env, entry, run, stub

DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
AMOUNT = {"type": "number", "minimum": 0}  # D: numbers with up to 2 decimal places
STATUS = {"enum": ["Draft", "Pending Approval", "On Hold", "Approved", "Posted", "Rejected", "Voided"]}  # O
LINE_IN = {"type": "object", "required": ["account_id", "debit", "credit"], "additionalProperties": False,
           "properties": {"line_number": {"type": "integer"}, "account_id": {"type": "string"}, "debit": AMOUNT,
                          "credit": AMOUNT, "memo": {"type": ["string", "null"]}}}  # O "Line Item Structure"
LINE_OUT = {**LINE_IN, "required": ["line_number", "account_id", "debit", "credit"], "additionalProperties": True}

REQUESTS: dict[str, dict] = {
    # Q (create example) + O (properties): entry_id, tran_date, memo, entry_type, posting_period_id, currency, lines
    "POST /journal-entries": {
        "type": "object", "required": ["entry_id", "tran_date", "lines"], "additionalProperties": False,
        "properties": {"entry_id": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,50}$"}, "tran_date": DATE,
                       "memo": {"type": ["string", "null"]},
                       "entry_type": {"enum": ["Standard", "Adjusting", "Closing", "Reversing"]},
                       "posting_period_id": {"type": "string"}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                       "lines": {"type": "array", "minItems": 2, "items": LINE_IN}}},
    # U: memo and the full lines array
    "PUT /journal-entries/{id}": {"type": "object", "additionalProperties": False, "required": ["lines"],
                                  "properties": {"memo": {"type": ["string", "null"]},
                                                 "lines": {"type": "array", "minItems": 2, "items": LINE_IN}}},
    "POST /journal-entries/{id}/submit-for-approval": {"type": "object", "maxProperties": 0},  # W: no body
    "POST /journal-entries/{id}/request-change": {"type": "object", "additionalProperties": False,
                                                  "properties": {"reason": {"type": "string"}}},  # W
    "POST /journal-entries/{id}/reverse": {"type": "object", "additionalProperties": False,
                                           "required": ["reversal_date"],
                                           "properties": {"reversal_date": DATE, "memo": {"type": "string"}}},  # R
    "POST /journal-entries/{id}/void": {"type": "object", "additionalProperties": False, "required": ["void_reason"],
                                        "properties": {"void_reason": {"type": "string", "minLength": 1}}},  # V
}
QUERIES = {  # L and P: the documented query parameters
    "GET /journal-entries": {"status", "entry_type", "start_date", "end_date", "posting_period_id", "limit", "offset"},
    "GET /accounting-periods": {"fiscal_year_id", "is_closed", "start_date", "end_date", "limit", "offset"},
    "GET /accounts": {"limit", "offset"},  # D "Pagination"
}

ENTRY = {"type": "object", "not": {"required": ["data"]},  # W/U/R: bare objects
         "required": ["journal_entry_id", "tran_date", "status", "lines"],
         "properties": {"journal_entry_id": {"type": "string"}, "tran_date": DATE, "status": STATUS,
                        "posting_period_id": {"type": "string"}, "total_debit": AMOUNT, "total_credit": AMOUNT,
                        "entry_type": {"enum": ["Standard", "Adjusting", "Closing", "Reversing"]},
                        "lines": {"type": "array", "items": LINE_OUT}}}


def page(row: dict) -> dict:  # L/P: {"data": [...], "pagination": {total, limit, offset, has_more}}
    return {"type": "object", "required": ["data", "pagination"],
            "properties": {"data": {"type": "array", "items": row},
                           "pagination": {"type": "object", "required": ["total", "limit", "offset", "has_more"],
                                          "properties": {"total": {"type": "integer"}, "limit": {"type": "integer"},
                                                         "offset": {"type": "integer"},
                                                         "has_more": {"type": "boolean"}}}}}


ANSWERS: dict[str, dict] = {
    "POST /journal-entries": ENTRY,
    "GET /journal-entries/{id}": ENTRY,
    "PUT /journal-entries/{id}": ENTRY,
    "GET /journal-entries": page({"type": "object", "required": ["journal_entry_id", "tran_date", "status"],
                                  "properties": {"status": STATUS, "tran_date": DATE}}),
    "GET /accounting-periods": page({"type": "object",
                                     "required": ["period_id", "period_name", "start_date", "end_date", "is_closed"],
                                     "properties": {"period_id": {"type": "string"}, "start_date": DATE,
                                                    "end_date": DATE, "is_closed": {"type": "boolean"},
                                                    "quarter": {"type": "integer"}}}),
    "GET /accounts": page({"type": "object", "required": ["account_id", "account_name", "account_type"]}),
    "POST /journal-entries/{id}/submit-for-approval": {  # W
        "type": "object", "required": ["journal_entry_id", "status", "required_approval_level", "submitted_at"],
        "properties": {"status": STATUS, "required_approval_level": {"type": "integer"}}},
    "POST /journal-entries/{id}/approve": {  # W
        "type": "object", "required": ["journal_entry_id", "status", "posted", "level"],
        "properties": {"status": STATUS, "posted": {"type": "boolean"}}},
    "POST /journal-entries/{id}/request-change": {"type": "object", "required": ["journal_entry_id", "status"],
                                                  "properties": {"status": {"const": "Draft"}}},
    "POST /journal-entries/{id}/void": {"type": "object",  # V
                                        "required": ["journal_entry_id", "status", "void_reason", "voided_at"],
                                        "properties": {"status": {"const": "Voided"}}},
    "POST /journal-entries/{id}/reverse": {"allOf": [ENTRY, {  # R
        "required": ["original_entry_id", "entry_type"],
        "properties": {"entry_type": {"const": "Reversing"}, "status": {"const": "Draft"}}}]},
}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {  # D "Error Response"
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "details": {"type": "object", "properties": {"field": {"type": "string"}}}}}}}


def route(method: str, raw_path: str) -> str:
    path = raw_path.split("?", 1)[0].split(API, 1)[1]
    path = re.sub(r"^/(journal-entries|accounting-periods)/[^/]+", r"/\1/{id}", path)
    return f"{method} {path}"


def check(schema: dict, value: object, what: str) -> None:
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=str)
    assert not errors, f"{what}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture
def env(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:  # noqa: ANN001
    yield from aden_env(settings, monkeypatch)


def test_requests_and_answers_fit_the_documented_schemas(env: Env) -> None:
    seen: list[tuple[str, httpx.Request, httpx.Response]] = []

    def on_response(resp: httpx.Response) -> None:
        resp.read()
        seen.append((route(resp.request.method, resp.request.url.raw_path.decode()), resp.request, resp))

    env.conn.client.http.event_hooks["response"].append(on_response)
    for schema in (*REQUESTS.values(), *ANSWERS.values(), ERROR):
        Draft202012Validator.check_schema(schema)
    env.connect(["s1"])
    env.conn.fetch_chart("s1")
    env.control("s1", "approval_threshold", {"approval_threshold": "1000000.00"})
    store = MemoryStore()
    e1, e2 = entry("s1", JAN, 900_000_00, 300_000_00, 200_000_00), entry("s1", FEB, 2_000_000_00, 900_000_00, 1_00)
    assert run(env, store, "s1", [e1, e2]).counts == {"create": 1, "awaiting_approval": 1}
    env.control("s1", "approvals", {"entry_id": e2.custom_id, "action": "approve"})
    late = entry("s1", JAN, 900_000_00, 300_000_00, 250_000_00)
    assert run(env, store, "s1", [late, e2]).counts == {"update": 1, "refresh": 1}
    env.control("s1", "approval_threshold", {"approval_threshold": "1.00"})
    changed = entry("s1", FEB, 2_000_000_00, 900_000_00, 2_00)  # posted: reversed, the reversal submitted
    env.conn.sink.update("s1", stub(env.conn.sink.find("s1", e2.custom_id, store.rows[e2.custom_id].remote_state)),
                         changed)
    mar = entry("s1", dt.date(2025, 3, 1), 5_00, 1_00, 1_00)
    [res] = env.conn.sink.create("s1", [mar])  # pending approval: changed (request-change, PUT), then voided
    updated = env.conn.sink.update("s1", stub(res.remote), entry("s1", dt.date(2025, 3, 1), 6_00, 1_00, 1_00))
    env.conn.sink.delete("s1", stub(updated))
    env.conn.sink.list_period("s1", *WINDOW)
    with pytest.raises(AdenError):  # an error answer, to check its shape too
        env.conn.client.request("s1", "POST", "/journal-entries", {"entry_id": "x", "tran_date": "2025-01-01",
                                                                    "lines": []}, idempotency_key="bad-1")

    routes = {r for r, _, _ in seen}
    assert routes >= {"POST /journal-entries", "GET /journal-entries/{id}", "PUT /journal-entries/{id}",
                      "GET /journal-entries", "GET /accounting-periods", "GET /accounts",
                      "POST /journal-entries/{id}/submit-for-approval", "POST /journal-entries/{id}/reverse",
                      "POST /journal-entries/{id}/request-change", "POST /journal-entries/{id}/void"}, routes
    for name, request, resp in seen:
        # the client side: headers, documented query parameters, documented bodies
        assert request.headers["authorization"].startswith("jwt "), name
        if name in QUERIES:
            assert set(request.url.params) <= QUERIES[name], (name, dict(request.url.params))
        if request.method in ("POST", "PUT"):
            assert request.headers.get("x-idempotency-key"), name
            if name in REQUESTS and not request.headers["x-idempotency-key"].startswith("bad-"):
                check(REQUESTS[name], json.loads(request.content or b"{}"), f"request {name}")
        # the server side: documented answers (errors in the documented error shape)
        if resp.status_code >= 400:
            check(ERROR, resp.json(), f"error answer {name}")
        elif resp.status_code != 204 and name in ANSWERS:
            check(ANSWERS[name], json.loads(json.dumps(loads_exact(resp.content), default=float)),
                  f"answer {name}")

