"""The pre-trade gate: every check with its own reason code, single and batch.

Fail closed: an unknown account, a missing price or metric, a stale risk state
(the dead man's switch) or an exception inside a check denies new risk.
Reducing orders (against the filled position, net of reductions already
approved) are never blocked by risk limits, in every trading mode; a flipping
order is new risk for the part beyond the position. When the policy allows it
(``resize_to_fit``) an order that breaks a size cap is cut to the largest
quantity that fits instead of being refused.

The batch form runs the same checks sequentially in a compiled kernel, so a
batch gives exactly the decisions of calling :func:`check_and_record` on each
order in turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numba
import numpy as np
import polars as pl

from risklib.core.gate._state import REASON_BITS, Decision, GateState, Order, Reason

_TOL = 1e-9
_BUY = "BUY"
_SELL = "SELL"


def _reject(reasons: list[Reason], reduce_part: float, resize: bool) -> Decision:
    if reduce_part > 0 and resize:
        reasons.append(Reason("RESIZED", f"quantity cut to the reducing part {reduce_part:g}"))
        return Decision(True, reduce_part, tuple(reasons), True)
    return Decision(False, 0.0, tuple(reasons), False)


_MODE_NAMES = ("ACTIVE", "REDUCE_ONLY", "HALTED", "FLATTEN")


def _check(order: Order, st: GateState, now: datetime | None) -> Decision:
    g = st.config
    q = order.quantity
    side = order.side
    price = order.price
    if side == _BUY:
        sign = 1.0
    elif side == _SELL:
        sign = -1.0
    else:
        sign = 0.0
    if not (q.__class__ in (int, float) and q > 0 and q < math.inf) or sign == 0.0 or (
        price is not None and not (price > 0 and price < math.inf)
    ):
        return Decision(False, 0.0, (Reason("INVALID_ORDER", f"side={side!r} quantity={q!r} price={price!r}: "
                                            "side must be BUY/SELL, quantity > 0, price > 0 or None"),))
    a = st.account_index.get(order.account_id)
    if a is None:
        if order.reduce_only:
            return Decision(True, q, (), True)  # the broker enforces reduce-only
        return Decision(False, 0.0, (Reason("UNKNOWN_ACCOUNT", f"account_id={order.account_id!r}: no risk state"),))
    i = st.instrument_index.get(order.instrument)
    # split into the part that reduces the filled position (net of reductions already approved) and new risk
    reduce_part = 0.0
    pos = 0.0
    if i is not None:
        pos = st.position[a][i]
        if pos * sign < 0:
            room = abs(pos) - st.pending_reduce[a][i]
            reduce_part = min(q, room) if room > 0 else 0.0
    u = q - reduce_part
    if u <= 0.0:
        return Decision(True, q, (), True)
    if order.reduce_only:
        if reduce_part > 0:
            return Decision(True, reduce_part, (Reason("RESIZED", f"reduce_only: cut to position {reduce_part:g}"),), True)
        return Decision(False, 0.0, (Reason("INVALID_ORDER", f"reduce_only order on {order.instrument} would not "
                                            f"reduce position={pos:g}"),))
    now_s = (now or order.ts).timestamp()
    equity, valid, brk_open, mode, max_lev, max_pos_usd, max_positions, state_ts, max_age = st.account_static[a]
    reasons: list[Reason] = []
    age = now_s - state_ts
    if not age <= max_age:
        reasons.append(Reason("STALE_STATE", f"risk state age={age:.1f}s > max={max_age:g}s (dead man's switch)"))
    if not valid:
        reasons.append(Reason("MISSING_METRIC", f"account_id={order.account_id!r}: metrics missing or invalid"))
    if brk_open:
        reasons.append(Reason("BREAKER_OPEN", "circuit breaker OPEN: complete halt of new risk"))
    if mode >= 2:
        reasons.append(Reason("TRADING_HALTED", f"trading mode {_MODE_NAMES[mode]}: new risk blocked"))
    elif mode == 1:
        reasons.append(Reason("ENTRIES_HALTED", "trading mode REDUCE_ONLY: new entries and increases blocked"))
    unit = math.nan
    inst_limit = math.inf
    if i is None:
        reasons.append(Reason("MISSING_PRICE", f"instrument={order.instrument!r}: unknown, no price"))
    else:
        restricted, last, usd_rule, inst_limit = st.instrument_static[i]
        if restricted:
            reasons.append(Reason("RESTRICTED_INSTRUMENT", f"instrument={order.instrument!r}: restricted"))
        if not (last > 0 and last < math.inf):
            reasons.append(Reason("MISSING_PRICE", f"instrument={order.instrument!r}: no last price"))
        else:
            unit = (price if price is not None else last) if usd_rule == 1 else 1.0 if usd_rule == 0 else math.nan
            if unit != unit:
                reasons.append(Reason("MISSING_PRICE", f"instrument={order.instrument!r}: no USD conversion"))
            if price is not None and abs(price / last - 1.0) > g.price_band:
                reasons.append(Reason("PRICE_BAND", f"price={price:g} is {abs(price / last - 1):.2%} from last={last:g} "
                                      f"> band={g.price_band:.2%}"))
        if pos == 0 and st.pending[a][i] == 0 and st.n_positions[a] >= max_positions:
            reasons.append(Reason("MAX_POSITIONS", f"open positions incl. pending={st.n_positions[a]} >= max={max_positions:g}"))
    count = st.rate_count[a] if now_s - st.rate_start[a] < g.rate_window_s else 0
    if count >= g.rate_limit_orders:
        reasons.append(Reason("RATE_LIMIT", f"{count} orders in {g.rate_window_s:g}s >= limit={g.rate_limit_orders}"))
    if reasons:
        return _reject(reasons, reduce_part, g.resize_to_fit)

    gross = st.gross[a]
    same_dir = (pos + st.pending[a][i]) * sign
    s = st.strategy_index.get(order.strategy)
    firm_max = g.firm_max_gross_usd
    rooms = (
        g.max_notional_usd,
        max_pos_usd - (same_dir * unit if same_dir > 0 else 0.0),
        max_lev * equity - gross,
        g.max_gross_exposure * equity - gross,
        g.max_net_exposure * equity - sign * st.net[a] - reduce_part * unit,
        inst_limit - st.inst_gross[a][i],
        (st.strategy_limit[s] - st.strat_gross[a][s]) if s is not None else math.inf,
        (firm_max - st.firm_gross[0]) if firm_max is not None else math.inf,
    )
    need = u * unit - _TOL
    if rooms[0] >= need and rooms[1] >= need and rooms[2] >= need and rooms[3] >= need and rooms[4] >= need \
            and rooms[5] >= need and rooms[6] >= need and rooms[7] >= need:
        return Decision(True, q, (), reduce_part > 0)
    allowed = u
    for c, room_usd in enumerate(rooms):
        room = room_usd / unit
        if not room >= u - _TOL:  # NaN fails closed
            room = room if room == room else 0.0
            code, basis, limit = _cap_info(c, g, max_pos_usd, max_lev, inst_limit)
            reasons.append(Reason(code, f"new risk {u:g} units x {unit:g} USD exceeds room {max(room, 0.0):g} units "
                                  f"(basis: {basis}; limit {limit})"))
            allowed = min(allowed, max(room, 0.0))
    if g.resize_to_fit:
        fit = math.floor(allowed + _TOL)
        if fit >= g.min_quantity:
            reasons.append(Reason("RESIZED", f"quantity cut from {q:g} to {reduce_part + fit:g} to fit"))
            return Decision(True, reduce_part + fit, tuple(reasons), reduce_part > 0)
    return _reject(reasons, reduce_part, g.resize_to_fit)


def _cap_info(c: int, g, max_pos_usd: float, max_lev: float, inst_limit: float) -> tuple[str, str, str]:
    return (
        ("NOTIONAL_CAP", "order notional USD", f"{g.max_notional_usd:g} USD"),
        ("POSITION_SIZE_CAP", "position notional incl. pending (equity x risk-level cap x sizing multiplier)",
         f"{max_pos_usd:g} USD"),
        ("LEVERAGE_CAP", "gross exposure incl. pending / equity incl. unrealized P&L", f"{max_lev:g}x"),
        ("GROSS_EXPOSURE_CAP", "gross exposure incl. pending / equity incl. unrealized P&L", f"{g.max_gross_exposure:g}"),
        ("NET_EXPOSURE_CAP", "|net exposure| incl. pending / equity incl. unrealized P&L", f"{g.max_net_exposure:g}"),
        ("INSTRUMENT_LIMIT", "account gross notional in the instrument incl. pending", f"{inst_limit:g} USD"),
        ("STRATEGY_LIMIT", "account gross notional of the strategy incl. pending", "strategy limit"),
        ("FIRM_GROSS_CAP", "firm gross notional incl. pending", f"{g.firm_max_gross_usd} USD"),
    )[c]


def check(order: Order, state: GateState, *, now: datetime | None = None) -> Decision:
    """Check one order against the gate's state.

    Parameters
    ----------
    order
        The order.
    state
        Gate state (:meth:`GateState.from_frames`).
    now
        Time of the check; defaults to ``order.ts``. Staleness of the risk state is measured from it.

    Returns
    -------
    Decision
        ``approved``, approved ``quantity`` (possibly resized), ``reasons`` (each with its code).
        Never raises: an exception inside a check denies new risk (``CHECK_ERROR``); an order
        marked ``reduce_only`` still goes through.
    """
    try:
        return _check(order, state, now)
    except Exception as exc:  # noqa: BLE001 - fail closed on anything
        reason = Reason("CHECK_ERROR", f"{type(exc).__name__}: {exc}")
        if getattr(order, "reduce_only", False) is True:
            return Decision(True, order.quantity, (reason,), True)
        return Decision(False, 0.0, (reason,), False)


def record(order: Order, decision: Decision, state: GateState, *, now: datetime | None = None) -> None:
    """Account for an approved order: pending exposure, pending reductions, positions count, rate counter."""
    if not decision.approved:
        return
    a = state.account_index.get(order.account_id)
    if a is None:
        return
    now_s = (now or order.ts).timestamp()
    g = state.config
    state.version += 1
    if now_s - state.rate_start[a] >= g.rate_window_s:
        state.rate_start[a] = now_s
        state.rate_count[a] = 0
    state.rate_count[a] += 1
    i = state.instrument_index.get(order.instrument)
    if i is None:
        return
    sign = 1.0 if order.side == _BUY else -1.0
    pos = state.position[a][i]
    reduce_part = 0.0
    if pos * sign < 0:
        reduce_part = min(decision.quantity, max(0.0, abs(pos) - state.pending_reduce[a][i]))
        state.pending_reduce[a][i] += reduce_part
    u = decision.quantity - reduce_part
    if u <= 0:
        return
    _, last, usd_rule, _ = state.instrument_static[i]
    px = order.price if order.price is not None else last
    unit = px if usd_rule == 1 else 1.0
    if pos == 0 and state.pending[a][i] == 0:
        state.n_positions[a] += 1
    state.pending[a][i] += sign * u
    usd = u * unit
    state.gross[a] += usd
    state.net[a] += sign * usd
    state.inst_gross[a][i] += usd
    s = state.strategy_index.get(order.strategy)
    if s is not None:
        state.strat_gross[a][s] += usd
    state.firm_gross[0] += usd


def check_and_record(order: Order, state: GateState, *, now: datetime | None = None) -> Decision:
    """:func:`check` then :func:`record` (what a trading system calls before sending)."""
    d = check(order, state, now=now)
    if d.approved:
        try:
            record(order, d, state, now=now)
        except Exception:  # noqa: BLE001 - bookkeeping must not turn a decision into a crash
            pass
    return d


# --- batch -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderBatch:
    """Orders as arrays, encoded against a :class:`GateState`'s indexes (-1 = unknown)."""

    account: np.ndarray  # int64
    instrument: np.ndarray  # int64
    strategy: np.ndarray  # int64
    side: np.ndarray  # float64, +1 buy / -1 sell (0 = invalid)
    quantity: np.ndarray  # float64
    price: np.ndarray  # float64, NaN = market order (an explicit NaN price is encoded as -1: invalid)
    ts_s: np.ndarray  # float64 epoch seconds
    reduce_only: np.ndarray  # bool

    @classmethod
    def from_frame(cls, orders: pl.DataFrame, state: GateState) -> OrderBatch:
        """Encode a frame with the :class:`Order` fields (``ts`` as UTC datetime)."""
        def idx(col: str, mapping: dict[str, int]) -> np.ndarray:
            return orders[col].replace_strict(mapping, default=-1, return_dtype=pl.Int64).to_numpy()

        side = orders["side"].replace_strict({"BUY": 1.0, "SELL": -1.0}, default=0.0, return_dtype=pl.Float64).to_numpy()
        ro = orders["reduce_only"].fill_null(False).to_numpy() if "reduce_only" in orders.columns else np.zeros(orders.height, bool)
        return cls(
            idx("account_id", state.account_index), idx("instrument", state.instrument_index),
            idx("strategy", state.strategy_index), side, orders["quantity"].cast(pl.Float64).to_numpy(),
            orders["price"].cast(pl.Float64).fill_nan(-1.0).fill_null(np.nan).to_numpy(),  # NaN given = invalid
            orders["ts"].dt.epoch("us").cast(pl.Float64).to_numpy() / 1e6, ro.astype(bool),
        )

    @classmethod
    def from_orders(cls, orders: list[Order], state: GateState) -> OrderBatch:
        return cls(
            np.array([state.account_index.get(o.account_id, -1) for o in orders], np.int64),
            np.array([state.instrument_index.get(o.instrument, -1) for o in orders], np.int64),
            np.array([state.strategy_index.get(o.strategy, -1) for o in orders], np.int64),
            np.array([1.0 if o.side == _BUY else -1.0 if o.side == _SELL else 0.0 for o in orders]),
            np.array([o.quantity for o in orders], float),
            np.array([np.nan if o.price is None else -1.0 if o.price != o.price else o.price for o in orders], float),
            np.array([o.ts.timestamp() for o in orders], float),
            np.array([o.reduce_only for o in orders], bool),
        )


