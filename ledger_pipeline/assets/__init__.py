"""Thin Dagster assets, one module per layer (r2a, ledger, accounting, shards)."""

import warnings

import dagster as dg

# backfill_policy and pools are marked beta/preview in 1.13; we rely on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
