"""`riskctl policy` commands: see what the policy would do, before changing a threshold.

``what-if``      evaluate the policy for one account's metrics and print every rule that fired,
                 the combined decision and why, on the first evaluation and if sustained
``size``         the spec's position sizing for one account's inputs
``check-config`` validate a policy TOML file
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

policy_app = typer.Typer(help="Risk policy: what-if evaluation, sizing, config validation.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.add_typer(policy_app, name="policy")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _fraction(name: str, value: float | None, *, upper: float = 1.0, allow_none: bool = False) -> None:
    if value is None:
        if not allow_none:
            _fail(f"--{name}: required")
        return
    if not math.isfinite(value) or value < 0 or value >= upper:
        hint = f"; did you mean {value / 100:g}?" if upper == 1.0 and 1.0 <= value < 100.0 else ""
        _fail(f"--{name}={value:g}: must be a fraction in [0, {upper:g}){hint}")


def _load(config: Path | None):
    from risklib.config import load_policy_config
    from risklib.errors import ConfigError

    try:
        return load_policy_config(config)
    except ConfigError as exc:
        _fail(f"--config {config}: {exc}")


@policy_app.command("what-if")
def what_if(
    drawdown: float = typer.Option(..., help="Drawdown from peak equity, fraction (0.055 = 5.5 %)."),
    vol_ratio: float = typer.Option(..., "--vol-ratio", help="Current / normal volatility (2.1 = 2.1x)."),
    var99: float = typer.Option(..., help="1-day 99 % VaR, fraction of equity (0.003 = 0.3 %)."),
    daily_loss: float = typer.Option(0.0, "--daily-loss", help="Loss since start of day, fraction of start-of-day equity."),
    exposure: float = typer.Option(0.0, help="Gross exposure / equity, fraction."),
    risk_score: float = typer.Option(0.0, "--risk-score", help="Risk score 0-100."),
    correlation: float = typer.Option(0.0, help="Average pairwise correlation of held instruments."),
    feed_silent_s: float = typer.Option(0.0, "--feed-silent-s", help="Seconds since the feed's last price."),
    group: Optional[str] = typer.Option(None, help="Account group (for group threshold overrides)."),
    events: Optional[Path] = typer.Option(None, "--events", help="CSV of scheduled events: ts,impact,name."),
    at: Optional[str] = typer.Option(None, "--at", help="Evaluation time, ISO-8601 with offset (for --events)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Policy TOML file (default: shipped policy)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate the policy for one account and print every rule that fired and the combined decision."""
    _fraction("drawdown", drawdown)
    _fraction("var99", var99)
    _fraction("daily-loss", daily_loss)
    _fraction("exposure", exposure, upper=1000.0)
    _fraction("correlation", correlation, upper=1.0 + 1e-12)
    if not math.isfinite(vol_ratio) or vol_ratio < 0:
        _fail(f"--vol-ratio={vol_ratio:g}: must be a ratio >= 0")
    if not 0 <= risk_score <= 100:
        _fail(f"--risk-score={risk_score:g}: must be in [0, 100]")
    if not math.isfinite(feed_silent_s) or feed_silent_s < 0:
        _fail(f"--feed-silent-s={feed_silent_s:g}: must be >= 0")
    cfg = _load(config)
    ev_frame, when = _events(events, at)
    result = run_what_if(cfg, drawdown=drawdown, vol_ratio=vol_ratio, var99=var99, daily_loss=daily_loss,
                         exposure=exposure, risk_score=risk_score, correlation=correlation,
                         feed_silent_s=feed_silent_s, group=group, events=ev_frame, at=when)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    typer.echo(format_what_if(result))


def _events(path: Path | None, at: str | None):
    from datetime import datetime

    import polars as pl

    from risklib.core.policy import parse_events
    from risklib.errors import DataError

    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            _fail(f"--at={at!r}: not an ISO-8601 time")
        if when.tzinfo is None:
            _fail(f"--at={at!r}: needs a UTC offset, e.g. 2026-01-05T12:00:00+00:00")
    if path is None:
        return None, when
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        _fail(f"--events {path}: cannot read CSV: {exc}")
    try:
        return parse_events(raw), when
    except DataError as exc:
        _fail(f"--events {path}: {exc}")


