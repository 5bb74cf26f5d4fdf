"""Orders, decisions and the state the pre-trade gate reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import numpy as np
import polars as pl

from risklib.core.instruments import FX_MAJORS
from risklib.core.policy._config import GateConfig, PolicyConfig
from risklib.errors import DataError


@dataclass(frozen=True, slots=True)
class Order:
    """An order asking to go out.

    Attributes
    ----------
    account_id, strategy, instrument
        Who, why and what (``"EUR/USD"``).
    side
        ``"BUY"`` or ``"SELL"``.
    quantity
        Positive, in units of the instrument's base currency.
    price
        Limit or expected price (quote per base); None for a market order (the last price is used).
    ts
        Time of the request (timezone-aware); the gate's ``now`` unless one is passed.
    reduce_only
        The sender marks it reduce-only (the broker then refuses any increase). Otherwise the
        gate derives "reducing" from the account's current position.
    """

    account_id: str
    strategy: str
    instrument: str
    side: str
    quantity: float
    price: float | None
    ts: datetime
    reduce_only: bool = False


class Reason(NamedTuple):
    """Why the gate refused or changed an order: a stable code and a message naming values and basis."""

    code: str
    message: str


class Decision(NamedTuple):
    """The gate's answer: ``approved``, the ``quantity`` approved (may be smaller than asked), ``reasons``.

    An immutable named tuple (cheap to build on the hot path).
    """

    approved: bool
    quantity: float
    reasons: tuple[Reason, ...] = ()
    reducing: bool = False

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


#: Reason codes and their bit in the batch form's ``reason_bits``.
REASON_BITS: dict[str, int] = {
    code: 1 << i
    for i, code in enumerate(
        (
            "UNKNOWN_ACCOUNT", "STALE_STATE", "MISSING_METRIC", "MISSING_PRICE", "BREAKER_OPEN", "TRADING_HALTED",
            "ENTRIES_HALTED", "RESTRICTED_INSTRUMENT", "PRICE_BAND", "RATE_LIMIT", "MAX_POSITIONS", "NOTIONAL_CAP",
            "POSITION_SIZE_CAP", "LEVERAGE_CAP", "GROSS_EXPOSURE_CAP", "NET_EXPOSURE_CAP", "INSTRUMENT_LIMIT",
            "STRATEGY_LIMIT", "FIRM_GROSS_CAP", "INVALID_ORDER", "CHECK_ERROR", "RESIZED",
        )
    )
}


def decode_reasons(bits: int) -> tuple[str, ...]:
    """Reason codes set in a batch ``reason_bits`` value."""
    return tuple(code for code, b in REASON_BITS.items() if bits & b)


def _usd_per_unit_rule(instrument: str) -> int:
    """1: notional = qty * price (XXX/USD); 0: notional = qty (USD/XXX); -1: no USD leg (unsupported)."""
    inst = FX_MAJORS.get(instrument)
    base, _, quote = (inst.base, "/", inst.quote) if inst else instrument.partition("/")
    if quote == "USD":
        return 1
    if base == "USD":
        return 0
    return -1


class LazyRows(dict):
    """Rows of a 2-D array, each turned into a Python list the first time it is read.

    The single-order check reads and mutates ``state.position[a][i]`` and the like:
    Python lists make that a few tens of nanoseconds, but converting a 10,000-account
    book's matrices whole costs far more per cycle than the few accounts a cycle's
    orders touch. A ``dict`` subclass keeps the lookup of a converted row at C speed;
    :meth:`__missing__` converts on first use, and later mutations stay in that list.
    """

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        super().__init__()
        self.array = array

    def __missing__(self, row: int) -> list:
        if not 0 <= row < self.array.shape[0]:
            raise IndexError(f"row {row} out of range for {self.array.shape[0]} rows")
        out = self[row] = self.array[row].tolist()
        return out

    def matrix(self) -> np.ndarray:
        """The whole array with every mutated row written back (a copy)."""
        out = self.array.astype(float, copy=True)
        for row, values in self.items():
            out[row] = values
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyRows):
            return self.matrix().shape == other.matrix().shape and bool(np.array_equal(self.matrix(), other.matrix()))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return self.array.shape[0]


def _matrix(rows: object, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(rows, LazyRows):
        return rows.matrix().reshape(shape)
    return np.array(rows, float).reshape(shape)


# Numeric columns of the risk state and metrics the build reads.
_NUMERIC_STATE = ("equity_usd", "sizing_multiplier", "max_leverage", "max_position_frac", "max_positions",
                  "next_cadence_s")
_MUTABLE_1D = ("gross", "net", "n_positions", "rate_start", "rate_count", "firm_gross")
_MUTABLE_2D = ("pending", "pending_reduce", "inst_gross", "strat_gross")


@dataclass
class GateState:
    """Everything the gate reads, indexed by account / instrument / strategy.

    Bases (stated in every decision): equity includes unrealized P&L; exposures are USD
    notionals of filled positions plus approved pending orders; caps are fractions of equity.

    Static per-account and per-instrument values are tuples in Python lists and mutable
    exposures are Python lists (per-account rows of the matrices converted on first
    use, :class:`LazyRows`), so a single check costs a few microseconds; the batch
    form converts them to arrays (:meth:`arrays`) and back (:meth:`store`).
    Only :func:`record` and the batch form mutate exposures, pending quantities and rate counters.
    """

    config: GateConfig
    account_index: dict[str, int]
    instrument_index: dict[str, int]
    strategy_index: dict[str, int]
    #: per account: (equity, valid, breaker_open, mode, max_leverage, max_position_usd, max_positions,
    #: state_ts epoch s, max_age_s); mode 0 ACTIVE, 1 REDUCE_ONLY, 2 HALTED, 3 FLATTEN
    account_static: list[tuple]
    #: per instrument: (restricted, last_price, usd_rule, instrument_limit_usd)
    instrument_static: list[tuple]
    strategy_limit: list[float]
    # [account][instrument] (strat_gross: [account][strategy]); LazyRows or lists of lists
    position: LazyRows | list[list[float]]  # filled net quantity
    pending: LazyRows | list[list[float]]  # approved unfilled new risk, signed quantity
    pending_reduce: LazyRows | list[list[float]]  # approved unfilled reductions, absolute quantity
    inst_gross: LazyRows | list[list[float]]
    strat_gross: LazyRows | list[list[float]]
    gross: list[float]
    net: list[float]
    n_positions: list[int]
    rate_start: list[float]
    rate_count: list[int]
    firm_gross: list[float]
    accounts: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()
    version: int = 0  # bumped by every mutation; the batch form caches arrays per version
    _cache: dict = field(default_factory=dict, repr=False)

    def arrays(self) -> dict[str, np.ndarray]:
        """Numpy copies of the state for the batch kernel (cached until the next mutation)."""
        hit = self._cache.get("arrays")
        if hit is not None and hit[0] == self.version:
            return {k: v.copy() for k, v in hit[1].items()}
        out = self._build_arrays()
        self._cache["arrays"] = (self.version, out)
        return {k: v.copy() for k, v in out.items()}

    def _build_arrays(self) -> dict[str, np.ndarray]:
        na, ni = len(self.accounts), len(self.instruments)
        st = np.array(self.account_static, dtype=float).reshape(na, 9) if na else np.zeros((0, 9))
        it = np.array(self.instrument_static, dtype=float).reshape(ni, 4) if ni else np.zeros((0, 4))
        out = {
            "equity": st[:, 0].copy(), "valid": st[:, 1].astype(bool), "breaker_open": st[:, 2].astype(bool),
            "mode": st[:, 3].astype(np.int64), "max_leverage": st[:, 4].copy(), "max_position_usd": st[:, 5].copy(),
            "max_positions": st[:, 6].copy(), "state_ts": st[:, 7].copy(), "max_age_s": st[:, 8].copy(),
            "restricted": it[:, 0].astype(bool), "last_price": it[:, 1].copy(), "usd_rule": it[:, 2].astype(np.int64),
            "inst_limit": it[:, 3].copy(), "strat_limit": np.array(self.strategy_limit or [np.inf], float),
            "position": _matrix(self.position, (na, ni)),
        }
        for k in _MUTABLE_1D:
            out[k] = np.array(getattr(self, k), dtype=np.int64 if k in ("n_positions", "rate_count") else float)
        for k in _MUTABLE_2D:
            cols = ni if k != "strat_gross" else max(len(self.strategies), 1)
            out[k] = _matrix(getattr(self, k), (na, cols))
        return out

    def store(self, arrays: dict[str, np.ndarray]) -> None:
        """Write the batch kernel's mutated arrays back."""
        for k in (*_MUTABLE_1D, *_MUTABLE_2D):
            setattr(self, k, LazyRows(arrays[k]) if k in _MUTABLE_2D else arrays[k].tolist())
        self.version += 1

    @classmethod
    def from_frames(
        cls,
        now: datetime,
        risk_state: pl.DataFrame,
        metrics: pl.DataFrame,
        positions: pl.DataFrame,
        last_prices: pl.DataFrame | dict[str, float],
        config: PolicyConfig,
        *,
        pending: pl.DataFrame | None = None,
    ) -> GateState:
        """Build the gate's state from the latest risk state, metrics, positions and prices.

        Parameters
        ----------
        now
            Time of the build (not used for staleness: each account keeps its risk state ``ts``).
        risk_state
            Output ``state`` of the policy evaluation (``frames.RISK_STATE_CORE`` plus
            ``max_position_frac``, ``max_positions`` and ``valid`` when present).
        metrics
            ``frames.ACCOUNT_METRICS`` (equity, validity).
        positions
            ``frames.POSITIONS`` (signed quantities).
        last_prices
            ``{instrument: mid}`` or a frame with ``instrument`` and ``mid`` (or ``price``).
        config
            The policy; its ``gate`` section holds the limits.
        pending
            Open orders not yet filled (``account_id, strategy, instrument, quantity`` signed);
            they count in exposures.
        """
        g = config.gate
        if now.tzinfo is None:
            raise DataError(f"now={now!r}: must be timezone-aware")
        if isinstance(last_prices, dict):
            lp = pl.DataFrame({"instrument": list(last_prices), "mid": [float(v) for v in last_prices.values()]},
                              schema={"instrument": pl.String, "mid": pl.Float64})
        else:
            col = "mid" if "mid" in last_prices.columns else "price"
            lp = last_prices.select("instrument", pl.col(col).cast(pl.Float64).alias("mid"))
        pend = pending if pending is not None else pl.DataFrame(
            schema={"account_id": pl.String, "strategy": pl.String, "instrument": pl.String, "quantity": pl.Float64})
        def distinct(frame: pl.DataFrame) -> tuple[set, set]:
            """Instruments and strategies of a position-like frame, both found in one query."""
            if not frame.height:
                return set(), set()
            u = frame.select(pl.col("instrument").unique().implode(), pl.col("strategy").unique().implode())
            return set(u["instrument"][0].to_list()), set(u["strategy"][0].to_list())

        pos_inst, pos_strat = distinct(positions)
        pend_inst, pend_strat = distinct(pend)
        instruments = sorted(set(FX_MAJORS) | pos_inst | set(lp["instrument"].to_list()) | pend_inst
                             | set(g.restricted_instruments) | set(g.instrument_max_usd))
        strategies = sorted(pos_strat | pend_strat | set(config.strategies) | set(g.strategy_max_usd))
        st = risk_state.join(metrics.select("account_id", "equity_usd", pl.col("valid").alias("m_valid")),
                             on="account_id", how="left")
        accounts = st["account_id"].to_list()
        a_ix = {a: i for i, a in enumerate(accounts)}
        i_ix = {s: i for i, s in enumerate(instruments)}
        s_ix = {s: i for i, s in enumerate(strategies)}
        na, ni, ns = len(accounts), len(instruments), len(strategies)
        account_enum, instrument_enum, strategy_enum = pl.Enum(accounts), pl.Enum(instruments), pl.Enum(strategies)

        # the numeric columns read in one conversion (null is NaN); a missing column is its default
        wanted = [c for c in _NUMERIC_STATE if c in st.columns]
        numeric = st.select(pl.col(c).cast(pl.Float64) for c in wanted).to_numpy(order="fortran") if wanted else None

        def f64(name: str, default: float) -> np.ndarray:
            if name not in wanted:
                return np.full(na, default)
            return numeric[:, wanted.index(name)].copy()

        equity = f64("equity_usd", np.nan)
        valid = st["m_valid"].fill_null(False).to_numpy().astype(bool)
        if "valid" in st.columns:
            valid &= st["valid"].fill_null(False).to_numpy().astype(bool)
        valid &= np.isfinite(equity) & (equity > 0)
        for c in ("sizing_multiplier", "max_leverage"):
            valid &= np.isfinite(f64(c, np.nan))
        mode_map = {"ACTIVE": 0, "REDUCE_ONLY": 1, "HALTED": 2, "FLATTEN": 3}
        # an unknown or missing mode counts as HALTED
        mode = st["trading_mode"].replace_strict(mode_map, default=2, return_dtype=pl.Int64).to_numpy()
        breaker_open = (st["breaker_state"].fill_null("OPEN") != "CLOSED").to_numpy() & \
            (st["breaker_state"].fill_null("OPEN") == "OPEN").to_numpy() if na else np.zeros(0, bool)
        sizing = np.clip(np.nan_to_num(f64("sizing_multiplier", 0.0), nan=0.0), 0.0, 1.0)
        frac = np.nan_to_num(f64("max_position_frac", config.risk_budget.max_single_position), nan=0.0)
        max_pos_usd = np.where(valid, equity * frac * sizing, 0.0)
        max_positions = np.nan_to_num(f64("max_positions", config.risk_levels.normal_max_positions), nan=0.0)
        ts = st["ts"].cast(pl.Datetime("us", "UTC")).dt.epoch("us").cast(pl.Float64).to_numpy() / 1e6 \
            if "ts" in st.columns else np.full(na, np.nan)
        ts = np.nan_to_num(ts.astype(float), nan=-np.inf)
        cadence = np.nan_to_num(f64("next_cadence_s", g.max_state_age_s), nan=g.max_state_age_s)
        max_age = np.minimum(g.max_state_age_s, g.cadence_age_factor * cadence + g.cadence_age_grace_s)

        usd_rule = np.array([_usd_per_unit_rule(s) for s in instruments], np.int64)
        last = np.full(ni, np.nan)
        if lp.height:
            idx = np.array([i_ix[s] for s in lp["instrument"].to_list()])
            last[idx] = lp["mid"].to_numpy()
        position = np.zeros((na, ni))
        pend_q = np.zeros((na, ni))
        inst_gross = np.zeros((na, ni))
        strat_gross = np.zeros((na, max(ns, 1)))
        gross = np.zeros(na)
        net = np.zeros(na)
        for frame, target in ((positions, position), (pend, pend_q)):
            if frame.height == 0:
                continue
            # rows as integer codes: enum casts are one hash lookup per row; unknown accounts drop out
            f = frame.select(
                pl.col("account_id").cast(account_enum, strict=False).to_physical().alias("ai"),
                pl.col("instrument").cast(instrument_enum).to_physical().alias("ii"),
                pl.col("strategy").cast(strategy_enum).to_physical().alias("si"),
                pl.col("quantity").cast(pl.Float64),
                *([pl.col("entry_price").cast(pl.Float64)] if "entry_price" in frame.columns else []),
            ).filter(pl.col("ai").is_not_null())
            ai = f["ai"].cast(pl.Int64).to_numpy()
            ii = f["ii"].cast(pl.Int64).to_numpy()
            si = f["si"].cast(pl.Int64).to_numpy()
            q = f["quantity"].to_numpy()
            px = last[ii]
            if frame is positions and "entry_price" in f.columns:
                px = np.where(np.isfinite(px), px, f["entry_price"].to_numpy())
            notional = np.where(usd_rule[ii] == 1, q * px, np.where(usd_rule[ii] == 0, q, np.nan))
            # bincount sums repeated (account, column) pairs like np.add.at, an order of magnitude faster
            cell = ai * ni + ii
            size = na * ni
            target += np.bincount(cell, weights=q, minlength=size).reshape(na, ni)
            inst_gross += np.bincount(cell, weights=np.abs(notional), minlength=size).reshape(na, ni)
            strat_gross += np.bincount(ai * strat_gross.shape[1] + si, weights=np.abs(notional),
                                       minlength=strat_gross.size).reshape(strat_gross.shape)
            gross += np.bincount(ai, weights=np.abs(notional), minlength=na)
            net += np.bincount(ai, weights=notional, minlength=na)
        n_positions = ((position != 0) | (pend_q != 0)).sum(axis=1).astype(np.int64)
        valid &= np.isfinite(gross) & np.isfinite(net)
        inst_limit = np.array([g.instrument_max_usd.get(s, np.inf) for s in instruments])
        strat_limit = np.array([min(g.strategy_max_usd.get(s, np.inf),
                                    (config.strategies[s].max_gross_usd or np.inf) if s in config.strategies else np.inf)
                                for s in strategies] or [np.inf])
        account_static = list(zip(
            equity.tolist(), valid.tolist(), breaker_open.tolist(), mode.tolist(),
            np.nan_to_num(f64("max_leverage", 0.0), nan=0.0).tolist(), max_pos_usd.tolist(),
            max_positions.tolist(), ts.tolist(), max_age.tolist(),
        ))
        restricted = [s in g.restricted_instruments for s in instruments]
        instrument_static = list(zip(restricted, last.tolist(), usd_rule.tolist(), inst_limit.tolist()))
        return cls(
            config=g, account_index=a_ix, instrument_index=i_ix, strategy_index=s_ix,
            account_static=account_static, instrument_static=instrument_static, strategy_limit=strat_limit.tolist(),
            position=LazyRows(position), pending=LazyRows(pend_q), pending_reduce=LazyRows(np.zeros((na, ni))),
            inst_gross=LazyRows(inst_gross), strat_gross=LazyRows(strat_gross), gross=gross.tolist(), net=net.tolist(),
            n_positions=n_positions.tolist(), rate_start=[-math.inf] * na, rate_count=[0] * na,
            firm_gross=[float(np.nansum(gross))],
            accounts=tuple(accounts), instruments=tuple(instruments), strategies=tuple(strategies),
        )

