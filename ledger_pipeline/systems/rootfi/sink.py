"""Rootfi as a LedgerSink: one upload job per tenant (all its months); a final reply is used as is, a running one is
polled until every item is final (or the poll budget is spent).

Vendor reference: see client.py ([JE-ALL], [JE-NEW], [JOB2], [JOB3] on docs.integrationlabs.co).

Our key, `document_number` (`document_number(custom_id)`):
- Rootfi documents `document_number` as a plain string, "Reference number for the journal entry" (seed 004), with
  no length or character rule, and passes it on to the tenant's platform. We assume the strictest rule of the
  platforms behind it that we know: QuickBooks' DocNumber, at most 21 characters (see the QuickBooks sink), and
  only `A-Z a-z 0-9 . _ -` (nothing a platform, a filter or a URL could read differently).
- A custom_id within those rules is used as is (`r2a-pl-t00001-202501`: every id posted before keeps its key).
  Otherwise the key is a readable prefix plus a short hash: the custom_id folded to ASCII, every other character
  made `_`, cut to 10 characters, then `-` and the first 10 hex digits of its SHA-256 (21 characters, e.g.
  `r2a-pl-a_b-3f9c0e1d2a`). Stable (a pure function of the custom_id), unique within a company in practice (40 bits
  of hash behind the same prefix), and never equal to a plain key of ours (those end in `-YYYYMM`).
- Reading back, a key is mapped to its custom_id through the tenant's months (`list_period`) or the custom_id asked
  for (`find`); an entry still carrying the raw custom_id (posted before the key rules) counts as ours too.

Never trusting a server filter: every listing is filtered by `{"document_number": {"eq": key}}` [JE-ALL], but a
record counts as ours only if its document_number equals our key; list_period keeps only records dated in the
window. `update`/`delete` refuse (kind "rejected", nothing sent) a remote entry whose document_number is not ours,
and a create reply whose item carries another document_number is never adopted (it is looked up by listing).

Exactly once without an idempotency key:
- `document_number` is not unique on Rootfi, so we never send an entry whose fate is unknown: an uncertain upload
  (5xx, dropped connection) raises kind="uncertain" and the engine calls `find`, which lists by our key, and then
  the company's upload jobs still in flight (an item still queued is invisible to the listing; through the
  sandbox's stand-in listing, see the client), before anything is sent again.
- Fewer requests: when the write reply is final (item status "success" with the created entry, or "failed") it is
  used as is: one request per tenant's upload. Otherwise the upload job is polled (`GET /jobs/{upload_job_id}`, one
  request a round) with backoff, then each item's job once if some failed (or every round where the upload job
  cannot be read); a job's answer does not carry the entry [JOB2], so the succeeded ones are read back in one
  listing.
- The upload's job ids are never lost: items still running when the poll budget is spent (or when polling fails)
  come back as `pending={"upload_job_id", "job_id"}`; `find(..., hint)` polls that job first: RUNNING/CREATED ->
  state "processing", SUCCESS -> the live entry, FAILED or gone (404) -> the live entry or None (create again).
- Updates send the `updated_at` they were based on; a 409 (the entry changed on the platform since, e.g. its lines
  were edited) re-reads the entry and retries once against what is there.
- Lines are `type` DEBIT/CREDIT with a positive `net_amount`, parsed exactly (never a float).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
import time
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from ledger_pipeline import clock
from ledger_pipeline.ledger.sink import (
    CUSTOM_ID_PREFIX,
    CanonicalEntry,
    CreateResult,
    RemoteEntry,
    SinkError,
    custom_id_for,
)
from ledger_pipeline.money import currency_problem, from_minor, to_minor
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.rootfi.client import RootfiClient, RootfiError, rootfi_message

T = TypeVar("T")
MAX_BATCH = 100  # items per upload job
DOC_NUMBER_MAX = 21  # the strictest platform behind Rootfi we know (QuickBooks DocNumber); Rootfi documents none
DOC_HASH_LEN = 10
_DOC_OK = re.compile(r"[A-Za-z0-9._-]+")
_SUCCESS = {"SUCCESS", "SUCCEEDED", "COMPLETED", "DONE"}  # [JOB2]/[JE-NEW] say SUCCESS/"success"; older: COMPLETED
_FAILED = {"FAILED", "FAILURE", "ERROR", "CANCELLED", "CANCELED"}


def document_number(custom_id: str) -> str:
    """Our Rootfi key for a custom_id (module docstring): the custom_id itself when it has at most 21 characters
    of `A-Z a-z 0-9 . _ -`, else a 10-character readable prefix, `-`, and 10 hex digits of its SHA-256."""
    if len(custom_id) <= DOC_NUMBER_MAX and _DOC_OK.fullmatch(custom_id):
        return custom_id
    folded = unicodedata.normalize("NFKD", custom_id).encode("ascii", "ignore").decode("ascii")
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", folded)[:DOC_NUMBER_MAX - DOC_HASH_LEN - 1]
    return f"{readable}-{hashlib.sha256(custom_id.encode('utf-8')).hexdigest()[:DOC_HASH_LEN]}"


def _keys(custom_id: str) -> list[str]:
    """The document_numbers that are ours for a custom_id: the key, then the raw id (entries posted before)."""
    key = document_number(custom_id)
    return [key] if key == custom_id else [key, custom_id]


def job_status(value: object) -> str:
    """A job's or an item's status -> SUCCESS | FAILED | RUNNING (CREATED, RUNNING, or anything not final)."""
    text = str(value or "").upper()
    return "SUCCESS" if text in _SUCCESS else "FAILED" if text in _FAILED else "RUNNING"


def _minor(value: object, currency: str | None) -> int:
    return to_minor(value if isinstance(value, Decimal | int) else str(value), currency)


def _date(value: str) -> dt.date:
    return dt.date.fromisoformat(str(value)[:10])


def _id_order(data: dict) -> tuple[int, int, str]:
    rid = str(data.get("rootfi_id"))
    return (0, int(rid), "") if rid.isdigit() else (1, 0, rid)


def parse_entry(data: dict, custom_id: str | None = None, extra: dict | None = None) -> RemoteEntry:
    """A Rootfi journal entry -> RemoteEntry, exactly: DEBIT/CREDIT lines with positive net_amount, nested as
    {"data": [...]} (reads [JE-ALL]) or a plain array (the create reply [JE-NEW]). `custom_id`: ours when the
    caller has matched the document_number to it (else the document_number stands for it). Amounts in the decimals
    of the entry's currency (the nested currency's `code`, else `currency_id` when it is an ISO 4217 code: [JE-ALL]
    nests {"currency": {"data": {"code", ...}}}), which becomes `currency`; None when neither names one."""
    cur = currency_of(data)
    raw = data.get("journal_lines") or []
    if isinstance(raw, dict):
        raw = raw.get("data") or []
    lines = []
    for ln in raw:
        amount, kind = _minor(ln["net_amount"], cur), str(ln.get("type", "")).upper()
        if kind not in ("DEBIT", "CREDIT") or amount < 0:
            raise SinkError("rejected", f"Rootfi entry {data.get('rootfi_id')} has a line we cannot read "
                                        f"(type {kind!r}, net_amount {ln.get('net_amount')})")
        lines.append((str(ln.get("platform_id") or ln.get("rootfi_id") or ""), str(ln["account_id"]),
                      amount if kind == "DEBIT" else 0, amount if kind == "CREDIT" else 0))
    doc = data.get("document_number")
    return RemoteEntry(
        remote_id=str(data["rootfi_id"]), custom_id=custom_id or (None if doc is None else str(doc)),
        transaction_date=_date(data["posted_date"]), memo=data.get("description"),
        total_debit_minor=sum(d for _, _, d, _ in lines), total_credit_minor=sum(c for _, _, _, c in lines),
        lines=tuple(lines), currency=cur,
        extra={"rootfi_id": data["rootfi_id"], "platform_id": data.get("platform_id"), "document_number": doc,
               "updated_at": data.get("updated_at"), **(extra or {})},
    )


def currency_of(data: dict) -> str | None:
    """The ISO 4217 code of a Rootfi entry's currency, robust to both readings of [JE-ALL] (a code in `currency_id`,
    or a platform id there and the code in currency.data.code)."""
    nested = ((data.get("currency") or {}).get("data") or {}) if isinstance(data.get("currency"), dict) else {}
    for value in (nested.get("code"), data.get("currency_id")):
        if value and currency_problem(str(value).upper()) is None:
            return str(value).upper()
    return None


def entry_body(entry: CanonicalEntry) -> dict:
    """Rootfi's write shape for one entry (an item of `data`) [JE-NEW]."""
    lines = []
    for ln in entry.lines:
        debit = ln.debit_minor > 0
        lines.append({"account_id": ln.account_id, "type": "DEBIT" if debit else "CREDIT",
                      "net_amount": from_minor(ln.debit_minor if debit else ln.credit_minor, entry.currency),
                      "description": ln.description})
    return {"document_number": document_number(entry.custom_id),
            "posted_date": f"{entry.transaction_date.isoformat()}T00:00:00.000Z",
            "description": entry.memo, "currency_id": entry.currency, "journal_lines": lines}


