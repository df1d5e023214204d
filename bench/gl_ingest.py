"""GL-accounts ingestion for N tenants x ~150 accounts from the sandbox (limits off): our asset beside dlt's REST
client loading the same into DuckDB (one dlt run, one resource yielding every tenant's chart), side by side.

    .venv/bin/pip install 'dlt[duckdb]'      # bench only (make bench does it)
    .venv/bin/python bench/gl_ingest.py --tenants 1000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import save
from cryptography.fernet import Fernet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--accounts", type=int, default=150)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gl-"))
    os.environ.update({
        "LEDGER_DATA_DIR": str(tmp), "R2A_DATABASE_URL": f"sqlite:///{tmp / 'r2a.sqlite'}",
        "LEDGER_WAREHOUSE": str(tmp / "warehouse.duckdb"), "LEDGER_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "JURNAL_RATE_LIMIT_SCALE": "1000000",
    })
    import dlt
    import duckdb
    from dlt.sources.helpers.rest_client import RESTClient
    from dlt.sources.helpers.rest_client.auth import BearerTokenAuth

    from ledger_pipeline.sandboxes.jurnal import Limits
    from ledger_pipeline.sandboxes.jurnal_state import SandboxState
    from ledger_pipeline.sandboxes.server import SandboxServer
    from ledger_pipeline_tests.helpers import connect, materialize_gl, session

    tenants = [f"t{i:05d}" for i in range(1, args.tenants + 1)]
    state = SandboxState(tmp / "sandbox.sqlite")
    for t in tenants:  # Jurnal's default chart plus extra accounts: ~150 per company
        cid = state.company_for_login(t)
        state.db.executemany(
            "INSERT INTO accounts (company_id, number, name, category, category_id) VALUES (?, ?, ?, ?, ?)",
            [(cid, f"6-7{k:04d}", f"Beban Operasional {k}", "Beban", 17) for k in range(args.accounts - 38)])
    state.close()
    report: dict = {"tenants": args.tenants, "accounts_per_tenant": args.accounts}
    with SandboxServer(tmp / "sandbox.sqlite", limits=Limits(enabled=False)) as server:
        os.environ["JURNAL_API_BASE_URL"] = server.api_url
        os.environ["JURNAL_OAUTH_BASE_URL"] = server.url
        connect(tenants)
        sess = session()
        tokens = {t: sess.vault.access_token(t, lambda rt: sess.oauth.refresh("x", rt)) for t in tenants}
        sess.close()

        def ours() -> int:
            result = materialize_gl()
            return result.get_asset_materialization_events()[0].materialization.metadata[
                "dagster/row_count"].value

        def with_dlt() -> int:
            client = RESTClient(base_url=server.api_url)

            @dlt.resource(name="gl_accounts", write_disposition="replace", primary_key=["tenant_id", "id"])
            def accounts():  # noqa: ANN202
                for t in tenants:
                    resp = client.get("/accounts", params={"include_archive": "true"},
                                      auth=BearerTokenAuth(tokens[t]))
                    yield [{**a, "tenant_id": t} for a in resp.json()["accounts"]]

            pipeline = dlt.pipeline(pipeline_name="gl_bench", destination=dlt.destinations.duckdb(
                str(tmp / "dlt.duckdb")), dataset_name="jurnal", pipelines_dir=str(tmp / "dlt_pipelines"))
            pipeline.run(accounts())
            con = duckdb.connect(str(tmp / "dlt.duckdb"), read_only=True)
            n = con.execute("SELECT COUNT(*) FROM jurnal.gl_accounts").fetchone()[0]
            con.close()
            return n

        for label, fn in (("ledger_pipeline", ours), ("dlt_rest_client", with_dlt)):
            times, rows = [], 0
            for _ in range(args.runs):
                t0 = time.perf_counter()
                rows = fn()
                times.append(time.perf_counter() - t0)
            report[label] = {"median_seconds": statistics.median(times), "all_seconds": times, "rows": rows}
            print(label, f"{statistics.median(times):.2f}s", rows, flush=True)
    report["ratio_dlt_over_ours"] = report["dlt_rest_client"]["median_seconds"] / report["ledger_pipeline"][
        "median_seconds"]
    save("gl_ingest", report)


if __name__ == "__main__":
    main()