_BITS = np.array(list(REASON_BITS.values()), np.int64)


@numba.njit(cache=True, inline="always")
def _fit(room_usd, u, unit, allowed):
    room = room_usd / unit
    if room >= u - 1e-9:
        return allowed
    if room != room:
        room = 0.0
    return min(allowed, max(room, 0.0))


@numba.njit(cache=True)
def _batch_kernel(
    acc, ins, stg, side, qty, price, ts, ro,
    equity, valid, brk_open, mode, max_lev, max_pos_usd, max_positions, state_ts, max_age,
    gross, net, n_pos, rate_start, rate_count, position, pending, pending_reduce, inst_gross, strat_gross,
    last_price, usd_rule, restricted, inst_limit, strat_limit, firm_gross,
    price_band, max_notional, max_gross_exp, max_net_exp, firm_max, rate_limit, rate_window, resize, min_qty,
    bits_tbl,
):
    n = acc.shape[0]
    approved = np.zeros(n, np.bool_)
    out_q = np.zeros(n)
    bits = np.zeros(n, np.int64)
    reducing = np.zeros(n, np.bool_)
    (B_UNKNOWN, B_STALE, B_METRIC, B_PRICE, B_BRK, B_HALT, B_ENTRY, B_RESTR, B_BAND, B_RATE, B_MAXPOS,
     B_NOTIONAL, B_POS, B_LEV, B_GROSS, B_NET, B_INST, B_STRAT, B_FIRM, B_INVALID, B_ERR, B_RESIZED) = (
        bits_tbl[0], bits_tbl[1], bits_tbl[2], bits_tbl[3], bits_tbl[4], bits_tbl[5], bits_tbl[6], bits_tbl[7],
        bits_tbl[8], bits_tbl[9], bits_tbl[10], bits_tbl[11], bits_tbl[12], bits_tbl[13], bits_tbl[14],
        bits_tbl[15], bits_tbl[16], bits_tbl[17], bits_tbl[18], bits_tbl[19], bits_tbl[20], bits_tbl[21])
    for k in range(n):
        q = qty[k]
        sg = side[k]
        a = acc[k]
        i = ins[k]
        p = price[k]
        if not (q > 0 and np.isfinite(q)) or sg == 0 or (not np.isnan(p) and not (p > 0 and np.isfinite(p))):
            bits[k] = B_INVALID
            continue
        if a < 0:
            if ro[k]:
                approved[k] = True
                out_q[k] = q
                reducing[k] = True
            else:
                bits[k] = B_UNKNOWN
            continue
        reduce_part = 0.0
        if i >= 0 and position[a, i] * sg < 0:
            room = max(0.0, abs(position[a, i]) - pending_reduce[a, i])
            reduce_part = min(q, room)
        u = q - reduce_part
        b = np.int64(0)
        take = 0.0
        if u <= 0:
            take = q
        elif ro[k]:
            if reduce_part > 0:
                take = reduce_part
                b |= B_RESIZED
            else:
                b |= B_INVALID
        else:
            now = ts[k]
            if not (now - state_ts[a] <= max_age[a]):
                b |= B_STALE
            if not valid[a]:
                b |= B_METRIC
            if brk_open[a]:
                b |= B_BRK
            if mode[a] >= 2:
                b |= B_HALT
            elif mode[a] == 1:
                b |= B_ENTRY
            unit = np.nan
            if i < 0:
                b |= B_PRICE
            else:
                if restricted[i]:
                    b |= B_RESTR
                last = last_price[i]
                if not (last > 0 and np.isfinite(last)):
                    b |= B_PRICE
                else:
                    px = last if np.isnan(p) else p
                    unit = px if usd_rule[i] == 1 else (1.0 if usd_rule[i] == 0 else np.nan)
                    if not np.isfinite(unit):
                        b |= B_PRICE
                    if not np.isnan(p) and abs(p / last - 1.0) > price_band:
                        b |= B_BAND
            cnt = rate_count[a] if now - rate_start[a] < rate_window else 0
            if cnt >= rate_limit:
                b |= B_RATE
            if i >= 0 and position[a, i] == 0 and pending[a, i] == 0 and n_pos[a] >= max_positions[a]:
                b |= B_MAXPOS
            if b != 0:
                if reduce_part > 0 and resize:
                    take = reduce_part
                    b |= B_RESIZED
            else:
                eq = equity[a]
                g = gross[a]
                allowed = u
                need = u * unit - 1e-9
                r0 = max_notional
                r1 = max_pos_usd[a] - max(0.0, (position[a, i] + pending[a, i]) * sg) * unit
                r2 = max_lev[a] * eq - g
                r3 = max_gross_exp * eq - g
                r4 = max_net_exp * eq - sg * net[a] - reduce_part * unit
                r5 = inst_limit[i] - inst_gross[a, i]
                r6 = (strat_limit[stg[k]] - strat_gross[a, stg[k]]) if stg[k] >= 0 else np.inf
                r7 = firm_max - firm_gross[0]
                if not (r0 >= need and r1 >= need and r2 >= need and r3 >= need and r4 >= need
                        and r5 >= need and r6 >= need and r7 >= need):
                    allowed = _fit(r0, u, unit, allowed)
                    b |= B_NOTIONAL if not r0 >= need else 0
                    allowed = _fit(r1, u, unit, allowed)
                    b |= B_POS if not r1 >= need else 0
                    allowed = _fit(r2, u, unit, allowed)
                    b |= B_LEV if not r2 >= need else 0
                    allowed = _fit(r3, u, unit, allowed)
                    b |= B_GROSS if not r3 >= need else 0
                    allowed = _fit(r4, u, unit, allowed)
                    b |= B_NET if not r4 >= need else 0
                    allowed = _fit(r5, u, unit, allowed)
                    b |= B_INST if not r5 >= need else 0
                    allowed = _fit(r6, u, unit, allowed)
                    b |= B_STRAT if not r6 >= need else 0
                    allowed = _fit(r7, u, unit, allowed)
                    b |= B_FIRM if not r7 >= need else 0
                if b == 0:
                    take = q
                elif resize:
                    fit = np.floor(allowed + 1e-9)
                    if fit >= min_qty:
                        take = reduce_part + fit
                        b |= B_RESIZED
                    elif reduce_part > 0:
                        take = reduce_part
                        b |= B_RESIZED
        bits[k] = b
        if take > 0:
            approved[k] = True
            out_q[k] = take
            reducing[k] = reduce_part > 0 or u <= 0
            # record
            now = ts[k]
            if now - rate_start[a] >= rate_window:
                rate_start[a] = now
                rate_count[a] = 0
            rate_count[a] += 1
            if i >= 0:
                rp = min(take, reduce_part)
                pending_reduce[a, i] += rp
                nu = take - rp
                if nu > 0:
                    px = last_price[i] if np.isnan(p) else p
                    unit2 = px if usd_rule[i] == 1 else 1.0
                    if position[a, i] == 0 and pending[a, i] == 0:
                        n_pos[a] += 1
                    pending[a, i] += sg * nu
                    usd = nu * unit2
                    gross[a] += usd
                    net[a] += sg * usd
                    inst_gross[a, i] += usd
                    if stg[k] >= 0:
                        strat_gross[a, stg[k]] += usd
                    firm_gross[0] += usd
    return approved, out_q, bits, reducing


