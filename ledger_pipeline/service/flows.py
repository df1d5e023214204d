"""How each system connects through `serve`: a redirect flow (OAuth2 authorization code, or Rootfi Link) or a
pasted administrator-issued token (Aden). Each adapter wraps the system's own auth object on its Connection (the
same objects the CLI's loopback `connect` uses), so the exchange, its errors and what lands in the vault are the
system's; the service only adds the hosted pages, the signed link and the state binding.

- jurnal: OAuth2 code grant at account.mekari.com `/auth`, JSON token call (developers.mekari.com OAuth2, see
  reference/accounting_apis.md);
- quickbooks: OAuth2 code grant at appcenter.intuit.com, `realmId` on the redirect (developer.intuit.com, "OAuth
  2.0");
- zoho: OAuth2 code grant at accounts.zoho.<dc> with access_type=offline (zoho.com/accounts/protocol/oauth);
- rootfi: Rootfi Link, redirecting back with `company_id` (docs.rootfi.dev, Rootfi Link);
- aden: no OAuth: "Contact your Aden administrator to obtain ... JWT token" (docs.adenhq.com/quickstart).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger_pipeline.state.vault import TokenSet
from ledger_pipeline.systems.authflow import OAuthError


@dataclass(frozen=True)
class FlowInfo:
    system: str
    kind: str  # "redirect" | "token"
    provider: str  # what the user is sent to / asked for, in words for the pages
    instructions: str


INFO: dict[str, FlowInfo] = {i.system: i for i in [
    FlowInfo("jurnal", "redirect", "Jurnal (Mekari account)",
             "You will sign in to your Mekari account and approve access to your Jurnal company."),
    FlowInfo("quickbooks", "redirect", "QuickBooks Online (Intuit)",
             "You will sign in to Intuit and choose the QuickBooks company to connect."),
    FlowInfo("zoho", "redirect", "Zoho Books",
             "You will sign in to Zoho and approve access to your Zoho Books organization."),
    FlowInfo("rootfi", "redirect", "Rootfi Link",
             "You will connect your accounting platform through Rootfi Link."),
    FlowInfo("aden", "token", "Aden",
             "Aden has no sign-in flow for apps: your Aden administrator issues a token (a JWT) for your company. "
             "Paste it below exactly as issued; it is stored encrypted and never shown again."),
]}


def authorize_url(system: str, connection: object, redirect_uri: str, state: str, tenant_id: str) -> str:
    """The provider's authorization (or link) page for a redirect flow, with our callback and state."""
    auth = _auth(system, connection)
    return auth.authorize_url(redirect_uri, state, login_hint=tenant_id)


def exchange(system: str, connection: object, tenant_id: str, query: dict[str, str], redirect_uri: str) -> TokenSet:
    """What the callback's parameters are worth: tokens (OAuth code exchange) or the linked company (Rootfi).
    Raises OAuthError / NeedsReauth / TokenEndpointError from the system's own client; nothing is stored here."""
    auth = _auth(system, connection)
    if system == "rootfi":
        from ledger_pipeline.systems.rootfi.auth import LINK_LIFETIME

        company = (query.get("company_id") or "").strip()
        if not company:
            raise OAuthError(f"tenant {tenant_id}: Rootfi Link came back without a company_id")
        return TokenSet("", "", LINK_LIFETIME, company, {"linked_via": "rootfi_link"})
    code = query.get("code") or ""
    if not code:
        raise OAuthError(f"tenant {tenant_id}: the {system} callback carried no code")
    if system == "quickbooks":
        return auth.exchange_code(tenant_id, code, redirect_uri, query.get("realmId"))
    return auth.exchange_code(tenant_id, code, redirect_uri)


def check_token(connection: object, tenant_id: str, token: str) -> TokenSet:
    """Aden: the pasted JWT, checked read-only against Aden before anything is stored. Raises OAuthError (malformed,
    expired), NeedsReauth (refused) or TokenEndpointError (Aden unreachable)."""
    auth = connection.auth  # type: ignore[attr-defined]
    token = token.strip()
    if token.lower().startswith("jwt "):
        token = token[4:].strip()
    if not token:
        raise OAuthError(f"tenant {tenant_id}: no Aden token was pasted")
    if hasattr(auth, "token_set"):  # the admin-issued JWT (docs.adenhq.com): claims, then a probe read
        tokens = auth.token_set(tenant_id, token)
        auth.check(tenant_id, token)
        return tokens
    return auth.refresh(tenant_id, token)  # 0.2.0's Aden: introspection says whether the token is active


def store_token(connection: object, tenant_id: str, token: str, tokens: TokenSet) -> None:
    """Aden: store the checked token the way the system's own `connect` does."""
    if hasattr(connection, "connect_with_token"):
        connection.connect_with_token(tenant_id, token.strip().removeprefix("jwt ").strip())
    else:
        connection.vault.store(tenant_id, tokens)  # type: ignore[attr-defined]


def _auth(system: str, connection: object) -> object:
    if system == "jurnal":
        return connection.session.oauth  # type: ignore[attr-defined]
    if system == "rootfi":
        return connection.link  # type: ignore[attr-defined]
    if system == "aden":
        return connection.auth  # type: ignore[attr-defined]
    return connection.oauth  # type: ignore[attr-defined]
