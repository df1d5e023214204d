"""The accountant's hand, end to end through the emulators: entries deleted, edited or moved by hand in the tenant's
own system are found (drift read, close, repost), classified, acted on under the tenant's policy, listed for a
decision, and never reported as `match` unless seen matching; every message names the tenant's own system."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import dagster as dg
import httpx
from click.testing import CliRunner
from sqlalchemy import text

from ledger_pipeline import clock
from ledger_pipeline.cli import main
from ledger_pipeline.jobs import repost_job
from ledger_pipeline.r2a import seed as seeding
from ledger_pipeline.r2a.models import R2aTransaction, make_engine
from ledger_pipeline.remote_changes import RemoteChangeStore
from ledger_pipeline.settings import Settings, load_settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.systems import SYSTEMS
from ledger_pipeline_tests.helpers import (
    CLOSE,
    committed_instance,
    connect_to,
    live_entries,
    materialize,
    materialize_drift,
    query,
    reset_stats,
    resources,
    sandbox_stats,
)

MONTH = dt.date(2025, 1, 1)
KEY = MONTH.isoformat()
# Write requests one entry's create costs: Aden's is create then submit-for-approval (auto-approved).
CREATE_WRITES = {"jurnal": 1, "quickbooks": 1, "zoho": 1, "aden": 2, "rootfi": 1}
# Re-creating a deleted entry: on Aden the first create's X-Idempotency-Key is replayed with the deleted entry's
# answer (a write request that writes nothing), then the sink posts it under a new key and submits it.
RECREATE_WRITES = {**CREATE_WRITES, "aden": 3}
# The systems the edit scenarios run on, both in one seeded, closed month.
EDITABLE = ["jurnal", "quickbooks"]


def setup(settings: Settings, url: str, system: str, tenants: int = 2) -> list[str]:
    """Tenants on `system`, their month closed: each entry posted once (CREATE_WRITES write requests each)."""
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, tenants, 1, MONTH, seed=13)
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT tenant_id FROM tenants ORDER BY 1"))]
    connect_to(system, ids)
    reset_stats(url)
    assert materialize(CLOSE, KEY).success
    assert writes(url, system) == CREATE_WRITES[system] * len(ids)
    return ids


def setup_systems(settings: Settings, url: str, systems: list[str], per_system: int = 2) -> dict[str, list[str]]:
    """`per_system` tenants on each of `systems`, their month closed in one run: system -> its tenants (each entry
    posted once, CREATE_WRITES write requests each, counted per system). One seeded, closed month serves every
    system of a scenario: each system's tenants are acted on and checked on their own."""
    engine = make_engine(settings.r2a_database_url)
    seeding.seed(engine, per_system * len(systems), 1, MONTH, seed=13)
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT tenant_id FROM tenants ORDER BY 1"))]
    tenants = {system: ids[i * per_system:(i + 1) * per_system] for i, system in enumerate(systems)}
    for system, theirs in tenants.items():
        connect_to(system, theirs)
    reset_stats(url)
    assert materialize(CLOSE, KEY).success
    for system, theirs in tenants.items():
        assert writes(url, system) == CREATE_WRITES[system] * len(theirs), system
    return tenants


def drift() -> None:
    """The drift read over a window reaching back to MONTH (one month more than needed: robust to the month
    turning during the test)."""
    assert materialize_drift(months=len(clock.months_between(MONTH, clock.current_month())) + 1).success


def ours(url: str, system: str, tenant: str) -> list[dict]:
    return [e for e in live_entries(url, system) if e["company_login"] == tenant
            and (e["custom_id"] or "").startswith("r2a-pl-")]


def by_hand(url: str, system: str, tenant: str, **body: object) -> None:
    """A person's change in the tenant's system (the sandbox's control, as the system's UI would do it)."""
    [entry] = ours(url, system, tenant)
    resp = httpx.post(f"{url}/_sandbox/{system}/companies/{tenant}/entries",
                      json={"custom_id": entry["custom_id"], **body})
    assert resp.status_code == 200, resp.text


def recon(settings: Settings, tenant: str) -> tuple[str, str, str]:
    [row] = query(settings, "SELECT status, detail, checked_by FROM accounting.reconciliation WHERE tenant_id = ? "
                            "AND period = ?", [tenant, MONTH])
    return row


def writes(url: str, system: str) -> int:
    return sandbox_stats(url)["by_system"][system]["api_writes"]


def changes(settings: Settings) -> dict[str, tuple[str, str, str]]:
    store = RemoteChangeStore(make_ops_engine(settings.ops_database_url))
    rows = store.load(MONTH, clock.add_months(MONTH, 1), statuses=("open", "resolved", "accepted"))
    return {t: (c.kind, c.status, c.found_by) for t, by in rows.items() for c in by.values()}


def check(result: dg.ExecuteInProcessResult, name: str = "postings_complete"):  # noqa: ANN201
    [evaluation] = [e.event_specific_data for e in result.all_events
                    if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
                    and e.event_specific_data.check_name == name]
    return evaluation


