"""Mekari's API gateway beside the OAuth2 partner API (shared/reference/fidelity.md row 14): HMAC-signed requests on
`/public/jurnal/api/v1`, chosen per connection, credentials encrypted in the vault; the emulator verifies signature,
body digest and Date (against its injected clock, never the wall clock)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from ledger_pipeline.posting import PostingEngine
from ledger_pipeline.sandboxes.jurnal import GATEWAY
from ledger_pipeline.settings import load_settings
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems import OpenOptions, open_connection
from ledger_pipeline.systems.jurnal.auth import PARTNER_PREFIX, Credentials, hmac_signature
from ledger_pipeline.systems.jurnal.client import JurnalError
from ledger_pipeline_tests.helpers import MemoryStore, connect, sandbox_entries, session
from ledger_pipeline_tests.test_jurnal_fidelity import TWO, WINDOW, Recorder, canonical

NOW = 1_800_000_000.0  # the instant both clocks are set to (2027-01-15T08:00:00Z)


def issue(sandbox, tenant: str) -> tuple[str, str]:  # noqa: ANN001
    """The company's HMAC credentials, as Mekari's developer dashboard issues them."""
    creds = httpx.post(f"{sandbox.url}/_sandbox/companies/{tenant}/hmac_credentials").json()
    return creds["client_id"], creds["client_secret"]


def test_signature_is_mekaris_published_example() -> None:
    # devcenter-kb docs/hmac-authentication/ruby.md: this secret, date and request line sign to this value
    date, line = "Wed, 10 Nov 2021 07:24:29 GMT", "/v2/klikpajak/v1/efaktur/out?auto_approval=false"
    expected = "6+Ah/UTmbqd+DDqlh6zYZ0HuCwVhtElYDOoucRPCaFg="
    assert hmac_signature("YOUR_MEKARI_API_CLIENT_SECRET", "POST", line, date) == expected
    headers = Credentials.hmac("https://api.mekari.com", "YOUR_MEKARI_API_CLIENT_ID",
                               "YOUR_MEKARI_API_CLIENT_SECRET").headers("POST", line, b'{"hello": "world"}',
                                                                        1636529069.0)
    assert headers["Date"] == date
    assert headers["Authorization"] == ('hmac username="YOUR_MEKARI_API_CLIENT_ID", algorithm="hmac-sha256", '
                                        f'headers="date request-line", signature="{expected}"')
    # devcenter-kb docs/authentication/hmac.md: the Digest of {"hello": "world"}
    assert headers["Digest"] == "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
    assert "Digest" not in Credentials.hmac("x", "i", "s").headers("GET", "/accounts", b"", NOW)
    assert "secret" not in repr(Credentials.hmac("x", "i", "secret"))


def test_each_connection_keeps_its_auth_mode(settings, sandbox) -> None:  # noqa: ANN001
    sandbox.sandbox.clock = lambda: NOW
    connect(["t-oauth"])
    client_id, secret = issue(sandbox, "t-hmac")
    s = load_settings()
    conn = open_connection("jurnal", s, OpenOptions(s.ops_database_url, s.rate_limit_scale, 0.01, 5))
    conn.client.clock = lambda: NOW
    rec = Recorder(conn.client.http)
    seen: list[tuple[str, str]] = []
    conn.client.http.event_hooks["request"].append(
        lambda r: seen.append((r.url.path, r.headers.get("authorization", "").split(" ")[0])))
    try:
        conn.connect_hmac("t-hmac", client_id, secret)
        assert conn.vault.auth_mode("t-hmac") == "hmac" and conn.vault.auth_mode("t-oauth") == "oauth"
        with conn.vault.engine.connect() as c:
            rows = dict(c.execute(text("SELECT tenant_id, access_token || refresh_token FROM integrations")).all())
        assert rows["t-hmac"].startswith("gAAAA") and client_id not in rows["t-hmac"] and secret not in rows["t-hmac"]
        raw = (s.data_dir / "ops.sqlite").read_bytes().decode("latin-1")
        assert secret not in raw and client_id not in raw, "never in plaintext at rest"
        for tenant in ("t-hmac", "t-oauth"):
            seen.clear()
            e = canonical(conn.session, tenant, TWO)
            out = PostingEngine(conn.sink, MemoryStore(), backoff=0, sleep=lambda x: None).post_tenant(
                tenant, [e], {}, WINDOW)
            assert out.counts == {"create": 1}, out
            assert [h["custom_id"] for h in sandbox_entries(sandbox.url, tenant)] == [e.custom_id]
            prefix, scheme = (GATEWAY, "hmac") if tenant == "t-hmac" else (PARTNER_PREFIX, "Bearer")
            assert seen and all(p.startswith(prefix) and a == scheme for p, a in seen), (tenant, seen)
        assert all(status < 300 for _, _, _, status, _ in rec.exchanges)
    finally:
        conn.close()


def test_gateway_verifies_signature_digest_and_date(settings, sandbox) -> None:  # noqa: ANN001
    sandbox.sandbox.clock = lambda: NOW
    client_id, secret = issue(sandbox, "t1")
    base = sandbox.url + GATEWAY
    good = Credentials.hmac(base, client_id, secret)
    target = f"{GATEWAY}/accounts?include_archive=true"

    def get(creds: Credentials, signed: str = target, at: float = NOW, sent: str = target) -> httpx.Response:
        return httpx.get(sandbox.url + sent, headers=creds.headers("GET", signed, b"", at))

    assert httpx.get(sandbox.url + target).json() == {"message": "Unauthorized"}
    assert get(good).status_code == 200
    assert get(good, at=NOW + 299).status_code == 200 and get(good, at=NOW - 299).status_code == 200
    for skewed in (NOW + 301, NOW - 301):
        r = get(good, at=skewed)
        assert r.status_code == 401 and "date" in r.json()["message"], "300 s of clock skew, no more"
    assert get(good, signed=f"{GATEWAY}/accounts").json() == {"message": "HMAC signature does not match"}
    assert get(Credentials.hmac(base, client_id, "wrong")).json() == {"message": "HMAC signature does not match"}
    assert get(Credentials.hmac(base, "nobody", secret)).json() == {"message": "HMAC signature cannot be verified"}
    # writes carry the body's Digest; a body changed on the way is refused
    path = f"{GATEWAY}/journal_entries"
    body = b'{"journal_entry": {}}'
    headers = {**good.headers("POST", path, body, NOW), "Content-Type": "application/json"}
    assert httpx.post(sandbox.url + path, content=body, headers=headers).status_code == 422, "authorised"
    tampered = httpx.post(sandbox.url + path, content=b'{"journal_entry": {"x": 1}}', headers=headers)
    assert tampered.status_code == 401 and tampered.json() == {"message": "HMAC signature does not match"}
    no_digest = {k: v for k, v in headers.items() if k != "Digest"}
    assert httpx.post(sandbox.url + path, content=body, headers=no_digest).status_code == 401
    httpx.post(f"{sandbox.url}/_sandbox/companies/t1/revoke")
    assert get(good).json() == {"message": "HMAC signature cannot be verified"}


def test_client_names_clock_skew_and_refused_credentials(settings, sandbox) -> None:  # noqa: ANN001
    sandbox.sandbox.clock = lambda: NOW
    client_id, secret = issue(sandbox, "t1")
    sess = session()
    try:
        sess.vault.store_hmac("t1", client_id, secret)
        sess.client.clock = lambda: NOW + 290
        assert len(sess.client.accounts("t1")) >= 30
        sess.client.clock = lambda: NOW + 400
        with pytest.raises(JurnalError, match="clock") as err:
            sess.client.accounts("t1")
        assert err.value.kind == "retryable" and sess.vault.statuses()["t1"][0] == "connected"
        sess.client.clock = lambda: NOW
        sess.vault.store_hmac("t1", client_id, "not-the-secret")
        with pytest.raises(JurnalError, match="HMAC") as refused:
            sess.client.accounts("t1")
        assert refused.value.kind == "needs_reauth" and isinstance(refused.value.__cause__, NeedsReauth)
        assert sess.vault.statuses()["t1"][0] == "needs_reauth"
        sess.vault.store_hmac("t1", client_id, secret)  # new credentials stored: connected again
        assert sess.client.get_entry("t1", "r2a-pl-t1-202501") is None
    finally:
        sess.close()


def test_cli_connects_a_tenant_through_the_gateway(settings, sandbox) -> None:  # noqa: ANN001
    """`connect --system jurnal --hmac-client-id ID --hmac-secret-file -`: the secret from stdin, stored encrypted,
    proven with a chart read through the gateway; a wrong secret is refused naming the tenant and the fix."""
    import os
    import subprocess
    import sys

    client_id, secret = issue(sandbox, "t-cli")
    cli = [sys.executable, "-m", "ledger_pipeline.cli", "connect", "--tenant", "t-cli", "--system", "jurnal",
           "--hmac-client-id", client_id, "--hmac-secret-file", "-"]
    out = subprocess.run(cli, input="wrong-secret\n", env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "tenant t-cli" in out.stderr and "developer dashboard" in out.stderr, out.stderr
    out = subprocess.run(cli, input=secret + "\n", env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Mekari API gateway" in out.stdout, out.stdout + out.stderr
    assert secret not in out.stdout + out.stderr
    s = load_settings()
    conn = open_connection("jurnal", s, OpenOptions(s.ops_database_url, s.rate_limit_scale))
    try:
        assert conn.vault.auth_mode("t-cli") == "hmac"
    finally:
        conn.close()
