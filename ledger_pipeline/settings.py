"""Every environment variable and its default, in one place.

Read at call time (never at import) so tests and the CLI can point the pipeline elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
SANDBOX_PORT = 8765
SANDBOX_CLIENT_ID = "ledger-pipeline-sandbox"
SANDBOX_CLIENT_SECRET = "sandbox-secret-not-for-production"  # noqa: S105 - a public sandbox value


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
    rate_limit_scale: float  # JURNAL_RATE_LIMIT_SCALE: match the sandbox's --rate-limit-scale
    account_mapping_path: Path

    @property
    def lock_dir(self) -> Path:
        return self.data_dir / "locks"


def load_settings() -> Settings:
    env = os.environ
    data_dir = Path(env.get("LEDGER_DATA_DIR", DATA_DIR))
    warehouse = Path(env.get("LEDGER_WAREHOUSE", data_dir / "warehouse.duckdb"))
    sandbox = f"http://127.0.0.1:{SANDBOX_PORT}"
    return Settings(
        data_dir=data_dir,
        r2a_database_url=env.get("R2A_DATABASE_URL", f"sqlite:///{data_dir / 'r2a.sqlite'}"),
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
        rate_limit_scale=float(env.get("JURNAL_RATE_LIMIT_SCALE", "1")),
        account_mapping_path=Path(env.get("LEDGER_ACCOUNT_MAPPING", DATA_DIR / "account_mapping.csv")),
    )