def repost(tenant: str, accept_remote: bool = False) -> dg.ExecuteInProcessResult:
    """repost_job from the UI's launchpad: the run config an operator types."""
    with committed_instance() as inst:
        return repost_job.execute_in_process(
            run_config={"ops": {"repost": {"config": {"tenant": tenant, "month": f"{MONTH:%Y-%m}",
                                                      "accept_remote": accept_remote}}}},
            resources=resources(load_settings()), instance=inst, raise_on_error=False)


def names_its_own_system(text_: str, system: str) -> None:
    assert SYSTEMS[system].title in text_, text_
    assert "postings" not in text_
    if system != "jurnal":
        assert "Jurnal" not in text_, text_


def test_a_deleted_entry_is_found_then_recreated_exactly_once(settings, sandbox) -> None:  # noqa: ANN001
    """All five systems in one closed month (one drift read, one close for all): each system's victim on its own."""
    tenants = setup_systems(settings, sandbox.url, list(SYSTEMS))
    for system, (victim, _) in tenants.items():
        by_hand(sandbox.url, system, victim, delete=True)
        assert not ours(sandbox.url, system, victim), system
    drift()
    for system, (victim, other) in tenants.items():
        status, detail, checked_by = recon(settings, victim)
        assert (status, checked_by) == ("missing_remote", "remote_read") and "deleted in" in detail, (system, detail)
        names_its_own_system(detail, system)
        assert "the next close re-creates it" in detail.lower()
        assert len(ours(sandbox.url, system, other)) == 1, system
        assert changes(settings)[victim] == ("deleted", "open", "remote_read"), system

    reset_stats(sandbox.url)
    result = materialize(CLOSE, KEY)
    assert result.success and check(result).passed
    for system, (victim, other) in tenants.items():
        assert writes(sandbox.url, system) == RECREATE_WRITES[system], f"{system}: one create, nothing else written"
        [back] = ours(sandbox.url, system, victim)
        total = query(settings, "SELECT total_debit FROM ledger.journal_entries WHERE tenant_id = ?", [victim])[0][0]
        assert Decimal(str(back["total_debit"])) == total, system
        assert recon(settings, victim)[0] == "match" and recon(settings, other)[0] == "match", system
        assert changes(settings)[victim][:2] == ("deleted", "resolved"), system

    reset_stats(sandbox.url)
    assert materialize(CLOSE, KEY).success
    for system, (victim, _) in tenants.items():
        assert writes(sandbox.url, system) == 0 and len(ours(sandbox.url, system, victim)) == 1, f"{system}: once"


def test_an_edited_entry_is_held_with_its_diff_until_accepted(settings, sandbox) -> None:  # noqa: ANN001
    tenants = setup_systems(settings, sandbox.url, EDITABLE)
    others = [other for _, other in tenants.values()]
    for system, (victim, _) in tenants.items():
        by_hand(sandbox.url, system, victim, scale_line=2)
    drift()
    for system, (victim, _) in tenants.items():
        status, detail, _ = recon(settings, victim)
        assert status == "amount_mismatch" and "edited in" in detail and " -> " in detail, detail
        names_its_own_system(detail, system)
        assert "--accept-remote" in detail and "held for a decision" in detail.lower()

    reset_stats(sandbox.url)
    result = materialize(CLOSE, KEY)
    assert result.success, "a held entry is a decision, not a failure of the run"
    warn = check(result)
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert all(other not in warn.description for other in others), warn.description
    assert not check(result, "reconciliation_all_match").passed
    for system, (victim, _) in tenants.items():
        assert writes(sandbox.url, system) == 0, f"{system}: the accountant's edit is not overwritten"
        status, detail, checked_by = recon(settings, victim)
        assert (status, checked_by) == ("amount_mismatch", "remote_read"), "the close never reports match unseen"
        assert f"{victim} 2025-01" in warn.description

    listed = CliRunner().invoke(main, ["decisions"])
    assert listed.exit_code == 0 and f"{len(tenants)} tenant-month(s) need a decision" in listed.output, \
        listed.output
    assert " -> " in listed.output and all(other not in listed.output for other in others), listed.output
    for system, (victim, _) in tenants.items():
        assert victim in listed.output and SYSTEMS[system].title in listed.output

    for victim, _ in tenants.values():
        accepted = repost(victim, accept_remote=True)
        assert accepted.success, accepted.all_events[-1]
        assert "accepted as the new truth" in accepted.output_for_node("repost")["result"]
        assert changes(settings)[victim][:2] == ("edited", "accepted")
    reset_stats(sandbox.url)
    result = materialize(CLOSE, KEY)
    assert result.success and check(result).passed and check(result, "reconciliation_all_match").passed
    for system, (victim, _) in tenants.items():
        assert writes(sandbox.url, system) == 0, f"{system}: the accepted version is left as it is"
        assert recon(settings, victim)[0] == "accepted_remote"
    drift()
    for victim, _ in tenants.values():
        assert recon(settings, victim)[0] == "accepted_remote", "the drift read agrees: the accepted fingerprint"
    assert "no tenant-month needs a decision" in CliRunner().invoke(main, ["decisions"]).output


