"""Running the service: `serve()` in the foreground (`ledger-pipeline serve`), `ServiceServer` in a background thread
(tests, demos). Both use one uvicorn configuration: no access log (ours, in app.py, leaves out query strings), no
Server header, and X-Forwarded-For/-Proto honoured only from LEDGER_TRUSTED_PROXIES (uvicorn's proxy headers
middleware; without trusted proxies it is off, so a client cannot claim another address)."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable

import uvicorn

from ledger_pipeline.service.app import create_app
from ledger_pipeline.service.config import ServiceConfig
from ledger_pipeline.settings import Settings


def uvicorn_config(app: object, config: ServiceConfig, host: str, port: int, **extra: object) -> uvicorn.Config:
    trusted = config.trusted_proxies
    return uvicorn.Config(app, host=host, port=port, proxy_headers=bool(trusted),
                          forwarded_allow_ips=trusted or None, access_log=False, server_header=False,
                          timeout_keep_alive=5, limit_concurrency=200, **extra)  # type: ignore[arg-type]


def serve(settings: Settings, config: ServiceConfig, host: str, port: int) -> None:
    """The service in the foreground until interrupted. httpx's request lines (full URLs) stay out of its log."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(uvicorn_config(create_app(settings, config), config, host, port, log_level="info")).run()


class ServiceServer:
    """The service on `host` (a free port by default) in a background thread; a context manager. A config without
    public_url gets this server's own URL."""

    def __init__(self, settings: Settings, config: ServiceConfig, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.time):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        if not config.public_url:  # this server's own address (tests, one machine)
            config = dataclasses.replace(config, public_url=self.url)
        self.config = config
        self.app = create_app(settings, config, clock)
        self.server = uvicorn.Server(uvicorn_config(self.app, config, host, self.port, log_level="warning",
                                                    timeout_graceful_shutdown=1))
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServiceServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="connection-service")
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the connection service did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread:
            self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
