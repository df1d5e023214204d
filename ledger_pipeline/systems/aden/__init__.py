"""Aden (general ledger with an approval workflow): a JWT per company from the tenant's Aden administrator, our key as
the client-chosen `entry_id`, `X-Idempotency-Key` on every write, Draft -> approval -> Posted, reversals for posted
entries, accounting periods cached across runs. Sources: docs.adenhq.com (see sink.py and sandboxes/aden.py).

Configuration: ADEN_API_BASE_URL (default: the local sandbox's `/aden/service/general-ledger`; production
https://kube.acho.io/service/general-ledger). Connecting a tenant stores its JWT encrypted in the vault:
`ledger-pipeline connect --tenant T --system aden --token-file FILE` (`-` reads stdin). Against the sandbox,
`connect --auto-approve` / `--all` has the sandbox's administrator issue the JWT (`POST
/_sandbox/aden/companies/<login>/jwt`), since no browser flow exists.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger_pipeline.ledger.sink import SinkError
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.database import make_ops_engine
from ledger_pipeline.state.vault import NeedsReauth, TokenVault, load_key
from ledger_pipeline.systems import ChartAccount, OpenOptions
from ledger_pipeline.systems.aden.auth import AdenAuth, AdenTokenError
from ledger_pipeline.systems.aden.cache import AdenCache
from ledger_pipeline.systems.aden.client import AdenClient, AdenDialect, AdenError
from ledger_pipeline.systems.aden.sink import AdenSink, classify
from ledger_pipeline.systems.core import open_core
from ledger_pipeline.systems.http import http_client

SYSTEM = "aden"


def _defaults(settings: Settings) -> tuple[str, str | None]:
    """(API base URL, the sandbox's URL when the API is the sandbox's, else None)."""
    from ledger_pipeline.sandboxes.aden import API

    base = settings.sandbox_url
    api = settings.system_env(SYSTEM, "API_BASE_URL", f"{base}{API}")
    return api, (base if base and api.startswith(base.rstrip("/") + "/") else None)


class AdenConnection:
    system = SYSTEM

    def __init__(self, settings: Settings, options: OpenOptions):
        api, sandbox = _defaults(settings)
        self.vault = TokenVault(make_ops_engine(options.database_url), load_key(settings), settings.lock_dir,
                                system=SYSTEM)
        self._auth_http = http_client(settings.source_address, options.timeout)
        self.auth = AdenAuth(api, self._auth_http, sandbox)
        self.cache = AdenCache(self.vault.engine)

        def access_token(tenant_id: str, refused: str | None) -> str:
            return self.vault.access_token(tenant_id, lambda token: self.auth.check(tenant_id, token), refused)

        self.client = AdenClient(open_core(AdenDialect(api, access_token, options.rate_limit_scale), settings,
                                           timeout=options.timeout, backoff_initial=options.backoff_initial,
                                           priority=options.priority))
        self.sink = AdenSink(self.client, self.cache)

    @property
    def requests(self) -> int:
        return self.client.requests

    def fetch_chart(self, tenant_id: str) -> list[ChartAccount]:
        try:
            rows = self.client.pages(tenant_id, "/accounts")
        except (AdenError, NeedsReauth) as exc:
            raise classify(exc) from exc
        return [ChartAccount(str(a["account_id"]), str(a.get("account_number") or ""), a["account_name"],
                             a.get("account_type"),
                             None if a.get("parent_account_id") is None else str(a["parent_account_id"]),
                             bool(a.get("is_inactive"))) for a in rows]

    def connect_with_token(self, tenant_id: str, token: str) -> None:
        """Store the tenant's JWT (encrypted) and prove it: one `GET /accounting-periods` sweep, which also fills the
        period cache. Raises AdenTokenError (malformed, expired, or refused by Aden: the tenant is then marked
        needs_reauth)."""
        self.vault.store(tenant_id, self.auth.token_set(tenant_id, token))
        self.cache.forget(tenant_id)
        try:
            self.sink.refresh_periods(tenant_id)
        except SinkError as err:
            raise AdenTokenError(f"tenant {tenant_id}: the JWT was stored but Aden did not accept it: {err}") from err

    def connect_tenant(self, tenant_id: str, open_url: Callable[[str], None]) -> None:
        """Aden has no authorisation flow: against the sandbox its administrator issues the JWT; elsewhere use
        `connect --token-file` (AdenTokenError says so)."""
        self.connect_with_token(tenant_id, self.auth.sandbox_issue(tenant_id))

    def close(self) -> None:
        self.client.close()
        self._auth_http.close()


def open_connection(settings: Settings, options: OpenOptions) -> AdenConnection:
    return AdenConnection(settings, options)


__all__ = ["AdenConnection", "AdenTokenError", "SinkError", "open_connection"]
