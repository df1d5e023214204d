"""The service's HTML, as Jinja2 templates kept in this module (autoescaped: tenant ids, company names and provider
messages are data, never markup). No script, no external resource: every page works without JavaScript and the
Content-Security-Policy (app.py) forbids anything else."""

from __future__ import annotations

from jinja2 import DictLoader, Environment, select_autoescape
from starlette.responses import HTMLResponse

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{{ title }} - ledger-pipeline</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2430}
h1{font-size:1.4rem} .ok{color:#11683a} .bad{color:#a4161a} .muted{color:#5b6472}
.box{border:1px solid #d0d5dd;border-radius:6px;padding:1rem 1.2rem;margin:1rem 0}
button{font-size:1rem;padding:.5rem 1.2rem;border-radius:4px;border:1px solid #1d4ed8;background:#1d4ed8;color:#fff}
textarea{width:100%;font-family:monospace} table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #e4e7ec;padding:.3rem .4rem;text-align:left;vertical-align:top}
code,.link{font-family:monospace;word-break:break-all}
</style></head><body>
{% block body %}{% endblock %}
<p class="muted" style="margin-top:3rem;font-size:.8rem">ledger-pipeline connection service</p>
</body></html>"""

LANDING = """{% extends "base" %}{% block body %}
<h1 id="title">Connect {{ tenant }} to {{ provider }}</h1>
<div class="box"><p>This link connects the books of tenant <strong id="tenant">{{ tenant }}</strong> to
{{ provider }}, so that its monthly journal entries are posted there.</p>
<p>{{ instructions }}</p>
{% if new_company %}<p><strong>This link may connect a different company than the one on record.</strong></p>{% endif %}
<form method="post" action="{{ action }}">
{% for k, v in fields %}<input type="hidden" name="{{ k }}" value="{{ v }}">{% endfor %}
{% if kind == "token" %}
<p><label for="token">Token issued by your Aden administrator</label></p>
<textarea id="token" name="token" rows="6" autocomplete="off" spellcheck="false" required></textarea>
<p><button id="continue" type="submit">Connect</button></p>
{% else %}
<p><button id="continue" type="submit">Continue to {{ provider }}</button></p>
{% endif %}
</form></div>
<p class="muted">The link expires {{ expires }} UTC and can connect only once.</p>
{% endblock %}"""

RESULT = """{% extends "base" %}{% block body %}
{% if ok %}<h1 id="title" class="ok">Connected</h1>{% else %}<h1 id="title" class="bad">{{ title }}</h1>{% endif %}
<div class="box" id="result">
{% if ok %}
<p>Tenant <strong id="tenant">{{ tenant }}</strong> is now connected to {{ provider }} company
<strong id="company">{{ company }}</strong>{% if company_id and company_id != company %} (id
<code>{{ company_id }}</code>){% endif %}.</p>
{% if currency %}<p>Home currency: <strong id="currency">{{ currency }}</strong></p>{% endif %}
<p>Its monthly journal entries will be posted there. You can close this page.</p>
{% else %}
<p id="problem">{{ problem }}</p>
<p id="changed"><strong>{{ changed or "Nothing was changed." }}</strong></p>
<p id="fix">What to do: {{ fix }}</p>
{% endif %}</div>
{% endblock %}"""

LOGIN = """{% extends "base" %}{% block body %}
<h1 id="title">Operator sign-in</h1>
{% if failed %}<p class="bad" id="problem">That operator token is not right.</p>{% endif %}
<form method="post" action="/operator/login" class="box">
<p><label for="token">Operator token (LEDGER_OPERATOR_TOKEN)</label></p>
<p><input id="token" name="token" type="password" autocomplete="current-password" size="60" required></p>
<p><button id="signin" type="submit">Sign in</button></p></form>
{% endblock %}"""

OPERATOR = """{% extends "base" %}{% block body %}
<h1 id="title">Tenant connections</h1>
<form method="get" action="/operator" class="box">
<label>status <select name="status">{% for s in statuses %}<option value="{{ s }}"{% if s == status %}
 selected{% endif %}>{{ s or "all" }}</option>{% endfor %}</select></label>
<label>tenant contains <input name="q" value="{{ q }}"></label> <button type="submit">Filter</button></form>
<p>{{ counts }}</p>
<table id="connections"><thead><tr><th>tenant</th><th>system</th><th>company</th><th>home currency</th>
<th>status</th><th>last successful request</th><th>last posted month</th><th>last check</th><th>action</th></tr></thead>
<tbody>{% for r in rows %}<tr data-tenant="{{ r.tenant_id }}" data-status="{{ r.status }}">
<td>{{ r.tenant_id }}{% if r.tenant_name %}<br><span class="muted">{{ r.tenant_name }}</span>{% endif %}</td>
<td>{{ r.system or "-" }}</td><td>{{ r.company or "-" }}</td><td>{{ r.home_currency or "unknown" }}</td>
<td class="status">{{ r.status }}{% if r.status_detail and r.status != "connected" %}<br>
<span class="muted">{{ r.status_detail[:160] }}</span>{% endif %}</td>
<td>{{ r.last_ok or "-" }}</td><td>{{ r.last_posted_month or "-" }}</td>
<td>{{ r.last_check or "-" }}</td>
<td>{% if r.link %}<span class="link">{{ r.link }}</span>{% elif r.system %}
<form method="post" action="/operator/check"><input type="hidden" name="tenant" value="{{ r.tenant_id }}">
<button type="submit">Check</button></form>
<form method="post" action="/operator/disconnect"><input type="hidden" name="tenant" value="{{ r.tenant_id }}">
<button type="submit" class="disconnect">Disconnect</button></form>{% else %}
<form method="get" action="/operator/link"><input type="hidden" name="tenant" value="{{ r.tenant_id }}">
<select name="system">{% for s in systems %}<option>{{ s }}</option>{% endfor %}</select>
<button type="submit">Link</button></form>{% endif %}</td>
</tr>{% endfor %}</tbody></table>
{% if more %}<p><a href="{{ more }}">next page</a></p>{% endif %}
<form method="post" action="/operator/logout"><button type="submit">Sign out</button></form>
{% endblock %}"""

LINK = """{% extends "base" %}{% block body %}
<h1 id="title">Connect link for {{ tenant }} ({{ system }})</h1>
<div class="box"><p>Send this link to the tenant's user; it expires {{ expires }} UTC and connects once.</p>
<p class="link" id="link">{{ link }}</p></div><p><a href="/operator">back</a></p>
{% endblock %}"""

CHECK = """{% extends "base" %}{% block body %}
<h1 id="title">Preflight for {{ report.tenant_id }} ({{ report.system or "no system" }})</h1>
<p id="verdict" class="{{ 'ok' if report.ok else 'bad' }}">{{ "all checks passed" if report.ok else "failed" }}</p>
<table id="checks"><thead><tr><th>check</th><th>result</th><th>detail</th></tr></thead><tbody>
{% for c in report.checks %}<tr><td>{{ c.name }}</td><td>{{ c.outcome }}</td><td>{{ c.detail }}{% if c.fix %}
<br><em>fix: {{ c.fix }}</em>{% endif %}</td></tr>{% endfor %}</tbody></table>
<p><a href="/operator">back</a></p>
{% endblock %}"""

HOME = """{% extends "base" %}{% block body %}
<h1 id="title">ledger-pipeline connection service</h1>
<p>Open the connect link you were given to connect your accounting system.</p>
{% endblock %}"""

_env = Environment(loader=DictLoader({"base": BASE, "landing": LANDING, "result": RESULT, "login": LOGIN,
                                      "operator": OPERATOR, "link": LINK, "check": CHECK, "home": HOME}),
                   autoescape=select_autoescape(default=True, default_for_string=True))


def render(name: str, status_code: int = 200, **values: object) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**values), status_code=status_code)


def failure(status: int, title: str, problem: str, fix: str, changed: str | None = None) -> HTMLResponse:
    """A page that says what went wrong, that nothing changed (or, rarely, what did), and what to do."""
    return render("result", status, ok=False, title=title, problem=problem, fix=fix, changed=changed)
