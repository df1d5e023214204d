"""Requests per second the Jurnal sandbox serves on loopback (limits off): reads and writes, 1 and 4 clients.

    .venv/bin/python bench/sandbox_throughput.py --requests 2000
    .venv/bin/python bench/sandbox_throughput.py --smoke     # 40 requests, for CI
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import save

from ledger_pipeline.sandboxes.jurnal import API, SandboxLimits
from ledger_pipeline.sandboxes.server import SandboxServer
from ledger_pipeline.settings import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET


def token(url: str, login: str) -> str:
    http = httpx.Client(base_url=url)
    r = http.get("/auth", params={"client_id": SANDBOX_CLIENT_ID, "response_type": "code", "login_hint": login,
                                  "redirect_uri": "http://127.0.0.1:9/cb", "state": "s"})
    code = httpx.URL(r.headers["location"]).params["code"]
    return http.post("/auth/oauth2/token", json={"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET,
                                                  "grant_type": "authorization_code", "code": code}).json()[
        "access_token"]


def run(url: str, clients: int, per_client: int, kind: str) -> float:
    def work(n: int) -> None:
        access = token(url, f"bench-{kind}-{clients}-{n}")
        http = httpx.Client(base_url=url + API, headers={"Authorization": f"Bearer {access}"})
        acc = {a["number"]: a["id"] for a in http.get("/accounts").json()["accounts"]}
        for i in range(per_client):
            if kind == "read":
                http.get("/accounts")
            else:
                body = {"journal_entry": {"transaction_date": "31-01-2025", "custom_id": f"b{n}-{i}",
                                          "transaction_account_lines_attributes": [
                                              {"account_id": acc["3-30100"], "debit": "100.00"},
                                              {"account_id": acc["4-40000"], "credit": "100.00"}]}}
                assert http.post("/journal_entries", json=body).status_code == 201
    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.requests = 40
    report: dict = {"requests": args.requests}
    tmp = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    with SandboxServer(tmp / "sb.sqlite", limits=SandboxLimits(enabled=False)) as server:
        for kind in ("read", "write"):
            for clients in (1, 4):
                rps = run(server.url, clients, args.requests // clients, kind)
                report[f"{kind}_{clients}_clients_rps"] = round(rps)
                print(kind, clients, round(rps), flush=True)
    report["target"] = "a few hundred requests per second"
    shutil.rmtree(tmp, ignore_errors=True)
    save("sandbox_throughput_smoke" if args.smoke else "sandbox_throughput", report)


if __name__ == "__main__":
    main()
