"""Circuit breaker state machine (institutional document, "Circuit Breaker System").

States: CLOSED (normal), OPEN (complete halt), HALF_OPEN (limited probe trading).
Legal transitions:

=========== =========== ==============================================================
from        to          when
=========== =========== ==============================================================
CLOSED      OPEN        a trip condition holds (immediate)
OPEN        HALF_OPEN   cooldown elapsed and trip conditions absent with valid data
                        (positions reconciled) for the recovery dwell
HALF_OPEN   CLOSED      the probe period passed with no trip and valid data
HALF_OPEN   OPEN        a trip condition holds again
OPEN        CLOSED      only as a manual reset by an operator with ``reset_authority``
=========== =========== ==============================================================

Everything else (CLOSED -> HALF_OPEN, HALF_OPEN/OPEN -> CLOSED without the
evidence above) is refused. The vectorized step used by the evaluation lives
in :func:`step_breakers`; :func:`transition_breaker` is the scalar form used by
operators' tools and the tests.
"""

from __future__ import annotations

import numpy as np

from risklib.core.policy._config import BreakerConfig
from risklib.core.policy._enums import BreakerState
from risklib.errors import AuthorityError, IllegalTransitionError

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
CODES = {BreakerState.CLOSED.value: CLOSED, BreakerState.OPEN.value: OPEN, BreakerState.HALF_OPEN.value: HALF_OPEN}
NAMES = np.array([BreakerState.CLOSED.value, BreakerState.OPEN.value, BreakerState.HALF_OPEN.value], dtype=object)

_AUTOMATIC = {
    (BreakerState.CLOSED, BreakerState.OPEN),
    (BreakerState.OPEN, BreakerState.HALF_OPEN),
    (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    (BreakerState.HALF_OPEN, BreakerState.OPEN),
}


def transition_breaker(
    current: BreakerState | str,
    target: BreakerState | str,
    *,
    authority: int = 0,
    config: BreakerConfig | None = None,
) -> BreakerState:
    """Check one breaker transition and return the new state.

    Parameters
    ----------
    current, target
        Breaker states (enum or its string value).
    authority
        Authority level (RT "Override Authority Levels", 1-5) of the operator asking;
        0 for the automatic evaluation. Only needed for the manual reset OPEN -> CLOSED.
    config
        Breaker config; its ``reset_authority`` is the level a manual reset needs.

    Raises
    ------
    IllegalTransitionError
        For a transition the machine never makes (e.g. CLOSED -> HALF_OPEN).
    AuthorityError
        For OPEN -> CLOSED asked with less than ``reset_authority``.
    """
    cur, tgt = BreakerState(current), BreakerState(target)
    if cur is tgt or (cur, tgt) in _AUTOMATIC:
        return tgt
    if (cur, tgt) == (BreakerState.OPEN, BreakerState.CLOSED):
        need = (config or BreakerConfig()).reset_authority
        if authority >= need:
            return tgt
        raise AuthorityError(f"authority={authority}: breaker reset OPEN -> CLOSED needs authority >= {need}")
    raise IllegalTransitionError(f"breaker {cur.value} -> {tgt.value}: illegal transition")


def step_breakers(
    now_s: float,
    prev: np.ndarray,
    trip: np.ndarray,
    valid: np.ndarray,
    opened_s: np.ndarray,
    clear_s: np.ndarray,
    half_s: np.ndarray,
    reset: np.ndarray,
    config: BreakerConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Advance every account's breaker one evaluation (vectorized).

    Parameters
    ----------
    now_s
        Evaluation time, epoch seconds.
    prev
        Previous state codes (0 CLOSED, 1 OPEN, 2 HALF_OPEN), int array.
    trip
        A trip condition holds now (after hysteresis, not suspended).
    valid
        The account's metrics are valid (positive evidence for recovery).
    opened_s, clear_s, half_s
        Epoch seconds when the breaker opened, when trip conditions were first
        seen absent while OPEN, and when HALF_OPEN began; NaN when not applicable.
    reset
        An authorised manual reset (OPEN/HALF_OPEN -> CLOSED) is in force.

    Returns
    -------
    tuple of arrays
        New codes, opened_s, clear_s, half_s.
    """
    new = prev.copy()
    opened = opened_s.copy()
    clear = clear_s.copy()
    half = half_s.copy()

    # unknown timestamps (state restored without bookkeeping) count from now: never shortens a cooldown
    opened = np.where((prev != CLOSED) & np.isnan(opened), now_s, opened)
    half = np.where((prev == HALF_OPEN) & np.isnan(half), now_s, half)

    tripping = trip & (prev != OPEN)
    new = np.where(tripping, OPEN, new)
    opened = np.where(tripping, now_s, opened)
    clear = np.where(trip, np.nan, clear)

    is_open = (prev == OPEN) & ~trip
    clear = np.where(is_open & valid, np.where(np.isnan(clear), now_s, clear), np.where(is_open, np.nan, clear))
    to_half = (
        is_open
        & valid
        & (now_s - opened >= config.cooldown_s)
        & (now_s - clear >= config.recovery_dwell_s)
    )
    new = np.where(to_half, HALF_OPEN, new)
    half = np.where(to_half, now_s, half)

    is_half = (prev == HALF_OPEN) & ~trip
    half = np.where(is_half & ~valid, now_s, half)  # no progress without evidence
    to_closed = is_half & valid & (now_s - half >= config.probe_s)
    new = np.where(to_closed, CLOSED, new)

    manual = reset & ~trip & (prev != CLOSED)
    new = np.where(manual, CLOSED, new)

    closed = new == CLOSED
    opened = np.where(closed, np.nan, opened)
    clear = np.where(new == OPEN, clear, np.nan)
    half = np.where(new == HALF_OPEN, half, np.nan)
    return new.astype(np.int64), opened, clear, half
