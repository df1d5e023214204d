"""The `ledger-pipeline` command: seed, sandbox, connect, serve, check, run, demo, rates."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

import click

from ledger_pipeline import clock
from ledger_pipeline.settings import SANDBOX_PORT, Settings, load_settings, safe_url
from ledger_pipeline.systems import SYSTEMS

# Exit codes of `run` and `repost` (documented in the README): 2 is click's usage error (a bad or open month, an
# unknown tenant); 128+N: stopped by signal N (130 Ctrl-C, 143 SIGTERM).
EXIT_OK = 0  # completed: everything posted and reconciled
EXIT_FAILED = 1  # the run failed or crashed (an unexpected error, a wait for the DuckDB slot timed out)
EXIT_PROBLEMS = 3  # completed, with tenant-months not posted as our ledger says (rejections, failed postings,
# changes held for a decision, a refused mass delete): each named in the output and the UI's checks


def _progress(label: str):  # noqa: ANN202
    """A progress line: redrawn in place on a terminal, every quarter otherwise (logs, CI)."""
    start, tty, shown = time.time(), sys.stdout.isatty(), set()

    def show(done: int, total: int) -> None:
        text = f"  {label}: {done:,}/{total:,} ({time.time() - start:.1f}s)"
        if tty:
            click.echo("\r" + text, nl=done >= total)
        elif (quarter := 4 * done // max(total, 1)) not in shown:
            shown.add(quarter)
            click.echo(text)
    return show


@click.group()
def main() -> None:
    """ledger_pipeline: R2a P&L -> balanced journal entries -> each tenant's accounting system, exactly once; DuckDB for
    analysts."""


@main.command()
@click.option("--tenants", default=200, show_default=True)
@click.option("--months", default=12, show_default=True)
@click.option("--start", "start", default=None,
              help="first month YYYY-MM (default: the months ending with the last complete month, LEDGER_TIMEZONE)")
@click.option("--seed", "seed_value", default=7, show_default=True)
@click.option("--with-bad-rows", is_flag=True, help="add a few rows of each kind of bad source data")
def seed(tenants: int, months: int, start: str | None, seed_value: int, with_bad_rows: bool) -> None:
    """Write deterministic synthetic R2a data into R2A_DATABASE_URL (replaces tenants and transactions)."""
    from ledger_pipeline.r2a import seed as seeding
    from ledger_pipeline.r2a.models import make_engine

    s = load_settings()
    engine = make_engine(s.r2a_database_url)
    first = _month_or_exit(start, "--start") if start else None
    t0 = time.time()
    result = seeding.seed(engine, tenants, months, first, seed_value, _progress("rows"))
    _record_first_month(s, result.start)
    if with_bad_rows:
        seeding.add_bad_rows(engine, result.start, [f"t{i:05d}" for i in (1, 2, 3)])
    click.echo(f"seeded {result.tenants:,} tenants x {result.months} months from {result.start:%Y-%m}: "
               f"{result.rows:,} rows in {time.time() - t0:.1f}s -> {safe_url(s.r2a_database_url)}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=SANDBOX_PORT, show_default=True)
@click.option("--state", type=click.Path(path_type=Path), default=None,
              help="SQLite state file (default data/sandbox.sqlite)")
@click.option("--faults", default="", help='JSON, e.g. {"error_rate":0.2,"drop_after_commit_rate":0.05,"seed":1}')
@click.option("--rate-limit-scale", default=1.0, show_default=True, help="100 = 3,000 requests/min per token")
@click.option("--no-rate-limits", is_flag=True)
@click.option("--access-token-ttl", default=3600.0, show_default=True)
def sandbox(host: str, port: int, state: Path | None, faults: str, rate_limit_scale: float, no_rate_limits: bool,
            access_token_ttl: float) -> None:
    """Run the accounting sandbox (every system's emulation, each under its prefix) in the foreground."""
    import json

    from ledger_pipeline.sandboxes.base import Faults, SandboxLimits
    from ledger_pipeline.sandboxes.server import serve_forever

    state = state or load_settings().data_dir / "sandbox.sqlite"
    serve_forever(state, host, port, SandboxLimits(enabled=not no_rate_limits, scale=rate_limit_scale),
                  Faults(**json.loads(faults)) if faults else Faults(), access_token_ttl)


@main.command()
@click.option("--tenant", "tenant", default=None, help="tenant_id to connect")
@click.option("--all", "all_tenants", is_flag=True, help="connect every seeded tenant not yet connected")
@click.option("--system", "system", default="jurnal", show_default=True,
              type=click.Choice(list(SYSTEMS)), help="the tenant's accounting system")
@click.option("--auto-approve", is_flag=True,
              help="follow the authorize URL ourselves (the sandbox auto-approves); implied by --all")
@click.option("--token-file", "token_file", default=None, metavar="FILE",
              help="aden: the tenant's JWT, issued by its Aden administrator, read from FILE ('-' = stdin)")
@click.option("--hmac-client-id", default=None, metavar="ID", help="jurnal: connect through Mekari's API gateway "
              "(api.mekari.com, HMAC-signed) with the company's HMAC client id instead of OAuth")
@click.option("--hmac-secret-file", default=None, metavar="FILE", help="jurnal: the HMAC client secret, read from "
              "FILE ('-' = stdin; never on the command line)")
@click.option("--link", "link", is_flag=True, help="print a signed connect link for --tenant and --system, to open "
              "on `serve` (LEDGER_PUBLIC_URL, LEDGER_LINK_SECRET); nothing is connected here")
@click.option("--ttl-hours", default=72.0, show_default=True, help="--link: hours the link stays valid (max 720)")
@click.option("--new-company", is_flag=True, help="--link: the tenant may connect a company other than the one on "
              "record (a deliberate move)")
@click.option("--status", "status", is_flag=True, help="list every tenant's connection health (system, company, "
              "status, last successful request, last posted month) and exit")
def connect(tenant: str | None, all_tenants: bool, system: str, auto_approve: bool, token_file: str | None,
            hmac_client_id: str | None, hmac_secret_file: str | None, link: bool, ttl_hours: float,
            new_company: bool, status: bool) -> None:
    """Connect tenants to their accounting system through its own authorisation flow (credentials encrypted).

    Aden has no such flow: its administrator issues each company a JWT, given with --token-file (against the
    sandbox, --auto-approve or --all has the sandbox issue one).

    `--link` prints a link the tenant's user opens on `ledger-pipeline serve` (the hosted flow, every system);
    `--status` lists connection health. Without them, a loopback flow on this machine (one operator-owned company,
    the sandbox)."""
    if status:
        _connection_status()
        return
    if link:
        _print_link(tenant, system, ttl_hours, new_company)
        return
    if not tenant and not all_tenants:
        raise click.UsageError("give --tenant T or --all")
    s = load_settings()
    if system == "aden" and (token_file or not (auto_approve or all_tenants)):
        if not tenant or not token_file:
            raise click.UsageError("Aden tenants connect with the JWT their Aden administrator issued: "
                                   "--tenant T --system aden --token-file FILE ('-' reads stdin); against the "
                                   "sandbox, --auto-approve (or --all) has the sandbox issue one")
        _connect_aden_token(s, tenant, token_file)
        click.echo(f"connected 1 tenant(s) to {system}")
        return
    if token_file:
        raise click.UsageError("--token-file is for --system aden")
    if hmac_client_id or hmac_secret_file:
        if system != "jurnal" or not tenant or not (hmac_client_id and hmac_secret_file):
            raise click.UsageError("Mekari gateway (HMAC) connections: --tenant T --system jurnal "
                                   "--hmac-client-id ID --hmac-secret-file FILE ('-' reads stdin)")
        _connect_jurnal_hmac(s, tenant, hmac_client_id, hmac_secret_file)
        click.echo("connected 1 tenant(s) to jurnal (Mekari API gateway, HMAC)")
        return
    n = _connect(s, [tenant] if tenant else None, auto_approve or all_tenants, system)
    click.echo(f"connected {n} tenant(s) to {system}")


def _read_secret(source: str, what: str) -> str:
    try:
        secret = (sys.stdin.read() if source == "-" else Path(source).read_text()).strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} from {source}: {exc.strerror}") from exc
    if not secret:
        raise click.ClickException(f"no {what} in {'stdin' if source == '-' else source}")
    return secret


