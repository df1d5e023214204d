"""The monthly partitions, shared by every partitioned asset, job and schedule.

Months in the business timezone (LEDGER_TIMEZONE, see ledger_pipeline/clock.py) from the first month (clock.first_month:
LEDGER_FIRST_MONTH, else the embedded setup's recorded month) to the last complete month: Dagster offers exactly the
months `clock.last_complete_month` says have ended, because both read the same timezone and the same clock.

Nothing here reads a setting at import. Dagster needs a partitions definition where an asset is declared, so the
assets are declared with `monthly_partitions`, a placeholder built from code constants only;
`definitions.defs()` replaces it with the settings' partitions (`settings_partitions`, `with_partitions`) when
Dagster loads the code location: a changed LEDGER_FIRST_MONTH or LEDGER_TIMEZONE takes effect on the next
code-location (re)load.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import dagster as dg

from ledger_pipeline import clock

if TYPE_CHECKING:
    from ledger_pipeline.settings import Settings

month_key = clock.month_key  # kept importable from here ('2025-11' -> '2025-11-01')


def build_monthly_partitions(first_month: str, timezone: str = clock.DEFAULT_TIMEZONE
                             ) -> dg.MonthlyPartitionsDefinition:
    """Monthly partitions from `first_month` ('YYYY-MM') to the last complete month in `timezone`."""
    return dg.MonthlyPartitionsDefinition(start_date=clock.month_key(first_month), timezone=timezone)


# The placeholder the assets are declared with, from code constants only; replaced by the settings' months when the
# definitions are built (`with_partitions`). Its first month is early enough that tests materializing the assets as
# declared (dg.materialize(ASSETS, ...)) can pick any month they seed.
PLACEHOLDER_FIRST_MONTH = "2000-01"
monthly_partitions = build_monthly_partitions(PLACEHOLDER_FIRST_MONTH, clock.DEFAULT_TIMEZONE)


def settings_partitions(settings: Settings) -> dg.MonthlyPartitionsDefinition:
    """The partitions the settings name (LEDGER_FIRST_MONTH, LEDGER_TIMEZONE): the ones Dagster offers."""
    return build_monthly_partitions(settings.first_month, settings.timezone)


def _replaced(partitions_def: dg.PartitionsDefinition | None, months: dg.PartitionsDefinition
              ) -> dg.PartitionsDefinition | None:
    """`partitions_def` with the placeholder replaced by `months`."""
    return months if partitions_def == monthly_partitions else partitions_def


def with_partitions(assets: Iterable[dg.AssetsDefinition | dg.AssetSpec], months: dg.PartitionsDefinition
                    ) -> Sequence[dg.AssetsDefinition | dg.AssetSpec]:
    """The assets with the placeholder partitions replaced by `months` (the others unchanged). The jobs take their
    partitions from their assets (no partitions_def of their own), so they follow."""
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(partitions_def=_replaced(spec.partitions_def, months)), assets)


def window_dates(start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
    """A partition time window as [first day, first day after) local business dates."""
    return start.date(), end.date()


def closed_window(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The run's partition window as [first day, first day after), refused (MonthError, the step fails naming the
    month, when it ends locally and the override) when a month in it has not ended in the business timezone, unless
    the run carries the `ledger/allow_open_month` tag (`ledger-pipeline run --allow-open-month`)."""
    window = context.partition_time_window
    # The window is in the timezone of the asset's partitions, the settings' business timezone once the definitions
    # are built: the months Dagster offers and the months refused here are the same months.
    zone = window.start.tzinfo
    start, end = window_dates(window.start, window.end)
    allow = context.run.tags.get(clock.ALLOW_OPEN_MONTH_TAG, "").lower() == "true"
    clock.ensure_closed(clock.months_between(start, end - dt.timedelta(days=1)), zone, allow_open=allow)
    return start, end