def run_what_if(cfg, *, drawdown, vol_ratio, var99, daily_loss=0.0, exposure=0.0, risk_score=0.0, correlation=0.0,
                feed_silent_s=0.0, group=None, events=None, at=None) -> dict:
    """Evaluate one synthetic account; return the first evaluation and the sustained outcome as a dict."""
    from datetime import datetime, timedelta, timezone

    import polars as pl

    from risklib.core import frames
    from risklib.core.policy import MarketInputs, evaluate

    equity = 100_000.0
    row = {
        "account_id": "what-if", "account_group": group or "", "equity_usd": equity,
        "start_of_day_equity_usd": equity / max(1e-9, 1 - daily_loss), "peak_equity_usd": equity / max(1e-9, 1 - drawdown),
        "unrealized_pnl_usd": 0.0, "daily_pnl_usd": -daily_loss * equity, "daily_pnl_pct": -daily_loss,
        "daily_loss": daily_loss, "drawdown": drawdown, "gross_exposure_usd": exposure * equity,
        "net_exposure_usd": exposure * equity, "exposure_pct": exposure, "leverage": exposure, "var_95": var99,
        "var_99": var99, "es_99": var99, "var_99_parametric": var99, "ewma_vol": 0.0, "vol_ratio": vol_ratio,
        "correlation_index": correlation, "max_pair_correlation": correlation, "concentration": 0.0,
        "regime": "unknown", "risk_score": risk_score, "n_positions": 1, "valid": True, "invalid_reason": None,
    }
    metrics = pl.DataFrame([row], schema=frames.ACCOUNT_METRICS)
    market = MarketInputs(feed_silent_s=feed_silent_s, events=events)
    t0 = at or datetime(2026, 1, 1, tzinfo=timezone.utc)
    first = evaluate(t0, metrics, None, cfg, market=market)
    prev, now, sustained, ev = first.state, t0, [], first
    for n in range(2, 12):  # the same metrics held: until every confirmation has passed
        now = now + timedelta(seconds=max(cfg.confirm_recheck_s, 1.0))
        ev = evaluate(now, metrics, prev, cfg, market=market)
        sustained += [dict(a, evaluation=n) for a in ev.actions.select("action", "fraction", "reason").to_dicts()]
        prev = ev.state
    s = first.state.row(0, named=True)
    from risklib.core.policy import TradingMode

    return {
        "stress": {"level": first.stress.stress_level, "primary": first.stress.primary_stress,
                   "action": first.stress.recommended_action, "confidence": first.stress.confidence},
        "inputs": {"drawdown": drawdown, "vol_ratio": vol_ratio, "var99": var99, "daily_loss": daily_loss,
                   "exposure": exposure, "risk_score": risk_score, "correlation": correlation,
                   "feed_silent_s": feed_silent_s, "group": group},
        "rules_fired": first.rules_fired.select("rule", "step", "level", "alert_level", "metric_value", "threshold",
                                                "basis", "effect").to_dicts(),
        "decision": {
            "alert_level": s["alert_level"], "breaker_state": s["breaker_state"], "trading_mode": s["trading_mode"],
            "mode_blocks": TradingMode(s["trading_mode"]).blocks, "risk_level": s["risk_level"],
            "sizing_multiplier": s["sizing_multiplier"], "max_leverage": s["max_leverage"],
            "max_position_frac": s["max_position_frac"], "next_cadence_s": s["next_cadence_s"],
            "signal_filter": s["signal_filter"], "risk_budget": s["risk_budget"],
        },
        "actions_now": first.actions.select("action", "fraction", "reason").to_dicts(),
        "actions_if_sustained": sustained,
        "sustained_state": {k: ev.state.row(0, named=True)[k] for k in ("alert_level", "breaker_state", "trading_mode",
                                                                          "sizing_multiplier", "cut_total")},
    }


def format_what_if(r: dict) -> str:
    lines = ["Rules fired:"]
    if not r["rules_fired"]:
        lines.append("  (none)")
    for f in r["rules_fired"]:
        mv = "" if f["metric_value"] is None else f"{f['metric_value']:g}"
        th = "" if f["threshold"] is None else f" vs {f['threshold']:g}"
        lines.append(f"  {f['rule']:<11} L{f['level']} {f['step']:<30} alert {f['alert_level']}  {mv}{th}")
        lines.append(f"      effect: {f['effect']}")
        lines.append(f"      basis:  {f['basis']}")
    d = r["decision"]
    st = r["stress"]
    lines.append(f"Market stress: level {st['level']} ({st['primary']}), {st['action']}, confidence {st['confidence']:.2f}")
    lines += [
        "Decision (most protective rule wins):",
        f"  alert level       {d['alert_level']}",
        f"  breaker           {d['breaker_state']}",
        f"  trading mode      {d['trading_mode']} ({d['mode_blocks']})",
        f"  risk level        {d['risk_level']} (max leverage {d['max_leverage']:g}x, max position "
        f"{d['max_position_frac']:.2%} of equity)",
        f"  sizing multiplier {d['sizing_multiplier']:g}",
        f"  signal filter     +{d['signal_filter']:.0%}   risk budget {d['risk_budget']:.0%}",
        f"  next cadence      {d['next_cadence_s']:g}s",
        "Actions now:",
    ]
    lines += [f"  {a['action']} {a['fraction']:g}: {a['reason']}" for a in r["actions_now"]] or ["  (none)"]
    lines.append("Actions if the metrics hold (confirmations):")
    lines += [f"  eval {a['evaluation']}: {a['action']} {a['fraction']:g}: {a['reason']}"
              for a in r["actions_if_sustained"]] or ["  (none)"]
    ss = r["sustained_state"]
    lines.append(f"  then: alert {ss['alert_level']}, breaker {ss['breaker_state']}, mode {ss['trading_mode']}, "
                 f"cut {ss['cut_total']:.0%} of episode-start size")
    return "\n".join(lines)


