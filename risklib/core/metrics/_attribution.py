"""Real-time P&L attribution by account, strategy, instrument and currency (RT "Performance Attribution").

Each position's P&L is rounded once to whole cents (``pnl_cents``, Int64);
every cut is an integer sum of those, so the parts of any attribution add up
*exactly* to the total and to each other cut. ``pnl_usd`` is
``pnl_cents / 100``.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from risklib.core.instruments import FX_MAJORS, Instrument
from risklib.errors import MetricsError

DIMENSIONS = ("account_id", "strategy", "instrument", "currency")


def _currency_map(table: dict[str, Instrument]) -> pl.DataFrame:
    # the leg that is not USD carries the risk of an XXX/USD or USD/XXX pair
    return pl.DataFrame(
        {
            "instrument": list(table),
            "currency": [i.quote if i.base == "USD" else i.base for i in table.values()],
        },
        schema={"instrument": pl.String, "currency": pl.String},
    )


def attribute_pnl(
    positions: pl.DataFrame,
    by: str | Sequence[str] = "account_id",
    *,
    pnl_column: str = "unrealized_pnl_usd",
    instruments: dict[str, Instrument] | None = None,
) -> pl.DataFrame:
    """P&L per group, in integer cents that sum exactly to the total.

    Parameters
    ----------
    positions : pl.DataFrame
        Position rows with ``account_id``, ``strategy``, ``instrument`` and
        ``pnl_column`` (USD), e.g. ``BookMetrics.positions``.
    by : str or sequence of str
        Any of ``account_id``, ``strategy``, ``instrument``, ``currency``
        (the non-USD leg of the instrument).
    instruments : dict, optional
        Instrument table for ``currency`` (default :data:`FX_MAJORS`).

    Returns
    -------
    pl.DataFrame
        The ``by`` columns, ``pnl_cents`` (Int64), ``pnl_usd`` and ``share``
        (of the absolute total P&L; 0 when it is 0), sorted by ``by``.

    Raises
    ------
    MetricsError
        Unknown dimension, missing column, non-finite P&L (naming the row), or
        an instrument outside the table when attributing by currency.
    """
    keys = [by] if isinstance(by, str) else list(by)
    bad = [k for k in keys if k not in DIMENSIONS]
    if bad or not keys:
        raise MetricsError(f"by={keys}: each must be one of {list(DIMENSIONS)}")
    need = {"instrument", pnl_column} | {k for k in keys if k != "currency"}
    missing = sorted(need - set(positions.columns))
    if missing:
        raise MetricsError(f"positions: missing column(s) {missing}")
    pnl = positions[pnl_column].cast(pl.Float64)
    nonfinite = (~pnl.is_finite()) | pnl.is_null()
    if nonfinite.any():
        i = int(nonfinite.arg_max())
        who = positions.row(i, named=True)
        raise MetricsError(
            f"{pnl_column}[row={i}, account_id={who.get('account_id')!r}, instrument={who.get('instrument')!r}]"
            f"={who.get(pnl_column)!r}: must be finite"
        )
    frame = positions.with_columns((pnl * 100.0).round(0).cast(pl.Int64).alias("pnl_cents"))
    if "currency" in keys:
        table = FX_MAJORS if instruments is None else instruments
        frame = frame.join(_currency_map(table), on="instrument", how="left")
        unknown = frame.filter(pl.col("currency").is_null())
        if unknown.height:
            raise MetricsError(f"instrument={unknown['instrument'][0]!r}: unknown instrument, no currency to attribute to")
    out = frame.group_by(keys).agg(pl.col("pnl_cents").sum()).sort(keys)
    total_abs = abs(int(out["pnl_cents"].sum()))
    return out.with_columns(
        (pl.col("pnl_cents") / 100.0).alias("pnl_usd"),
        (pl.col("pnl_cents") / total_abs if total_abs else pl.lit(0.0)).cast(pl.Float64).alias("share"),
    )
