"""Jurnal connection: OAuth flow, state, token rotation and revocation, rate-limit compliance, retries, GL accounts,
and no token in plaintext anywhere."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import httpx
import pytest
from sqlalchemy import text, update

from ledger_pipeline.ratelimit import HostLimiter
from ledger_pipeline.sandboxes.base import SandboxLimits
from ledger_pipeline.state.models import Integration, OAuthState
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems.authflow import OAuthError, complete, new_state
from ledger_pipeline.systems.jurnal.client import JurnalError, jurnal_rules
from ledger_pipeline.testing.systems import sandbox_server
from ledger_pipeline_tests.helpers import connect, materialize_gl, query, sandbox_stats, session


def test_oauth_flow_stores_encrypted_tokens(settings, sandbox) -> None:  # noqa: ANN001
    connect(["t1"])
    sess = session()
    try:
        assert sess.vault.connected_tenants() == ["t1"]
        assert len(sess.client.accounts("t1")) >= 30
        with sess.vault.engine.connect() as conn:
            row = conn.execute(text("SELECT access_token, refresh_token, company_id FROM integrations")).one()
        assert row.access_token.startswith("gAAAA") and row.company_id, "Fernet ciphertext at rest"
    finally:
        sess.close()


def test_replayed_and_expired_state_refused(settings, sandbox) -> None:  # noqa: ANN001
    sess = session()
    try:
        engine, http = sess.vault.engine, sess.oauth.http
        state = new_state(engine, "t1", "http://127.0.0.1:9/cb")
        auth = http.get(sess.oauth.authorize_url("http://127.0.0.1:9/cb", state, "t1"))
        code = httpx.URL(auth.headers["location"]).params["code"]
        assert complete(engine, sess.vault, sess.oauth, state, code) == "t1"
        with pytest.raises(OAuthError, match="already used"):
            complete(engine, sess.vault, sess.oauth, state, code)
        old = new_state(engine, "t2", "http://127.0.0.1:9/cb")
        with engine.begin() as conn:
            conn.execute(update(OAuthState).where(OAuthState.state == old).values(
                expires_at=dt.datetime(2000, 1, 1)))
        with pytest.raises(OAuthError, match="expired"):
            complete(engine, sess.vault, sess.oauth, old, "whatever")
        assert "t2" not in sess.vault.connected_tenants()
    finally:
        sess.close()


def test_token_rotation_under_concurrent_use(settings, tmp_path) -> None:  # noqa: ANN001
    with sandbox_server(tmp_path / "sb.sqlite", limits=SandboxLimits(enabled=False), access_ttl=1) as (server, _box):
        connect(["t1"])
        errors: list[Exception] = []

        def worker() -> None:
            sess = session()
            try:
                for _ in range(12):
                    sess.client.accounts("t1")
                    threading.Event().wait(0.1)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                sess.close()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], "no refresh token lost: every worker kept working across expiries"
        refreshes = [r for r in sandbox_stats(server.url)["requests"] if r["status"] == "refresh_token"]
        assert refreshes and refreshes[0]["count"] >= 1
        sess = session()
        assert sess.vault.connected_tenants() == ["t1"]
        sess.close()


def test_revoked_grant_is_skipped_by_the_chart_refresh(settings, sandbox) -> None:  # noqa: ANN001
    """The chart job's view of a revoked grant (posting's is in test_contract.py)."""
    connect(["t1", "t2"])
    httpx.post(f"{sandbox.url}/_sandbox/companies/t2/revoke")
    sess = session()
    try:
        with pytest.raises(JurnalError, match="connect --tenant t2") as err:
            sess.client.accounts("t2")
        assert isinstance(err.value.__cause__, NeedsReauth), "the vault's refusal, recorded"
    finally:
        sess.close()
    materialize_gl()
    status = dict(query(settings, "SELECT tenant_id, status FROM jurnal.gl_ingest_status"))
    assert status == {"t1": "ok", "t2": "needs_reauth"}


def test_reads_retry_through_5xx_and_drops(settings, sandbox) -> None:  # noqa: ANN001
    connect(["t1"])
    httpx.post(f"{sandbox.url}/_sandbox/faults", json={"seed": 3, "error_rate": 0.3, "drop_before_rate": 0.1})
    sess = session()
    try:
        for _ in range(20):
            assert len(sess.client.accounts("t1")) >= 30
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={"error_rate": 1.0})
        with pytest.raises(JurnalError) as err:
            sess.client.accounts("t1")
        assert err.value.kind == "retryable" and err.value.status in (500, 502, 503)
    finally:
        sess.close()


def test_limiter_keeps_under_the_limits(tmp_path) -> None:  # noqa: ANN001
    now = [0.0]  # a simulated clock: sleeping advances it
    host = HostLimiter(tmp_path / "rl.sqlite", sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    stamps = []
    for i in range(200):
        host.acquire(jurnal_rules(f"tenant-{i % 2}", scale=1.0))
        stamps.append(now[0])
    for i, t in enumerate(stamps):
        in_minute = sum(1 for u in stamps[: i + 1] if u > t - 60)
        assert in_minute <= 38, "per-IP 40/min with headroom"
        per_token = sum(1 for j, u in enumerate(stamps[: i + 1]) if u > t - 60 and j % 2 == i % 2)
        assert per_token <= 28, "per-token 30/min with headroom"
    assert stamps[-1] <= 200 / 38 * 60 + 60, "and close to the allowed rate"


def test_gl_ingestion_200_tenants_without_429_and_equal_to_sandbox(settings, tmp_path) -> None:  # noqa: ANN001
    with sandbox_server(tmp_path / "sb.sqlite", scale=100) as (server, _box):
        tenants = [f"t{i:03d}" for i in range(200)]
        connect(tenants)
        httpx.post(f"{server.url}/_sandbox/companies/t005/accounts", json={"number": "6-69999", "name": "Baru"})
        result = materialize_gl()
        stats = sandbox_stats(server.url)
        assert stats["rate_limited"] == 0, "no 429 at the scaled limits"
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        # one chart read per tenant, plus the company's home currency read once (never read before: connect() here
        # is the tests' direct vault fill, not the CLI flow that reads it)
        assert meta["tenants_fetched"].value == 200 and meta["api_requests"].value == 400
        count = query(settings, "SELECT COUNT(*) FROM jurnal.gl_accounts")[0][0]
        sess = session()
        try:
            expected = {(t, a["id"], a["number"], a["name"]) for t in ("t000", "t005") for a in
                        sess.client.accounts(t)}
        finally:
            sess.close()
        got = set(query(settings, "SELECT tenant_id, account_id, number, name FROM jurnal.gl_accounts "
                                  "WHERE tenant_id IN ('t000', 't005')"))
        assert got == expected and count >= 200 * 30
        # a later run records what changed
        httpx.post(f"{server.url}/_sandbox/companies/t005/accounts", json={"number": "6-69999", "archived": True})
        httpx.post(f"{server.url}/_sandbox/companies/t005/accounts", json={"number": "6-60101", "name": "Gaji Staf"})
        again = materialize_gl().get_asset_materialization_events()[0].materialization.metadata
        assert again["api_requests"].value == 200, "the currency is re-read weekly, not on every refresh"
        changes = set(query(settings, "SELECT tenant_id, change, number FROM jurnal.gl_account_changes"))
        assert ("t005", "archived", "6-69999") in changes and ("t005", "renamed", "6-60101") in changes


def test_no_token_in_plaintext_anywhere(settings, sandbox, caplog) -> None:  # noqa: ANN001
    caplog.set_level(logging.DEBUG)
    instance_dir = settings.dagster_home
    connect(["t1"])
    import dagster as dg

    from ledger_pipeline.definitions import ASSETS
    from ledger_pipeline_tests.helpers import resources

    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME: the test's own folder
        dg.materialize(ASSETS, selection=["gl_accounts"], resources=resources(settings), instance=instance)
    sess = session()
    try:
        with sess.vault.engine.connect() as conn:
            row = conn.execute(text("SELECT access_token, refresh_token FROM integrations")).one()
        access = sess.vault._dec(row.access_token, "t1")
        refresh = sess.vault._dec(row.refresh_token, "t1")
    finally:
        sess.close()
    haystacks = {"logs": caplog.text}
    for path in [*settings.data_dir.rglob("*"), *instance_dir.rglob("*")]:
        if path.is_file() and "sandbox" not in path.name:  # the sandbox is Jurnal's side
            haystacks[str(path)] = path.read_bytes().decode("latin-1")
    for where, text_ in haystacks.items():
        assert access not in text_ and refresh not in text_, f"a token leaked into {where}"
    assert any("ops.sqlite" in k for k in haystacks) and any(k.endswith(".duckdb") for k in haystacks)
    assert any("storage" in k for k in haystacks), "Dagster's event storage was searched"
    assert Integration.__tablename__ == "integrations"
