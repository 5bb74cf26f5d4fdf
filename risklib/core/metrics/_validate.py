"""Input checks shared by the metrics: every failure names the field, the row key and the value."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from risklib.errors import MetricsError


def _label(labels: Sequence[object] | None, i: int) -> str:
    return f" ({labels[i]!r})" if labels is not None and i < len(labels) else ""


def as_2d(x: object, name: str, *, min_cols: int = 1, axis_names: tuple[str, str] = ("row", "col")) -> np.ndarray:
    """``x`` as a C-contiguous float64 2-D array (a 1-D input becomes one row)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise MetricsError(f"{name}: expected a 1-D or 2-D array, got shape {a.shape}")
    if a.shape[1] < min_cols:
        raise MetricsError(f"{name}: {a.shape[1]} {axis_names[1]}(s) given, need at least {min_cols} (shape {a.shape})")
    return np.ascontiguousarray(a)


def check_finite(
    a: np.ndarray,
    name: str,
    *,
    rows: Sequence[object] | None = None,
    cols: Sequence[object] | None = None,
    axis_names: tuple[str, str] = ("row", "col"),
) -> None:
    """Raise :class:`MetricsError` naming the first NaN or infinite cell of ``a``."""
    ok = np.isfinite(a)
    if ok.all():
        return
    bad = np.argwhere(~ok)[0]
    r, c = int(bad[0]), int(bad[1]) if a.ndim > 1 else 0
    raise MetricsError(
        f"{name}[{axis_names[0]}={r}{_label(rows, r)}, {axis_names[1]}={c}{_label(cols, c)}]={float(a[tuple(bad)])!r}: must be finite"
    )


def check_positive(
    a: np.ndarray,
    name: str,
    *,
    rows: Sequence[object] | None = None,
    cols: Sequence[object] | None = None,
    axis_names: tuple[str, str] = ("row", "col"),
) -> None:
    """Raise :class:`MetricsError` naming the first non-finite or non-positive cell of ``a``."""
    check_finite(a, name, rows=rows, cols=cols, axis_names=axis_names)
    ok = a > 0
    if ok.all():
        return
    bad = np.argwhere(~ok)[0]
    r, c = int(bad[0]), int(bad[1])
    raise MetricsError(
        f"{name}[{axis_names[0]}={r}{_label(rows, r)}, {axis_names[1]}={c}{_label(cols, c)}]={float(a[r, c])!r}: must be > 0"
    )


def check_level(level: float, name: str = "level") -> float:
    level = float(level)
    if not 0.5 < level < 1.0:
        raise MetricsError(f"{name}={level!r}: must be a confidence level in (0.5, 1), e.g. 0.99")
    return level


def check_length(n: int, need: int, name: str) -> None:
    if n < need:
        raise MetricsError(f"{name}: {n} bar(s) given, need at least {need}")