def classify_item(error: Any, status: int | None = None) -> SinkError:
    """An item's (or a synchronous call's) refusal in Rootfi's words -> SinkError kind."""
    if not error:
        error = "the platform refused it without a reason"
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
    if err.kind == "needs_reauth":
        return SinkError("needs_reauth", str(err), err.status)
    if err.kind in ("rejected", "not_found"):
        return classify_item({"code": err.code, "message": err.detail or err.message}, err.status)
    return SinkError(err.kind, err.message, err.status)


def _job_error(job: dict) -> Any:
    return job.get("error") or (
        {"code": job["error_code"], "message": job["error_code"]} if job.get("error_code") else None)


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
        """Our entry (the oldest if there are several), looked up by `eq` on our key and checked record by record:
        whatever else the server answers is never taken for ours."""
        for key in _keys(custom_id):
            found = self._call(lambda k=key: self.client.entries(tenant_id, {"document_number": {"eq": k}}))
            mine = [d for d in found if str(d.get("document_number")) == key]
            if mine:
                return parse_entry(min(mine, key=_id_order), custom_id)
        return None

    def _in_flight(self, tenant_id: str, custom_id: str) -> dict | None:
        """The newest still-running upload item carrying our key, with its job."""
        keys = set(_keys(custom_id))
        for job in reversed(self._call(lambda: self.client.upload_jobs(tenant_id))):
            for item in job.get("data") or []:
                if str(item.get("document_number")) in keys and job_status(item.get("status")) == "RUNNING":
                    return {"upload_job_id": job.get("upload_job_id"), "job_id": item.get("job_id")}
        return None

    @staticmethod
    def _processing(custom_id: str, hint: dict, since: str | None = None) -> RemoteEntry:
        return RemoteEntry("", custom_id, dt.date.min, None, 0, 0, (), state="processing",
                           state_detail=f"Rootfi upload job {hint.get('upload_job_id')} still processing"
                                        + (f" since {since}" if since else ""), extra=dict(hint))

    def find(self, tenant_id: str, custom_id: str, hint: dict | None = None) -> RemoteEntry | None:
        job_id = (hint or {}).get("job_id") or (hint or {}).get("upload_job_id")
        if job_id and not (hint or {}).get("rootfi_id"):  # a create still pending: ask its job first
            job = self._call(lambda: self.client.job(tenant_id, str(job_id)))
            if job is not None and job_status(job.get("status")) == "RUNNING":
                return self._processing(custom_id, {"upload_job_id": hint.get("upload_job_id"),
                                                    "job_id": hint.get("job_id")},
                                        job.get("rootfi_updated_at") or job.get("start_time"))
            # SUCCESS: what counts is the live entry (it may have been edited or deleted since). FAILED or gone
            # (404): that upload created nothing, but a later one (an uncertain retry) may have: list.
        live = self._live(tenant_id, custom_id)
        if live is not None:
            return live
        flight = self._in_flight(tenant_id, custom_id)
        return self._processing(custom_id, flight) if flight else None

    def _months(self, tenant_id: str, start: dt.date, end: dt.date) -> dict[str, str]:
        """key -> custom_id for the tenant's months in [start, end)."""
        out = {}
        for month in clock.months_between(start, end - dt.timedelta(days=1)):
            cid = custom_id_for(tenant_id, month)
            out.update({k: cid for k in _keys(cid)})
        return out

    def _list_window(self, tenant_id: str, start: dt.date, end: dt.date) -> list[dict]:
        data = self._call(lambda: self.client.entries(
            tenant_id, {"posted_date": {"gte": start.isoformat(), "lt": end.isoformat()}}))
        return [d for d in data if d.get("posted_date") and start <= _date(d["posted_date"]) < end]

    def list_period(self, tenant_id: str, start: dt.date, end: dt.date) -> list[RemoteEntry]:
        """Every entry dated in [start, end), ours mapped back to our custom_id (others keep their
        document_number)."""
        ours = self._months(tenant_id, start, end)
        return [parse_entry(d, ours.get(str(d.get("document_number")))) for d in self._list_window(tenant_id, start,
                                                                                                    end)]

    # -- writes ---------------------------------------------------------------------------------------------
    def create(self, tenant_id: str, entries: list[CanonicalEntry]) -> list[CreateResult]:
        try:
            reply = self._call(lambda: self.client.upload(tenant_id, [entry_body(e) for e in entries]))
        except SinkError as err:
            if err.kind in ("rejected", "account", "locked", "not_found", "duplicate"):
                return [CreateResult(e.custom_id, error=err) for e in entries]
            raise
        reply = reply if isinstance(reply, dict) else {}
        upload_job_id = reply.get("upload_job_id")
        items = reply.get("data")
        if not isinstance(items, list) or len(items) != len(entries) or not all(isinstance(i, dict) for i in items):
            # an answer we cannot pair with our entries: assume nothing, each is looked up (job, then listing)
            return [CreateResult(e.custom_id, pending={"upload_job_id": upload_job_id, "job_id": None})
                    for e in entries]
        hints = {e.custom_id: {"upload_job_id": upload_job_id, "job_id": i.get("job_id")}
                 for e, i in zip(entries, items, strict=True)}
        done: dict[str, CreateResult] = {}
        running: dict[str, str] = {}  # custom_id -> the item's job id
        unread: list[CanonicalEntry] = []  # succeeded, but the answer did not carry the entry: read it back
        for e, item in zip(entries, items, strict=True):
            self._settle(e, item, item.get("response"), hints, done, running, unread)
        self._poll(tenant_id, entries, hints, done, running, unread)
        if unread:
            self._read_back(tenant_id, unread, hints, done)
        return [done.get(e.custom_id) or CreateResult(e.custom_id, pending=hints[e.custom_id]) for e in entries]

    @staticmethod
    def _settle(e: CanonicalEntry, item: dict, response: Any, hints: dict, done: dict, running: dict,
                unread: list) -> None:
        """Record one item's (or job's) answer: the entry, an error, still running, or succeeded-unread."""
        status = job_status(item.get("status"))
        if status == "FAILED":
            done[e.custom_id] = CreateResult(e.custom_id, error=classify_item(_job_error(item)))
        elif status == "SUCCESS":
            usable = (isinstance(response, dict) and response.get("rootfi_id") is not None
                      and response.get("posted_date") and str(response.get("document_number"))
                      == document_number(e.custom_id))
            if usable:  # a reply naming another document_number is never adopted: read back by our key
                done[e.custom_id] = CreateResult(e.custom_id, remote=parse_entry(response, e.custom_id,
                                                                                 hints[e.custom_id]))
            else:
                unread.append(e)
        elif hints[e.custom_id].get("job_id"):
            running[e.custom_id] = str(hints[e.custom_id]["job_id"])

    def _poll(self, tenant_id: str, entries: list[CanonicalEntry], hints: dict, done: dict, running: dict,
              unread: list) -> None:
        """Poll, with backoff, until every item is final or the poll budget is spent: the upload job itself (one
        request a round; [JOB2] takes any job id), then, once it is final, the items it did not settle. Where the
        upload job cannot be read (404), each item's job is polled instead."""
        deadline = self.clock() + self.poll_budget
        wait = self.poll_initial
        by_id = {e.custom_id: e for e in entries}
        upload_job_id = next(iter(hints.values()), {}).get("upload_job_id")
        while running:
            left = deadline - self.clock()
            if left <= 0:
                return
            self.sleep(min(wait * (1 + random.random() / 2), left))  # noqa: S311 - jitter, not crypto
            wait = min(wait * 2, self.poll_max)
            if upload_job_id:
                try:
                    upload = self._call(lambda u=str(upload_job_id): self.client.job(tenant_id, u))
                except SinkError as err:
                    if err.kind in ("retryable", "uncertain", "needs_reauth"):
                        return
                    raise
                if upload is None:
                    upload_job_id = None  # not readable as a job here: poll the items
                elif job_status(upload.get("status")) == "RUNNING":
                    continue
                elif job_status(upload.get("status")) == "SUCCESS":  # every item succeeded: read them back
                    unread += [by_id[cid] for cid in running]
                    running.clear()
                    return
            for cid, job_id in list(running.items()):  # each item's own answer (which failed, and why)
                try:
                    job = self._call(lambda j=job_id: self.client.job(tenant_id, j))
                except SinkError as err:
                    if err.kind in ("retryable", "uncertain", "needs_reauth"):
                        return  # the job ids are known: hand them back as pending, the next run polls them
                    raise
                if job is None:  # gone: `find` settles it by listing
                    running.pop(cid)
                    continue
                if job_status(job.get("status")) != "RUNNING":
                    running.pop(cid)
                    self._settle(by_id[cid], job, job.get("response"), hints, done, running, unread)

    def _read_back(self, tenant_id: str, unread: list[CanonicalEntry], hints: dict, done: dict) -> None:
        """Entries whose job succeeded without handing the entry back: one listing (by key for one entry, by
        their dates for several), matched on our key. Not found or not readable now: pending."""
        try:
            if len(unread) == 1:
                live = self._live(tenant_id, unread[0].custom_id)
                found = {unread[0].custom_id: live} if live else {}
            else:
                lo = min(e.transaction_date for e in unread)
                hi = max(e.transaction_date for e in unread) + dt.timedelta(days=1)
                rows = self._list_window(tenant_id, lo, hi)
                found = {}
                for e in unread:
                    mine = [d for d in rows if str(d.get("document_number")) in _keys(e.custom_id)]
                    if mine:
                        found[e.custom_id] = parse_entry(min(mine, key=_id_order), e.custom_id)
        except SinkError as err:
            if err.kind in ("retryable", "uncertain", "needs_reauth"):
                return
            raise
        for e in unread:
            if e.custom_id in found:
                remote = found[e.custom_id]
                done[e.custom_id] = CreateResult(e.custom_id, remote=RemoteEntry(
                    remote.remote_id, remote.custom_id, remote.transaction_date, remote.memo,
                    remote.total_debit_minor, remote.total_credit_minor, remote.lines,
                    extra={**remote.extra, **hints[e.custom_id]}))

    @staticmethod
    def _check_ours(remote: RemoteEntry, custom_id: str | None, action: str) -> None:
        """Refuse (nothing sent) to change a remote entry whose document_number is not ours for `custom_id` (None:
        the entry names no custom_id of ours at all)."""
        keys = _keys(custom_id) if custom_id else []
        doc = remote.extra.get("document_number") if "document_number" in remote.extra else (keys or [None])[0]
        if custom_id and remote.custom_id in (None, custom_id) and str(doc) in keys:
            return
        ours = f"ours ({keys[0]!r} for {custom_id})" if custom_id else f"one of ours (no {CUSTOM_ID_PREFIX} id)"
        raise SinkError("rejected", f"Rootfi entry {remote.remote_id or '?'} carries document_number {doc!r}, not "
                                    f"{ours}: refusing to {action} another entry; nothing was sent. The look-up "
                                    "that returned it ignored our document_number filter: re-run, and report it to "
                                    "Rootfi if it repeats.")

    def update(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        self._check_ours(remote, entry.custom_id, "update")
        if not remote.remote_id:
            raise SinkError("not_found", "Rootfi: the entry has no rootfi_id yet (its upload is still processing)")
        try:
            return self._put(tenant_id, remote, entry)
        except SinkError as err:
            if err.status != 409:
                raise
        # refused: the entry changed on the platform since we read it (its lines were edited). Read it again and
        # retry once against what is there.
        fresh = self._live(tenant_id, entry.custom_id)
        if fresh is None:
            raise SinkError("not_found", f"Rootfi: {entry.custom_id} changed on the platform and is gone now")
        if fresh.matches(entry):
            return fresh
        try:
            return self._put(tenant_id, fresh, entry)
        except SinkError as err:
            if err.status != 409:
                raise
            raise SinkError("retryable", f"Rootfi refused the update of {entry.custom_id} twice: the entry keeps "
                                         f"changing on the platform ({err.message}); the next round tries again",
                            409) from err

    def _put(self, tenant_id: str, remote: RemoteEntry, entry: CanonicalEntry) -> RemoteEntry:
        body = entry_body(entry)
        if remote.extra.get("updated_at"):
            body["updated_at"] = remote.extra["updated_at"]  # the version this update is based on
        data = self._call(lambda: self.client.update_entry(tenant_id, str(remote.remote_id), body))
        return parse_entry(data, entry.custom_id, {k: v for k, v in remote.extra.items()
                                                   if k in ("upload_job_id", "job_id")})

    def delete(self, tenant_id: str, remote: RemoteEntry | str | int) -> None:
        if isinstance(remote, RemoteEntry):  # ours only: in our namespace, carrying the key of that custom_id
            cid = remote.custom_id if (remote.custom_id or "").startswith(CUSTOM_ID_PREFIX) else None
            self._check_ours(remote, cid, "delete")
            remote_id = remote.remote_id
        else:
            remote_id = remote
        if not remote_id:
            raise SinkError("not_found", "Rootfi: the entry has no rootfi_id (never created or still processing)")
        self._call(lambda: self.client.delete_entry(tenant_id, str(remote_id)))
