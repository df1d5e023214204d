"""Contract test: every request our Jurnal client sends and every answer the Jurnal emulator gives validates against
Mekari's own Swagger ("Jurnal API Doc" 2.0.0, shared/reference/specs/jurnal_mekari_swagger.json, read in place and
never copied into the repo), on both ways in (OAuth partner API and HMAC gateway).

Libraries: openapi-core validates requests and responses but only for OpenAPI 3.0/3.1, and no maintained Python
converter from Swagger 2.0 exists; so the spec is checked as a Swagger 2.0 document with openapi-spec-validator
(python-openapi, the same maintainers as openapi-core, current releases) and each body with jsonschema's Draft 4
validator (Swagger 2.0's Schema Object is JSON Schema Draft 4) plus its format checker (`format: date`).

Mekari's schemas were generated from its examples, and the spec contradicts itself in three places; the test reads
those three the way the spec's own text and examples do, and nothing else:
1. `{"type": "null"}` is what a null example became (a journal entry's `custom_id` is `null`-typed in the list and
   show answers but a string in create and in every request): no type constraint.
2. Money typed `integer` (`debit`, `credit`, `total_debit`, `total_credit`, `balance_amount`, `currency_rate`):
   the spec's own accounts example has `"balance_amount": -3930085308.15` under `integer`, and the PATCH schema types
   `debit`/`credit` as `number`: any number (our whole amounts are still sent and answered as integers).
3. PATCH lines `required: [account_name, ...]`, where the field's own description says "use account_id instead of
   account_name if you have the account id": account_name or account_id.
Path items with `"parameters": null` (invalid Swagger) are read as having none. Statuses the spec does not document
(401, 404, 429, 5xx) are allowed, and listed.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft4Validator, FormatChecker
from openapi_spec_validator import OpenAPIV2SpecValidator

from ledger_pipeline.settings import PROJECT_ROOT
from ledger_pipeline.systems.jurnal.auth import GATEWAY_PREFIX, PARTNER_PREFIX
from ledger_pipeline.systems.jurnal.sink import JurnalSink
from ledger_pipeline_tests.helpers import connect, session
from ledger_pipeline_tests.test_jurnal_fidelity import THREE, TWO, canonical

# beside the project (../shared from the repo root); JURNAL_SWAGGER points elsewhere (e.g. from a git worktree)
SPEC = Path(os.environ.get("JURNAL_SWAGGER") or
            Path(PROJECT_ROOT).parent / "shared" / "reference" / "specs" / "jurnal_mekari_swagger.json")
USED = ("/journal_entries", "/journal_entries/{id}", "/journal_entries/batch_create", "/accounts")
MONEY = {"debit", "credit", "total_debit", "total_credit", "balance_amount", "currency_rate"}
# Query parameters the spec leaves out of GET /journal_entries but Jurnal takes (accounting_apis.md section 1;
# the Ruby client passes params through): page, page_size, start_date, end_date, transaction_no, sort_*.
UNDECLARED_QUERY = {"page", "page_size", "start_date", "end_date", "transaction_no", "sort_key", "sort_order"}
UNDOCUMENTED_STATUS = {401, 404, 429, 500, 502, 503}
HMAC_AUTH = re.compile(r'^hmac username="[^"]+", algorithm="hmac-sha256", headers="date request-line", '
                       r'signature="[A-Za-z0-9+/=]+"$')


def relax(node: Any) -> Any:
    """The three readings of the module docstring, applied to a copy of a schema."""
    if isinstance(node, list):
        return [relax(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: relax(v) for k, v in node.items()}
    if out.get("type") == "null":
        out.pop("type")
    for name, prop in (out.get("properties") or {}).items():
        if name in MONEY and isinstance(prop, dict) and prop.get("type") == "integer":
            prop["type"] = "number"
    required = out.get("required")
    name_prop = (out.get("properties") or {}).get("account_name") or {}
    if isinstance(required, list) and "account_name" in required and "account_id" in str(name_prop):
        out["required"] = [r for r in required if r != "account_name"]
        out["anyOf"] = [{"required": ["account_name"]}, {"required": ["account_id"]}]
    return out


class Contract:
    def __init__(self, spec: dict):
        assert spec["swagger"] == "2.0" and spec["basePath"] == "/" and spec["host"] == "api.mekari.com"
        base = GATEWAY_PREFIX  # the spec's paths are absolute: /public/jurnal/api/v1/...
        self.paths: dict[str, dict] = {}
        for path in USED:
            item = copy.deepcopy(spec["paths"][base + path])
            if item.get("parameters") is None:
                item.pop("parameters", None)
            # each path item checked as its own Swagger 2.0 document (the spec repeats operationIds across paths)
            doc = {"swagger": "2.0", "info": spec["info"], "host": spec["host"], "basePath": base,
                   "paths": {path: item}}
            errors = [e.message for e in OpenAPIV2SpecValidator(doc).iter_errors()]
            assert errors == [], f"{path} is not valid Swagger 2.0: {errors}"
            self.paths[path] = item
        self.seen: set[tuple[str, str]] = set()
        self.undocumented: set[tuple[str, str, int]] = set()

    def operation(self, method: str, raw_path: str) -> tuple[str, dict]:
        path = raw_path.split("?")[0]
        for prefix in (PARTNER_PREFIX, GATEWAY_PREFIX):
            if path.startswith(prefix):
                rel = path.removeprefix(prefix)
                break
        else:
            raise AssertionError(f"{path} is under neither API prefix")
        parts = [p for p in rel.split("/") if p]
        for template in USED:
            tparts = [p for p in template.split("/") if p]
            if len(tparts) == len(parts) and all(t == p or t.startswith("{") for t, p in zip(tparts, parts,
                                                                                               strict=True)):
                if template == "/journal_entries/{id}" and parts[1] == "batch_create":
                    continue
                op = self.paths[template].get(method.lower())
                assert op is not None, f"{method} {template} is not in Mekari's spec"
                self.seen.add((method, template))
                return template, op
        raise AssertionError(f"{method} {rel} is not a path of Mekari's spec")

    def check_request(self, request: httpx.Request) -> None:
        template, op = self.operation(request.method, request.url.raw_path.decode())
        declared = {p["name"]: p for p in op.get("parameters") or [] if p.get("in") == "query"}
        for name, value in request.url.params.multi_items():
            if name in declared:
                kind = declared[name].get("type")
                assert kind != "boolean" or value in ("true", "false"), f"{name}={value} is not a boolean"
            else:
                assert template == "/journal_entries" and name in UNDECLARED_QUERY, f"unknown query {name}"
        body = [p for p in op.get("parameters") or [] if p.get("in") == "body"]
        if request.content:
            assert body, f"{request.method} {template} takes no body"
            errors = _errors(body[0]["schema"], json.loads(request.content))
            assert not errors, f"request {request.method} {template}: {errors}"
        auth = request.headers.get("authorization", "")
        if request.url.path.startswith(GATEWAY_PREFIX):  # the spec's info.description: Authorization and Date
            assert HMAC_AUTH.match(auth) and request.headers.get("date"), dict(request.headers)
        else:
            assert auth.startswith("Bearer ")

    def check_response(self, response: httpx.Response) -> None:
        request = response.request
        template, op = self.operation(request.method, request.url.raw_path.decode())
        spec = op["responses"].get(str(response.status_code))
        if spec is None:
            assert response.status_code in UNDOCUMENTED_STATUS, f"{request.method} {template} answered " \
                                                                 f"{response.status_code}, a status the spec lacks"
            self.undocumented.add((request.method, template, response.status_code))
            return
        if response.status_code == 204 or "schema" not in spec:
            return
        errors = _errors(spec["schema"], json.loads(response.content))
        assert not errors, f"answer {request.method} {template} {response.status_code}: {errors}"


def _errors(schema: dict, instance: Any) -> list[str]:
    validator = Draft4Validator(relax(schema), format_checker=FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)][:5]


@pytest.fixture(scope="module")
def spec() -> dict:
    if not SPEC.exists():
        pytest.skip(f"Mekari's Swagger is not at {SPEC} (shared/reference/specs/, kept beside the project, never "
                    "copied into it)")
    return json.loads(SPEC.read_text())


def test_the_readings_are_the_specs_own(spec: dict) -> None:
    """The relaxations are needed by the spec's own examples, and strict validation is still strict elsewhere."""
    accounts = spec["paths"][GATEWAY_PREFIX + "/accounts"]["get"]["responses"]["200"]
    example = accounts["examples"]["application/json"]
    assert any("balance_amount" in str(e.absolute_path) for e in Draft4Validator(accounts["schema"]).iter_errors(
        example)), "the spec's own example breaks its integer typing"
    assert not _errors(accounts["schema"], example)
    show = spec["paths"][GATEWAY_PREFIX + "/journal_entries/{id}"]["get"]["responses"]["200"]["schema"]
    assert _errors(show, {"journal_entry": {"id": "7", "transaction_status": {"id": "2"}}}), "still strict"
    patch = spec["paths"][GATEWAY_PREFIX + "/journal_entries/{id}"]["patch"]["parameters"][0]["schema"]
    assert _errors(patch, {"journal_entry": {"transaction_date": "2025-01-31"}}), "transaction_no required"
    assert _errors(patch, {"journal_entry": {"transaction_date": "31-01-2025", "transaction_no": "1"}}), "a date"
    line = {"debit": 1, "credit": 0}
    assert _errors(patch, {"journal_entry": {"transaction_date": "2025-01-31", "transaction_no": "1",
                                             "transaction_account_lines_attributes": [line]}})
    assert not _errors(patch, {"journal_entry": {"transaction_date": "2025-01-31", "transaction_no": "1",
                                                 "transaction_account_lines_attributes": [{**line, "account_id": 3}]}})