def _connect_jurnal_hmac(s, tenant: str, client_id: str, secret_file: str) -> None:  # noqa: ANN001
    """Store a tenant's Mekari HMAC credentials (encrypted) and prove them with one chart read."""
    from ledger_pipeline.ledger.sink import SinkError
    from ledger_pipeline.systems import OpenOptions, open_connection

    secret = _read_secret(secret_file, "the HMAC client secret")
    connection = open_connection("jurnal", s, OpenOptions(s.ops_database_url, s.rate_limit_scale))
    try:
        connection.connect_hmac(tenant, client_id.strip(), secret)  # type: ignore[attr-defined]
    except SinkError as exc:
        raise click.ClickException(f"tenant {tenant}: Mekari refused the HMAC credentials: {exc}. Check the client "
                                   "id and secret in Mekari's developer dashboard and connect again") from exc
    finally:
        connection.close()


def _connect_aden_token(s, tenant: str, token_file: str) -> None:  # noqa: ANN001
    """Store and check one tenant's Aden JWT (read from a file, or stdin for '-'), never echoing it."""
    from ledger_pipeline.systems import OpenOptions, open_connection
    from ledger_pipeline.systems.aden import AdenTokenError

    try:
        token = sys.stdin.read() if token_file == "-" else Path(token_file).read_text()
    except OSError as exc:
        raise click.ClickException(f"cannot read the Aden token from {token_file}: {exc.strerror}") from exc
    if not token.strip():
        raise click.ClickException(f"no Aden token in {'stdin' if token_file == '-' else token_file}")
    connection = open_connection("aden", s, OpenOptions(s.ops_database_url, s.rate_limit_scale))
    try:
        connection.connect_with_token(tenant, token)  # type: ignore[attr-defined]
    except AdenTokenError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        connection.close()


