"""Signed, expiring, single-use connect links: how a tenant's user reaches `serve` for one tenant and one system.

A link is `<LEDGER_PUBLIC_URL>/connect/<system>?tenant=<T>&exp=<E>&nonce=<N>[&flags=<F>]&sig=<S>` where

    S = hex(HMAC-SHA256(key = LEDGER_LINK_SECRET as UTF-8,
                        msg = "ledger-link-v1\\n<system>\\n<tenant>\\n<exp>\\n<nonce>\\n<flags>" as UTF-8))

- `system`: jurnal | quickbooks | zoho | aden | rootfi (the path segment);
- `tenant`: the tenant id exactly as in R2a (URL-encoded in the query; signed raw; no control characters);
- `exp`: expiry, whole seconds since the Unix epoch (UTC); at most 30 days ahead of the minting time;
- `nonce`: 16 to 64 characters of [A-Za-z0-9_-], random per link (e.g. 16 random bytes, URL-safe base64);
- `flags`: "" (omitted from the query) or `new-company` (the tenant may connect a company other than the one on
  record: a deliberate move, minted by an operator);
- `S`: lowercase hex, compared in constant time.

R2a's backend mints links with this algorithm and the shared secret (or `ledger-pipeline connect --link`). A link
connects at most once: its nonce is recorded when a connection made with it completes (service/store.py), so a
replay is refused; a link past `exp` is refused; any change to a field breaks the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

VERSION = "ledger-link-v1"
MAX_TTL = 30 * 86400  # seconds: the farthest expiry a link may carry
DEFAULT_TTL = 72 * 3600
FLAGS = ("", "new-company")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SIG = re.compile(r"^[0-9a-f]{64}$")
MAX_TENANT = 64


class LinkError(Exception):
    """A link that cannot be used. `kind`: malformed | forged | expired | used (the page explains each)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Link:
    system: str
    tenant_id: str
    expires: int  # Unix seconds
    nonce: str
    flags: str = ""

    @property
    def new_company(self) -> bool:
        return self.flags == "new-company"


def signature(secret: str, system: str, tenant_id: str, expires: int, nonce: str, flags: str = "") -> str:
    """The link's `sig`: lowercase hex HMAC-SHA256 over the newline-joined fields (see the module docstring)."""
    message = "\n".join([VERSION, system, tenant_id, str(int(expires)), nonce, flags]).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def check_tenant(tenant_id: str) -> str:
    """A tenant id a link can carry (R2a's, at most 64 characters, no control characters). Raises ValueError."""
    if not tenant_id or len(tenant_id) > MAX_TENANT or any(ord(c) < 32 or ord(c) == 127 for c in tenant_id):
        raise ValueError(f"tenant id {tenant_id!r} cannot be put in a link (1 to {MAX_TENANT} characters, no "
                         "control characters)")
    return tenant_id


def mint(public_url: str, secret: str, tenant_id: str, system: str, *, ttl: int = DEFAULT_TTL,
         now: float | None = None, flags: str = "", nonce: str | None = None) -> str:
    """A signed link for one tenant and system, valid `ttl` seconds (at most 30 days) from `now`.
    Raises ValueError for an unknown system, an unusable tenant id, a bad ttl or flag."""
    from ledger_pipeline.systems import get

    get(system)
    check_tenant(tenant_id)
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"a link lives between 1 second and {MAX_TTL // 86400} days, not {ttl} seconds")
    if flags not in FLAGS:
        raise ValueError(f"unknown link flag {flags!r}; known: {', '.join(repr(f) for f in FLAGS)}")
    nonce = nonce or secrets.token_urlsafe(16)
    expires = int((time.time() if now is None else now) + ttl)
    params = {"tenant": tenant_id, "exp": str(expires), "nonce": nonce}
    if flags:
        params["flags"] = flags
    params["sig"] = signature(secret, system, tenant_id, expires, nonce, flags)
    return f"{public_url.rstrip('/')}/connect/{system}?{urlencode(params)}"


def verify(secret: str, system: str, params: Mapping[str, str], now: float | None = None) -> Link:
    """The link a request carries (query or form fields tenant, exp, nonce, flags, sig) for `system`, checked:
    well formed, signed with `secret`, not expired, not too far ahead. Raises LinkError (nothing is recorded here;
    single use is service/store.py's claim_nonce)."""
    tenant, exp, nonce = params.get("tenant") or "", params.get("exp") or "", params.get("nonce") or ""
    flags, sig = params.get("flags") or "", (params.get("sig") or "").lower()
    if not (tenant and exp.isdigit() and len(exp) <= 12 and _NONCE.match(nonce) and _SIG.match(sig)
            and flags in FLAGS):
        raise LinkError("malformed", "the link is incomplete or damaged (a field is missing or malformed)")
    try:
        check_tenant(tenant)
    except ValueError as exc:
        raise LinkError("malformed", str(exc)) from exc
    expected = signature(secret, system, tenant, int(exp), nonce, flags)
    if not hmac.compare_digest(expected, sig):
        raise LinkError("forged", "the link's signature does not match (it was altered, or not minted by us)")
    now = time.time() if now is None else now
    if int(exp) <= now:
        raise LinkError("expired", "the link has expired")
    if int(exp) > now + MAX_TTL + 300:
        raise LinkError("malformed", "the link's expiry is further ahead than any link may be (30 days)")
    return Link(system, tenant, int(exp), nonce, flags)