@pytest.mark.parametrize("mode", ["oauth", "hmac"])
def test_every_request_and_answer_follows_mekaris_spec(spec: dict, settings, sandbox, mode: str) -> None:  # noqa: ANN001
    contract = Contract(spec)
    tenant = f"t-{mode}"
    if mode == "oauth":
        connect([tenant])
    sess = session()
    if mode == "hmac":
        creds = httpx.post(f"{sandbox.url}/_sandbox/companies/{tenant}/hmac_credentials").json()
        sess.vault.store_hmac(tenant, creds["client_id"], creds["client_secret"])
    checked: list[int] = []
    sess.client.http.event_hooks["request"].append(contract.check_request)

    def on_response(response: httpx.Response) -> None:
        response.read()
        contract.check_response(response)
        checked.append(response.status_code)

    sess.client.http.event_hooks["response"].append(on_response)
    sink = JurnalSink(sess.client)
    try:
        jan, feb, mar = (dt.date(2025, m, 1) for m in (1, 2, 3))
        one = canonical(sess, tenant, TWO)
        cents = canonical(sess, tenant, [("6-60101", 12_345_67, 0), ("1-10001", 0, 12_345_67)], feb)
        bad = canonical(sess, tenant, TWO, mar)
        bad = replace(bad, lines=(bad.lines[0], replace(bad.lines[1], account_id="999999")))  # not in the chart
        assert sink.create(tenant, [one])[0].remote is not None
        results = sink.create(tenant, [one, cents, bad])  # 409, 201, 422 in one batch
        assert [r.remote is not None for r in results] == [False, True, False]
        assert sink.find(tenant, one.custom_id) is not None and sink.find(tenant, "r2a-pl-none-202501") is None
        assert len(sink.list_period(tenant, jan, mar)) == 2
        remote = sink.find(tenant, one.custom_id)
        remote = sink.update(tenant, remote, canonical(sess, tenant, THREE, content="more"))
        httpx.post(f"{sandbox.url}/_sandbox/companies/{tenant}/entries",
                   json={"custom_id": one.custom_id, "relines": True})
        remote = sink.update(tenant, remote, canonical(sess, tenant, THREE[::-1], content="stale ids"))  # 422, GET
        remote = sink.update(tenant, remote, canonical(sess, tenant, TWO, content="fewer"))  # DELETE + POST
        sink.delete(tenant, sink.find(tenant, cents.custom_id))
    finally:
        sess.close()
    assert contract.seen == {("GET", "/accounts"), ("GET", "/journal_entries"), ("POST", "/journal_entries"),
                             ("POST", "/journal_entries/batch_create"), ("GET", "/journal_entries/{id}"),
                             ("PATCH", "/journal_entries/{id}"), ("DELETE", "/journal_entries/{id}")}
    assert contract.undocumented == {("GET", "/journal_entries/{id}", 404)}
    assert 422 in checked and len(checked) >= 15
