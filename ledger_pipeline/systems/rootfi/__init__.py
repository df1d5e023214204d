"""Rootfi (unified accounting API): one `api_key` for the account, a `company_id` per tenant from Rootfi Link,
writes as asynchronous upload jobs (a status per item), no idempotency key (`document_number` is our id), reads
with take/skip. Limits emulated: 600 req/min per API key, 60 req/min per company.

Environment: ROOTFI_API_KEY, ROOTFI_API_BASE_URL (default `<sandbox>/rootfi`; production https://api.rootfi.dev),
ROOTFI_LINK_URL (default `<sandbox>/rootfi/link`), ROOTFI_POLL_BUDGET_SECONDS (how long a create waits for its
upload job before handing it to the next run; default 30 s divided by the rate-limit scale).
"""

from __future__ import annotations

from collections.abc import Callable

from ledger_pipeline.ledger.sink import SinkError
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import NeedsReauth, TokenVault, load_key
from ledger_pipeline.systems import ChartAccount, OpenOptions
from ledger_pipeline.systems.core import open_core
from ledger_pipeline.systems.rootfi.auth import RootfiLink, connect_tenant
from ledger_pipeline.systems.rootfi.client import RootfiClient, RootfiDialect, RootfiError
from ledger_pipeline.systems.rootfi.sink import RootfiSink, classify

SYSTEM = "rootfi"


class RootfiConnection:
    system = SYSTEM

    def __init__(self, settings: Settings, options: OpenOptions):
        from ledger_pipeline.sandboxes.rootfi import SANDBOX_API_KEY  # the sandbox's public key: a default only

        sandbox = settings.sandbox_url or "http://127.0.0.1:8765"
        self.engine = make_ops_engine(options.database_url)
        self.vault = TokenVault(self.engine, load_key(settings), settings.lock_dir, system=SYSTEM)
        self.link = RootfiLink(settings.system_env(SYSTEM, "LINK_URL", sandbox + "/rootfi/link"))
        scale = options.rate_limit_scale or 1.0
        dialect = RootfiDialect(settings.system_env(SYSTEM, "API_BASE_URL", sandbox + "/rootfi"),
                                settings.system_env(SYSTEM, "API_KEY", SANDBOX_API_KEY), self._company_of, scale,
                                on_unlinked=self.vault.mark_needs_reauth)
        self.client = RootfiClient(open_core(dialect, settings, timeout=options.timeout,
                                             backoff_initial=options.backoff_initial, priority=options.priority))
        budget = float(settings.system_env(SYSTEM, "POLL_BUDGET_SECONDS", str(30.0 / scale)))
        self.sink = RootfiSink(self.client, poll_budget=budget, poll_initial=min(0.5, max(budget / 20, 0.01)),
                               poll_max=max(budget / 3, 0.05))

    def _company_of(self, tenant_id: str) -> str:
        company_id, _ = self.vault.details(tenant_id)  # NeedsReauth when not linked (or marked needs_reauth)
        if not company_id:
            raise NeedsReauth(tenant_id, "no Rootfi company_id stored", SYSTEM)
        return company_id

    @property
    def requests(self) -> int:
        return self.client.requests

    def fetch_chart(self, tenant_id: str) -> list[ChartAccount]:
        try:
            accounts = self.client.accounts(tenant_id)
        except (RootfiError, NeedsReauth) as exc:
            raise classify(exc) from exc
        return [ChartAccount(str(a["platform_id"]), a.get("nominal_code") or "", a["name"], a.get("category"),
                             None if a.get("parent_account_id") is None else str(a["parent_account_id"]),
                             str(a.get("status", "ACTIVE")).upper() != "ACTIVE") for a in accounts]

    def connect_tenant(self, tenant_id: str, open_url: Callable[[str], None]) -> None:
        connect_tenant(self.engine, self.vault, self.link, tenant_id, open_url)

    def close(self) -> None:
        self.client.close()


def open_connection(settings: Settings, options: OpenOptions) -> RootfiConnection:
    return RootfiConnection(settings, options)


__all__ = ["RootfiConnection", "SinkError", "open_connection"]
