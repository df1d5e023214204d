"""The sandbox server: every emulated system on one port, each under its own path prefix, and `/_sandbox`
inspection (loopback only). Run in the foreground (`ledger-pipeline sandbox`) or embedded on a free loopback port."""

from __future__ import annotations

import importlib
import ipaddress
import json
import logging
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger_pipeline.money import dumps_exact
from ledger_pipeline.sandboxes.base import Emulator, Faults, SandboxContext, SandboxLimits
from ledger_pipeline.sandboxes.jurnal import Sandbox
from ledger_pipeline.sandboxes.jurnal_state import SandboxState
from ledger_pipeline.systems import SYSTEMS


class _QuietDrops(logging.Filter):
    """Injected connection drops are the sandbox working as asked, not errors worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, RuntimeError) and "shorter than Content-Length" in str(exc))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def build_emulators(ctx: SandboxContext) -> dict[str, Emulator]:
    """Jurnal (its own state file, kept from 0.1.0) plus every other system's `sandboxes/<name>.py` `make(ctx)`."""
    jurnal_state = SandboxState(ctx.state_path)
    emulators: dict[str, Emulator] = {"jurnal": Sandbox(jurnal_state, ctx)}
    for name in SYSTEMS:
        if name == "jurnal":
            continue
        try:
            module = importlib.import_module(f"ledger_pipeline.sandboxes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ledger_pipeline.sandboxes.{name}":
                raise
            continue
        emulators[name] = module.make(ctx)
    return emulators


class Inspector:
    """/_sandbox: entries of every system, stats, faults, limits, and per-company controls."""

    def __init__(self, ctx: SandboxContext, emulators: dict[str, Emulator]):
        self.ctx, self.emulators = ctx, emulators

    async def handle(self, request: Request) -> Response:
        try:
            if not ipaddress.ip_address(request.client.host if request.client else "").is_loopback:
                return JSONResponse({"error": "loopback only"}, status_code=403)
        except ValueError:
            return JSONResponse({"error": "loopback only"}, status_code=403)
        parts = [p for p in request.url.path.removeprefix("/_sandbox").split("/") if p]
        method = request.method
        body = json.loads(await request.body() or b"{}") if method == "POST" else {}
        q = request.query_params
        if parts == ["journal_entries"]:
            entries = []
            for name, emu in self.emulators.items():
                if q.get("system") in (None, name):
                    entries += emu.inspect_entries(q.get("login"))
            return Response(dumps_exact({"journal_entries": entries, "total_count": len(entries)}),
                            media_type="application/json")
        if parts == ["stats"]:
            return JSONResponse(self.stats())
        if parts == ["stats", "reset"] and method == "POST":
            self.ctx.reset_stats()
            return JSONResponse({"ok": True})
        if parts == ["faults"]:
            if method == "POST":
                self.ctx.set_faults(Faults(**body))
            return JSONResponse(asdict(self.ctx.faults))
        if parts == ["limits"] and method == "POST":
            for k, v in body.items():
                setattr(self.ctx.limits, k, v)
            return JSONResponse(asdict(self.ctx.limits))
        # /_sandbox/companies/<login>/<action> (Jurnal, as in 0.1.0) or /_sandbox/<system>/companies/<login>/<action>
        if parts and parts[0] in self.emulators:
            system, parts = parts[0], parts[1:]
        else:
            system = "jurnal"
        if len(parts) == 3 and parts[0] == "companies" and method == "POST":
            try:
                result = await self.emulators[system].control(parts[1], parts[2], body)
            except KeyError:
                return JSONResponse({"error": "no such company"}, status_code=404)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if result is None:
                return JSONResponse({"error": "unknown action"}, status_code=404)
            return Response(dumps_exact(result), media_type="application/json")
        return JSONResponse({"error": "Not Found"}, status_code=404)

    def stats(self) -> dict:
        """Requests by system, endpoint and status; api_* totals over every system's API (auth excluded). A write
        is what its emulator calls one (`Emulator.is_write`): QuickBooks' POST /query and Rootfi's POST .../all are
        reads."""
        rows = [{"system": s, "method": m, "endpoint": e, "status": st, "count": n}
                for (s, m, e, st), n in sorted(self.ctx.stats.items(), key=str)]
        writes = self.ctx.write_routes

        def totals(api: list[dict]) -> dict:
            return {"api_requests": sum(r["count"] for r in api),
                    "api_writes": sum(r["count"] for r in api
                                      if (r["system"], r["method"], r["endpoint"]) in writes),
                    "rate_limited": sum(r["count"] for r in api if r["status"] == 429)}

        api = [r for r in rows if not _is_auth(r["endpoint"])]
        by_system = {name: totals([r for r in api if r["system"] == name]) for name in self.emulators}
        return {"requests": rows, **totals(api), "by_system": by_system, "by_address": self.by_address()}

    def by_address(self) -> dict:
        """API requests per client address: totals, 429s, and per company login (system-qualified when not Jurnal)."""
        out: dict[str, dict] = {}
        for (system, address, login, status), n in sorted(self.ctx.by_address.items(), key=str):
            a = out.setdefault(address, {"api_requests": 0, "rate_limited": 0, "companies": {}})
            a["api_requests"] += n
            a["rate_limited"] += n if status == 429 else 0
            key = login if system == "jurnal" else f"{system}:{login}"
            a["companies"][key] = a["companies"].get(key, 0) + n
        return out


def _is_auth(endpoint: str) -> bool:
    return "/auth" in endpoint or "/oauth" in endpoint or "/token" in endpoint


def build_app(ctx: SandboxContext, emulators: dict[str, Emulator]) -> Starlette:
    routes = [r for emu in emulators.values() for r in emu.routes()]
    routes.append(Route("/_sandbox/{path:path}", Inspector(ctx, emulators).handle, methods=["GET", "POST"]))
    app = Starlette(routes=routes)
    app.state.emulators = emulators
    return app


class SandboxServer:
    """Every emulated system on 127.0.0.1 in a background thread; a context manager that stops it on exit."""

    def __init__(self, state_path: Path | str | None = None, host: str = "127.0.0.1", port: int = 0,
                 limits: SandboxLimits | None = None, faults: Faults | None = None, access_ttl: float = 3600):
        self.ctx = SandboxContext(state_path, limits, faults, access_ttl)
        self.emulators = build_emulators(self.ctx)
        self.sandbox = self.emulators["jurnal"]  # 0.1.0's handle on the Jurnal emulation
        self.state = self.sandbox.state
        self.app = build_app(self.ctx, self.emulators)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/partner/core/api/v1"

    def env(self) -> dict[str, str]:
        """The environment that points every system's client at this sandbox."""
        return {"LEDGER_SANDBOX_URL": self.url, "JURNAL_API_BASE_URL": self.api_url,
                "JURNAL_OAUTH_BASE_URL": self.url}

    def start(self) -> SandboxServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="accounting-sandbox")
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread:
            self.thread.join(timeout=10)
        self.sock.close()
        for emu in self.emulators.values():
            emu.close()
        self.ctx.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(state_path: Path | None, host: str, port: int, limits: SandboxLimits, faults: Faults,
                  access_ttl: float) -> None:
    server = SandboxServer(state_path, host, port, limits, faults, access_ttl)
    systems = ", ".join(f"{n} {SYSTEMS[n].sandbox_prefix or '/'}" for n in server.emulators)
    print(f"accounting sandbox on {server.url} ({systems}); Jurnal API {server.api_url}; "
          f"state {state_path or 'in memory'}", flush=True)
    server.server.run(sockets=[server.sock])
