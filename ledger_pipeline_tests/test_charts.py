"""Charts of accounts in the operational database, their one home (SQLite and Postgres): a read replaces the tenant's
chart and appends what changed, a failed read keeps the previous chart and makes the tenant stale, and the DuckDB
copy (`publish_charts`) is the analysts' table, replaced from the operational database."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import delete, insert

from ledger_pipeline.charts import (
    ACCOUNT_COLUMNS,
    STATUS_COLUMNS,
    ChartFetch,
    account_count,
    chart_checks,
    fetched_by,
    load_charts,
    publish_charts,
    save_charts,
    stale_tenants,
)
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.models import GlAccount
from ledger_pipeline.warehouse.schema import TABLES
from ledger_pipeline.warehouse.store import Warehouse, transaction

T0 = dt.datetime(2025, 2, 1, 1, 0)


@pytest.fixture(params=["sqlite", "postgres"])
def ops(request, tmp_path: Path):  # noqa: ANN001, ANN201
    url = f"sqlite:///{tmp_path / 'ops.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_ops_engine(url)
    yield engine
    engine.dispose()


def read(accounts: list[tuple], status: list[tuple]) -> ChartFetch:
    return ChartFetch(pd.DataFrame(accounts, columns=ACCOUNT_COLUMNS), pd.DataFrame(status, columns=STATUS_COLUMNS))


def chart(tenant: str, *, sales: str = "Sales", archived: bool = False, system: str = "zoho") -> list[tuple]:
    return [(system, tenant, "10", "1-10001", "Cash", "Asset", None, False),
            (system, tenant, "40", "4-40000", sales, "Income", None, archived)]


def test_a_read_replaces_the_chart_and_records_what_changed(ops) -> None:  # noqa: ANN001
    save_charts(ops, read(chart("t1") + chart("t2"), [("zoho", "t1", "ok", 2, None), ("zoho", "t2", "ok", 2, None)]),
                "r1", T0)
    assert account_count(ops) == 4 and fetched_by(ops, "r1") == ["t1", "t2"]
    later = T0 + dt.timedelta(hours=30)
    save_charts(ops, read(chart("t1", sales="Revenue", archived=True)[1:],  # 1-10001 removed, 4-40000 changed
                          [("zoho", "t1", "ok", 1, None),
                           ("zoho", "t2", "needs_reauth", 0, "tenant t2: the grant was revoked (kept the previous "
                                                             "chart; retried on the next run)")]), "r2", later)
    stored = load_charts(ops).sort_values(["tenant_id", "account_id"], ignore_index=True)
    assert stored[["tenant_id", "account_id", "name", "archived", "run_id"]].values.tolist() == [
        ["t1", "40", "Revenue", True, "r2"],
        ["t2", "10", "Cash", False, "r1"], ["t2", "40", "Sales", False, "r1"]], "t2 keeps its previous chart"
    assert stored["archived"].dtype == bool
    checks = chart_checks(ops)
    assert checks[["tenant_id", "checked_at"]].values.tolist() == [["t1", pd.Timestamp(later)]], \
        "a tenant whose last read failed is not fresh"
    systems = {"t1": "zoho", "t2": "zoho", "t3": "aden"}
    assert stale_tenants(systems, checks, dt.timedelta(hours=36), later) == [("aden", "t3"), ("zoho", "t2")]
    assert stale_tenants({**systems, "t1": "aden"}, checks, dt.timedelta(hours=36), later)[0] == ("aden", "t1"), \
        "a tenant moved to another system needs that system's chart"


def test_the_duckdb_copy_follows_the_operational_database(ops, settings) -> None:  # noqa: ANN001
    save_charts(ops, read(chart("t1") + chart("t2"), [("zoho", "t1", "ok", 2, None), ("zoho", "t2", "ok", 2, None)]),
                "r1", T0)
    wh = Warehouse(settings.work_warehouse_path, settings.warehouse_path)
    with wh.connect() as con, transaction(con):
        assert publish_charts(con, ops) == 4
    save_charts(ops, read(chart("t1", archived=True), [("zoho", "t1", "ok", 2, None)]), "r2", T0)
    with wh.connect() as con:
        with transaction(con):
            assert publish_charts(con, ops, ["t1"]) == 2  # only t1's rows are replaced
        copy = con.execute("SELECT tenant_id, number, archived, run_id FROM accounting.gl_accounts "
                           "ORDER BY 1, 2").fetchall()
        changes = con.execute("SELECT tenant_id, change, number FROM accounting.gl_account_changes "
                              "ORDER BY 1, 2, 3").fetchall()
        status = con.execute("SELECT tenant_id, status, accounts, run_id FROM accounting.gl_ingest_status "
                             "ORDER BY 1").fetchall()
        columns = [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name = "
                                             "'accounting' AND table_name = 'gl_accounts'").fetchall()]
    assert copy == [("t1", "1-10001", False, "r2"), ("t1", "4-40000", True, "r2"),
                    ("t2", "1-10001", False, "r1"), ("t2", "4-40000", False, "r1")]
    assert changes == [("t1", "added", "1-10001"), ("t1", "added", "4-40000"), ("t1", "archived", "4-40000"),
                       ("t2", "added", "1-10001"), ("t2", "added", "4-40000")]
    assert status == [("t1", "ok", 2, "r2"), ("t2", "ok", 2, "r1")]
    assert columns == [c for c, _ in TABLES["accounting.gl_accounts"]], "the analysts' table keeps its shape"


def test_two_refreshes_of_one_tenant_at_once_both_succeed_on_postgres(pg_url: str) -> None:
    """A shard's chart retry and the daily refresh may store the same tenant's chart at the same moment: the second
    DELETE waits for the first transaction, then misses the rows it inserted (READ COMMITTED); its insert must not
    fail on them. The later write wins."""
    ops = make_ops_engine(pg_url)
    ok = [("zoho", "t1", "ok", 2, None)]
    save_charts(ops, read(chart("t1"), ok), "r0", T0)
    with ops.connect() as first:
        tx = first.begin()
        first.execute(delete(GlAccount).where(GlAccount.tenant_id == "t1"))
        first.execute(insert(GlAccount), [{**dict(zip(ACCOUNT_COLUMNS, row, strict=True)), "run_id": "r1"}
                                          for row in chart("t1")])
        second = threading.Thread(target=save_charts, args=(ops, read(chart("t1", sales="Revenue"), ok), "r2", T0))
        second.start()
        time.sleep(1)  # the second refresh now waits on the first one's locks
        tx.commit()
    second.join(timeout=30)
    assert set(load_charts(ops)[["run_id", "name"]].itertuples(index=False)) == {("r2", "Cash"), ("r2", "Revenue")}
    assert fetched_by(ops, "r2") == ["t1"]
    ops.dispose()
