"""``riskctl``: the operator and analyst command line.

Each area registers its commands from its own module; heavy imports happen
inside the commands so ``riskctl --help`` stays fast.
"""

from __future__ import annotations

import typer

from risklib.cli import alerts, api, metrics, pipeline, policy, warehouse

app = typer.Typer(
    name="riskctl",
    help="Real-time risk pipeline: run the monitor, inspect metrics and policy, operate the warehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
)

for _module in (metrics, policy, warehouse, alerts, pipeline, api):
    _module.register(app)


def main() -> None:  # pragma: no cover - console entry point
    from risklib.allocator import tune_allocator

    tune_allocator()  # a long-running cycle reuses its freed memory instead of page-faulting it back
    app()
