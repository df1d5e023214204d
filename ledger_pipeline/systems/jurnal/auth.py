"""How a Jurnal request is authorised: one of two modes, chosen per connection (stored with the tenant's credentials).

- ``oauth``: Mekari's OAuth2 partner API, ``Authorization: Bearer <access token>`` on ``/partner/core/api/v1``
  (mekari-engineering/ruby-jurnal-client ``lib/jurnal_api/connection.rb``: ``partner/core`` takes Bearer).
- ``hmac``: Mekari's API gateway (host api.mekari.com, base ``/public/jurnal/api/v1``), each request signed with the
  company's HMAC client id and secret. The form is the one Mekari's Swagger (shared/reference/specs/
  jurnal_mekari_swagger.json ``info.description``) and developer docs give (mekari-engineering/devcenter-kb
  ``docs/authentication/hmac.md``, ``docs/hmac-authentication/ruby.md``)::

      Authorization: hmac username="<client id>", algorithm="hmac-sha256", headers="date request-line",
                     signature="<base64(HMAC-SHA256(secret, signing string))>"
      Date: <RFC 7231 IMF-fixdate, e.g. Wed, 10 Nov 2021 07:24:29 GMT>
      Digest: SHA-256=<base64(sha256(body))>          (POST, PUT, PATCH and DELETE: "Body Validation")

  with the signing string ``"date: <Date>\\n<METHOD> <path?query> HTTP/1.1"``: the method in upper case and the
  query string included (the guides' ``pathWithQueryParam``). The gateway allows 300 s of clock skew between the
  Date header and its own clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Literal

AuthMode = Literal["oauth", "hmac"]
AUTH_MODES: tuple[AuthMode, ...] = ("oauth", "hmac")
PARTNER_PREFIX = "/partner/core/api/v1"
GATEWAY_PREFIX = "/public/jurnal/api/v1"
SIGNED_METHODS = ("POST", "PUT", "PATCH", "DELETE")  # Mekari: "required when performing a POST, PUT, PATCH, DELETE"


@dataclass(frozen=True)
class Credentials:
    """One tenant's way in: where to send requests (`base_url`, prefix included) and how to sign them.
    Secrets never appear in repr()."""

    mode: AuthMode
    base_url: str
    token: str = field(default="", repr=False)  # oauth: the access token
    client_id: str = field(default="", repr=False)  # hmac: Mekari's "username"
    client_secret: str = field(default="", repr=False)

    @classmethod
    def bearer(cls, base_url: str, token: str) -> Credentials:
        return cls("oauth", base_url.rstrip("/"), token=token)

    @classmethod
    def hmac(cls, base_url: str, client_id: str, client_secret: str) -> Credentials:
        return cls("hmac", base_url.rstrip("/"), client_id=client_id, client_secret=client_secret)

    def headers(self, method: str, path_with_query: str, body: bytes, now: float) -> dict[str, str]:
        """The auth headers of one request. `path_with_query` is the request target exactly as sent (percent-encoded
        path, then ``?query`` if any); `now` is the client's clock (seconds since the epoch) for the Date header."""
        if self.mode == "oauth":
            return {"Authorization": f"Bearer {self.token}"}
        date = formatdate(now, usegmt=True)
        out = {"Date": date, "Authorization": hmac_authorization(self.client_id, self.client_secret, method,
                                                                 path_with_query, date)}
        if method.upper() in SIGNED_METHODS:
            out["Digest"] = body_digest(body)
        return out


def signing_string(method: str, path_with_query: str, date: str) -> str:
    """Mekari's HMAC signing string: ``date: <Date>`` and the request line, joined by a newline."""
    return f"date: {date}\n{method.upper()} {path_with_query} HTTP/1.1"


def hmac_signature(client_secret: str, method: str, path_with_query: str, date: str) -> str:
    mac = hmac.new(client_secret.encode(), signing_string(method, path_with_query, date).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def hmac_authorization(client_id: str, client_secret: str, method: str, path_with_query: str, date: str) -> str:
    signature = hmac_signature(client_secret, method, path_with_query, date)
    return (f'hmac username="{client_id}", algorithm="hmac-sha256", headers="date request-line", '
            f'signature="{signature}"')


def body_digest(body: bytes) -> str:
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
