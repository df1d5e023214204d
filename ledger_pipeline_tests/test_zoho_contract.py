"""JSON-schema checks written from Zoho Books' published API v3 reference: every request our Zoho client sends and
every answer the Zoho sandbox gives during a realistic flow (connect, chart read, create, find by reference_number
over every date, list a period, update in place, delete, a look-up of the deleted journal) is validated against the
schema of its endpoint; the test fails listing every violation.

Sources, one schema each (www.zoho.com/books/api/v3/...):
- [J-LIST] journals/#get-journal-list (seed 001, /work/shared/seeds/001_*): query reference_number [100], date,
  date_start / date_end / date_before / date_after [yyyy-MM-dd], filter_by JournalDate.All | Today | ThisWeek |
  ThisMonth | ThisQuarter | ThisYear, sort_column journal_date | entry_number | reference_number | total; answer
  {code 0, message, journals: [{journal_id, journal_date, entry_number, reference_number, notes, total}],
  page_context {page, per_page, has_more_page, report_name, applied_filter, start_date, end_date, sort_column,
  sort_order}}.
- [J-GET] journals/#get-journal (seed 001): {code, message, journal: {journal_id, entry_number, reference_number,
  notes, currency_id, currency_code, journal_date, line_items: [{line_id, account_id, account_name, description,
  debit_or_credit debit | credit, tax_id, amount}], line_item_total, total, price_precision, taxes, created_time,
  last_modified_time}}.
- [J-NEW] journals/#create-a-journal (seed 001): request journal_date* [yyyy-MM-dd], reference_number [100], notes
  [500], line_items [{account_id, description [500], tax_id, amount* (double), debit_or_credit* debit | credit}];
  answer 201 {code 0, message, journal: as [J-GET]}.
- [J-PUT] journals/#update-a-journal (seed 001): the create request, each line item may carry its line_id; answer
  as [J-NEW] (200).
- [J-DEL] journals/#delete-a-journal (seed 001): {code 0, message}.
- [ORGS] organizations/#list-organizations: {code, message, organizations: [{organization_id, name,
  is_default_org, currency_code, time_zone, ...}]}.
- [COA] chart-of-accounts/#list-chart-of-accounts: query filter_by AccountType.All | Active | Inactive | Asset |
  Liability | Equity | Income | Expense, page / per_page; answer {code, message, chartofaccounts: [{account_id,
  account_name, account_code, account_type, is_active, ...}], page_context}; account_type from the documented list.
- [INTRO] introduction/#organization-id, #pagination: organization_id on every Books call (query or the
  X-com-zoho-books-organizationid header), page / per_page (at most 200).
- [ERR] errors: a failure answers {code (non-zero integer), message}; e.g. 1002 "Journal does not exist." (404).
- [OAUTH] www.zoho.com/accounts/protocol/oauth/web-apps/access-token.html and .../refresh-access-token.html: POST
  /oauth/v2/token form {grant_type authorization_code | refresh_token, client_id, client_secret, code +
  redirect_uri | refresh_token}; answer {access_token, refresh_token (code grant), api_domain, token_type, expires_in}.
Our own fields, marked where used: journal_type / status on the write (Zoho's UI options, sent by sink.journal_body).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jsonschema
import pytest

from ledger_pipeline.settings import Settings
from ledger_pipeline_tests.helpers import MemoryStore as MemStore
from ledger_pipeline_tests.test_system_zoho import FEB, JAN, MAR, Env, _make_env, chart_ids, months, post

SEEDS = Path("/work/shared/seeds")
DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}  # [yyyy-MM-dd]
TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{4}$"}  # "2013-09-04T09:40:07+0530"
ID = {"type": "string", "pattern": r"^\d+$"}  # Zoho's ids: long numbers sent as strings
NUMBER_TEXT = {"type": "string", "pattern": r"^\d+$"}  # query parameters arrive as text
SIDE = {"enum": ["debit", "credit"]}  # [J-NEW] debit_or_credit "Allowed Values: debit and credit"
SUCCESS = {"code": {"const": 0}, "message": {"type": "string"}}
ORG = {"organization_id": ID}  # [INTRO]: on every Books call

PAGE_CONTEXT = {  # [J-LIST], [COA]
    "type": "object", "required": ["page", "per_page", "has_more_page"],
    "properties": {"page": {"type": "integer", "minimum": 1}, "per_page": {"type": "integer", "minimum": 1},
                   "has_more_page": {"type": "boolean"}, "report_name": {"type": "string"},
                   "applied_filter": {"type": "string"}, "start_date": DATE, "end_date": DATE,
                   "sort_column": {"type": "string"}, "sort_order": {"enum": ["A", "D"]}}}
PAGING = {"page": NUMBER_TEXT, "per_page": {"type": "string", "pattern": r"^([1-9]\d?|1\d\d|200)$"}}  # [INTRO]

LINE = {  # [J-GET] line_items
    "type": "object", "required": ["line_id", "account_id", "debit_or_credit", "amount"],
    "properties": {"line_id": ID, "account_id": ID, "account_name": {"type": "string"},
                   "description": {"type": "string"}, "debit_or_credit": SIDE, "tax_id": {"type": "string"},
                   "amount": {"type": "number", "minimum": 0}}}
JOURNAL = {  # [J-GET]
    "type": "object",
    "required": ["journal_id", "entry_number", "reference_number", "notes", "journal_date", "line_items", "total"],
    "properties": {"journal_id": ID, "entry_number": {"type": "string"},
                   "reference_number": {"type": "string", "maxLength": 100}, "notes": {"type": "string"},
                   "currency_id": ID, "currency_code": {"type": "string", "pattern": "^[A-Z]{3}$"},
                   "currency_symbol": {"type": "string"}, "journal_date": DATE,
                   "line_items": {"type": "array", "items": LINE}, "line_item_total": {"type": "number"},
                   "total": {"type": "number", "minimum": 0}, "price_precision": {"type": "integer"},
                   "taxes": {"type": "array"}, "created_time": TIME, "last_modified_time": TIME}}
SUMMARY = {  # [J-LIST] journals[]
    "type": "object", "required": ["journal_id", "journal_date", "entry_number", "reference_number", "total"],
    "properties": {"journal_id": ID, "journal_date": DATE, "entry_number": {"type": "string"},
                   "reference_number": {"type": "string", "maxLength": 100}, "notes": {"type": "string"},
                   "total": {"type": "number", "minimum": 0}}}
WRITE_LINE = {  # [J-NEW] line_items; line_id on an update [J-PUT]
    "type": "object", "required": ["amount", "debit_or_credit"], "additionalProperties": False,
    "properties": {"account_id": ID, "line_id": ID, "description": {"type": "string", "maxLength": 500},
                   "tax_id": {"type": "string"}, "amount": {"type": "number", "exclusiveMinimum": 0},
                   "debit_or_credit": SIDE}}
WRITE = {  # [J-NEW] / [J-PUT] request; journal_type and status: ours (sink.journal_body)
    "type": "object", "required": ["journal_date", "line_items"],
    "properties": {"journal_date": DATE, "reference_number": {"type": "string", "maxLength": 100},
                   "notes": {"type": "string", "maxLength": 500}, "journal_type": {"enum": ["both", "cash"]},
                   "status": {"enum": ["published", "draft"]}, "currency_id": ID,
                   "exchange_rate": {"type": "number", "exclusiveMinimum": 0},
                   "line_items": {"type": "array", "minItems": 2, "items": WRITE_LINE}}}
WRITTEN = {"type": "object", "required": ["code", "message", "journal"],  # [J-NEW], [J-PUT], [J-GET]
           "properties": {**SUCCESS, "journal": JOURNAL}}
LIST_QUERY = {  # [J-LIST] parameters, [INTRO]
    "type": "object", "required": ["organization_id"], "additionalProperties": False,
    "properties": {**ORG, **PAGING, "entry_number": {"type": "string", "maxLength": 100},
                   "reference_number": {"type": "string", "maxLength": 100},
                   "reference_number_startswith": {"type": "string", "maxLength": 100},
                   "date": DATE, "date_start": DATE, "date_end": DATE, "date_before": DATE, "date_after": DATE,
                   "filter_by": {"enum": [f"JournalDate.{w}" for w in
                                          ("All", "Today", "ThisWeek", "ThisMonth", "ThisQuarter", "ThisYear")]},
                   "sort_column": {"enum": ["journal_date", "entry_number", "reference_number", "total"]}}}
LISTED = {"type": "object", "required": ["code", "message", "journals", "page_context"],  # [J-LIST]
          "properties": {**SUCCESS, "journals": {"type": "array", "items": SUMMARY}, "page_context": PAGE_CONTEXT}}
ACCOUNT_TYPES = [  # [COA] account_type's allowed values
    "other_asset", "other_current_asset", "cash", "bank", "fixed_asset", "stock", "payment_clearing",
    "intangible_asset", "non_current_asset", "other_current_liability", "credit_card", "long_term_liability",
    "other_liability", "non_current_liability", "overseas_tax_payable", "output_tax", "input_tax",
    "accounts_receivable", "accounts_payable", "equity", "income", "other_income", "expense", "cost_of_goods_sold",
    "other_expense", "prepaid_card"]
ACCOUNT = {  # [COA] chartofaccounts[]
    "type": "object", "required": ["account_id", "account_name", "account_type", "is_active"],
    "properties": {"account_id": ID, "account_name": {"type": "string", "minLength": 1},
                   "account_code": {"type": "string"}, "account_type": {"enum": ACCOUNT_TYPES},
                   "is_active": {"type": "boolean"}, "parent_account_id": {"type": "string"},
                   "depth": {"type": "integer"}, "currency_code": {"type": "string"},
                   "last_modified_time": TIME}}
COA_QUERY = {"type": "object", "required": ["organization_id"], "additionalProperties": False,  # [COA], [INTRO]
             "properties": {**ORG, **PAGING, "filter_by": {"enum": [f"AccountType.{w}" for w in (
                 "All", "Active", "Inactive", "Asset", "Liability", "Equity", "Income", "Expense")]},
                 "sort_column": {"enum": ["account_name", "account_type"]}}}
COA = {"type": "object", "required": ["code", "message", "chartofaccounts", "page_context"],  # [COA]
       "properties": {**SUCCESS, "chartofaccounts": {"type": "array", "items": ACCOUNT},
                      "page_context": PAGE_CONTEXT}}
ORGS = {"type": "object", "required": ["code", "message", "organizations"],  # [ORGS]
        "properties": {**SUCCESS, "organizations": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["organization_id", "name", "is_default_org"],
            "properties": {"organization_id": ID, "name": {"type": "string"}, "is_default_org": {"type": "boolean"},
                           "currency_code": {"type": "string"}, "time_zone": {"type": "string"},
                           "is_org_active": {"type": "boolean"}}}}}}
ID_QUERY = {"type": "object", "required": ["organization_id"], "additionalProperties": False,  # [INTRO]
            "properties": ORG}
NO_QUERY = {"type": "object", "maxProperties": 0}  # [ORGS]: the list needs no organization
TOKEN_FORM = {  # [OAUTH]
    "type": "object", "required": ["grant_type", "client_id", "client_secret"],
    "properties": {"client_id": {"type": "string"}, "client_secret": {"type": "string"}},
    "oneOf": [{"properties": {"grant_type": {"const": "authorization_code"}}, "required": ["code", "redirect_uri"]},
              {"properties": {"grant_type": {"const": "refresh_token"}}, "required": ["refresh_token"]}]}
TOKEN = {"type": "object", "required": ["access_token", "api_domain", "token_type", "expires_in"],  # [OAUTH]
         "properties": {"access_token": {"type": "string"}, "refresh_token": {"type": "string"},
                        "api_domain": {"type": "string", "pattern": "^https?://"},
                        "token_type": {"const": "Bearer"}, "expires_in": {"type": "integer", "minimum": 1}}}
ERROR = {"type": "object", "required": ["code", "message"],  # [ERR]
         "properties": {"code": {"type": "integer", "not": {"const": 0}}, "message": {"type": "string"}}}

BOOKS = r"/zoho/books/v3"
# (method, path pattern) -> (kind, query schema, body schema, answer schema, status on success)
ROUTES = [
    ("POST", r"/zoho/oauth/v2/token", "token", None, TOKEN_FORM, TOKEN, 200),
    ("GET", BOOKS + r"/organizations", "organizations", NO_QUERY, None, ORGS, 200),
    ("GET", BOOKS + r"/chartofaccounts", "chart", COA_QUERY, None, COA, 200),
    ("GET", BOOKS + r"/journals", "list", LIST_QUERY, None, LISTED, 200),
    ("POST", BOOKS + r"/journals", "create", ID_QUERY, WRITE, WRITTEN, 201),
    ("GET", BOOKS + r"/journals/\d+", "get", ID_QUERY, None, WRITTEN, 200),
    ("PUT", BOOKS + r"/journals/\d+", "update", ID_QUERY, WRITE, WRITTEN, 200),
    ("DELETE", BOOKS + r"/journals/\d+", "delete", ID_QUERY, None,
     {"type": "object", "required": ["code", "message"], "properties": SUCCESS}, 200),
]


@pytest.fixture
def zoho(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with _make_env(tmp_path, monkeypatch) as env:
        yield env


def violations(schema: dict, instance: object, what: str) -> list[str]:
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    return [f"{what}: {list(e.absolute_path)}: {e.message[:200]}" for e in errors]


def check(schema: dict, instance: object, what: str) -> None:
    found = violations(schema, instance, what)
    assert not found, "\n".join(found)


def route(method: str, path: str) -> tuple:
    for m, pattern, *rest in ROUTES:
        if m == method and re.fullmatch(pattern, path):
            return tuple(rest)
    raise AssertionError(f"{method} {path}: a request to an endpoint the reference does not have")


def record(exchanges: list) -> object:
    def hook(resp: httpx.Response) -> None:
        resp.read()
        req = resp.request
        query = {k: v[-1] for k, v in parse_qs(req.url.query.decode(), keep_blank_values=True).items()}
        raw = req.content.decode() if req.content else ""
        form = req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        body = ({k: v[-1] for k, v in parse_qs(raw).items()} if form else json.loads(raw)) if raw else None
        exchanges.append((req.method, req.url.path, query, body, resp.status_code,
                          json.loads(resp.content) if resp.content else None))
    return hook


def test_schemas_accept_the_reference_samples_and_refuse_wrong_shapes() -> None:
    check(WRITE, {"journal_date": "2013-09-04", "reference_number": "7355", "notes": "Loan repayment",  # [J-PUT]
                  "line_items": [{"account_id": "460000000000361", "line_id": "460000000038005", "description": "",
                                  "tax_id": "", "amount": 5050.00, "debit_or_credit": "credit"},
                                 {"account_id": "460000000038079", "description": "", "tax_id": "",
                                  "amount": 5050.00, "debit_or_credit": "debit"}]}, "[J-PUT] sample")
    for wrong in ({"journal_date": "04/09/2013", "line_items": []},  # not yyyy-MM-dd, no lines
                  {"journal_date": "2013-09-04", "line_items": [{"amount": 1, "debit_or_credit": "DEBIT"}] * 2},
                  {"journal_date": "2013-09-04", "line_items": [{"amount": 1, "type": "debit"}] * 2}):
        with pytest.raises(AssertionError):
            check(WRITE, wrong, "wrong write")
    with pytest.raises(AssertionError):  # a search without JournalDate's window names
        check(LIST_QUERY, {"organization_id": "1", "filter_by": "All"}, "wrong filter_by")
    with pytest.raises(AssertionError):
        check(ERROR, {"code": 0, "message": "success"}, "an error with code 0")
    seed = sorted(SEEDS.glob("001_*"))
    if not seed:
        pytest.skip("seed 001 (Zoho Books' journals reference) is not in /work/shared/seeds")
    text = seed[0].read_text()
    samples, decoder, at = [], json.JSONDecoder(), 0
    while (at := text.find("{", at)) >= 0:  # every JSON sample of the page, in order
        sample, end = decoder.raw_decode(text, at)
        samples.append(sample)
        at = end
    listed, got, new_req, created, put_req, updated, deleted = samples
    check(LISTED, listed, "seed 001 list sample")
    for name, sample in (("get", got), ("create", created), ("update", updated)):
        check(WRITTEN, sample, f"seed 001 {name} sample")
    check(WRITE, new_req, "seed 001 create request")
    check(WRITE, put_req, "seed 001 update request")
    check({"type": "object", "required": ["code", "message"], "properties": SUCCESS}, deleted, "seed 001 delete")


def test_every_request_and_answer_of_a_realistic_flow_matches_the_reference(zoho: Env) -> None:
    exchanges: list = []
    conn = zoho.conn
    conn.oauth.http.event_hooks["response"].append(record(exchanges))  # token + organizations
    conn.client.http.event_hooks["response"].append(record(exchanges))  # Books API
    zoho.connect(["c1"])
    ids = chart_ids(conn, "c1")
    entries = months("c1", ids, [JAN, FEB])
    store = MemStore()
    assert post(conn, store, "c1", entries, (JAN, MAR)).counts == {"create": 2}
    found = conn.sink.find("c1", entries[0].custom_id)
    assert found is not None and found.matches(entries[0])
    remotes = {r.custom_id: r for r in conn.sink.list_period("c1", JAN, MAR)}
    assert set(remotes) == {e.custom_id for e in entries}
    late = months("c1", ids, [JAN], bump=7)[0]
    assert conn.sink.update("c1", remotes[late.custom_id], late).matches(late)
    gone = remotes[entries[1].custom_id]
    conn.sink.delete("c1", gone)
    assert conn.sink.find("c1", entries[1].custom_id, {"journal_id": gone.remote_id}) is None  # 404, then search

    kinds: Counter = Counter()
    problems: list[str] = []
    for method, path, query, body, status, answer in exchanges:
        kind, query_schema, body_schema, answer_schema, ok_status = route(method, path)
        what = f"{method} {path} ({kind}) -> {status}"
        if query_schema is not None:
            problems += violations(query_schema, query, what + " query")
        if body_schema is not None:
            problems += violations(body_schema, body, what + " body")
        if status < 300:
            problems += [f"{what}: status {status}, the reference says {ok_status}"] * (status != ok_status)
            problems += violations(answer_schema, answer, what + " answer")
        else:
            problems += violations(ERROR, answer, what + " error answer")
        kinds[(kind, status < 300)] += 1
    assert not problems, f"{len(problems)} violation(s):\n" + "\n".join(problems)
    assert {k for k, ok in kinds if ok} == {r[2] for r in ROUTES}, kinds
    assert kinds[("get", False)] == 1, kinds  # the deleted journal: Zoho's {code, message} error
    searches = [q for m, p, q, *_ in exchanges if m == "GET" and p.endswith("/journals")]
    assert len(searches) == 3 and all(q.get("filter_by") == "JournalDate.All" for q in searches), searches
    assert sum("reference_number" in q for q in searches) == 2, "find searches by reference_number"