def _connect(s, tenants: list[str] | None, auto: bool, system: str = "jurnal") -> int:  # noqa: ANN001
    """Connect `tenants` (None: every seeded tenant with no integration yet) to `system`. With `auto` (the
    sandbox), each company's books are kept in the tenant's R2a currency (sandboxes/currency.py) before its home
    currency is read."""
    import httpx
    from sqlalchemy import select

    from ledger_pipeline.connections import refresh_company_currencies
    from ledger_pipeline.r2a.models import Tenant, make_engine
    from ledger_pipeline.sandboxes.currency import set_home_currency
    from ledger_pipeline.state.vault import tenant_systems
    from ledger_pipeline.systems import OpenOptions, get, open_connection
    from ledger_pipeline.systems.authflow import follow_redirects

    connection = open_connection(system, s, OpenOptions(s.ops_database_url, s.rate_limit_scale))
    http = httpx.Client(timeout=30)
    try:
        if tenants is None:
            with make_engine(s.r2a_database_url, read_only=True).connect() as conn:
                seeded = list(conn.execute(select(Tenant.tenant_id).order_by(Tenant.tenant_id)).scalars())
            done = {t for t, (_, status, _) in tenant_systems(connection.vault.engine).items()
                    if status == "connected"}
            tenants = [t for t in seeded if t not in done]

        def show(url: str) -> None:
            click.echo(f"Open this URL to authorise access to {get(system).title}, then come back:\n  {url}")
        opener = follow_redirects(http) if auto else show
        r2a_currency: dict[str, str] = {}
        if auto:  # the sandbox: its companies keep their books in the tenant's R2a currency
            with make_engine(s.r2a_database_url, read_only=True).connect() as conn:
                r2a_currency = dict(conn.execute(select(Tenant.tenant_id, Tenant.currency)).all())
        progress = _progress(f"tenants connected to {system}")
        for i, t in enumerate(tenants, 1):
            connection.connect_tenant(t, opener)
            home = r2a_currency.get(t)
            if home:
                try:
                    set_home_currency(http, s.sandbox_url, system, t, home)
                except httpx.HTTPError as exc:  # connected all the same: the read below says what the company keeps
                    click.echo(f"warning: tenant {t}: could not keep the sandbox company's books in {home} "
                               f"({exc}); its entries are planned against the currency the company reports",
                               err=True)
            # the company's home currency (and multicurrency), read now and again on every chart refresh
            refresh_company_currencies(connection.vault.engine, [(system, t)], lambda _s: connection,
                                       lambda msg: click.echo(f"warning: {msg}", err=True))
            progress(i, len(tenants))
        return len(tenants)
    finally:
        http.close()
        connection.close()


