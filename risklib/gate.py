"""Public entry point of the pre-trade gate (see :mod:`risklib.core.gate`)."""

from risklib.core.gate import *  # noqa: F403
from risklib.core.gate import __all__  # noqa: F401
