"""Driving the connection service like a tenant's user does, without a browser (tests, benchmarks, smoke checks):
open the link, press the button, follow the redirects through the provider's (emulated) consent, land on our page.

The emulators approve a request that does not ask for HTML at once (sandboxes/consent.py); `accept_html=True`
asks for the consent page instead and `decision` answers it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

_FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_TITLE = re.compile(r'<h1 id="title"[^>]*>(.*?)</h1>', re.S)


@dataclass
class Page:
    status: int
    title: str
    text: str
    url: str

    def field(self, element_id: str) -> str | None:
        m = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)<', self.text, re.S)
        return html.unescape(m.group(1)).strip() if m else None


def page(resp: httpx.Response) -> Page:
    m = _TITLE.search(resp.text)
    return Page(resp.status_code, html.unescape(m.group(1)).strip() if m else "", resp.text, str(resp.url))


def form_fields(text: str) -> dict[str, str]:
    """The hidden fields of our landing page's form."""
    return {k: html.unescape(v) for k, v in _FIELD.findall(text)}


def start(http: httpx.Client, link: str, token: str | None = None) -> httpx.Response:
    """Open the link and press its button (Aden: with `token` pasted); the answer is not followed: for a redirect
    flow it is the 303 to the provider (its `location`), for Aden our result page."""
    landing = http.get(link)
    if landing.status_code != 200:
        return landing
    base = "{0.scheme}://{0.netloc}".format(urlsplit(link))
    data = form_fields(landing.text)
    if token is not None:
        data["token"] = token
    return http.post(base + urlsplit(link).path, data=data, follow_redirects=False)


def approve_at_provider(http: httpx.Client, authorize_url: str, decision: str = "approve",
                        accept_html: bool = True) -> str:
    """The provider's leg: its consent page answered with `decision` (or, accept_html=False, the emulator's
    approval of a program); returns the callback URL the provider redirects to."""
    if not accept_html:
        resp = http.get(authorize_url, follow_redirects=False)
    else:
        consent = http.get(authorize_url, headers={"accept": "text/html"}, follow_redirects=False)
        if consent.status_code != 200:
            raise AssertionError(f"no consent page at {authorize_url}: {consent.status_code} {consent.text[:200]}")
        resp = http.post(authorize_url, data={"decision": decision}, follow_redirects=False)
    if resp.status_code not in (302, 303):
        raise AssertionError(f"the provider answered {resp.status_code}: {resp.text[:300]}")
    return resp.headers["location"]


def connect(http: httpx.Client, link: str, *, token: str | None = None, decision: str = "approve",
            accept_html: bool = True) -> Page:
    """The whole flow with one client (one browser): the final page of our service."""
    first = start(http, link, token)
    if first.status_code != 303:
        return page(first)
    callback = approve_at_provider(http, first.headers["location"], decision, accept_html)
    return page(http.get(callback))


def aden_token(sandbox_url: str, login: str) -> str:
    """A JWT for `login`'s Aden company, as its administrator would issue it: the sandbox's issuer
    (`POST /_sandbox/aden/companies/-/jwt`), or 0.2.0's emulated admin (authorize, then token)."""
    resp = httpx.post(f"{sandbox_url}/_sandbox/aden/companies/-/jwt", json={"company_login": login}, timeout=10)
    if resp.status_code == 200:
        return str(resp.json()["token"])
    from ledger_pipeline.sandboxes import aden

    redirect = "http://127.0.0.1:9/aden-admin"
    auth = httpx.get(f"{sandbox_url}{aden.ADMIN}/authorize", params={
        "client_id": aden.SANDBOX_CLIENT_ID, "response_type": "code", "redirect_uri": redirect, "state": "x",
        "login_hint": login}, timeout=10)
    code = re.search(r"code=([^&]+)", auth.headers["location"]).group(1)  # type: ignore[union-attr]
    token = httpx.post(f"{sandbox_url}{aden.ADMIN}/token", json={
        "client_id": aden.SANDBOX_CLIENT_ID, "client_secret": aden.SANDBOX_CLIENT_SECRET,
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect}, timeout=10)
    return str(token.json()["token"])