def _print_link(tenant: str | None, system: str, ttl_hours: float, new_company: bool) -> None:
    from ledger_pipeline.service import links
    from ledger_pipeline.service.config import ServiceConfigError, link_secret, public_url

    if not tenant:
        raise click.UsageError("--link needs --tenant T (and --system S)")
    try:
        url = links.mint(public_url(), link_secret(), tenant, system, ttl=int(ttl_hours * 3600),
                         flags="new-company" if new_company else "")
    except (ServiceConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(url)


def _connection_status() -> None:
    from tabulate import tabulate

    from ledger_pipeline.service.health import connection_rows
    from ledger_pipeline.service.store import ServiceStore, ops_engine

    s = load_settings()
    engine = ops_engine(s.ops_database_url)
    rows = connection_rows(s, engine, ServiceStore(engine).health())
    click.echo(tabulate([(r.tenant_id, r.system or "-", r.company or "-", r.home_currency or "-", r.status,
                          r.last_ok or "-", r.last_posted_month or "-", r.last_check or "-") for r in rows],
                        headers=["tenant", "system", "company", "currency", "status", "last successful request",
                                 "last posted", "last check"]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no tenants")
    if any(r.status != "connected" for r in rows):
        click.echo("send a new link: ledger-pipeline connect --link --tenant T --system S")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
def serve(host: str, port: int) -> None:
    """The connection service: signed connect links, the providers' callbacks, the operator page
    (LEDGER_PUBLIC_URL, LEDGER_LINK_SECRET, LEDGER_OPERATOR_TOKEN, LEDGER_TRUSTED_PROXIES; see the README)."""
    from ledger_pipeline.service.config import ServiceConfigError, load_service_config
    from ledger_pipeline.service.server import serve as run_service

    try:
        config = load_service_config()
    except ServiceConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    s = load_settings()
    click.echo(f"connection service on http://{host}:{port}, public URL {config.public_url}; register "
               f"{config.callback_url('<system>')} with each provider"
               + ("" if config.operator_token else "; no operator page (LEDGER_OPERATOR_TOKEN unset)"))
    run_service(s, config, host, port)


@main.command()
@click.option("--tenant", "tenants", multiple=True, help="tenant to check (repeatable)")
@click.option("--all", "all_tenants", is_flag=True, help="every connected tenant")
@click.option("--month", default=None, help="YYYY-MM: also check the accounts that month's data needs and that its "
              "period is open")
def check(tenants: tuple[str, ...], all_tenants: bool, month: str | None) -> None:
    """Preflight without writing: the credential works, the company is the one on record, its home currency, every
    mapped account exists and is active, the month's period is open. Exit 1 when a tenant is not ready."""
    from ledger_pipeline.service.preflight import preflight_many, record
    from ledger_pipeline.service.store import ServiceStore, ops_engine, utcnow
    from ledger_pipeline.state.vault import tenant_systems

    if not tenants and not all_tenants:
        raise click.UsageError("give --tenant T (repeatable) or --all")
    s = load_settings()
    engine = ops_engine(s.ops_database_url)
    if all_tenants:
        tenants = tuple(sorted(t for t, (_, st, _) in tenant_systems(engine).items() if st == "connected"))
    first = _month_or_exit(month, "--month") if month else None
    store = ServiceStore(engine)
    failed = 0
    for report in preflight_many(s, tenants, first):
        record(report, store, utcnow())
        failed += not report.ok
        click.echo(f"{report.tenant_id} ({report.system or 'no system'}): {'ready' if report.ok else 'NOT READY'}")
        for c in report.checks:
            click.echo(f"  [{c.outcome:<7}] {c.name}: {c.detail}" + (f"\n            fix: {c.fix}" if c.fix else ""))
    click.echo(f"{len(tenants) - failed} ready, {failed} not ready")
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--month", required=True, help="YYYY-MM")
@click.option("--to", "to", default=None, help="last month YYYY-MM of a range (run as one Dagster run)")
@click.option("--dry-run", is_flag=True, help="plan the postings without calling the accounting systems")
@click.option("--allow-open-month", is_flag=True, help="close a month that has not ended yet in LEDGER_TIMEZONE "
              "(a deliberate early close; recorded in the run's tags as ledger/allow_open_month)")
def run(month: str, to: str | None, dry_run: bool, allow_open_month: bool) -> None:
    """Materialize the monthly close for a month or a range through Dagster (recorded in DAGSTER_HOME).

    Months are months in LEDGER_TIMEZONE: a month that has not ended there, or one before the first monthly
    partition (LEDGER_FIRST_MONTH), is refused with exit code 2 before anything runs.

    Exit codes: 0 completed, everything posted and reconciled; 3 completed with tenant-months not posted as our
    ledger says (rejected upstream, failed or pending postings, entries changed by hand held for a decision, a
    refused mass delete), each named; 1 the run failed or crashed; 2 usage (bad, open or too early month);
    130/143 stopped by Ctrl-C/SIGTERM."""
    sys.exit(_run_close(month, to, dry_run, allow_open_month))


@main.command()
@click.option("--tenant", required=True, help="the tenant_id, exactly as R2a has it")
@click.option("--month", required=True, help="YYYY-MM, a closed month whose entry is in our ledger")
@click.option("--accept-remote", is_flag=True, help="accept the entry as the tenant's system holds it now (an "
              "accountant's edit) as the new truth: its fingerprint is recorded and the close leaves it")
def repost(tenant: str, month: str, accept_remote: bool) -> None:
    """Re-read one tenant-month's entry in the tenant's own system and put it right, through Dagster (repost_job).

    Re-reads first; re-creates the entry if it is gone, updates it if it is ours (our id) and differs, leaves it if
    it matches. With --accept-remote, keeps the system's version instead. Exit codes: 0 done; 3 refused or not done
    (the reason names the tenant's system); 1 crashed; 2 usage (bad month, unknown tenant, no entry to re-post)."""
    from ledger_pipeline.state.database import make_ops_engine
    from ledger_pipeline.state.ledger import load_window
    from ledger_pipeline.state.vault import tenant_systems

    s = load_settings()
    period = _month_or_exit(month, "--month")
    engine = make_ops_engine(s.ops_database_url)
    if tenant not in tenant_systems(engine):
        raise click.UsageError(f"tenant {tenant!r} is not connected to an accounting system (see `ledger-pipeline "
                               f"connect --tenant {tenant} --system ...`)")
    from ledger_pipeline import clock

    entries, held = load_window(engine, period, clock.add_months(period, 1), [tenant])
    if not entries.get(tenant):
        why = ("was rejected upstream (see ledger.rejections): fix the source rows, then close the month again"
               if period in held.get(tenant, set()) else "has no entry in our ledger: close the month first "
               f"(`ledger-pipeline run --month {period:%Y-%m}`)")
        raise click.UsageError(f"tenant {tenant} {period:%Y-%m} {why}")
    sys.exit(_run_repost(s, tenant, period, accept_remote))


def _run_repost(s: Settings, tenant: str, period: dt.date, accept_remote: bool) -> int:
    os.environ.setdefault("DAGSTER_HOME", str(s.dagster_home))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    import dagster as dg

    from ledger_pipeline.definitions import defs
    from ledger_pipeline.jobs import DUCKDB_WRITER_TAG
    from ledger_pipeline.runs import execute_supervised

    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                  "ops": {"repost": {"config": {"tenant": tenant, "month": f"{period:%Y-%m}",
                                                "accept_remote": accept_remote}}}}
    what = "accepting the system's version of" if accept_remote else "re-reading and re-posting"
    click.echo(f"{what} {tenant} {period:%Y-%m} through Dagster (repost_job, "
               f"DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    with dg.DagsterInstance.get() as instance:
        outcome = execute_supervised(defs().resolve_job_def("repost_job"), instance,
                                     tags={**DUCKDB_WRITER_TAG, "ledger/repost": f"{tenant} {period:%Y-%m}"},
                                     run_config=run_config, timeout=s.wait_timeout,
                                     echo=lambda m: click.echo(m, err=True))
    code, problems = exit_code(outcome)
    if outcome.exit_code > 128:
        sys.stdout.flush()
        os._exit(outcome.exit_code)
    if code == EXIT_OK and outcome.result is not None:
        done = outcome.result.output_for_node("repost")
        click.echo(f"{tenant} {period:%Y-%m}: {done['result']} [{done['api_requests']} request(s), run "
                   f"{outcome.run_id}]")
    else:
        click.echo(f"{tenant} {period:%Y-%m}: not done (run {outcome.run_id}, exit {code})")
        for line in problems or ([outcome.message] if outcome.message else []):
            click.echo(f"  {line[:1500]}")
        if outcome.result is not None and code == EXIT_FAILED:
            for event in outcome.result.all_events:
                if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                    click.echo(f"  {event.step_key}: {event.step_failure_data.error.message.strip()[:1500]}")
    return code


@main.command()
@click.option("--tenant", default=None, help="one tenant only (with --on-edit/--on-delete: set its policy)")
@click.option("--on-edit", type=click.Choice(["hold", "overwrite"]), default=None,
              help="set what the close does with an entry edited by hand in the tenant's system (without --tenant: "
                   "the default for every tenant without its own)")
@click.option("--on-delete", type=click.Choice(["recreate", "hold"]), default=None,
              help="set what the close does with an entry deleted by hand (default recreate)")
def decisions(tenant: str | None, on_edit: str | None, on_delete: str | None) -> None:
    """Tenant-months that need an operator's decision: entries changed by hand in the tenant's system (edited,
    moved, or deleted under a hold policy) that the close holds, each with its diff and the commands that decide.

    Also sets the per-tenant policy (--on-edit hold|overwrite, --on-delete recreate|hold); defaults: hold, recreate."""
    from ledger_pipeline.reconcile import FOUND_BY, change_next
    from ledger_pipeline.remote_changes import ALL_TENANTS, RemoteChangeStore
    from ledger_pipeline.state.database import make_ops_engine
    from ledger_pipeline.systems import title as system_title

    s = load_settings()
    store = RemoteChangeStore(make_ops_engine(s.ops_database_url))
    if on_edit or on_delete:
        who = tenant or ALL_TENANTS
        policy = store.set_policy(who, on_edit, on_delete)
        click.echo(f"policy for {'every tenant without its own' if who == ALL_TENANTS else 'tenant ' + who}: "
                   f"on_edit={policy.on_edit}, on_delete={policy.on_delete}")
    held = store.decisions(tenant)
    if not held:
        click.echo("no tenant-month needs a decision" + (f" for tenant {tenant}" if tenant else ""))
    else:
        click.echo(f"{len(held)} tenant-month(s) need a decision:")
    for change, policy in held:
        title = system_title(change.system)
        when = f"{change.found_at:%Y-%m-%d %H:%M} UTC" if change.found_at else "?"
        click.echo(f"\n{change.tenant_id} {change.period:%Y-%m}  {title}  {change.custom_id}  {change.kind} by hand "
                   f"(found {when} by {FOUND_BY.get(change.found_by, change.found_by)}; {title} id "
                   f"{change.remote_id or '-'})")
        for line in (change.diff.split("; ") if change.diff else []):
            click.echo(f"    {line}")
        click.echo(f"  {change_next(change, title, policy)}")
    others = [c for c in store.all_open(tenant) if c not in {h for h, _ in held}]
    if others:
        click.echo(f"\n{len(others)} other change(s) made by hand that the next close acts on by policy "
                   "(re-create or overwrite): " + ", ".join(f"{c.tenant_id} {c.period:%Y-%m} ({c.kind})"
                                                             for c in others[:20]))


def _month_or_exit(value: str, what: str) -> dt.date:
    from ledger_pipeline import clock

    try:
        return clock.parse_month(value, what)
    except clock.MonthError as exc:
        raise click.UsageError(str(exc)) from exc


def _record_first_month(s: Settings, month: dt.date) -> None:
    """Embedded setup: the first monthly partition is recorded once, when data is first seeded or closed (see
    ledger_pipeline/clock.py), so it never moves under a running deployment."""
    from ledger_pipeline import clock

    if s.first_month_source.startswith("default") and clock.record_first_month(s.data_dir, min(
            month, clock.parse_month(s.first_month))):
        click.echo(f"first monthly partition recorded: {min(month, clock.parse_month(s.first_month)):%Y-%m} "
                   f"(in {s.data_dir / clock.FIRST_MONTH_FILE}; LEDGER_FIRST_MONTH overrides it)")


def _check_months(s: Settings, first: dt.date, last: dt.date, allow_open: bool) -> list[dt.date]:
    """The months of a close, refused (click.UsageError, exit 2) when empty, open, or before the first partition."""
    from ledger_pipeline import clock

    months = clock.months_between(first, last)
    try:
        if not months:
            raise clock.MonthError(f"--to {last:%Y-%m} is before --month {first:%Y-%m}")
        clock.ensure_closed(months, s.timezone, allow_open=allow_open)
        clock.ensure_after_first(months, clock.first_month(
            os.environ.get("LEDGER_FIRST_MONTH"), s.data_dir, s.timezone))
    except clock.MonthError as exc:
        raise click.UsageError(str(exc)) from exc
    return months


@main.command()
@click.option("--clear-dead", is_flag=True, help="mark runs whose process is gone failed and free their slots")
@click.option("--cancel", "cancel", default=None, metavar="RUN_ID", help="stop a live run (SIGTERM to a CLI run's "
              "process, or a termination request to a UI run's worker): it ends CANCELED and frees its slots")
def runs(clear_dead: bool, cancel: str | None) -> None:
    """In-flight runs in DAGSTER_HOME: what each holds (pool slots, the writer run tag) and whether it is alive."""
    s = load_settings()
    os.environ.setdefault("DAGSTER_HOME", str(s.dagster_home))
    import dagster as dg

    from ledger_pipeline import runs as liveness

    with dg.DagsterInstance.get() as instance:
        if cancel:
            click.echo(liveness.cancel(instance, cancel))
            return
        infos = liveness.runs_in_flight(instance)
        if not infos:
            click.echo("no runs in flight; no pool slot held")
        for info in infos:
            since = f"{info.since:%Y-%m-%d %H:%M:%S}" if info.since else "-"
            click.echo(f"{info.run_id}  {info.run.status.value:<10} {info.run.job_name}  since {since}\n"
                       f"    process: {info.liveness.state} ({info.liveness.detail})\n    holds: {info.holds}")
        dead = [i for i in infos if i.liveness.dead]
        if clear_dead:
            cleared = liveness.clear_dead(instance, f"`{liveness.CLEAR_COMMAND}`", click.echo)
            click.echo(f"cleared {len(cleared)} dead run(s)")
        elif dead:
            click.echo(f"{len(dead)} dead run(s): `{liveness.CLEAR_COMMAND}` marks them failed and frees their "
                       "slots (`ledger-pipeline run` also does it before it waits)")


def _run_close(month: str, to: str | None, dry_run: bool = False, allow_open: bool = False) -> int:
    """Run the close through Dagster; the exit code (EXIT_OK, EXIT_PROBLEMS, EXIT_FAILED or 128+signal)."""
    from ledger_pipeline import clock

    s = load_settings()
    months = _check_months(s, _month_or_exit(month, "--month"), _month_or_exit(to or month, "--to"), allow_open)
    _record_first_month(s, months[0])
    os.environ.setdefault("DAGSTER_HOME", str(s.dagster_home))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    import dagster as dg

    from ledger_pipeline.definitions import defs
    from ledger_pipeline.progress import listen
    from ledger_pipeline.runs import execute_supervised

    first, last = clock.month_key(months[0]), clock.month_key(months[-1])
    tags = ({"dagster/partition": first} if first == last else
            {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
    if allow_open:
        tags[clock.ALLOW_OPEN_MONTH_TAG] = "true"
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if dry_run:
        run_config["ops"] = {"postings": {"config": {"dry_run": True}}}
    click.echo(f"closing {first[:7]}{'' if first == last else ' .. ' + last[:7]} through Dagster "
               f"(DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    job = defs().resolve_job_def("monthly_close_job")
    t0 = time.time()
    stop_listening = listen(_progress_bar())
    try:
        with dg.DagsterInstance.get() as instance:
            outcome = execute_supervised(job, instance, tags=tags, run_config=run_config, timeout=s.wait_timeout,
                                         echo=lambda m: click.echo(m, err=True))
    finally:
        stop_listening()
    result = outcome.result
    code, problems = exit_code(outcome, dry_run)
    state = {EXIT_OK: "succeeded", EXIT_PROBLEMS: "completed with problems"}.get(
        code, outcome.status.value if outcome.status else "NOT STARTED")
    click.echo(f"run {outcome.run_id} {state} in {time.time() - t0:.1f}s")
    if outcome.message:
        click.echo(f"  {outcome.message}")
    if result is not None and not result.success:
        for event in result.all_events:
            if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                click.echo(f"  {event.step_key}: {event.step_failure_data.error.message.strip()[:800]}")
    if outcome.exit_code > 128:  # stopped by a signal: exit now, even if the run's thread is stuck in a call
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(outcome.exit_code)
    _summary(s, first, last)
    if code == EXIT_PROBLEMS:
        click.echo(f"\nexit {EXIT_PROBLEMS}: the run completed, but not every tenant-month is posted as our ledger "
                   "says (`ledger-pipeline decisions` lists changes made by hand held for a decision):")
        for line in [p for p in problems if p.startswith("check ")] or problems:  # step failures are shown above
            click.echo(f"  - {line[:1500]}")
    return code


def exit_code(outcome, dry_run: bool = False) -> tuple[int, list[str]]:  # noqa: ANN001  (runs.Outcome)
    """EXIT_OK, EXIT_PROBLEMS or EXIT_FAILED (or 128+signal) for a supervised run, and the problems named.

    3 when the run completed and recorded what it could not do: every step failure is one the assets mark as
    `completed_with_problems` (failed postings, a refused mass delete, a refused repost), or the run succeeded with a
    failed asset check (in a dry run only the postings check counts: nothing was meant to be reconciled). Anything
    else that failed is 1."""
    import dagster as dg

    from ledger_pipeline.assets.accounting import COMPLETED_WITH_PROBLEMS, OUTCOME_KEY, POSTINGS_CHECK

    result = outcome.result
    if outcome.exit_code > 1 or result is None:
        return outcome.exit_code, []
    problems: list[str] = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.event_specific_data
            if not check.passed and (not dry_run or check.check_name == POSTINGS_CHECK):
                problems.append(f"check {check.check_name} failed: {check.description or ''}".strip())
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    if outcome.exit_code == 1:
        marked = [e for e in failures if (data := e.step_failure_data.user_failure_data) is not None and
                  getattr(data.metadata.get(OUTCOME_KEY), "value", None) == COMPLETED_WITH_PROBLEMS]
        if not failures or len(marked) < len(failures) or outcome.message:
            return EXIT_FAILED, problems
        problems = [f"{e.step_key}: {e.step_failure_data.error.message.strip()[:800]}" for e in marked] + problems
        return EXIT_PROBLEMS, problems
    return (EXIT_PROBLEMS if problems else EXIT_OK), problems


def _progress_bar():  # noqa: ANN202
    """Posting progress from the run (same process): a bar redrawn in place on a terminal, a line per 10% otherwise."""
    tty, shown = sys.stderr.isatty(), set()

    def show(stage: str, p) -> None:  # noqa: ANN001  (progress.PostingProgress)
        width = 30
        filled = width * p.done // max(p.total, 1)
        line = f"  {stage} [{'#' * filled}{'.' * (width - filled)}] {p.describe()}"
        if tty:
            click.echo("\r" + line, nl=p.done >= p.total, err=True)
        elif (tenth := 10 * p.done // max(p.total, 1)) not in shown:
            shown.add(tenth)
            click.echo(line, err=True)
    return show


def _summary(s, first: str, last: str) -> None:  # noqa: ANN001
    from ledger_pipeline.warehouse.analyst import close_summary

    if not s.warehouse_path.exists():
        return
    start = dt.date.fromisoformat(first)
    end = clock.add_months(dt.date.fromisoformat(last), 1)
    lines = close_summary(s.warehouse_path, start, end)
    click.echo("\n".join(lines[:-1]))
    _summary_decisions(s, start, end)
    click.echo(lines[-1])
    click.echo("UI: make dev  (dagster dev on http://127.0.0.1:3000, runs recorded in dagster_home/)")


def _summary_decisions(s, start: dt.date, end: dt.date) -> None:  # noqa: ANN001
    """The window's entries changed by hand that the close holds for an operator's decision."""
    from ledger_pipeline.remote_changes import RemoteChangeStore
    from ledger_pipeline.state.database import make_ops_engine

    held = [c for c, _ in RemoteChangeStore(make_ops_engine(s.ops_database_url)).decisions() if start <= c.period < end]
    if held:
        click.echo(f"  changed by hand, held for a decision: {len(held)} (`ledger-pipeline decisions`): "
                   + ", ".join(f"{c.tenant_id} {c.period:%Y-%m} ({c.kind})" for c in held[:10])
                   + (" ..." if len(held) > 10 else ""))


@main.command()
@click.option("--tenants", default=40, show_default=True)
@click.option("--months", default=3, show_default=True, help="how many recent months to close")
@click.option("--rate-limit-scale", default=50.0, show_default=True,
              help="the sandbox's limits, time-scaled (50: every system's per-minute limit 50 times over)")
def demo(tenants: int, months: int, rate_limit_scale: float) -> None:
    """End to end on the embedded defaults: seed, sandbox, connect (five systems), close, reconcile, summary."""
    from ledger_pipeline.demo import DemoHooks, run_demo

    code = run_demo(tenants, months, rate_limit_scale, DemoHooks(
        progress=_progress, record_first_month=_record_first_month,
        connect=lambda s, tenants, system: _connect(s, tenants, auto=True, system=system),
        close=lambda first, last: _run_close(first, last), echo=click.echo))
    click.echo("5/5 done" + {EXIT_OK: "", EXIT_PROBLEMS: " (the seeded bad rows are rejected, as they should be: see "
                                                         "above; `ledger-pipeline run` exits 3 for that)"}.get(
        code, " (with failures: see above)"))
    click.echo("re-run `make demo`: nothing is posted twice (unchanged entries cost no request)")
    sys.exit(EXIT_OK if code in (EXIT_OK, EXIT_PROBLEMS) else EXIT_FAILED)


@main.command()
@click.option("--count", type=int, default=None, help="number of shards (default: LEDGER_SHARDS, 4)")
@click.option("--assign", is_flag=True, help="give every connected tenant without a shard the least-loaded one")
@click.option("--rebalance", is_flag=True, help="move the fewest tenants so that every tenant is on a shard below "
              "--count and shards differ by at most one tenant (refused while posting runs are in flight)")
@click.option("--dry-run", is_flag=True, help="show what --assign/--rebalance would do")
@click.option("--force", is_flag=True, help="rebalance without checking the Dagster instance for runs in flight")
def shards(count: int | None, assign: bool, rebalance: bool, dry_run: bool, force: bool) -> None:
    """Tenants per posting shard (production profile), from the operational database; assign or rebalance."""
    from ledger_pipeline.shards import command
    from ledger_pipeline.state.database import make_ops_engine
    from ledger_pipeline.state.vault import tenant_systems

    s = load_settings()
    engine = make_ops_engine(s.ops_database_url)
    sys.exit(command(engine, sorted(tenant_systems(engine)), count or s.shards, assign=assign, rebalance_=rebalance,
                     dry_run=dry_run, force=force, echo=click.echo))


@main.group()
def rates() -> None:
    """Exchange rates in the operational database (1 from_currency = rate to_currency on a date)."""


@rates.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rates_load(file: Path) -> None:
    """Load FILE.csv (columns date, from_currency, to_currency, rate; the rate as exact decimal text): all or
    nothing; a rate already loaded for the same pair and date is replaced. Bad lines are listed with their numbers."""
    from ledger_pipeline.ledger.rates import RateFileError
    from ledger_pipeline.rates import load_rates, read_rates_file
    from ledger_pipeline.state.database import make_ops_engine

    s = load_settings()
    try:
        parsed = read_rates_file(file)
    except RateFileError as exc:
        raise click.ClickException(str(exc)) from None
    result = load_rates(make_ops_engine(s.ops_database_url), parsed, str(file))
    click.echo(f"loaded {result.loaded:,} rate(s) from {file} ({result.replaced:,} replaced a rate for the same pair "
               f"and date) -> {safe_url(s.ops_database_url)}")


@rates.command("list")
@click.option("--from", "from_currency", default=None, help="only this base currency (ISO 4217)")
@click.option("--to", "to_currency", default=None, help="only this quote currency (ISO 4217)")
@click.option("--month", default=None, help="only rates dated in this month, YYYY-MM")
def rates_list(from_currency: str | None, to_currency: str | None, month: str | None) -> None:
    """The loaded rates, by date and pair."""
    from tabulate import tabulate

    from ledger_pipeline.rates import list_rates
    from ledger_pipeline.state.database import make_ops_engine

    start = end = None
    if month:
        try:
            start = dt.datetime.strptime(month, "%Y-%m").date()
        except ValueError:
            raise click.BadParameter(f"{month!r} is not a month (YYYY-MM)", param_hint="--month") from None
        end = clock.add_months(start, 1)
    found = list_rates(make_ops_engine(load_settings().ops_database_url), from_currency, to_currency, start, end)
    if not found:
        click.echo("no exchange rates loaded" + (" for that selection" if from_currency or to_currency or month
                                                 else ": ledger-pipeline rates load FILE.csv"))
        return
    click.echo(tabulate([[r.rate.day.isoformat(), r.rate.from_currency, r.rate.to_currency, f"{r.rate.rate:f}",
                          r.source or "", f"{r.loaded_at:%Y-%m-%d %H:%M:%S}" if r.loaded_at else ""] for r in found],
                        headers=["date", "from_currency", "to_currency", "rate", "source", "loaded_at (UTC)"],
                        disable_numparse=True))


if __name__ == "__main__":
    main()
