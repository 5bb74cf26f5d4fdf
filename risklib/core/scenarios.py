"""Market scenarios as data: scripted lists of (start offset, duration, effect).

A scenario is a tuple of :class:`ScenarioStep`. Each step switches one effect on
for ``duration_s`` simulated seconds starting ``start_s`` seconds after the
session start. :func:`market_state_at` folds the steps active at an offset into
one :class:`MarketState` that the simulator applies to its next bar. Pure: no
I/O, no clock, no randomness.

Effects
-------
``vol``          volatility multiplier ``multiplier`` (×3, ×5) with stress
                 correlation ``stress_corr`` in [0, 1] (correlations drift
                 towards a single dollar factor, as in real stress) and dollar
                 jumps: with probability ``jump_p`` per bar the dollar jumps by
                 ``jump_size`` stressed bar vols (stress moves are jumpy).
``crash``        flash crash: the dollar jumps by ``depth`` (log fraction) over
                 the first ``fall_share`` of the step, then gives back
                 ``rebound`` of it by the end; volatility ×``multiplier``.
``correlation``  correlation breakdown: instrument returns move together with
                 pairwise correlation ``target`` (usual hedges stop hedging),
                 blended in by ``strength``; volatility ×``multiplier``.
``liquidity``    spreads ×``spread_mult``; each quote is one-sided with
                 probability ``one_sided_p`` or missing with ``missing_p``;
                 the broker rejects orders in instruments without a two-sided quote.
``disconnect``   the feed delivers nothing (no ticks, no bars, ``connected`` False).
``bad_rows``     the feed emits the listed kinds of bad rows (for validation tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from risklib.errors import ConfigError

EFFECTS = ("vol", "crash", "correlation", "liquidity", "disconnect", "bad_rows")

#: Kinds of bad rows the simulator can inject (``bad_rows`` effect).
BAD_ROW_KINDS = (
    "nan_price",  # a tick with NaN bid/ask/mid
    "negative_price",  # a tick with a negative mid
    "unknown_instrument",  # a tick and a position in an instrument nobody knows
    "duplicate_key",  # a tick and a position repeated
    "future_timestamp",  # a tick stamped an hour ahead of ``now``
    "orphan_position",  # a position for an account with no balance row
)


@dataclass(frozen=True, slots=True)
class ScenarioStep:
    """One scripted effect.

    Parameters
    ----------
    start_s : float
        Offset from the session start, simulated seconds, >= 0.
    duration_s : float
        How long the effect lasts, simulated seconds, > 0.
    effect : str
        One of :data:`EFFECTS`.
    params : Mapping[str, object]
        Effect parameters (see the module docstring); missing ones take defaults.
    """

    start_s: float
    duration_s: float
    effect: str
    params: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise ConfigError(f"effect={self.effect!r}: must be one of {EFFECTS}")
        if not self.start_s >= 0:
            raise ConfigError(f"start_s={self.start_s}: must be >= 0")
        if not self.duration_s > 0:
            raise ConfigError(f"duration_s={self.duration_s}: must be > 0")
        if self.effect == "bad_rows":
            kinds = tuple(self.params.get("kinds", BAD_ROW_KINDS))  # type: ignore[arg-type]
            unknown = [k for k in kinds if k not in BAD_ROW_KINDS]
            if unknown:
                raise ConfigError(f"bad_rows kinds={unknown}: must be among {BAD_ROW_KINDS}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def active(self, offset_s: float) -> bool:
        return self.start_s <= offset_s < self.start_s + self.duration_s

    def progress(self, offset_s: float) -> float:
        """Share of the step elapsed at ``offset_s``, in [0, 1]."""
        return min(1.0, max(0.0, (offset_s - self.start_s) / self.duration_s))


@dataclass(frozen=True, slots=True)
class MarketState:
    """The effects in force at one offset, folded together.

    Attributes
    ----------
    vol_multiplier : float
        Multiplier on every instrument's calm volatility (1 = calm).
    stress_corr : float
        Weight in [0, 1] of the one-dollar-factor correlation matrix.
    breakdown_corr : float
        Weight in [0, 1] of the all-together instrument correlation matrix.
    breakdown_target : float
        Pairwise instrument correlation the breakdown drifts towards.
    jump_p : float
        Probability per bar of a dollar jump.
    jump_size : float
        Size of a dollar jump in stressed bar vols of each instrument.
    dollar_shift : float
        Deterministic log move of the dollar against every currency (positive:
        dollar stronger; XXX/USD falls, USD/XXX rises). Flash crash path.
    spread_multiplier : float
        Multiplier on calm spreads.
    one_sided_p, missing_p : float
        Probability that a quote is one-sided or missing.
    disconnected : bool
        The feed delivers nothing.
    bad_rows : tuple[str, ...]
        Kinds of bad rows to inject.
    labels : tuple[str, ...]
        Names of the active effects, for the dashboard.
    """

    vol_multiplier: float = 1.0
    stress_corr: float = 0.0
    breakdown_corr: float = 0.0
    breakdown_target: float = 0.9
    jump_p: float = 0.0
    jump_size: float = 0.0
    dollar_shift: float = 0.0
    spread_multiplier: float = 1.0
    one_sided_p: float = 0.0
    missing_p: float = 0.0
    disconnected: bool = False
    bad_rows: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()


def crash_path(progress: float, depth: float, fall_share: float, rebound: float) -> float:
    """Log dollar move of a flash crash at ``progress`` in [0, 1] of the step.

    Falls linearly to ``depth`` over the first ``fall_share`` of the step, then
    recovers linearly so that ``rebound`` (a fraction of ``depth``) is given back
    at the end. After the step the move stays at ``depth * (1 - rebound)``.
    """
    if progress <= fall_share:
        return depth * progress / fall_share
    back = (progress - fall_share) / (1.0 - fall_share)
    return depth * (1.0 - rebound * back)


def market_state_at(steps: Sequence[ScenarioStep], offset_s: float) -> MarketState:
    """Fold the steps active at ``offset_s`` (seconds after session start) into one state.

    Overlapping effects combine: volatility multipliers multiply, correlation
    weights take the max, crash moves add, probabilities take the max. A crash
    that has ended leaves its residual move (``depth * (1 - rebound)``) in place.
    """
    vol, stress, brk, target, shift = 1.0, 0.0, 0.0, 0.9, 0.0
    jump_p, jump_size = 0.0, 0.0
    spread, one_sided, missing = 1.0, 0.0, 0.0
    disconnected = False
    bad: list[str] = []
    labels: list[str] = []
    for step in steps:
        p = step.params
        if step.effect == "crash" and offset_s >= step.start_s + step.duration_s:
            shift += float(p.get("depth", 0.02)) * (1.0 - float(p.get("rebound", 0.7)))
            continue
        if not step.active(offset_s):
            continue
        labels.append(step.effect)
        if step.effect == "vol":
            vol *= float(p.get("multiplier", 3.0))
            stress = max(stress, float(p.get("stress_corr", 0.6)))
            jump_p = max(jump_p, float(p.get("jump_p", 0.0)))
            jump_size = max(jump_size, float(p.get("jump_size", 0.0)))
        elif step.effect == "crash":
            shift += crash_path(
                step.progress(offset_s),
                float(p.get("depth", 0.02)),
                float(p.get("fall_share", 0.3)),
                float(p.get("rebound", 0.7)),
            )
            vol *= float(p.get("multiplier", 4.0))
            stress = max(stress, float(p.get("stress_corr", 0.8)))
        elif step.effect == "correlation":
            brk = max(brk, float(p.get("strength", 1.0)))
            target = float(p.get("target", 0.9))
            vol *= float(p.get("multiplier", 1.5))
        elif step.effect == "liquidity":
            spread *= float(p.get("spread_mult", 10.0))
            one_sided = max(one_sided, float(p.get("one_sided_p", 0.3)))
            missing = max(missing, float(p.get("missing_p", 0.2)))
        elif step.effect == "disconnect":
            disconnected = True
        elif step.effect == "bad_rows":
            bad.extend(k for k in p.get("kinds", BAD_ROW_KINDS) if k not in bad)  # type: ignore[union-attr]
    return MarketState(
        vol_multiplier=vol,
        stress_corr=stress,
        breakdown_corr=brk,
        breakdown_target=target,
        jump_p=jump_p,
        jump_size=jump_size,
        dollar_shift=shift,
        spread_multiplier=spread,
        one_sided_p=one_sided,
        missing_p=missing,
        disconnected=disconnected,
        bad_rows=tuple(bad),
        labels=tuple(labels),
    )


def _steps(*rows: tuple[float, float, str, dict]) -> tuple[ScenarioStep, ...]:
    return tuple(ScenarioStep(s, d, e, p) for s, d, e, p in rows)


#: Named scripted scenarios; offsets in simulated seconds from the session start.
#: Each starts calm for ten bars so the first cycles see a normal market, then
#: stresses it, then lets it calm down so triggers can clear.
SCENARIOS: Mapping[str, tuple[ScenarioStep, ...]] = MappingProxyType(
    {
        "calm": (),
        "vol-spike": _steps(
            (600, 600, "vol", {"multiplier": 3.0, "stress_corr": 0.8, "jump_p": 0.1, "jump_size": 3.0}),
            (1200, 600, "vol", {"multiplier": 5.0, "stress_corr": 1.0, "jump_p": 0.2, "jump_size": 3.0}),
        ),
        "flash-crash": _steps(
            (600, 300, "crash", {"depth": 0.06, "fall_share": 0.3, "rebound": 0.7, "multiplier": 4.0}),
            (600, 300, "liquidity", {"spread_mult": 8.0, "one_sided_p": 0.1, "missing_p": 0.05}),
        ),
        "correlation-breakdown": _steps(
            (600, 900, "correlation", {"target": 0.9, "strength": 1.0, "multiplier": 1.5}),
        ),
        "liquidity-gap": _steps(
            (600, 300, "liquidity", {"spread_mult": 15.0, "one_sided_p": 0.3, "missing_p": 0.2}),
        ),
        "feed-disconnect": _steps(
            (600, 180, "disconnect", {}),
        ),
        "bad-data": _steps(
            (0, 10**9, "bad_rows", {"kinds": BAD_ROW_KINDS}),
        ),
    }
)


def scenario(name_or_steps: str | Sequence[ScenarioStep]) -> tuple[ScenarioStep, ...]:
    """Resolve a scenario name from :data:`SCENARIOS`, or pass a step list through."""
    if isinstance(name_or_steps, str):
        try:
            return SCENARIOS[name_or_steps]
        except KeyError:
            raise ConfigError(f"scenario={name_or_steps!r}: must be one of {sorted(SCENARIOS)}") from None
    return tuple(name_or_steps)
