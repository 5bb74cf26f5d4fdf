"""Risk score 0-100 (INST "Risk Metrics Calculation").

``score = 0.30 exposure + 0.25 pnl + 0.25 leverage + 0.20 position``, each
sub-score in [0, 100], a linear ramp clipped at both ends:

* exposure: ``100 * exposure_pct / score_exposure_full`` (full at 50% of
  equity: INST halts above "Total exposure > 50% of account value").
* pnl: ``100 * max(daily_loss, unrealized_loss) / score_pnl_full`` where
  ``unrealized_loss = max(0, -unrealized_pnl) / equity`` (full at the 2%
  emergency daily loss).
* leverage: ``100 * leverage / score_leverage_full`` (full at INST's 5x
  conservative maximum).
* position: ``100 * max(count, concentration)`` with ``count = n_positions /
  score_positions_full`` and ``concentration`` rescaled from
  ``[score_concentration_floor, 1]`` to ``[0, 1]`` (INST "position count and
  concentration"; the larger of the two, so either alone can raise it).

NaN in any input gives a NaN score (never a low one).
"""

from __future__ import annotations

import numpy as np

from risklib.core.metrics._config import MetricsConfig


def _ramp(x: np.ndarray, full: float) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float64) / full, 0.0, 1.0) * 100.0


def risk_subscores(
    *,
    exposure_pct: np.ndarray,
    leverage: np.ndarray,
    daily_loss: np.ndarray,
    unrealized_loss: np.ndarray,
    concentration: np.ndarray,
    n_positions: np.ndarray,
    config: MetricsConfig = MetricsConfig(),
) -> dict[str, np.ndarray]:
    """The four sub-scores (0-100) of :func:`risk_score`; NaN inputs propagate."""
    floor = config.score_concentration_floor
    conc = np.clip((np.asarray(concentration, dtype=np.float64) - floor) / (1.0 - floor), 0.0, 1.0)
    count = np.clip(np.asarray(n_positions, dtype=np.float64) / config.score_positions_full, 0.0, 1.0)
    pnl = np.fmax(np.asarray(daily_loss, dtype=np.float64), np.asarray(unrealized_loss, dtype=np.float64))
    pnl = np.where(np.isnan(daily_loss) | np.isnan(unrealized_loss), np.nan, pnl)
    position = np.where(np.isnan(conc), np.nan, np.maximum(conc, count) * 100.0)
    return {
        "exposure": _ramp(exposure_pct, config.score_exposure_full),
        "pnl": _ramp(pnl, config.score_pnl_full),
        "leverage": _ramp(leverage, config.score_leverage_full),
        "position": position,
    }


def risk_score(
    *,
    exposure_pct: np.ndarray,
    leverage: np.ndarray,
    daily_loss: np.ndarray,
    unrealized_loss: np.ndarray,
    concentration: np.ndarray,
    n_positions: np.ndarray,
    config: MetricsConfig = MetricsConfig(),
) -> np.ndarray:
    """Risk score in [0, 100] per account (see module docstring for each mapping)."""
    s = risk_subscores(
        exposure_pct=exposure_pct, leverage=leverage, daily_loss=daily_loss, unrealized_loss=unrealized_loss,
        concentration=concentration, n_positions=n_positions, config=config,
    )
    w = config.score_weights
    return w[0] * s["exposure"] + w[1] * s["pnl"] + w[2] * s["leverage"] + w[3] * s["position"]
