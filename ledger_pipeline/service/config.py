"""The connection service's configuration, read from the environment when the service (or a CLI command) starts.

- LEDGER_PUBLIC_URL: the service's public base URL, e.g. https://connect.example.com; the callback registered
  with each provider is `<LEDGER_PUBLIC_URL>/callback/<system>`.
- LEDGER_LINK_SECRET: the HMAC-SHA256 key of connect links (at least 32 characters), shared with R2a's backend.
- LEDGER_OPERATOR_TOKEN: the operator page's credential (bearer header, or the login form's cookie); unset: no
  operator page.
- LEDGER_TRUSTED_PROXIES: comma-separated IPs/networks whose X-Forwarded-For/-Proto are honoured (uvicorn's
  forwarded_allow_ips); unset: none.
- LEDGER_SERVICE_RATE_LIMIT: requests per client address, `limits` notation (default `120/minute`).
- LEDGER_SERVICE_MAX_BODY: the largest request body in bytes (default 65536).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

MIN_SECRET = 32


class ServiceConfigError(ValueError):
    """A missing or unusable service setting; the message names the variable and the fix."""


@dataclass(frozen=True)
class ServiceConfig:
    public_url: str
    link_secret: str
    operator_token: str | None = None
    trusted_proxies: str = ""
    rate_limit: str = "120/minute"
    max_body: int = 65536

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    def callback_url(self, system: str) -> str:
        """The redirect URI registered with the provider for `system`: `<LEDGER_PUBLIC_URL>/callback/<system>`."""
        return f"{self.public_url}/callback/{system}"


def public_url(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    url = (env.get("LEDGER_PUBLIC_URL") or "").strip().rstrip("/")
    if not url:
        raise ServiceConfigError("LEDGER_PUBLIC_URL is not set: set it to the service's public base URL (e.g. "
                                 "https://connect.example.com, or http://127.0.0.1:8080 on one machine)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ServiceConfigError(f"LEDGER_PUBLIC_URL={url!r} is not an http(s) base URL without query or fragment")
    return url


def link_secret(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    secret = env.get("LEDGER_LINK_SECRET") or ""
    if len(secret) < MIN_SECRET:
        raise ServiceConfigError(f"LEDGER_LINK_SECRET is {'not set' if not secret else 'too short'}: set it to a "
                                 f"random string of at least {MIN_SECRET} characters (e.g. `python -c \"import "
                                 "secrets; print(secrets.token_urlsafe(48))\"`), the same in R2a's backend")
    return secret


def load_service_config(env: dict | None = None) -> ServiceConfig:
    """Every setting of `serve`. Raises ServiceConfigError naming the variable to fix."""
    env = os.environ if env is None else env
    try:
        max_body = int(env.get("LEDGER_SERVICE_MAX_BODY", "65536"))
    except ValueError as exc:
        raise ServiceConfigError("LEDGER_SERVICE_MAX_BODY must be a number of bytes") from exc
    rate = env.get("LEDGER_SERVICE_RATE_LIMIT", "120/minute")
    try:
        from limits import parse_many

        parse_many(rate)
    except ValueError as exc:
        raise ServiceConfigError(f"LEDGER_SERVICE_RATE_LIMIT={rate!r} is not a rate such as '120/minute'") from exc
    operator = env.get("LEDGER_OPERATOR_TOKEN") or None
    if operator is not None and len(operator) < MIN_SECRET:
        raise ServiceConfigError(f"LEDGER_OPERATOR_TOKEN is too short: use a random string of at least {MIN_SECRET} "
                                 "characters (or leave it unset: no operator page)")
    return ServiceConfig(public_url=public_url(env), link_secret=link_secret(env), operator_token=operator,
                         trusted_proxies=trusted_proxies(env.get("LEDGER_TRUSTED_PROXIES") or ""), rate_limit=rate,
                         max_body=max_body)


def trusted_proxies(raw: str) -> str:
    """LEDGER_TRUSTED_PROXIES checked: comma-separated IP addresses or networks (uvicorn would silently take a typo
    as a literal host name and trust nothing, or the wrong thing)."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ServiceConfigError(f"LEDGER_TRUSTED_PROXIES: {item!r} is not an IP address or network (e.g. "
                                     "10.0.0.5 or 10.0.0.0/24, comma-separated)") from exc
    return ",".join(items)
