"""The providers' consent step, emulated: a real HTML page a person reads and clicks, for every emulated authorize
(or link) endpoint.

What the vendors do: the user signs in at the provider and is asked to allow the app access to one company, with
Allow/Deny (Mekari: developers.mekari.com OAuth2 "authorization page"; Intuit: developer.intuit.com "OAuth 2.0 -
the user ... selects a company and clicks Connect"; Zoho: zoho.com/accounts/protocol/oauth/web-apps/authorization
"the user will be shown a consent screen"; Rootfi Link: docs.rootfi.dev, "the user selects their platform and
authorises"). Declining redirects back with `error=access_denied` and the state (RFC 6749 section 4.1.2.1, which all
four follow).

How the sandbox decides: a request that asks for HTML (a browser's `Accept: text/html`) gets the page; the page's
form posts back to the same URL with `decision=approve` or `decision=deny`. A request that does not ask for HTML
(httpx, the CLI's `connect --auto-approve`, `make demo`) is approved at once, as before: there is nobody to click.
The company is the one named by `login_hint` (the sandbox's stand-in for the user's own sign-in).
"""

from __future__ import annotations

import html
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

MAX_FORM = 4096

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} - authorize</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}}
.box{{border:1px solid #ccc;border-radius:8px;padding:1.2rem}} button{{font-size:1rem;padding:.5rem 1.2rem}}</style>
</head><body><div class="box"><h1 id="provider">{title}</h1>
<p>Signed in for company <strong id="company">{company}</strong> (sandbox).</p>
<p><strong>{client}</strong> would like to access your books:</p><ul>{scopes}</ul>
<form method="post" action="{action}">
<button id="approve" name="decision" value="approve" type="submit">Allow</button>
<button id="deny" name="decision" value="deny" type="submit">Deny</button>
</form></div></body></html>"""


async def gate(request: Request, *, title: str, company: str, client: str, scopes: list[str], redirect_uri: str,
               state: str) -> Response | None:
    """Call after the endpoint validated its parameters, before it issues a code. None: approved (a POST with
    decision=approve, or a request that does not ask for HTML); else the response to send (the page, or the
    access_denied redirect)."""
    if request.method == "POST":
        body = (await request.body())[:MAX_FORM].decode("utf-8", errors="replace")
        decision = dict(parse_qsl(body)).get("decision")
        if decision == "approve":
            return None
        sep = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(f"{redirect_uri}{sep}{urlencode({'error': 'access_denied', 'state': state})}", 303)
    if "text/html" not in request.headers.get("accept", ""):
        return None
    action = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTMLResponse(PAGE.format(
        title=html.escape(title), company=html.escape(company), client=html.escape(client),
        scopes="".join(f"<li>{html.escape(s)}</li>" for s in scopes), action=html.escape(action, quote=True)))
