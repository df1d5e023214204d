"""Jurnal.id (Mekari): OAuth2 with single-use rotating refresh tokens (partner API) or HMAC-signed requests
(Mekari's API gateway), chosen per connection; custom_id as the idempotency key, batch_create of up to 100 entries,
30 req/min per token and 40 req/min per source address."""

from __future__ import annotations

from collections.abc import Callable

from ledger_pipeline.ledger.sink import SinkError
from ledger_pipeline.settings import Settings
from ledger_pipeline.state.vault import NeedsReauth
from ledger_pipeline.systems import ChartAccount, OpenOptions
from ledger_pipeline.systems.authflow import connect_tenant
from ledger_pipeline.systems.jurnal.client import JurnalError
from ledger_pipeline.systems.jurnal.session import open_session
from ledger_pipeline.systems.jurnal.sink import JurnalSink, classify, named


class JurnalConnection:
    system = "jurnal"

    def __init__(self, settings: Settings, options: OpenOptions):
        self.session = open_session(settings, database_url=options.database_url,
                                    rate_limit_scale=options.rate_limit_scale,
                                    backoff_initial=options.backoff_initial, timeout=options.timeout)
        self.client = self.session.client
        if hasattr(self.client, "priority"):
            self.client.priority = options.priority
        self.vault = self.session.vault
        self.sink = JurnalSink(self.client)

    @property
    def requests(self) -> int:
        return self.client.requests

    def fetch_chart(self, tenant_id: str) -> list[ChartAccount]:
        try:
            accounts = self.client.accounts(tenant_id, include_archive=True)
        except (JurnalError, NeedsReauth) as exc:
            raise classify(exc) from exc
        # `category` is a name in the accounts list and an object {id, name} on entry lines (Mekari's Swagger)
        return [ChartAccount(str(a["id"]), a.get("number") or "", a["name"], named(a.get("category")),
                             None if a.get("parent_id") is None else str(a["parent_id"]),
                             bool(a.get("archive", a.get("archived", False)))) for a in accounts]

    def connect_tenant(self, tenant_id: str, open_url: Callable[[str], None]) -> None:
        connect_tenant(self.vault.engine, self.vault, self.session.oauth, tenant_id, open_url)

    def connect_hmac(self, tenant_id: str, client_id: str, client_secret: str) -> None:
        """Connect a tenant through Mekari's API gateway with its company's HMAC credentials (from Mekari's developer
        dashboard; one pair per company and product): stored encrypted, then proven with one chart read. Raises
        SinkError (needs_reauth when Mekari refuses them: the connection is left needs_reauth)."""
        self.vault.store_hmac(tenant_id, client_id, client_secret)
        self.fetch_chart(tenant_id)

    def close(self) -> None:
        self.session.close()


def open_connection(settings: Settings, options: OpenOptions) -> JurnalConnection:
    return JurnalConnection(settings, options)


__all__ = ["JurnalConnection", "SinkError", "open_connection"]
