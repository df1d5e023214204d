"""Rootfi as a LedgerSink: one upload job per tenant (all its months), polled until every item is terminal.

Exactly once without an idempotency key:
- `document_number` carries our custom_id; Rootfi does not enforce it unique, so we never send an entry whose
  fate is unknown: an uncertain upload (5xx, dropped connection) raises kind="uncertain" and the engine calls
  `find`, which lists `/journal_entries/all` filtered on document_number, and then the company's upload jobs still
  in flight (an item still queued is invisible to the listing), before anything is sent again.
- After the upload answers, its `upload_job_id` is never lost: items still running when the poll budget is spent
  (or when polling itself fails) come back as `pending={"upload_job_id", "job_id"}`; `find(..., hint)` polls that
  job first: COMPLETED -> the live entry, PENDING -> state "processing", FAILED -> None (create again).
- Lines are `type` DEBIT/CREDIT with a positive `net_amount`, parsed exactly (never a float).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from ledger_pipeline.ledger.sink import CanonicalEntry, CreateResult, RemoteEntry, SinkError
from ledger_pipeline.money import from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.rootfi.client import RootfiClient, RootfiError, rootfi_message

T = TypeVar("T")
MAX_BATCH = 100  # items per upload job
TERMINAL = ("COMPLETED", "FAILED")


def _minor(value: object) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value))


def _date(value: str) -> dt.date:
    return dt.date.fromisoformat(str(value)[:10])


def parse_entry(data: dict, extra: dict | None = None) -> RemoteEntry:
    """A Rootfi journal entry (read model) -> RemoteEntry, exactly: DEBIT/CREDIT lines with positive net_amount."""
    raw = data.get("journal_lines") or []
    if isinstance(raw, dict):  # the read model nests lines as {"data": [...]}
        raw = raw.get("data") or []
    lines = []
    for ln in raw:
        amount, kind = _minor(ln["net_amount"]), str(ln.get("type", "")).upper()
        if kind not in ("DEBIT", "CREDIT") or amount < 0:
            raise SinkError("rejected", f"Rootfi entry {data.get('rootfi_id')} has a line we cannot read "
                                        f"(type {kind!r}, net_amount {ln.get('net_amount')})")
        lines.append((str(ln.get("platform_id") or ln.get("rootfi_id") or ""), str(ln["account_id"]),
                      amount if kind == "DEBIT" else 0, amount if kind == "CREDIT" else 0))
    return RemoteEntry(
        remote_id=str(data["rootfi_id"]), custom_id=data.get("document_number"),
        transaction_date=_date(data["posted_date"]), memo=data.get("description"),
        total_debit_minor=sum(d for _, _, d, _ in lines), total_credit_minor=sum(c for _, _, _, c in lines),
        lines=tuple(lines),
        extra={"rootfi_id": data["rootfi_id"], "platform_id": data.get("platform_id"), **(extra or {})},
    )


def entry_body(entry: CanonicalEntry) -> dict:
    """Rootfi's write shape for one entry (an item of `data`)."""
    lines = []
    for ln in entry.lines:
        debit = ln.debit_minor > 0
        lines.append({"account_id": ln.account_id, "type": "DEBIT" if debit else "CREDIT",
                      "net_amount": from_minor(ln.debit_minor if debit else ln.credit_minor),
                      "description": ln.description})
    return {"document_number": entry.custom_id, "posted_date": f"{entry.transaction_date.isoformat()}T00:00:00.000Z",
            "description": entry.memo, "currency_id": entry.currency, "journal_lines": lines}


def classify_item(error: Any, status: int | None = None) -> SinkError:
    """An item's (or a synchronous call's) refusal in Rootfi's words -> SinkError kind."""
    code, text = rootfi_message({"error": error} if not isinstance(error, dict) or "error" not in error else error)
    code = (code or "").upper()
    if code == "PERIOD_CLOSED" or "period is closed" in text:
        return SinkError("locked", f"Rootfi refused: {text}. Ask the tenant's accountant to reopen the period on "
                                   "the accounting platform (or book the change in an open period), then re-run "
                                   "this month. Nothing was changed.", status, {"code": code})
    if code == "INVALID_ACCOUNT":
        return SinkError("account", f"Rootfi refused an account ({text}): it is missing or inactive in the "
                                    "tenant's chart", status, {"code": code})
    if code in ("NOT_FOUND",) or status == 404:
        return SinkError("not_found", f"Rootfi: {text}", status, {"code": code})
    return SinkError("rejected", f"Rootfi refused the entry ({code or status}): {text}", status, {"code": code})


def classify(err: RootfiError | NeedsReauth) -> SinkError:
    if isinstance(err, NeedsReauth):
        return SinkError("needs_reauth", str(err))
    if err.kind == "rejected":
        return classify_item({"code": err.code, "message": err.detail or err.message}, err.status)
    return SinkError(err.kind, err.message, err.status)


