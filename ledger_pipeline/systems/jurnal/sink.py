"""Jurnal as a LedgerSink: canonical entries <-> Jurnal's journal_entries, with Jurnal's errors classified."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from ledger_pipeline.ledger.sink import CanonicalEntry, CreateResult, RemoteEntry, SinkError
from ledger_pipeline.money import from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.jurnal.client import JurnalClient, JurnalError, jurnal_message

T = TypeVar("T")
MAX_BATCH = 100


def _minor(value: object) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value))


def parse_remote(data: dict) -> RemoteEntry:
    """A Jurnal journal entry (read shape) -> RemoteEntry. Uses the numeric fields, never the formatted ones."""
    lines = tuple(
        (str(ln["id"]), str(ln["account"]["id"]), _minor(ln.get("debit") or 0), _minor(ln.get("credit") or 0))
        for ln in data.get("transaction_account_lines", [])
    )
    return RemoteEntry(
        remote_id=str(data["id"]), custom_id=data.get("custom_id"),
        transaction_date=dt.datetime.strptime(data["transaction_date"], "%d/%m/%Y").date(),
        memo=data.get("memo"), total_debit_minor=_minor(data.get("total_debit") or 0),
        total_credit_minor=_minor(data.get("total_credit") or 0), lines=lines, locked=bool(data.get("locked")),
    )


def entry_body(entry: CanonicalEntry) -> dict:
    """Jurnal's write shape: DD-MM-YYYY, custom_id as the idempotency key, one side per line, 2-dp amounts."""
    return {
        "transaction_date": entry.transaction_date.strftime("%d-%m-%Y"),
        "custom_id": entry.custom_id,
        "memo": entry.memo,
        "tags": ["r2a"],
        "transaction_account_lines_attributes": [
            {"account_id": int(ln.account_id), "description": ln.description,
             **({"debit": from_minor(ln.debit_minor)} if ln.debit_minor else {"credit": from_minor(ln.credit_minor)})}
            for ln in entry.lines
        ],
    }


def classify(err: JurnalError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth):
        return SinkError("needs_reauth", str(err))
    if err.kind == "rejected" and err.status == 422 and "not exist" in str(err.body) and "account" in str(err.body):
        text = jurnal_message(err.body)
        return SinkError("account", f"Jurnal refused an account ({text}): it is missing or archived in the "
                                    "tenant's chart", err.status)
    text = jurnal_message(err.body) if err.body is not None else err.message
    if err.kind == "rejected":
        if "custom_id" in str(err.body) and ("already" in text or "taken" in text):
            return SinkError("duplicate", text, err.status)
        if "locked period" in text or "Kunci Periode" in text or "dikunci" in text:
            return SinkError("locked", _lock_reason(text), err.status)
        if err.status == 404:
            return SinkError("not_found", text, err.status)
        return SinkError("rejected", f"Jurnal refused the entry ({err.status}): {text}", err.status)
    return SinkError(err.kind, err.message, err.status)


def _lock_reason(text: str) -> str:
    return (f"Jurnal refused: the period is locked ({text}). Ask the tenant's accountant to open the period in "
            "Jurnal (Pengaturan > Kunci Periode / Tutup Buku) or to book the change in an open period, then re-run "
            "this month. Nothing was changed in Jurnal.")


class JurnalSink:
    name = "jurnal"
    max_batch = MAX_BATCH

    def __init__(self, client: JurnalClient):
        self.client = client

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (JurnalError, NeedsReauth) as exc:
            raise classify(exc) from exc

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        data = self._call(lambda: self.client.get_entry(tenant_id, custom_id))
        return parse_remote(data) if data else None

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        last = end - dt.timedelta(days=1)
        data = self._call(lambda: self.client.list_entries(tenant_id, start.strftime("%d-%m-%Y"),
                                                           last.strftime("%d-%m-%Y")))
        return [parse_remote(d) for d in data]

    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        if len(entries) == 1:
            try:
                data = self._call(lambda: self.client.create_entry(tenant_id, entry_body(entries[0])))
            except SinkError as err:
                if err.kind in ("rejected", "duplicate", "locked"):
                    return [CreateResult(entries[0].custom_id, error=err)]
                raise
            return [CreateResult(entries[0].custom_id, remote=parse_remote(data))]
        items = self._call(lambda: self.client.batch_create(tenant_id, [entry_body(e) for e in entries]))
        results = []
        for entry, item in zip(entries, items, strict=True):
            if item.get("status") in (200, 201):
                results.append(CreateResult(entry.custom_id, remote=parse_remote(item["body"])))
            else:
                err = JurnalError("rejected", tenant_id, "batch item refused", item.get("status"),
                                  item.get("content"))
                results.append(CreateResult(entry.custom_id, error=classify(err)))
        return results

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        body = entry_body(entry)
        body.pop("custom_id")
        # Rails nested attributes: destroy every old line, add the new ones (a line without id is added).
        body["transaction_account_lines_attributes"] = (
            [{"id": int(line_id), "_destroy": True} for line_id in remote.line_ids]
            + body["transaction_account_lines_attributes"])
        data = self._call(lambda: self.client.update_entry(tenant_id, remote.remote_id, body))
        return parse_remote(data)

    def delete(self, tenant_id: str, remote: RemoteEntry) -> None:
        self._call(lambda: self.client.delete_entry(tenant_id, remote.remote_id))