def test_overwrite_policy_rereads_then_puts_our_entry_back(settings, sandbox) -> None:  # noqa: ANN001
    tenants = setup_systems(settings, sandbox.url, EDITABLE)
    for system, (victim, other) in tenants.items():
        out = CliRunner().invoke(main, ["decisions", "--tenant", victim, "--on-edit", "overwrite"])
        assert out.exit_code == 0 and "on_edit=overwrite" in out.output, out.output
        by_hand(sandbox.url, system, victim, scale_line=3)
        by_hand(sandbox.url, system, other, scale_line=3)  # the other tenant keeps the default: hold
    drift()
    for victim, _ in tenants.values():
        assert "the next close re-reads it and puts our entry back" in recon(settings, victim)[1].lower()
    reset_stats(sandbox.url)
    result = materialize(CLOSE, KEY)
    for system, (victim, other) in tenants.items():
        assert writes(sandbox.url, system) == 1, f"{system}: one update, for the tenant whose policy is overwrite"
        [entry] = ours(sandbox.url, system, victim)
        total = query(settings, "SELECT total_debit FROM ledger.journal_entries WHERE tenant_id = ?", [victim])[0][0]
        assert Decimal(str(entry["total_debit"])) == Decimal(str(entry["total_credit"])) == total
        assert recon(settings, victim)[0] == "match" and changes(settings)[victim][:2] == ("edited", "resolved")
        assert recon(settings, other)[0] == "amount_mismatch" and other in check(result).description
        assert f"{victim} 2025-01" not in check(result).description


def test_a_close_that_updates_rereads_first_and_finds_the_edit(settings, sandbox) -> None:  # noqa: ANN001
    tenants = setup_systems(settings, sandbox.url, EDITABLE)
    for system, (victim, _) in tenants.items():
        by_hand(sandbox.url, system, victim, scale_line=2)  # no drift read in between
        with make_engine(settings.r2a_database_url).begin() as conn:  # a late R2a row: our entry changes too
            conn.execute(R2aTransaction.__table__.insert(), [{
                "tenant_id": victim, "txn_date": dt.date(2025, 1, 30), "category": "expense",
                "subcategory": "marketing", "amount": Decimal("777000"), "currency": "IDR"}])
    reset_stats(sandbox.url)
    result = materialize(CLOSE, KEY)
    assert result.success
    for system, (victim, _) in tenants.items():
        assert writes(sandbox.url, system) == 0, f"{system}: re-read before the update: held, not overwritten"
        assert changes(settings)[victim] == ("edited", "open", "close")
        status, detail, _ = recon(settings, victim)
        assert status == "amount_mismatch" and "edited in" in detail
        names_its_own_system(detail, system)
        assert f"{victim} 2025-01" in check(result).description

    for system, (victim, _) in tenants.items():
        reset_stats(sandbox.url)
        done = repost(victim)  # the operator decides: ours
        assert done.success and done.output_for_node("repost")["result"].startswith("updated in")
        assert writes(sandbox.url, system) == 1, system
        [entry] = ours(sandbox.url, system, victim)
        total = query(settings, "SELECT total_debit FROM ledger.journal_entries WHERE tenant_id = ?", [victim])[0][0]
        assert Decimal(str(entry["total_debit"])) == total, "our entry, with the late row"
        assert recon(settings, victim)[:1] == ("match",) and recon(settings, victim)[2] == "repost"
        assert changes(settings)[victim][:2] == ("edited", "resolved")


def test_repost_recreates_a_deleted_entry_once_and_refuses_to_accept_nothing(settings, sandbox) -> None:  # noqa: ANN001
    system = "quickbooks"
    victim, _ = setup(settings, sandbox.url, system)
    by_hand(sandbox.url, system, victim, delete=True)
    refused = repost(victim, accept_remote=True)
    assert not refused.success
    message = next(e for e in refused.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
                   ).step_failure_data.error.message
    assert "nothing to accept" in message and "QuickBooks Online has no entry" in message, message
    reset_stats(sandbox.url)
    done = repost(victim)
    assert done.success and "re-created in QuickBooks Online" in done.output_for_node("repost")["result"]
    assert writes(sandbox.url, system) == 1 and len(ours(sandbox.url, system, victim)) == 1
    reset_stats(sandbox.url)
    again = repost(victim)
    assert again.success and "holds exactly our entry" in again.output_for_node("repost")["result"]
    assert writes(sandbox.url, system) == 0 and len(ours(sandbox.url, system, victim)) == 1
    assert recon(settings, victim)[0] == "match"
