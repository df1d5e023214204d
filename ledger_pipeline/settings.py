"""Every environment variable and its default, in one place.

Read at call time (never at import) so tests and the CLI can point the pipeline elsewhere.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ledger_pipeline import clock

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
SANDBOX_PORT = 8765
SANDBOX_CLIENT_ID = "ledger-pipeline-sandbox"
SANDBOX_CLIENT_SECRET = "sandbox-secret-not-for-production"  # noqa: S105 - a public sandbox value


DEMO_MONTHS = 12  # `ledger-pipeline demo` and `seed` default: the 12 months ending with the last complete month


RATE_LIMIT_SCALE_ENV = "LEDGER_RATE_LIMIT_SCALE"
DEPRECATED_RATE_LIMIT_SCALE_ENV = "JURNAL_RATE_LIMIT_SCALE"  # 0.2.0's name, read for one more release (until 0.4.0)
_warned_deprecated_scale = False


def resolve_rate_limit_scale(env: os._Environ[str] | dict[str, str] | None = None) -> float:
    """The clients' pacing clock: LEDGER_RATE_LIMIT_SCALE, else JURNAL_RATE_LIMIT_SCALE (deprecated: a FutureWarning
    once per process), else 1. Raises ValueError naming the variable when the value is not a positive number."""
    env = os.environ if env is None else env
    name = RATE_LIMIT_SCALE_ENV
    raw = env.get(name)
    if raw is None and env.get(DEPRECATED_RATE_LIMIT_SCALE_ENV) is not None:
        name, raw = DEPRECATED_RATE_LIMIT_SCALE_ENV, env[DEPRECATED_RATE_LIMIT_SCALE_ENV]
        global _warned_deprecated_scale
        if not _warned_deprecated_scale:
            _warned_deprecated_scale = True
            warnings.warn(f"{DEPRECATED_RATE_LIMIT_SCALE_ENV} is deprecated and will be removed in 0.4.0: set "
                          f"{RATE_LIMIT_SCALE_ENV} instead (it paces every system's client, not only Jurnal's)",
                          FutureWarning, stacklevel=3)
    try:
        scale = float(raw) if raw is not None else 1.0
    except ValueError:
        scale = float("nan")
    if not scale > 0 or scale == float("inf"):
        raise ValueError(f"{name}={raw!r} is not a positive number (e.g. 1 against real systems, the sandbox's "
                         "--rate-limit-scale against it)")
    return scale


def resolve_ops_database_url(env: os._Environ[str] | dict[str, str], data_dir: Path) -> str:
    """LEDGER_OPS_DATABASE_URL; unset: `data/ops.sqlite` (its own file, never R2a's database) in the embedded profile,
    "" in the production profile, whose hosts must share one database (opening "" raises, naming the variable)."""
    url = env.get("LEDGER_OPS_DATABASE_URL", "").strip()
    if url:
        return url
    if env.get("LEDGER_PROFILE", "").strip().lower() == "production":
        return ""
    return f"sqlite:///{data_dir / 'ops.sqlite'}"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    r2a_database_url: str
    warehouse_path: Path  # LEDGER_WAREHOUSE: the published snapshot analysts open
    work_warehouse_path: Path  # private DuckDB file the runs write
    jurnal_api_base_url: str
    jurnal_oauth_base_url: str
    jurnal_client_id: str
    jurnal_client_secret: str
    encryption_key: str | None
    key_file: Path
    dagster_home: Path
    rate_limit_scale: float  # LEDGER_RATE_LIMIT_SCALE (deprecated alias JURNAL_RATE_LIMIT_SCALE): the sandbox's scale
    account_mapping_path: Path
    chart_max_age_hours: float = 36.0  # LEDGER_CHART_MAX_AGE_HOURS: charts fresher than this are reused by a close
    drift_requests_per_hour: int = 600  # LEDGER_DRIFT_REQUESTS_PER_HOUR: the drift job's budget per (hourly) run
    ops_database_url: str = ""  # LEDGER_OPS_DATABASE_URL: posting state, tokens, shards (default data/ops.sqlite)
    sandbox_url: str = ""  # LEDGER_SANDBOX_URL: every system's default endpoints point into this sandbox
    source_address: str | None = None  # LEDGER_SOURCE_ADDRESS: local address outgoing API traffic binds (None: OS)
    first_month: str = ""  # the first monthly partition 'YYYY-MM' (clock.first_month: env, recorded, default)
    first_month_source: str = ""  # where first_month came from (LEDGER_FIRST_MONTH, the data dir's record, default)
    timezone: str = "Asia/Jakarta"  # LEDGER_TIMEZONE: the business timezone (IANA), see ledger_pipeline/clock.py
    wait_timeout: float = 600.0  # LEDGER_WAIT_TIMEOUT: seconds a run waits for a pool slot or the DuckDB lock
    profile: str = "embedded"  # LEDGER_PROFILE: "embedded" (one process, the default) or "production" (deploy/)
    shards: int = 4  # LEDGER_SHARDS: posting shards in the production profile (one Celery queue and worker each)
    celery_broker: str = "amqp://guest:guest@127.0.0.1:5672//"  # LEDGER_CELERY_BROKER (production profile)
    celery_backend: str = "redis://127.0.0.1:6379/0"  # LEDGER_CELERY_BACKEND (production profile)

    def system_env(self, system: str, name: str, default: str) -> str:
        """`<SYSTEM>_<NAME>` from the environment (e.g. QUICKBOOKS_API_BASE_URL), else the default."""
        return os.environ.get(f"{system.upper()}_{name}", default).rstrip("/")

    @property
    def lock_dir(self) -> Path:
        return self.data_dir / "locks"


def load_settings() -> Settings:
    env = os.environ
    data_dir = Path(env.get("LEDGER_DATA_DIR", DATA_DIR))
    warehouse = Path(env.get("LEDGER_WAREHOUSE", data_dir / "warehouse.duckdb"))
    sandbox = env.get("LEDGER_SANDBOX_URL", f"http://127.0.0.1:{SANDBOX_PORT}").rstrip("/")
    r2a_url = env.get("R2A_DATABASE_URL", f"sqlite:///{data_dir / 'r2a.sqlite'}")
    tz = clock.business_timezone(env.get("LEDGER_TIMEZONE"))
    profile = env.get("LEDGER_PROFILE", "embedded").strip().lower() or "embedded"
    if profile == "production" and not env.get("LEDGER_FIRST_MONTH", "").strip():
        raise clock.MonthError("LEDGER_FIRST_MONTH is required in the production profile (LEDGER_PROFILE=production):"
                               " set it to your go-live month (YYYY-MM) so the monthly partitions never move")
    first = clock.first_month(env.get("LEDGER_FIRST_MONTH"), data_dir, tz)
    return Settings(
        data_dir=data_dir,
        r2a_database_url=r2a_url,
        warehouse_path=warehouse,
        work_warehouse_path=Path(
            env.get("LEDGER_WORK_WAREHOUSE", warehouse.parent / "work" / f"{warehouse.stem}.work.duckdb")
        ),
        jurnal_api_base_url=env.get("JURNAL_API_BASE_URL", f"{sandbox}/partner/core/api/v1").rstrip("/"),
        jurnal_oauth_base_url=env.get("JURNAL_OAUTH_BASE_URL", sandbox).rstrip("/"),
        jurnal_client_id=env.get("JURNAL_CLIENT_ID", SANDBOX_CLIENT_ID),
        jurnal_client_secret=env.get("JURNAL_CLIENT_SECRET", SANDBOX_CLIENT_SECRET),
        encryption_key=env.get("LEDGER_ENCRYPTION_KEY") or None,
        key_file=data_dir / "encryption.key",
        dagster_home=Path(env.get("DAGSTER_HOME", PROJECT_ROOT / "dagster_home")),
        rate_limit_scale=resolve_rate_limit_scale(env),
        account_mapping_path=Path(env.get("LEDGER_ACCOUNT_MAPPING", DATA_DIR / "account_mapping.csv")),
        ops_database_url=resolve_ops_database_url(env, data_dir),
        chart_max_age_hours=float(env.get("LEDGER_CHART_MAX_AGE_HOURS", "36")),
        drift_requests_per_hour=int(env.get("LEDGER_DRIFT_REQUESTS_PER_HOUR", "600")),
        sandbox_url=sandbox,
        source_address=env.get("LEDGER_SOURCE_ADDRESS") or None,
        first_month=f"{first.month:%Y-%m}",
        first_month_source=first.source,
        timezone=tz.key,
        wait_timeout=float(env.get("LEDGER_WAIT_TIMEOUT", "600")),
        profile=profile,
        celery_broker=env.get("LEDGER_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
        celery_backend=env.get("LEDGER_CELERY_BACKEND", "redis://127.0.0.1:6379/0"),
        shards=int(env.get("LEDGER_SHARDS", "4")),
    )


def safe_url(url: str) -> str:
    """A database URL without its password (for messages and logs)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
