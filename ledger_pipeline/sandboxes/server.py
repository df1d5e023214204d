"""Run the sandbox: in the foreground (`ledger-pipeline sandbox`) or embedded on a free loopback port."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import uvicorn

from ledger_pipeline.sandboxes.jurnal import Faults, Limits, Sandbox, build_app
from ledger_pipeline.sandboxes.jurnal_state import SandboxState


class _QuietDrops(logging.Filter):
    """Injected connection drops are the sandbox working as asked, not errors worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, RuntimeError) and "shorter than Content-Length" in str(exc))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class SandboxServer:
    """A sandbox on 127.0.0.1 in a background thread; a context manager that stops it on exit."""

    def __init__(self, state_path: Path | str | None = None, host: str = "127.0.0.1", port: int = 0,
                 limits: Limits | None = None, faults: Faults | None = None, access_ttl: float = 3600):
        self.state = SandboxState(state_path)
        self.sandbox = Sandbox(self.state, limits=limits, faults=faults, access_ttl=access_ttl)
        self.app = build_app(self.sandbox)
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

    def start(self) -> SandboxServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="jurnal-sandbox")
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the Jurnal sandbox did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread:
            self.thread.join(timeout=10)
        self.sock.close()
        self.state.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(state_path: Path | None, host: str, port: int, limits: Limits, faults: Faults,
                  access_ttl: float) -> None:
    server = SandboxServer(state_path, host, port, limits, faults, access_ttl)
    print(f"Jurnal sandbox on {server.url} (API {server.api_url}); state {state_path or 'in memory'}", flush=True)
    server.server.run(sockets=[server.sock])