class RootfiSink:
    name = "rootfi"
    max_batch = MAX_BATCH
    # An accepted upload is invisible to list_period until its job item completes: a recovery that lists must
    # `find` what the listing misses (find also looks at the company's jobs still in flight).
    async_writes = True

    def __init__(self, client: RootfiClient, poll_budget: float = 30.0, poll_initial: float = 0.5,
                 poll_max: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        # real seconds a create waits for its upload job before handing back `pending`
        self.poll_budget, self.poll_initial, self.poll_max = poll_budget, poll_initial, poll_max
        self.sleep, self.clock = sleep, clock

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (RootfiError, NeedsReauth) as exc:
            raise classify(exc) from exc

    # -- reads ----------------------------------------------------------------------------------------------
    def _live(self, tenant_id: str, custom_id: str) -> RemoteEntry | None:
        found = self._call(lambda: self.client.entries(tenant_id, {"document_number": {"equals": custom_id}}))
        return parse_entry(min(found, key=lambda d: int(d["rootfi_id"]))) if found else None

    def _in_flight(self, tenant_id: str, custom_id: str) -> dict | None:
        """The newest still-running upload item carrying our document_number, with its job."""
        for job in reversed(self._call(lambda: self.client.upload_jobs(tenant_id, "PENDING"))):
            for item in job["data"]:
                if item.get("document_number") == custom_id and item["status"] not in TERMINAL:
                    return {"upload_job_id": job["upload_job_id"], "job_id": item["job_id"]}
        return None

    @staticmethod
    def _processing(custom_id: str, hint: dict, since: str | None = None) -> RemoteEntry:
        return RemoteEntry("", custom_id, dt.date.min, None, 0, 0, (), state="processing",
                           state_detail=f"Rootfi upload job {hint['upload_job_id']} still processing"
                                        + (f" since {since}" if since else ""), extra=dict(hint))

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        if hint and hint.get("upload_job_id"):
            job = self._call(lambda: self.client.upload_job(tenant_id, hint["upload_job_id"]))
            item = next((i for i in (job or {}).get("data", []) if i["job_id"] == hint.get("job_id")
                         or (not hint.get("job_id") and i.get("document_number") == custom_id)), None)
            if item is not None and item["status"] not in TERMINAL:
                return self._processing(custom_id, {"upload_job_id": hint["upload_job_id"],
                                                    "job_id": item["job_id"]}, item.get("updated_at"))
            # COMPLETED: what counts is the live entry (it may have been edited or deleted since). FAILED: that
            # upload created nothing, but a later one (an uncertain retry) may have: list before saying None.
        live = self._live(tenant_id, custom_id)
        if live is not None:
            return live
        flight = self._in_flight(tenant_id, custom_id)
        return self._processing(custom_id, flight) if flight else None

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        data = self._call(lambda: self.client.entries(
            tenant_id, {"posted_date": {"gte": start.isoformat(), "lt": end.isoformat()}}))
        return [parse_entry(d) for d in data]

    # -- writes ---------------------------------------------------------------------------------------------
    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        try:
            job = self._call(lambda: self.client.upload(tenant_id, [entry_body(e) for e in entries]))
        except SinkError as err:
            if err.kind in ("rejected", "account", "locked", "not_found", "duplicate"):
                return [CreateResult(e.custom_id, error=err) for e in entries]
            raise
        upload_job_id = job["upload_job_id"]
        items = {e.custom_id: item for e, item in zip(entries, job["data"], strict=True)}
        deadline = self.clock() + self.poll_budget
        wait = 0.0  # the first look is immediate: a quick platform has already answered
        while any(i["status"] not in TERMINAL for i in items.values()):
            left = deadline - self.clock()
            if left <= 0:
                break
            self.sleep(min(wait * (1 + random.random() / 2), left))  # noqa: S311 - jitter, not crypto
            wait = min(max(wait * 2, self.poll_initial), self.poll_max)
            try:
                polled = self._call(lambda: self.client.upload_job(tenant_id, upload_job_id))
            except SinkError as err:
                if err.kind in ("retryable", "uncertain", "needs_reauth"):
                    break  # the job id is known: hand it back as pending, the next run polls it
                raise
            if polled is None:
                break
            by_job = {i["job_id"]: i for i in polled["data"]}
            items = {cid: by_job.get(i["job_id"], i) for cid, i in items.items()}
        results = []
        for e in entries:
            item = items[e.custom_id]
            hint = {"upload_job_id": upload_job_id, "job_id": item["job_id"]}
            if item["status"] == "COMPLETED" and "posted_date" in (item.get("response") or {}):
                results.append(CreateResult(e.custom_id, remote=parse_entry(item["response"], hint)))
            elif item["status"] == "FAILED":
                results.append(CreateResult(e.custom_id, error=classify_item(item.get("error") or "failed")))
            else:  # still running (or completed and already gone again): `find(..., hint)` settles it
                results.append(CreateResult(e.custom_id, pending=hint))
        return results

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        if not remote.remote_id:
            raise SinkError("not_found", "Rootfi: the entry has no rootfi_id yet (its upload is still processing)")
        data = self._call(lambda: self.client.update_entry(tenant_id, str(remote.remote_id), entry_body(entry)))
        return parse_entry(data)

    def delete(self, tenant_id: str, remote: RemoteEntry | str | int) -> None:
        remote_id = remote.remote_id if isinstance(remote, RemoteEntry) else remote
        if not remote_id:
            raise SinkError("not_found", "Rootfi: the entry has no rootfi_id (never created or still processing)")
        self._call(lambda: self.client.delete_entry(tenant_id, str(remote_id)))
