"""Exactly-once posting: decide per entry from the posting state and the content hash, record intent before every
write, and resolve every uncertain outcome by looking the entry up before writing again.

- unchanged since the last successful post -> no request at all
- new -> create (several months of one tenant -> one batch call where the system has one)
- changed -> update the remote entry (in place, or by reversal where the system's posted entries are immutable)
- gone from the ledger -> delete the remote entry (never when the month was rejected: that holds it as it is)
- pending (intent recorded, outcome unknown: timeout, dropped connection, 5xx, crash) -> look up first
- awaiting approval / submitted (an approval workflow, an asynchronous upload job) -> look up: posted, rejected,
  or still waiting; never re-created
- changed in the system by a person (a remote change found by the drift read, a look-up or `repost`; reconcile.py)
  -> the tenant's Policy: a deleted entry is looked up then re-created; an edited or moved one is held and reported
  with its diff (default) or re-read and updated against the entry as it is now (`overwrite`); an accepted remote
  version is left as it is while neither side changes
Every update re-reads the entry first when the posting state knows what we left there, so a person's edit is never
overwritten unseen, and the update goes against the entry's current lines (and SyncToken, revision).
Works against any LedgerSink; the state lives in a PostingStore (the operational database's `postings`).
Knows nothing of Dagster, HTTP or files.
"""

from ledger_pipeline.posting.engine import TRANSIENT, PostingEngine, TenantOutcome, TenantRound
from ledger_pipeline.posting.plan import LIVE, Action, PlanItem, PostingRow, PostingStore, Status, plan_tenant
from ledger_pipeline.posting.window import DeleteGuard, Progress, WindowJob, WindowResult

__all__ = [
    "LIVE", "TRANSIENT", "Action", "DeleteGuard", "PlanItem", "PostingEngine", "PostingRow", "PostingStore",
    "Progress", "Status", "TenantOutcome", "TenantRound", "WindowJob", "WindowResult", "plan_tenant",
]