@dataclass(frozen=True)
class BatchDecision:
    """Batch result: arrays aligned with the batch. ``reason_bits`` decode with :func:`decode_reasons`."""

    approved: np.ndarray
    quantity: np.ndarray
    reason_bits: np.ndarray
    reducing: np.ndarray

    def to_frame(self) -> pl.DataFrame:
        from risklib.core.gate._state import decode_reasons

        return pl.DataFrame({
            "approved": self.approved, "quantity": self.quantity, "reason_bits": self.reason_bits,
            "reducing": self.reducing,
            "reasons": [",".join(decode_reasons(int(b))) for b in self.reason_bits],
        })


def check_batch(batch: OrderBatch | pl.DataFrame | list[Order], state: GateState, *, record: bool = True) -> BatchDecision:
    """Check many orders in arrival order, as :func:`check_and_record` would one by one.

    Parameters
    ----------
    batch
        An :class:`OrderBatch`, a frame with the :class:`Order` fields, or a list of orders.
    state
        Gate state; updated in place when ``record`` (pending exposure, rate counters).
    record
        False to leave ``state`` untouched (a dry run on copies).

    Returns
    -------
    BatchDecision
        Never raises on data: an exception denies every order not marked reduce-only (``CHECK_ERROR``).
    """
    if isinstance(batch, pl.DataFrame):
        batch = OrderBatch.from_frame(batch, state)
    elif isinstance(batch, list):
        batch = OrderBatch.from_orders(batch, state)
    st = state
    g = st.config
    try:
        arr = st.arrays()
        approved, q, bits, reducing = _batch_kernel(
            batch.account, batch.instrument, batch.strategy, batch.side, batch.quantity, batch.price, batch.ts_s,
            batch.reduce_only,
            arr["equity"], arr["valid"], arr["breaker_open"], arr["mode"], arr["max_leverage"], arr["max_position_usd"],
            arr["max_positions"], arr["state_ts"], arr["max_age_s"],
            arr["gross"], arr["net"], arr["n_positions"], arr["rate_start"], arr["rate_count"], arr["position"],
            arr["pending"], arr["pending_reduce"], arr["inst_gross"], arr["strat_gross"],
            arr["last_price"], arr["usd_rule"], arr["restricted"], arr["inst_limit"], arr["strat_limit"],
            arr["firm_gross"],
            g.price_band, g.max_notional_usd, g.max_gross_exposure, g.max_net_exposure,
            g.firm_max_gross_usd if g.firm_max_gross_usd is not None else np.inf,
            g.rate_limit_orders, g.rate_window_s, g.resize_to_fit, g.min_quantity, _BITS,
        )
        if record:
            st.store(arr)
    except Exception:  # noqa: BLE001 - fail closed
        n = batch.account.shape[0]
        ro = batch.reduce_only.astype(bool)
        return BatchDecision(ro.copy(), np.where(ro, batch.quantity, 0.0),
                             np.full(n, REASON_BITS["CHECK_ERROR"], np.int64), ro.copy())
    return BatchDecision(approved, q, bits, reducing)
