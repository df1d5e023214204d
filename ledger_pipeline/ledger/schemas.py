"""The pandera contract for journal lines, validated once per partition frame (never per tenant).

Failures become rejections (stage `validate`) with a reason a person can read; valid entries go on.
"""

import copy
import datetime as dt

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from ledger_pipeline.ledger.journal import REJECTION_COLUMNS
from ledger_pipeline.money import CURRENCIES as _BOOKABLE
from ledger_pipeline.money import format_amount

# Every ISO 4217 code books can be kept in (money.CURRENCIES, from the iso4217 package: minor unit 0..3).
CURRENCIES = sorted(_BOOKABLE)


class JournalLines(pa.DataFrameModel):
    """One row per journal line; amounts are int64 minor units of the line's `currency` (ISO 4217, its own minor
    unit: JPY 0 decimals, IDR 2, KWD 3), exactly one side positive; one currency per entry, so every total (the
    balance check) is within one currency.

    Frame-level checks use ignore_na=False: the columns they read are non-nullable, and pandera would otherwise
    compute a null mask over every column for each check (most of the cost on a 1 M-line frame)."""

    # String columns are coerced to pandas' string dtype first: pandera then checks the dtype once instead of
    # calling isinstance on every element (4 M calls for 1 M lines).
    tenant_id: Series[pd.StringDtype] = pa.Field(nullable=False, coerce=True)
    period: Series[pd.Timestamp] = pa.Field(nullable=False)
    transaction_date: Series[pd.Timestamp] = pa.Field(nullable=False)
    custom_id: Series[pd.StringDtype] = pa.Field(nullable=False, coerce=True)
    entry_no: Series[int] = pa.Field(ge=0)  # integer key of custom_id: grouping on it is cheap
    line_no: Series[int] = pa.Field(ge=1)
    account_id: Series[pd.StringDtype] = pa.Field(nullable=False, coerce=True)
    account_number: Series[pd.StringDtype] = pa.Field(nullable=False, coerce=True)
    debit_minor: Series[int] = pa.Field(ge=0)
    credit_minor: Series[int] = pa.Field(ge=0)
    currency: Series[pd.StringDtype] = pa.Field(nullable=False, coerce=True)

    @pa.check("currency", name="iso_4217_currency", error="a currency that is not an ISO 4217 code books can be "
                                                          "kept in")
    def iso_4217(cls, currency: Series[pd.StringDtype]) -> Series[bool]:
        return currency.isin(_BOOKABLE)

    @pa.dataframe_check(name="one_side_per_line", ignore_na=False,
                        error="a line has both a debit and a credit, or neither")
    def one_side(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["debit_minor"] > 0) != (df["credit_minor"] > 0)

    @pa.dataframe_check(name="entry_balances", ignore_na=False,
                        error="the entry does not balance (debits must equal credits exactly)")
    def balances(cls, df: pd.DataFrame) -> Series[bool]:
        g = df.groupby("entry_no")
        return g["debit_minor"].transform("sum") == g["credit_minor"].transform("sum")

    @pa.dataframe_check(name="one_currency_per_entry", ignore_na=False,
                        error="the entry mixes currencies (every line of an entry is in one currency)")
    def one_currency(cls, df: pd.DataFrame) -> Series[bool]:
        return df["currency"] == df.groupby("entry_no")["currency"].transform("first")

    @pa.dataframe_check(name="at_least_two_lines", ignore_na=False,
                        error="an entry needs at least two lines")
    def two_lines(cls, df: pd.DataFrame) -> Series[bool]:
        return df.groupby("entry_no")["line_no"].transform("size") >= 2

    @pa.dataframe_check(name="unique_line_numbers", ignore_na=False,
                        error="two lines share a line number")
    def unique_lines(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(["entry_no", "line_no"], keep=False)

    @pa.dataframe_check(name="dated_month_end", ignore_na=False,
                        error="the entry is not dated the last day of its period")
    def month_end(cls, df: pd.DataFrame) -> Series[bool]:
        day, period = df["transaction_date"].dt, df["period"].dt
        last_day = (df["transaction_date"] + pd.Timedelta(days=1)).dt.day == 1
        return last_day & (day.month == period.month) & (day.year == period.year) & (period.day == 1)

    class Config:
        strict = False
        name = "JournalLines"


READABLE = {
    "greater_than_or_equal_to(0)": "a negative amount",
    "greater_than_or_equal_to(1)": "a line number below 1",
    "not_nullable": "a missing value",
    "iso_4217_currency": "a currency that is not an ISO 4217 code books can be kept in",
    "one_currency_per_entry": "the entry mixes currencies",
}


def journal_lines_schema(start: dt.date, end: dt.date) -> pa.DataFrameSchema:
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    schema = copy.copy(JournalLines.to_schema())  # to_schema() is cached: never mutate it
    schema.checks = [*schema.checks, pa.Check(lambda df: (df["period"] >= lo) & (df["period"] < hi),
                                              name="period_in_partition", ignore_na=False,
                                              error=f"the entry is outside the partition [{start}, {end})")]
    return schema


def _readable(check: object, column: object, context: str) -> str:
    check = str(check)
    if check.startswith("dtype("):
        wanted = check[7:-2]
        hint = " (amounts must be int64 minor units, never float)" if "int" in wanted else ""
        return f"column {column} does not have type {wanted}{hint}"
    if check == "column_in_dataframe":
        return f"column {column} is missing"
    if context == "DataFrameSchema":
        return READABLE.get(check, check)
    return f"{READABLE.get(check, check)} in {column}"


def validate_lines(lines: pd.DataFrame, start: dt.date, end: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid lines, rejections): every entry with a failing line is rejected whole, with readable reasons."""
    try:
        journal_lines_schema(start, end).validate(lines, lazy=True)
        return lines, pd.DataFrame(columns=REJECTION_COLUMNS)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    per_row = cases[cases["index"].notna()]
    whole = cases[cases["index"].isna()]
    reasons: dict[str, list[str]] = {}
    if len(whole):  # frame-level failure (a wrong dtype, a missing column): every entry is affected
        text = sorted({
            _readable(c, col if ctx == "Column" else fc, ctx) + (f" (found {fc})" if ctx == "Column" else "")
            for c, col, fc, ctx in zip(whole["check"], whole["column"], whole["failure_case"],
                                       whole["schema_context"], strict=True)
            if not str(fc).startswith("KeyError")
        })
        for cid in lines["custom_id"].unique():
            reasons.setdefault(cid, []).extend(text)
    if len(per_row):
        idx = per_row["index"].astype(int).to_numpy()
        failed = pd.DataFrame({
            "custom_id": lines["custom_id"].to_numpy()[lines.index.get_indexer(idx)],
            "line_no": lines["line_no"].to_numpy()[lines.index.get_indexer(idx)],
            "why": [_readable(c, col, ctx) for c, col, ctx in
                    zip(per_row["check"], per_row["column"], per_row["schema_context"], strict=True)],
        })
        failed = failed.drop_duplicates()
        for cid, grp in failed.groupby("custom_id"):
            reasons.setdefault(cid, []).extend(
                f"{why} (line {', '.join(map(str, sorted(set(g['line_no']))))})" for why, g in grp.groupby("why"))
    bad = lines["custom_id"].isin(reasons)
    heads = lines[bad].drop_duplicates("custom_id")
    if {"debit_minor", "credit_minor"} <= set(lines.columns):  # show the totals a bookkeeper would check
        reasons = _totals(lines[bad], reasons)
    rejections = pd.DataFrame({
        "tenant_id": heads["tenant_id"].to_numpy(),
        "period": heads["period"].to_numpy(),
        "stage": "validate",
        "reason": "journal contract: " + pd.Series([reasons[c][0].split(" (")[0] for c in heads["custom_id"]]),
        "detail": [f"tenant {t}, {p:%Y-%m}, entry {c}: " + "; ".join(dict.fromkeys(reasons[c]))
                   + ". Nothing was posted for this tenant-month."
                   for t, p, c in zip(heads["tenant_id"], heads["period"], heads["custom_id"], strict=True)],
    })
    return lines[~bad], rejections


def _totals(bad: pd.DataFrame, reasons: dict[str, list[str]]) -> dict[str, list[str]]:
    """Append each rejected entry's debit and credit totals, per currency (never added across currencies), in the
    currency's own decimals; amounts of a currency books cannot use are shown as minor units."""
    currency = bad["currency"].astype("object") if "currency" in bad else pd.Series(None, index=bad.index)
    keyed = bad.assign(_currency=currency.where(currency.isin(_BOOKABLE), "?"))
    sums = keyed.groupby(["custom_id", "_currency"])[["debit_minor", "credit_minor"]].sum()
    for (cid, cur), row in sums.iterrows():
        debit, credit = int(row["debit_minor"]), int(row["credit_minor"])
        if cur == "?":
            reasons[cid].append(f"debits {debit:,}, credits {credit:,} (minor units of an unknown currency)")
        else:
            reasons[cid].append(f"debits {format_amount(debit, cur)} {cur}, credits {format_amount(credit, cur)} "
                                f"{cur}")
    return reasons


def validated_entries(lines: pd.DataFrame, entries: pd.DataFrame) -> pd.DataFrame:
    """The entries whose lines survived validation (an entry is rejected whole, so its totals stand)."""
    return entries[entries["custom_id"].isin(set(lines["custom_id"]))]
