"""The sandbox's persistent state: companies, charts, OAuth grants and journal entries in one SQLite file.

Amounts are stored as integer minor units. All access happens on the server's event-loop thread. Entry and line ids
are never reused (AUTOINCREMENT), as a real database's sequences never reuse them: a deleted entry's id, or the ids
of lines typed in again, cannot come back for something else.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import time
from pathlib import Path

from ledger_pipeline.sandboxes.base import transaction
from ledger_pipeline.sandboxes.chart import DEFAULT_CHART

SCHEMA = """
CREATE TABLE IF NOT EXISTS companies (id INTEGER PRIMARY KEY, login TEXT UNIQUE NOT NULL, name TEXT,
  lock_date TEXT, next_no INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL, number TEXT, name TEXT,
  category TEXT, category_id INTEGER, parent_id INTEGER, archived INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS auth_codes (code TEXT PRIMARY KEY, company_id INTEGER, client_id TEXT,
  redirect_uri TEXT, expires_at REAL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS grants (id INTEGER PRIMARY KEY, company_id INTEGER, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS access_tokens (token TEXT PRIMARY KEY, grant_id INTEGER, expires_at REAL);
CREATE TABLE IF NOT EXISTS refresh_tokens (token TEXT PRIMARY KEY, grant_id INTEGER, expires_at REAL,
  used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, company_id INTEGER NOT NULL, custom_id TEXT,
  transaction_no TEXT NOT NULL, transaction_date TEXT NOT NULL, memo TEXT, tags TEXT, created_at REAL,
  updated_at REAL, UNIQUE (company_id, custom_id), UNIQUE (company_id, transaction_no));
CREATE TABLE IF NOT EXISTS lines (id INTEGER PRIMARY KEY AUTOINCREMENT, entry_id INTEGER NOT NULL,
  account_id INTEGER NOT NULL, debit_minor INTEGER NOT NULL, credit_minor INTEGER NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS hmac_credentials (client_id TEXT PRIMARY KEY, secret TEXT NOT NULL,
  company_id INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS ix_lines_entry ON lines (entry_id);
CREATE INDEX IF NOT EXISTS ix_entries_company_date ON entries (company_id, transaction_date);
"""
CATEGORY_IDS = {name: i for i, name in enumerate(dict.fromkeys(c for _, _, c in DEFAULT_CHART), start=1)}


class SandboxState:
    def __init__(self, path: Path | str | None):
        self.path = str(path) if path else ":memory:"
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        try:  # a state file from before companies kept a currency (Jurnal's GET /companies/get_currency)
            self.db.execute("ALTER TABLE companies ADD COLUMN currency TEXT NOT NULL DEFAULT 'IDR'")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise

    def close(self) -> None:
        self.db.close()

    # -- companies and charts -------------------------------------------------------------------------------
    def company_for_login(self, login: str) -> int:
        row = self.db.execute("SELECT id FROM companies WHERE login = ?", (login,)).fetchone()
        if row:
            return row["id"]
        with transaction(self.db):
            cur = self.db.execute("INSERT INTO companies (login, name) VALUES (?, ?)", (login, f"PT {login}"))
            company_id = cur.lastrowid
            self.db.executemany(
                "INSERT INTO accounts (company_id, number, name, category, category_id) VALUES (?, ?, ?, ?, ?)",
                [(company_id, n, name, cat, CATEGORY_IDS[cat]) for n, name, cat in DEFAULT_CHART],
            )
        return company_id

    def company(self, company_id: int) -> sqlite3.Row:
        return self.db.execute("SELECT * FROM companies WHERE id = ?", (company_id,)).fetchone()

    def company_by_login(self, login: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM companies WHERE login = ?", (login,)).fetchone()

    def accounts(self, company_id: int, include_archive: bool = True) -> list[sqlite3.Row]:
        sql = "SELECT * FROM accounts WHERE company_id = ?" + ("" if include_archive else " AND archived = 0")
        return self.db.execute(sql + " ORDER BY number, id", (company_id,)).fetchall()

    # -- OAuth ----------------------------------------------------------------------------------------------
    def new_code(self, company_id: int, client_id: str, redirect_uri: str) -> str:
        code = secrets.token_urlsafe(24)
        self.db.execute(
            "INSERT INTO auth_codes (code, company_id, client_id, redirect_uri, expires_at) VALUES (?, ?, ?, ?, ?)",
            (code, company_id, client_id, redirect_uri, time.time() + 600),
        )
        return code

    def redeem_code(self, code: str, client_id: str) -> int | None:
        row = self.db.execute("SELECT * FROM auth_codes WHERE code = ?", (code,)).fetchone()
        if not row or row["used"] or row["expires_at"] < time.time() or row["client_id"] != client_id:
            return None
        self.db.execute("UPDATE auth_codes SET used = 1 WHERE code = ?", (code,))
        cur = self.db.execute("INSERT INTO grants (company_id) VALUES (?)", (row["company_id"],))
        return cur.lastrowid

    def issue_tokens(self, grant_id: int, access_ttl: float, refresh_ttl: float) -> tuple[str, str]:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.time()
        self.db.execute("INSERT INTO access_tokens VALUES (?, ?, ?)", (access, grant_id, now + access_ttl))
        self.db.execute("INSERT INTO refresh_tokens (token, grant_id, expires_at) VALUES (?, ?, ?)",
                        (refresh, grant_id, now + refresh_ttl))
        return access, refresh

    def use_refresh_token(self, token: str) -> int | None:
        """Single use: the grant id if the token is live, and the token is spent either way."""
        row = self.db.execute(
            "SELECT r.*, g.revoked FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.token = ?",
            (token,),
        ).fetchone()
        if not row or row["used"] or row["revoked"] or row["expires_at"] < time.time():
            return None
        self.db.execute("UPDATE refresh_tokens SET used = 1 WHERE token = ?", (token,))
        return row["grant_id"]

    def revoke_token(self, token: str) -> bool:
        """Revoking an access or refresh token revokes its whole grant."""
        row = self.db.execute(
            "SELECT grant_id FROM access_tokens WHERE token = ? UNION ALL "
            "SELECT grant_id FROM refresh_tokens WHERE token = ?", (token, token)
        ).fetchone()
        if row:
            self.db.execute("UPDATE grants SET revoked = 1 WHERE id = ?", (row["grant_id"],))
        return bool(row)

    def revoke_company(self, company_id: int) -> None:
        self.db.execute("UPDATE grants SET revoked = 1 WHERE company_id = ?", (company_id,))
        self.db.execute("UPDATE hmac_credentials SET revoked = 1 WHERE company_id = ?", (company_id,))

    # -- Mekari HMAC credentials (one pair per company and product, issued in Mekari's developer dashboard) ------
    def issue_hmac(self, company_id: int) -> tuple[str, str]:
        client_id, secret = f"hmac-{secrets.token_hex(8)}", secrets.token_urlsafe(32)
        self.db.execute("INSERT INTO hmac_credentials (client_id, secret, company_id) VALUES (?, ?, ?)",
                        (client_id, secret, company_id))
        return client_id, secret

    def hmac_credential(self, client_id: str) -> sqlite3.Row | None:
        """The live credential with this client id (None: unknown or revoked)."""
        return self.db.execute("SELECT * FROM hmac_credentials WHERE client_id = ? AND revoked = 0",
                               (client_id,)).fetchone()

    def company_for_access_token(self, token: str) -> tuple[int | None, str]:
        row = self.db.execute(
            "SELECT a.expires_at, g.company_id, g.revoked FROM access_tokens a JOIN grants g ON g.id = a.grant_id "
            "WHERE a.token = ?", (token,),
        ).fetchone()
        if not row:
            return None, "unknown token"
        if row["revoked"]:
            return None, "token revoked"
        if row["expires_at"] < time.time():
            return None, "token expired"
        return row["company_id"], ""

    # -- journal entries ------------------------------------------------------------------------------------
    def find_entry(self, company_id: int, ref: str) -> sqlite3.Row | None:
        row = self.db.execute("SELECT * FROM entries WHERE company_id = ? AND custom_id = ?",
                              (company_id, ref)).fetchone()
        if row is None and ref.isdigit():
            row = self.db.execute("SELECT * FROM entries WHERE company_id = ? AND id = ?",
                                  (company_id, int(ref))).fetchone()
        return row

    def entry_lines(self, entry_ids: list[int]) -> dict[int, list[sqlite3.Row]]:
        out: dict[int, list[sqlite3.Row]] = {i: [] for i in entry_ids}
        for lo in range(0, len(entry_ids), 500):
            chunk = entry_ids[lo : lo + 500]
            rows = self.db.execute(
                "SELECT l.*, a.name AS account_name, a.number AS account_number, a.category AS account_category, "
                "a.category_id AS account_category_id "
                "FROM lines l JOIN accounts a ON a.id = l.account_id "
                f"WHERE l.entry_id IN ({','.join('?' * len(chunk))}) "
                "ORDER BY l.id", chunk,
            ).fetchall()
            for r in rows:
                out[r["entry_id"]].append(r)
        return out

    def list_entries(self, company_id: int | None, start: dt.date | None = None, end: dt.date | None = None,
                     transaction_no: str | None = None, limit: int = -1, offset: int = 0) -> tuple[list, int]:
        where, params = [], []
        if company_id is not None:
            where.append("company_id = ?")
            params.append(company_id)
        if start:
            where.append("transaction_date >= ?")
            params.append(start.isoformat())
        if end:
            where.append("transaction_date <= ?")
            params.append(end.isoformat())
        if transaction_no:
            where.append("transaction_no = ?")
            params.append(transaction_no)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = self.db.execute(f"SELECT COUNT(*) FROM entries {clause}", params).fetchone()[0]
        rows = self.db.execute(
            f"SELECT * FROM entries {clause} ORDER BY transaction_date, id LIMIT ? OFFSET ?", [*params, limit, offset]
        ).fetchall()
        return rows, total

    def next_transaction_no(self, company_id: int) -> str:
        row = self.db.execute("SELECT next_no FROM companies WHERE id = ?", (company_id,)).fetchone()
        self.db.execute("UPDATE companies SET next_no = next_no + 1 WHERE id = ?", (company_id,))
        return f"JE/{row['next_no']:05d}"
