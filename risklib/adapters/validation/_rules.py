"""The validation rules, once: each builds a Great Expectations expectation and the same check in Polars.

A :class:`Rule` is one expectation on one suite (``ticks``, ``positions``,
``balances``). ``expectation()`` builds the GX 1.x expectation (bounds that
change every cycle are suite parameters); ``failing()`` is the same predicate
as a Polars expression, True on the rows GX would list as unexpected. The
screen runs every cycle over all rows in one vectorized pass; the GX suite is
the reference and runs when the screen finds anything (or always, by config).
Tests check that both agree row for row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from risklib.core import frames

#: Finite bound on quantities and money (USD or base units): larger is a feed error, and it makes +inf fail.
MAX_ABS = 1e15
#: Finite bound on prices (quote currency per base unit).
MAX_PRICE = 1e9

TICK_KEY = ("instrument",)
POSITION_KEY = ("account_id", "strategy", "instrument")
BALANCE_KEY = ("account_id",)

#: Derived column added to balances before validation: cash + unrealized P&L at the clean quotes, USD.
EQUITY = "equity_usd"
#: Derived column added to positions before validation: the account's id on its balance row, null if it has none.
BALANCE_ACCOUNT = "balance_account_id"


def _literal(value: Any) -> Any:
    """A bound as an expression operand (an aware timestamp through the cheap UTC literal)."""
    return frames.utc_lit(value) if isinstance(value, datetime) and value.tzinfo is not None else value


def _missing(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | (c.is_nan() if _is_float(col) else pl.lit(False))


_FLOAT_COLS = {c for s in (frames.TICKS, frames.POSITIONS, frames.BALANCES) for c, t in s.items() if t == pl.Float64}
_FLOAT_COLS.add(EQUITY)


def _is_float(col: str) -> bool:
    return col in _FLOAT_COLS


@dataclass(frozen=True, eq=False)  # hashed by identity: rules are module constants
class Rule:
    """One expectation.

    Attributes
    ----------
    suite : str
        ``ticks`` | ``positions`` | ``balances``.
    kind : str
        ``not_null`` | ``in_set`` | ``between`` | ``unique`` | ``a_ge_b``.
    columns : tuple[str, ...]
    params : dict
        ``min``/``max``/``strict_min`` for ``between`` (a string value names a
        suite parameter supplied per cycle), ``value_set`` (parameter name) for ``in_set``.
    """

    suite: str
    kind: str
    columns: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def expectation_type(self) -> str:
        return {
            "not_null": "expect_column_values_to_not_be_null",
            "in_set": "expect_column_values_to_be_in_set",
            "between": "expect_column_values_to_be_between",
            "unique": (
                "expect_column_values_to_be_unique" if len(self.columns) == 1 else "expect_compound_columns_to_be_unique"
            ),
            "a_ge_b": "expect_column_pair_values_a_to_be_greater_than_b",
        }[self.kind]

    @property
    def name(self) -> str:
        """Rule name as quarantined: the GX expectation type and its columns."""
        return f"{self.expectation_type}({','.join(self.columns)})"

    def expectation(self) -> Any:
        """The Great Expectations 1.x expectation (bounds that vary are ``$PARAMETER`` references)."""
        import great_expectations.expectations as gxe

        def p(v: Any) -> Any:
            return {"$PARAMETER": v} if isinstance(v, str) else v

        c = self.columns
        if self.kind == "not_null":
            return gxe.ExpectColumnValuesToNotBeNull(column=c[0])
        if self.kind == "in_set":
            return gxe.ExpectColumnValuesToBeInSet(column=c[0], value_set=p(self.params["value_set"]))
        if self.kind == "between":
            return gxe.ExpectColumnValuesToBeBetween(
                column=c[0],
                min_value=p(self.params.get("min")),
                max_value=p(self.params.get("max")),
                strict_min=bool(self.params.get("strict_min", False)),
            )
        if self.kind == "unique":
            if len(c) == 1:
                return gxe.ExpectColumnValuesToBeUnique(column=c[0])
            return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(c))
        if self.kind == "a_ge_b":
            return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=c[0], column_B=c[1], or_equal=True, ignore_row_if="either_value_is_missing"
            )
        raise AssertionError(self.kind)  # pragma: no cover

    def failing(self, values: dict[str, Any]) -> pl.Expr:
        """Polars expression, True where GX would report the row unexpected. ``values``: suite parameters."""
        c = self.columns
        if self.kind == "not_null":
            return _missing(c[0])
        if self.kind == "in_set":
            return ~_missing(c[0]) & ~pl.col(c[0]).is_in(list(values[self.params["value_set"]]))
        if self.kind == "between":
            lo = self.params.get("min")
            hi = self.params.get("max")
            lo = _literal(values[lo] if isinstance(lo, str) else lo)
            hi = _literal(values[hi] if isinstance(hi, str) else hi)
            col = pl.col(c[0])
            ok = pl.lit(True)
            if lo is not None:
                ok = ok & ((col > lo) if self.params.get("strict_min") else (col >= lo))
            if hi is not None:
                ok = ok & (col <= hi)
            return ~_missing(c[0]) & ~ok
        if self.kind == "unique":
            if len(c) == 1:
                return pl.col(c[0]).is_duplicated() & ~_missing(c[0])
            all_missing = pl.all_horizontal([_missing(x) for x in c])
            return pl.struct(list(c)).is_duplicated() & ~all_missing
        if self.kind == "a_ge_b":
            return ~_missing(c[0]) & ~_missing(c[1]) & (pl.col(c[0]) < pl.col(c[1]))
        raise AssertionError(self.kind)  # pragma: no cover

    def detail(self, row: dict[str, Any], values: dict[str, Any]) -> str:
        """Message naming the field(s) and value(s) of a failing row."""
        shown = ", ".join(f"{c}={row.get(c)!r}" for c in self.columns)
        if self.kind == "not_null":
            if "why" in self.params:
                return f"account_id={row.get('account_id')!r}: {self.params['why']}"
            return f"{shown}: must not be null or NaN"
        if self.kind == "in_set":
            return f"{shown}: not a known value"
        if self.kind == "between":
            lo = self.params.get("min")
            hi = self.params.get("max")
            lo_v = values[lo] if isinstance(lo, str) else lo
            hi_v = values[hi] if isinstance(hi, str) else hi
            op = ">" if self.params.get("strict_min") else ">="
            return f"{shown}: must be {op} {lo_v} and <= {hi_v}" + (f" ({self.params['why']})" if "why" in self.params else "")
        if self.kind == "unique":
            return f"{shown}: duplicate key"
        if self.kind == "a_ge_b":
            return f"{shown}: {self.columns[0]} must be >= {self.columns[1]}"
        raise AssertionError(self.kind)  # pragma: no cover


def _r(suite: str, kind: str, *cols: str, **params: Any) -> Rule:
    return Rule(suite, kind, tuple(cols), dict(params))


#: Every rule, by suite. Parameters named by strings are supplied per cycle:
#: ``known_instruments``, ``oldest_ts``, ``newest_ts``.
RULES: dict[str, tuple[Rule, ...]] = {
    "ticks": (
        _r("ticks", "not_null", "ts"),
        _r("ticks", "not_null", "instrument"),
        _r("ticks", "not_null", "mid"),
        _r("ticks", "in_set", "instrument", value_set="known_instruments"),
        _r("ticks", "between", "mid", min=0.0, max=MAX_PRICE, strict_min=True, why="price > 0 and finite"),
        _r("ticks", "between", "bid", min=0.0, max=MAX_PRICE, strict_min=True, why="price > 0 and finite"),
        _r("ticks", "between", "ask", min=0.0, max=MAX_PRICE, strict_min=True, why="price > 0 and finite"),
        _r("ticks", "a_ge_b", "ask", "bid"),
        _r("ticks", "between", "ts", min="oldest_ts", max="newest_ts", why="not stale, not in the future"),
        _r("ticks", "unique", "instrument"),
    ),
    "positions": (
        _r("positions", "not_null", "account_id"),
        _r("positions", "not_null", "strategy"),
        _r("positions", "not_null", "instrument"),
        _r("positions", "not_null", "quantity"),
        _r("positions", "not_null", "entry_price"),
        _r("positions", "in_set", "instrument", value_set="known_instruments"),
        _r("positions", "between", "quantity", min=-MAX_ABS, max=MAX_ABS, why="finite"),
        _r("positions", "between", "entry_price", min=0.0, max=MAX_PRICE, strict_min=True, why="price > 0 and finite"),
        _r("positions", "not_null", BALANCE_ACCOUNT, why="the position's account has no balance row"),
        _r("positions", "unique", *POSITION_KEY),
    ),
    "balances": (
        _r("balances", "not_null", "account_id"),
        _r("balances", "not_null", "account_group"),
        _r("balances", "not_null", "cash_usd"),
        _r("balances", "not_null", "start_of_day_equity_usd"),
        _r("balances", "between", "cash_usd", min=-MAX_ABS, max=MAX_ABS, why="finite"),
        _r("balances", "between", "start_of_day_equity_usd", min=0.0, max=MAX_ABS, strict_min=True, why="> 0 and finite"),
        _r("balances", "between", EQUITY, min=0.0, max=MAX_ABS, strict_min=True, why="equity = cash + unrealized P&L must be > 0"),
        _r("balances", "unique", "account_id"),
    ),
}

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "ticks": frames.TICKS,
    "positions": {**frames.POSITIONS, BALANCE_ACCOUNT: pl.String},
    "balances": {**frames.BALANCES, EQUITY: pl.Float64},
}
KEYS: dict[str, tuple[str, ...]] = {"ticks": TICK_KEY, "positions": POSITION_KEY, "balances": BALANCE_KEY}

RowCheck = Callable[[pl.DataFrame], pl.Series]