@policy_app.command("size")
def size(
    balance: float = typer.Option(..., help="Account balance (equity), USD."),
    volatility_pct: float = typer.Option(..., "--volatility-pct", help="Volatility in percent (15 = 15 %), as INST."),
    risk_level: str = typer.Option("MEDIUM", "--risk-level", help="MINIMAL, LOW, MEDIUM, HIGH or CRITICAL."),
    emergency: bool = typer.Option(False, "--emergency", help="Emergency mode."),
    price: float = typer.Option(1.0, help="Instrument price (unused by the INST formula, shown for units)."),
    current_vol: Optional[float] = typer.Option(None, "--current-vol", help="RT dynamic sizing: current volatility."),
    historical_vol: Optional[float] = typer.Option(None, "--historical-vol", help="RT: historical volatility."),
    drawdown: float = typer.Option(0.0, help="RT: portfolio drawdown, fraction."),
    correlation: float = typer.Option(0.0, help="RT: correlation factor, [0, 1]."),
    var_utilization: float = typer.Option(0.0, "--var-utilization", help="RT: VaR in percent of equity (0.4 = red)."),
    regime: str = typer.Option("sideways", help="RT: market regime."),
    win_prob: Optional[float] = typer.Option(None, "--win-prob", help="Kelly: win probability."),
    win_loss: Optional[float] = typer.Option(None, "--win-loss", help="Kelly: average win / average loss."),
    config: Optional[Path] = typer.Option(None, "--config", help="Policy TOML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Account-based sizing (INST, exactly as written and protective), RT dynamic multiplier, Kelly."""
    import numpy as np

    from risklib.core.policy import (
        RiskLevel,
        account_position_size,
        calculate_dynamic_position_size,
        calculate_position_size,
        fractional_kelly,
    )

    if not math.isfinite(balance) or balance <= 0:
        _fail(f"--balance={balance:g}: must be > 0 USD")
    if not math.isfinite(volatility_pct) or volatility_pct < 0:
        _fail(f"--volatility-pct={volatility_pct:g}: must be >= 0 (percent)")
    level = risk_level.upper()
    if level not in {"MINIMAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"}:
        _fail(f"--risk-level={risk_level!r}: must be MINIMAL, LOW, MEDIUM, HIGH or CRITICAL")
    _fraction("drawdown", drawdown)
    _fraction("correlation", correlation, upper=1.0 + 1e-12)
    cfg = _load(config)
    out: dict = {
        "inst_exact_usd": calculate_position_size(balance, price, volatility_pct, RiskLevel(level), emergency),
        "protective_usd": float(account_position_size(np.array([balance]), np.array([volatility_pct]),
                                                      np.array([level], dtype=object), np.array([emergency]),
                                                      cfg.risk_levels, cfg.sizing)[0]),
    }
    if current_vol is not None or historical_vol is not None:
        if current_vol is None or historical_vol is None or current_vol <= 0 or historical_vol <= 0:
            _fail(f"--current-vol={current_vol} --historical-vol={historical_vol}: both needed and > 0")
        out["rt_dynamic_multiplier"] = calculate_dynamic_position_size(
            1.0, current_vol, drawdown, correlation, var_utilization, regime, historical_volatility=historical_vol)
    if win_prob is not None or win_loss is not None:
        if win_prob is None or win_loss is None or not 0 <= win_prob <= 1 or win_loss <= 0:
            _fail(f"--win-prob={win_prob} --win-loss={win_loss}: both needed, win-prob in [0, 1], win-loss > 0")
        k = float(fractional_kelly(win_prob, win_loss, fraction=cfg.sizing.kelly_fraction,
                                   cap=cfg.risk_budget.max_single_position))
        out["kelly_fraction_of_capital"] = k
        out["kelly_usd"] = k * balance
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"INST calculate_position_size (as written): {out['inst_exact_usd']:.2f} USD")
    typer.echo(f"Protective account sizing (prose base %, min of vol factors, no $1 floor above cap): "
               f"{out['protective_usd']:.2f} USD")
    if "rt_dynamic_multiplier" in out:
        typer.echo(f"RT calculate_dynamic_position_size multiplier: {out['rt_dynamic_multiplier']:.4f}")
    if "kelly_usd" in out:
        typer.echo(f"Fractional Kelly ({cfg.sizing.kelly_fraction:g}, cap {cfg.risk_budget.max_single_position:.0%}): "
                   f"{out['kelly_fraction_of_capital']:.4%} = {out['kelly_usd']:.2f} USD")


@policy_app.command("check-config")
def check_config(path: Path = typer.Argument(..., help="TOML file with a [policy] table.")) -> None:
    """Validate a policy file; exit 2 with the offending key and value if it is refused."""
    _load(path)
    typer.echo(f"{path}: ok")
