"""GL-accounts ingestion for N tenants x ~150 accounts from the sandbox (limits off): our asset beside dlt's REST
client loading the same into DuckDB (one dlt run, one resource yielding every tenant's chart), side by side, run in
turn (ours, dlt, ours, dlt, ...) so a drift in the shared machine's speed hits both.

    .venv/bin/pip install 'dlt[duckdb]'      # bench only (make bench does it)
    .venv/bin/python bench/gl_ingest.py --tenants 1000 --runs 3
    .venv/bin/python bench/gl_ingest.py --smoke   # 5 tenants, 1 run (dlt skipped when not installed)
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

from common import save

from ledger_pipeline import clock


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--accounts", type=int, default=150)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="5 tenants, 1 run: seconds, for CI")
    args = ap.parse_args()
    if args.smoke:
        args.tenants, args.runs = 5, 1
    have_dlt = importlib.util.find_spec("dlt") is not None
    if not have_dlt and not args.smoke:
        raise SystemExit("dlt is not installed: `.venv/bin/pip install -e '.[bench]'` (make bench does it)")

    from ledger_pipeline.testing import connect, materialize_gl, private_env, tenant_ids

    with private_env(first_month=clock.add_months(clock.current_month(), -1), rate_limit_scale=1_000_000) as env:
        report = run(env.root, args, tenant_ids(args.tenants), connect, materialize_gl, have_dlt)
    save("gl_ingest_smoke" if args.smoke else "gl_ingest", report)


def run(tmp, args, tenants, connect, materialize_gl, have_dlt: bool) -> dict:  # noqa: ANN001, PLR0913
    import os

    from ledger_pipeline.sandboxes.base import SandboxLimits
    from ledger_pipeline.sandboxes.jurnal_state import SandboxState
    from ledger_pipeline.sandboxes.server import SandboxServer
    from ledger_pipeline.settings import load_settings
    from ledger_pipeline.systems.jurnal.session import open_session

    state = SandboxState(tmp / "sandbox.sqlite")
    for t in tenants:  # Jurnal's default chart plus extra accounts: ~150 per company
        cid = state.company_for_login(t)
        state.db.executemany(
            "INSERT INTO accounts (company_id, number, name, category, category_id) VALUES (?, ?, ?, ?, ?)",
            [(cid, f"6-7{k:04d}", f"Beban Operasional {k}", "Beban", 17) for k in range(args.accounts - 38)])
    state.close()
    report: dict = {"tenants": args.tenants, "accounts_per_tenant": args.accounts, "runs": args.runs}
    with SandboxServer(tmp / "sandbox.sqlite", limits=SandboxLimits(enabled=False)) as server:
        os.environ.update(server.env())
        connect(tenants)
        sess = open_session(load_settings(), backoff_initial=0.01, timeout=5)
        tokens = {t: sess.vault.access_token(t, lambda rt: sess.oauth.refresh("x", rt)) for t in tenants}
        sess.close()

        def ours() -> int:
            result = materialize_gl()
            return result.get_asset_materialization_events()[0].materialization.metadata[
                "dagster/row_count"].value

        def with_dlt() -> int:
            import dlt
            import duckdb
            from dlt.sources.helpers.rest_client import RESTClient
            from dlt.sources.helpers.rest_client.auth import BearerTokenAuth

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

        contenders = {"ledger_pipeline": ours, **({"dlt_rest_client": with_dlt} if have_dlt else {})}
        times: dict[str, list[float]] = {k: [] for k in contenders}
        rows: dict[str, int] = {}
        for _ in range(args.runs):  # in turn: a drift in the machine's speed hits both
            for label, fn in contenders.items():
                t0 = time.perf_counter()
                rows[label] = fn()
                times[label].append(round(time.perf_counter() - t0, 3))
        for label in contenders:
            report[label] = {"median_seconds": statistics.median(times[label]), "all_seconds": times[label],
                             "rows": rows[label]}
            print(label, f"{statistics.median(times[label]):.2f}s", rows[label], flush=True)
    if have_dlt:
        ratios = [d / o for o, d in zip(times["ledger_pipeline"], times["dlt_rest_client"], strict=True)]
        report["ratio_dlt_over_ours"] = statistics.median(ratios)
        report["ratio_dlt_over_ours_each_pair"] = [round(r, 2) for r in ratios]
    else:
        report["dlt_rest_client"] = "skipped: dlt is not installed (the bench extra)"
    return report


if __name__ == "__main__":
    main()
